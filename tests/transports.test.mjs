// Transports, namespaces, limits and heartbeat of the ioplex binary (embedded default), with socket.io-client.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Manager } from "socket.io-client";
import { startServer } from "./lib/server.mjs";
import { arrives, client, closeAll, connected, once, sleep, received } from "./lib/client.mjs";

describe("transports (embedded default)", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { assert.equal(await server.stop(), 0, "ioplex exits 0 on SIGTERM"); });
  afterEach(closeAll);

  for (const transports of [["polling"], ["websocket"]]) {
    test(`${transports[0]} only: connect, join, publish to self`, async () => {
      const s = await connected(server.url, { transports, upgrade: false });
      assert.equal(s.io.engine.transport.name, transports[0]);
      assert.match(s.id, /^[A-Za-z0-9_-]{20}$/);
      assert.deepEqual(await s.timeout(2000).emitWithAck("join", "r1"), { ok: true });
      const got = received(s, "hello");
      assert.deepEqual(
        await s.timeout(2000).emitWithAck("publish", { room: "r1", event: "hello", args: [1, "two"], self: true }),
        { ok: true },
      );
      assert.deepEqual(await got, [1, "two"]);
    });
  }

  test("polling upgrades to websocket and keeps working", async () => {
    const s = client(server.url);
    const [, upgraded] = await Promise.all([once(s, "connect"), once(s.io.engine, "upgrade")]);
    assert.equal(upgraded[0].name, "websocket");
    assert.equal(s.io.engine.transport.name, "websocket");
    await s.timeout(2000).emitWithAck("join", "after-upgrade");
    const got = received(s, "ping-me");
    await s.timeout(2000).emitWithAck("publish", { room: "after-upgrade", event: "ping-me", args: ["x"], self: true });
    assert.deepEqual(await got, ["x"]);
  });

  test("custom namespaces are separate from the main one", async () => {
    const main = await connected(server.url);
    const custom = await connected(`${server.url}/custom`, { auth: { token: "abc" } });
    for (const s of [main, custom]) await s.timeout(2000).emitWithAck("join", "shared");
    const onMain = arrives(main, "news");
    const onCustom = received(custom, "news");
    const sender = await connected(`${server.url}/custom`);
    await sender.timeout(2000).emitWithAck("join", "shared");
    await sender.timeout(2000).emitWithAck("publish", { room: "shared", event: "news", args: ["n"] });
    assert.deepEqual(await onCustom, ["n"]);
    assert.equal(await onMain, false, "an event in /custom must not reach /");
  });

  test("disconnect and reconnect", async () => {
    const s = await connected(server.url, { reconnection: true, reconnectionDelay: 50 });
    const firstId = s.id;
    const reasons = [];
    s.on("disconnect", (reason) => reasons.push(reason));
    s.disconnect();
    assert.deepEqual(reasons, ["io client disconnect"]);
    s.connect();
    await once(s, "connect");
    assert.notEqual(s.id, firstId);
    // The transport dropping under it: the client reconnects on its own.
    s.io.engine.transport.close();
    await once(s, "connect");
    assert.equal(reasons[1], "transport close");
    assert.deepEqual(await s.timeout(2000).emitWithAck("join", "back"), { ok: true });
  });
});

describe("limits and heartbeat", () => {
  let server;
  before(async () => {
    server = await startServer({
      args: ["--max-http-buffer-size", "1000", "--ping-interval", "300", "--ping-timeout", "200"],
    });
  });
  after(async () => { await server.stop(); });
  afterEach(closeAll);

  test("handshake advertises the configured values", async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
    const open = JSON.parse((await res.text()).slice(1));
    assert.deepEqual(
      { pingInterval: open.pingInterval, pingTimeout: open.pingTimeout, maxPayload: open.maxPayload, upgrades: open.upgrades },
      { pingInterval: 300, pingTimeout: 200, maxPayload: 1000, upgrades: ["websocket"] },
    );
  });

  for (const transports of [["websocket"], ["polling"]]) {
    test(`an oversized ${transports[0]} message is refused and the client is told`, async () => {
      const s = await connected(server.url, { transports });
      const bystander = await connected(server.url, { transports });
      const reason = once(s, "disconnect");
      s.emit("publish", { room: "x", event: "big", args: ["y".repeat(5000)] });
      const [why] = await reason;
      assert.match(why, /^transport (close|error)$/);
      // Everyone else is unaffected.
      assert.deepEqual(await bystander.timeout(2000).emitWithAck("join", "still-here"), { ok: true });
    });
  }

  test("a client that stops answering pings is dropped within pingInterval + pingTimeout", async () => {
    const watcher = await connected(server.url, { transports: ["websocket"] });
    const frozen = await connected(server.url, { transports: ["websocket"] });
    const frozenId = frozen.id;
    // The target answers requests while alive.
    frozen.on("are-you-there", (ack) => ack("yes"));
    let reply = await watcher.timeout(2000).emitWithAck("request", { to: frozenId, event: "are-you-there" });
    assert.deepEqual(reply, { ok: true, args: ["yes"] });
    // Stop every outgoing packet of the frozen client, pongs included.
    frozen.io.engine.transport.send = () => {};
    frozen.io.engine.sendPacket = () => {};
    await sleep(300 + 200 + 150);
    reply = await watcher.timeout(2000).emitWithAck("request", { to: frozenId, event: "are-you-there" });
    assert.equal(reply.ok, false);
    assert.equal(reply.code, "unknown_socket");
  });
});

