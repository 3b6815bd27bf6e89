// A mixed fleet on one Redis: a Node socket.io server with @socket.io/redis-adapter (default options), the
// ioplex binary twice (REDIS_URL only), the embedded example (ioplex as a library, driving fleet operations)
// and @socket.io/redis-emitter. Clients are the official socket.io-client.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "redis";
import { io } from "socket.io-client";
import { Emitter } from "@socket.io/redis-emitter";
import { startServer } from "./lib/server.mjs";
import { makeTlsFiles, startRedis } from "./lib/redis.mjs";
import { startNodeServer, waitForServers } from "./lib/node-fleet.mjs";
import { arrives, closeAll, connected, once, sleep } from "./lib/client.mjs";

const ack = (socket, ...args) => socket.timeout(5000).emitWithAck(...args);

describe("mixed fleet: Node socket.io + ioplex on one Redis", () => {
  let redis, node, ioplexA, ioplexB, embedded, anchors;
  before(async () => {
    redis = await startRedis();
    node = await startNodeServer(redis.url);
    // Node's fetchSockets shows CONNECT auth; ioplex does so only when told to (tests/isolation covers the default).
    const env = { REDIS_URL: redis.url, IOPLEX_FLEET_SHARE_CREDENTIALS: "true" };
    [ioplexA, ioplexB, embedded] = await Promise.all([
      startServer({ env }),
      startServer({ env }),
      startServer({ name: "examples/embedded", env }),
    ]);
    // The binary opens `/` (and subscribes to its channels) when a first client joins it.
    anchors = [io(ioplexA.url), io(ioplexB.url)];
    await Promise.all(anchors.map((s) => once(s, "connect")));
    await waitForServers(node.io, 4);
  });
  after(async () => {
    for (const s of anchors) s.disconnect();
    await Promise.all([ioplexA, ioplexB, embedded].map((s) => s.stop()));
    await node.stop();
    await redis.stop();
  });
  afterEach(closeAll);

  test("Node io.to(room).emit reaches ioplex clients in the room only, binary included", async () => {
    const member = await connected(ioplexA.url);
    const outsider = await connected(ioplexB.url);
    assert.deepEqual(await ack(member, "join", "n2i"), { ok: true });
    const got = once(member, "news");
    const notGot = arrives(outsider, "news");
    node.io.to("n2i").emit("news", "hello", Buffer.from([1, 2, 3]), { at: 1 });
    const [text, bin, obj] = await got;
    assert.equal(text, "hello");
    assert.ok(Buffer.from(bin).equals(Buffer.from([1, 2, 3])));
    assert.deepEqual(obj, { at: 1 });
    assert.equal(await notGot, false);
  });

  test("ioplex broadcasts reach Node clients, and Node broadcasts other ioplex nodes' clients", async () => {
    const nodeClient = await connected(node.url);
    const a = await connected(ioplexA.url);
    const b = await connected(ioplexB.url, { transports: ["polling"] });
    await ack(nodeClient, "join", "i2n");
    await ack(a, "join", "i2n");
    await ack(b, "join", "i2n");
    const toNode = once(nodeClient, "chat");
    const toB = once(b, "chat");
    assert.deepEqual(await ack(a, "publish", { room: "i2n", event: "chat", args: [{ text: "hi" }, Buffer.from("bin")] }), { ok: true });
    const [msg, bin] = await toNode;
    assert.deepEqual(msg, { text: "hi" });
    assert.ok(Buffer.from(bin).equals(Buffer.from("bin")));
    assert.deepEqual((await toB)[0], { text: "hi" });
  });

  test("fetchSockets and allRooms from Node see ioplex sockets and rooms", async () => {
    const a = await connected(ioplexA.url, { auth: { who: "a" } });
    await ack(a, "join", "fetch-room");
    const sockets = await node.io.in("fetch-room").fetchSockets();
    assert.deepEqual(sockets.map((s) => s.id), [a.id]);
    const [remote] = sockets;
    assert.ok(remote.rooms.has("fetch-room") && remote.rooms.has(a.id));
    assert.equal(remote.handshake.address, "127.0.0.1");
    assert.deepEqual(remote.handshake.auth, { who: "a" });
    assert.equal(remote.handshake.query.EIO, "4");
    const rooms = await node.io.of("/").adapter.allRooms();
    assert.ok(rooms.has("fetch-room"));
    // A RemoteSocket's emit goes through Redis to the ioplex node.
    const got = once(a, "direct");
    remote.emit("direct", 42);
    assert.deepEqual(await got, [42]);
  });

  test("fetchSockets and allRooms from ioplex see Node sockets and rooms", async () => {
    const nodeClient = await connected(node.url);
    await ack(nodeClient, "join", "from-ioplex");
    const driver = await connected(embedded.url);
    assert.deepEqual(await ack(driver, "fetch-sockets", "from-ioplex"), { ids: [nodeClient.id] });
    const { rooms } = await ack(driver, "all-rooms");
    assert.ok(rooms.includes("from-ioplex"));
    assert.ok(rooms.includes(nodeClient.id));
  });

  test("socketsJoin, socketsLeave and disconnectSockets from Node act on ioplex sockets", async () => {
    const a = await connected(ioplexA.url);
    node.io.in(a.id).socketsJoin("joined-by-node");
    await sleep(200);
    let got = once(a, "after-join");
    node.io.to("joined-by-node").emit("after-join");
    await got;
    node.io.in(a.id).socketsLeave("joined-by-node");
    await sleep(200);
    const notGot = arrives(a, "after-leave");
    node.io.to("joined-by-node").emit("after-leave");
    assert.equal(await notGot, false);
    const gone = once(a, "disconnect");
    node.io.in(a.id).disconnectSockets();
    assert.equal((await gone)[0], "io server disconnect");
  });

  test("emit with acks across nodes, both ways", async () => {
    const a = await connected(ioplexA.url);
    const nodeClient = await connected(node.url);
    await ack(a, "join", "acks");
    await ack(nodeClient, "join", "acks");
    a.on("question", (cb) => cb("from-ioplex", Buffer.from("x")));
    nodeClient.on("question", (cb) => cb("from-node"));
    const answers = await node.io.timeout(3000).to("acks").emitWithAck("question");
    assert.deepEqual(answers.sort(), ["from-ioplex", "from-node"]);

    const driver = await connected(embedded.url);
    const result = await ack(driver, "emit-with-ack", "acks", "question");
    assert.deepEqual(result, { answers: ["from-ioplex", "from-node"], timedOut: false });
  });

  test("serverSideEmit both ways", async () => {
    await waitForServers(node.io, 4);
    node.io.on("ping-servers", (cb) => cb("pong-node"));
    const fromNode = await node.io.serverSideEmitWithAck("hello");
    // ioplexA/B have no handler and answer null; the embedded example acknowledges.
    assert.deepEqual(fromNode.map(String).sort(), ["ack-from-ioplex", "null", "null"]);

    const driver = await connected(embedded.url);
    const { answers } = await ack(driver, "server-side-emit", "ping-servers");
    assert.deepEqual(answers.map(String).sort(), ["null", "null", "pong-node"]);

    const listener = await connected(embedded.url);
    const got = once(listener, "server-side");
    node.io.serverSideEmit("fire-and-forget", 7);
    assert.deepEqual(await got, [["fire-and-forget", 7]]);
  });

  test("the redis-emitter reaches ioplex clients", async () => {
    const client = createClient({ url: redis.url });
    await client.connect();
    try {
      const emitter = new Emitter(client);
      const a = await connected(ioplexA.url);
      await ack(a, "join", "emitted");
      let got = once(a, "from-emitter");
      emitter.to("emitted").emit("from-emitter", "x", Buffer.from([7]));
      const [x, bin] = await got;
      assert.equal(x, "x");
      assert.ok(Buffer.from(bin).equals(Buffer.from([7])));

      emitter.in(a.id).socketsJoin("emitter-joined");
      await sleep(200);
      got = once(a, "second");
      emitter.to("emitter-joined").volatile.emit("second");
      await got;

      const listener = await connected(embedded.url);
      const sse = once(listener, "server-side");
      emitter.serverSideEmit("emitter-says", 1);
      assert.deepEqual(await sse, [["emitter-says", 1]]);

      const gone = once(a, "disconnect");
      emitter.in("emitted").disconnectSockets();
      assert.equal((await gone)[0], "io server disconnect");
    } finally {
      await client.quit();
    }
  });

  test("except and volatile from Node are honoured on ioplex nodes", async () => {
    const agent = await connected(ioplexA.url);
    const visitor = await connected(ioplexB.url);
    await ack(agent, "join", "conv:except");
    await ack(visitor, "join", "conv:except");
    await ack(visitor, "join", "visitors");
    const toAgent = once(agent, "typing");
    const toVisitor = arrives(visitor, "typing");
    node.io.to("conv:except").except("visitors").volatile.emit("typing", "agent-1");
    assert.deepEqual(await toAgent, ["agent-1"]);
    assert.equal(await toVisitor, false);
  });

  test("legacy (adapter 7) join requests are answered by the node holding the socket", async () => {
    const a = await connected(ioplexA.url);
    const redisClient = createClient({ url: redis.url });
    const listener = redisClient.duplicate();
    await Promise.all([redisClient.connect(), listener.connect()]);
    try {
      const answered = new Promise((resolve) => {
        listener.subscribe("socket.io-response#/#", (message) => {
          const body = JSON.parse(message);
          if (body.requestId === "legacy1") resolve(body);
        });
      });
      await sleep(100);
      await redisClient.publish(
        "socket.io-request#/#",
        JSON.stringify({ uid: "old7xx", requestId: "legacy1", type: 2, sid: a.id, room: "legacy-room" }),
      );
      assert.deepEqual(await answered, { requestId: "legacy1" });
      const got = once(a, "legacy");
      node.io.to("legacy-room").emit("legacy", true);
      assert.deepEqual(await got, [true]);
    } finally {
      await Promise.allSettled([redisClient.quit(), listener.quit()]);
    }
  });

  test("a member that never answers makes fleet requests fail after requestsTimeout, not hang", async () => {
    const spy = createClient({ url: redis.url });
    await spy.connect();
    try {
      // Counted by PUBSUB NUMSUB like a server, but silent (Node's adapter issue #406).
      await spy.subscribe("socket.io-request#/#", () => {});
      await waitForServers(node.io, 5);
      const driver = await connected(embedded.url);
      const startedAt = Date.now();
      const result = await driver.timeout(10000).emitWithAck("fetch-sockets", "anything");
      const waited = Date.now() - startedAt;
      assert.match(result.error, /timeout reached after 5000 ms: only 3 responses received out of 4/);
      assert.ok(waited >= 4900 && waited < 7000, `waited ${waited} ms`);
    } finally {
      await spy.quit();
    }
    await waitForServers(node.io, 4);
  });

  test("a request reaches a socket on another node, Node's included", async () => {
    const asker = await connected(ioplexA.url);
    const onB = await connected(ioplexB.url);
    onB.on("whoami", (ack) => ack({ node: "B" }, Buffer.from([9])));
    const fromB = await ack(asker, "request", { to: onB.id, event: "whoami" });
    assert.equal(fromB.ok, true);
    // Between nodes only the first ack argument travels, as with Node's adapter.
    assert.deepEqual(fromB.args, [{ node: "B" }]);

    const nodeClient = await connected(node.url);
    nodeClient.on("whoami", (ack) => ack("node.js"));
    assert.deepEqual(await ack(asker, "request", { to: nodeClient.id, event: "whoami" }), { ok: true, args: ["node.js"] });

    const gone = await ack(asker, "request", { to: "AAAAAAAAAAAAAAAAAAAA", event: "whoami" });
    assert.equal(gone.code, "unknown_socket");
    onB.on("silent", () => {});
    const late = await ack(asker, "request", { to: onB.id, event: "silent", timeout: 300 });
    assert.equal(late.code, "timeout");
  });

  test("two ioplex nodes: company room, conversation rooms", async () => {
    const agent = await connected(ioplexA.url);
    const otherAgent = await connected(ioplexA.url);
    const visitor = await connected(ioplexB.url);
    for (const s of [agent, otherAgent, visitor]) await ack(s, "join", "company:1");
    await ack(agent, "join", "conversation:7");
    await ack(visitor, "join", "conversation:7");

    const toAgent = once(agent, "message");
    const toOther = arrives(otherAgent, "message");
    await ack(visitor, "publish", { room: "conversation:7", event: "message", args: ["hello agent"] });
    assert.deepEqual(await toAgent, ["hello agent"]);
    assert.equal(await toOther, false, "the conversation stays in the conversation");

    const toVisitor = once(visitor, "presence");
    const toOtherAgent = once(otherAgent, "presence");
    await ack(agent, "publish", { room: "company:1", event: "presence", args: [{ online: true }] });
    assert.deepEqual(await toVisitor, [{ online: true }]);
    assert.deepEqual(await toOtherAgent, [{ online: true }]);
  });
});

