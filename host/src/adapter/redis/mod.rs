//! Redis adapters, wire-compatible with Node's `@socket.io/redis-adapter` 8.x and `@socket.io/redis-emitter` 5.x.
//!
//! [`RedisAdapterFactory`] gives every namespace a [`classic::RedisAdapter`] sharing one [`bus::RedisBus`]
//! (two Redis connections per node). ioplex nodes and Node servers on the same Redis and key prefix form
//! one fleet: same channels, same msgpack and JSON messages, same request types.

pub mod bus;
pub mod classic;
mod inbox;
pub mod messages;
pub mod shard_subscriptions;
pub mod sharded;
pub mod sharded_wire;
pub mod streams;
pub mod wire;

/// Decoding bounds and msgpack conversions, shared with the msgpack parser in [`crate::codec`].
pub use crate::codec::{bounds, msgpack};

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Adapter, AdapterFactory, SocketTable};

pub use bus::{BusError, RedisBus};
pub use sharded::{ClusterConfig, ShardedAdapterFactory, ShardedBus, SubscriptionMode};
pub use streams::{StreamsAdapterFactory, StreamsBus, StreamsConfig};

/// Bounds of the buffer that holds broadcasts while Redis is unreachable.
#[derive(Clone, Debug)]
pub struct OutageLimits {
    /// Most messages held; the oldest are dropped beyond it.
    pub max_messages: usize,
    /// Most bytes held; the oldest are dropped beyond it.
    pub max_bytes: usize,
    /// Messages older than this when Redis returns are dropped instead of sent late.
    pub max_age: Duration,
}

impl Default for OutageLimits {
    fn default() -> Self {
        OutageLimits {
            max_messages: 10_000,
            max_bytes: 16 << 20,
            max_age: Duration::from_secs(30),
        }
    }
}

/// Which Node adapter a fleet on one Redis speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RedisAdapterKind {
    /// `@socket.io/redis-adapter` (pub/sub; nothing kept).
    #[default]
    Classic,
    /// `@socket.io/redis-streams-adapter` (a stream that keeps what it carried; connection state
    /// recovery across the fleet).
    Streams,
}

impl std::str::FromStr for RedisAdapterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(RedisAdapterKind::Classic),
            "streams" => Ok(RedisAdapterKind::Streams),
            other => Err(format!(
                "unknown Redis adapter {other:?}: classic or streams"
            )),
        }
    }
}

/// Settings of the Redis adapter (Node's option names in parentheses).
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Which adapter: classic pub/sub or streams.
    pub adapter: RedisAdapterKind,
    /// Connection state recovery's window with the streams adapter (`maxDisconnectionDuration`);
    /// `None` turns it off.
    pub recovery_window: Option<Duration>,
    /// Entries the streams adapter's stream keeps, roughly (`maxLen`).
    pub stream_max_len: u64,
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
    pub url: String,
    /// Channel prefix (`key`), `socket.io` by default so Node servers with default options share the channels.
    pub key: String,
    /// How long fleet requests wait for every node (`requestsTimeout`).
    pub requests_timeout: Duration,
    /// Answer requests on the requester's own channel (`publishOnSpecificResponseChannel`).
    pub publish_on_specific_response_channel: bool,
    /// Reconnect delay grows by this much per failed attempt...
    pub reconnect_step: Duration,
    /// ...up to this cap, and attempts never stop. Broadcasts held during an outage are sent this long
    /// after the reconnect, so that the other nodes (with the same cap) are subscribed again.
    pub reconnect_max: Duration,
    /// The outage buffer's bounds.
    pub outage: OutageLimits,
    /// Largest message accepted from Redis; larger ones are dropped unread and counted
    /// (`ioplex_redis_refused_total`).
    pub max_message_bytes: usize,
    /// Longest ack timeout a peer's broadcast-with-ack may ask for; longer ones are cut to it.
    pub max_ack_timeout: Duration,
    /// Rooms a peer's join may bring a local socket to (the tenant's `max-rooms-per-socket`).
    pub max_rooms_per_socket: usize,
    /// Answer peers' `fetchSockets` with the sockets' cookie and authorization headers and CONNECT
    /// `auth`; off by default, since any peer on the channels would read them.
    pub share_credentials: bool,
}

