// The client contract of the embedded default: rooms, publish, except, binary relay and requests.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { arrives, closeAll, connected, once, received } from "./lib/client.mjs";

describe("client contract", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });
  afterEach(closeAll);

  async function inRoom(room, opts) {
    const s = await connected(server.url, opts);
    assert.deepEqual(await s.timeout(2000).emitWithAck("join", room), { ok: true });
    return s;
  }

  test("a room broadcast reaches members, not others, and not the sender", async () => {
    const [a, b] = [await inRoom("company:1"), await inRoom("company:1", { transports: ["polling"] })];
    const outsider = await inRoom("company:2");
    const toB = received(b, "message");
    const toA = arrives(a, "message");
    const toOutsider = arrives(outsider, "message");
    assert.deepEqual(
      await a.timeout(2000).emitWithAck("publish", { room: "company:1", event: "message", args: [{ text: "hi" }] }),
      { ok: true },
    );
    assert.deepEqual(await toB, [{ text: "hi" }]);
    assert.equal(await toA, false, "sender excluded by default");
    assert.equal(await toOutsider, false, "non-members get nothing");
  });

  test("except skips the members of the excepted rooms", async () => {
    const sender = await inRoom("conv:1");
    const agent = await inRoom("conv:1");
    const visitor = await inRoom("conv:1");
    await visitor.timeout(2000).emitWithAck("join", "visitors");
    const toAgent = received(agent, "typing");
    const toVisitor = arrives(visitor, "typing");
    await sender.timeout(2000).emitWithAck("publish", { room: "conv:1", event: "typing", except: ["visitors"] });
    assert.deepEqual(await toAgent, []);
    assert.equal(await toVisitor, false);
  });

  test("leave stops delivery", async () => {
    const a = await inRoom("temp");
    const b = await inRoom("temp");
    assert.deepEqual(await b.timeout(2000).emitWithAck("leave", "temp"), { ok: true });
    const toB = arrives(b, "gone");
    await a.timeout(2000).emitWithAck("publish", { room: "temp", event: "gone" });
    assert.equal(await toB, false);
  });

  test("binary arguments are relayed as binary, over websocket and polling", async () => {
    const a = await inRoom("bin", { transports: ["websocket"] });
    const b = await inRoom("bin", { transports: ["polling"] });
    const payload = Buffer.from([0, 1, 2, 253, 254, 255]);
    const toB = received(b, "file");
    await a.timeout(2000).emitWithAck("publish", { room: "bin", event: "file", args: ["name.bin", payload, { nested: payload }] });
    const [name, data, nested] = await toB;
    assert.equal(name, "name.bin");
    assert.ok(Buffer.from(data).equals(payload));
    assert.ok(Buffer.from(nested.nested).equals(payload));
    // And back from polling to websocket.
    const toA = received(a, "file");
    await b.timeout(2000).emitWithAck("publish", { room: "bin", event: "file", args: [payload] });
    assert.ok(Buffer.from((await toA)[0]).equals(payload));
  });

  test("a request reaches one socket and returns its ack (server emit with ack)", async () => {
    const asker = await connected(server.url);
    const target = await connected(server.url, { transports: ["polling"] });
    target.on("sum", (x, y, ack) => ack(x + y, Buffer.from("ok")));
    const reply = await asker.timeout(3000).emitWithAck("request", { to: target.id, event: "sum", args: [2, 3] });
    assert.equal(reply.ok, true);
    assert.equal(reply.args[0], 5);
    assert.ok(Buffer.from(reply.args[1]).equals(Buffer.from("ok")));

    target.on("silent", () => {});
    const late = await asker.timeout(3000).emitWithAck("request", { to: target.id, event: "silent", timeout: 200 });
    assert.deepEqual({ ok: late.ok, code: late.code }, { ok: false, code: "timeout" });
  });

  test("refusals carry a stable code", async () => {
    const s = await connected(server.url);
    const outside = await s.timeout(2000).emitWithAck("publish", { room: "never-joined", event: "x" });
    assert.deepEqual({ ok: outside.ok, code: outside.code }, { ok: false, code: "not_in_room" });
    const badRoom = await s.timeout(2000).emitWithAck("join", 42);
    assert.equal(badRoom.code, "invalid_room");
    const someonesId = await s.timeout(2000).emitWithAck("join", s.id);
    assert.equal(someonesId.code, "invalid_room");
    await s.timeout(2000).emitWithAck("join", "r");
    const reserved = await s.timeout(2000).emitWithAck("publish", { room: "r", event: "disconnect" });
    assert.equal(reserved.code, "invalid_event");
    const unknown = await s.timeout(2000).emitWithAck("request", { to: "AAAAAAAAAAAAAAAAAAAA", event: "x" });
    assert.equal(unknown.code, "unknown_socket");
  });

  test("members lists a room's sockets for its members only", async () => {
    const [a, b] = [await inRoom("company:7"), await inRoom("company:7", { transports: ["polling"] })];
    const outsider = await inRoom("company:8");
    const answer = await a.timeout(2000).emitWithAck("members", "company:7");
    assert.equal(answer.ok, true);
    assert.deepEqual(answer.members.map((m) => m.id).sort(), [a.id, b.id].sort());
    assert.ok(answer.members.every((m) => m.data === null));
    const refused = await outsider.timeout(2000).emitWithAck("members", "company:7");
    assert.deepEqual(refused, { ok: false, code: "not_in_room", message: 'join "company:7" before listing its members' });
  });
});
