//! `fleet`: the seed's load shape on a fleet of nodes, from generator worker processes.
//!
//! Client `i` connects to node `i % nodes` and joins two rooms: its company (`c<i / company_size>`,
//! members on every node) and its conversation (`v<i / 2>`, two members on neighbouring nodes). The
//! coordinator then runs phases, each a schedule of publishes that every worker follows for the
//! publishers it owns:
//!
//! - `burst`: the seed's "1000 messages to 100 rooms", round-robin over company rooms, at each of
//!   `--burst-rates`;
//! - `chat`: each step a steady rate of conversation messages plus presence updates to company rooms.
//!
//! Messages carry their send time (wall clock, shared by every process of the machine) and the
//! publisher's node, so receivers split latency into same-node and cross-node deliveries.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::{Cli, Handshake, Ws, connect_client, expect_prefix, process_usage};

/// Spreads consecutive message numbers over conversations and members far apart, so that every
/// worker publishes its share instead of one worker the whole of a step.
const SPREAD: u64 = 7919;

/// What a fleet run does.
#[derive(clap::Args)]
pub struct FleetArgs {
    /// Ports of the nodes on 127.0.0.1 (comma-separated); client i connects to node i % nodes.
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<u16>,
    /// Pids of the nodes, in the order of --ports, for their memory and CPU.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Port and pid of the fleet's Redis, for its CPU and publish rate.
    #[arg(long)]
    redis_port: Option<u16>,
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Clients in all.
    #[arg(long, default_value_t = 100_000)]
    clients: usize,
    /// Members of a company room.
    #[arg(long, default_value_t = 1000)]
    company_size: usize,
    /// Generator processes (one may hold ~20,000 files here); default: one per 15,000 clients.
    #[arg(long)]
    processes: Option<usize>,
    /// Handshakes in flight, over all processes.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Messages of the burst phase.
    #[arg(long, default_value_t = 1000)]
    burst_messages: u64,
    /// Company rooms the burst goes to.
    #[arg(long, default_value_t = 100)]
    burst_rooms: usize,
    /// Burst paces to run, in messages per second (comma-separated; the seed's is 1000 in 3 s).
    #[arg(long, value_delimiter = ',', default_value = "333,50")]
    burst_rates: Vec<f64>,
    /// Chat steps, `conversation messages/s:presence updates/s`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "250:2,500:5,1000:10")]
    chat_rates: Vec<String>,
    /// Seconds of each chat step.
    #[arg(long, default_value_t = 5)]
    chat_seconds: u64,
}

/// One generator process's share (started by the coordinator).
#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<u16>,
    #[arg(long)]
    clients: usize,
    #[arg(long)]
    company_size: usize,
    /// This worker's clients: `first..first + count`.
    #[arg(long)]
    first: usize,
    #[arg(long)]
    count: usize,
    #[arg(long)]
    concurrency: usize,
}

/// Who is where: the rooms and node of every client, the same in every process.
#[derive(Clone, Copy)]
struct Layout {
    nodes: usize,
    clients: usize,
    company_size: usize,
}

