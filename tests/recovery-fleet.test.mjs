// Connection state recovery across a fleet (REDIS_ADAPTER=streams), with the stock socket.io-client:
// a socket comes back on another node after its own node was SIGKILLed, a mixed fleet of ioplex and a
// Node server with @socket.io/redis-streams-adapter recovers each other's clients, and a session past
// its window starts afresh. Clients reach the nodes through a TCP proxy that the tests re-point.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "redis";
import { startServer } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";
import { startProxy } from "./lib/proxy.mjs";
import { startNodeStreamsServer } from "./lib/node-fleet.mjs";
import { closeAll, connected, once, sleep } from "./lib/client.mjs";

const ack = (socket, ...args) => socket.timeout(3000).emitWithAck(...args);

/** A websocket client through `url` that reconnects at once. */
const recovering = (url) =>
  connected(url, { transports: ["websocket"], reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100 });

/** Collects a client's `event`s: their first argument and the offset appended last. */
function collect(socket, event) {
  const got = [];
  socket.on(event, (...args) => got.push({ text: args[0], offset: args.at(-1) }));
  return got;
}

async function until(check, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await sleep(20);
}

/**
 * Waits until the session Redis holds for `socket` names `room`: a join reaches Redis a moment after
 * its ack (a node killed inside that moment restores the socket without the room).
 */
async function sessionHolds(redisUrl, socket, room, ms = 5000) {
  const inspect = createClient({ url: redisUrl });
  await inspect.connect();
  try {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const value = await inspect.get(`sio:session:${socket._pid}`);
      if (value && Buffer.from(value, "base64").includes(room)) return;
      await sleep(20);
    }
    throw new Error(`the session of ${socket.id} never named ${room}`);
  } finally {
    await inspect.quit();
  }
}

/** Waits until `node`'s /readyz answers 200 (its Redis connections are up). */
async function ready(node, ms = 10000) {
  const deadline = Date.now() + ms;
  while ((await fetch(`${node.url}/readyz`)).status !== 200 && Date.now() < deadline) await sleep(100);
  assert.equal((await fetch(`${node.url}/readyz`)).status, 200);
}

const streamsNode = (redis, env = {}) =>
  startServer({ env: { REDIS_URL: redis.url, REDIS_ADAPTER: "streams", ...env } });

/** Publishes `texts` to `room` as `event` from `sender`, each acknowledged before the next. */
async function publishAll(sender, room, event, texts) {
  for (const text of texts) {
    assert.deepEqual(await ack(sender, "publish", { room, event, args: [text] }), { ok: true });
  }
}

