// The hostile-neighbour driver (see bench/hostile): tenant b's join and publish latency measured alone,
// then while tenants a and c drive their plugins as hard as the sandbox allows (a start function that
// spins half a second on every instantiation, 70 MiB of memory churn per call, hooks that loop to their
// deadline). Prints both side by side and appends JSON lines to --json.
import { spawn } from "node:child_process";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const url = args.url;
const seconds = Number(args.duration ?? 15);
const clients = Number(args.clients ?? 40);
const rate = Number(args.rate ?? 200); // joins/s and publishes/s of tenant b, each
const attackers = Number(args.attackers ?? 8);
const json = args.json;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const connect = (tenant) =>
  new Promise((resolve, reject) => {
    const s = io(`${url}/?tenant=${tenant}`, { transports: ["websocket"], reconnection: false, forceNew: true });
    s.once("connect", () => resolve(s));
    s.once("connect_error", reject);
  });
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;

if (args.role === "attack") await attack();

/**
 * The attackers, in a process of their own so their load does not slow the measuring client: tenant a's
 * clients join and leave a room without end (every join starts a new instance of a's plugin: half a
 * second of start-up, then 70 MiB of memory), tenant c's loop to their hook deadline or churn memory.
 */
async function attack() {
  const sockets = [];
  for (let i = 0; i < attackers; i++) {
    const [tenant, room] = [["a", "any"], ["c", "chaos:loop"], ["c", "chaos:churn"]][i % 3];
    sockets.push([await connect(tenant), room]);
  }
  const until = Date.now() + seconds * 1000;
  await Promise.all(
    sockets.map(async ([s, room]) => {
      // Ten joins a second each: enough to make the plugins start, loop and churn without pause; the
      // tenants' event rate limit would refuse more anyway.
      while (Date.now() < until) {
        const next = Date.now() + 100;
        await s.timeout(5000).emitWithAck("join", room).catch(() => {});
        await s.timeout(5000).emitWithAck("leave", room).catch(() => {});
        await sleep(next - Date.now());
      }
      s.disconnect();
    }),
  );
  process.exit(0);
}

// Tenant b: pairs of clients sharing a room; one publishes, the other receives.
const pairs = [];
for (let i = 0; i < clients / 2; i++) {
  const [from, to] = [await connect("b"), await connect("b")];
  const room = `pair:${i}`;
  await from.timeout(5000).emitWithAck("join", room);
  await to.timeout(5000).emitWithAck("join", room);
  pairs.push({ from, to, room });
}

/** Tenant b's load for `ms`: joins (join + leave of a scratch room) and publishes, at `rate` each. */
async function measure(ms) {
  const joins = [];
  const publishes = [];
  let failures = 0;
  const pending = new Map();
  for (const { to } of pairs) to.on("tick", (id) => {
    const started = pending.get(id);
    if (started !== undefined) {
      publishes.push(performance.now() - started);
      pending.delete(id);
    }
  });
  const until = Date.now() + ms;
  let n = 0;
  const inflight = [];
  while (Date.now() < until) {
    const { from, room } = pairs[n % pairs.length];
    const id = `${n}`;
    const joinStarted = performance.now();
    inflight.push(
      from.timeout(5000).emitWithAck("join", `scratch:${n % 20}`).then(
        async (a) => {
          if (!a.ok) failures++;
          joins.push(performance.now() - joinStarted);
          await from.timeout(5000).emitWithAck("leave", `scratch:${n % 20}`);
        },
        () => failures++,
      ),
    );
    pending.set(id, performance.now());
    inflight.push(from.timeout(5000).emitWithAck("publish", { room, event: "tick", args: [id] }).catch(() => failures++));
    n++;
    await sleep(1000 / rate);
  }
  await Promise.allSettled(inflight);
  await sleep(500);
  for (const { to } of pairs) to.off("tick");
  const lost = pending.size;
  joins.sort((x, y) => x - y);
  publishes.sort((x, y) => x - y);
  return {
    joins: joins.length,
    join_p50_ms: percentile(joins, 0.5),
    join_p99_ms: percentile(joins, 0.99),
    publishes: publishes.length,
    publish_p50_ms: percentile(publishes, 0.5),
    publish_p99_ms: percentile(publishes, 0.99),
    failures,
    lost,
  };
}

const metric = async (name) => {
  const text = await fetch(`${url}/metrics`).then((r) => r.text());
  return text.split("\n").filter((l) => l.startsWith(name)).map((l) => `${l.slice(name.length)}`.trim());
};

await measure(2000); // warm-up
const quiet = await measure(seconds * 1000);

const attackArgs = ["--role", "attack", "--url", url, "--attackers", String(attackers), "--duration", String(seconds + 2)];
const attackersDone = new Promise((resolve) =>
  spawn(process.execPath, [fileURLToPath(import.meta.url), ...attackArgs], { stdio: "inherit" }).on("exit", resolve),
);
await sleep(1000);
const hostile = await measure(seconds * 1000);
await attackersDone;

const failures = [
  ...(await metric('ioplex_plugin_failures_total{tenant="a"')),
  ...(await metric('ioplex_plugin_failures_total{tenant="c"')),
].filter((l) => !l.endsWith(" 0"));
const row = (phase, r) => ({ phase, ...r });
const rows = [row("b alone", quiet), row("b beside hostile a", hostile)];
if (json) for (const r of rows) fs.appendFileSync(json, `${JSON.stringify(r)}\n`);
const f = (x) => x.toFixed(2);
console.log("| tenant b | joins | join p50 / p99 | publishes | publish p50 / p99 | failed | lost |\n|---|---|---|---|---|---|---|");
for (const r of rows) {
  console.log(`| ${r.phase} | ${r.joins} | ${f(r.join_p50_ms)} / ${f(r.join_p99_ms)} ms | ${r.publishes} | ${f(r.publish_p50_ms)} / ${f(r.publish_p99_ms)} ms | ${r.failures} | ${r.lost} |`);
}
const joinRatio = hostile.join_p99_ms / quiet.join_p99_ms;
const publishRatio = hostile.publish_p99_ms / quiet.publish_p99_ms;
console.log(`p99 beside hostile / alone: join ${f(joinRatio)}x, publish ${f(publishRatio)}x (target: at most 1.5x)`);
console.log(`hostile tenants' plugin failures: ${failures.join(", ")}`);
for (const { from, to } of pairs) {
  from.disconnect();
  to.disconnect();
}
process.exit(0);