impl Layout {
    fn node_of(&self, client: usize) -> usize {
        client % self.nodes
    }
    fn companies(&self) -> usize {
        self.clients.div_ceil(self.company_size)
    }
    fn company_members(&self, company: usize) -> usize {
        self.company_size
            .min(self.clients - company * self.company_size)
    }
    fn conversations(&self) -> usize {
        self.clients / 2
    }
    /// The room and publisher of message `n` of a stream.
    fn message(&self, kind: StreamKind, rooms: usize, n: u64) -> (String, usize) {
        match kind {
            StreamKind::Company => {
                let company = (n % rooms as u64) as usize;
                let k = ((n / rooms as u64).wrapping_mul(SPREAD)) as usize
                    % self.company_members(company);
                (format!("c{company}"), company * self.company_size + k)
            }
            StreamKind::Conversation => {
                let conversation = (n.wrapping_mul(SPREAD) % self.conversations() as u64) as usize;
                let k = ((n / self.conversations() as u64) % 2) as usize;
                (format!("v{conversation}"), conversation * 2 + k)
            }
        }
    }
    /// Deliveries one message of a stream makes (the publisher excluded).
    fn recipients(&self, kind: StreamKind, rooms: usize, n: u64) -> u64 {
        match kind {
            StreamKind::Company => self.company_members((n % rooms as u64) as usize) as u64 - 1,
            StreamKind::Conversation => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StreamKind {
    Company,
    Conversation,
}

impl StreamKind {
    /// The event a message of this kind is emitted as, so receivers tell the kinds apart.
    fn event(self) -> &'static str {
        match self {
            StreamKind::Company => "p",
            StreamKind::Conversation => "d",
        }
    }
}

/// A stream of publishes: `count` messages (or as many as `seconds` allow) at `rate`.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Stream {
    kind: StreamKind,
    rate: f64,
    rooms: usize,
    count: Option<u64>,
}

impl Stream {
    /// Messages this stream sends in a phase of `seconds`: its count, or what its rate gives.
    fn messages(&self, seconds: f64) -> u64 {
        let by_time = (self.rate * seconds).floor() as u64;
        self.count.unwrap_or(by_time)
    }
}

/// A phase, as sent to every worker.
#[derive(Serialize, Deserialize)]
struct Run {
    /// When message 0 of every stream goes out (µs since the Unix epoch).
    start_us: u64,
    seconds: f64,
    streams: Vec<Stream>,
}

/// What a worker received since the last reset.
#[derive(Serialize, Deserialize, Default)]
struct Report {
    received: u64,
    /// Connections that ended (closed by the server, or failed) since the worker started.
    closed: u64,
    /// `[latency µs, count]` pairs of each latency histogram, in the order of [`Latency`].
    latency: Vec<Vec<(u64, u64)>>,
    last_us: u64,
}

/// The latency histograms a worker keeps: company rooms from the receiver's node and from another,
/// and conversations (whose two members are always on different nodes).
#[derive(Clone, Copy)]
enum Latency {
    CompanySameNode = 0,
    CompanyCrossNode = 1,
    Conversation = 2,
}

struct Stats {
    received: u64,
    closed: u64,
    latency: [Histogram<u64>; 3],
    last_us: u64,
}

impl Stats {
    fn new() -> anyhow::Result<Self> {
        let h = || Histogram::new_with_bounds(1, 600_000_000, 3);
        Ok(Self {
            received: 0,
            closed: 0,
            latency: [h()?, h()?, h()?],
            last_us: 0,
        })
    }
    fn take(&mut self) -> Report {
        let report = Report {
            received: self.received,
            closed: self.closed,
            latency: self
                .latency
                .iter()
                .map(|h| {
                    h.iter_recorded()
                        .map(|v| (v.value_iterated_to(), v.count_at_value()))
                        .collect()
                })
                .collect(),
            last_us: self.last_us,
        };
        self.received = 0;
        self.latency.iter_mut().for_each(Histogram::reset);
        self.last_us = 0;
        report
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The kind, send time and publisher's node of a delivered `42["p"|"d",<µs>,<node>...`.
fn stamp(frame: &str) -> Option<(StreamKind, u64, usize)> {
    let rest = frame.strip_prefix("42[\"")?;
    let kind = match rest.as_bytes().first()? {
        b'p' => StreamKind::Company,
        b'd' => StreamKind::Conversation,
        _ => return None,
    };
    let rest = rest.get(1..)?.strip_prefix("\",")?;
    let (t, rest) = rest.split_once(',')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    Some((kind, t.parse().ok()?, rest[..digits].parse().ok()?))
}

type Sink = Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>;

/// Connects client `i` and joins its company and conversation.
async fn join_client(
    layout: Layout,
    ports: &[u16],
    i: usize,
    hs: &Handshake,
) -> anyhow::Result<Ws> {
    let mut ws = connect_client(ports[layout.node_of(i)], i, hs).await?;
    for (ack, room) in [
        (0, format!("c{}", i / layout.company_size)),
        (1, format!("v{}", i / 2)),
    ] {
        ws.send(Message::text(format!("42{ack}[\"join\",\"{room}\"]")))
            .await?;
        let reply = expect_prefix(&mut ws, &format!("43{ack}")).await?;
        if !reply.contains("\"ok\":true") {
            bail!("join {room} refused: {reply}");
        }
    }
    Ok(ws)
}

/// A worker process: connects its clients, then follows the coordinator's commands on stdin
/// (`run <json>`, `count`, `report`), answering each with one line on stdout.
pub async fn worker(cli: &Cli, args: &WorkerArgs) -> anyhow::Result<()> {
    let layout = Layout {
        nodes: args.ports.len(),
        clients: args.clients,
        company_size: args.company_size,
    };
    let hs = Arc::new(cli.handshake());
    let ports = Arc::new(args.ports.clone());
    let stats = Arc::new(std::sync::Mutex::new(Stats::new()?));
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(args.first as u64));
    let end = args.first + args.count;
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, hs, ports, failed, stats) = (
            next.clone(),
            hs.clone(),
            ports.clone(),
            failed.clone(),
            stats.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut opened = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= end {
                    return opened;
                }
                // A refused handshake is retried once: nodes shed load while thousands arrive.
                let mut result = join_client(layout, &ports, i, &hs).await;
                if result.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    result = join_client(layout, &ports, i, &hs).await;
                }
                match result {
                    // Read (and answer pings) from now on: connecting 20,000 clients takes longer
                    // than the server waits for a pong.
                    Ok(ws) => opened.push((i, receive(ws, stats.clone(), layout.node_of(i)))),
                    Err(err) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("client {i}: {err:#}");
                        }
                    }
                }
            }
        }));
    }
    let mut sinks: Vec<Option<Sink>> = (0..args.count).map(|_| None).collect();
    for task in tasks {
        for (i, sink) in task.await? {
            sinks[i - args.first] = Some(sink);
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout();
    writeln!(
        out,
        "{}",
        serde_json::json!({ "connect_s": connect_s, "failed": failed.load(Ordering::Relaxed) })
    )?;
    out.flush()?;

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("run", json) => {
                let run: Run = serde_json::from_str(json)?;
                let sent = publish(layout, args.first, &sinks, &run).await;
                serde_json::json!({ "sent": sent })
            }
            ("count", _) => {
                let received = stats.lock().map(|s| s.received).unwrap_or(0);
                serde_json::json!({ "received": received })
            }
            ("report", _) => {
                let report = stats
                    .lock()
                    .map_err(|_| anyhow::anyhow!("stats lock poisoned"))?
                    .take();
                serde_json::to_value(report)?
            }
            (other, _) => bail!("unknown command {other:?}"),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// Starts reading a client's deliveries into `stats` (answering pings on the way); returns its sink.
fn receive(ws: Ws, stats: Arc<std::sync::Mutex<Stats>>, node: usize) -> Sink {
    let (sink, mut stream) = ws.split();
    let sink: Sink = Arc::new(tokio::sync::Mutex::new(sink));
    let pong = sink.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            if text.as_str() == "2" {
                if pong.lock().await.send(Message::text("3")).await.is_err() {
                    break;
                }
                continue;
            }
            let Some((kind, sent, from)) = stamp(text.as_str()) else {
                continue;
            };
            let now = now_us();
            let which = match kind {
                StreamKind::Conversation => Latency::Conversation,
                StreamKind::Company if from == node => Latency::CompanySameNode,
                StreamKind::Company => Latency::CompanyCrossNode,
            };
            if let Ok(mut s) = stats.lock() {
                let _ = s.latency[which as usize].record(now.saturating_sub(sent).max(1));
                s.received += 1;
                s.last_us = s.last_us.max(now);
            }
        }
        if let Ok(mut s) = stats.lock() {
            s.closed += 1;
        }
    });
    sink
}

