// A seconds-long run of each ioplex-bench scenario, so the harness cannot rot (full runs are manual).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
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
    const row = await bench("connect", "--clients", "200", "--concurrency", "20", "--hold", "1");
    assert.equal(row[1], "connect");
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
});