/** Two ioplex binaries on one private Redis (started now, or later with `{ deferred: true }`), for one suite. */
function twoNodesOnRedis(redisOptions) {
  const fleet = {};
  before(async () => {
    fleet.redis = await startRedis(redisOptions);
    const env = { REDIS_URL: fleet.redis.url };
    [fleet.a, fleet.b] = await Promise.all([startServer({ env }), startServer({ env })]);
  });
  after(async () => {
    await Promise.all([fleet.a.stop(), fleet.b.stop()]);
    await fleet.redis.stop();
  });
  afterEach(closeAll);
  return fleet;
}

describe("Redis going away and coming back", () => {
  const fleet = twoNodesOnRedis();

  test("local delivery continues, nobody is disconnected, a broadcast made during the outage arrives after it", async () => {
    const a1 = await connected(fleet.a.url);
    const a2 = await connected(fleet.a.url, { transports: ["polling"] });
    const b1 = await connected(fleet.b.url);
    const disconnects = [];
    for (const s of [a1, a2, b1]) {
      s.on("disconnect", (r) => disconnects.push(r));
      await ack(s, "join", "outage");
    }
    // Fleet is whole: a publish on A reaches B.
    let got = once(b1, "before");
    await ack(a1, "publish", { room: "outage", event: "before" });
    await got;

    assert.equal((await fetch(`${fleet.a.url}/readyz`)).status, 200);
    await fleet.redis.stop();
    await sleep(300);
    const notReady = await fetch(`${fleet.a.url}/readyz`);
    assert.equal(notReady.status, 503, "readiness reports the outage");
    assert.match(await notReady.text(), /Redis unreachable/);
    assert.match(await (await fetch(`${fleet.a.url}/metrics`)).text(), /^ioplex_redis_connected\{key="socket\.io"\} 0$/m);
    const local = once(a2, "during");
    const remote = once(b1, "during", 15000);
    assert.deepEqual(await ack(a1, "publish", { room: "outage", event: "during", args: [1] }), { ok: true });
    assert.deepEqual(await local, [1], "local delivery does not wait for Redis");

    await sleep(700);
    await fleet.redis.restart();
    const restartedAt = Date.now();
    assert.deepEqual(await remote, [1], "the broadcast held during the outage arrives after it");

    // New cross-node traffic flows again: measure how soon after the restart.
    let resumedAfter = null;
    b1.on("probe", () => { resumedAfter ??= Date.now() - restartedAt; });
    for (let i = 0; i < 60 && resumedAfter === null; i++) {
      a1.emit("publish", { room: "outage", event: "probe" });
      await sleep(50);
    }
    assert.notEqual(resumedAfter, null, "cross-node delivery resumed");
    assert.ok(resumedAfter < 3000, `cross-node delivery resumed ${resumedAfter} ms after Redis restarted`);
    console.log(`# cross-node delivery resumed ${resumedAfter} ms after Redis restarted`);
    assert.deepEqual(disconnects, [], "no client was disconnected");
    assert.equal((await fetch(`${fleet.a.url}/readyz`)).status, 200);
    const metrics = await (await fetch(`${fleet.a.url}/metrics`)).text();
    assert.match(metrics, /^ioplex_redis_connected\{key="socket\.io"\} 1$/m);
    assert.match(metrics, /^ioplex_redis_reconnects_total\{key="socket\.io"\} [1-9]/m);
    assert.match(metrics, /^ioplex_redis_published_total\{key="socket\.io"\} [1-9]/m);
  });
});

