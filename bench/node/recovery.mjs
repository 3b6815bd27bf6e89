// The recovery driver (see bench/recovery): N clients behind a TCP proxy whose connections are cut at
// random every few seconds, while a publisher that is never cut sends to their room at a steady rate;
// halfway through, one of the two nodes is SIGKILLed and the proxy sends reconnects to the other.
// Each setup (ioplex with recovery on, with it off, Node with @socket.io/redis-streams-adapter) runs on
// its own Redis. Clients whose socket was not recovered join the room again, as an app would.
// Prints one row per setup and writes them as JSON lines.
//
// Delivered: messages received by each client / messages acknowledged to the publisher × clients.
// Replay latency: for a message sent while its client was away, from the client's reconnection attempt
// to the message's arrival (handshake, restore and replay; the client's own back-off excluded).
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { io } from "socket.io-client";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const ioplexBin = args.ioplex;
const clients = Number(args.clients ?? 200);
const rate = Number(args.rate ?? 50);
const duration = Number(args.duration ?? 20) * 1000;
const dropEvery = Number(args["drop-every"] ?? 4) * 1000;
const crash = (args.crash ?? "yes") !== "no";
const setups = (args.setups ?? "ioplex-on ioplex-off node").split(/\s+/).filter(Boolean);
const out = args.out;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitPort(port, ms = 15000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => { s.destroy(); resolve(true); });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

const children = new Set();
function start(command, argv, env) {
  const child = spawn(command, argv, { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "inherit"] });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}
process.on("exit", () => { for (const c of children) c.kill("SIGKILL"); });

async function startServer(setup, redisUrl) {
  const port = await freePort();
  const env = { PORT: String(port), REDIS_URL: redisUrl, RUST_LOG: "warn" };
  const child = setup === "node"
    ? start("node", [new URL("./streams-server.mjs", import.meta.url).pathname], env)
    : start(ioplexBin, ["--host", "127.0.0.1"], { ...env, REDIS_ADAPTER: "streams", RECOVERY_WINDOW_MS: setup === "ioplex-on" ? "120000" : "0" });
  await waitPort(port);
  return { port, child };
}

