// Starts a freshly built ioplex binary (or example) on a free port and stops it after the test.
import { spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(repo, process.env.CARGO_TARGET_DIR)
  : path.join(repo, "target");
const profileDir = path.join(targetDir, process.env.IOPLEX_PROFILE ?? "debug");

/** Path of a built binary: "ioplex", or "examples/<name>". */
export function binaryPath(name) {
  return path.join(profileDir, name);
}

/**
 * The edge build (`--no-default-features`: no compiler, precompiled plugins only). tests/run builds it
 * into a target directory of its own, `<target>/edge`, so it does not replace the default binary.
 */
export function edgeBinaryPath() {
  return path.join(targetDir, "edge", process.env.IOPLEX_PROFILE ?? "debug", "ioplex");
}

const handedOut = new Set();

/** A port nothing listens on now, never the same twice in this process (parallel starts must not collide). */
export async function freePort() {
  for (;;) {
    const port = await probePort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

function probePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    // The wildcard address: a port free on 127.0.0.1 may still be held on 127.0.0.x by a closing connection.
    srv.listen(0, "0.0.0.0", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port, child, logs, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`server exited with ${child.exitCode}:\n${logs.join("")}`);
    }
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => { s.destroy(); resolve(true); });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`server did not listen on ${port} within ${timeoutMs} ms:\n${logs.join("")}`);
}

/**
 * Starts `name` (default the ioplex binary; or the file `binary`) with extra CLI args and env, on a free
 * port or `port`;
 * returns { url, port, stop, logs, child }.
 */
export async function startServer(options = {}) {
  // Another process may take the port between probing and binding: try a few.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      if (attempt >= 5 || !/Address already in use/.test(String(err.message))) throw err;
    }
  }
}

async function startOnce({ name = "ioplex", binary = binaryPath(name), args = [], env = {}, readyTimeoutMs = 15000, fileLimit = null, port: fixedPort = null }) {
  // A fixed `port` lets a node restart where a load balancer's configuration expects it.
  const port = fixedPort ?? (await freePort());
  const logs = [];
  // With `fileLimit`, the server runs under `ulimit -n` (soft and hard) of that many descriptors.
  const [command, argv] = fileLimit
    ? ["bash", ["-c", `ulimit -n ${Number(fileLimit)} && exec "$0" "$@"`, binary, ...args]]
    : [binary, args];
  const child = spawn(command, argv, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", PORT: String(port), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (d) => logs.push(d.toString()));
  child.stderr.on("data", (d) => logs.push(d.toString()));
  await waitForPort(port, child, logs, readyTimeoutMs);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    logs,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
