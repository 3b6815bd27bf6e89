// socket.io-client 2.x (Engine.IO v3, Socket.IO v2's protocol) against ioplex, beside the current client:
// polling, websocket and polling-then-upgrade; the client's own pings; joins, publishes and acks; binary
// both ways; a namespace with a query; and a tenant that turns v3 off. In Node the 2.x client polls with
// base64 bodies (`b64=1`); its browser bundle, run in headless Chromium, polls with binary bodies.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import ioV2 from "socket.io-client-v2";
import { closeAll, connected, once, received, sleep } from "./lib/client.mjs";
import { startServer } from "./lib/server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

const CONFIG = `
[tenants.acme]
default = true
recovery-window-ms = 0

[tenants.legacy-off]
query = "legacy-off"
allow-eio3 = false

[tenants.strict]
query = "strict"
namespaces = ["/"]
recovery-window-ms = 0
`;

const v2Clients = new Set();

/** A socket.io-client 2.x socket (no reconnection), closed by closeV2(). */
function v2(url, opts = {}) {
  const socket = ioV2(url, { reconnection: false, forceNew: true, ...opts });
  v2Clients.add(socket);
  return socket;
}

async function v2Connected(url, opts = {}) {
  const socket = v2(url, opts);
  await once(socket, "connect", 5000);
  return socket;
}

function closeV2() {
  for (const s of v2Clients) s.close();
  v2Clients.clear();
}

