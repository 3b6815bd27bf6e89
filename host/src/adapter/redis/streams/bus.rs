//! The connections every namespace of one prefix shares: a publisher (appends, pub/sub, sessions),
//! a reader blocked in `XREAD` that delivers each entry in stream order, and a subscriber for
//! requests that wait for answers. Session writes are queued here and sent in bursts.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{
    ClientLike, EventInterface, KeysInterface, PubsubInterface, StreamsInterface,
};
use fred::types::config::{Config, Options, ReconnectPolicy};
use fred::types::{Builder, Expiration};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc};

use super::wire::{RawEntry, StoredSession, StreamId};
use super::{StreamsAdapter, StreamsConfig, StreamsStats};
use crate::adapter::redis::sharded_wire::Envelope;
use crate::adapter::redis::{BusError, build_subscriber};
use crate::adapter::{Adapter, AdapterError, BroadcastOptions, BroadcastPacket};

/// Messages waiting to be appended or published; past it they are dropped (and counted).
pub(super) const OUTGOING_QUEUE: usize = 10_000;
/// Appends in flight at once on the publishing connection.
pub(super) const IN_FLIGHT: usize = 256;
/// Fleet requests and answers the subscriber holds before a busy receive loop starts losing them.
const REQUEST_CHANNEL_CAPACITY: usize = 1024;

