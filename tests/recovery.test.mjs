// Connection state recovery on one node (RECOVERY_WINDOW_MS), with the stock socket.io-client: a socket
// whose transport drops comes back with its id and rooms, and gets what was published meanwhile, in
// order and once, whether or not it had received anything before.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { closeAll, connected, once, sleep } from "./lib/client.mjs";

const ack = (socket, ...args) => socket.timeout(3000).emitWithAck(...args);

/** A client that reconnects at once, over websocket (so closing the engine is a transport close). */
const recovering = (url) => connected(url, { transports: ["websocket"], reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 50 });

/** Collects a client's `event`s: their first argument, and the offset the server appended last. */
function collect(socket, event) {
  const got = [];
  socket.on(event, (...args) => got.push({ text: args[0], offset: args.at(-1) }));
  return got;
}

/** Drops `socket`'s transport, runs `meanwhile` while it is away, and resolves once it is back. */
async function dropAndReturn(socket, meanwhile) {
  const gone = once(socket, "disconnect", 3000);
  socket.io.engine.close();
  const [reason] = await gone;
  assert.match(reason, /^(transport|forced) close$/);
  await meanwhile();
  await once(socket, "connect", 5000);
}

async function until(check, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await sleep(20);
}

describe("connection state recovery (in memory)", () => {
  let server;
  before(async () => {
    // On by default (RECOVERY_WINDOW_MS=120000).
    server = await startServer();
  });
  after(async () => server?.stop());
  afterEach(closeAll);

  test("a dropped socket comes back with its id and rooms, and gets what it missed in order, once", async () => {
    const a = await recovering(server.url);
    const b = await connected(server.url);
    assert.deepEqual(await ack(a, "join", "room-r"), { ok: true });
    assert.deepEqual(await ack(b, "join", "room-r"), { ok: true });
    const got = collect(a, "chat");
    b.emit("publish", { room: "room-r", event: "chat", args: ["m0"] });
    await until(() => got.length === 1);
    assert.equal(got[0].text, "m0");
    assert.equal(typeof got[0].offset, "string", "the offset travels as the last argument");
    const id = a.id;
    await dropAndReturn(a, async () => {
      for (const text of ["m1", "m2", "m3"]) {
        assert.deepEqual(await ack(b, "publish", { room: "room-r", event: "chat", args: [text] }), { ok: true });
      }
    });
    assert.equal(a.recovered, true);
    assert.equal(a.id, id, "same socket id");
    await until(() => got.length >= 4);
    // Still in its room: live broadcasts reach it after the recovery.
    b.emit("publish", { room: "room-r", event: "chat", args: ["m4"] });
    await until(() => got.length >= 5);
    await sleep(200);
    assert.deepEqual(got.map((g) => g.text), ["m0", "m1", "m2", "m3", "m4"], "each once, in order");
  });

  test("a socket that never received a packet recovers too (Node's does not)", async () => {
    const c = await recovering(server.url);
    const b = await connected(server.url);
    assert.deepEqual(await ack(c, "join", "room-n"), { ok: true });
    assert.deepEqual(await ack(b, "join", "room-n"), { ok: true });
    const got = collect(c, "note");
    await dropAndReturn(c, async () => {
      await ack(b, "publish", { room: "room-n", event: "note", args: ["n1"] });
      await ack(b, "publish", { room: "room-n", event: "note", args: ["n2"] });
    });
    assert.equal(c.recovered, true);
    await until(() => got.length >= 2);
    await sleep(200);
    assert.deepEqual(got.map((g) => g.text), ["n1", "n2"]);
  });

  test("leaving on purpose ends the session: a new socket, nothing replayed", async () => {
    const d = await connected(server.url, { transports: ["websocket"] });
    const pid = d._pid;
    assert.equal(typeof pid, "string", "the CONNECT reply carried a pid");
    d.disconnect();
    const again = await connected(server.url, { transports: ["websocket"], auth: { pid, offset: undefined } });
    assert.equal(again.recovered, false);
  });
});

describe("connection state recovery: the window, and off", () => {
  afterEach(closeAll);

  test("past the window the client starts afresh", async () => {
    const server = await startServer({ env: { RECOVERY_WINDOW_MS: "200" } });
    try {
      const a = await connected(server.url, { transports: ["websocket"], reconnection: true, reconnectionDelay: 600, reconnectionDelayMax: 600, randomizationFactor: 0 });
      const id = a.id;
      const gone = once(a, "disconnect", 3000);
      a.io.engine.close();
      await gone;
      await once(a, "connect", 5000);
      assert.equal(a.recovered, false);
      assert.notEqual(a.id, id);
    } finally {
      await server.stop();
    }
  });

  test("RECOVERY_WINDOW_MS=0 turns it off: no pid, no offsets, a fresh socket after a drop", async () => {
    const server = await startServer({ env: { RECOVERY_WINDOW_MS: "0" } });
    try {
      const a = await recovering(server.url);
      const b = await connected(server.url);
      assert.equal(a._pid, undefined);
      await ack(a, "join", "room-o");
      await ack(b, "join", "room-o");
      const got = [];
      a.on("chat", (...args) => got.push(args));
      b.emit("publish", { room: "room-o", event: "chat", args: ["plain"] });
      await until(() => got.length === 1);
      assert.deepEqual(got[0], ["plain"], "no offset argument");
      const id = a.id;
      await dropAndReturn(a, async () => {});
      assert.ok(!a.recovered);
      assert.notEqual(a.id, id);
    } finally {
      await server.stop();
    }
  });
});
