// A private redis-server on a free loopback port, stopped (and restartable) by the test that started it.
import { spawn } from "node:child_process";
import { freePort, waitForPort } from "./server.mjs";

/** Starts a redis-server; with `{ deferred: true }` only reserves its port (call `restart()` to start it). */
export async function startRedis({ deferred = false } = {}) {
  const port = await freePort();
  const logs = [];
  let child;
  const launch = async () => {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", (d) => logs.push(d.toString()));
    child.stderr.on("data", (d) => logs.push(d.toString()));
    await waitForPort(port, child, logs);
  };
  if (!deferred) await launch();
  const stop = async () => {
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  };
  return { port, url: `redis://127.0.0.1:${port}`, logs, stop, restart: launch };
}
