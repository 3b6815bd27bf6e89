// The operator's kit in deploy/: the Prometheus rules (promtool's check and its unit tests), the
// Grafana dashboard and the rules (every expression parses, and every metric it names is one that real
// nodes export), and the systemd unit (systemd-analyze verify, against the built binary).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { closeAll, connected } from "./lib/client.mjs";
import { pluginsDir } from "./lib/plugins.mjs";
import { startRedis } from "./lib/redis.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";
import { binaryPath, startServer } from "./lib/server.mjs";

const run = promisify(execFile);
const deploy = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../deploy");
const alerts = path.join(deploy, "prometheus/alerts.yml");
const dashboard = JSON.parse(fs.readFileSync(path.join(deploy, "grafana/ioplex.json"), "utf8"));

/** Every PromQL expression of the dashboard's panels. */
function dashboardExpressions() {
  const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  return panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
}

/** Every alert expression of the rules file (its two shapes: inline, and a `|` block indented below). */
function alertExpressions() {
  const text = fs.readFileSync(alerts, "utf8");
  const out = [];
  // `expr:` is either inline or a `|` block indented below it.
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)expr:\s*(.*)$/.exec(lines[i]);
    if (!m) continue;
    if (m[2] !== "|") {
      out.push(m[2]);
      continue;
    }
    const body = [];
    while (i + 1 < lines.length && (lines[i + 1].trim() === "" || lines[i + 1].search(/\S/) > m[1].length)) body.push(lines[++i]);
    out.push(body.join("\n"));
  }
  return out;
}

/** The metric names an expression mentions (ioplex's own, the process ones, and `up`). */
function metricNames(expr) {
  const names = new Set(expr.match(/\b(?:ioplex|process)_[a-z0-9_]+\b/g) ?? []);
  if (/\bup\{/.test(expr)) names.add("up");
  return names;
}

/** Metric names in /metrics text, histograms with their series suffixes. */
function exported(text) {
  const names = new Set();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]);
    if (m[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m[1] + s);
  }
  return names;
}

test("Prometheus rules: promtool checks them and their unit tests pass", async () => {
  const check = await run("promtool", ["check", "rules", alerts]);
  assert.match(check.stdout, /SUCCESS: \d+ rules found/);
  const unit = await run("promtool", ["test", "rules", "alerts.test.yml"], { cwd: path.dirname(alerts) });
  assert.match(unit.stdout, /SUCCESS/);
});

test("the systemd unit verifies with systemd-analyze, pointed at the built binary", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-unit-"));
  try {
    const unit = fs.readFileSync(path.join(deploy, "systemd/ioplex.service"), "utf8");
    assert.match(unit, /^ExecStart=\/usr\/local\/bin\/ioplex$/m);
    const file = path.join(dir, "ioplex.service");
    fs.writeFileSync(file, unit.replace("ExecStart=/usr/local/bin/ioplex", `ExecStart=${binaryPath("ioplex")}`));
    // `verify` exits 0 on unknown keys too: any warning fails the test.
    const { stderr } = await run("systemd-analyze", ["verify", file]);
    assert.equal(stderr.trim(), "", stderr);
    assert.match(unit, /^KillSignal=SIGTERM$/m, "stop drains");
    assert.match(unit, /^LimitNOFILE=\d+$/m);
    assert.match(unit, /^TimeoutStopSec=30$/m, "longer than the default 10 s drain");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

describe("every metric the dashboard and the alerts name is one a real node exports", () => {
  let redis;
  let cluster;
  let plugins;
  const nodes = [];
  const names = new Set(["up"]);
  before(async () => {
    redis = await startRedis();
    cluster = await startRedisCluster();
    plugins = pluginsDir();
    plugins.install("default", "room-auth", "room_auth", '[settings]\nsecret = "s"\n');
    // Classic adapter with plugins; streams adapter; sharded adapter on a cluster.
    nodes.push(await startServer({ env: { REDIS_URL: redis.url }, args: ["--plugins-dir", plugins.root, "--plugin-cache-dir", "none"] }));
    nodes.push(await startServer({ env: { REDIS_URL: redis.url, REDIS_ADAPTER: "streams" } }));
    nodes.push(await startServer({ env: { REDIS_CLUSTER_NODES: cluster.seeds } }));
    for (const n of nodes.slice(1)) await connected(n.url);
    for (const n of nodes) for (const name of exported(await (await fetch(`${n.url}/metrics`)).text())) names.add(name);
  });
  after(async () => {
    closeAll();
    for (const n of nodes) await n.stop();
    await redis?.stop();
    await cluster?.stop();
    plugins?.cleanup();
  });

  test("the dashboard: each expression parses (promtool) and names exported metrics only", async () => {
    const exprs = dashboardExpressions();
    assert.ok(exprs.length >= 25, `${exprs.length} expressions`);
    const unknown = exprs.flatMap(({ panel, expr }) => [...metricNames(expr)].filter((n) => !names.has(n)).map((n) => `${panel}: ${n}`));
    assert.deepEqual(unknown, []);
    // Grafana's variables replaced by what they stand for, each expression becomes a recording rule
    // for promtool to parse.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-dashboard-"));
    try {
      const rules = exprs.map(({ expr }, i) => `      - record: dashboard:expr${i}\n        expr: ${JSON.stringify(expr.replaceAll("$__rate_interval", "1m").replaceAll("$instance", ".*").replaceAll("$tenant", ".*"))}`);
      const file = path.join(dir, "dashboard-rules.yml");
      fs.writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join("\n")}\n`);
      const { stdout } = await run("promtool", ["check", "rules", file]);
      assert.match(stdout, new RegExp(`SUCCESS: ${exprs.length} rules found`));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the alerts name exported metrics only", () => {
    const exprs = alertExpressions();
    assert.ok(exprs.length >= 14, `${exprs.length} expressions`);
    const unknown = exprs.flatMap((expr) => [...metricNames(expr)].filter((n) => !names.has(n)));
    assert.deepEqual(unknown, []);
  });
});