pub(super) enum Outgoing {
    /// An entry; a broadcast carries what to deliver here if the append fails.
    Append {
        fields: Vec<(&'static str, String)>,
        fallback: Option<Box<Fallback>>,
    },
    /// A pub/sub message.
    Publish { channel: String, payload: Vec<u8> },
}

/// What a broadcast's sender delivers itself when the stream refuses it.
pub(super) type Fallback = (Weak<StreamsAdapter>, BroadcastPacket, BroadcastOptions);

/// A session write waiting to be sent.
pub(super) enum SessionWrite {
    /// This node holds the socket: its state as it is now.
    Set(String),
    /// The socket left this node: its last state, or nothing (`None`, it left on purpose), unless
    /// another node has restored the session since (the key then names that node).
    Release { value: Option<String>, node: String },
}

/// Where session writes wait to be sent; the latest write of a key wins.
#[derive(Default)]
pub(super) struct SessionWrites {
    pub(super) pending: HashMap<String, SessionWrite>,
}

/// The Redis connections and the stream reader every namespace of one prefix shares.
pub struct StreamsBus {
    pub(super) config: StreamsConfig,
    pub(super) publisher: Client,
    pub(super) reader: Client,
    pub(super) subscriber: SubscriberClient,
    pub(super) adapters: RwLock<HashMap<String, Weak<StreamsAdapter>>>,
    pub(super) outgoing: mpsc::Sender<Outgoing>,
    /// Held while an entry is delivered to local sockets and while a restored socket is put back.
    pub(super) delivery: Mutex<()>,
    /// The last entry delivered here.
    pub(super) position: Mutex<StreamId>,
    pub(super) writes: Mutex<SessionWrites>,
    pub(super) writes_ready: Notify,
    /// Counters.
    pub stats: StreamsStats,
}

/// One attempt, a short timeout: a command to a Redis that is away fails instead of waiting.
pub(super) fn once() -> Options {
    Options {
        max_attempts: Some(1),
        fail_fast: true,
        timeout: Some(Duration::from_secs(2)),
        ..Options::default()
    }
}

pub(super) fn unavailable(err: fred::error::Error) -> AdapterError {
    AdapterError::Unavailable(err.to_string())
}

impl StreamsBus {
    /// Connects (retrying in the background while Redis is unreachable) and starts reading the
    /// stream from its current end.
    pub async fn start(config: StreamsConfig) -> Result<Arc<Self>, BusError> {
        let mut fred_config = Config::from_url(&config.url)?;
        // Keep retrying an unreachable Redis at start-up too, instead of failing.
        fred_config.fail_fast = false;
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_policy(ReconnectPolicy::new_linear(0, 500, 50))
            .with_connection_config(|conn| {
                conn.connection_timeout = Duration::from_secs(2);
                conn.internal_command_timeout = Duration::from_secs(2);
            });
        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
        let (publisher, reader) = (builder.build()?, builder.build()?);
        // Requests and their answers arrive through the subscriber (broadcasts come from the
        // stream): more room than fred's default of 32, so a burst of answers is not lost.
        let subscriber = build_subscriber(&mut builder, REQUEST_CHANNEL_CAPACITY)?;
        let bus = Arc::new(StreamsBus {
            publisher,
            reader,
            subscriber,
            config,
            adapters: RwLock::new(HashMap::new()),
            outgoing,
            delivery: Mutex::new(()),
            position: Mutex::new(StreamId::default()),
            writes: Mutex::new(SessionWrites::default()),
            writes_ready: Notify::new(),
            stats: StreamsStats::default(),
        });
        bus.publisher.connect();
        bus.reader.connect();
        bus.subscriber.connect();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            let _ = bus.publisher.wait_for_connect().await;
            let _ = bus.reader.wait_for_connect().await;
            let _ = bus.subscriber.wait_for_connect().await;
        })
        .await;
        if let Ok(start) = bus.stream_end().await {
            *bus.position.lock() = start;
        }
        tokio::spawn(Arc::clone(&bus).read_loop());
        tokio::spawn(Arc::clone(&bus).receive_loop());
        tokio::spawn(Arc::clone(&bus).resubscribe_loop());
        tokio::spawn(Arc::clone(&bus).publish_loop(queue));
        tokio::spawn(Arc::clone(&bus).session_loop());
        Ok(bus)
    }

    /// Whether every connection is up.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected()
            && self.reader.is_connected()
            && self.subscriber.is_connected()
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.config.key
    }

    /// The last entry delivered here.
    pub fn position(&self) -> StreamId {
        *self.position.lock()
    }

    /// The id of the stream's last entry; an empty stream gets a marker entry (no `nsp`, which
    /// every reader skips) so that a socket connecting now has a position that stays in the log.
    /// Fails while Redis does not answer.
    pub(super) async fn stream_end(&self) -> Result<StreamId, fred::error::Error> {
        let last: fred::types::Value = self
            .publisher
            .with_options(&once())
            .xrevrange(self.stream(), "+", "-", Some(1))
            .await?;
        if let Some((id, _)) = parse_entries(last).into_iter().next() {
            return Ok(id);
        }
        let marker: String = self
            .publisher
            .with_options(&once())
            .xadd(
                self.stream(),
                false,
                ("MAXLEN", "~", self.config.max_len as i64),
                "*",
                vec![("uid", "ioplex")],
            )
            .await?;
        Ok(StreamId::parse(&marker).unwrap_or_default())
    }

    pub(super) fn register(&self, adapter: &Arc<StreamsAdapter>) {
        let mut adapters = self.adapters.write();
        adapters.retain(|_, a| a.strong_count() > 0);
        adapters.insert(adapter.nsp.clone(), Arc::downgrade(adapter));
        let subscriber = self.subscriber.clone();
        let channels = vec![adapter.main.clone(), adapter.own.clone()];
        tokio::spawn(async move {
            if let Err(err) = subscriber.subscribe(channels).await {
                tracing::warn!(%err, "Redis SUBSCRIBE failed; retried after the next reconnect");
            }
        });
    }

    pub(super) fn adapter(&self, nsp: &str) -> Option<Arc<StreamsAdapter>> {
        self.adapters.read().get(nsp).and_then(Weak::upgrade)
    }

    pub(super) fn live_adapters(&self) -> Vec<Arc<StreamsAdapter>> {
        self.adapters
            .read()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    pub(super) fn send(&self, message: Outgoing) {
        if self.outgoing.try_send(message).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends queued appends and publishes with many in flight, in queue order (fred hands a command
    /// to the connection on its first poll, which `FuturesOrdered` makes in push order).
    pub(super) async fn publish_loop(self: Arc<Self>, mut queue: mpsc::Receiver<Outgoing>) {
        use futures_util::StreamExt;
        use futures_util::stream::FuturesOrdered;
        let mut in_flight = FuturesOrdered::new();
        loop {
            tokio::select! {
                next = queue.recv(), if in_flight.len() < IN_FLIGHT => {
                    let Some(message) = next else { break };
                    let bus = Arc::clone(&self);
                    in_flight.push_back(async move { bus.send_now(message).await });
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
    }

    pub(super) async fn send_now(&self, message: Outgoing) {
        match message {
            Outgoing::Append { fields, fallback } => {
                let appended: Result<String, _> = self
                    .publisher
                    .with_options(&once())
                    .xadd(
                        self.stream(),
                        false,
                        ("MAXLEN", "~", self.config.max_len as i64),
                        "*",
                        fields,
                    )
                    .await;
                match appended {
                    Ok(_) => {
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%err, "stream append failed; delivering here only");
                        // The fleet cannot have it; this node's sockets still get it, without an
                        // offset (nothing to replay it from).
                        if let Some((adapter, packet, opts)) = fallback.map(|f| *f)
                            && let Some(adapter) = adapter.upgrade()
                        {
                            let _order = self.delivery.lock();
                            adapter.local.broadcast(&packet, &opts);
                        }
                    }
                }
            }
            Outgoing::Publish { channel, payload } => {
                let sent: Result<(), _> = self
                    .publisher
                    .with_options(&once())
                    .publish(channel, payload)
                    .await;
                match sent {
                    Ok(()) => self.stats.published.fetch_add(1, Ordering::Relaxed),
                    Err(_) => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    }

    /// Reads the stream forever from where this node joined it: its end when Redis first answers
    /// (never from the start: what the fleet said before this node was here is not for its sockets).
    pub(super) async fn read_loop(self: Arc<Self>) {
        let mut last = self.position();
        while last == StreamId::default() {
            match self.stream_end().await {
                Ok(end) => {
                    *self.position.lock() = end;
                    last = end;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let block_ms = self.config.block.as_millis() as u64;
        let options = Options {
            timeout: Some(self.config.block + Duration::from_secs(3)),
            max_attempts: Some(1),
            ..Options::default()
        };
        loop {
            let read: Result<fred::types::Value, _> = self
                .reader
                .with_options(&options)
                .xread(
                    Some(self.config.read_count),
                    Some(block_ms),
                    self.stream(),
                    last.to_string(),
                )
                .await;
            match read {
                Ok(value) => {
                    for (id, entry) in parse_xread(value) {
                        self.deliver(id, entry);
                        last = id;
                    }
                }
                Err(err) => {
                    tracing::debug!(%err, "stream read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Hands one entry to its namespace's adapter and moves the position past it.
    pub(super) fn deliver(&self, id: StreamId, entry: RawEntry) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let message = if entry.len() > self.config.max_message_bytes {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            match entry.decode() {
                Ok(message) => message,
                Err(err) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%err, %id, "ignoring an undecodable stream entry");
                    None
                }
            }
        };
        let adapter = message.as_ref().and_then(|m| self.adapter(&m.nsp));
        let _order = self.delivery.lock();
        if let (Some(adapter), Some(message)) = (adapter, message) {
            adapter.on_entry(id, message);
        }
        *self.position.lock() = id;
    }

    pub(super) async fn receive_loop(self: Arc<Self>) {
        let mut messages = self.subscriber.message_rx();
        loop {
            let message = match messages.recv().await {
                Ok(message) => message,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(lost = n, "fleet requests lost: this node fell behind Redis");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let Some(payload) = message.value.as_bytes() else {
                continue;
            };
            if payload.len() > self.config.max_message_bytes {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let envelope = match Envelope::decode(payload) {
                Ok(Some(envelope)) => envelope,
                Ok(None) => continue,
                Err(err) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%err, "ignoring an undecodable pub/sub message");
                    continue;
                }
            };
            if let Some(adapter) = self.adapter(&envelope.nsp)
                && message.channel.starts_with(&adapter.main)
            {
                adapter.on_message(envelope);
            }
        }
    }

    /// Subscribes to every live namespace's channels again after the subscriber reconnects.
    pub(super) async fn resubscribe_loop(self: Arc<Self>) {
        let mut reconnects = self.subscriber.reconnect_rx();
        while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) =
            reconnects.recv().await
        {
            let channels: Vec<String> = self
                .live_adapters()
                .iter()
                .flat_map(|a| [a.main.clone(), a.own.clone()])
                .collect();
            if !channels.is_empty()
                && let Err(err) = self.subscriber.subscribe(channels).await
            {
                tracing::warn!(%err, "Redis SUBSCRIBE after a reconnect failed");
            }
        }
    }

    /// How many nodes listen on `channel` (`PUBSUB NUMSUB`).
    pub(super) async fn server_count(&self, channel: &str) -> Result<usize, AdapterError> {
        let reply: Vec<fred::types::Value> = self
            .publisher
            .with_options(&once())
            .pubsub_numsub::<fred::types::Value, _>(channel)
            .await
            .map_err(unavailable)?
            .into_array();
        Ok(reply.get(1).and_then(|v| v.as_u64()).unwrap_or(0) as usize)
    }

    pub(super) fn session_key(&self, pid: &str) -> String {
        format!("{}{pid}", self.config.session_prefix)
    }

    /// Queues a session write; the latest one of a key wins.
    pub(super) fn write_session(&self, pid: &str, write: SessionWrite) {
        self.writes
            .lock()
            .pending
            .insert(self.session_key(pid), write);
        self.writes_ready.notify_one();
    }

    pub(super) async fn send_session_write(
        &self,
        key: String,
        write: SessionWrite,
        ttl: i64,
    ) -> Result<(), fred::error::Error> {
        let value = match write {
            SessionWrite::Set(value) => Some(value),
            SessionWrite::Release { value, node } => {
                // A socket whose connection died unnoticed may leave this node after its client
                // was restored on another: that node's session must not be overwritten.
                let current: Option<String> = self.publisher.get(&key).await?;
                let restored_elsewhere = current
                    .and_then(|c| StoredSession::decode(&c).ok())
                    .and_then(|c| c.node)
                    .is_some_and(|holder| holder != node);
                if restored_elsewhere {
                    return Ok(());
                }
                value
            }
        };
        match value {
            Some(value) => {
                self.publisher
                    .set(key, value, Some(Expiration::PX(ttl)), None, false)
                    .await
            }
            None => self.publisher.del(key).await,
        }
    }

    /// Sends session writes as they come (a burst goes out together), and refreshes the expiry of
    /// every live session a third of the window before it would lapse.
    pub(super) async fn session_loop(self: Arc<Self>) {
        let Some(window) = self.config.recovery_window else {
            return;
        };
        let ttl = window.as_millis().max(1) as i64;
        let mut refresh = tokio::time::interval((window / 3).max(Duration::from_millis(100)));
        refresh.tick().await;
        let mut reconnects = self.publisher.reconnect_rx();
        loop {
            tokio::select! {
                _ = self.writes_ready.notified() => {
                    let batch = std::mem::take(&mut self.writes.lock().pending);
                    let bus = &self;
                    let sends = batch.into_iter().map(|(key, write)| async move {
                        if let Err(err) = bus.send_session_write(key, write, ttl).await {
                            tracing::debug!(%err, "session write failed");
                        }
                    });
                    let sent = futures_util::future::join_all(sends).await.len();
                    self.stats.session_writes.fetch_add(sent as u64, Ordering::Relaxed);
                }
                _ = refresh.tick() => {
                    self.rewrite_sessions(ttl).await;
                    self.trim_by_age(window).await;
                }
                // A Redis that restarted empty has lost every session: write them again at once.
                Ok(_) = reconnects.recv() => self.rewrite_sessions(ttl).await,
            }
        }
    }

    /// Drops the stream's entries older than the recovery window: no session can need them any
    /// more (its key has expired), and length alone would keep them where traffic is light.
    async fn trim_by_age(&self, window: Duration) {
        let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
            return;
        };
        let oldest = now.saturating_sub(window).as_millis() as u64;
        let trimmed: Result<(), _> = self
            .publisher
            .with_options(&once())
            .xtrim(self.stream(), ("MINID", "=", format!("{oldest}-0")))
            .await;
        if let Err(err) = trimmed {
            tracing::debug!(%err, "trimming the stream by age failed");
        }
    }

    /// Writes every live session again with a fresh expiry: it stays while its socket is connected,
    /// and comes back after Redis lost it.
    async fn rewrite_sessions(&self, ttl: i64) {
        let sessions: Vec<(String, String)> = self
            .live_adapters()
            .iter()
            .flat_map(|a| a.tracked_sessions())
            .collect();
        for chunk in sessions.chunks(1000) {
            let sends = chunk.iter().map(|(pid, value)| {
                self.publisher.set::<(), _, _>(
                    self.session_key(pid),
                    value.as_str(),
                    Some(Expiration::PX(ttl)),
                    None,
                    false,
                )
            });
            let sent = futures_util::future::join_all(sends).await.len();
            self.stats
                .session_writes
                .fetch_add(sent as u64, Ordering::Relaxed);
        }
    }

    /// Entries from `from` on (itself included), at most `count`.
    pub(super) async fn entries_from(
        &self,
        from: StreamId,
        count: u64,
    ) -> Result<Vec<(StreamId, RawEntry)>, AdapterError> {
        let value: fred::types::Value = self
            .publisher
            .with_options(&once())
            .xrange(self.stream(), from.to_string(), "+", Some(count))
            .await
            .map_err(unavailable)?;
        Ok(parse_entries(value))
    }
}

/// Reads XRANGE's reply: `[[id, [k, v, …]], …]`.
pub(super) fn parse_entries(value: fred::types::Value) -> Vec<(StreamId, RawEntry)> {
    let text = |v: fred::types::Value| v.into_string().unwrap_or_default();
    value
        .into_array()
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = StreamId::parse(&text(parts.next()?))?;
            let mut fields = parts.next()?.into_array().into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                pairs.push((text(k), text(v)));
            }
            Some((id, RawEntry::from_fields(pairs)))
        })
        .collect()
}

/// Reads XREAD's reply for one stream: `[[name, entries]]` (RESP2) or `{name: entries}` (RESP3).
pub(super) fn parse_xread(value: fred::types::Value) -> Vec<(StreamId, RawEntry)> {
    match value {
        fred::types::Value::Map(map) => map.inner().into_values().flat_map(parse_entries).collect(),
        other => other
            .into_array()
            .into_iter()
            .flat_map(|stream| {
                let mut parts = stream.into_array().into_iter();
                let _name = parts.next();
                parts.next().map(parse_entries).unwrap_or_default()
            })
            .collect(),
    }
}

/// A 16-hex-digit node id, like the cluster adapter's.
pub(super) fn uid16() -> String {
    let raw: [u8; 8] = rand::random();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::adapter::PersistedSession;
    use crate::adapter::redis::bus::tests::redis_url;
    use crate::sid::Sid;

    fn stored(node: &str) -> String {
        StoredSession {
            session: PersistedSession {
                sid: Sid::random(),
                pid: "p".into(),
                rooms: Vec::new(),
                data: Value::Null,
                user_id: None,
            },
            nsp: Some("/".into()),
            from: None,
            node: Some(node.into()),
        }
        .encode()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_releasing_a_socket_never_overwrites_a_session_restored_elsewhere() {
        let key = format!("ioplex-test-{}", Sid::random());
        let mut config = StreamsConfig::new(redis_url());
        config.key = key.clone();
        config.session_prefix = format!("{key}:session:");
        let bus = StreamsBus::start(config).await.expect("bus");
        assert!(
            bus.is_connected(),
            "the test Redis at {} answers",
            redis_url()
        );
        let session = bus.session_key("p");
        let get = || async {
            let value: Option<String> = bus.publisher.get(&session).await.expect("get");
            value.and_then(|v| StoredSession::decode(&v).ok()?.node)
        };
        let ttl = 60_000;
        bus.send_session_write(session.clone(), SessionWrite::Set(stored("b")), ttl)
            .await
            .expect("set");
        // Node a's stale socket leaves after b restored the session: b's state stays.
        for value in [Some(stored("a")), None] {
            let release = SessionWrite::Release {
                value,
                node: "a".into(),
            };
            bus.send_session_write(session.clone(), release, ttl)
                .await
                .expect("release");
            assert_eq!(get().await.as_deref(), Some("b"));
        }
        // The holder itself leaving on purpose removes it.
        let release = SessionWrite::Release {
            value: None,
            node: "b".into(),
        };
        bus.send_session_write(session.clone(), release, ttl)
            .await
            .expect("release");
        assert_eq!(get().await, None);
        let _: () = bus.publisher.del(&key).await.expect("cleanup");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peers_junk_and_oversized_entries_are_refused_and_the_stream_goes_on() {
        use crate::adapter::test_support::Recorder;
        use crate::adapter::{AdapterFactory, BroadcastOptions, Room, SocketTable};
        use crate::codec::{Packet, PacketKind};

        let key = format!("ioplex-test-{}", Sid::random());
        let mut config = StreamsConfig::new(redis_url());
        config.key = key.clone();
        config.session_prefix = format!("{key}:session:");
        config.max_message_bytes = 4096;
        let factory = super::super::StreamsAdapterFactory::start(config)
            .await
            .expect("bus");
        let bus = Arc::clone(factory.bus());
        let table = Arc::new(Recorder::default());
        let adapter = factory.create("/", Arc::downgrade(&table) as Weak<dyn SocketTable>);
        let member = Sid::random();
        adapter.add_all(member, &[Room::of_socket(member), "room".into()]);
        // A peer on the stream writes junk, an oversized entry and an entry of no known type.
        for fields in [
            vec![
                ("uid", "peer".to_owned()),
                ("nsp", "/".into()),
                ("type", "3".into()),
                ("data", "%%%".into()),
            ],
            vec![
                ("uid", "peer".to_owned()),
                ("nsp", "/".into()),
                ("type", "3".into()),
                ("data", "x".repeat(8192)),
            ],
            vec![
                ("uid", "peer".to_owned()),
                ("nsp", "/".into()),
                ("type", "many".into()),
            ],
        ] {
            let _: String = bus
                .publisher
                .xadd(&key, false, None, "*", fields)
                .await
                .expect("xadd");
        }
        let packet = BroadcastPacket::new(Packet {
            kind: PacketKind::Event,
            nsp: "/".into(),
            id: None,
            data: Some(serde_json::json!(["still"])),
            attachments: Vec::new(),
        });
        let opts = BroadcastOptions {
            rooms: vec!["room".into()],
            ..Default::default()
        };
        adapter.broadcast(&packet, &opts);
        for _ in 0..100 {
            if !table.delivered.lock().expect("lock").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*table.delivered.lock().expect("lock"), vec![member]);
        assert_eq!(bus.stats.refused.load(Ordering::Relaxed), 3);
        let _: () = bus.publisher.del(&key).await.expect("cleanup");
    }
}