/// Sends this worker's share of a phase's messages, each at its time; returns how many it sent.
async fn publish(layout: Layout, first: usize, sinks: &[Option<Sink>], run: &Run) -> u64 {
    // Every (time, stream, n) of the phase in time order; a worker acts on the ones it publishes.
    let mut next: Vec<u64> = vec![0; run.streams.len()];
    let totals: Vec<u64> = run
        .streams
        .iter()
        .map(|s| s.messages(run.seconds))
        .collect();
    let mut sent = 0;
    loop {
        let due = run
            .streams
            .iter()
            .enumerate()
            .filter(|(k, _)| next[*k] < totals[*k])
            .map(|(k, s)| (k, run.start_us + (next[k] as f64 * 1e6 / s.rate) as u64))
            .min_by_key(|(_, at)| *at);
        let Some((k, at)) = due else { return sent };
        let n = next[k];
        next[k] += 1;
        let stream = run.streams[k];
        let (room, publisher) = layout.message(stream.kind, stream.rooms, n);
        let Some(Some(sink)) = publisher.checked_sub(first).and_then(|i| sinks.get(i)) else {
            continue;
        };
        let now = now_us();
        if at > now {
            tokio::time::sleep(Duration::from_micros(at - now)).await;
        }
        let frame = format!(
            "42[\"publish\",{{\"room\":\"{room}\",\"event\":\"{}\",\"args\":[{},{}]}}]",
            stream.kind.event(),
            now_us(),
            layout.node_of(publisher)
        );
        if sink.lock().await.send(Message::text(frame)).await.is_ok() {
            sent += 1;
        }
    }
}