/** Forwards each new connection to a live target in turn; `cutOne` drops a random open one. */
async function startProxy(targets) {
  const port = await freePort();
  const live = [...targets];
  const pairs = [];
  let next = 0;
  const server = net.createServer((down) => {
    const target = live[next++ % live.length];
    const up = net.connect(target, "127.0.0.1");
    const pair = { down, up };
    pairs.push(pair);
    const end = () => {
      const i = pairs.indexOf(pair);
      if (i >= 0) pairs.splice(i, 1);
      down.destroy();
      up.destroy();
    };
    for (const s of [down, up]) { s.on("error", end); s.on("close", end); }
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return {
    port,
    remove(target) { live.splice(live.indexOf(target), 1); },
    cutOne() {
      const pair = pairs[Math.floor(Math.random() * pairs.length)];
      pair?.down.destroy();
      pair?.up.destroy();
    },
    close() { server.close(); for (const p of [...pairs]) { p.down.destroy(); p.up.destroy(); } },
  };
}

const connect = (url, opts) =>
  new Promise((resolve, reject) => {
    const socket = io(url, { transports: ["websocket"], forceNew: true, ...opts });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function run(setup) {
  const redisPort = await freePort();
  const redis = start("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {});
  await waitPort(redisPort);
  const redisUrl = `redis://127.0.0.1:${redisPort}`;
  const nodes = [await startServer(setup, redisUrl), await startServer(setup, redisUrl)];
  const proxy = await startProxy(nodes.map((n) => n.port));
  const room = "bench";
  const receivers = [];
  for (let i = 0; i < clients; i++) {
    const state = { got: new Map(), attemptAt: 0, replay: [], e2e: [], reconnects: 0, recovered: 0 };
    const socket = await connect(`http://127.0.0.1:${proxy.port}`, {
      reconnection: true,
      reconnectionDelay: 200,
      reconnectionDelayMax: 1000,
    });
    await socket.timeout(5000).emitWithAck("join", room);
    socket.io.on("reconnect_attempt", () => { state.attemptAt = Date.now(); });
    socket.on("connect", () => {
      state.reconnects++;
      if (socket.recovered) state.recovered++;
      else socket.timeout(5000).emitWithAck("join", room).catch(() => {});
    });
    socket.on("m", (seq, sentAt) => {
      const now = Date.now();
      state.got.set(seq, (state.got.get(seq) ?? 0) + 1);
      state.e2e.push(now - sentAt);
      if (state.attemptAt > sentAt) state.replay.push(now - state.attemptAt);
    });
    receivers.push({ socket, state });
  }
  const publisher = await connect(`http://127.0.0.1:${nodes[0].port}`, { reconnection: false });
  await publisher.timeout(5000).emitWithAck("join", room);

  const acked = new Set();
  let seq = 0;
  const started = Date.now();
  const cutInterval = dropEvery / clients;
  let crashed = !crash;
  let crashSeq = null;
  const cutter = setInterval(() => proxy.cutOne(), Math.max(1, cutInterval));
  const publishing = [];
  while (Date.now() - started < duration) {
    const mine = seq++;
    publishing.push(
      publisher.timeout(5000).emitWithAck("publish", { room, event: "m", args: [mine, Date.now()] }).then((r) => r?.ok && acked.add(mine), () => {}),
    );
    if (!crashed && Date.now() - started > duration / 2) {
      crashed = true;
      crashSeq = seq;
      proxy.remove(nodes[1].port);
      nodes[1].child.kill("SIGKILL");
    }
    await sleep(1000 / rate);
  }
  clearInterval(cutter);
  await Promise.all(publishing);
  // Stragglers: every client back and caught up, or 10 s.
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline && receivers.some(({ socket, state }) => !socket.connected || [...acked].some((s) => !state.got.has(s)))) {
    await sleep(100);
  }
  let received = 0, duplicates = 0, reconnects = 0, recovered = 0;
  const replay = [], e2e = [];
  const lossDetail = [];
  for (const [i, { state }] of receivers.entries()) {
    const missing = [...acked].filter((s) => !state.got.has(s)).sort((a, b) => a - b);
    if (missing.length && lossDetail.length < 5) {
      lossDetail.push({ client: i, missing: missing.length, first: missing[0], last: missing.at(-1), reconnects: state.reconnects, recovered: state.recovered });
    }
    for (const s of acked) if (state.got.has(s)) received++;
    for (const count of state.got.values()) duplicates += count - 1;
    replay.push(...state.replay);
    e2e.push(...state.e2e);
    reconnects += state.reconnects;
    recovered += state.recovered;
  }
  // Appends the publisher's node could not make (delivered there only, so lost to the others).
  let appendsDropped = null;
  if (setup !== "node") {
    const metrics = await fetch(`http://127.0.0.1:${nodes[0].port}/metrics`).then((r) => r.text(), () => "");
    const line = metrics.split("\n").find((l) => l.startsWith("ioplex_redis_streams_dropped_total"));
    appendsDropped = line ? Number(line.split(" ").at(-1)) : null;
  }
  // What Redis holds for it: session keys (one per connected or recently dropped socket) and the stream.
  const redisCli = (...command) => execFileSync("redis-cli", ["-p", String(redisPort), ...command]).toString().trim();
  const sessionKeys = redisCli("--scan", "--pattern", "sio:session:*").split("\n").filter(Boolean);
  const sessionBytes = sessionKeys.slice(0, 50).map((k) => Number(redisCli("MEMORY", "USAGE", k)));
  const streamEntries = Number(redisCli("XLEN", "socket.io"));
  const streamBytes = Number(redisCli("MEMORY", "USAGE", "socket.io", "SAMPLES", "0"));
  replay.sort((a, b) => a - b);
  e2e.sort((a, b) => a - b);
  const expected = acked.size * clients;
  const row = {
    setup,
    clients,
    published: acked.size,
    delivered_pct: expected ? (100 * received) / expected : 0,
    lost: expected - received,
    duplicates,
    reconnects,
    recovered,
    replayed: replay.length,
    replay_p50_ms: quantile(replay, 0.5),
    replay_p99_ms: quantile(replay, 0.99),
    e2e_p99_ms: quantile(e2e, 0.99),
    node_crash: crash,
    crash_at_seq: crashSeq,
    loss_detail: lossDetail,
    appends_dropped: appendsDropped,
    session_keys: sessionKeys.length,
    session_key_bytes: sessionBytes.length ? Math.round(sessionBytes.reduce((a, b) => a + b, 0) / sessionBytes.length) : null,
    stream_entries: streamEntries,
    stream_bytes_per_entry: streamEntries ? Math.round(streamBytes / streamEntries) : null,
  };
  publisher.close();
  for (const { socket } of receivers) socket.close();
  proxy.close();
  for (const n of nodes) n.child.kill("SIGKILL");
  redis.kill("SIGKILL");
  await sleep(300);
  return row;
}

const rows = [];
for (const setup of setups) {
  const row = await run(setup);
  rows.push(row);
  if (out) fs.appendFileSync(out, JSON.stringify(row) + "\n");
}
const fmt = (v, d = 1) => (v === null ? "-" : typeof v === "number" ? v.toFixed(d) : String(v));
console.log(`\n${clients} clients, each cut every ~${dropEvery / 1000} s, ${rate} msg/s for ${duration / 1000} s${crash ? ", one of two nodes SIGKILLed halfway" : ""}`);
console.log("setup        delivered%  lost  dup  reconnects  recovered  replay p50/p99 ms  e2e p99 ms  session keys, bytes each  stream entries, bytes each");
for (const r of rows) {
  console.log(
    `${r.setup.padEnd(12)} ${fmt(r.delivered_pct, 2).padStart(9)} ${String(r.lost).padStart(5)} ${String(r.duplicates).padStart(4)} ${String(r.reconnects).padStart(11)} ${String(r.recovered).padStart(10)}  ${`${fmt(r.replay_p50_ms, 0)}/${fmt(r.replay_p99_ms, 0)}`.padStart(17)} ${fmt(r.e2e_p99_ms, 0).padStart(11)}  ${`${r.session_keys}, ${r.session_key_bytes ?? "-"}`.padStart(24)}  ${`${r.stream_entries}, ${r.stream_bytes_per_entry ?? "-"}`.padStart(26)}`,
  );
}
process.exit(0);
