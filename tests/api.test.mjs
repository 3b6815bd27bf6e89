// The HTTP API a tenant's backend uses, against a gateway serving two tenants from a configuration file.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer } from "./lib/server.mjs";
import { arrives, closeAll, connected, once, received } from "./lib/client.mjs";
import { pluginPath } from "./lib/plugins.mjs";

const CONFIG = `
[tenants.acme]
api-keys = ["acme-key"]
[tenants.globex]
api-keys = ["globex-key"]
`;

describe("HTTP API", () => {
  let server;
  let dir;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-api-"));
    fs.writeFileSync(path.join(dir, "ioplex.toml"), CONFIG);
    fs.mkdirSync(path.join(dir, "plugins"));
    server = await startServer({
      args: ["--config", path.join(dir, "ioplex.toml"), "--plugins-dir", path.join(dir, "plugins"), "--plugin-cache-dir", "none"],
    });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  afterEach(closeAll);

  const api = async (method, tenant, route, { key = `${tenant}-key`, body, raw } = {}) => {
    const headers = {};
    if (key) headers.authorization = `Bearer ${key}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const resp = await fetch(`${server.url}/api/v1/tenants/${tenant}/${route}`, {
      method,
      headers,
      body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
    return { status: resp.status, body: await resp.json() };
  };
  const member = async (tenant, ...rooms) => {
    const s = await connected(`${server.url}?tenant=${tenant}`);
    for (const room of rooms) assert.deepEqual(await s.timeout(2000).emitWithAck("join", room), { ok: true });
    return s;
  };

  test("keys: none or wrong → 401; another tenant's key → 404", async () => {
    assert.deepEqual(await api("GET", "acme", "rooms", { key: null }), {
      status: 401,
      body: { error: { code: "unauthorized", message: "send the tenant's API key as `Authorization: Bearer <key>`" } },
    });
    assert.equal((await api("GET", "acme", "rooms", { key: "nope" })).status, 401);
    const foreign = await api("GET", "acme", "rooms", { key: "globex-key" });
    assert.equal(foreign.status, 404);
    assert.equal(foreign.body.error.code, "not_found");
    assert.equal((await api("GET", "initech", "rooms", { key: "acme-key" })).status, 404);
    assert.equal((await api("GET", "acme", "nothing-here")).status, 404);
  });

  test("emit to rooms, with except, and to one socket; other tenants' rooms untouched", async () => {
    const [a, b] = [await member("acme", "lobby"), await member("acme", "lobby", "muted")];
    const other = await member("globex", "lobby");
    const toA = received(a, "news");
    const toB = arrives(b, "news", 400);
    const toOther = arrives(other, "news", 400);
    assert.deepEqual(await api("POST", "acme", "emit", { body: { rooms: ["lobby"], except: ["muted"], event: "news", args: [{ x: 1 }, "two"] } }), {
      status: 200, body: { ok: true },
    });
    assert.deepEqual(await toA, [{ x: 1 }, "two"]);
    assert.equal(await toB, false, "except skipped b");
    assert.equal(await toOther, false, "globex's lobby is another room");

    const direct = received(b, "dm");
    const notA = arrives(a, "dm", 400);
    assert.equal((await api("POST", "acme", "emit", { body: { socket: b.id, event: "dm", args: ["hi"] } })).status, 200);
    assert.deepEqual(await direct, ["hi"]);
    assert.equal(await notA, false);

    const reserved = await api("POST", "acme", "emit", { body: { rooms: ["lobby"], event: "disconnect" } });
    assert.equal(reserved.status, 400);
    const typo = await api("POST", "acme", "emit", { body: { room: "lobby", event: "x" } });
    assert.equal(typo.status, 400);
    assert.match(typo.body.error.message, /unknown field `room`/);
  });

  test("rooms and the sockets in a room", async () => {
    const a = await member("acme", "conversation:42");
    const b = await member("acme", "conversation:42", "company:acme");
    const rooms = await api("GET", "acme", "rooms");
    assert.equal(rooms.status, 200);
    assert.ok(rooms.body.rooms.includes("conversation:42") && rooms.body.rooms.includes("company:acme"));
    assert.ok(!rooms.body.rooms.includes(a.id), "socket id rooms are not listed");
    const sockets = await api("GET", "acme", `rooms/${encodeURIComponent("conversation:42")}/sockets`);
    assert.deepEqual(sockets.body.sockets.map((s) => s.id).sort(), [a.id, b.id].sort());
    assert.deepEqual(sockets.body.sockets.find((s) => s.id === b.id).rooms.sort(), ["company:acme", "conversation:42"]);
  });

  test("sockets join, leave and are disconnected", async () => {
    const a = await member("acme");
    assert.deepEqual((await api("POST", "acme", "join", { body: { socket: a.id, join: ["vip"] } })).body, { ok: true });
    const got = received(a, "perk");
    await api("POST", "acme", "emit", { body: { rooms: ["vip"], event: "perk" } });
    await got;
    await api("POST", "acme", "leave", { body: { socket: a.id, leave: ["vip"] } });
    const none = arrives(a, "perk", 400);
    await api("POST", "acme", "emit", { body: { rooms: ["vip"], event: "perk" } });
    assert.equal(await none, false);
    await api("POST", "acme", "join", { body: { socket: a.id, join: ["vip"] } });
    const gone = once(a, "disconnect");
    assert.deepEqual((await api("POST", "acme", "disconnect", { body: { rooms: ["vip"] } })).body, { ok: true });
    assert.equal((await gone)[0], "io server disconnect");
  });

  test("a plugin upload is validated, serves at once, and a broken one leaves it serving", async () => {
    const [a, b] = [await member("acme", "room"), await member("acme", "room")];
    const put = await api("PUT", "acme", "plugins/redact", { raw: fs.readFileSync(pluginPath("redact")) });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.deepEqual(put.body.hooks, ["transform-event"]);
    let got = received(b, "message");
    await a.timeout(2000).emitWithAck("publish", { room: "room", event: "message", args: ["mail jo@x.io"] });
    assert.deepEqual(await got, ["mail [email]"]);

    const broken = await api("PUT", "acme", "plugins/redact", { raw: Buffer.from("not wasm") });
    assert.equal(broken.status, 422);
    assert.equal(broken.body.error.code, "plugin_refused");
    got = received(b, "message");
    await a.timeout(2000).emitWithAck("publish", { room: "room", event: "message", args: ["mail jo@x.io"] });
    assert.deepEqual(await got, ["mail [email]"], "the previous version still serves");

    assert.deepEqual((await api("DELETE", "acme", "plugins/redact")).body, { ok: true });
    got = received(b, "message");
    await a.timeout(2000).emitWithAck("publish", { room: "room", event: "message", args: ["mail jo@x.io"] });
    assert.deepEqual(await got, ["mail jo@x.io"]);
    assert.equal((await api("DELETE", "acme", "plugins/redact")).status, 404);
  });
});