describe("connection state recovery across the fleet (streams adapter)", () => {
  let redis, a, b, proxy;
  before(async () => {
    redis = await startRedis();
    [a, b] = await Promise.all([streamsNode(redis), streamsNode(redis)]);
    proxy = await startProxy(a.port);
  });
  after(async () => {
    await proxy?.close();
    await Promise.allSettled([a?.stop(), b?.stop()]);
    await redis?.stop();
  });
  afterEach(closeAll);

  test("on one node: a dropped socket comes back with its id and rooms, and gets what it missed once, in order", async () => {
    const c = await recovering(b.url);
    const sender = await connected(b.url);
    await ack(c, "join", "one-node");
    await ack(sender, "join", "one-node");
    const got = collect(c, "chat");
    await publishAll(sender, "one-node", "chat", ["m0"]);
    await until(() => got.length === 1);
    assert.match(got[0].offset, /^\d+-\d+$/, "the offset is a stream entry id");
    const id = c.id;
    const gone = once(c, "disconnect", 3000);
    const back = once(c, "connect", 8000);
    c.io.engine.close();
    await gone;
    await publishAll(sender, "one-node", "chat", ["m1", "m2", "m3"]);
    await back;
    assert.equal(c.recovered, true);
    assert.equal(c.id, id);
    await publishAll(sender, "one-node", "chat", ["m4"]);
    await until(() => got.length >= 5);
    await sleep(300);
    assert.deepEqual(got.map((g) => g.text), ["m0", "m1", "m2", "m3", "m4"]);
  });

  test("the node holding the socket is SIGKILLed: the client recovers on another node, nothing lost or doubled", async () => {
    const c = await recovering(proxy.url);
    const sender = await connected(b.url);
    await ack(c, "join", "crash");
    await ack(sender, "join", "crash");
    await sessionHolds(redis.url, c, "crash");
    const got = collect(c, "chat");
    await publishAll(sender, "crash", "chat", ["before"]);
    await until(() => got.length === 1);
    const id = c.id;
    // The session is in Redis before the crash: nothing is written at disconnect.
    proxy.pointAt(b.port);
    const gone = once(c, "disconnect", 5000);
    const back = once(c, "connect", 8000);
    a.child.kill("SIGKILL");
    try {
      await gone;
      await publishAll(sender, "crash", "chat", ["while-away-1", "while-away-2"]);
      await back;
      assert.equal(c.recovered, true, "restored on node B");
      assert.equal(c.id, id);
      await publishAll(sender, "crash", "chat", ["after"]);
      await until(() => got.length >= 4);
      await sleep(300);
      assert.deepEqual(got.map((g) => g.text), ["before", "while-away-1", "while-away-2", "after"]);
      // Still in its room on B: a fetch from B's side sees it there.
      assert.deepEqual(await ack(sender, "members", "crash").then((r) => r.members.map((m) => m.id).sort()), [c.id, sender.id].sort());
    } finally {
      a = await streamsNode(redis);
      proxy.pointAt(a.port);
    }
  });

  test("a client that never received a packet recovers after its node crashed (Node's adapter cannot)", async () => {
    const c = await recovering(proxy.url);
    const sender = await connected(b.url);
    await ack(c, "join", "silent");
    await ack(sender, "join", "silent");
    await sessionHolds(redis.url, c, "silent");
    const got = collect(c, "note");
    assert.equal(c._lastOffset, undefined);
    proxy.pointAt(b.port);
    const gone = once(c, "disconnect", 5000);
    const back = once(c, "connect", 8000);
    a.child.kill("SIGKILL");
    try {
      await gone;
      await publishAll(sender, "silent", "note", ["n1", "n2"]);
      await back;
      assert.equal(c.recovered, true);
      await until(() => got.length >= 2);
      await sleep(300);
      assert.deepEqual(got.map((g) => g.text), ["n1", "n2"]);
    } finally {
      a = await streamsNode(redis);
      proxy.pointAt(a.port);
    }
  });

  test("leaving on purpose ends the session; an unknown pid gets a fresh socket", async () => {
    const d = await connected(a.url, { transports: ["websocket"] });
    const pid = d._pid;
    assert.equal(typeof pid, "string");
    d.disconnect();
    await sleep(200);
    const again = await connected(a.url, { transports: ["websocket"], auth: { pid, offset: "1-0" } });
    assert.equal(again.recovered, false);
    assert.notEqual(again._pid, pid);
    const stranger = await connected(a.url, { transports: ["websocket"], auth: { pid: "no-such-session", offset: "junk" } });
    assert.equal(stranger.recovered, false);
  });
});

describe("mixed fleet: ioplex and Node (@socket.io/redis-streams-adapter 0.3) recover each other's clients", () => {
  let redis, ioplexNode, nodeServer, proxy;
  before(async () => {
    redis = await startRedis();
    ioplexNode = await streamsNode(redis);
    nodeServer = await startNodeStreamsServer(redis.url);
    proxy = await startProxy(nodeServer.port);
  });
  after(async () => {
    await proxy?.close();
    await nodeServer?.stop();
    await ioplexNode?.stop();
    await redis?.stop();
  });
  afterEach(closeAll);

  test("a Node client's session is restored by ioplex, with what Node's peers sent meanwhile", async () => {
    const c = await recovering(proxy.url);
    const sender = await connected(nodeServer.url, { transports: ["websocket"] });
    await ack(c, "join", "mixed-1");
    await ack(sender, "join", "mixed-1");
    const got = collect(c, "chat");
    sender.emit("publish", { room: "mixed-1", event: "chat", args: ["from-node-0"] });
    await until(() => got.length === 1);
    const id = c.id;
    proxy.pointAt(ioplexNode.port);
    const gone = once(c, "disconnect", 3000);
    const back = once(c, "connect", 8000);
    c.io.engine.close();
    await gone;
    await ack(sender, "publish", { room: "mixed-1", event: "chat", args: ["from-node-1"] });
    await back;
    assert.equal(c.recovered, true, "ioplex restored Node's session");
    assert.equal(c.id, id);
    await until(() => got.length >= 2);
    // Live again, and still in its room: the Node peer reaches it on ioplex.
    await ack(sender, "publish", { room: "mixed-1", event: "chat", args: ["from-node-2"] });
    await until(() => got.length >= 3);
    await sleep(300);
    assert.deepEqual(got.map((g) => g.text), ["from-node-0", "from-node-1", "from-node-2"]);
    proxy.pointAt(nodeServer.port);
  });

  test("an ioplex client's session is restored by Node", async () => {
    proxy.pointAt(ioplexNode.port);
    const c = await recovering(proxy.url);
    const sender = await connected(ioplexNode.url);
    await ack(c, "join", "mixed-2");
    await ack(sender, "join", "mixed-2");
    const got = collect(c, "chat");
    await publishAll(sender, "mixed-2", "chat", ["from-ioplex-0"]);
    await until(() => got.length === 1);
    const id = c.id;
    proxy.pointAt(nodeServer.port);
    const gone = once(c, "disconnect", 3000);
    const back = once(c, "connect", 8000);
    c.io.engine.close();
    await gone;
    await sleep(100);
    await publishAll(sender, "mixed-2", "chat", ["from-ioplex-1"]);
    await back;
    assert.equal(c.recovered, true, "Node restored ioplex's session");
    assert.equal(c.id, id);
    await until(() => got.length >= 2);
    await publishAll(sender, "mixed-2", "chat", ["from-ioplex-2"]);
    await until(() => got.length >= 3);
    await sleep(300);
    assert.deepEqual(got.map((g) => g.text), ["from-ioplex-0", "from-ioplex-1", "from-ioplex-2"]);
  });
});

