// The sharded adapter on a real Redis Cluster (3 masters + 3 replicas on loopback ports), in a mixed
// fleet: a Node socket.io 4.8 server with @socket.io/redis-adapter 8.3 createShardedAdapter (node-redis
// cluster client) and two ioplex nodes (REDIS_CLUSTER_NODES), in each subscription mode.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createCluster } from "redis";
import { io as ioClient } from "socket.io-client";
import { Server } from "socket.io";
import { createShardedAdapter } from "@socket.io/redis-adapter";
import { freePort, startServer } from "./lib/server.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";
import { arrives, closeAll, connected, once, sleep } from "./lib/client.mjs";

const ack = (socket, ...args) => socket.timeout(5000).emitWithAck(...args);

async function startShardedNode(cluster, subscriptionMode) {
  const port = await freePort();
  const pub = createCluster({ rootNodes: cluster.rootNodes });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on("error", () => {});
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server(port, { adapter: createShardedAdapter(pub, sub, { subscriptionMode }) });
  io.on("connection", (socket) => {
    socket.on("join", (room, done) => {
      socket.join(room);
      done?.({ ok: true });
    });
  });
  return {
    io,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      io.close();
      await Promise.allSettled([pub.quit(), sub.quit()]);
    },
  };
}

/** Waits until `count` servers listen on the main shard channel of `/`. */
async function waitForServers(io, count, ms = 10000) {
  const deadline = Date.now() + ms;
  let seen;
  while (Date.now() < deadline) {
    seen = await io.of("/").adapter.serverCount();
    if (seen === count) return;
    await sleep(50);
  }
  throw new Error(`expected ${count} servers on the cluster, saw ${seen}`);
}

/** Publishes until the first copy arrives: a fresh room channel is subscribed asynchronously. */
async function eventually(send, received, ms = 3000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    send();
    if (await received(200)) return true;
  }
  return false;
}

describe("Redis Cluster: sharded adapter in a mixed fleet", () => {
  let cluster;
  before(async () => {
    cluster = await startRedisCluster();
  });
  after(async () => cluster?.stop());

  for (const mode of ["static", "dynamic", "dynamic-private"]) {
    describe(`subscription mode ${mode}`, () => {
      let node, a, b, anchors;
      before(async () => {
        node = await startShardedNode(cluster, mode);
        const env = { REDIS_CLUSTER_NODES: cluster.seeds, REDIS_SUBSCRIPTION_MODE: mode, IOPLEX_FLEET_SHARE_CREDENTIALS: "true" };
        [a, b] = await Promise.all([startServer({ env }), startServer({ env })]);
        anchors = [ioClient(a.url), ioClient(b.url)];
        await Promise.all(anchors.map((s) => once(s, "connect", 5000)));
        await waitForServers(node.io, 3);
      });
      after(async () => {
        for (const s of anchors ?? []) s.disconnect();
        await Promise.all([a, b].filter(Boolean).map((s) => s.stop()));
        await node?.stop();
      });
      afterEach(closeAll);

      test("Node's room broadcasts reach ioplex members only, binary included", async () => {
        const member = await connected(a.url);
        const outsider = await connected(b.url);
        assert.deepEqual(await ack(member, "join", "company:1"), { ok: true });
        let got;
        member.on("news", (...args) => (got = args));
        const reached = await eventually(
          () => node.io.to("company:1").emit("news", "hello", Buffer.from([1, 2, 3])),
          async (ms) => { await sleep(ms); return got !== undefined; },
        );
        assert.ok(reached, "a Node broadcast reached the ioplex member");
        assert.equal(got[0], "hello");
        assert.ok(Buffer.from(got[1]).equals(Buffer.from([1, 2, 3])));
        assert.equal(await arrives(outsider, "news"), false);
      });

      test("an ioplex publish reaches Node's and the other ioplex node's members", async () => {
        const nodeClient = await connected(node.url);
        const x = await connected(a.url);
        const y = await connected(b.url);
        await ack(nodeClient, "join", "conversation:9");
        await ack(x, "join", "conversation:9");
        await ack(y, "join", "conversation:9");
        let toNode, toY;
        nodeClient.on("chat", (...args) => (toNode = args));
        y.on("chat", (...args) => (toY = args));
        const reached = await eventually(
          () => x.emit("publish", { room: "conversation:9", event: "chat", args: [{ text: "hi" }, Buffer.from("bin")] }),
          async (ms) => { await sleep(ms); return toNode !== undefined && toY !== undefined; },
        );
        assert.ok(reached, "both members heard it");
        assert.deepEqual(toNode[0], { text: "hi" });
        assert.ok(Buffer.from(toNode[1]).equals(Buffer.from("bin")));
        assert.deepEqual(toY[0], { text: "hi" });
      });

      test("an emit to one socket id on another node arrives", async () => {
        const target = await connected(b.url);
        const got = once(target, "direct", 5000);
        node.io.to(target.id).emit("direct", 42);
        assert.deepEqual(await got, [42]);
      });

      test("fetchSockets from Node sees ioplex sockets, and socketsJoin / disconnectSockets act on them", async () => {
        const s = await connected(a.url, { auth: { who: "a" } });
        await ack(s, "join", "fetch-room");
        const sockets = await node.io.in("fetch-room").fetchSockets();
        assert.deepEqual(sockets.map((x) => x.id), [s.id]);
        assert.deepEqual(sockets[0].handshake.auth, { who: "a" });
        node.io.in(s.id).socketsJoin("joined-by-node");
        await sleep(300);
        const [again] = await node.io.in("joined-by-node").fetchSockets();
        assert.equal(again?.id, s.id);
        const gone = once(s, "disconnect", 5000);
        node.io.in("joined-by-node").disconnectSockets();
        assert.equal((await gone)[0], "io server disconnect");
      });
    });
  }
});
