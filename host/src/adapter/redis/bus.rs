//! The node's connection to Redis: one publishing and one subscribing connection shared by every namespace.
//!
//! Redis is never on the path of local traffic. Messages are published by one task, in order; while Redis is
//! unreachable, and for a grace period after each reconnect (until the other nodes have subscribed again),
//! they wait in a bounded outage buffer (count, bytes, age), so a short outage loses nothing and a long one
//! costs a counted, bounded drop. Incoming messages larger than the configured cap are dropped unread. Reconnects use a capped linear
//! backoff and never give up; every channel and pattern is subscribed again after each reconnect. Incoming
//! messages are read by one task and handed to the namespace adapter whose channels they belong to.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Builder;
use fred::types::config::Options;
use fred::types::config::{Config, ReconnectPolicy};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::classic::RedisAdapter;
use super::inbox::{INBOX_MAX_BYTES, Inbox, SUBSCRIBER_RING};
use super::{RedisConfig, build_subscriber};
use crate::adapter::AdapterError;

/// How much longer than the reconnect backoff cap publishing waits after a reconnect.
const RESUBSCRIBE_MARGIN: Duration = Duration::from_millis(250);

/// When a publish fails on a connection that is still up (a timeout under load), how long the held
/// messages wait before they are tried again. No reconnect will come to flush them.
const RETRY_WHILE_CONNECTED: Duration = Duration::from_millis(100);

/// Counters of the bus, for logs and metrics.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Messages published.
    pub published: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
    /// Messages dropped: outage buffer full or too old, or publish queue full.
    pub dropped: AtomicU64,
    /// Reconnections to Redis.
    pub reconnects: AtomicU64,
    /// Messages refused unread: larger than `max_message_bytes`, or over the decoding bounds.
    pub refused: AtomicU64,
    /// Joins asked by peers that would have put a socket over its rooms limit.
    pub remote_joins_refused: AtomicU64,
}

struct Outgoing {
    channel: String,
    payload: Vec<u8>,
    queued_at: Instant,
}

/// Messages waiting for Redis to come back.
struct OutageBuffer {
    messages: VecDeque<Outgoing>,
    bytes: usize,
}

/// A shared connection to Redis for every namespace adapter of a node.
pub struct RedisBus {
    pub(crate) config: RedisConfig,
    publisher: Client,
    subscriber: SubscriberClient,
    adapters: RwLock<Vec<Weak<RedisAdapter>>>,
    /// Held while (un)subscribing, so that a namespace dropped and made again at once cannot have its
    /// old adapter's UNSUBSCRIBE land after the new one's SUBSCRIBE.
    subscribing: tokio::sync::Mutex<()>,
    queue: mpsc::Sender<Outgoing>,
    outage: Mutex<OutageBuffer>,
    reconnected: Notify,
    connected: AtomicBool,
    last_refusal_log: Mutex<Option<Instant>>,
    /// Counters.
    pub stats: BusStats,
}

/// Redis could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL or options are invalid.
    #[error("invalid Redis configuration: {0}")]
    Config(#[from] fred::error::Error),
}

