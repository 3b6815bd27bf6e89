// The soak driver (see bench/soak): connection churn, acked publishes across two nodes, a Redis restart
// and a plugin reload on a schedule, and the nodes' memory, descriptors and tasks sampled throughout.
// Prints a summary, writes samples (JSON lines) and a chart (SVG), exits 1 if an acked publish was lost
// or memory or descriptors grew by more than 5% between the end of the warm-up and the end.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { io } from "socket.io-client";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const duration = Number(args.duration ?? 1800) * 1000;
const warmup = Number(args.warmup ?? 120) * 1000;
const churnPerSecond = Number(args.churn ?? 200);
const publishPerSecond = Number(args["publish-rate"] ?? 50);
const redisEvery = Number(args["redis-restart-every"] ?? 300) * 1000;
const reloadEvery = Number(args["plugin-reload-every"] ?? 60) * 1000;
const sampleEvery = Number(args["sample-every"] ?? 5) * 1000;
const nodes = args.urls.split(",");
const pids = args.pids.split(",").map(Number);
const redisPort = Number(args["redis-port"]);
const plugin = args.plugin;
const pluginTarget = args["plugin-target"];
const out = args.out;
const tolerance = Number(args.tolerance ?? 0.05);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const started = Date.now();
const elapsed = () => (Date.now() - started) / 1000;

// --- Redis: started by bench/soak (pid given); each restart kills the running one and starts a new one,
// which this process owns from then on.
let redis = null;
async function restartRedis() {
  if (redis) {
    const exited = new Promise((r) => redis.once("exit", r));
    redis.kill("SIGKILL");
    await exited;
  } else {
    process.kill(Number(args["redis-pid"]), "SIGKILL");
    await sleep(100);
  }
  redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  await sleep(300);
}

