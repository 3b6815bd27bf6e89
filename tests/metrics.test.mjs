// /metrics in the Prometheus text format, next to /healthz and /readyz on the Socket.IO port.
import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer } from "./lib/server.mjs";
import { closeAll, connected, once } from "./lib/client.mjs";
import { pluginsDir } from "./lib/plugins.mjs";

/** Parses the exposition text into { "name{labels}": value }, checking every line's shape. */
function parse(text) {
  const samples = {};
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    const m = line.match(/^([a-z_]+(?:\{[^}]*\})?) (-?[0-9.e+-]+|NaN)$/);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    samples[m[1]] = Number(m[2]);
  }
  return samples;
}

describe("/metrics", () => {
  let server;
  let plugins;
  before(async () => {
    plugins = pluginsDir();
    plugins.install("default", "redact", "redact");
    plugins.install("chaos", "chaos", "chaos");
    server = await startServer({ args: ["--plugins-dir", plugins.root, "--plugin-cache-dir", "none"] });
  });
  after(async () => {
    await server?.stop();
    plugins?.cleanup();
  });
  afterEach(closeAll);

  const scrape = async () => {
    const resp = await fetch(`${server.url}/metrics`);
    assert.equal(resp.status, 200);
    assert.equal(resp.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    return parse(await resp.text());
  };

  test("connections, sockets, rooms, events and bytes, by tenant", async () => {
    const ws = [await connected(server.url, { transports: ["websocket"] }), await connected(server.url, { transports: ["websocket"] })];
    const polling = await connected(server.url, { transports: ["polling"] });
    for (const s of [...ws, polling]) assert.deepEqual(await s.timeout(2000).emitWithAck("join", "lobby"), { ok: true });
    const got = once(polling, "message");
    await ws[0].timeout(2000).emitWithAck("publish", { room: "lobby", event: "message", args: ["mail a@b.io"] });
    await got;
    const m = await scrape();
    assert.equal(m['ioplex_connections{tenant="default",transport="websocket"}'], 2);
    assert.equal(m['ioplex_connections{tenant="default",transport="polling"}'], 1);
    assert.equal(m['ioplex_sockets{tenant="default",namespace="/"}'], 3);
    assert.equal(m['ioplex_rooms{tenant="default",namespace="/"}'], 1);
    assert.ok(m['ioplex_events_received_total{tenant="default",namespace="/"}'] >= 4);
    assert.ok(m['ioplex_handshakes_total{tenant="default"}'] >= 3);
    assert.ok(m['ioplex_received_bytes_total{tenant="default"}'] > 0);
    assert.ok(m['ioplex_packets_sent_total{tenant="default"}'] >= 3);
    assert.ok(m['ioplex_sent_bytes_total{tenant="default"}'] > 0);
    assert.equal(m['ioplex_connections{tenant="chaos",transport="websocket"}'], 0);
  });

  test("plugin calls, failures by kind and the latency histogram", async () => {
    const victim = await connected(`${server.url}?tenant=chaos`);
    await victim.timeout(3000).emitWithAck("join", "chaos:trap");
    await victim.timeout(3000).emitWithAck("join", "fine");
    const m = await scrape();
    const calls = Object.entries(m).find(([k]) => /^ioplex_plugin_calls_total\{tenant="chaos",plugin="chaos",version="[0-9a-f]{12}"\}$/.test(k));
    assert.ok(calls && calls[1] >= 2, JSON.stringify(calls));
    assert.equal(m['ioplex_plugin_failures_total{tenant="chaos",plugin="chaos",kind="trap"}'], 1);
    assert.equal(m['ioplex_plugin_failures_total{tenant="chaos",plugin="chaos",kind="timeout"}'], 0);
    const count = m['ioplex_plugin_call_duration_seconds_count{tenant="chaos",plugin="chaos"}'];
    assert.ok(count >= 2);
    assert.equal(m['ioplex_plugin_call_duration_seconds_bucket{tenant="chaos",plugin="chaos",le="+Inf"}'], count);
    assert.ok(m['ioplex_plugin_call_duration_seconds_bucket{tenant="chaos",plugin="chaos",le="0.01"}'] <= count);
  });
});

describe("/metrics with a token", () => {
  let server;
  before(async () => { server = await startServer({ args: ["--metrics-token", "scrape-secret"] }); });
  after(async () => server?.stop());

  test("answers only scrapes that present the token", async () => {
    assert.equal((await fetch(`${server.url}/metrics`)).status, 401);
    assert.equal((await fetch(`${server.url}/metrics`, { headers: { authorization: "Bearer wrong" } })).status, 401);
    const ok = await fetch(`${server.url}/metrics`, { headers: { authorization: "Bearer scrape-secret" } });
    assert.equal(ok.status, 200);
    const samples = parse(await ok.text());
    assert.ok(samples.process_open_fds > 0 && samples.ioplex_runtime_alive_tasks > 0 && samples.process_resident_memory_bytes > 0);
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200, "health checks stay open");
  });

  test("/status answers JSON live connections behind the same token", async () => {
    assert.equal((await fetch(`${server.url}/status`)).status, 401);
    const socket = await connected(server.url, { transports: ["websocket"] });
    try {
      const res = await fetch(`${server.url}/status`, { headers: { authorization: "Bearer scrape-secret" } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type"), /application\/json/);
      assert.deepEqual(await res.json(), { tenants: { default: { websocket: 1, polling: 0 } } });
    } finally {
      socket.disconnect();
    }
  });
});