/// A worker as the coordinator sees it.
struct WorkerProcess {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl WorkerProcess {
    async fn ask(&mut self, command: &str) -> anyhow::Result<serde_json::Value> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.read().await
    }
    async fn read(&mut self) -> anyhow::Result<serde_json::Value> {
        let line = self
            .lines
            .next_line()
            .await?
            .context("a generator process exited")?;
        Ok(serde_json::from_str(&line)?)
    }
}

async fn ask_all(
    workers: &mut [WorkerProcess],
    command: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    futures_util::future::try_join_all(workers.iter_mut().map(|w| w.ask(command))).await
}

/// Redis's CPU time and the messages published into it (PUBLISH, SPUBLISH and XADD calls).
async fn redis_usage(port: Option<u16>, pid: Option<u32>) -> (Option<Duration>, Option<u64>) {
    let cpu = pid.and_then(process_usage).map(|(_, cpu)| cpu);
    let Some(port) = port else { return (cpu, None) };
    let info = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"INFO commandstats\r\n").await?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            // A bulk reply: `$<len>\r\n<len bytes>\r\n`.
            let text = String::from_utf8_lossy(&reply);
            if let Some((head, body)) = text.split_once("\r\n")
                && let Ok(len) = head.trim_start_matches('$').parse::<usize>()
                && body.len() >= len
            {
                break;
            }
        }
        anyhow::Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    let published = tokio::time::timeout(Duration::from_secs(2), info)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|text| {
            ["cmdstat_publish:", "cmdstat_spublish:", "cmdstat_xadd:"]
                .iter()
                .filter_map(|name| {
                    let line = text.lines().find(|l| l.starts_with(name))?;
                    let calls = line.split("calls=").nth(1)?.split(',').next()?;
                    calls.parse::<u64>().ok()
                })
                .sum()
        });
    (cpu, published)
}

fn percentile_ms(pairs: &[&Vec<(u64, u64)>], q: f64) -> Option<f64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok()?;
    for (v, c) in pairs.iter().copied().flatten() {
        let _ = h.record_n(*v, *c);
    }
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

