//! The Redis Streams adapter, wire-compatible with `@socket.io/redis-streams-adapter` 0.3: what must
//! reach every node (broadcasts, joins, leaves, disconnects) is appended to one Redis stream, which
//! keeps it; requests that wait for answers travel over pub/sub. Because the stream keeps what it
//! carried, a node that reconnects reads what it missed, and connection state recovery works across
//! the fleet: a stream entry's id is the offset a client holds.
//!
//! Unlike Node's adapter, every broadcast (this node's own too) is delivered to local sockets by the
//! one task that reads the stream, in stream order and under one lock. A socket being restored is
//! put back under that lock after the entries up to the reader's position are replayed to it, so
//! each packet reaches it once, replayed or live. Sessions are written when a socket connects and
//! whenever its rooms or data change (not only when it disconnects), so the crash of the node that
//! held a socket does not lose it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{
    ClientLike, EventInterface, KeysInterface, PubsubInterface, StreamsInterface,
};
use fred::types::config::{Config, Options, ReconnectPolicy};
use fred::types::{Builder, Expiration};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::messages::{
    Request, Response, Target, await_responses, await_server_side_acks, strip_credentials,
};
use super::sharded_wire::{Envelope, ShardedMessage};
use super::streams_wire::{RawEntry, StoredSession, StreamId, addressed_to, entry_fields};
use super::{BusError, PeerPolicy};
use crate::adapter::local::collect_acks;
use crate::adapter::{
    Adapter, AdapterError, AdapterFactory, AttachRestored, BoxFuture, BroadcastAcks,
    BroadcastOptions, BroadcastPacket, LocalAdapter, PersistedSession, Room, SessionStore,
    SocketInfo, SocketTable,
};
use crate::codec::{EncodedPacket, Packet, PacketKind};
use crate::sid::Sid;

/// Settings of the streams adapter (Node's option names in parentheses).
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://`.
    pub url: String,
    /// Stream name and pub/sub channel prefix (`streamName`, `channelPrefix`), `socket.io` by default.
    pub key: String,
    /// Prefix of session keys (`sessionKeyPrefix`), `sio:session:` by default.
    pub session_prefix: String,
    /// Entries the stream keeps, roughly (`maxLen`, trimmed with `~`).
    pub max_len: u64,
    /// Entries read per XREAD (`readCount`).
    pub read_count: u64,
    /// How long one XREAD waits for entries (`blockTimeInMs`).
    pub block: Duration,
    /// How long fleet requests wait for every node.
    pub requests_timeout: Duration,
    /// Connection state recovery's window (`maxDisconnectionDuration`); `None`: recovery off, no
    /// offsets appended and no sessions written.
    pub recovery_window: Option<Duration>,
    /// What peers may do here.
    pub policy: PeerPolicy,
    /// Larger messages and entries are refused unread (counted).
    pub max_message_bytes: usize,
}