/// Default of [`RedisConfig::max_message_bytes`]: four times Node's `maxHttpBufferSize`, room for one
/// client message and its envelope.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4_000_000;

/// A subscriber client from `builder` whose event channels hold `capacity` messages. fred gives a
/// client nine event channels and allocates every slot of each up front, so only subscribers get
/// more than its default of 32 (build other clients from `builder` first); the ones that carry every
/// broadcast get [`inbox::SUBSCRIBER_RING`] and an [`inbox::Inbox`] behind it that grows with use.
pub(crate) fn build_subscriber(
    builder: &mut fred::types::Builder,
    capacity: usize,
) -> Result<fred::clients::SubscriberClient, fred::error::Error> {
    builder.with_performance_config(|perf| perf.broadcast_channel_capacity = capacity);
    builder.build_subscriber_client()
}

impl RedisConfig {
    /// Node's defaults for a Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            adapter: RedisAdapterKind::Classic,
            recovery_window: Some(Duration::from_millis(120_000)),
            stream_max_len: 10_000,
            url: url.into(),
            key: "socket.io".into(),
            requests_timeout: Duration::from_millis(5000),
            publish_on_specific_response_channel: false,
            reconnect_step: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            outage: OutageLimits::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_ack_timeout: Duration::from_secs(60),
            max_rooms_per_socket: 100,
            share_credentials: false,
        }
    }
}

impl RedisConfig {
    /// The streams adapter's settings on this Redis: the stream and channels are named after the
    /// prefix, and sessions are kept under `sio:session:` for the default prefix (Node's default),
    /// under `<prefix>:session:` otherwise, so tenants never share session keys.
    pub fn streams(&self) -> StreamsConfig {
        let mut config = StreamsConfig::new(self.url.clone());
        config.key = self.key.clone();
        if self.key != "socket.io" {
            config.session_prefix = format!("{}:session:", self.key);
        }
        config.requests_timeout = self.requests_timeout;
        config.recovery_window = self.recovery_window;
        config.max_len = self.stream_max_len.max(1);
        config.policy = PeerPolicy::of(self);
        config.max_message_bytes = self.max_message_bytes;
        config
    }
}

/// What a namespace's adapter grants the fleet's peers: one tenant's settings, so that tenants sharing
/// a connection (and a tenant whose settings change) each get their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Rooms a peer's `socketsJoin` may bring a local socket to.
    pub max_rooms_per_socket: usize,
    /// Whether `fetchSockets` answers carry cookies, `authorization` and CONNECT `auth`.
    pub share_credentials: bool,
}

impl PeerPolicy {
    /// The policy a configuration sets.
    pub fn of(config: &RedisConfig) -> Self {
        PeerPolicy {
            max_rooms_per_socket: config.max_rooms_per_socket,
            share_credentials: config.share_credentials,
        }
    }
}

/// Gives each namespace a Redis adapter on a shared bus.
#[derive(Clone)]
pub struct RedisAdapterFactory {
    bus: Arc<RedisBus>,
    policy: PeerPolicy,
}

impl RedisAdapterFactory {
    /// Connects to Redis (see [`RedisBus::start`]).
    pub async fn start(config: RedisConfig) -> Result<Self, BusError> {
        let policy = PeerPolicy::of(&config);
        Ok(RedisAdapterFactory {
            bus: RedisBus::start(config).await?,
            policy,
        })
    }

    /// Adapters on the same connection under another peer policy.
    pub fn with_policy(&self, policy: PeerPolicy) -> Self {
        RedisAdapterFactory {
            bus: Arc::clone(&self.bus),
            policy,
        }
    }

    /// The shared connection (state and counters).
    pub fn bus(&self) -> &Arc<RedisBus> {
        &self.bus
    }
}

impl AdapterFactory for RedisAdapterFactory {
    fn create(&self, nsp: &str, sockets: Weak<dyn SocketTable>) -> Arc<dyn Adapter> {
        classic::RedisAdapter::new(nsp, sockets, Arc::clone(&self.bus), self.policy)
    }
}