/// The fleet's CPU time (all nodes).
fn fleet_cpu(pids: &[u32]) -> Duration {
    pids.iter()
        .filter_map(|p| process_usage(*p))
        .map(|(_, cpu)| cpu)
        .sum()
}

/// Runs one phase on every worker; waits for its deliveries; returns its result row.
async fn phase(
    cli: &Cli,
    args: &FleetArgs,
    layout: Layout,
    workers: &mut [WorkerProcess],
    name: &str,
    seconds: f64,
    streams: Vec<Stream>,
) -> anyhow::Result<serde_json::Value> {
    let published: u64 = streams.iter().map(|s| s.messages(seconds)).sum();
    let expected: u64 = streams
        .iter()
        .map(|s| {
            (0..s.messages(seconds))
                .map(|n| layout.recipients(s.kind, s.rooms, n))
                .sum::<u64>()
        })
        .sum();
    ask_all(workers, "report").await?;
    let start_us = now_us() + 300_000;
    let run = serde_json::to_string(&Run {
        start_us,
        seconds,
        streams,
    })?;
    let (redis_cpu0, redis_pub0) = redis_usage(args.redis_port, args.redis_pid).await;
    let cpu0 = fleet_cpu(&args.server_pids);
    let wall = Instant::now();
    let sent: u64 = ask_all(workers, &format!("run {run}"))
        .await?
        .iter()
        .filter_map(|v| v["sent"].as_u64())
        .sum();
    // Wait for the deliveries: all of them, or until none arrive for 3 s.
    let (mut received, mut last_change) = (0, Instant::now());
    while received < expected && last_change.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now: u64 = ask_all(workers, "count")
            .await?
            .iter()
            .filter_map(|v| v["received"].as_u64())
            .sum();
        if now != received {
            (received, last_change) = (now, Instant::now());
        }
    }
    let elapsed = wall.elapsed().as_secs_f64() - 0.3;
    let (redis_cpu1, redis_pub1) = redis_usage(args.redis_port, args.redis_pid).await;
    let cpu1 = fleet_cpu(&args.server_pids);
    let reports: Vec<Report> = ask_all(workers, "report")
        .await?
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()?;
    let delivered: u64 = reports.iter().map(|r| r.received).sum();
    let closed: u64 = reports.iter().map(|r| r.closed).sum();
    let last_us = reports.iter().map(|r| r.last_us).max().unwrap_or(start_us);
    let completion = last_us.saturating_sub(start_us) as f64 / 1e6;
    let latency = |which: Latency, q: f64| {
        let pairs: Vec<_> = reports
            .iter()
            .filter_map(|r| r.latency.get(which as usize))
            .collect();
        percentile_ms(&pairs, q)
    };
    let busy = completion.max(seconds).max(1e-3);
    let row = serde_json::json!({
        "scenario": "fleet",
        "phase": name,
        "label": cli.label,
        "nodes": layout.nodes,
        "clients": layout.clients,
        "published": published,
        "sent": sent,
        "expected_deliveries": expected,
        "delivered": delivered,
        "connections_closed_so_far": closed,
        "seconds_to_last_delivery": completion,
        "deliveries_per_s": delivered as f64 / busy,
        "company_same_node_p50_ms": latency(Latency::CompanySameNode, 0.5),
        "company_same_node_p99_ms": latency(Latency::CompanySameNode, 0.99),
        "company_cross_node_p50_ms": latency(Latency::CompanyCrossNode, 0.5),
        "company_cross_node_p99_ms": latency(Latency::CompanyCrossNode, 0.99),
        "conversation_p50_ms": latency(Latency::Conversation, 0.5),
        "conversation_p99_ms": latency(Latency::Conversation, 0.99),
        "fleet_cpu_cores": (cpu1 - cpu0).as_secs_f64() / elapsed,
        "redis_cpu_pct": redis_cpu0.zip(redis_cpu1).map(|(a, b)| (b - a).as_secs_f64() / elapsed * 100.0),
        "redis_publishes_per_s": redis_pub0.zip(redis_pub1).map(|(a, b)| (b - a) as f64 / elapsed),
    });
    cli.record(row.clone())?;
    Ok(row)
}

