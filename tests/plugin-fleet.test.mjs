// A plugin uploaded to one node serves on every node of the fleet (through Redis), including nodes that
// start later; a removal travels the same way.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";
import { createClient } from "redis";
import { closeAll, connected, once, sleep } from "./lib/client.mjs";
import { pluginPath } from "./lib/plugins.mjs";

/** The key every node of these fleets shares (never stored in Redis). */
const FLEET_KEY = "test-fleet-key-0123456789abcdef0123456789";

describe("plugins shared across the fleet", () => {
  let redis;
  let dir;
  const nodes = [];
  const startNode = async ({ withRedact = false, key = FLEET_KEY } = {}) => {
    const plugins = fs.mkdtempSync(path.join(dir, "plugins-"));
    if (withRedact) {
      fs.mkdirSync(path.join(plugins, "acme"));
      fs.copyFileSync(pluginPath("redact"), path.join(plugins, "acme", "redact.wasm"));
    }
    const node = await startServer({
      args: ["--config", path.join(dir, "ioplex.toml"), "--plugins-dir", plugins, "--plugin-cache-dir", "none"],
      env: { REDIS_URL: redis.url, RUST_LOG: "warn,ioplex::plugin=info", IOPLEX_FLEET_KEY: key },
    });
    nodes.push(node);
    return node;
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-plugin-fleet-"));
    fs.writeFileSync(path.join(dir, "ioplex.toml"), `[tenants.acme]\ndefault = true\napi-keys = ["k"]\n`);
    redis = await startRedis();
    await startNode();
    await startNode();
  });
  after(async () => {
    for (const n of nodes) await n.stop();
    await redis?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  afterEach(closeAll);

  const api = (node, method, route, body) =>
    fetch(`${node.url}/api/v1/tenants/acme/${route}`, { method, headers: { authorization: "Bearer k" }, body }).then(async (r) => ({ status: r.status, body: await r.json() }));

  /** What a message with an e-mail address looks like when it reaches another client on `node`. */
  async function relayed(node) {
    const [a, b] = [await connected(node.url), await connected(node.url)];
    for (const s of [a, b]) await s.timeout(2000).emitWithAck("join", "room");
    const got = once(b, "message");
    await a.timeout(2000).emitWithAck("publish", { room: "room", event: "message", args: ["mail jo@x.io"] });
    const [text] = await got;
    a.disconnect();
    b.disconnect();
    return text;
  }

  async function eventually(node, expected) {
    const deadline = Date.now() + 8000;
    let last;
    while (Date.now() < deadline) {
      last = await relayed(node);
      if (last === expected) return;
      await sleep(100);
    }
    assert.equal(last, expected);
  }

  test("an upload on one node serves on the others; a removal too", async () => {
    const [a, b] = nodes;
    assert.equal(await relayed(b), "mail jo@x.io");
    const put = await api(a, "PUT", "plugins/redact", fs.readFileSync(pluginPath("redact")));
    assert.equal(put.status, 200);
    assert.equal(put.body.fleet, "shared");
    assert.equal(await relayed(a), "mail [email]", "serving on the node that took the upload at once");
    await eventually(b, "mail [email]");

    const late = await startNode();
    assert.equal(await relayed(late), "mail [email]", "a node that starts later reconciles before serving");

    assert.deepEqual((await api(a, "DELETE", "plugins/redact")).body, { ok: true });
    await eventually(b, "mail jo@x.io");
    await eventually(late, "mail jo@x.io");
  });

  test("old versions' blobs are deleted from Redis once no tenant uses them", async () => {
    const [a] = nodes;
    const r = createClient({ url: redis.url });
    await r.connect();
    try {
      const blobs = async () => (await r.keys("socket.io:plugin:blob:*")).sort();
      assert.equal((await api(a, "PUT", "plugins/redact", fs.readFileSync(pluginPath("redact")))).status, 200);
      const first = await blobs();
      assert.equal(first.length, 1);
      assert.equal((await api(a, "PUT", "plugins/redact", fs.readFileSync(pluginPath("stamp")))).status, 200);
      const second = await blobs();
      assert.equal(second.length, 1, "the replaced version's blob is gone");
      assert.notDeepEqual(second, first);
      assert.equal((await api(a, "DELETE", "plugins/redact")).status, 200);
      assert.deepEqual(await blobs(), [], "a removed plugin's blob is gone");
    } finally {
      await r.quit();
    }
  });

  test("whoever can write to Redis cannot install or remove plugins without the fleet key", async () => {
    const guarded = await startNode({ withRedact: true });
    assert.equal(await relayed(guarded), "mail [email]", "the directory plugin serves");
    const r = createClient({ url: redis.url });
    await r.connect();
    try {
      // A forged removal of the directory plugin, unsigned and signed with a wrong key.
      const removal = { tenant: "acme", name: "redact", sha256: null, origin: "attacker", issued: Date.now() };
      await r.publish("socket.io:plugins:changed", JSON.stringify(removal));
      await r.publish("socket.io:plugins:changed", JSON.stringify({ ...removal, sig: "ab".repeat(32) }));
      // A forged install: a blob, an unsigned record and an announcement.
      const bytes = fs.readFileSync(pluginPath("stamp"));
      const sha = crypto.createHash("sha256").update(bytes).digest("hex");
      await r.set(`socket.io:plugin:blob:${sha}`, bytes);
      await r.hSet("socket.io:plugins:acme", "stamp", sha);
      await r.sAdd("socket.io:plugins:tenants", "acme");
      await r.publish("socket.io:plugins:changed", JSON.stringify({ tenant: "acme", name: "stamp", sha256: sha, origin: "attacker", issued: Date.now() }));
      await sleep(500);
      assert.equal(await relayed(guarded), "mail [email]", "the directory plugin still serves, nothing was added");
      const metrics = await (await fetch(`${guarded.url}/metrics`)).text();
      const rejected = Number(/^ioplex_plugin_fleet_rejected_total (\d+)/m.exec(metrics)?.[1] ?? 0);
      assert.ok(rejected >= 3, `forged changes counted (${rejected})`);

      // A node with the key removes what it uploaded, never what another node's directory installed.
      const [a] = nodes;
      assert.equal((await api(a, "PUT", "plugins/redact", fs.readFileSync(pluginPath("redact")))).status, 200);
      assert.equal((await api(a, "DELETE", "plugins/redact")).status, 200);
      await sleep(500);
      assert.equal(await relayed(guarded), "mail [email]", "a signed removal leaves a directory plugin alone");
      await r.hDel("socket.io:plugins:acme", "stamp");
      await r.del(`socket.io:plugin:blob:${sha}`);
    } finally {
      await r.quit();
    }
  });
});