// --- Stable clients: one publisher on the first node, receivers on the last (the fleet path).
const connect = (url, opts = {}) =>
  new Promise((resolve, reject) => {
    const s = io(url, { transports: ["websocket"], reconnection: false, forceNew: true, ...opts });
    const timer = setTimeout(() => reject(new Error(`no connect to ${url}`)), 10000);
    s.once("connect", () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once("connect_error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });

const receivers = [];
for (let i = 0; i < 10; i++) {
  const s = await connect(nodes.at(-1));
  await s.timeout(5000).emitWithAck("join", "soak");
  const got = new Set();
  s.on("message", (m) => got.add(m.seq));
  let dropped = false;
  s.on("disconnect", () => (dropped = true));
  receivers.push({ s, got, dropped: () => dropped });
}
const publisher = await connect(nodes[0]);
await publisher.timeout(5000).emitWithAck("join", "soak");

const acked = [];
const ackedAt = new Map();
const restartedAt = [];
let publishFailures = 0;
let seq = 0;
let publishing = true;
const publishLoop = (async () => {
  let due = Date.now();
  while (publishing) {
    for (; due <= Date.now(); due += 1000 / publishPerSecond) {
      const n = seq++;
      publisher
        .timeout(10000)
        .emitWithAck("publish", { room: "soak", event: "message", args: [{ seq: n, text: "soak" }] })
        .then((a) => {
          if (!a.ok) return publishFailures++;
          acked.push(n);
          ackedAt.set(n, Math.round(elapsed() * 1000));
        }, () => publishFailures++);
    }
    await sleep(Math.max(1, due - Date.now()));
  }
})();

// --- Churn: a new client every 1/churn s, on alternating nodes; each connects, joins, leaves.
let churning = true;
let churned = 0;
let churnErrors = 0;
const churnLoop = (async () => {
  let i = 0;
  // Clients are started on a schedule (timers are coarse: several may be due at once), not one per sleep.
  let due = Date.now();
  while (Date.now() - started < duration) {
    if (!churning) {
      await sleep(50);
      due = Date.now();
      continue;
    }
    for (; due <= Date.now(); due += 1000 / churnPerSecond) {
      const n = i++;
      connect(nodes[n % nodes.length], { transports: n % 5 === 0 ? ["polling", "websocket"] : ["websocket"] })
        .then(async (s) => {
          await s.timeout(5000).emitWithAck("join", `churn:${n % 50}`).catch(() => {});
          s.disconnect();
          churned++;
        })
        .catch(() => churnErrors++);
    }
    await sleep(Math.max(1, due - Date.now()));
  }
})();

// --- Schedules.
let redisRestarts = 0;
let reloads = 0;
const redisTimer = setInterval(() => {
  restartedAt.push(Math.round(elapsed() * 1000));
  restartRedis().then(() => redisRestarts++);
}, redisEvery);
const reloadTimer = setInterval(() => {
  const tmp = `${pluginTarget}.tmp`;
  fs.copyFileSync(plugin, tmp);
  fs.renameSync(tmp, pluginTarget);
  reloads++;
}, reloadEvery);

// --- Sampling.
const samples = [];
async function sample(phase) {
  const row = { t: Number(elapsed().toFixed(1)), phase, nodes: [] };
  for (const [k, pid] of pids.entries()) {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const rssMiB = Number(/VmRSS:\s+(\d+)/.exec(status)[1]) / 1024;
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    const metrics = await fetch(`${nodes[k]}/metrics`).then((r) => r.text()).catch(() => "");
    const tasks = Number(/^ioplex_runtime_alive_tasks (\d+)/m.exec(metrics)?.[1] ?? NaN);
    row.nodes.push({ rss_mib: Number(rssMiB.toFixed(2)), fds, tasks });
  }
  samples.push(row);
  fs.appendFileSync(path.join(out, "soak.jsonl"), `${JSON.stringify(row)}\n`);
  return row;
}
/** A sample with churn paused and in-flight clients gone: what the node holds for its stable load. */
async function quiescent(phase) {
  churning = false;
  await sleep(3000);
  const row = await sample(phase);
  churning = true;
  return row;
}

fs.writeFileSync(path.join(out, "soak.jsonl"), "");
const sampler = setInterval(() => sample("run"), sampleEvery);
await sleep(warmup);
const warm = await quiescent("warm");
console.log(`warm-up done at ${elapsed().toFixed(0)} s: ${JSON.stringify(warm.nodes)}`);
while (Date.now() - started < duration) {
  await sleep(1000);
  if (Math.round(elapsed()) % 60 === 0) console.error(`${elapsed().toFixed(0)} s: churned ${churned}, acked ${acked.length}`);
}
clearInterval(sampler);
clearInterval(redisTimer);
clearInterval(reloadTimer);
publishing = false;
await publishLoop;
await churnLoop;
// Redis up, held broadcasts flushed, late deliveries in.
await sleep(5000);
const end = await quiescent("end");

// --- Verdict.
const lost = receivers.map((r) => acked.filter((n) => !r.got.has(n)).length);
const dropped = receivers.filter((r) => r.dropped()).length;
const seconds = duration / 1000;
const growth = end.nodes.map((n, k) => ({
  rss: n.rss_mib / warm.nodes[k].rss_mib - 1,
  fds: n.fds / warm.nodes[k].fds - 1,
  tasks: n.tasks - warm.nodes[k].tasks,
}));
const summary = {
  seconds,
  churn_per_s: Number((churned / seconds).toFixed(1)),
  churn_errors: churnErrors,
  publishes_acked: acked.length,
  publish_failures: publishFailures,
  lost_per_receiver: lost,
  // When the lost publishes were acknowledged, and when Redis was restarted (ms since the start).
  lost_acked_at_ms: [...new Set(receivers.flatMap((r) => acked.filter((n) => !r.got.has(n))))].slice(0, 50).map((n) => ackedAt.get(n)),
  redis_restarted_at_ms: restartedAt,
  receivers_dropped: dropped,
  redis_restarts: redisRestarts,
  plugin_reloads: reloads,
  warm: warm.nodes,
  end: end.nodes,
  growth,
};
fs.writeFileSync(path.join(out, "soak-summary.json"), JSON.stringify(summary, null, 2));
writeChart(path.join(out, "soak.svg"));
console.log(JSON.stringify(summary));
for (const s of [publisher, ...receivers.map((r) => r.s)]) s.disconnect();
redis?.kill("SIGKILL");

// Redis pub/sub keeps nothing: a publish Redis took just before it was killed can die with it. Losses
// acknowledged within a second after a kill are reported as such; any other loss fails the run.
const lostSeqs = [...new Set(receivers.flatMap((r) => acked.filter((n) => !r.got.has(n))))];
const inCrashWindow = (n) => restartedAt.some((t) => ackedAt.get(n) >= t && ackedAt.get(n) < t + 1000);
const lostOutside = lostSeqs.filter((n) => !inCrashWindow(n));
summary.lost_in_crash_window = lostSeqs.length - lostOutside.length;
summary.lost_outside_crash_window = lostOutside.length;
fs.writeFileSync(path.join(out, "soak-summary.json"), JSON.stringify(summary, null, 2));
console.log(JSON.stringify({ lost_in_crash_window: summary.lost_in_crash_window, lost_outside_crash_window: lostOutside.length }));
const problems = [];
if (lostOutside.length > 0) problems.push(`acked publishes lost outside a Redis crash: ${lostOutside.length}`);
if (dropped > 0) problems.push(`${dropped} stable receivers were disconnected`);
for (const [k, g] of growth.entries()) {
  if (g.rss > tolerance) problems.push(`node ${k}: RSS grew ${(g.rss * 100).toFixed(1)}%`);
  if (g.fds > tolerance) problems.push(`node ${k}: open files grew ${(g.fds * 100).toFixed(1)}%`);
}
if (problems.length) {
  console.error(`soak FAILED: ${problems.join("; ")}`);
  process.exit(1);
}
console.log(
  `soak ok: ${churned} churned clients (${summary.churn_per_s}/s), ${acked.length} acked publishes, ` +
    `${summary.lost_in_crash_window} lost in the second after a Redis kill and none otherwise; ` +
    `RSS and open files within ${tolerance * 100}% of the warm-up level`,
);
process.exit(0);

/** RSS (MiB), open files and tasks per node over time, one panel each, as a small standalone SVG. */
function writeChart(file) {
  const series = [
    ["RSS (MiB)", (n) => n.rss_mib],
    ["open files", (n) => n.fds],
    ["tasks", (n) => n.tasks],
  ];
  const [w, h, pad] = [720, 160, 40];
  const colours = ["#1f77b4", "#d62728", "#2ca02c"];
  const tMax = Math.max(...samples.map((s) => s.t), 1);
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${(h + 20) * series.length}" font-family="sans-serif" font-size="11">`;
  series.forEach(([title, read], p) => {
    const y0 = p * (h + 20);
    const values = samples.flatMap((s) => s.nodes.map(read)).filter(Number.isFinite);
    const [lo, hi] = [Math.min(...values, 0), Math.max(...values, 1)];
    const x = (t) => pad + (t / tMax) * (w - pad - 10);
    const y = (v) => y0 + h - 15 - ((v - lo) / (hi - lo || 1)) * (h - 30);
    svg += `<text x="${pad}" y="${y0 + 12}">${title} (${lo.toFixed(0)}–${hi.toFixed(0)}) over ${tMax.toFixed(0)} s</text>`;
    svg += `<line x1="${pad}" y1="${y0 + h - 15}" x2="${w - 10}" y2="${y0 + h - 15}" stroke="#999"/>`;
    pids.forEach((_, k) => {
      const points = samples.map((s) => `${x(s.t).toFixed(1)},${y(read(s.nodes[k])).toFixed(1)}`).join(" ");
      svg += `<polyline fill="none" stroke="${colours[k % colours.length]}" points="${points}"/>`;
    });
  });
  fs.writeFileSync(file, `${svg}</svg>\n`);
}