fn fmt_ms(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_owned(), |x| format!("{x:.1}"))
}

/// The coordinator: starts the workers, measures the connect phase and memory, runs the burst and
/// chat phases, and prints a table.
pub async fn run(cli: &Cli, args: &FleetArgs) -> anyhow::Result<()> {
    let layout = Layout {
        nodes: args.ports.len(),
        clients: args.clients,
        company_size: args.company_size,
    };
    anyhow::ensure!(layout.nodes >= 2, "a fleet needs two nodes or more");
    anyhow::ensure!(
        args.clients >= 2 * args.company_size.min(args.clients),
        "too few clients"
    );
    let rss = |pid: &u32| process_usage(*pid).map_or(0, |(rss, _)| rss);
    let rss_before: Vec<u64> = args.server_pids.iter().map(rss).collect();

    let processes = args
        .processes
        .unwrap_or_else(|| args.clients.div_ceil(15_000))
        .max(1);
    let per = args.clients.div_ceil(processes);
    let exe = std::env::current_exe()?;
    let ports = args
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let started = Instant::now();
    let mut workers = Vec::new();
    for p in 0..processes {
        let first = p * per;
        let count = per.min(args.clients.saturating_sub(first));
        if count == 0 {
            break;
        }
        let mut cmd = tokio::process::Command::new(&exe);
        if let Some(t) = &cli.tenant {
            cmd.arg("--tenant").arg(t);
        }
        let mut child = cmd
            .args(["fleet-worker", "--ports", &ports])
            .args(["--clients", &args.clients.to_string()])
            .args(["--company-size", &args.company_size.to_string()])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args([
                "--concurrency",
                &(args.concurrency / processes).max(1).to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a generator process")?;
        let stdin = child.stdin.take().context("no worker stdin")?;
        let stdout = child.stdout.take().context("no worker stdout")?;
        workers.push(WorkerProcess {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        });
    }
    let mut failed = 0;
    for (done, w) in workers.iter_mut().enumerate() {
        let ready = w.read().await?;
        failed += ready["failed"].as_u64().unwrap_or(0);
        eprintln!("generator processes ready: {}/{}", done + 1, processes);
    }
    let connect_s = started.elapsed().as_secs_f64();
    // Let allocators settle before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_node: Vec<usize> = (0..layout.nodes)
        .map(|n| (0..args.clients).filter(|i| i % layout.nodes == n).count())
        .collect();
    let rss_after: Vec<u64> = args.server_pids.iter().map(rss).collect();
    let kib_per_conn: Vec<f64> = rss_after
        .iter()
        .zip(&rss_before)
        .zip(&per_node)
        .map(|((a, b), n)| a.saturating_sub(*b) as f64 / 1024.0 / *n as f64)
        .collect();
    let connect = serde_json::json!({
        "scenario": "fleet",
        "phase": "connect",
        "label": cli.label,
        "nodes": layout.nodes,
        "clients": args.clients,
        "connected": args.clients as u64 - failed,
        "generator_processes": workers.len(),
        "seconds": connect_s,
        "connections_per_s": (args.clients as u64 - failed) as f64 / connect_s,
        "node_rss_mib": rss_after.iter().map(|r| *r as f64 / 1048576.0).collect::<Vec<_>>(),
        "rss_per_connection_kib": kib_per_conn,
    });
    cli.record(connect.clone())?;
    println!(
        "{}: {} of {} clients connected in {connect_s:.1} s ({:.0}/s); RSS per connection by node: {}",
        cli.label,
        connect["connected"],
        args.clients,
        connect["connections_per_s"].as_f64().unwrap_or(0.0),
        kib_per_conn
            .iter()
            .map(|k| format!("{k:.2} KiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut rows = Vec::new();
    for &rate in &args.burst_rates {
        let burst = Stream {
            kind: StreamKind::Company,
            rate,
            rooms: args.burst_rooms.min(layout.companies()),
            count: Some(args.burst_messages),
        };
        let seconds = args.burst_messages as f64 / rate;
        let name = format!("burst {rate}/s");
        rows.push(phase(cli, args, layout, &mut workers, &name, seconds, vec![burst]).await?);
    }
    for step in &args.chat_rates {
        let (conv, presence) = step
            .split_once(':')
            .with_context(|| format!("a chat step is conversation:presence, not {step:?}"))?;
        let streams = vec![
            Stream {
                kind: StreamKind::Conversation,
                rate: conv.parse()?,
                rooms: layout.conversations(),
                count: None,
            },
            Stream {
                kind: StreamKind::Company,
                rate: presence.parse()?,
                rooms: layout.companies(),
                count: None,
            },
        ];
        let name = format!("chat {step}");
        rows.push(
            phase(
                cli,
                args,
                layout,
                &mut workers,
                &name,
                args.chat_seconds as f64,
                streams,
            )
            .await?,
        );
    }
    println!(
        "| {} phase | published | delivered / expected | s to last delivery | deliveries/s | company same-node p50 / p99 ms | company cross-node p50 / p99 ms | conversation p50 / p99 ms | fleet cores | Redis CPU % | Redis publishes/s |",
        cli.label
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} / {} | {:.2} | {:.0} | {} / {} | {} / {} | {} / {} | {:.2} | {} | {} |",
            r["phase"].as_str().unwrap_or(""),
            r["published"],
            r["delivered"],
            r["expected_deliveries"],
            r["seconds_to_last_delivery"].as_f64().unwrap_or(0.0),
            r["deliveries_per_s"].as_f64().unwrap_or(0.0),
            fmt_ms(&r["company_same_node_p50_ms"]),
            fmt_ms(&r["company_same_node_p99_ms"]),
            fmt_ms(&r["company_cross_node_p50_ms"]),
            fmt_ms(&r["company_cross_node_p99_ms"]),
            fmt_ms(&r["conversation_p50_ms"]),
            fmt_ms(&r["conversation_p99_ms"]),
            r["fleet_cpu_cores"].as_f64().unwrap_or(0.0),
            fmt_ms(&r["redis_cpu_pct"]),
            r["redis_publishes_per_s"]
                .as_f64()
                .map_or("–".into(), |x| format!("{x:.0}")),
        );
    }
    for mut w in workers {
        drop(w.stdin);
        let _ = w.child.kill().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Layout, StreamKind, stamp};

    #[test]
    fn stamps_are_read_with_or_without_a_recovery_offset() {
        assert_eq!(
            stamp("42[\"p\",1700000000000000,3]"),
            Some((StreamKind::Company, 1_700_000_000_000_000, 3))
        );
        assert_eq!(
            stamp("42[\"d\",5,0,\"1-0\"]"),
            Some((StreamKind::Conversation, 5, 0))
        );
        assert_eq!(stamp("42[\"other\",5,0]"), None);
        assert_eq!(stamp("42[\"p\"]"), None);
    }

    #[test]
    fn publishers_are_members_of_the_room_they_publish_to() {
        let layout = Layout {
            nodes: 5,
            clients: 3_500,
            company_size: 1000,
        };
        for n in 0..5_000 {
            let (room, p) = layout.message(StreamKind::Company, layout.companies(), n);
            assert_eq!(room, format!("c{}", p / 1000));
            let (room, p) = layout.message(StreamKind::Conversation, layout.conversations(), n);
            assert_eq!(room, format!("v{}", p / 2));
            assert!(p < layout.clients);
        }
        // The last company is partial; conversations pair clients on different nodes.
        assert_eq!(layout.company_members(3), 500);
        assert_ne!(layout.node_of(10), layout.node_of(11));
    }
}