describe("Redis slow to answer a publish", () => {
  const fleet = twoNodesOnRedis();

  test("a publish Redis does not answer in time is delivered once, and the node keeps publishing", async () => {
    const a = await connected(fleet.a.url);
    const b = await connected(fleet.b.url);
    await ack(a, "join", "slow");
    await ack(b, "join", "slow");
    let slow = 0;
    const after = [];
    b.on("slow", () => slow++);
    b.on("after", (n) => after.push(n));
    const admin = createClient({ url: fleet.redis.url });
    await admin.connect();
    try {
      // Redis holds every client's write commands, PUBLISH included, for 3 s: node A's publish times
      // out on a connection that stays up, and Redis runs it when the pause ends.
      await admin.sendCommand(["CLIENT", "PAUSE", "3000", "WRITE"]);
      assert.deepEqual(await ack(a, "publish", { room: "slow", event: "slow" }), { ok: true });
      await sleep(3500);
      assert.equal(slow, 1, "delivered once, when Redis ran it");
      // A node that held its publishes after such a timeout would be silent to the fleet from then on.
      for (let i = 0; i < 5; i++) await ack(a, "publish", { room: "slow", event: "after", args: [i] });
      const deadline = Date.now() + 2000;
      while (after.length < 5 && Date.now() < deadline) await sleep(20);
      assert.deepEqual(after, [0, 1, 2, 3, 4]);
      assert.equal(slow, 1);
    } finally {
      await admin.quit();
    }
  });
});

