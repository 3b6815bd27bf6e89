//! The dashboard's feed: what happens to a tenant's sockets on this node, and this node's statistics
//! every two seconds, emitted to the admin namespace, which the adapter carries to every node's
//! dashboards (and Node servers' `instrument()` do the same on a shared Redis, so a mixed fleet shows
//! up in one dashboard).
//!
//! The [`Monitor`] side runs on connection tasks: it only formats and queues. A queue of bounded length
//! sits between it and the task that emits, so a burst of joins or events costs the tenant dropped feed
//! lines (counted), never a stalled connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::serialize;
use crate::adapter::RoomChange;
use crate::codec::Payload;
use crate::engineio::{Engine, WeakEngine};
use crate::socketio::{DisconnectReason, Monitor, Socket, WeakSocketIo};

/// Feed lines waiting for the emitting task, per tenant and node.
const QUEUE: usize = 4_096;
/// How often a node reports its statistics (Node's interval).
const STATS_EVERY: Duration = Duration::from_secs(2);

type Line = (&'static str, Payload);

/// The emitting task's end of a [`Feed`].
pub type Receiver = mpsc::Receiver<Line>;

/// Queues what happens to sockets as dashboard events.
pub struct Feed {
    tx: mpsc::Sender<Line>,
    /// The admin namespace: its own sockets' events are not fed back to it.
    admin_nsp: String,
    dropped: AtomicU64,
}

impl Feed {
    /// A feed and the receiving end for [`run`].
    pub fn new(admin_nsp: &str) -> (Arc<Feed>, Receiver) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let feed = Feed {
            tx,
            admin_nsp: admin_nsp.to_owned(),
            dropped: AtomicU64::new(0),
        };
        (Arc::new(feed), rx)
    }

    fn push(&self, event: &'static str, args: Vec<Value>, attachments: Vec<bytes::Bytes>) {
        if self
            .tx
            .try_send((event, Payload { args, attachments }))
            .is_err()
            && self
                .dropped
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1_000)
        {
            tracing::warn!(
                dropped = self.dropped.load(Ordering::Relaxed),
                "admin UI feed is behind; dropping dashboard events"
            );
        }
    }
}

impl Monitor for Feed {
    fn connected(&self, socket: &Arc<Socket>) {
        self.push(
            "socket_connected",
            vec![serialize::local(socket), now()],
            Vec::new(),
        );
    }

    fn disconnected(&self, socket: &Arc<Socket>, reason: &DisconnectReason) {
        self.push(
            "socket_disconnected",
            vec![
                socket.namespace().name().into(),
                socket.id().as_str().into(),
                reason.to_string().into(),
                now(),
            ],
            Vec::new(),
        );
    }

    fn rooms_changed(&self, nsp: &str, changes: &[RoomChange]) {
        for change in changes {
            let event = if change.joined {
                "room_joined"
            } else {
                "room_left"
            };
            self.push(
                event,
                vec![
                    nsp.into(),
                    change.room.as_str().into(),
                    change.sid.as_str().into(),
                    now(),
                ],
                Vec::new(),
            );
        }
    }

    fn event_received(&self, socket: &Arc<Socket>, name: &str, payload: &Payload) {
        if socket.namespace().name() == self.admin_nsp {
            return;
        }
        let mut args = Vec::with_capacity(payload.args.len() + 1);
        args.push(Value::from(name));
        args.extend(payload.args.iter().cloned());
        self.push(
            "event_received",
            vec![
                socket.namespace().name().into(),
                socket.id().as_str().into(),
                Value::Array(args),
                now(),
            ],
            payload.attachments.clone(),
        );
    }

    fn annotate(&self, socket: &Socket, data: &mut Value) {
        match data {
            Value::Object(map) => {
                map.insert("_admin".into(), serialize::admin_tag(socket));
            }
            Value::Null => *data = json!({ "_admin": serialize::admin_tag(socket) }),
            _ => {}
        }
    }
}

/// What a node says of itself in `server_stats`.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// `serverId`: tells nodes apart in the dashboard.
    pub server_id: String,
    /// `hostname`.
    pub hostname: String,
    started: Instant,
}