impl RedisBus {
    /// Connects to Redis in the background and starts the publishing and receiving tasks. Returns at once
    /// when Redis is reachable within a few seconds, and in any case after that: the node then serves
    /// locally and keeps reconnecting.
    pub async fn start(config: RedisConfig) -> Result<Arc<Self>, BusError> {
        let mut fred_config = Config::from_url(&config.url)?;
        // Keep retrying an unreachable Redis at start-up too, instead of failing.
        fred_config.fail_fast = false;
        let step = config.reconnect_step.as_millis().max(1) as u32;
        let cap = config.reconnect_max.as_millis().max(1) as u32;
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_policy(ReconnectPolicy::new_linear(0, cap, step))
            .with_performance_config(|perf| {
                perf.default_command_timeout = Duration::from_secs(5);
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = Duration::from_secs(2);
                conn.internal_command_timeout = Duration::from_secs(2);
            });
        // The publisher receives no messages: fred's default capacity. The subscriber's message
        // channel must hold a burst while this node is busy (a lagging receiver loses messages).
        let publisher = builder.build()?;
        let subscriber = build_subscriber(&mut builder, SUBSCRIBER_RING)?;
        let (queue, queue_rx) = mpsc::channel(config.outage.max_messages.max(1));
        let bus = Arc::new(RedisBus {
            config,
            publisher,
            subscriber,
            adapters: RwLock::new(Vec::new()),
            subscribing: tokio::sync::Mutex::new(()),
            queue,
            outage: Mutex::new(OutageBuffer {
                messages: VecDeque::new(),
                bytes: 0,
            }),
            reconnected: Notify::new(),
            connected: AtomicBool::new(false),
            last_refusal_log: Mutex::new(None),
            stats: BusStats::default(),
        });
        bus.publisher.connect();
        bus.subscriber.connect();
        tokio::spawn(Arc::clone(&bus).receive_loop());
        tokio::spawn(Arc::clone(&bus).publish_loop(queue_rx));
        tokio::spawn(Arc::clone(&bus).watch_connections());
        let waited = tokio::time::timeout(Duration::from_secs(3), async {
            let _ = bus.publisher.wait_for_connect().await;
            let _ = bus.subscriber.wait_for_connect().await;
        })
        .await;
        if waited.is_err() || !bus.is_connected() {
            tracing::warn!(url = %redact(&bus.config.url), "Redis unreachable; serving this node alone and retrying");
        } else {
            tracing::info!(url = %redact(&bus.config.url), "connected to Redis");
        }
        Ok(bus)
    }

    /// Whether both connections to Redis are up.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }

    /// Adds a namespace adapter and subscribes to its channels.
    pub(crate) fn register(self: &Arc<Self>, adapter: &Arc<RedisAdapter>) {
        self.adapters.write().push(Arc::downgrade(adapter));
        let (bus, adapter) = (Arc::clone(self), Arc::clone(adapter));
        tokio::spawn(async move { bus.subscribe(&adapter).await });
    }

    /// Removes a namespace adapter (its namespace is gone) and unsubscribes from what no live adapter
    /// still listens to (a namespace made again at once shares the channel names).
    pub(crate) fn unregister(self: &Arc<Self>, pattern: String, channels: Vec<String>) {
        self.adapters.write().retain(|a| a.strong_count() > 0);
        let bus = Arc::clone(self);
        tokio::spawn(async move {
            let _turn = bus.subscribing.lock().await;
            let mut needed = std::collections::HashSet::new();
            for adapter in bus.live_adapters() {
                let (p, c) = adapter.subscriptions();
                needed.insert(p);
                needed.extend(c);
            }
            if !needed.contains(&pattern) {
                let _ = bus.subscriber.punsubscribe(pattern).await;
            }
            let unused: Vec<String> = channels
                .into_iter()
                .filter(|c| !needed.contains(c))
                .collect();
            if !unused.is_empty() {
                let _ = bus.subscriber.unsubscribe(unused).await;
            }
        });
    }

    async fn subscribe(&self, adapter: &RedisAdapter) {
        let _turn = self.subscribing.lock().await;
        let (pattern, channels) = adapter.subscriptions();
        if let Err(err) = self.subscriber.psubscribe(pattern).await {
            tracing::warn!(%err, "Redis PSUBSCRIBE failed; retried after the next reconnect");
        }
        if let Err(err) = self.subscriber.subscribe(channels).await {
            tracing::warn!(%err, "Redis SUBSCRIBE failed; retried after the next reconnect");
        }
    }

    /// Queues a message for publishing; never waits. Dropped (and counted) when the queue is full.
    pub(crate) fn publish_nowait(&self, channel: String, payload: Vec<u8>) {
        let message = Outgoing {
            channel,
            payload,
            queued_at: Instant::now(),
        };
        if self.queue.try_send(message).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes now, failing fast while Redis is unreachable (fleet requests must not hang).
    pub(crate) async fn publish_now(
        &self,
        channel: &str,
        payload: Vec<u8>,
    ) -> Result<(), AdapterError> {
        self.ensure_connected()?;
        self.publisher
            .with_options(&fail_fast())
            .publish::<i64, _, _>(channel, payload)
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `PUBSUB NUMSUB`: how many connections listen on `channel` (every node of the fleet, ourselves included).
    pub(crate) async fn numsub(&self, channel: &str) -> Result<usize, AdapterError> {
        self.ensure_connected()?;
        let reply: Vec<fred::types::Value> = self
            .publisher
            .with_options(&fail_fast())
            .pubsub_numsub(channel)
            .await
            .map_err(|e| AdapterError::Unavailable(e.to_string()))?;
        Ok(reply.get(1).and_then(|v| v.as_i64()).unwrap_or(0).max(0) as usize)
    }

    fn ensure_connected(&self) -> Result<(), AdapterError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(AdapterError::Unavailable(
                "Redis is unreachable; this node is serving alone until it reconnects".into(),
            ))
        }
    }

