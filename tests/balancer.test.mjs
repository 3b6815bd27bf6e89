// A fleet as users deploy it: three ioplex nodes on one Redis behind a real load balancer (HAProxy and
// nginx from Debian, run from the configurations in deploy/), driven by the official socket.io-client
// through the balancer only.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { BALANCERS, startBalancer } from "./lib/balancer.mjs";
import { client, closeAll, once, sleep, waitFor } from "./lib/client.mjs";
import { startRedis } from "./lib/redis.mjs";
import { startServer } from "./lib/server.mjs";

// Behind a balancer every connection comes from its address.
const NODE_ARGS = ["--max-idle-connections-per-ip", "0", "--shutdown-grace", "2000"];

const TRANSPORTS = {
  polling: ["polling"],
  websocket: ["websocket"],
  upgrading: ["polling", "websocket"],
};

/** Sockets connected to the main namespace of a node, from its /metrics. */
async function socketsOn(node) {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith("ioplex_sockets{") && l.includes('namespace="/"'))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

/**
 * A client through the balancer that keeps the balancer's cookie (`withCredentials`), reconnects, and
 * joins `room` on every connect (a socket restored by connection state recovery keeps its rooms).
 */
function member(url, transports, room) {
  const socket = client(url, { transports, withCredentials: true, reconnection: true });
  socket.on("connect", () => {
    if (!socket.recovered) socket.emit("join", room, () => {});
  });
  return socket;
}

for (const kind of BALANCERS) {
  describe(`${kind} in front of three nodes (deploy/${kind})`, () => {
    let redis;
    let nodes = [];
    let lb;
    const sockets = [];
    before(async () => {
      redis = await startRedis();
      for (let i = 0; i < 3; i++) nodes.push(await startServer({ env: { REDIS_URL: redis.url }, args: NODE_ARGS }));
      lb = await startBalancer(kind, nodes.map((n) => n.port));
    });
    after(async () => {
      closeAll();
      await lb?.stop();
      for (const n of nodes) await n.stop();
      await redis?.stop();
    });

    test("polling-only, websocket-only and upgrading clients stay on their node and get company broadcasts from every node", async () => {
      const disconnects = [];
      for (const [name, transports] of Object.entries(TRANSPORTS)) {
        for (let i = 0; i < 8; i++) {
          const socket = member(lb.url, transports, "company");
          socket.kind = name;
          socket.on("disconnect", (reason) => disconnects.push(`${name}: ${reason}`));
          sockets.push(socket);
        }
      }
      await waitFor(async () => (await Promise.all(nodes.map(socketsOn))).reduce((a, b) => a + b) === 24, 10000, "24 sockets on the nodes");
      const perNode = await Promise.all(nodes.map(socketsOn));
      assert.ok(perNode.every((n) => n > 0), `every node holds clients: ${perNode}`);
      // The upgrade request carries the cookie, so it reaches the node that holds the polling session.
      await waitFor(() => sockets.filter((s) => s.kind === "upgrading").every((s) => s.io.engine.transport.name === "websocket"), 5000, "upgrades");
      // Everyone has joined before anyone publishes.
      await Promise.all(sockets.map((s) => s.timeout(3000).emitWithAck("join", "company")));

      // Several rounds, so polling clients go through many requests, each of which must reach their node.
      const seen = new Map(sockets.map((s) => [s, []]));
      for (const s of sockets) s.on("news", (n) => seen.get(s).push(n));
      for (let round = 0; round < 6; round++) {
        const from = sockets[(round * 5) % sockets.length];
        const ack = await from.timeout(3000).emitWithAck("publish", { room: "company", event: "news", args: [round] });
        assert.equal(ack.ok, true);
        await sleep(200);
      }
      await sleep(300);
      for (const [s, got] of seen) {
        const expected = [0, 1, 2, 3, 4, 5].filter((round) => sockets[(round * 5) % sockets.length] !== s);
        assert.deepEqual(got, expected, `${s.kind} client`);
      }
      assert.deepEqual(disconnects, [], "no session was lost to a request reaching the wrong node");
    });

    test("a node killed: its clients reconnect through the balancer to the other nodes", async () => {
      const before = await Promise.all(nodes.map(socketsOn));
      const victim = before.indexOf(Math.max(...before));
      nodes[victim].child.kill("SIGKILL");
      await once(nodes[victim].child, "exit", 5000).catch(() => {});
      const others = nodes.filter((_, i) => i !== victim);
      await waitFor(
        async () => sockets.every((s) => s.connected) && (await Promise.all(others.map(socketsOn))).reduce((a, b) => a + b) === 24,
        20000,
        "every client back on the two remaining nodes",
      );
      await Promise.all(sockets.map((s) => s.timeout(3000).emitWithAck("join", "company")));
      const got = sockets.slice(1).map((s) => once(s, "after", 3000));
      const ack = await sockets[0].timeout(3000).emitWithAck("publish", { room: "company", event: "after", args: [] });
      assert.equal(ack.ok, true);
      await Promise.all(got);
    });
  });
}