impl NodeIdentity {
    /// This process: `<hostname>#<pid>`, since several nodes may share a host.
    pub fn of_this_process() -> Self {
        static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let hostname = hostname();
        NodeIdentity {
            server_id: format!("{hostname}#{}", std::process::id()),
            hostname,
            started: *STARTED.get_or_init(Instant::now),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Emits queued feed lines (development mode) and this node's statistics to the admin namespace until
/// the tenant's server is gone. Holds the server and endpoint weakly, so a replaced tenant's task ends
/// with it.
pub async fn run(
    mut lines: Option<Receiver>,
    io: WeakSocketIo,
    engine: WeakEngine,
    admin_nsp: String,
    node: NodeIdentity,
) {
    let mut ticker = tokio::time::interval(STATS_EVERY);
    let mut last = engine
        .upgrade()
        .map_or_else(Counters::default, |e| Counters::of(&e));
    loop {
        tokio::select! {
            line = next_line(&mut lines) => {
                let Some((event, payload)) = line else { break };
                let Some(io) = io.upgrade() else { break };
                if let Some(ns) = io.of(&admin_nsp)
                    && let Err(err) = ns.emit(event, payload)
                {
                    tracing::debug!(%err, event, "admin UI feed line not sent");
                }
            }
            _ = ticker.tick() => {
                let (Some(io), Some(engine)) = (io.upgrade(), engine.upgrade()) else { break };
                let Some(ns) = io.of(&admin_nsp) else { break };
                let now = Counters::of(&engine);
                let stats = server_stats(&io, &engine, &node, &now, &last);
                last = now;
                if let Err(err) = ns.emit("server_stats", Payload::json(vec![stats])) {
                    tracing::debug!(%err, "admin UI statistics not sent");
                }
            }
        }
    }
}

async fn next_line(lines: &mut Option<Receiver>) -> Option<Line> {
    match lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The endpoint's counters at one tick.
#[derive(Default, Clone, Copy)]
struct Counters {
    handshakes: u64,
    sessions: u64,
    packets_in: u64,
    bytes_in: u64,
    packets_out: u64,
    bytes_out: u64,
}

impl Counters {
    fn of(engine: &Engine) -> Self {
        let s = engine.stats();
        Counters {
            handshakes: s.handshakes.load(Ordering::Relaxed),
            sessions: engine.session_count() as u64,
            packets_in: s.messages_in.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            packets_out: s.packets_out.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
        }
    }
}

fn server_stats(
    io: &crate::socketio::SocketIo,
    engine: &Engine,
    node: &NodeIdentity,
    now: &Counters,
    last: &Counters,
) -> Value {
    let (_websocket, polling) = engine.open_sessions_by_transport();
    let mut namespaces: Vec<Value> = io
        .namespaces()
        .iter()
        .map(|ns| json!({ "name": ns.name(), "socketsCount": ns.socket_count() }))
        .collect();
    namespaces.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    // The dashboard charts per-second buckets: one bucket for this tick's counts.
    let second = chrono::Utc::now().timestamp() * 1000;
    let opened = now.handshakes.saturating_sub(last.handshakes);
    let closed = (last.sessions + opened).saturating_sub(now.sessions);
    let events: Vec<Value> = [
        ("rawConnection", opened),
        ("rawDisconnection", closed),
        ("packetsIn", now.packets_in.saturating_sub(last.packets_in)),
        ("bytesIn", now.bytes_in.saturating_sub(last.bytes_in)),
        (
            "packetsOut",
            now.packets_out.saturating_sub(last.packets_out),
        ),
        ("bytesOut", now.bytes_out.saturating_sub(last.bytes_out)),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
    .map(|(kind, count)| json!({ "timestamp": second, "type": kind, "count": count }))
    .collect();
    json!({
        "serverId": node.server_id,
        "hostname": node.hostname,
        "pid": std::process::id(),
        "uptime": node.started.elapsed().as_secs_f64(),
        "clientsCount": engine.session_count(),
        "pollingClientsCount": polling,
        "aggregatedEvents": events,
        "namespaces": namespaces,
    })
}

/// A JavaScript `Date` as socket.io-parser sends one (ISO 8601, milliseconds, UTC).
pub fn now() -> Value {
    Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
