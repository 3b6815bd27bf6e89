//! `ioplex-bench`: a load generator speaking Engine.IO v4 / Socket.IO v5 over raw websockets.
//!
//! Scenarios (each prints a table):
//! - `connect`: opens N clients (handshake + namespace CONNECT) and reports connections per second, then
//!   holds them open and reports the server's resident memory per connection (`--server-pid`).
//! - `fanout`: N clients in rooms of R; one member of each room publishes through the client contract at a
//!   fixed total rate; reports deliveries per second and delivery latency p50/p99/max, and the server's CPU
//!   time per delivery (`--server-pid`).
//!
//! - `fleet`: N nodes under the seed's load shape from several generator processes (`bench/fleet`).
//! - `plugins`: the cost of tenant plugin hooks (warm, in-process) and of reloading a plugin.
//! - `chart`: draws a fan-out sweep's JSON lines as an SVG chart.
//!
//! `bench/sweep`, `bench/idle`, `bench/crossnode` and `bench/noisy` run these against ioplex and Node
//! socket.io side by side; `bench/all` runs every scenario.
//!
//! Clients spread their source addresses over 127.0.0.x so one run can go past one address's port range.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod chart;
mod fleet;
mod floor;
mod plugin_hooks;

#[derive(Parser)]
#[command(about = "Load generator for Socket.IO v4 servers (ioplex or Node)")]
struct Cli {
    /// Server port on 127.0.0.1.
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Pid of the server, to report its memory and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connect as this tenant (`?tenant=`), for gateways serving several.
    #[arg(long)]
    tenant: Option<String>,
    /// Also append the result, as one JSON object per line, to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Name of the server under test, recorded with `--json` results (e.g. ioplex, node).
    #[arg(long, default_value = "server")]
    label: String,
    /// Sent as `auth: { token }` in every namespace CONNECT (for servers that authorize connections,
    /// e.g. the room-auth plugin).
    #[arg(long)]
    auth_token: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

impl Cli {
    /// What every client sends to be let in.
    fn handshake(&self) -> Handshake {
        Handshake {
            query: match &self.tenant {
                Some(t) => format!("&tenant={t}"),
                None => String::new(),
            },
            connect: match &self.auth_token {
                Some(token) => format!("40{}", serde_json::json!({ "token": token })),
                None => "40".to_owned(),
            },
        }
    }

