// A private redis-server on a free loopback port, stopped (and restartable) by the test that started it.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, waitForPort } from "./server.mjs";

/**
 * Makes a throwaway CA and a certificate for localhost/127.0.0.1 signed by it (openssl), in a temp folder.
 * Returns the paths; `ca` is what a client trusts (e.g. via SSL_CERT_FILE).
 */
export function makeTlsFiles() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ioplex-tls-"));
  const at = (f) => path.join(dir, f);
  const run = (...args) => execFileSync("openssl", args, { stdio: "ignore" });
  run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", at("ca.key"), "-out", at("ca.pem"), "-days", "1", "-subj", "/CN=ioplex-test-ca");
  run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", at("server.key"), "-out", at("server.csr"), "-subj", "/CN=localhost");
  fs.writeFileSync(at("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run("x509", "-req", "-in", at("server.csr"), "-CA", at("ca.pem"), "-CAkey", at("ca.key"), "-CAcreateserial", "-out", at("server.pem"), "-days", "1", "-extfile", at("ext.cnf"));
  return { dir, ca: at("ca.pem"), cert: at("server.pem"), key: at("server.key"), remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts a redis-server; with `{ deferred: true }` only reserves its port (call `restart()` to start it);
 * with `{ tls }` (from makeTlsFiles) it speaks TLS only and `url` is `rediss://localhost:<port>`.
 */
export async function startRedis({ deferred = false, tls = null } = {}) {
  const port = await freePort();
  const logs = [];
  let child;
  const launch = async () => {
    const listen = tls
      ? ["--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.cert, "--tls-key-file", tls.key, "--tls-ca-cert-file", tls.ca, "--tls-auth-clients", "no"]
      : ["--port", String(port)];
    child = spawn("redis-server", [...listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.on("data", (d) => logs.push(d.toString()));
    child.stderr.on("data", (d) => logs.push(d.toString()));
    await waitForPort(port, child, logs);
  };
  if (!deferred) await launch();
  const stop = async () => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  };
  const url = tls ? `rediss://localhost:${port}` : `redis://127.0.0.1:${port}`;
  return { port, url, logs, stop, restart: launch };
}
