// A plugin uploaded to one node serves on every node of the fleet (through Redis), including nodes that
// start later; a removal travels the same way.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";
import { closeAll, connected, once, sleep } from "./lib/client.mjs";
import { pluginPath } from "./lib/plugins.mjs";

describe("plugins shared across the fleet", () => {
  let redis;
  let dir;
  const nodes = [];
  const startNode = async () => {
    const plugins = fs.mkdtempSync(path.join(dir, "plugins-"));
    const node = await startServer({
      args: ["--config", path.join(dir, "ioplex.toml"), "--plugins-dir", plugins, "--plugin-cache-dir", "none"],
      env: { REDIS_URL: redis.url, RUST_LOG: "warn,ioplex::plugin=info" },
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
});