    /// Appends `result` to the `--json` file, if one was given.
    fn record(&self, result: serde_json::Value) -> anyhow::Result<()> {
        let Some(path) = &self.json else {
            return Ok(());
        };
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(file, "{result}")?;
        Ok(())
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// Connection rate and idle memory per connection.
    Connect {
        /// Clients to open.
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// Seconds to hold the connections before measuring memory.
        #[arg(long, default_value_t = 2)]
        hold: u64,
        /// Generator processes the clients are spread over (one process may hold ~20,000 files here);
        /// default: one per 15,000 clients.
        #[arg(long)]
        processes: Option<usize>,
    },
    /// One process of a multi-process `connect` (started by it): opens its clients, reports, holds them.
    #[command(hide = true)]
    ConnectWorker {
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        concurrency: usize,
        /// Number of this worker's first client (spreads source addresses across workers).
        #[arg(long)]
        first: usize,
    },
    /// Broadcast fan-out through rooms.
    Fanout(FanoutArgs),
    /// The floor to measure fan-out servers against: answers `fanout`'s handshake and joins, and writes
    /// each publish as one pre-encoded frame per other room member, one `write` each (on --port).
    FloorServer,
    /// A fleet of nodes under the seed's shape: company and conversation rooms, a burst of messages
    /// to company rooms, then steady chat at rising rates; same-node and cross-node latency.
    Fleet(fleet::FleetArgs),
    /// One process of `fleet` (started by it).
    #[command(hide = true)]
    FleetWorker(fleet::WorkerArgs),
    /// Draws the fan-out results of a `--json` file (p99 against deliveries/s, one line per --label)
    /// as an SVG chart.
    Chart {
        /// The JSON lines file.
        #[arg(long)]
        input: std::path::PathBuf,
        /// The SVG to write.
        #[arg(long)]
        output: std::path::PathBuf,
    },
    /// Plugin hook cost (warm, in-process, no server needed) and reload time.
    Plugins {
        /// Where plugins/build put the components.
        #[arg(long, default_value = "plugins/dist")]
        dist: std::path::PathBuf,
        /// Calls measured per Rust hook (a fifth of that for JavaScript).
        #[arg(long, default_value_t = 100_000)]
        iterations: usize,
        /// Reloads measured per Rust case (a third of that for JavaScript).
        #[arg(long, default_value_t = 10)]
        reloads: usize,
    },
}

/// What a fan-out run does.
#[derive(clap::Args)]
struct FanoutArgs {
    /// Receiving clients.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Clients per room.
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// Messages published per second, over all rooms (each reaches room_size - 1 clients).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Publish through extra clients on this port (another node of the fleet) instead of a member
    /// of each room: every delivery then crosses the Redis hop.
    #[arg(long)]
    publish_port: Option<u16>,
    /// Rooms are named `<prefix><n>` (e.g. `conversation:` for the room-auth plugin; distinct
    /// prefixes keep two generators on one server apart).
    #[arg(long, default_value = "room-")]
    room_prefix: String,
    /// Send `{"t": <micros>, "text": "<this many bytes, with an e-mail address>"}` instead of a bare
    /// timestamp, so message transforms have text to work on.
    #[arg(long, default_value_t = 0)]
    text: usize,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The parts of a connection that depend on the server's setup: tenant and credentials.
struct Handshake {
    /// Extra query parameters of the Engine.IO handshake.
    query: String,
    /// The namespace CONNECT packet.
    connect: String,
}

/// Opens a websocket from 127.0.0.(1 + n % 200) and joins the main namespace.
async fn connect_client(port: u16, n: usize, handshake: &Handshake) -> anyhow::Result<Ws> {
    let local = Ipv4Addr::new(127, 0, 0, 1 + (n % 200) as u8);
    let socket = TcpSocket::new_v4()?;
    // Lets servers bind ports our closed connections still hold in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((local, 0)))?;
    let stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    stream.set_nodelay(true)?;
    let url = format!(
        "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket{}",
        handshake.query
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await?;
    expect_prefix(&mut ws, "0").await?;
    ws.send(Message::text(handshake.connect.as_str())).await?;
    let reply = expect_prefix(&mut ws, "4").await?;
    if !reply.starts_with("40") {
        bail!("the server refused the namespace: {reply}");
    }
    Ok(ws)
}

/// A fan-out receiver on the bare socket: reads what the kernel has in 64 KiB gulps and looks at each
/// websocket frame only for its timestamp, so that the generator costs far less per delivery than the
/// server under test (a tungstenite stream per client cost ~23 µs of CPU per delivery). Answers pings.
async fn raw_reader(
    stream: TcpStream,
    origin: Instant,
    histogram: Arc<std::sync::Mutex<Histogram<u64>>>,
    received: Arc<AtomicU64>,
    measuring: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = stream;
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut at = 0;
        let mut pongs = 0;
        let mut counted = 0;
        let now = origin.elapsed().as_micros() as u64;
        let measure = measuring.load(Ordering::Relaxed);
        if let Ok(mut h) = histogram.lock() {
            while let Some((payload, used)) = server_frame(&buf[at..filled]) {
                if payload == b"2" {
                    pongs += 1;
                } else if measure
                    && let Some(sent) = std::str::from_utf8(payload).ok().and_then(sent_micros)
                {
                    let _ = h.record(now.saturating_sub(sent).max(1));
                    counted += 1;
                }
                at += used;
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if counted > 0 {
            received.fetch_add(counted, Ordering::Relaxed);
        }
        for _ in 0..pongs {
            // A masked text frame "3" (mask of zeros: the payload goes as is).
            if stream
                .write_all(&[0x81, 0x81, 0, 0, 0, 0, b'3'])
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// A complete unmasked server frame at the start of `buf`: its payload and its length on the wire.
fn server_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    let b1 = *buf.get(1)?;
    let (len, at): (usize, usize) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    Some((buf.get(at..at.checked_add(len)?)?, at + len))
}

/// Reads until a text frame starting with `prefix`, answering pings on the way.
async fn expect_prefix(ws: &mut Ws, prefix: &str) -> anyhow::Result<String> {
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg? {
            if text.as_str() == "2" {
                ws.send(Message::text("3")).await?;
                continue;
            }
            if text.starts_with(prefix) {
                return Ok(text.to_string());
            }
        }
    }
    bail!("connection closed while waiting for {prefix:?}")
}

/// CPU time of a process in user space and in the kernel, from /proc.
fn process_times(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports CPU time in clock ticks of 1/100 s on every platform we run on.
    Some((
        Duration::from_millis(user * 10),
        Duration::from_millis(system * 10),
    ))
}

/// Resident memory and CPU time (user + system) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(u64, Duration)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    let (user, system) = process_times(pid)?;
    Some((rss_kib * 1024, user + system))
}

async fn open_many(
    port: u16,
    clients: usize,
    concurrency: usize,
    handshake: Handshake,
) -> anyhow::Result<(Vec<Ws>, Duration)> {
    open_range(port, 0, clients, concurrency, handshake, false).await
}

/// Opens clients `first..first + clients`; with `progress`, reports on stderr every second.
async fn open_range(
    port: u16,
    first: usize,
    clients: usize,
    concurrency: usize,
    handshake: Handshake,
    progress: bool,
) -> anyhow::Result<(Vec<Ws>, Duration)> {
    let handshake = Arc::new(handshake);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(first as u64));
    let clients = first + clients;
    let opened = Arc::new(Mutex::new(Vec::with_capacity(clients)));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, opened, handshake) = (
            Arc::clone(&next),
            Arc::clone(&opened),
            Arc::clone(&handshake),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= clients {
                    return Ok::<_, anyhow::Error>(());
                }
                let ws = connect_client(port, n, &handshake)
                    .await
                    .with_context(|| format!("client {n}"))?;
                opened.lock().await.push(ws);
            }
        }));
    }
    let reporter = progress.then(|| {
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = (next.load(Ordering::Relaxed) as usize).min(clients) - first;
                eprintln!("connecting: {n}/{}", clients - first);
            }
        })
    });
    for worker in workers {
        worker.await??;
    }
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    let elapsed = started.elapsed();
    let opened = std::mem::take(&mut *opened.lock().await);
    Ok((opened, elapsed))
}