impl StreamsConfig {
    /// Node's defaults for a Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        StreamsConfig {
            url: url.into(),
            key: "socket.io".into(),
            session_prefix: "sio:session:".into(),
            max_len: 10_000,
            read_count: 100,
            block: Duration::from_millis(5000),
            requests_timeout: Duration::from_secs(5),
            recovery_window: Some(Duration::from_millis(120_000)),
            policy: PeerPolicy {
                max_rooms_per_socket: 100,
                share_credentials: false,
            },
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Counters of one streams connection, for `/metrics`.
#[derive(Debug, Default)]
pub struct StreamsStats {
    /// Entries appended and pub/sub messages published.
    pub published: AtomicU64,
    /// Entries read and pub/sub messages received.
    pub received: AtomicU64,
    /// Entries and messages refused: oversized, over the decoding bounds, or malformed.
    pub refused: AtomicU64,
    /// Appends that failed (their broadcast was delivered here only, without an offset).
    pub dropped: AtomicU64,
    /// Session writes (SET and DEL) sent.
    pub session_writes: AtomicU64,
    /// Sessions restored here.
    pub restored: AtomicU64,
    /// Recoveries that found no session, or whose offset had left the stream.
    pub not_restored: AtomicU64,
}

/// What a restore may replay at most; past it the client starts afresh.
const MAX_REPLAY_ENTRIES: usize = 100_000;
/// Entries per XRANGE while a restore catches up.
const RESTORE_PAGE: u64 = 1000;
/// Messages waiting to be appended or published; past it they are dropped (and counted).
const OUTGOING_QUEUE: usize = 10_000;
/// Appends in flight at once on the publishing connection.
const IN_FLIGHT: usize = 256;

enum Outgoing {
    /// An entry; a broadcast carries what to deliver here if the append fails.
    Append {
        fields: Vec<(&'static str, String)>,
        fallback: Option<Box<Fallback>>,
    },
    /// A pub/sub message.
    Publish { channel: String, payload: Vec<u8> },
}

/// What a broadcast's sender delivers itself when the stream refuses it.
type Fallback = (Weak<StreamsAdapter>, BroadcastPacket, BroadcastOptions);

/// A session write waiting to be sent.
enum SessionWrite {
    /// This node holds the socket: its state as it is now.
    Set(String),
    /// The socket left this node: its last state, or nothing (`None`, it left on purpose), unless
    /// another node has restored the session since (the key then names that node).
    Release { value: Option<String>, node: String },
}

/// Where session writes wait to be sent; the latest write of a key wins.
#[derive(Default)]
struct SessionWrites {
    pending: HashMap<String, SessionWrite>,
}

/// The Redis connections and the stream reader every namespace of one prefix shares.
pub struct StreamsBus {
    config: StreamsConfig,
    publisher: Client,
    reader: Client,
    subscriber: SubscriberClient,
    adapters: RwLock<HashMap<String, Weak<StreamsAdapter>>>,
    outgoing: mpsc::Sender<Outgoing>,
    /// Held while an entry is delivered to local sockets and while a restored socket is put back.
    delivery: Mutex<()>,
    /// The last entry delivered here.
    position: Mutex<StreamId>,
    writes: Mutex<SessionWrites>,
    writes_ready: Notify,
    /// Counters.
    pub stats: StreamsStats,
}

/// One attempt, a short timeout: a command to a Redis that is away fails instead of waiting.
fn once() -> Options {
    Options {
        max_attempts: Some(1),
        fail_fast: true,
        timeout: Some(Duration::from_secs(2)),
        ..Options::default()
    }
}

fn unavailable(err: fred::error::Error) -> AdapterError {
    AdapterError::Unavailable(err.to_string())
}

impl StreamsBus {
    /// Connects (retrying in the background while Redis is unreachable) and starts reading the
    /// stream from its current end.
    pub async fn start(config: StreamsConfig) -> Result<Arc<Self>, BusError> {
        let fred_config = Config::from_url(&config.url)?;
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_policy(ReconnectPolicy::new_linear(0, 500, 50))
            .with_connection_config(|conn| {
                conn.connection_timeout = Duration::from_secs(2);
                conn.internal_command_timeout = Duration::from_secs(2);
            });
        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
        let bus = Arc::new(StreamsBus {
            publisher: builder.build()?,
            reader: builder.build()?,
            subscriber: builder.build_subscriber_client()?,
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
        let start = bus.stream_end().await;
        *bus.position.lock() = start;
        tokio::spawn(Arc::clone(&bus).read_loop(start));
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
    async fn stream_end(&self) -> StreamId {
        let last: Result<fred::types::Value, _> = self
            .publisher
            .with_options(&once())
            .xrevrange(self.stream(), "+", "-", Some(1))
            .await;
        if let Some((id, _)) = last.ok().and_then(|l| parse_entries(l).into_iter().next()) {
            return id;
        }
        let marker: Result<String, _> = self
            .publisher
            .with_options(&once())
            .xadd(
                self.stream(),
                false,
                ("MAXLEN", "~", self.config.max_len as i64),
                "*",
                vec![("uid", "ioplex")],
            )
            .await;
        marker
            .ok()
            .and_then(|id| StreamId::parse(&id))
            .unwrap_or_default()
    }

    fn register(&self, adapter: &Arc<StreamsAdapter>) {
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

    fn adapter(&self, nsp: &str) -> Option<Arc<StreamsAdapter>> {
        self.adapters.read().get(nsp).and_then(Weak::upgrade)
    }

    fn live_adapters(&self) -> Vec<Arc<StreamsAdapter>> {
        self.adapters
            .read()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    fn send(&self, message: Outgoing) {
        if self.outgoing.try_send(message).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends queued appends and publishes with many in flight, in queue order (fred hands a command
    /// to the connection on its first poll, which `FuturesOrdered` makes in push order).
    async fn publish_loop(self: Arc<Self>, mut queue: mpsc::Receiver<Outgoing>) {
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

    async fn send_now(&self, message: Outgoing) {
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

    /// Reads the stream forever from `from`, delivering each entry in order.
    async fn read_loop(self: Arc<Self>, from: StreamId) {
        let mut last = from;
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
    fn deliver(&self, id: StreamId, entry: RawEntry) {
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

    async fn receive_loop(self: Arc<Self>) {
        let mut messages = self.subscriber.message_rx();
        loop {
            let message = match messages.recv().await {
                Ok(message) => message,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
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
    async fn resubscribe_loop(self: Arc<Self>) {
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
    async fn server_count(&self, channel: &str) -> Result<usize, AdapterError> {
        let reply: Vec<fred::types::Value> = self
            .publisher
            .with_options(&once())
            .pubsub_numsub::<fred::types::Value, _>(channel)
            .await
            .map_err(unavailable)?
            .into_array();
        Ok(reply.get(1).and_then(|v| v.as_u64()).unwrap_or(0) as usize)
    }

    fn session_key(&self, pid: &str) -> String {
        format!("{}{pid}", self.config.session_prefix)
    }

    /// Queues a session write; the latest one of a key wins.
    fn write_session(&self, pid: &str, write: SessionWrite) {
        self.writes
            .lock()
            .pending
            .insert(self.session_key(pid), write);
        self.writes_ready.notify_one();
    }

    async fn send_session_write(
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
    async fn session_loop(self: Arc<Self>) {
        let Some(window) = self.config.recovery_window else {
            return;
        };
        let ttl = window.as_millis().max(1) as i64;
        let mut refresh = tokio::time::interval((window / 3).max(Duration::from_millis(100)));
        refresh.tick().await;
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
                    let keys: Vec<String> = self
                        .live_adapters()
                        .iter()
                        .flat_map(|a| a.tracked_pids())
                        .map(|pid| self.session_key(&pid))
                        .collect();
                    for chunk in keys.chunks(1000) {
                        let sends = chunk.iter().map(|key| {
                            self.publisher.pexpire::<(), _>(key.as_str(), ttl, None)
                        });
                        futures_util::future::join_all(sends).await;
                    }
                }
            }
        }
    }

    /// Entries after `after`, at most `count`.
    async fn entries_after(
        &self,
        after: StreamId,
        count: u64,
    ) -> Result<Vec<(StreamId, RawEntry)>, AdapterError> {
        let value: fred::types::Value = self
            .publisher
            .with_options(&once())
            .xrange(self.stream(), after.next().to_string(), "+", Some(count))
            .await
            .map_err(unavailable)?;
        Ok(parse_entries(value))
    }

    /// Whether entry `id` is still in the stream.
    async fn holds(&self, id: StreamId) -> Result<bool, AdapterError> {
        let value: fred::types::Value = self
            .publisher
            .with_options(&once())
            .xrange(self.stream(), id.to_string(), id.to_string(), Some(1))
            .await
            .map_err(unavailable)?;
        Ok(!parse_entries(value).is_empty())
    }
}

/// Reads XRANGE's reply: `[[id, [k, v, …]], …]`.
fn parse_entries(value: fred::types::Value) -> Vec<(StreamId, RawEntry)> {
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
fn parse_xread(value: fred::types::Value) -> Vec<(StreamId, RawEntry)> {
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
fn uid16() -> String {
    let raw: [u8; 8] = rand::random();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A local socket whose session this node keeps.
struct Tracked {
    pid: String,
    data: Value,
    /// The stream position when it connected (or was restored).
    from: StreamId,
}

/// A namespace's adapter on Redis Streams.
pub struct StreamsAdapter {
    me: Weak<StreamsAdapter>,
    nsp: String,
    uid: String,
    /// `K#N#`: requests to every node.
    main: String,
    /// `K#N#<uid>#`: answers to this node.
    own: String,
    local: LocalAdapter,
    bus: Arc<StreamsBus>,
    policy: PeerPolicy,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Response>>>,
    tracked: Mutex<HashMap<Sid, Tracked>>,
    /// Where each local socket's life began in the stream (read when it first joined a room).
    joined_at: Mutex<HashMap<Sid, StreamId>>,
}

impl StreamsAdapter {
    fn new(
        nsp: &str,
        sockets: Weak<dyn SocketTable>,
        bus: Arc<StreamsBus>,
        policy: PeerPolicy,
    ) -> Arc<Self> {
        let uid = uid16();
        let main = format!("{}#{nsp}#", bus.config.key);
        let adapter = Arc::new_cyclic(|me| StreamsAdapter {
            me: me.clone(),
            nsp: nsp.to_owned(),
            own: format!("{main}{uid}#"),
            main,
            uid,
            local: LocalAdapter::new(sockets),
            bus: Arc::clone(&bus),
            policy,
            pending: Mutex::new(HashMap::new()),
            tracked: Mutex::new(HashMap::new()),
            joined_at: Mutex::new(HashMap::new()),
        });
        bus.register(&adapter);
        adapter
    }

    fn recovers(&self) -> bool {
        self.bus.config.recovery_window.is_some()
    }

    fn envelope(&self, message: ShardedMessage) -> Envelope {
        Envelope {
            uid: self.uid.clone(),
            nsp: self.nsp.clone(),
            message,
        }
    }

    /// Appends a message to the stream (what every node must see, in order).
    fn append(&self, request: Request, fallback: Option<(BroadcastPacket, BroadcastOptions)>) {
        let fields = entry_fields(&self.envelope(ShardedMessage::Request {
            request_id: None,
            request,
        }));
        let fallback = fallback.map(|(p, o)| Box::new((self.me.clone(), p, o)));
        self.bus.send(Outgoing::Append { fields, fallback });
    }

    fn publish(&self, channel: String, message: ShardedMessage) {
        let payload = self.envelope(message).encode_msgpack();
        self.bus.send(Outgoing::Publish { channel, payload });
    }

    async fn publish_now(&self, message: ShardedMessage) -> Result<(), AdapterError> {
        let payload = self.envelope(message).encode_msgpack();
        self.bus
            .publisher
            .with_options(&once())
            .publish::<(), _, _>(self.main.clone(), payload)
            .await
            .map_err(unavailable)?;
        self.bus.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Delivers a broadcast here, with its offset appended when recovery logs it.
    fn deliver_broadcast(&self, id: StreamId, mut packet: Packet, opts: &BroadcastOptions) {
        if self.recovers()
            && matches!(packet.kind, PacketKind::Event | PacketKind::BinaryEvent)
            && packet.id.is_none()
            && !opts.volatile
            && let Some(Value::Array(args)) = &mut packet.data
        {
            args.push(Value::String(id.to_string()));
        }
        self.local.broadcast(&BroadcastPacket::new(packet), opts);
    }

    /// One stream entry of this namespace, under the bus's delivery lock.
    fn on_entry(&self, id: StreamId, envelope: Envelope) {
        let ShardedMessage::Request {
            request_id,
            request,
        } = envelope.message
        else {
            return;
        };
        match request {
            // This node's own broadcasts are delivered here too, in stream order.
            Request::Broadcast { packet, opts, .. } if request_id.is_none() => {
                self.deliver_broadcast(id, packet, &opts);
            }
            _ if envelope.uid == self.uid => {}
            Request::RemoteJoin {
                target: Target::Matching(opts),
                rooms,
            } => {
                let targets = self.local.local_targets(&opts);
                let refused = self.local.local_join_capped(
                    &opts,
                    &rooms,
                    self.policy.max_rooms_per_socket + 1,
                );
                if refused > 0 {
                    tracing::debug!(refused, "a peer's join went past the rooms limit");
                }
                self.rooms_changed(targets);
            }
            Request::RemoteLeave {
                target: Target::Matching(opts),
                rooms,
            } => {
                let targets = self.local.local_targets(&opts);
                self.local.local_update_rooms(&opts, &rooms, false);
                self.rooms_changed(targets);
            }
            Request::RemoteDisconnect {
                target: Target::Matching(opts),
                close,
            } => self.local.local_disconnect(&opts, close),
            _ => {}
        }
    }

    /// A pub/sub message of this namespace: answers, and requests that wait for answers.
    fn on_message(&self, envelope: Envelope) {
        if envelope.uid == self.uid {
            return;
        }
        match envelope.message {
            ShardedMessage::Response {
                request_id,
                response,
            } => {
                if let Some(tx) = self.pending.lock().get(&request_id) {
                    let _ = tx.send(response);
                }
            }
            ShardedMessage::Request {
                request_id: Some(id),
                request,
            } => self.on_request(&envelope.uid, id, request),
            ShardedMessage::Request { .. } => {}
        }
    }

    fn on_request(&self, requester: &str, id: String, request: Request) {
        let channel = format!("{}{requester}#", self.main);
        match request {
            Request::Broadcast {
                packet,
                opts,
                timeout_ms,
            } => {
                let timeout = timeout_ms
                    .map_or(self.bus.config.requests_timeout, Duration::from_millis)
                    .min(Duration::from_secs(60));
                let (tx, rx) = mpsc::unbounded_channel();
                let count = self.local.local_broadcast_with_ack(
                    &BroadcastPacket::new(packet),
                    &opts,
                    timeout,
                    &tx,
                );
                drop(tx);
                self.publish(
                    channel.clone(),
                    ShardedMessage::Response {
                        request_id: id.clone(),
                        response: Response::BroadcastClientCount(count),
                    },
                );
                let (bus, uid, nsp) = (Arc::clone(&self.bus), self.uid.clone(), self.nsp.clone());
                tokio::spawn(async move {
                    for ack in collect_acks(rx, count, timeout).await.responses {
                        let payload = Envelope {
                            uid: uid.clone(),
                            nsp: nsp.clone(),
                            message: ShardedMessage::Response {
                                request_id: id.clone(),
                                response: Response::BroadcastAck(ack),
                            },
                        }
                        .encode_msgpack();
                        bus.send(Outgoing::Publish {
                            channel: channel.clone(),
                            payload,
                        });
                    }
                });
            }
            Request::RemoteFetch { opts } => {
                let mut sockets = self.local.local_socket_infos(&opts);
                if !self.policy.share_credentials {
                    for info in &mut sockets {
                        strip_credentials(&mut info.handshake);
                    }
                }
                self.publish(
                    channel,
                    ShardedMessage::Response {
                        request_id: id,
                        response: Response::Sockets(sockets),
                    },
                );
            }
            Request::ServerSideEmit { data } => {
                let Some(table) = self.local.socket_table() else {
                    return;
                };
                let (bus, uid, nsp) = (Arc::clone(&self.bus), self.uid.clone(), self.nsp.clone());
                let ack = Box::new(move |answer: Value| {
                    let payload = Envelope {
                        uid,
                        nsp,
                        message: ShardedMessage::Response {
                            request_id: id,
                            response: Response::ServerSideEmitAck(answer),
                        },
                    }
                    .encode_msgpack();
                    bus.send(Outgoing::Publish { channel, payload });
                }) as crate::adapter::ServerAck;
                table.server_side_emit(data, Some(ack));
            }
            _ => {}
        }
    }

    fn open_request(&self) -> (String, mpsc::UnboundedReceiver<Response>, PendingGuard<'_>) {
        let id = uid16();
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        (id.clone(), rx, PendingGuard { adapter: self, id })
    }

    async fn others(&self) -> Result<usize, AdapterError> {
        Ok(self.bus.server_count(&self.main).await?.saturating_sub(1))
    }

    /// The session value of tracked socket `sid` as it is now.
    fn stored(&self, sid: Sid, tracked: &Tracked) -> String {
        StoredSession {
            session: PersistedSession {
                sid,
                pid: tracked.pid.clone(),
                rooms: self.local.socket_rooms(sid),
                data: tracked.data.clone(),
            },
            nsp: Some(self.nsp.clone()),
            from: Some(tracked.from),
            node: Some(self.uid.clone()),
        }
        .encode()
    }

    /// Writes again the sessions of tracked sockets among `sids` (their rooms changed).
    fn rooms_changed(&self, sids: impl IntoIterator<Item = Sid>) {
        let tracked = self.tracked.lock();
        if tracked.is_empty() {
            return;
        }
        for sid in sids {
            if let Some(t) = tracked.get(&sid) {
                self.bus
                    .write_session(&t.pid, SessionWrite::Set(self.stored(sid, t)));
            }
        }
    }

    fn tracked_pids(&self) -> Vec<String> {
        self.tracked
            .lock()
            .values()
            .map(|t| t.pid.clone())
            .collect()
    }
}

struct PendingGuard<'a> {
    adapter: &'a StreamsAdapter,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.adapter.pending.lock().remove(&self.id);
    }
}

impl Drop for StreamsAdapter {
    fn drop(&mut self) {
        let channels = vec![self.main.clone(), self.own.clone()];
        let (subscriber, bus) = (self.bus.subscriber.clone(), Arc::clone(&self.bus));
        let nsp = self.nsp.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // A namespace made again at once shares the main channel; keep it then.
                let keep = bus.adapter(&nsp).is_some();
                let gone: Vec<String> = if keep {
                    channels[1..].to_vec()
                } else {
                    channels
                };
                let _ = subscriber.unsubscribe(gone).await;
            });
        }
    }
}

impl Adapter for StreamsAdapter {
    fn add_all(&self, sid: Sid, rooms: &[Room]) {
        let position = self.bus.position();
        self.joined_at.lock().entry(sid).or_insert(position);
        self.local.add_all(sid, rooms);
        self.rooms_changed([sid]);
    }

    fn del(&self, sid: Sid, room: &Room) {
        self.local.del(sid, room);
        self.rooms_changed([sid]);
    }

    fn del_all(&self, sid: Sid) {
        self.local.del_all(sid);
        self.joined_at.lock().remove(&sid);
    }

    fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        self.local.socket_rooms(sid)
    }

    fn socket_in_all(&self, sid: Sid, rooms: &[Room]) -> bool {
        self.local.socket_in_all(sid, rooms)
    }

    fn room_size(&self, room: &Room) -> usize {
        self.local.room_size(room)
    }

    fn broadcast(&self, packet: &BroadcastPacket, opts: &BroadcastOptions) {
        if opts.local {
            self.local.broadcast(packet, opts);
            return;
        }
        // Delivered here when the reader meets it in the stream, like everyone else's.
        let request = Request::Broadcast {
            packet: packet.packet().clone(),
            opts: opts.clone(),
            timeout_ms: None,
        };
        self.append(request, Some((packet.clone(), opts.clone())));
    }

    fn fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> BoxFuture<'_, Result<Vec<SocketInfo>, AdapterError>> {
        let opts = opts.clone();
        Box::pin(async move {
            let mut sockets = self.local.local_socket_infos(&opts);
            if opts.local {
                return Ok(sockets);
            }
            let expected = self.others().await?;
            if expected == 0 {
                return Ok(sockets);
            }
            let (id, mut rx, _guard) = self.open_request();
            self.publish_now(ShardedMessage::Request {
                request_id: Some(id),
                request: Request::RemoteFetch { opts },
            })
            .await?;
            let timeout = self.bus.config.requests_timeout;
            await_responses(&mut rx, expected, timeout, |response| match response {
                Response::Sockets(remote) => {
                    sockets.extend(remote);
                    true
                }
                _ => false,
            })
            .await?;
            Ok(sockets)
        })
    }

    fn all_rooms(&self) -> BoxFuture<'_, Result<std::collections::HashSet<Room>, AdapterError>> {
        // The cluster protocol has no rooms request; like Node's adapter, the local rooms.
        Box::pin(async move { Ok(self.local.local_rooms()) })
    }

    fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        let targets = self.local.local_targets(opts);
        self.local.local_update_rooms(opts, rooms, true);
        self.rooms_changed(targets);
        let request = Request::RemoteJoin {
            target: Target::Matching(opts.clone()),
            rooms: rooms.to_vec(),
        };
        self.tell_others(opts.local, request)
    }

    fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        let targets = self.local.local_targets(opts);
        self.local.local_update_rooms(opts, rooms, false);
        self.rooms_changed(targets);
        let request = Request::RemoteLeave {
            target: Target::Matching(opts.clone()),
            rooms: rooms.to_vec(),
        };
        self.tell_others(opts.local, request)
    }

    fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        self.local.local_disconnect(opts, close);
        let request = Request::RemoteDisconnect {
            target: Target::Matching(opts.clone()),
            close,
        };
        self.tell_others(opts.local, request)
    }

    fn broadcast_with_ack(
        &self,
        packet: &BroadcastPacket,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<BroadcastAcks, AdapterError>> {
        let (packet, opts) = (packet.clone(), opts.clone());
        Box::pin(async move {
            if opts.local || !self.bus.is_connected() {
                return self.local.broadcast_with_ack(&packet, &opts, timeout).await;
            }
            let (local_tx, mut local_rx) = mpsc::unbounded_channel();
            let (id, mut rx, _guard) = self.open_request();
            self.publish_now(ShardedMessage::Request {
                request_id: Some(id),
                request: Request::Broadcast {
                    packet: packet.packet().clone(),
                    opts: opts.clone(),
                    timeout_ms: Some(timeout.as_millis() as u64),
                },
            })
            .await?;
            let local_count = self
                .local
                .local_broadcast_with_ack(&packet, &opts, timeout, &local_tx);
            drop(local_tx);
            let servers = self.others().await?;
            let deadline = tokio::time::Instant::now() + timeout;
            let mut acks = BroadcastAcks::default();
            let (mut counts, mut expected, mut local_open) = (0usize, local_count, true);
            while counts < servers || acks.responses.len() < expected {
                tokio::select! {
                    local = local_rx.recv(), if local_open => match local {
                        Some(payload) => acks.responses.push(payload),
                        None => local_open = false,
                    },
                    remote = rx.recv() => match remote {
                        Some(Response::BroadcastClientCount(count)) => { counts += 1; expected += count; }
                        Some(Response::BroadcastAck(payload)) => acks.responses.push(payload),
                        Some(_) => {}
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => { acks.timed_out = true; break; }
                }
            }
            acks.expected = expected;
            Ok(acks)
        })
    }

    fn server_side_emit(&self, data: Vec<Value>) -> BoxFuture<'_, Result<(), AdapterError>> {
        Box::pin(async move {
            self.publish_now(ShardedMessage::Request {
                request_id: None,
                request: Request::ServerSideEmit { data },
            })
            .await
        })
    }

    fn server_side_emit_with_ack(
        &self,
        data: Vec<Value>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Value>, AdapterError>> {
        Box::pin(async move {
            let expected = self.others().await?;
            if expected == 0 {
                return Ok(Vec::new());
            }
            let (id, mut rx, _guard) = self.open_request();
            self.publish_now(ShardedMessage::Request {
                request_id: Some(id),
                request: Request::ServerSideEmit { data },
            })
            .await?;
            await_server_side_acks(&mut rx, expected, timeout).await
        })
    }

    fn sessions(&self) -> Option<&dyn SessionStore> {
        self.recovers().then_some(self as &dyn SessionStore)
    }
}

impl StreamsAdapter {
    /// Sends a request that expects no answer through the stream, unless the operation was local.
    fn tell_others(
        &self,
        local: bool,
        request: Request,
    ) -> BoxFuture<'_, Result<(), AdapterError>> {
        if !local {
            self.append(request, None);
        }
        Box::pin(async { Ok(()) })
    }

    /// The packets a restored session missed among `entries`, each with its offset.
    fn missed(
        &self,
        entries: Vec<(StreamId, RawEntry)>,
        rooms: &[Room],
        into: &mut Vec<(StreamId, EncodedPacket)>,
    ) {
        for (id, entry) in entries {
            if entry.nsp.as_deref() != Some(self.nsp.as_str())
                || entry.kind != "3"
                || entry.len() > self.bus.config.max_message_bytes
            {
                continue;
            }
            let Ok(Some(Envelope {
                message:
                    ShardedMessage::Request {
                        request_id: None,
                        request:
                            Request::Broadcast {
                                mut packet, opts, ..
                            },
                    },
                ..
            })) = entry.decode()
            else {
                continue;
            };
            if !addressed_to(&opts.rooms, &opts.except, rooms) {
                continue;
            }
            if let Some(Value::Array(args)) = &mut packet.data {
                args.push(Value::String(id.to_string()));
            }
            into.push((id, BroadcastPacket::new(packet).encoded().clone()));
        }
    }
}

impl SessionStore for StreamsAdapter {
    fn track(&self, sid: Sid, pid: &str, data: Value) {
        let from = self
            .joined_at
            .lock()
            .get(&sid)
            .copied()
            .unwrap_or_else(|| self.bus.position());
        let tracked = Tracked {
            pid: pid.to_owned(),
            data,
            from,
        };
        self.bus
            .write_session(pid, SessionWrite::Set(self.stored(sid, &tracked)));
        self.tracked.lock().insert(sid, tracked);
    }

    fn update_data(&self, sid: Sid, data: Value) {
        let mut tracked = self.tracked.lock();
        if let Some(t) = tracked.get_mut(&sid) {
            t.data = data;
            self.bus
                .write_session(&t.pid, SessionWrite::Set(self.stored(sid, t)));
        }
    }

    fn untrack(&self, sid: Sid, keep: bool) {
        let Some(t) = self.tracked.lock().remove(&sid) else {
            return;
        };
        let value = keep.then(|| self.stored(sid, &t));
        let node = self.uid.clone();
        self.bus
            .write_session(&t.pid, SessionWrite::Release { value, node });
    }

    fn restore<'a>(
        &'a self,
        pid: &'a str,
        offset: Option<&'a str>,
        attach: AttachRestored<'a>,
    ) -> BoxFuture<'a, Result<bool, AdapterError>> {
        Box::pin(async move {
            let restored = self.try_restore(pid, offset, attach).await;
            let counter = match restored {
                Ok(true) => &self.bus.stats.restored,
                _ => &self.bus.stats.not_restored,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            restored
        })
    }
}

impl StreamsAdapter {
    async fn try_restore(
        &self,
        pid: &str,
        offset: Option<&str>,
        mut attach: AttachRestored<'_>,
    ) -> Result<bool, AdapterError> {
        let start = match offset {
            Some(offset) => match StreamId::parse(offset) {
                Some(id) => Some(id),
                None => return Ok(false),
            },
            None => None,
        };
        let key = self.bus.session_key(pid);
        let raw: Option<String> = self
            .bus
            .publisher
            .with_options(&once())
            .getdel(&key)
            .await
            .map_err(unavailable)?;
        let Some(stored) = raw.and_then(|raw| StoredSession::decode(&raw).ok()) else {
            return Ok(false);
        };
        if stored.nsp.as_deref().is_some_and(|nsp| nsp != self.nsp) || stored.session.pid != pid {
            return Ok(false);
        }
        // With no offset the client never received a packet: everything since it connected.
        let Some(start) = start.or(stored.from) else {
            return Ok(false);
        };
        if !self.bus.holds(start).await? {
            return Ok(false);
        }
        let rooms = stored.session.rooms.clone();
        let mut missed = Vec::new();
        let mut covered = start;
        let mut fetched = 0usize;
        loop {
            let page = self.bus.entries_after(covered, RESTORE_PAGE).await?;
            let short = (page.len() as u64) < RESTORE_PAGE;
            fetched += page.len();
            if let Some((last, _)) = page.last() {
                covered = *last;
            }
            self.missed(page, &rooms, &mut missed);
            if fetched > MAX_REPLAY_ENTRIES {
                return Ok(false);
            }
            if !short {
                continue;
            }
            match self.commit(covered, &mut missed, &stored.session, attach) {
                None => return Ok(true),
                Some(back) => attach = back,
            }
        }
    }

    /// Puts the socket back if every entry up to the reader's position is in `missed`, replaying
    /// those and leaving later ones to be delivered live; otherwise hands `attach` back to fetch
    /// more first.
    fn commit<'a>(
        &self,
        covered: StreamId,
        missed: &mut Vec<(StreamId, EncodedPacket)>,
        session: &PersistedSession,
        attach: AttachRestored<'a>,
    ) -> Option<AttachRestored<'a>> {
        let _order = self.bus.delivery.lock();
        let position = self.bus.position();
        if position > covered {
            return Some(attach);
        }
        let packets = std::mem::take(missed)
            .into_iter()
            .filter(|(id, _)| *id <= position)
            .map(|(_, p)| p)
            .collect();
        attach(session.clone(), packets);
        None
    }
}

/// Gives each namespace a streams adapter on a shared connection.
#[derive(Clone)]
pub struct StreamsAdapterFactory {
    bus: Arc<StreamsBus>,
    policy: PeerPolicy,
}

impl StreamsAdapterFactory {
    /// Connects (see [`StreamsBus::start`]).
    pub async fn start(config: StreamsConfig) -> Result<Self, BusError> {
        let policy = config.policy;
        Ok(StreamsAdapterFactory {
            bus: StreamsBus::start(config).await?,
            policy,
        })
    }

    /// The shared connection.
    pub fn bus(&self) -> &Arc<StreamsBus> {
        &self.bus
    }

    /// Adapters on the same connection under another peer policy.
    pub fn with_policy(&self, policy: PeerPolicy) -> Self {
        StreamsAdapterFactory {
            bus: Arc::clone(&self.bus),
            policy,
        }
    }
}

impl AdapterFactory for StreamsAdapterFactory {
    fn create(&self, nsp: &str, sockets: Weak<dyn SocketTable>) -> Arc<dyn Adapter> {
        StreamsAdapter::new(nsp, sockets, Arc::clone(&self.bus), self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::redis::bus::tests::redis_url;

    fn stored(node: &str) -> String {
        StoredSession {
            session: PersistedSession {
                sid: Sid::random(),
                pid: "p".into(),
                rooms: Vec::new(),
                data: Value::Null,
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
}
