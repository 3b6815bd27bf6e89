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
//!
//! [`bus`] holds the connections every namespace of a prefix shares and reads the stream;
//! [`adapter`] is a namespace's adapter; [`sessions`] keeps and restores sessions; [`wire`] is the
//! bytes.

mod adapter;
mod bus;
mod sessions;
pub mod wire;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use adapter::StreamsAdapter;
pub use bus::StreamsBus;

use super::{BusError, PeerPolicy};
use crate::adapter::{Adapter, AdapterFactory, SocketTable};

/// Settings of the streams adapter (Node's option names in parentheses).
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://`.
    pub url: String,
    /// Stream name and pub/sub channel prefix (`streamName`, `channelPrefix`), `socket.io` by default.
    pub key: String,
    /// Prefix of session keys (`sessionKeyPrefix`), `sio:session:` by default.
    pub session_prefix: String,
    /// Entries the stream keeps, roughly (`maxLen`, trimmed with `~`); entries older than the
    /// recovery window are trimmed too.
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
    /// Appends that failed (their broadcast was delivered here only, without an offset), and fleet
    /// requests or answers lost because the receive loop fell a whole channel behind.
    pub dropped: AtomicU64,
    /// Session writes (SET and DEL) sent.
    pub session_writes: AtomicU64,
    /// Sessions restored here.
    pub restored: AtomicU64,
    /// Recoveries that found no session, or whose offset had left the stream.
    pub not_restored: AtomicU64,
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
