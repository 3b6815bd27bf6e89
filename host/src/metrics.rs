//! `/metrics`: the gateway's state and counters in the Prometheus text format (version 0.0.4).
//!
//! Everything is read at scrape time from the counters the layers keep (Engine.IO endpoints, namespaces,
//! plugin versions, Redis buses); nothing is aggregated on the request path.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Response, header};

use crate::engineio::Body;
use crate::http_util::{Handler, Health, ListenerStats, bearer_matches};
use crate::plugin::{LATENCY_BUCKETS, PluginRuntime};
use crate::tenant::Tenants;

/// The `/metrics` handler. With a `token`, only scrapes that present it as a bearer token are answered
/// (the page names tenants and the namespaces their clients chose); without one it is open, for a
/// listener on a private network.
pub fn handler(
    tenants: Arc<Tenants>,
    plugins: Option<Arc<PluginRuntime>>,
    listeners: Arc<ListenerStats>,
    health: Health,
    token: Option<String>,
) -> Handler {
    let expected = token.map(|t| format!("Bearer {t}"));
    Arc::new(move |req| {
        let (tenants, plugins, listeners, health) = (
            Arc::clone(&tenants),
            plugins.clone(),
            Arc::clone(&listeners),
            health.clone(),
        );
        let authorized = bearer_matches(req.headers(), expected.as_deref());
        Box::pin(async move {
            if !authorized {
                let mut resp = Response::new(Body::new(Bytes::from_static(
                    b"metrics need the bearer token given by --metrics-token\n",
                )));
                *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                return resp;
            }
            let mut text = render(&tenants, plugins.as_deref()).await;
            render_listeners(&mut text, &listeners);
            render_health(&mut text, &health);
            render_process(&mut text);
            let mut resp = Response::new(Body::new(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        })
    })
}

/// A metric family read from one kind of stats: name, type, help, how to read it.
type FamilyOf<S> = (&'static str, &'static str, &'static str, fn(&S) -> u64);

/// What `/metrics` reports of one namespace.
struct NamespaceRow {
    tenant: String,
    namespace: String,
    sockets: u64,
    rooms: u64,
    events: u64,
    rate_limited: u64,
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// Renders every metric.
pub async fn render(tenants: &Tenants, plugins: Option<&PluginRuntime>) -> String {
    let mut out = String::with_capacity(4096);
    let all = tenants.all();

    let mut f = Family::new(
        &mut out,
        "ioplex_connections",
        "gauge",
        "Engine.IO sessions open, by transport.",
    );
    for t in &all {
        let (ws, polling) = t.engine().open_sessions_by_transport();
        f.sample(
            "ioplex_connections",
            &[("tenant", t.id()), ("transport", "websocket")],
            ws,
        );
        f.sample(
            "ioplex_connections",
            &[("tenant", t.id()), ("transport", "polling")],
            polling,
        );
    }

    let counters: [FamilyOf<crate::engineio::EngineStats>; 8] = [
        (
            "ioplex_handshakes_total",
            "counter",
            "Engine.IO sessions opened.",
            |s| s.handshakes.load(Ordering::Relaxed),
        ),
        (
            "ioplex_messages_received_total",
            "counter",
            "Engine.IO messages received from clients.",
            |s| s.messages_in.load(Ordering::Relaxed),
        ),
        (
            "ioplex_received_bytes_total",
            "counter",
            "Payload bytes received from clients.",
            |s| s.bytes_in.load(Ordering::Relaxed),
        ),
        (
            "ioplex_packets_sent_total",
            "counter",
            "Packets queued or written to clients.",
            |s| s.packets_out.load(Ordering::Relaxed),
        ),
        (
            "ioplex_sent_bytes_total",
            "counter",
            "Bytes queued or written to clients, framing included.",
            |s| s.bytes_out.load(Ordering::Relaxed),
        ),
        (
            "ioplex_dropped_volatile_packets_total",
            "counter",
            "Volatile packets dropped because the client was behind.",
            |s| s.dropped_volatile.load(Ordering::Relaxed),
        ),
        (
            "ioplex_slow_client_disconnects_total",
            "counter",
            "Sessions closed because their outgoing queue overflowed.",
            |s| s.slow_client_closes.load(Ordering::Relaxed),
        ),
        (
            "ioplex_handshakes_refused_total",
            "counter",
            "Handshakes refused with 503 because the tenant held its max-connections on this node.",
            |s| s.refused_at_limit.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in counters {
        let mut f = Family::new(&mut out, name, kind, help);
        for t in &all {
            f.sample(name, &[("tenant", t.id())], read(t.engine().stats()));
        }
    }

    let mut namespaces = Vec::new();
    for t in &all {
        let mut list = t.io().namespaces();
        list.sort_by(|a, b| a.name().cmp(b.name()));
        for ns in list {
            let rooms = ns.broadcast().local().all_rooms().await.map_or(0, |r| {
                r.iter()
                    .filter(|room| crate::sid::Sid::parse(&room.to_string()).is_none())
                    .count()
            });
            namespaces.push(NamespaceRow {
                tenant: t.id().to_owned(),
                namespace: ns.name().to_owned(),
                sockets: ns.socket_count() as u64,
                rooms: rooms as u64,
                events: ns.events_received(),
                rate_limited: ns.events_rate_limited(),
            });
        }
    }
    let per_namespace: [FamilyOf<NamespaceRow>; 4] = [
        (
            "ioplex_sockets",
            "gauge",
            "Sockets connected to a namespace on this node.",
            |n| n.sockets,
        ),
        (
            "ioplex_rooms",
            "gauge",
            "Rooms with members on this node (socket id rooms not counted).",
            |n| n.rooms,
        ),
        (
            "ioplex_events_received_total",
            "counter",
            "Socket.IO events received from clients.",
            |n| n.events,
        ),
        (
            "ioplex_events_rate_limited_total",
            "counter",
            "Socket.IO events over the namespace's rate limit (refused, or their socket disconnected).",
            |n| n.rate_limited,
        ),
    ];
    for (name, kind, help, read) in per_namespace {
        let mut f = Family::new(&mut out, name, kind, help);
        for n in &namespaces {
            f.sample(
                name,
                &[("tenant", &n.tenant), ("namespace", &n.namespace)],
                read(n),
            );
        }
    }

    if let Some(runtime) = plugins {
        let chains = runtime.tenants();
        let mut f = Family::new(
            &mut out,
            "ioplex_plugin_calls_total",
            "counter",
            "Plugin hook calls that returned an answer.",
        );
        for (tenant, chain) in &chains {
            for p in chain.plugins() {
                let c = p.context();
                f.sample(
                    "ioplex_plugin_calls_total",
                    &[
                        ("tenant", tenant),
                        ("plugin", &c.name),
                        ("version", &c.version),
                    ],
                    p.stats().calls.load(Ordering::Relaxed),
                );
            }
        }
        let mut f = Family::new(
            &mut out,
            "ioplex_plugin_failures_total",
            "counter",
            "Plugin hook calls that failed closed, by kind.",
        );
        for (tenant, chain) in &chains {
            for p in chain.plugins() {
                let (c, s) = (p.context(), p.stats());
                for (kind, n) in [
                    ("timeout", &s.timeouts),
                    ("out_of_memory", &s.out_of_memory),
                    ("trap", &s.traps),
                    ("breaker_open", &s.breaker_refusals),
                    ("busy", &s.busy_refusals),
                    ("instantiation", &s.instantiation_failures),
                    ("slow_start", &s.slow_instantiations),
                ] {
                    f.sample(
                        "ioplex_plugin_failures_total",
                        &[("tenant", tenant), ("plugin", &c.name), ("kind", kind)],
                        n.load(Ordering::Relaxed),
                    );
                }
            }
        }
        let mut f = Family::new(
            &mut out,
            "ioplex_plugin_instances",
            "gauge",
            "Plugin instances a tenant holds (warm and in use), against its share.",
        );
        for (tenant, _) in &chains {
            let instances = runtime.slot(tenant).quota().instances();
            f.sample("ioplex_plugin_instances", &[("tenant", tenant)], instances);
        }
        let name = "ioplex_plugin_fleet_rejected_total";
        let _ = writeln!(
            out,
            "# HELP {name} Plugin changes from Redis refused: bad signature, unknown tenant, invalid name, directory plugin.\n# TYPE {name} counter\n{name} {}",
            runtime.fleet_rejected.load(Ordering::Relaxed)
        );
        let name = "ioplex_plugin_call_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time a plugin hook call took.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (tenant, chain) in &chains {
            for p in chain.plugins() {
                let c = p.context();
                let (cumulative, count, sum) = p.stats().latency.snapshot();
                let base = format!("tenant=\"{}\",plugin=\"{}\"", label(tenant), label(&c.name));
                for (le, n) in LATENCY_BUCKETS.iter().zip(&cumulative) {
                    let _ = writeln!(out, "{name}_bucket{{{base},le=\"{le}\"}} {n}");
                }
                let _ = writeln!(out, "{name}_bucket{{{base},le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "{name}_sum{{{base}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{base}}} {count}");
            }
        }
    }

    let buses = tenants.redis_buses();
    let bus_counters: [FamilyOf<crate::adapter::redis::RedisBus>; 6] = [
        (
            "ioplex_redis_published_total",
            "counter",
            "Messages published to Redis.",
            |b| b.stats.published.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_received_total",
            "counter",
            "Messages received from Redis.",
            |b| b.stats.received.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_dropped_total",
            "counter",
            "Messages dropped: outage buffer or publish queue full, or too old.",
            |b| b.stats.dropped.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_refused_total",
            "counter",
            "Messages from Redis refused unread: over the size cap or the decoding bounds.",
            |b| b.stats.refused.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_remote_joins_refused_total",
            "counter",
            "Joins asked by fleet peers that would have put a socket over its rooms limit.",
            |b| b.stats.remote_joins_refused.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_reconnects_total",
            "counter",
            "Reconnections to Redis.",
            |b| b.stats.reconnects.load(Ordering::Relaxed),
        ),
    ];
    let mut f = Family::new(
        &mut out,
        "ioplex_redis_connected",
        "gauge",
        "1 while both Redis connections are up.",
    );
    for (key, bus) in &buses {
        f.sample(
            "ioplex_redis_connected",
            &[("key", key)],
            u8::from(bus.is_connected()),
        );
    }
    for (name, kind, help, read) in bus_counters {
        let mut f = Family::new(&mut out, name, kind, help);
        for (key, bus) in &buses {
            f.sample(name, &[("key", key)], read(bus));
        }
    }
    render_cluster(&mut out, &tenants.cluster_buses());
    render_streams(&mut out, &tenants.streams_buses());
    out
}

/// The streams adapter's connections, by prefix.
fn render_streams(out: &mut String, buses: &[(String, Arc<crate::adapter::redis::StreamsBus>)]) {
    if buses.is_empty() {
        return;
    }
    let mut f = Family::new(
        out,
        "ioplex_redis_streams_connected",
        "gauge",
        "1 while the streams adapter's three Redis connections are up.",
    );
    for (key, bus) in buses {
        f.sample(
            "ioplex_redis_streams_connected",
            &[("key", key)],
            u8::from(bus.is_connected()),
        );
    }
    let counters: [FamilyOf<crate::adapter::redis::StreamsBus>; 7] = [
        (
            "ioplex_redis_streams_published_total",
            "counter",
            "Stream entries appended and pub/sub messages published.",
            |b| b.stats.published.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_streams_received_total",
            "counter",
            "Stream entries read and pub/sub messages received.",
            |b| b.stats.received.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_streams_refused_total",
            "counter",
            "Entries and messages refused unread: oversized, over the decoding bounds, or malformed.",
            |b| b.stats.refused.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_streams_dropped_total",
            "counter",
            "Appends and publishes that failed or found the queue full (a broadcast is then delivered on this node only).",
            |b| b.stats.dropped.load(Ordering::Relaxed),
        ),
        (
            "ioplex_recovery_session_writes_total",
            "counter",
            "Session writes (SET, DEL) sent to Redis for connection state recovery.",
            |b| b.stats.session_writes.load(Ordering::Relaxed),
        ),
        (
            "ioplex_recovery_restored_total",
            "counter",
            "Sockets restored by connection state recovery on this node.",
            |b| b.stats.restored.load(Ordering::Relaxed),
        ),
        (
            "ioplex_recovery_not_restored_total",
            "counter",
            "Recovery attempts that found no session, or whose offset had left the stream (a fresh socket instead).",
            |b| b.stats.not_restored.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in counters {
        let mut f = Family::new(out, name, kind, help);
        for (key, bus) in buses {
            f.sample(name, &[("key", key)], read(bus));
        }
    }
}

/// The sharded adapter's cluster connections, by channel prefix.
fn render_cluster(out: &mut String, buses: &[(String, Arc<crate::adapter::redis::ShardedBus>)]) {
    if buses.is_empty() {
        return;
    }
    let mut f = Family::new(
        out,
        "ioplex_redis_cluster_connected",
        "gauge",
        "1 while both cluster clients are connected.",
    );
    for (key, bus) in buses {
        f.sample(
            "ioplex_redis_cluster_connected",
            &[("key", key)],
            u8::from(bus.is_connected()),
        );
    }
    let masters = "ioplex_redis_cluster_masters";
    let mut f = Family::new(
        out,
        masters,
        "gauge",
        "Masters in the cluster's slot map as the last subscription check saw it.",
    );
    for (key, bus) in buses {
        f.sample(masters, &[("key", key)], bus.subscriptions.shards().len());
    }
    for (name, help, held) in [
        (
            "ioplex_redis_cluster_subscriptions_wanted",
            "Shard channels this node should hold on each master.",
            false,
        ),
        (
            "ioplex_redis_cluster_subscriptions_held",
            "Shard channels this node's connection held on each master (CLIENT LIST); absent when it did not answer.",
            true,
        ),
    ] {
        let mut f = Family::new(out, name, "gauge", help);
        for (key, bus) in buses {
            for shard in bus.subscriptions.shards() {
                let value = if held { shard.held } else { Some(shard.wanted) };
                if let Some(value) = value {
                    f.sample(name, &[("key", key), ("shard", &shard.server)], value);
                }
            }
        }
    }
    let counters: [FamilyOf<crate::adapter::redis::ShardedBus>; 7] = [
        (
            "ioplex_redis_cluster_dropped_total",
            "counter",
            "Messages not published: the outgoing queue was full or the shard unreachable.",
            |b| b.stats.dropped.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_cluster_resubscribes_total",
            "counter",
            "Checks that found a master holding fewer shard channels than wanted, and subscribed again.",
            |b| b.subscriptions.stats.resubscribes.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_cluster_masters_lost_total",
            "counter",
            "Masters that left the slot map (failovers, removals).",
            |b| b.subscriptions.stats.masters_lost.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_cluster_subscribe_commands_total",
            "counter",
            "SSUBSCRIBE and SUNSUBSCRIBE commands sent (one per hash slot per batch).",
            |b| b.subscriptions.stats.commands.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_cluster_published_total",
            "counter",
            "Messages published to shard channels.",
            |b| b.stats.published.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_cluster_received_total",
            "counter",
            "Messages received on shard channels.",
            |b| b.stats.received.load(Ordering::Relaxed),
        ),
        (
            "ioplex_redis_cluster_refused_total",
            "counter",
            "Shard messages that did not decode.",
            |b| b.stats.refused.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in counters {
        let mut f = Family::new(out, name, kind, help);
        for (key, bus) in buses {
            f.sample(name, &[("key", key)], read(bus));
        }
    }
}

/// The listeners' admission counters (connections held, shed, refused, timed out).
pub fn render_listeners(out: &mut String, stats: &ListenerStats) {
    let families: [FamilyOf<ListenerStats>; 6] = [
        (
            "ioplex_http_connections",
            "gauge",
            "HTTP connections held (upgraded websockets not included).",
            |s| s.open.load(Ordering::Relaxed),
        ),
        (
            "ioplex_http_connections_accepted_total",
            "counter",
            "TCP connections accepted and admitted.",
            |s| s.accepted.load(Ordering::Relaxed),
        ),
        (
            "ioplex_http_connections_shed_total",
            "counter",
            "Idle connections closed to make room (per-address idle cap, connection cap, out of descriptors).",
            |s| s.shed.load(Ordering::Relaxed),
        ),
        (
            "ioplex_http_connections_refused_total",
            "counter",
            "New connections closed at once: the connection cap was reached with nothing idle to shed.",
            |s| s.refused.load(Ordering::Relaxed),
        ),
        (
            "ioplex_http_header_timeouts_total",
            "counter",
            "Connections closed because request headers did not arrive within the header read timeout.",
            |s| s.header_timeouts.load(Ordering::Relaxed),
        ),
        (
            "ioplex_accept_errors_total",
            "counter",
            "Failed accepts (out of file descriptors, mostly).",
            |s| s.accept_errors.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in families {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            read(stats)
        );
    }
}

/// What `/readyz` says, as gauges: alerts and dashboards see a node that is up but not taking
/// traffic (Redis lost, draining) without probing it.
pub fn render_health(out: &mut String, health: &Health) {
    let _ = writeln!(
        out,
        "# HELP ioplex_ready Whether /readyz answers 200 (1) or 503 (0).\n# TYPE ioplex_ready gauge\nioplex_ready {}",
        u8::from(health.check().is_ok())
    );
    let _ = writeln!(
        out,
        "# HELP ioplex_draining Whether the node is draining after SIGTERM.\n# TYPE ioplex_draining gauge\nioplex_draining {}",
        u8::from(health.is_draining())
    );
}

/// The process: its file descriptor limit, Tokio tasks alive, open file descriptors and resident
/// memory (Linux `/proc`), the figures a leak shows in first.
pub fn render_process(out: &mut String) {
    if let Some(max) = crate::http_util::open_file_limit() {
        let _ = writeln!(
            out,
            "# HELP process_max_fds Open file descriptor limit (soft).\n# TYPE process_max_fds gauge\nprocess_max_fds {max}"
        );
    }
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP ioplex_runtime_alive_tasks Tokio tasks alive.\n# TYPE ioplex_runtime_alive_tasks gauge\nioplex_runtime_alive_tasks {tasks}"
    );
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    if let Some(kib) = rss_kib {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            kib * 1024
        );
    }
}