/// Keeps connections open, answering server pings.
fn keep_alive(conns: Vec<Ws>) -> Vec<tokio::task::JoinHandle<()>> {
    conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    if matches!(&msg, Message::Text(t) if t.as_str() == "2")
                        && ws.send(Message::text("3")).await.is_err()
                    {
                        break;
                    }
                }
            })
        })
        .collect()
}

/// A worker process: opens its clients, prints `opened <seconds>`, then holds them until stdin closes.
async fn connect_worker(
    cli: &Cli,
    clients: usize,
    concurrency: usize,
    first: usize,
) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let (conns, elapsed) = open_range(
        cli.port,
        first,
        clients,
        concurrency,
        cli.handshake(),
        false,
    )
    .await?;
    println!("opened {}", elapsed.as_secs_f64());
    let keepers = keep_alive(conns);
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    for k in keepers {
        k.abort();
    }
    Ok(())
}

/// Opens `clients` spread over `processes` worker processes; returns them (to be killed after the
/// measurement) and the time until the last one was open.
async fn open_in_processes(
    cli: &Cli,
    clients: usize,
    concurrency: usize,
    processes: usize,
) -> anyhow::Result<(Vec<tokio::process::Child>, Duration)> {
    use tokio::io::AsyncBufReadExt as _;
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let per = clients.div_ceil(processes);
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for i in 0..processes {
        let count = per.min(clients.saturating_sub(i * per));
        if count == 0 {
            break;
        }
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("--port").arg(cli.port.to_string());
        if let Some(t) = &cli.tenant {
            cmd.arg("--tenant").arg(t);
        }
        if let Some(token) = &cli.auth_token {
            cmd.arg("--auth-token").arg(token);
        }
        cmd.args(["connect-worker", "--clients", &count.to_string()])
            .args([
                "--concurrency",
                &(concurrency / processes).max(1).to_string(),
            ])
            .args(["--first", &(i * per).to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot start a generator process")?;
        let stdout = child.stdout.take().context("no worker stdout")?;
        readers.push(tokio::io::BufReader::new(stdout).lines());
        children.push(child);
    }
    let total = readers.len();
    for (done, lines) in readers.iter_mut().enumerate() {
        match lines.next_line().await? {
            Some(line) if line.starts_with("opened ") => {
                eprintln!("generator processes ready: {}/{total}", done + 1);
            }
            other => bail!("a generator process failed: {other:?}"),
        }
    }
    Ok((children, started.elapsed()))
}

async fn connect_scenario(
    cli: &Cli,
    clients: usize,
    concurrency: usize,
    hold: u64,
    processes: Option<usize>,
) -> anyhow::Result<()> {
    let before = cli.server_pid.and_then(process_usage);
    let processes = processes.unwrap_or_else(|| clients.div_ceil(15_000)).max(1);
    let (keepers, children, elapsed) = if processes == 1 {
        let (conns, elapsed) = open_range(
            cli.port,
            0,
            clients,
            concurrency,
            cli.handshake(),
            clients > 5000,
        )
        .await?;
        // Keep them alive (answer pings) while memory settles.
        (keep_alive(conns), Vec::new(), elapsed)
    } else {
        let (children, elapsed) = open_in_processes(cli, clients, concurrency, processes).await?;
        (Vec::new(), children, elapsed)
    };
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let after = cli.server_pid.and_then(process_usage);
    for mut child in children {
        let _ = child.kill().await;
    }
    println!(
        "| scenario | clients | concurrency | seconds | connections/s | server RSS per connection |"
    );
    println!("|---|---|---|---|---|---|");
    let per_conn_kib = match (before, after) {
        (Some((b, _)), Some((a, _))) => {
            Some((a.saturating_sub(b)) as f64 / 1024.0 / clients as f64)
        }
        _ => None,
    };
    let per_conn = per_conn_kib.map_or_else(
        || "n/a (pass --server-pid)".to_owned(),
        |k| format!("{k:.2} KiB"),
    );
    cli.record(serde_json::json!({
        "scenario": "connect",
        "label": cli.label,
        "clients": clients,
        "generator_processes": processes,
        "concurrency": concurrency,
        "seconds": elapsed.as_secs_f64(),
        "connections_per_s": clients as f64 / elapsed.as_secs_f64(),
        "server_rss_per_connection_kib": per_conn_kib,
    }))?;
    println!(
        "| connect | {clients} | {concurrency} | {:.2} | {:.0} | {per_conn} |",
        elapsed.as_secs_f64(),
        clients as f64 / elapsed.as_secs_f64()
    );
    for k in keepers {
        k.abort();
    }
    Ok(())
}

/// The text of `--text` messages: prose with an e-mail address in it, `len` bytes long.
fn message_text(len: usize) -> String {
    let mut text = String::from("write to someone@example.com about it. ");
    while text.len() < len {
        text.push_str("the quick brown fox jumps over the lazy dog. ");
    }
    text.truncate(len);
    text
}

/// The send timestamp of a delivered `42["m",<micros>]` or `42["m",{..."t":<micros>...}]`.
fn sent_micros(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix("42[\"m\",")?;
    let rest = match rest.strip_prefix('{') {
        Some(object) => &object[object.find("\"t\":")? + 4..],
        None => rest,
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

async fn fanout_scenario(cli: &Cli, args: &FanoutArgs) -> anyhow::Result<()> {
    let &FanoutArgs {
        clients,
        room_size,
        rate,
        duration,
        publish_port,
        ref room_prefix,
        text,
    } = args;
    anyhow::ensure!(
        room_size >= 2,
        "rooms need at least a publisher and a receiver"
    );
    let (mut conns, _) = open_many(cli.port, clients, 200, cli.handshake()).await?;
    let rooms = clients / room_size;
    anyhow::ensure!(rooms > 0, "fewer clients than one room");
    // Join rooms, waiting for each ack.
    for (i, ws) in conns.iter_mut().enumerate() {
        ws.send(Message::text(format!(
            "420[\"join\",\"{room_prefix}{}\"]",
            i / room_size % rooms
        )))
        .await?;
        let ack = expect_prefix(ws, "430").await?;
        if !ack.contains("\"ok\":true") {
            bail!("join refused: {ack}");
        }
    }
    let mut remote_publishers = Vec::new();
    if let Some(port) = publish_port {
        let (mut pubs, _) = open_many(port, rooms, 50, cli.handshake()).await?;
        for (room, ws) in pubs.iter_mut().enumerate() {
            ws.send(Message::text(format!(
                "420[\"join\",\"{room_prefix}{room}\"]"
            )))
            .await?;
            expect_prefix(ws, "430").await?;
        }
        // Let the other node's subscriptions settle before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        remote_publishers = pubs;
    }
    let origin = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    // Each reader records into a histogram of its own (an uncontended lock), merged at the end.
    let mut histograms = Vec::new();
    let mut readers = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        if publish_port.is_none() && i % room_size == 0 && i / room_size < rooms {
            publishers.push((i / room_size, ws.split().0));
            continue;
        }
        let histogram = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
            1, 60_000_000, 3,
        )?));
        histograms.push(Arc::clone(&histogram));
        let MaybeTlsStream::Plain(stream) = ws.into_inner() else {
            bail!("fanout readers use plain TCP");
        };
        let (received, measuring) = (Arc::clone(&received), Arc::clone(&measuring));
        readers.push(tokio::spawn(raw_reader(
            stream, origin, histogram, received, measuring,
        )));
    }
    for (room, ws) in remote_publishers.into_iter().enumerate() {
        let (sink, mut stream) = ws.split();
        // Drain what the remote publisher receives; runs are shorter than a ping interval.
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        publishers.push((room, sink));
    }
    // The message text, already a JSON string.
    let body = if text > 0 {
        serde_json::to_string(&message_text(text))?
    } else {
        String::new()
    };
    // Publish at `rate` messages/s, round-robin over rooms, from one task.
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let warmup = Duration::from_secs(1);
    let total = warmup + Duration::from_secs(duration);
    let start = Instant::now();
    let mut cpu_before = None;
    let mut times_before = None;
    let mut own_before = None;
    let mut sent = 0u64;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_micros(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = ((rate as f64) * ticker.period().as_secs_f64()).max(1.0) as u64;
    while start.elapsed() < total {
        ticker.tick().await;
        if !measuring.load(Ordering::Relaxed) && start.elapsed() >= warmup {
            measuring.store(true, Ordering::Relaxed);
            received.store(0, Ordering::Relaxed);
            cpu_before = cli.server_pid.and_then(process_usage);
            times_before = cli.server_pid.and_then(process_times);
            own_before = process_usage(std::process::id());
        }
        for _ in 0..per_tick {
            let (room, sink) = &mut publishers[(sent as usize) % rooms];
            let now = origin.elapsed().as_micros() as u64;
            let arg = if body.is_empty() {
                now.to_string()
            } else {
                format!("{{\"t\":{now},\"text\":{body}}}")
            };
            let frame = format!(
                "42[\"publish\",{{\"room\":\"{room_prefix}{room}\",\"event\":\"m\",\"args\":[{arg}]}}]"
            );
            sink.send(Message::text(frame)).await?;
            sent += 1;
        }
    }
    let measured = start.elapsed() - warmup;
    let cpu_after = cli.server_pid.and_then(process_usage);
    let times_after = cli.server_pid.and_then(process_times);
    let own_after = process_usage(std::process::id());
    // Deliveries of messages published in the window that arrive shortly after it still count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    measuring.store(false, Ordering::Relaxed);
    for (_, mut sink) in publishers {
        let _ = sink.close().await;
    }
    for r in &readers {
        r.abort();
    }
    let deliveries = received.load(Ordering::Relaxed);
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for local in &histograms {
        let local = local
            .lock()
            .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
        h.add(&*local)?;
    }
    let cpu = match (cpu_before, cpu_after) {
        (Some((_, b)), Some((_, a))) if deliveries > 0 => {
            format!("{:.2} µs", (a - b).as_secs_f64() * 1e6 / deliveries as f64)
        }
        _ => "n/a".into(),
    };
    let cores =
        |before: Option<(u64, Duration)>, after: Option<(u64, Duration)>| match (before, after) {
            (Some((_, b)), Some((_, a))) => {
                format!("{:.2}", (a - b).as_secs_f64() / measured.as_secs_f64())
            }
            _ => "n/a".into(),
        };
    let server_cores = cores(cpu_before, cpu_after);
    let generator_cores = cores(own_before, own_after);
    // User-space and kernel CPU per delivery, separately.
    let (user_us, system_us) = match (times_before, times_after) {
        (Some((ub, sb)), Some((ua, sa))) if deliveries > 0 => (
            Some((ua - ub).as_secs_f64() * 1e6 / deliveries as f64),
            Some((sa - sb).as_secs_f64() * 1e6 / deliveries as f64),
        ),
        _ => (None, None),
    };
    let cpu_us = match (cpu_before, cpu_after) {
        (Some((_, b)), Some((_, a))) if deliveries > 0 => {
            Some((a - b).as_secs_f64() * 1e6 / deliveries as f64)
        }
        _ => None,
    };
    cli.record(serde_json::json!({
        "scenario": "fanout",
        "label": cli.label,
        "tenant": cli.tenant,
        "clients": clients,
        "room_size": room_size,
        "publishes_per_s": rate,
        "deliveries_per_s": deliveries as f64 / measured.as_secs_f64(),
        "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
        "max_ms": h.max() as f64 / 1000.0,
        "server_cpu_us_per_delivery": cpu_us,
        "server_user_us_per_delivery": user_us,
        "server_system_us_per_delivery": system_us,
        "server_cores": server_cores.parse::<f64>().ok(),
        "generator_cores": generator_cores.parse::<f64>().ok(),
        "cross_node": publish_port.is_some(),
        "text_bytes": text,
    }))?;
    println!(
        "| scenario | clients | room size | publishes/s | deliveries/s | p50 | p99 | max | server CPU per delivery | server cores | generator cores |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| fanout | {clients} | {room_size} | {rate} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {cpu} | {server_cores} | {generator_cores} |",
        deliveries as f64 / measured.as_secs_f64(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::FloorServer = cli.scenario {
        return floor::run(cli.port);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.scenario {
        Scenario::Connect {
            clients,
            concurrency,
            hold,
            processes,
        } => connect_scenario(&cli, clients, concurrency, hold, processes).await,
        Scenario::ConnectWorker {
            clients,
            concurrency,
            first,
        } => connect_worker(&cli, clients, concurrency, first).await,
        Scenario::Fanout(ref args) => fanout_scenario(&cli, args).await,
        Scenario::FloorServer => floor::run(cli.port),
        Scenario::Fleet(ref args) => fleet::run(&cli, args).await,
        Scenario::FleetWorker(ref args) => fleet::worker(&cli, args).await,
        Scenario::Chart {
            ref input,
            ref output,
        } => chart::draw(input, output),
        Scenario::Plugins {
            ref dist,
            iterations,
            reloads,
        } => {
            for row in plugin_hooks::run(dist, iterations, reloads).await? {
                cli.record(row)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{message_text, sent_micros};

    #[test]
    fn timestamps_are_read_from_bare_and_object_messages() {
        assert_eq!(sent_micros("42[\"m\",12345]"), Some(12345));
        assert_eq!(
            sent_micros("42[\"m\",{\"t\":77,\"text\":\"hi\"}]"),
            Some(77)
        );
        // A transform may reorder keys and add its own.
        assert_eq!(
            sent_micros("42[\"m\",{\"sentAt\":1,\"t\":9,\"text\":\"x\"}]"),
            Some(9)
        );
        assert_eq!(sent_micros("42[\"other\",1]"), None);
        assert_eq!(sent_micros("42[\"m\",{\"text\":\"no stamp\"}]"), None);
    }

    #[test]
    fn message_text_has_the_length_asked_for_and_an_address_to_redact() {
        let text = message_text(1024);
        assert_eq!(text.len(), 1024);
        assert!(text.contains("someone@example.com"));
    }
}
