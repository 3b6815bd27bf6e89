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

/** Starts (or starts again) one node's redis-server with its arguments; resolves once it listens. */
async function launch(node) {
  const child = spawn("redis-server", node.args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.on("data", (d) => node.logs.push(d.toString()));
  child.stderr.on("data", (d) => node.logs.push(d.toString()));
  node.child = child;
  await waitForPort(node.port, child, node.logs);
}

/** Starts `masters` masters and as many replicas; resolves once every node reports cluster_state:ok. */
export async function startRedisCluster({ masters = 3 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-cluster-"));
  const nodes = [];
  for (let i = 0; i < masters * 2; i++) {
    const port = await freePort();
    // The bus port is port + 10000 unless given: a free port above 55535 would have none.
    const busPort = await freePort();
    const node = { port, logs: [] };
    node.args = ["--port", String(port), "--cluster-port", String(busPort), "--cluster-announce-ip", "127.0.0.1",
      "--bind", "127.0.0.1", "--cluster-enabled", "yes",
      "--cluster-config-file", path.join(dir, `nodes-${port}.conf`), "--cluster-node-timeout", "2000",
      "--save", "", "--appendonly", "no", "--dir", dir];
    await launch(node);
    nodes.push(node);
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
  // Replicas that have not finished their first sync cannot take over: wait for every link.
  for (const node of nodes) {
    for (;;) {
      const { stdout } = await run("redis-cli", ["-p", String(node.port), "info", "replication"]);
      if (stdout.includes("role:master") && stdout.includes("connected_slaves:1")) break;
      if (stdout.includes("role:slave") && stdout.includes("master_link_status:up")) break;
      if (Date.now() > deadline) throw new Error(`replication not up on ${node.port}:\n${stdout}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const alive = () => nodes.filter((n) => n.child.exitCode === null && n.child.signalCode === null);
  return {
    nodes,
    /** The node serving as master of `channel`'s hash slot now. */
    async ownerOf(channel) {
      const [anyNode] = alive();
      const { stdout: slot } = await run("redis-cli", ["-p", String(anyNode.port), "cluster", "keyslot", channel]);
      const { stdout } = await run("redis-cli", ["-p", String(anyNode.port), "cluster", "nodes"]);
      for (const line of stdout.trim().split("\n")) {
        const parts = line.split(" ");
        if (!parts[2].includes("master") || parts[2].includes("fail")) continue;
        for (const range of parts.slice(8)) {
          const [from, to = from] = range.split("-").map(Number);
          if (Number(slot) >= from && Number(slot) <= to) {
            const port = Number(parts[1].split("@")[0].split(":")[1]);
            return nodes.find((n) => n.port === port);
          }
        }
      }
      throw new Error(`no master owns ${channel}`);
    },
    /**
     * Moves `channel`'s hash slot to the master `to` the way `redis-cli --cluster reshard` moves a slot
     * (IMPORTING / MIGRATING, keys migrated, then SETSLOT NODE on every master); resolves once every
     * master agrees. Returns the slot.
     */
    async moveSlot(channel, to) {
      const [anyNode] = alive();
      const cli = (port, ...args) => run("redis-cli", ["-p", String(port), ...args]);
      const slot = (await cli(anyNode.port, "cluster", "keyslot", channel)).stdout.trim();
      const from = await this.ownerOf(channel);
      if (from === to) throw new Error("moveSlot: the slot is there already");
      const id = async (node) => (await cli(node.port, "cluster", "myid")).stdout.trim();
      const [fromId, toId] = [await id(from), await id(to)];
      await cli(to.port, "cluster", "setslot", slot, "importing", fromId);
      await cli(from.port, "cluster", "setslot", slot, "migrating", toId);
      for (;;) {
        const keys = (await cli(from.port, "cluster", "getkeysinslot", slot, "100")).stdout.trim();
        if (!keys) break;
        await cli(from.port, "migrate", "127.0.0.1", String(to.port), "", "0", "5000", "keys", ...keys.split("\n"));
      }
      const masters = [];
      for (const node of alive()) {
        if ((await cli(node.port, "role")).stdout.startsWith("master")) masters.push(node);
      }
      for (const node of [to, from, ...masters.filter((n) => n !== to && n !== from)]) {
        await cli(node.port, "cluster", "setslot", slot, "node", toId);
      }
      const deadline = Date.now() + 20_000;
      while ((await this.ownerOf(channel)) !== to) {
        if (Date.now() > deadline) throw new Error(`slot ${slot} did not move`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return Number(slot);
    },
    /** Starts a stopped node again with its cluster config: it rejoins (a failed-over master as a replica). */
    async restart(node) {
      await launch(node);
    },
    /** Masters now (live nodes that say they are masters). */
    async masters() {
      const out = [];
      for (const node of alive()) {
        const { stdout } = await run("redis-cli", ["-p", String(node.port), "role"]);
        if (stdout.startsWith("master")) out.push(node);
      }
      return out;
    },
    /** Resolves once every live node (not in `except`) reports cluster_state:ok. */
    async waitOk(except = [], ms = 20_000) {
      const deadline = Date.now() + ms;
      for (const node of alive().filter((n) => !except.includes(n))) {
        while (!(await info(node.port)).includes("cluster_state:ok")) {
          if (Date.now() > deadline) throw new Error(`cluster not ok on ${node.port}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    /** Seed nodes as ioplex's REDIS_CLUSTER_NODES takes them. */
    seeds: addresses.join(","),
    /** Root nodes as node-redis's createCluster takes them. */
    rootNodes: addresses.map((a) => ({ url: `redis://${a}` })),
    async stop() {
      await Promise.all(
        nodes.map(async ({ child }) => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const exited = new Promise((resolve) => child.once("exit", resolve));
          child.kill("SIGKILL");
          await exited;
        }),
      );
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
