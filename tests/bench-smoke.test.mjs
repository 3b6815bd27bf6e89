// A seconds-long run of each ioplex-bench scenario, so the harness cannot rot (full runs are manual).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { binaryPath, startServer } from "./lib/server.mjs";

const run = promisify(execFile);

describe("ioplex-bench smoke", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  const bench = async (...args) => {
    const { stdout } = await run(binaryPath("ioplex-bench"), ["--port", String(server.port), "--server-pid", String(server.child.pid), ...args], { timeout: 60000 });
    const row = stdout.trim().split("\n").at(-1).split("|").map((c) => c.trim());
    return row;
  };

  test("connect", async () => {
    const jsonFile = path.join(os.tmpdir(), `ioplex-bench-${process.pid}.jsonl`);
    const row = await bench("--json", jsonFile, "connect", "--clients", "200", "--concurrency", "20", "--hold", "1");
    const [result] = fs.readFileSync(jsonFile, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    fs.rmSync(jsonFile);
    assert.equal(result.scenario, "connect");
    assert.equal(result.clients, 200);
    assert.ok(result.connections_per_s > 0 && result.server_rss_per_connection_kib > 0, JSON.stringify(result));
    assert.equal(row[1], "connect");
    assert.equal(row[2], "200");
    assert.ok(Number(row[5]) > 0, `connections/s: ${row[5]}`);
    assert.match(row[6], /KiB$/);
  });

  test("connect, spread over two generator processes", async () => {
    const row = await bench("connect", "--clients", "200", "--concurrency", "20", "--hold", "1", "--processes", "2");
    assert.equal(row[2], "200");
    assert.ok(Number(row[5]) > 0, `connections/s: ${row[5]}`);
    assert.match(row[6], /KiB$/);
  });

  test("fanout", async () => {
    const row = await bench("fanout", "--clients", "200", "--room-size", "20", "--rate", "50", "--duration", "1");
    assert.equal(row[1], "fanout");
    // 50 publishes/s, each to 19 other members: about 950 deliveries/s.
    const deliveries = Number(row[5]);
    assert.ok(deliveries > 500 && deliveries < 1500, `deliveries/s: ${deliveries}`);
    assert.match(row[7], /ms$/);
  });

  test("plugins", async () => {
    const dist = new URL("../plugins/dist", import.meta.url).pathname;
    const { stdout } = await run(binaryPath("ioplex-bench"), ["plugins", "--dist", dist, "--iterations", "500", "--reloads", "1"], { timeout: 120000 });
    const rows = stdout.split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| hook") && !l.startsWith("| reload"));
    assert.equal(rows.length, 9, stdout); // six hook rows, three reload rows
    for (const row of rows) {
      const cells = row.split("|").map((c) => c.trim()).filter(Boolean);
      assert.ok(cells.slice(2).every((c) => Number.isFinite(Number(c))), row);
    }
    assert.ok(rows.slice(-3).every((r) => r.endsWith("| 0 |")), "no failed call during reloads");
  });

  test("sweep: ioplex and Node side by side, JSON lines and a chart", async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-sweep-"));
    try {
      const script = new URL("../bench/sweep", import.meta.url).pathname;
      const { stdout } = await run(script, ["--debug", "--clients", "100", "--room-size", "10", "--rates", "20", "--duration", "1", "--out", out], { timeout: 120000 });
      assert.match(stdout, /sustained at p99 <= 50 ms: ioplex \d+ deliveries\/s, node \d+/);
      const rows = fs.readFileSync(path.join(out, "sweep.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(rows.map((r) => r.label), ["ioplex", "node"]);
      assert.ok(rows.every((r) => r.deliveries_per_s > 100), JSON.stringify(rows));
      const svg = fs.readFileSync(path.join(out, "sweep.svg"), "utf8");
      assert.match(svg, /^<svg/);
      assert.match(svg, />\s*ioplex\s*</, "legend names ioplex");
      assert.match(svg, />\s*node\s*</, "legend names node");
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  test("crossnode: the Redis hop, ioplex and Node side by side", async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-crossnode-"));
    try {
      const script = new URL("../bench/crossnode", import.meta.url).pathname;
      const { stdout } = await run(script, ["--debug", "--clients", "100", "--room-size", "10", "--rate", "20", "--duration", "1", "--out", out], { timeout: 120000 });
      assert.match(stdout, /^\| ioplex \| [\d.]+ \/ [\d.]+ ms \| [\d.]+ \/ [\d.]+ ms \| \+/m);
      assert.match(stdout, /^\| node \| /m);
      const rows = fs.readFileSync(path.join(out, "crossnode.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(rows.map((r) => r.label), ["ioplex-local", "ioplex-remote", "node-local", "node-remote"]);
      assert.ok(rows.every((r) => r.deliveries_per_s > 100), JSON.stringify(rows));
      assert.ok(rows.filter((r) => r.label.endsWith("remote")).every((r) => r.cross_node));
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