describe("Redis unreachable at start-up", () => {
  const fleet = twoNodesOnRedis({ deferred: true });

  test("nodes serve alone, then join the fleet once Redis is up", async () => {
    const a = await connected(fleet.a.url);
    const a2 = await connected(fleet.a.url);
    const b = await connected(fleet.b.url);
    for (const s of [a, a2, b]) await ack(s, "join", "late");
    assert.equal((await fetch(`${fleet.a.url}/readyz`)).status, 503);
    const local = once(a2, "solo");
    await ack(a, "publish", { room: "late", event: "solo" });
    await local;

    await fleet.redis.restart();
    let crossed = false;
    b.on("joined", () => { crossed = true; });
    for (let i = 0; i < 100 && !crossed; i++) {
      a.emit("publish", { room: "late", event: "joined" });
      await sleep(50);
    }
    assert.ok(crossed, "cross-node delivery started once Redis came up");
    assert.equal((await fetch(`${fleet.a.url}/readyz`)).status, 200);
  });
});

describe("Redis over TLS (rediss://)", () => {
  let tls, redis, nodes;
  before(async () => {
    tls = makeTlsFiles();
    redis = await startRedis({ tls });
    // rustls trusts the system roots; SSL_CERT_FILE points them at the test CA.
    const env = { REDIS_URL: redis.url, SSL_CERT_FILE: tls.ca };
    nodes = await Promise.all([startServer({ env }), startServer({ env })]);
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
    tls.remove();
  });
  afterEach(closeAll);

  test("two nodes share rooms through a TLS-only Redis", async () => {
    const [a, b] = [await connected(nodes[0].url), await connected(nodes[1].url)];
    await ack(a, "join", "secure");
    await ack(b, "join", "secure");
    let crossed = false;
    b.on("sealed", () => { crossed = true; });
    for (let i = 0; i < 60 && !crossed; i++) {
      a.emit("publish", { room: "secure", event: "sealed" });
      await sleep(50);
    }
    assert.ok(crossed, "a broadcast crossed the TLS connection");
    assert.equal((await fetch(`${nodes[0].url}/readyz`)).status, 200);
  });

  test("a server certificate from an unknown CA is refused", async () => {
    const untrusting = await startServer({ env: { REDIS_URL: redis.url } });
    try {
      const res = await fetch(`${untrusting.url}/readyz`);
      assert.equal(res.status, 503);
    } finally {
      await untrusting.stop();
    }
  });
});

