// A rolling restart under load, as an operator deploys a new version: three ioplex nodes (streams
// adapter, so sessions survive a node) behind HAProxy from deploy/, each node stopped with SIGTERM
// (drain), started again on its port, and the next one only once every client is back — while 300
// clients of every transport publish with acks and receive. Prints what it measured as one JSON line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startBalancer } from "./lib/balancer.mjs";
import { client, closeAll, sleep, waitFor } from "./lib/client.mjs";
import { startRedis } from "./lib/redis.mjs";
import { startServer } from "./lib/server.mjs";

const CLIENTS = 300;
const ROOMS = 10;
const TRANSPORTS = [["polling"], ["websocket"], ["polling", "websocket"]];
// Behind a balancer every connection comes from its address; the drain spreads its closes over half
// of the grace period.
const NODE_ARGS = ["--max-idle-connections-per-ip", "0", "--shutdown-grace", "4000"];

const ready = async (node) => (await fetch(`${node.url}/readyz`).catch(() => ({ status: 0 }))).status === 200;

test("rolling restart behind HAProxy: 300 clients publishing, no acked publish lost, no broadcast missed", async () => {
  const redis = await startRedis();
  const env = { REDIS_URL: redis.url, REDIS_ADAPTER: "streams" };
  const nodes = [];
  let lb;
  try {
    for (let i = 0; i < 3; i++) nodes.push(await startServer({ env, args: NODE_ARGS }));
    lb = await startBalancer("haproxy", nodes.map((n) => n.port));

    let loadStarted = Infinity;
    const handshakes = [];
    let recovered = 0;
    let fresh = 0;
    const clients = [];
    for (let i = 0; i < CLIENTS; i++) {
      const socket = client(lb.url, { transports: TRANSPORTS[i % 3], withCredentials: true, reconnection: true });
      socket.room = `room-${i % ROOMS}`;
      socket.got = new Map();
      socket.io.on("open", () => Date.now() >= loadStarted && handshakes.push(Date.now()));
      socket.on("connect", () => {
        if (Date.now() < loadStarted) return;
        if (socket.recovered) recovered++;
        else {
          fresh++;
          socket.emit("join", socket.room, () => {});
        }
      });
      socket.on("m", (id) => socket.got.set(id, (socket.got.get(id) ?? 0) + 1));
      clients.push(socket);
    }
    await waitFor(() => clients.every((c) => c.connected), 30000, "every client connected");
    await Promise.all(clients.map((c) => c.timeout(5000).emitWithAck("join", c.room)));

    // 20 publishes a second, round-robin over the clients, each acked by the node that took it.
    loadStarted = Date.now();
    const acked = new Map();
    let unacked = 0;
    let skipped = 0;
    let running = true;
    const inFlight = [];
    const publisher = (async () => {
      for (let id = 0; running; id++) {
        const from = clients[id % CLIENTS];
        if (!from.connected) skipped++;
        else {
          inFlight.push(
            from.timeout(5000).emitWithAck("publish", { room: from.room, event: "m", args: [id] }).then(
              (ack) => (ack?.ok ? acked.set(id, from) : unacked++),
              () => unacked++,
            ),
          );
        }
        await sleep(50);
      }
    })();

    await sleep(1000);
    const restarts = [];
    for (let i = 0; i < nodes.length; i++) {
      const stopping = Date.now();
      const code = await nodes[i].stop();
      const stopped = Date.now();
      nodes[i] = await startServer({ env, args: NODE_ARGS, port: nodes[i].port });
      await waitFor(() => ready(nodes[i]), 10000, `node ${i} ready again`);
      const started = Date.now();
      await waitFor(() => clients.every((c) => c.connected), 30000, `every client back after node ${i}`);
      restarts.push({ node: i, exit_code: code, drain_ms: stopped - stopping, start_ms: started - stopped, all_back_ms: Date.now() - stopping });
      // HAProxy checks every second; let it see the node up before the next one goes.
      await sleep(1500);
    }
    running = false;
    await publisher;
    await Promise.all(inFlight);
    await sleep(1500);

    let lost = 0;
    let missed = 0;
    let duplicates = 0;
    for (const [id, from] of acked) {
      const members = clients.filter((c) => c !== from && c.room === from.room);
      const counts = members.map((c) => c.got.get(id) ?? 0);
      if (counts.every((n) => n === 0)) lost++;
      missed += counts.filter((n) => n === 0).length;
      duplicates += counts.reduce((sum, n) => sum + Math.max(0, n - 1), 0);
    }
    const perSecond = new Map();
    for (const t of handshakes) perSecond.set(Math.floor(t / 1000), (perSecond.get(Math.floor(t / 1000)) ?? 0) + 1);
    const figures = {
      clients: CLIENTS,
      acked_publishes: acked.size,
      unacked_publishes: unacked,
      skipped_while_reconnecting: skipped,
      acked_publishes_lost: lost,
      broadcasts_missed: missed,
      duplicates,
      reconnects_recovered: recovered,
      reconnects_fresh: fresh,
      handshakes: handshakes.length,
      peak_handshakes_per_s: Math.max(0, ...perSecond.values()),
      slowest_all_back_ms: Math.max(...restarts.map((r) => r.all_back_ms)),
      restarts,
    };
    console.log(`rolling-restart: ${JSON.stringify(figures)}`);
    assert.ok(restarts.every((r) => r.exit_code === 0), "every node drained and exited 0");
    assert.ok(acked.size > 100, `publishes were acked throughout (${acked.size})`);
    assert.equal(lost, 0, "acked publishes lost");
    assert.equal(missed, 0, "broadcasts missed");
    assert.equal(duplicates, 0, "broadcasts delivered twice");
    assert.equal(fresh, 0, "every reconnect was recovered");
    assert.ok(recovered >= CLIENTS / 3, `the drained clients were recovered (${recovered})`);
  } finally {
    closeAll();
    await lb?.stop();
    for (const n of nodes) await n.stop();
    await redis.stop();
  }
});