    /// Publishes queued messages in order; holds them in the outage buffer while Redis is down, and for
    /// a grace period after every reconnect: the other nodes reconnect within their own backoff cap, and
    /// Redis drops a message published before they have subscribed again.
    async fn publish_loop(self: Arc<Self>, mut queue: mpsc::Receiver<Outgoing>) {
        let grace = self.config.reconnect_max + RESUBSCRIBE_MARGIN;
        let mut holding_until: Option<Instant> = None;
        loop {
            tokio::select! {
                message = queue.recv() => {
                    let Some(message) = message else { return };
                    if holding_until.is_some()
                        || !self.is_connected()
                        || !self.outage.lock().messages.is_empty()
                    {
                        self.hold(message);
                    } else if let Err(message) = self.send(message).await {
                        self.hold(message);
                    }
                    holding_until = holding_until.or_else(|| self.retry_at());
                }
                _ = self.reconnected.notified() => holding_until = Some(Instant::now() + grace),
                _ = tokio::time::sleep_until(holding_until.unwrap_or_else(Instant::now)), if holding_until.is_some() => {
                    if self.is_connected() {
                        self.flush_outage().await;
                    }
                    holding_until = self.retry_at();
                }
            }
        }
    }

    /// When held messages should be tried again without waiting for a reconnect: they are held
    /// while the connection is up, so a publish failed on it (timed out) and no reconnect will
    /// flush them. Without this, one slow publish would hold every later one until the bounds
    /// dropped them, and the node would fall silent to the fleet.
    fn retry_at(&self) -> Option<Instant> {
        (self.is_connected() && !self.outage.lock().messages.is_empty())
            .then(|| Instant::now() + RETRY_WHILE_CONNECTED)
    }

    async fn send(&self, message: Outgoing) -> Result<(), Outgoing> {
        // One attempt, failing at once while disconnected: fred would otherwise queue or replay a
        // publish cut by a disconnect and send it right after the reconnect, before the other nodes have
        // subscribed again; held here instead, it waits for the grace period.
        let once = Options {
            max_attempts: Some(1),
            fail_fast: true,
            timeout: Some(Duration::from_secs(2)),
            ..Options::default()
        };
        match self
            .publisher
            .with_options(&once)
            .publish::<i64, _, _>(message.channel.as_str(), message.payload.as_slice())
            .await
        {
            Ok(_) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // Written to a connection that is still up but not answered in time (Redis or this
            // node overloaded): Redis has the command and will run it, so sending it again would
            // deliver it twice. Counted as published.
            Err(err)
                if *err.kind() == fred::error::ErrorKind::Timeout
                    && self.publisher.is_connected() =>
            {
                tracing::debug!(%err, "publish not confirmed in time; not sent again");
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                tracing::debug!(%err, "publish failed; holding the message until Redis is back");
                Err(message)
            }
        }
    }