/** Emits with an ack and resolves with the ack's arguments. */
function ask(socket, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ack for ${args[0]}`)), 5000);
    socket.emit(...args, (...reply) => {
      clearTimeout(timer);
      resolve(reply);
    });
  });
}

const TRANSPORTS = {
  polling: { transports: ["polling"] },
  websocket: { transports: ["websocket"] },
  "polling then upgrade": {},
};

describe("socket.io-client 2.x (Engine.IO v3)", () => {
  let server;
  let dir;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-eio3-"));
    fs.writeFileSync(path.join(dir, "ioplex.toml"), CONFIG);
    // A page for the browser test: the 2.x browser bundle, served by the gateway itself.
    fs.mkdirSync(path.join(dir, "public"));
    fs.copyFileSync(path.join(here, "node_modules/socket.io-client-v2/dist/socket.io.js"), path.join(dir, "public/socket.io-v2.js"));
    fs.writeFileSync(path.join(dir, "public/index.html"), `<!doctype html><script src="/socket.io-v2.js"></script>`);
    // Short heartbeats, so that a test outlives several of the v2 client's pings.
    server = await startServer({
      args: ["--config", path.join(dir, "ioplex.toml"), "--ping-interval", "300", "--ping-timeout", "300", "--static-dir", path.join(dir, "public")],
    });
  });

  after(async () => {
    closeV2();
    closeAll();
    await server?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`over ${name}: joins, publishes and receives beside a v4 client, with acks and binary`, async () => {
      const lobby = `lobby-${name}`;
      const old = await v2Connected(server.url, opts);
      const current = await connected(server.url);
      assert.deepEqual(await ask(old, "join", lobby), [{ ok: true }]);
      assert.deepEqual((await ask(current, "join", lobby))[0].ok, true);

      // v2 → v4, text and binary.
      const got = received(current, "chat", 5000);
      const [ack] = await ask(old, "publish", { room: lobby, event: "chat", args: ["from v2", Buffer.from([1, 2, 3])] });
      assert.equal(ack.ok, true);
      const [text, bytes] = await got;
      assert.equal(text, "from v2");
      assert.deepEqual([...bytes], [1, 2, 3]);

      // v4 → v2, text and binary (the v2 client reads the v3 type byte before binary data).
      const back = once(old, "chat", 5000);
      await ask(current, "publish", { room: lobby, event: "chat", args: ["from v4", { nested: Buffer.from([9, 8]) }] });
      const [text2, obj] = await back;
      assert.equal(text2, "from v4");
      assert.deepEqual([...obj.nested], [9, 8]);

      // A request from the current client to the old one, answered through the v2 client's ack.
      const members = await ask(current, "members", lobby);
      const oldId = members[0].members.map((m) => m.id).find((id) => id !== current.id);
      assert.ok(oldId, JSON.stringify(members));
      old.on("ping?", (arg, reply) => reply({ pong: arg }));
      const [answer] = await ask(current, "request", { to: oldId, event: "ping?", args: ["hi"] });
      assert.deepEqual(answer, { ok: true, args: [{ pong: "hi" }] });

      // Its own pings keep it connected past several intervals (300 + 300 ms).
      await sleep(1500);
      assert.ok(old.connected, "the v2 client is still connected");
      if (name === "polling then upgrade") assert.equal(old.io.engine.transport.name, "websocket");
      old.close();
      current.close();
    });
  }

  test("a namespace other than /, with a query, connects and relays", async () => {
    const old = await v2Connected(`${server.url}/support`, { query: { token: "abc" } });
    assert.equal(old.nsp, "/support");
    const current = await connected(`${server.url}/support`);
    await ask(old, "join", "desk");
    await ask(current, "join", "desk");
    const got = received(current, "note", 5000);
    await ask(old, "publish", { room: "desk", event: "note", args: [42] });
    assert.deepEqual(await got, [42]);
    old.close();
    current.close();
  });

  test("a refused namespace reaches the v2 client as its error event (Socket.IO v2's ERROR packet)", async () => {
    const refused = v2(`${server.url}/nope?tenant=strict`, { transports: ["websocket"] });
    const [message] = await once(refused, "error", 5000);
    assert.equal(message, "Invalid namespace");
    assert.ok(!refused.connected);
  });

  test("a client that goes silent is dropped after pingInterval + pingTimeout", async () => {
    const old = await v2Connected(server.url, { transports: ["websocket"] });
    const closed = once(old, "disconnect", 5000);
    // Stop the client's pings: the server must close the session on its own.
    clearTimeout(old.io.engine.pingIntervalTimer);
    clearTimeout(old.io.engine.pingTimeoutTimer);
    old.io.engine.setPing = () => {};
    old.io.engine.onHeartbeat = () => {};
    const [reason] = await closed;
    // The client timers are off, so the close can only come from the server.
    assert.equal(reason, "transport close");
  });

  test("a tenant with allow-eio3 = false refuses v3 clients, and still serves v4 ones", async () => {
    const old = v2(`${server.url}/?tenant=legacy-off`, { transports: ["polling"] });
    const [err] = await once(old, "connect_error", 5000);
    assert.ok(err, "the v2 client gets a connect_error");
    assert.ok(!old.connected);
    const current = await connected(`${server.url}/?tenant=legacy-off`);
    assert.ok(current.connected);
    current.close();
  });

  test("the 2.x browser bundle in Chromium polls with binary bodies: binary both ways", async () => {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    try {
      const page = await browser.newPage();
      const bodies = [];
      page.on("response", (res) => {
        if (res.url().includes("EIO=3") && res.request().method() === "GET") bodies.push(res.headers()["content-type"]);
      });
      page.on("request", (req) => {
        if (req.url().includes("EIO=3") && req.method() === "POST") bodies.push(`POST ${req.headers()["content-type"]}`);
      });
      await page.goto(`${server.url}/index.html`);
      const current = await connected(server.url);
      await ask(current, "join", "browser");
      // The page joins, sends bytes to the current client, and waits for bytes back.
      const fromPage = received(current, "bytes", 10000);
      const pageDone = page.evaluate(() => new Promise((resolve, reject) => {
        const socket = io({ transports: ["polling"], reconnection: false });
        socket.on("connect_error", (err) => reject(new Error(String(err))));
        socket.on("bytes", (data) => resolve({ supportsBinary: socket.io.engine.transport.supportsBinary, got: [...new Uint8Array(data)] }));
        socket.on("connect", () => {
          socket.emit("join", "browser", () => {
            socket.emit("publish", { room: "browser", event: "bytes", args: [new Uint8Array([7, 6, 5]).buffer] }, () => {});
          });
        });
      }));
      const [bytes] = await fromPage;
      assert.deepEqual([...bytes], [7, 6, 5]);
      await ask(current, "publish", { room: "browser", event: "bytes", args: [Buffer.from([1, 255, 0])] });
      const result = await pageDone;
      assert.deepEqual(result, { supportsBinary: true, got: [1, 255, 0] });
      assert.ok(bodies.includes("application/octet-stream"), `a binary polling response: ${bodies}`);
      assert.ok(bodies.includes("POST application/octet-stream"), `a binary polling request: ${bodies}`);
      current.close();
    } finally {
      await browser.close();
    }
  });
});
