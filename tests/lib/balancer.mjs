// A real load balancer (Debian's HAProxy or nginx) in front of test nodes, run from the shipped
// configurations in deploy/ with only the addresses changed: the example nodes 10.0.0.N:3000 become
// 127.0.0.1:<port of node N>, and the listener moves from port 80 to a free loopback port.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, waitForPort } from "./server.mjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** The kinds of balancer with a configuration in deploy/. */
export const BALANCERS = ["haproxy", "nginx"];

/** The path of a Debian sbin program, also when /usr/sbin is not on PATH. */
function program(name) {
  for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    const candidate = path.join(dir, name);
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} is not installed (apt-get install ${name})`);
}

/** The shipped configuration of `kind`, pointed at `nodePorts` and listening on `port`. */
function configure(kind, nodePorts, port) {
  const file = kind === "haproxy" ? "deploy/haproxy/haproxy.cfg" : "deploy/nginx/ioplex.conf";
  let text = fs.readFileSync(path.join(repo, file), "utf8");
  nodePorts.forEach((p, i) => {
    text = text.replaceAll(`10.0.0.${i + 1}:3000`, `127.0.0.1:${p}`);
  });
  const listen = kind === "haproxy" ? ["bind :80", `bind 127.0.0.1:${port}`] : ["listen 80;", `listen 127.0.0.1:${port};`];
  if (!text.includes(listen[0])) throw new Error(`${file} no longer has "${listen[0]}"`);
  return text.replace(listen[0], listen[1]);
}

/**
 * Starts `kind` in front of the nodes on `nodePorts` (exactly three, as in deploy/); returns
 * { url, port, logs, stop }.
 */
export async function startBalancer(kind, nodePorts) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ioplex-${kind}-`));
  // nginx's workers run as an unprivileged user when started as root, and write temporary files here.
  fs.chmodSync(dir, 0o777);
  const site = configure(kind, nodePorts, port);
  let command;
  let args;
  if (kind === "haproxy") {
    fs.writeFileSync(path.join(dir, "haproxy.cfg"), site);
    command = program("haproxy");
    args = ["-db", "-f", path.join(dir, "haproxy.cfg")];
  } else {
    fs.writeFileSync(path.join(dir, "ioplex.conf"), site);
    const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `${t}_temp_path ${dir}/${t};`).join(" ");
    fs.writeFileSync(
      path.join(dir, "nginx.conf"),
      `daemon off; pid ${dir}/nginx.pid; error_log stderr warn; worker_processes 1;\n` +
        `events { worker_connections 4096; }\n` +
        `http { access_log off; ${temp} include ${dir}/ioplex.conf; }\n`,
    );
    command = program("nginx");
    args = ["-p", dir, "-e", "stderr", "-c", path.join(dir, "nginx.conf")];
    execFileSync(command, [...args, "-t"], { stdio: "pipe" });
  }
  const logs = [];
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.on("data", (d) => logs.push(d.toString()));
  child.stderr.on("data", (d) => logs.push(d.toString()));
  await waitForPort(port, child, logs);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    logs,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