describe("slow readers", () => {
  let server;
  before(async () => {
    server = await startServer({ args: ["--max-buffered-bytes", "2000000", "--max-http-buffer-size", "200000"] });
  });
  after(async () => { await server.stop(); });
  afterEach(closeAll);

  test("a client that stops reading is disconnected past its queue limit; others get everything", async () => {
    const join = async () => {
      const s = await connected(server.url, { transports: ["websocket"] });
      assert.deepEqual(await s.timeout(2000).emitWithAck("join", "firehose"), { ok: true });
      return s;
    };
    const [slow, fast, publisher] = [await join(), await join(), await join()];
    let slowGot = 0;
    let fastGot = 0;
    slow.on("chunk", () => slowGot++);
    fast.on("chunk", () => fastGot++);
    const slowGone = once(slow, "disconnect", 20000);
    // Stop reading from the TCP socket: the kernel buffers fill, then the server's queue.
    slow.io.engine.transport.ws._socket.pause();
    const chunk = "z".repeat(100_000);
    const total = 300;
    for (let i = 0; i < total; i++) {
      const ack = await publisher.timeout(5000).emitWithAck("publish", { room: "firehose", event: "chunk", args: [chunk] });
      assert.equal(ack.ok, true);
    }
    const deadline = Date.now() + 10000;
    while (fastGot < total && Date.now() < deadline) await sleep(20);
    assert.equal(fastGot, total, "a reading client receives every message");
    slow.io.engine.transport.ws._socket.resume();
    const [reason] = await slowGone;
    assert.equal(reason, "transport close");
    assert.ok(slowGot < total, `the slow client was cut off (got ${slowGot} of ${total})`);
    assert.deepEqual(await publisher.timeout(2000).emitWithAck("join", "still-serving"), { ok: true });
  });
});

describe("namespaces opened by clients", () => {
  let server;
  before(async () => { server = await startServer({ args: ["--max-dynamic-namespaces", "2"] }); });
  after(async () => { await server.stop(); });
  afterEach(closeAll);

  test("are capped, and released when their last client leaves", async () => {
    const a = await connected(`${server.url}/a`);
    await connected(`${server.url}/b`);
    const refused = client(`${server.url}/c`);
    const [err] = await once(refused, "connect_error");
    assert.equal(err.message, "Too many namespaces");
    a.disconnect();
    await sleep(100);
    const c = await connected(`${server.url}/c`);
    assert.deepEqual(await c.timeout(2000).emitWithAck("join", "ok"), { ok: true });
  });
});

describe("connectTimeout", () => {
  let server;
  before(async () => { server = await startServer({ args: ["--connect-timeout", "300"] }); });
  after(async () => { await server.stop(); });
  afterEach(closeAll);

  test("a connection that joins no namespace is closed; one that joins stays", async () => {
    const manager = new Manager(server.url, { transports: ["websocket"], reconnection: false, autoConnect: false });
    manager.open();
    await once(manager, "open");
    const openedAt = Date.now();
    await once(manager.engine, "close", 3000);
    const after = Date.now() - openedAt;
    assert.ok(after >= 250 && after < 1500, `closed after ${after} ms`);

    const joined = await connected(server.url, { transports: ["websocket"] });
    await sleep(600);
    assert.ok(joined.connected);
    assert.deepEqual(await joined.timeout(2000).emitWithAck("join", "still-open"), { ok: true });
  });
});

