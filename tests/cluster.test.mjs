// The sharded adapter on a real Redis Cluster (3 masters + 3 replicas on loopback ports), in a mixed
// fleet: a Node socket.io 4.8 server with @socket.io/redis-adapter 8.3 createShardedAdapter (node-redis
// cluster client) and two ioplex nodes (REDIS_CLUSTER_NODES), in each subscription mode.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createCluster } from "redis";
import { io as ioClient } from "socket.io-client";
import { Server } from "socket.io";
import { createShardedAdapter } from "@socket.io/redis-adapter";
import { binaryPath, freePort, startServer } from "./lib/server.mjs";
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
    pub,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      io.close();
      // A cluster with a killed node can leave QUIT waiting: give it a second, then disconnect.
      const quit = Promise.allSettled([pub.quit(), sub.quit()]);
      const late = await Promise.race([quit.then(() => false), sleep(1000).then(() => true)]);
      if (late) await Promise.allSettled([pub.disconnect(), sub.disconnect()]);
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

      test("a room's members across the fleet, from an ioplex client, include Node's sockets", async () => {
        const nodeClient = await connected(node.url);
        const x = await connected(a.url);
        await ack(nodeClient, "join", "members-room");
        await ack(x, "join", "members-room");
        const answer = await ack(x, "members", "members-room");
        assert.equal(answer.ok, true);
        assert.deepEqual(answer.members.map((m) => m.id).sort(), [nodeClient.id, x.id].sort());
      });

      test("Node's broadcast with acks collects the ioplex clients' answers", async () => {
        const x = await connected(a.url);
        const y = await connected(b.url);
        const nodeClient = await connected(node.url);
        for (const s of [x, y, nodeClient]) await ack(s, "join", "acks");
        x.on("question", (cb) => cb("from-a", Buffer.from("x")));
        y.on("question", (cb) => cb("from-b"));
        nodeClient.on("question", (cb) => cb("from-node"));
        await sleep(200);
        const answers = await node.io.timeout(3000).to("acks").emitWithAck("question");
        assert.deepEqual(answers.filter((v) => typeof v === "string").sort(), ["from-a", "from-b", "from-node"]);
      });

      test("a peer's oversized or malformed shard messages are refused unread; the node goes on", async () => {
        const metric = async () => {
          const text = await (await fetch(`${a.url}/metrics`)).text();
          return Number(/^ioplex_redis_cluster_refused_total\{key="socket.io"\} (\d+)$/m.exec(text)?.[1] ?? NaN);
        };
        const member = await connected(a.url);
        assert.deepEqual(await ack(member, "join", "junk-room"), { ok: true });
        const got = [];
        member.on("big", (text) => got.push(text.length));
        // A well-formed broadcast envelope, as the sharded adapter writes it, with an argument of `bytes`.
        const envelope = (bytes) => JSON.stringify({
          type: 3,
          data: { packet: { type: 2, data: ["big", "x".repeat(bytes)], nsp: "/" }, opts: { rooms: ["junk-room"], except: [], flags: {} } },
          uid: "peer", nsp: "/",
        });
        const before = await metric();
        await node.pub.sPublish("socket.io#/#", envelope(5_000_000)); // over the 4 MB cap
        await node.pub.sPublish("socket.io#/#", Buffer.from([0xc1, 0xc1])); // not an envelope
        await node.pub.sPublish("socket.io#/#", envelope(10)); // the same, small: delivered
        const deadline = Date.now() + 3000;
        while ((got.length === 0 || (await metric()) < before + 2) && Date.now() < deadline) await sleep(50);
        assert.deepEqual(got, [10], "only the small copy reached the member");
        assert.equal(await metric(), before + 2);
        assert.deepEqual(await ack(member, "join", "after-junk"), { ok: true });
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
  describe("a tenant's own Redis Cluster, from its TOML section", () => {
    let node, a, b, dir, config;
    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-cluster-tenant-"));
      config = path.join(dir, "ioplex.toml");
      fs.writeFileSync(config, [
        "[tenants.acme]",
        `redis-cluster-nodes = "${cluster.seeds}"`,
        'redis-subscription-mode = "dynamic-private"',
        "[tenants.plain]",
        "default = true",
        "",
      ].join("\n"));
      node = await startShardedNode(cluster, "dynamic-private");
      // No gateway Redis at all: only acme's section names the cluster.
      [a, b] = await Promise.all([startServer({ args: ["--config", config] }), startServer({ args: ["--config", config] })]);
    });
    after(async () => {
      await Promise.all([a, b].filter(Boolean).map((s) => s.stop()));
      await node?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    afterEach(closeAll);

    test("acme's rooms span its nodes and Node's; the other tenant stays local", async () => {
      const acme = { query: { tenant: "acme" } };
      const x = await connected(a.url, acme);
      const y = await connected(b.url, acme);
      const outsider = await connected(b.url);
      for (const s of [x, y, outsider]) await ack(s, "join", "company:7");
      await waitForServers(node.io, 3);
      let toY;
      y.on("news", (...args) => (toY = args));
      const reached = await eventually(
        () => node.io.to("company:7").emit("news", "for acme"),
        async (ms) => { await sleep(ms); return toY !== undefined; },
      );
      assert.ok(reached, "a Node broadcast on acme's cluster reached acme's socket on the other node");
      assert.deepEqual(toY, ["for acme"]);
      assert.equal(await arrives(outsider, "news"), false, "the default tenant has no Redis: nothing crosses");
      const run = spawnSync(binaryPath("ioplex"), ["tenants", "--config", config, "--url", a.url], { encoding: "utf8" });
      assert.equal(run.status, 0, run.stderr);
      assert.match(run.stdout, /redis cluster socket\.io: connected, 3 masters, 0 lost since start; subscriptions held\/wanted: /);
    });
  });

  /** A Node sharded server and two ioplex nodes in "dynamic" mode, with a room joined on both ioplex nodes. */
  function resilienceFleet() {
    const fleet = {};
    before(async () => {
      fleet.node = await startShardedNode(cluster, "dynamic");
      const env = { REDIS_CLUSTER_NODES: cluster.seeds, REDIS_SUBSCRIPTION_MODE: "dynamic" };
      [fleet.a, fleet.b] = await Promise.all([startServer({ env }), startServer({ env })]);
      fleet.anchors = [ioClient(fleet.a.url), ioClient(fleet.b.url)];
      await Promise.all(fleet.anchors.map((s) => once(s, "connect", 5000)));
      await waitForServers(fleet.node.io, 3);
    });
    after(async () => {
      for (const s of fleet.anchors ?? []) s.disconnect();
      await Promise.all([fleet.a, fleet.b].filter(Boolean).map((s) => s.stop()));
      await fleet.node?.stop();
    });
    afterEach(closeAll);
    /** x on a, y on b, both in `room`; `seen()` counts y's "tick"s; delivery checked once. */
    fleet.members = async (room) => {
      const x = await connected(fleet.a.url);
      const y = await connected(fleet.b.url);
      const local = await connected(fleet.a.url);
      for (const s of [x, y, local]) await ack(s, "join", room);
      let seenByY = 0;
      y.on("tick", () => seenByY++);
      const tick = () => x.emit("publish", { room, event: "tick" });
      assert.ok(await eventually(tick, async (ms) => { await sleep(ms); return seenByY > 0; }), "delivery before the change");
      return { x, y, local, tick, seen: () => seenByY };
    };
    return fleet;
  }

  /** Publishes until y hears a new tick; returns ms from now, or fails after `ms`. */
  async function resumes(members, ms = 10_000) {
    const start = Date.now();
    const before = members.seen();
    const back = await eventually(members.tick, async (wait) => { await sleep(wait); return members.seen() > before; }, ms);
    assert.ok(back, "cross-node delivery resumed");
    return Date.now() - start;
  }

  describe("a slot migrated mid-run", () => {
    const fleet = resilienceFleet();

    test("the room's channel moves to another master and delivery follows it", async () => {
      const room = "migrating-room";
      const channel = `socket.io#/#${room}#`;
      const members = await fleet.members(room);
      const from = await cluster.ownerOf(channel);
      const to = (await cluster.masters()).find((m) => m !== from);
      await cluster.moveSlot(channel, to);
      const movedAt = Date.now();
      const localGot = once(members.local, "tick", 3000);
      members.tick();
      await localGot;
      const took = await resumes(members);
      console.log(`slot migration: delivery back ${Date.now() - movedAt} ms after the move (${took} ms of publishing)`);
      assert.ok(Date.now() - movedAt < 2000 + 1000, "back within 2 s of the move (plus a publish round)");
    });
  });

  describe("a master killed mid-run", () => {
    const fleet = resilienceFleet();

    test("after its replica takes over, cross-node delivery resumes and local delivery never stopped; the node restarts", async () => {
      const room = "failover-room";
      const channel = `socket.io#/#${room}#`;
      const members = await fleet.members(room);
      // Kill the master that owns the room's shard channel.
      const owner = await cluster.ownerOf(channel);
      owner.child.kill("SIGKILL");
      const killedAt = Date.now();
      const localGot = once(members.local, "tick", 3000);
      members.tick();
      await localGot; // the sender's own node delivers whatever Redis does
      // During the gap, a fleet request fails at once with a clear error instead of waiting 5 s.
      await sleep(1500);
      const asked = Date.now();
      const answer = await ack(members.x, "members", room);
      if (await cluster.ownerOf(channel).catch(() => owner) === owner) {
        assert.equal(answer.ok, false, `fleet request during the gap: ${JSON.stringify(answer)}`);
        assert.match(answer.message, /does not answer/);
        assert.ok(Date.now() - asked < 1500, `answered in ${Date.now() - asked} ms`);
      }
      // Wait for the replica's promotion (the slot has another master), then for the cluster to be ok.
      while ((await cluster.ownerOf(channel).catch(() => owner)) === owner) {
        assert.ok(Date.now() - killedAt < 20_000, "a replica took over within 20 s");
        await sleep(100);
      }
      await cluster.waitOk([owner]);
      const okAt = Date.now();
      await resumes(members);
      const back = Date.now() - okAt;
      console.log(`failover: cluster ok ${okAt - killedAt} ms after the kill, delivery back ${back} ms after that`);
      assert.ok(back < 2000, `cross-node delivery back ${back} ms after cluster_state:ok (goal: 2 s)`);
      const answerAfter = await ack(members.x, "members", room);
      assert.equal(answerAfter.ok, true, `fleet requests work again: ${JSON.stringify(answerAfter)}`);
      // The killed node comes back (as a replica of its successor): nothing breaks, delivery goes on.
      await cluster.restart(owner);
      await cluster.waitOk();
      await resumes(members, 5000);
      const again = await ack(members.x, "members", room);
      assert.equal(again.ok, true, `fleet requests after the restart: ${JSON.stringify(again)}`);
    });
  });

});
