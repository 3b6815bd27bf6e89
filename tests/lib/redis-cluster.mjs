// A private Redis Cluster on free loopback ports (masters, each with one replica), made with Debian's
// redis-server and `redis-cli --cluster create`, stopped and removed by the test that started it.
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort, waitForPort } from "./server.mjs";

const run = promisify(execFile);

async function info(port) {
  const { stdout } = await run("redis-cli", ["-p", String(port), "cluster", "info"]);
  return stdout;
}

/** Starts `masters` masters and as many replicas; resolves once every node reports cluster_state:ok. */
export async function startRedisCluster({ masters = 3 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-cluster-"));
  const nodes = [];
  for (let i = 0; i < masters * 2; i++) {
    const port = await freePort();
    const logs = [];
    const child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
        "--cluster-config-file", path.join(dir, `nodes-${port}.conf`), "--cluster-node-timeout", "2000",
        "--save", "", "--appendonly", "no", "--dir", dir],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    child.stdout.on("data", (d) => logs.push(d.toString()));
    child.stderr.on("data", (d) => logs.push(d.toString()));
    await waitForPort(port, child, logs);
    nodes.push({ port, child, logs });
  }
  const addresses = nodes.map((n) => `127.0.0.1:${n.port}`);
  await run("redis-cli", ["--cluster", "create", ...addresses, "--cluster-replicas", "1", "--cluster-yes"]);
  const deadline = Date.now() + 20_000;
  for (const node of nodes) {
    while (!(await info(node.port)).includes("cluster_state:ok")) {
      if (Date.now() > deadline) throw new Error(`cluster not ok on ${node.port}:\n${node.logs.join("")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    nodes,
    /** Seed nodes as ioplex's REDIS_CLUSTER_NODES takes them. */
    seeds: addresses.join(","),
    /** Root nodes as node-redis's createCluster takes them. */
    rootNodes: addresses.map((a) => ({ url: `redis://${a}` })),
    async stop() {
      await Promise.all(
        nodes.map(async ({ child }) => {
          if (child.exitCode !== null) return;
          const exited = new Promise((resolve) => child.once("exit", resolve));
          child.kill("SIGKILL");
          await exited;
        }),
      );
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
