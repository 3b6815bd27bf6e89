// Tenants from a configuration file: routing by host name and ?tenant=, isolation, per-tenant limits,
// event names and namespaces, and reloading the file while clients stay connected.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { binaryPath, startServer } from "./lib/server.mjs";
import { arrives, client, closeAll, connected, once, sleep, received } from "./lib/client.mjs";

const CONFIG = `
tenants-dir = "tenants.d"

[tenants.acme]
hosts = ["localhost"]
api-keys = ["acme-key-1"]

[tenants.globex]
hosts = ["127.0.0.1"]
namespaces = ["/"]
[tenants.globex.limits]
max-connections = 3
max-rooms-per-socket = 2
events-per-second = 5
events-burst = 5
[tenants.globex.events]
join = "enter"
`;

/** A GET with a chosen Host header (fetch does not let a page or a test set one). */
function getWithHost(port, host, pathAndQuery) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: pathAndQuery, headers: { host } }, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("error", reject);
  });
}

const HOOLI = `
query = "hooli"
[limits]
events-per-second = 2
events-burst = 2
on-rate-exceeded = "disconnect"
`;

describe("tenants from configuration", () => {
  let server;
  let dir;
  const write = (name, text) => {
    const file = path.join(dir, name);
    fs.writeFileSync(`${file}.tmp`, text);
    fs.renameSync(`${file}.tmp`, file);
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-tenants-"));
    fs.mkdirSync(path.join(dir, "tenants.d"));
    write("ioplex.toml", CONFIG);
    write("tenants.d/hooli.toml", HOOLI);
    server = await startServer({ args: ["--config", path.join(dir, "ioplex.toml")], env: { RUST_LOG: "info" } });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  afterEach(closeAll);

  const acmeUrl = () => `http://localhost:${server.port}`;
  const globexUrl = () => `http://127.0.0.1:${server.port}`;

  test("the host name picks the tenant, and tenants never share rooms", async () => {
    const [a1, a2] = [await connected(acmeUrl()), await connected(acmeUrl())];
    const g = await connected(globexUrl());
    for (const s of [a1, a2]) assert.deepEqual(await s.timeout(2000).emitWithAck("join", "lobby"), { ok: true });
    assert.deepEqual(await g.timeout(2000).emitWithAck("enter", "lobby"), { ok: true });
    const toA2 = received(a2, "message");
    const toG = arrives(g, "message", 400);
    assert.deepEqual(await a1.timeout(2000).emitWithAck("publish", { room: "lobby", event: "message", args: ["hi"] }), { ok: true });
    assert.deepEqual(await toA2, ["hi"]);
    assert.equal(await toG, false, "another tenant's room of the same name gets nothing");
  });

  test("a host no tenant claims, or an unknown ?tenant=, is refused at the handshake", async () => {
    const unknownHost = await getWithHost(server.port, "other.example", "/socket.io/?EIO=4&transport=polling");
    assert.equal(unknownHost.status, 403);
    assert.deepEqual(JSON.parse(unknownHost.body), { code: 4, message: "Unknown tenant" });
    const knownHost = await getWithHost(server.port, `LOCALHOST:${server.port}`, "/socket.io/?EIO=4&transport=polling&tenant=nope");
    assert.equal(knownHost.status, 200, "a host that names a tenant wins over the parameter");
    const sid = JSON.parse(knownHost.body.slice(1)).sid;
    const closed = await fetch(`${acmeUrl()}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { method: "POST", body: "1" });
    assert.equal(closed.status, 200, "the session was acme's");
    const byQuery = await fetch(`http://[::1]:${server.port}/socket.io/?EIO=4&transport=polling&tenant=nope`);
    assert.equal(byQuery.status, 403);
  });

  test("?tenant= selects a tenant from the tenants directory", async () => {
    const s = await connected(`http://[::1]:${server.port}?tenant=hooli`);
    assert.deepEqual(await s.timeout(2000).emitWithAck("join", "x"), { ok: true });
  });

  test("per-tenant event names, namespaces and rooms per socket", async () => {
    const g = await connected(globexUrl());
    const noJoin = arrives(g, "never", 300);
    g.emit("join", "ignored"); // globex renamed join to enter: "join" is just an event nobody handles
    assert.equal(await noJoin, false);
    assert.deepEqual(await g.timeout(2000).emitWithAck("enter", "r1"), { ok: true });
    assert.deepEqual(await g.timeout(2000).emitWithAck("enter", "r2"), { ok: true });
    const third = await g.timeout(2000).emitWithAck("enter", "r3");
    assert.equal(third.code, "too_many_rooms");
    const other = client(`${globexUrl()}/other`);
    const [err] = await once(other, "connect_error");
    assert.equal(err.message, "Invalid namespace");
  });

  test("a tenant at its connection limit refuses new handshakes; others are unaffected", async () => {
    const held = [];
    for (let i = 0; i < 3; i++) held.push(await connected(globexUrl(), { transports: ["websocket"] }));
    const refused = await fetch(`${globexUrl()}/socket.io/?EIO=4&transport=polling`);
    assert.equal(refused.status, 503);
    assert.deepEqual(await refused.json(), { code: 4, message: "Connection limit reached" });
    const counted = await (await fetch(`${acmeUrl()}/metrics`)).text();
    assert.match(counted, /^ioplex_handshakes_refused_total\{tenant="globex"\} [1-9]/m);
    assert.match(counted, /^ioplex_handshakes_refused_total\{tenant="acme"\} 0$/m);
    const acme = await connected(acmeUrl());
    assert.ok(acme.connected, "acme still accepts");
    held[0].disconnect();
    await sleep(200);
    const again = await connected(globexUrl());
    assert.ok(again.connected, "a freed slot is usable again");
    // Leave the tenant empty for the next test (its limit is 3): wait until the server saw every close.
    for (const s of [...held, again]) s.disconnect();
    const deadline = Date.now() + 5000;
    const open = async () => Number((await (await fetch(`${acmeUrl()}/metrics`)).text())
      .split("\n").filter((l) => l.startsWith('ioplex_connections{tenant="globex"')).reduce((n, l) => n + Number(l.split(" ")[1]), 0));
    while ((await open()) > 0 && Date.now() < deadline) await sleep(50);
    assert.equal(await open(), 0);
  });

  test("a socket over its event rate gets rate_limited acks, or is disconnected, per tenant", async () => {
    const g = await connected(globexUrl());
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => g.timeout(2000).emitWithAck("enter", `room-${i % 2}`)));
    const limited = answers.filter((a) => a.code === "rate_limited");
    assert.equal(answers.length - limited.length, 5, JSON.stringify(answers));
    assert.match(limited[0].message, /more than 5 events per second/);
    await sleep(450);
    assert.deepEqual(await g.timeout(2000).emitWithAck("enter", "room-0"), { ok: true }, "the bucket refills");
    const counted = await (await fetch(`${acmeUrl()}/metrics`)).text();
    assert.match(counted, /^ioplex_events_rate_limited_total\{tenant="globex",namespace="\/"\} ([5-9]|\d\d+)$/m);

    const h = await connected(`http://[::1]:${server.port}?tenant=hooli`);
    const gone = once(h, "disconnect");
    for (let i = 0; i < 4; i++) h.emit("join", "x");
    assert.equal((await gone)[0], "io server disconnect");
  });

  test("editing the configuration applies without a restart; a broken edit is refused", async () => {
    const acme = await connected(acmeUrl());
    let dropped = false;
    acme.on("disconnect", () => { dropped = true; });
    write("tenants.d/initech.toml", `query = "initech"\n`);
    write("ioplex.toml", CONFIG.replace(`api-keys = ["acme-key-1"]`, `api-keys = ["acme-key-2"]`));
    const deadline = Date.now() + 5000;
    let ok = false;
    while (!ok && Date.now() < deadline) {
      const r = await fetch(`http://[::1]:${server.port}/socket.io/?EIO=4&transport=polling&tenant=initech`);
      ok = r.status === 200;
      if (!ok) await sleep(100);
    }
    assert.ok(ok, "the new tenant serves");
    assert.equal(dropped, false, "a routing or API-key change keeps connections");

    write("ioplex.toml", CONFIG + "\n[tenants.broken\n");
    const logged = Date.now() + 4000;
    while (!/configuration refused; the previous one stays/.test(server.logs.join("")) && Date.now() < logged) await sleep(100);
    assert.match(server.logs.join(""), /configuration refused; the previous one stays/);
    assert.ok((await connected(acmeUrl())).connected, "the previous configuration still serves");
    assert.equal(dropped, false);
  });

  test("ioplex tenants lists them, with a running node's live connections", async () => {
    write("ioplex.toml", CONFIG); // undo the broken edit of the previous test
    const held = [await connected(acmeUrl(), { transports: ["websocket"] }), await connected(acmeUrl(), { transports: ["polling"] })];
    const run = spawnSync(binaryPath("ioplex"), ["tenants", "--config", path.join(dir, "ioplex.toml"), "--url", `http://127.0.0.1:${server.port}`], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /^acme: hosts localhost; \?tenant=acme$/m);
    assert.match(run.stdout, /^globex: hosts 127\.0\.0\.1; \?tenant=globex$/m);
    assert.match(run.stdout, /^hooli: \?tenant=hooli$/m);
    assert.match(run.stdout, /limits: connections 3, events\/s 5, payload -, rooms\/socket 2; api keys: 0/);
    assert.match(run.stdout, /^acme:[^]*?live: 1 websocket, [1-9]\d* polling connections/m);
    assert.ok(held.every((s) => s.connected));
    const broken = spawnSync(binaryPath("ioplex"), ["tenants", "--config", path.join(dir, "missing.toml")], { encoding: "utf8" });
    assert.equal(broken.status, 1);
    assert.match(broken.stdout, /configuration refused: .*missing\.toml/);
  });
});