describe("recovery window and Redis cost", () => {
  afterEach(closeAll);

  test("past the window the client starts afresh; session keys carry the window as their TTL, and the stream keeps nothing older", async () => {
    const redis = await startRedis();
    const node = await streamsNode(redis, { RECOVERY_WINDOW_MS: "400" });
    const inspect = createClient({ url: redis.url });
    await inspect.connect();
    try {
      const c = await connected(node.url, {
        transports: ["websocket"],
        reconnection: true,
        reconnectionDelay: 1200,
        reconnectionDelayMax: 1200,
        randomizationFactor: 0,
      });
      const pid = c._pid;
      // Written when the socket connected, within a moment.
      const deadline = Date.now() + 3000;
      while ((await inspect.exists(`sio:session:${pid}`)) !== 1 && Date.now() < deadline) await sleep(20);
      const ttl = await inspect.pTTL(`sio:session:${pid}`);
      assert.ok(ttl > 0 && ttl <= 400, `session key TTL ${ttl} ms`);
      const id = c.id;
      const gone = once(c, "disconnect", 3000);
    const back = once(c, "connect", 8000);
      c.io.engine.close();
      await gone;
      await back;
      assert.equal(c.recovered, false);
      assert.notEqual(c.id, id);
      // Nothing older than the window stays in the stream.
      const deadline2 = Date.now() + 3000;
      while ((await inspect.xLen("socket.io")) > 0 && Date.now() < deadline2) await sleep(50);
      assert.equal(await inspect.xLen("socket.io"), 0, "entries older than the window are trimmed");
    } finally {
      await inspect.quit();
      await node.stop();
      await redis.stop();
    }
  });
});

describe("Redis goes away and comes back empty", () => {
  afterEach(closeAll);

  test("the nodes read the new stream and write every session again: a node killed afterwards loses no client", async () => {
    const redis = await startRedis();
    const [a, b] = [await streamsNode(redis), await streamsNode(redis)];
    const proxy = await startProxy(a.port);
    try {
      const c = await recovering(proxy.url);
      const sender = await connected(b.url);
      await ack(c, "join", "restart");
      await ack(sender, "join", "restart");
      const got = collect(c, "chat");
      await redis.stop();
      await sleep(300);
      await redis.restart();
      // Both nodes back on the new Redis (their /readyz says so), delivering across nodes again.
      for (const node of [a, b]) await ready(node);
      let delivered = false;
      for (let i = 0; i < 50 && !delivered; i++) {
        await ack(sender, "publish", { room: "restart", event: "chat", args: [`after-restart-${i}`] });
        await sleep(100);
        delivered = got.length > 0;
      }
      assert.ok(delivered, "cross-node delivery resumed on the new stream");
      const seen = got.length;
      // The session of c was lost with Redis' data; node A writes it again when it reconnects.
      await sessionHolds(redis.url, c, "restart");
      proxy.pointAt(b.port);
      const gone = once(c, "disconnect", 5000);
      const back = once(c, "connect", 8000);
      a.child.kill("SIGKILL");
      await gone;
      await publishAll(sender, "restart", "chat", ["while-away"]);
      await back;
      assert.equal(c.recovered, true);
      await until(() => got.length > seen);
      await sleep(300);
      assert.deepEqual(got.slice(seen).map((g) => g.text), ["while-away"]);
    } finally {
      await proxy.close();
      await Promise.allSettled([a.stop(), b.stop()]);
      await redis.stop();
    }
  });
});