    /// Keeps a message for after the outage, dropping the oldest beyond the bounds.
    fn hold(&self, message: Outgoing) {
        let limits = &self.config.outage;
        let mut outage = self.outage.lock();
        outage.bytes += message.payload.len();
        outage.messages.push_back(message);
        while outage.messages.len() > limits.max_messages || outage.bytes > limits.max_bytes {
            let Some(dropped) = outage.messages.pop_front() else {
                break;
            };
            outage.bytes -= dropped.payload.len();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends what the outage buffer holds, oldest first, skipping messages past their age limit.
    async fn flush_outage(&self) {
        let max_age = self.config.outage.max_age;
        loop {
            let next = {
                let mut outage = self.outage.lock();
                let next = outage.messages.pop_front();
                if let Some(m) = &next {
                    outage.bytes -= m.payload.len();
                }
                next
            };
            let Some(message) = next else { return };
            if message.queued_at.elapsed() > max_age {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Err(message) = self.send(message).await {
                // Down again: put it back in front and wait for the next reconnect.
                let mut outage = self.outage.lock();
                outage.bytes += message.payload.len();
                outage.messages.push_front(message);
                return;
            }
        }
    }

    /// Follows both connections: logs state changes, resubscribes and flushes the outage buffer on reconnect.
    async fn watch_connections(self: Arc<Self>) {
        use tokio::sync::broadcast::error::RecvError;
        let mut sub_reconnects = self.subscriber.reconnect_rx();
        let mut pub_reconnects = self.publisher.reconnect_rx();
        let (mut sub_open, mut pub_open) = (true, true);
        let mut probe = tokio::time::interval(Duration::from_millis(100));
        let mut ever_connected = false;
        loop {
            tokio::select! {
                r = sub_reconnects.recv(), if sub_open => match r {
                    Err(RecvError::Closed) => sub_open = false,
                    // The subscriber came back (or we missed how often): subscribe to everything again.
                    _ => self.resubscribe_all().await,
                },
                r = pub_reconnects.recv(), if pub_open => match r {
                    Err(RecvError::Closed) => pub_open = false,
                    // A reconnect too quick for the probe below still needs the publish grace period.
                    _ => self.reconnected.notify_one(),
                },
                _ = probe.tick() => {}
            }
            let now = self.is_connected();
            let was = self.connected.swap(now, Ordering::AcqRel);
            if now && !was {
                if ever_connected {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("Redis connection up; fleet traffic resumes");
                }
                ever_connected = true;
                // Also done on the subscriber's reconnect events; doing it on every transition does not depend
                // on how fred reports a first connection made after start-up. SUBSCRIBE twice is harmless.
                self.resubscribe_all().await;
                self.reconnected.notify_one();
            } else if was && !now {
                tracing::warn!("Redis connection lost; serving locally and buffering broadcasts");
            }
        }
    }

    /// Counts a message refused before decoding; logs at most once per second.
    pub(crate) fn refuse(&self, channel: &str, reason: &str) {
        let refused = self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last_refusal_log.lock();
        if last.is_none_or(|at| now.duration_since(at) > Duration::from_secs(1)) {
            *last = Some(now);
            tracing::warn!(
                channel,
                reason,
                refused_so_far = refused + 1,
                "Redis message refused"
            );
        }
    }

    /// The registered adapters whose namespaces still exist.
    fn live_adapters(&self) -> Vec<Arc<RedisAdapter>> {
        self.adapters
            .read()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    async fn resubscribe_all(&self) {
        for adapter in self.live_adapters() {
            self.subscribe(&adapter).await;
        }
    }

    /// Hands every received message to the adapter owning its channel.
    async fn receive_loop(self: Arc<Self>) {
        let mut messages = Inbox::forward(self.subscriber.message_rx(), INBOX_MAX_BYTES);
        loop {
            let (message, lost) = messages.recv().await;
            if lost > 0 {
                self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
                tracing::warn!(
                    lost,
                    "Redis messages arrived faster than they were handled; some were lost"
                );
            }
            let Some(message) = message else { return };
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let channel = message.channel;
            // The payload as fred received it, without a copy.
            let payload: Bytes = match message.value {
                value @ (fred::types::Value::Bytes(_) | fred::types::Value::String(_)) => {
                    match value.into_bytes() {
                        Some(bytes) => bytes,
                        None => continue,
                    }
                }
                _ => continue,
            };
            if payload.len() > self.config.max_message_bytes {
                self.refuse(&channel, "larger than --redis-max-message-bytes");
                continue;
            }
            let channel: &str = &channel;
            for adapter in self.live_adapters() {
                if adapter.on_message(channel, &payload) {
                    break;
                }
            }
        }
    }
}

fn fail_fast() -> Options {
    Options {
        fail_fast: true,
        timeout: Some(Duration::from_secs(2)),
        ..Options::default()
    }
}

/// The URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Weak};
    use std::time::Duration;

    use super::*;
    use crate::adapter::redis::{RedisAdapterFactory, RedisConfig};
    use crate::adapter::test_support::Recorder;
    use crate::adapter::{AdapterFactory, BroadcastOptions, BroadcastPacket, Room, SocketTable};
    use crate::codec::{Packet, PacketKind};
    use crate::sid::Sid;

    /// The Redis the tests share (`IOPLEX_TEST_REDIS`, default the machine's 127.0.0.1:6379); every
    /// test uses a channel prefix of its own, so nothing is left behind and nothing collides.
    pub(crate) fn redis_url() -> String {
        std::env::var("IOPLEX_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    async fn factory(key: &str) -> RedisAdapterFactory {
        let mut config = RedisConfig::new(redis_url());
        config.key = key.to_owned();
        let factory = RedisAdapterFactory::start(config).await.expect("bus");
        assert!(
            factory.bus().is_connected(),
            "the test Redis at {} answers",
            redis_url()
        );
        factory
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_broadcast_crosses_to_the_node_holding_the_room() {
        let key = format!("ioplex-test-{}", Sid::random());
        let (a, b) = (factory(&key).await, factory(&key).await);
        let table_b = Arc::new(Recorder::default());
        let adapter_a = a.create("/", Weak::<Recorder>::new() as Weak<dyn SocketTable>);
        let adapter_b = b.create("/", Arc::downgrade(&table_b) as Weak<dyn SocketTable>);
        let member = Sid::random();
        adapter_b.add_all(member, &[Room::of_socket(member), "room".into()]);
        let packet = BroadcastPacket::new(Packet {
            kind: PacketKind::Event,
            nsp: "/".into(),
            id: None,
            data: Some(serde_json::json!(["hello"])),
            attachments: Vec::new(),
        });
        let opts = BroadcastOptions {
            rooms: vec!["room".into()],
            ..Default::default()
        };
        // Subscribing is asynchronous: publish until the first copy arrives.
        for _ in 0..50 {
            adapter_a.broadcast(&packet, &opts);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !table_b.delivered.lock().expect("lock").is_empty() {
                break;
            }
        }
        assert_eq!(
            table_b.delivered.lock().expect("lock").first(),
            Some(&member)
        );
        assert!(
            b.bus()
                .stats
                .received
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_namespace_made_again_at_once_keeps_its_subscriptions() {
        let key = format!("ioplex-test-{}", Sid::random());
        let (a, b) = (factory(&key).await, factory(&key).await);
        let table_b = Arc::new(Recorder::default());
        let weak_b = || Arc::downgrade(&table_b) as Weak<dyn SocketTable>;
        let adapter_a = a.create("/", Weak::<Recorder>::new() as Weak<dyn SocketTable>);
        // The namespace's last client leaves and a new one arrives at once: the old adapter's
        // UNSUBSCRIBE must not undo the new one's SUBSCRIBE of the same channels.
        for _ in 0..20 {
            drop(b.create("/", weak_b()));
        }
        let adapter_b = b.create("/", weak_b());
        let member = Sid::random();
        adapter_b.add_all(member, &[Room::of_socket(member), "room".into()]);
        let packet = BroadcastPacket::new(Packet {
            kind: PacketKind::Event,
            nsp: "/".into(),
            id: None,
            data: Some(serde_json::json!(["again"])),
            attachments: Vec::new(),
        });
        let opts = BroadcastOptions {
            rooms: vec!["room".into()],
            ..Default::default()
        };
        // Subscribing is asynchronous: publish until a copy arrives. With the race, none ever does.
        for _ in 0..50 {
            adapter_a.broadcast(&packet, &opts);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !table_b.delivered.lock().expect("lock").is_empty() {
                break;
            }
        }
        assert_eq!(
            table_b.delivered.lock().expect("lock").first(),
            Some(&member)
        );
        let servers = a
            .bus()
            .numsub(&format!("{key}-request#/#"))
            .await
            .expect("numsub");
        assert_eq!(servers, 2, "both nodes still listen for requests");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_redis_leaves_the_node_serving_alone() {
        let mut config = RedisConfig::new("redis://127.0.0.1:1");
        config.key = "unreachable".into();
        let bus = RedisBus::start(config)
            .await
            .expect("start returns even so");
        assert!(!bus.is_connected());
        let err = bus
            .numsub("unreachable-request#/#")
            .await
            .expect_err("no fleet requests while down");
        assert!(err.to_string().to_lowercase().contains("redis"), "{err}");
    }

    #[test]
    fn logged_urls_never_show_a_password() {
        assert_eq!(
            redact("redis://user:s3cret@10.0.0.5:6379/0"),
            "redis://***@10.0.0.5:6379/0"
        );
        assert_eq!(redact("rediss://:s3cret@host"), "rediss://***@host");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
