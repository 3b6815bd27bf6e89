// @socket.io/admin-ui against a two-node ioplex fleet on one Redis: the admin namespace speaks what Node's
// instrument() speaks, across both nodes, only to its own tenant, only with the tenant's credentials.
// Then the dashboard itself, from the npm package, in headless Chromium: it lists both nodes' sockets and
// rooms, and a disconnect clicked in it disconnects a socket held by the other node. Saves a screenshot.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import bcrypt from "bcryptjs";
import { chromium } from "playwright-core";
import { client, closeAll, connected, once, waitFor } from "./lib/client.mjs";
import { startRedis } from "./lib/redis.mjs";
import { startServer } from "./lib/server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const uiDist = path.join(here, "node_modules/@socket.io/admin-ui/ui/dist");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const PASSWORD = "s3cret-dashboard";

const config = (hash) => `
[tenants.acme]
default = true
cors-origins = ["*"]
redis-key = "admin-ui-acme-${process.pid}"

[tenants.acme.admin-ui]
username = "admin"
password-hash = "${hash}"

[tenants.hooli]
query = "hooli"
redis-key = "admin-ui-hooli-${process.pid}"
`;

/** Serves the dashboard's static files, as an operator would from the npm package. */
function serveDashboard() {
  const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml" };
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, "http://x").pathname).replace(/^\/+/, "") || "index.html";
    const file = path.join(uiDist, path.normalize(rel));
    if (!file.startsWith(uiDist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** An admin client; collects every event it gets. */
function admin(url, auth) {
  const socket = client(`${url}/admin`, { auth });
  socket.seen = [];
  socket.onAny((event, ...args) => socket.seen.push([event, ...args]));
  return socket;
}

const statsOf = (socket) => socket.seen.filter(([e]) => e === "server_stats").map(([, s]) => s);

describe("@socket.io/admin-ui on a two-node fleet", () => {
  let redis;
  let nodes = [];
  let dir;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-admin-ui-"));
    fs.writeFileSync(path.join(dir, "ioplex.toml"), config(bcrypt.hashSync(PASSWORD, 10)));
    redis = await startRedis();
    for (let i = 0; i < 2; i++) {
      nodes.push(await startServer({ args: ["--config", path.join(dir, "ioplex.toml")], env: { REDIS_URL: redis.url } }));
    }
  });

  after(async () => {
    closeAll();
    for (const n of nodes) await n.stop();
    await redis?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("the admin namespace refuses wrong credentials, and a tenant without admin-ui has none", async () => {
    for (const auth of [{}, { username: "admin", password: "wrong" }, { username: "root", password: PASSWORD }]) {
      const socket = admin(nodes[0].url, auth);
      const [err] = await once(socket, "connect_error", 5000);
      assert.equal(err.message, "invalid credentials");
      socket.close();
    }
    // hooli has no [admin-ui]: its /admin is an ordinary client namespace that feeds nothing.
    const plain = client(`${nodes[0].url}/admin?tenant=hooli`, { auth: { username: "admin", password: PASSWORD } });
    const events = [];
    plain.onAny((event) => events.push(event));
    await once(plain, "connect");
    await new Promise((r) => setTimeout(r, 2500));
    assert.deepEqual(events, [], "no config, no server_stats, no sockets");
  });

  test("a dashboard sees both nodes: statistics, every socket, the feed; and its requests act on the other node", async () => {
    // Sockets of the tenant on each node, and one of another tenant that must stay invisible.
    const onA = await connected(nodes[0].url);
    const onB = await connected(nodes[1].url);
    await new Promise((resolve) => onB.emit("join", "support", resolve));
    const stranger = await connected(`${nodes[1].url}/?tenant=hooli`);

    const dash = admin(nodes[0].url, { username: "admin", password: PASSWORD });
    await once(dash, "connect", 5000);
    await waitFor(() => dash.seen.some(([e]) => e === "all_sockets"), 10000, "all_sockets");
    const [, session] = dash.seen.find(([e]) => e === "session");
    assert.match(session, /^\d+\.[0-9a-f]{64}$/);
    const [, config] = dash.seen.find(([e]) => e === "config");
    assert.deepEqual(config.supportedFeatures, ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"]);
    const [, sockets] = dash.seen.find(([e]) => e === "all_sockets");
    const ids = sockets.map((s) => s.id);
    assert.ok(ids.includes(onA.id) && ids.includes(onB.id), "both nodes' sockets are listed");
    assert.ok(!ids.includes(stranger.id), "another tenant's socket is not");
    const b = sockets.find((s) => s.id === onB.id);
    assert.equal(b.nsp, "/");
    assert.deepEqual(b.rooms.sort(), [onB.id, "support"].sort());
    assert.ok(["polling", "websocket"].includes(b.transport));
    assert.match(b.clientId, /^[0-9a-f]{12}$/);
    assert.ok(!onB.io.engine.id.startsWith(b.clientId), "the client id tells nothing of the session id");
    assert.equal(b.handshake.auth, undefined, "the client's auth object is not shown");

    // Statistics from both nodes (distinct server ids), each counting its own clients.
    const latest = () => new Map(statsOf(dash).map((s) => [s.serverId, s]));
    await waitFor(() => [...latest().values()].filter((s) => s.clientsCount >= 1).length === 2, 10000, "server_stats of both nodes");
    for (const s of latest().values()) {
      assert.ok(s.pid > 0 && s.uptime > 0, JSON.stringify(s));
      assert.ok(s.namespaces.some((n) => n.name === "/" && n.socketsCount >= 1), JSON.stringify(s.namespaces));
    }

    // The feed: a socket connecting to node B and joining a room, then an event it sends.
    const late = await connected(nodes[1].url);
    await new Promise((resolve) => late.emit("join", "late-room", resolve));
    late.emit("publish", { room: "late-room", event: "note", args: ["hi"] }, () => {});
    await waitFor(() => dash.seen.some(([e, s]) => e === "socket_connected" && s.id === late.id), 5000, "socket_connected");
    await waitFor(() => dash.seen.some(([e, nsp, room, id]) => e === "room_joined" && nsp === "/" && room === "late-room" && id === late.id), 5000, "room_joined");
    await waitFor(() => dash.seen.some(([e, nsp, id, args]) => e === "event_received" && id === late.id && args[0] === "publish"), 5000, "event_received");
    assert.ok(!dash.seen.some(([e, s]) => e === "socket_connected" && s?.id === stranger.id));

    // Requests from the dashboard on node A act on node B's socket.
    dash.emit("join", "/", "vip", onB.id);
    await waitFor(() => dash.seen.some(([e, , room, id]) => e === "room_joined" && room === "vip" && id === onB.id), 5000, "remote join");
    const bId = onB.id; // the client forgets its id once disconnected
    const gone = once(onB, "disconnect", 5000);
    dash.emit("_disconnect", "/", false, bId);
    assert.equal((await gone)[0], "io server disconnect");
    await waitFor(() => dash.seen.some(([e, , id]) => e === "socket_disconnected" && id === bId), 5000, "socket_disconnected");

    // The session token works on the other node, with no password.
    const again = admin(nodes[1].url, { sessionId: session });
    await once(again, "connect", 5000);
    await waitFor(() => again.seen.some(([e]) => e === "config"), 5000, "config on node B");
    assert.ok(!again.seen.some(([e]) => e === "session"), "a valid session gets no new token");
    onA.close();
    late.close();
    stranger.close();
  });

  describe("in headless Chromium", () => {
    let browser;
    let dashboard;

    before(async () => {
      dashboard = await serveDashboard();
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      });
    });

    after(async () => {
      await browser?.close();
      dashboard?.close();
    });

    test("the dashboard lists both nodes' sockets and rooms; a disconnect clicked there reaches the other node", async () => {
      const onA = await connected(nodes[0].url);
      const onB = await connected(nodes[1].url);
      await new Promise((resolve) => onA.emit("join", "lobby", resolve));
      await new Promise((resolve) => onB.emit("join", "support", resolve));

      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      page.on("pageerror", (err) => console.log(`# page error: ${err.message}`));
      await page.goto(`http://127.0.0.1:${dashboard.address().port}/`);
      await page.getByLabel("Server URL").fill(nodes[0].url);
      await page.getByLabel("Username").fill("admin");
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Connect" }).click();

      // Both nodes on the servers page (each reports itself as <hostname>#<pid>).
      await page.getByText("connected", { exact: true }).first().waitFor({ timeout: 15000 });
      await page.goto(`http://127.0.0.1:${dashboard.address().port}/#/servers`);
      for (const node of nodes) {
        await page.getByText(new RegExp(`#${node.child.pid}$`)).first().waitFor({ timeout: 15000 });
      }
      await page.waitForTimeout(1000);
      fs.mkdirSync(path.join(here, "artifacts"), { recursive: true });
      await page.screenshot({ path: path.join(here, "artifacts/admin-ui-servers.png") });
      await page.goto(`http://127.0.0.1:${dashboard.address().port}/#/sockets`);
      for (const s of [onA, onB]) {
        await page.getByText(s.id).first().waitFor({ timeout: 15000 });
      }
      await page.goto(`http://127.0.0.1:${dashboard.address().port}/#/rooms`);
      for (const room of ["lobby", "support"]) {
        await page.getByText(room, { exact: true }).first().waitFor({ timeout: 15000 });
      }
      await page.goto(`http://127.0.0.1:${dashboard.address().port}/#/sockets`);
      await page.getByText(onB.id).first().waitFor({ timeout: 15000 });
      await page.waitForTimeout(1000); // let the page's transitions finish before the screenshot
      fs.mkdirSync(path.join(here, "artifacts"), { recursive: true });
      await page.screenshot({ path: path.join(here, "artifacts/admin-ui.png") });
      console.log(`# screenshot: ${path.join(here, "artifacts/admin-ui.png")}`);

      // Open node B's socket and disconnect it from the dashboard, which is connected to node A.
      const gone = once(onB, "disconnect", 10000);
      await page.getByText(onB.id).first().click();
      await page.getByText("Socket details").waitFor({ timeout: 10000 });
      // The details page's disconnect buttons are icon buttons (mdi-logout), labelled only by a tooltip.
      await page.locator("button:has(.mdi-logout)").last().click();
      assert.equal((await gone)[0], "io server disconnect");
      assert.ok(onA.connected, "the other socket stays");
    });
  });
});