describe("a node that starts while Redis is away", () => {
  afterEach(closeAll);

  test("joins the stream at its end once Redis answers: what the fleet said before is not replayed to its sockets", async () => {
    const redis = await startRedis();
    const raw = createClient({ url: redis.url });
    await raw.connect();
    // A peer's broadcast to everyone, already in the stream.
    const data = JSON.stringify({ packet: { type: 2, data: ["stale"], nsp: "/" }, opts: { rooms: [], except: [], flags: {} } });
    await raw.xAdd("socket.io", "*", { uid: "peer", nsp: "/", type: "3", data });
    // The node reaches Redis through a proxy that points nowhere (port 1 refuses) until the test says.
    const toRedis = await startProxy(1);
    const node = await streamsNode({ url: `redis://127.0.0.1:${toRedis.port}` });
    try {
      const c = await connected(node.url, { transports: ["websocket"] });
      const stale = [];
      c.on("stale", () => stale.push(1));
      toRedis.pointAt(redis.port);
      await ready(node);
      await ack(c, "join", "fresh");
      const got = collect(c, "fresh-news");
      let delivered = false;
      for (let i = 0; i < 50 && !delivered; i++) {
        await ack(c, "publish", { room: "fresh", event: "fresh-news", args: [i], self: true });
        await sleep(100);
        delivered = got.length > 0;
      }
      assert.ok(delivered, "the stream delivers once Redis answers");
      assert.equal(stale.length, 0, "the entry written before the node joined is not delivered");
    } finally {
      await raw.quit();
      await toRedis.close();
      await node.stop();
      await redis.stop();
    }
  });
});

describe("a deploy: a node drained under load hands its clients over", () => {
  afterEach(closeAll);

  test("SIGTERM spreads the reconnects, every client recovers on the other node, and no broadcast is lost or doubled", async () => {
    const redis = await startRedis();
    const a = await startServer({ args: ["--shutdown-grace", "2000"], env: { REDIS_URL: redis.url, REDIS_ADAPTER: "streams" } });
    const b = await streamsNode(redis);
    const proxy = await startProxy(a.port);
    try {
      // More than the drain closes at once (100): they are closed in batches over half the grace.
      const receivers = [];
      for (let i = 0; i < 120; i++) receivers.push(await recovering(proxy.url));
      await Promise.all(receivers.map((r) => ack(r, "join", "deploy")));
      const sender = await connected(b.url);
      await ack(sender, "join", "deploy");
      const got = receivers.map((r) => collect(r, "tick"));
      const reconnectedAt = receivers.map((r) => once(r, "connect", 10000).then(() => Date.now()));
      const exited = new Promise((resolve) => a.child.once("exit", resolve));
      const total = 150;
      let sent = 0;
      const publishing = (async () => {
        for (; sent < total; sent++) {
          await publishAll(sender, "deploy", "tick", [sent]);
          await sleep(10);
        }
      })();
      await until(() => sent >= 30);
      proxy.pointAt(b.port);
      const drainStarted = Date.now();
      a.child.kill("SIGTERM");
      await publishing;
      const back = await Promise.all(reconnectedAt);
      assert.equal(await exited, 0, "the drained node exits cleanly");
      assert.ok(receivers.every((r) => r.recovered), `recovered: ${receivers.filter((r) => r.recovered).length} of ${receivers.length}`);
      const spread = Math.max(...back) - Math.min(...back);
      assert.ok(spread >= 300, `reconnects spread over ${spread} ms (from ${Math.min(...back) - drainStarted} ms after SIGTERM)`);
      await until(() => got.every((g) => g.length >= total), 10000);
      await sleep(300);
      const expected = Array.from({ length: total }, (_, i) => i);
      for (const g of got) assert.deepEqual(g.map((m) => m.text), expected);
    } finally {
      await proxy.close();
      await Promise.allSettled([a.stop(), b.stop()]);
      await redis.stop();
    }
  });
});
