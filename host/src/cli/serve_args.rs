//! The options of `ioplex serve`, and what they make: the Engine.IO, Socket.IO, Redis, contract and
//! listener settings of the gateway.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use ioplex::adapter::redis::RedisConfig;
use ioplex::contract::ContractConfig;
use ioplex::engineio::{AllowedOrigins, EngineConfig, Transports};
use ioplex::serve::ListenerLimits;
use ioplex::socketio::SocketIoConfig;

use super::LogFormat;

/// Options of `ioplex serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Tenant configuration (TOML; see README). Re-read when it or its tenants directory changes.
    /// Without it the gateway serves the single default tenant (plus one per plugin directory).
    #[arg(long, short = 'c', env = "IOPLEX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on. The default also listens on [::] so clients resolving `localhost` to ::1 connect.
    #[arg(long, env = "IOPLEX_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Path of the Socket.IO endpoint (clients' `path` option).
    #[arg(long, env = "IOPLEX_PATH", default_value = "/socket.io/")]
    pub path: String,
    /// Milliseconds between server pings (Node's pingInterval).
    #[arg(long, env = "IOPLEX_PING_INTERVAL", default_value_t = 25_000)]
    pub ping_interval: u64,
    /// Milliseconds a client has to answer a ping before it is dropped (Node's pingTimeout).
    #[arg(long, env = "IOPLEX_PING_TIMEOUT", default_value_t = 20_000)]
    pub ping_timeout: u64,
    /// Milliseconds a new connection has to join a namespace before it is closed (Node's connectTimeout).
    #[arg(long, env = "IOPLEX_CONNECT_TIMEOUT", default_value_t = 45_000)]
    pub connect_timeout: u64,
    /// Milliseconds a polling client has to finish upgrading to websocket.
    #[arg(long, env = "IOPLEX_UPGRADE_TIMEOUT", default_value_t = 10_000)]
    pub upgrade_timeout: u64,
    /// Largest polling body or websocket message accepted, in bytes (Node's maxHttpBufferSize).
    /// Larger ones close the connection: HTTP 413 for polling, close code 1009 for websocket.
    #[arg(long, env = "IOPLEX_MAX_HTTP_BUFFER_SIZE", default_value_t = 1_000_000)]
    pub max_http_buffer_size: usize,
    /// Transports clients may use, comma-separated.
    #[arg(
        long,
        env = "IOPLEX_TRANSPORTS",
        value_delimiter = ',',
        default_value = "polling,websocket"
    )]
    pub transports: Vec<Transport>,
    /// Origins whose pages may use polling (CORS), comma-separated; `*` allows every origin. Allowed
    /// origins are echoed with credentials allowed. Default: same-origin pages only.
    #[arg(long, env = "IOPLEX_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Outgoing bytes queued for one client before it is disconnected as too slow.
    #[arg(long, env = "IOPLEX_MAX_BUFFERED_BYTES", default_value_t = 8 << 20)]
    pub max_buffered_bytes: usize,
    /// Namespaces clients may open on demand; further ones are refused with `Too many namespaces`.
    #[arg(long, env = "IOPLEX_MAX_DYNAMIC_NAMESPACES", default_value_t = 1000)]
    pub max_dynamic_namespaces: usize,
    /// Connection state recovery: how long (ms) a socket whose connection dropped can come back with
    /// its id, rooms and data and get what it missed (Node's `maxDisconnectionDuration`); 0 turns it
    /// off. Kept in memory on a node without Redis, in Redis with `REDIS_ADAPTER=streams` (across the
    /// fleet); the classic and sharded adapters keep no log. With it on, every logged event carries its
    /// offset as a last argument.
    #[arg(long, env = "RECOVERY_WINDOW_MS", default_value_t = 120_000)]
    pub recovery_window_ms: u64,
    /// Broadcasts kept for recovery on one node (all namespaces of a tenant together).
    #[arg(long, env = "IOPLEX_RECOVERY_MAX_PACKETS", default_value_t = 10_000)]
    pub recovery_max_packets: usize,
    /// Rooms a client may join through the client contract.
    #[arg(long, env = "IOPLEX_MAX_ROOMS_PER_SOCKET", default_value_t = 100)]
    pub max_rooms_per_socket: usize,
    /// Redis to share rooms and broadcasts with the rest of the fleet (ioplex and Node socket.io servers
    /// using `@socket.io/redis-adapter`): `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    /// Without it the node serves alone with an in-memory adapter.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Which Node adapter the fleet on `REDIS_URL` speaks: `classic` (`@socket.io/redis-adapter`) or
    /// `streams` (`@socket.io/redis-streams-adapter`: a Redis stream, connection state recovery
    /// across the fleet).
    #[arg(long, env = "REDIS_ADAPTER", default_value = "classic")]
    pub redis_adapter: ioplex::adapter::redis::RedisAdapterKind,
    /// Entries the streams adapter's Redis stream keeps, roughly (Node's `maxLen`); entries older
    /// than the recovery window go too. A client away longer than the stream reaches back starts afresh.
    #[arg(long, env = "IOPLEX_REDIS_STREAM_MAX_LEN", default_value_t = 10_000)]
    pub redis_stream_max_len: u64,
    /// Redis Cluster seed nodes (`host:port,host:port`; the first may be `rediss://user:password@host:port`):
    /// the sharded adapter (Node's `createShardedAdapter`, SPUBLISH / SSUBSCRIBE) instead of the classic one.
    #[arg(long, env = "REDIS_CLUSTER_NODES", conflicts_with = "redis_url")]
    pub redis_cluster_nodes: Option<String>,
    /// Which rooms get a shard channel of their own with --redis-cluster-nodes: static, dynamic (Node's
    /// default) or dynamic-private. Every node of a fleet must use the same mode.
    #[arg(long, env = "REDIS_SUBSCRIPTION_MODE", default_value = "dynamic")]
    pub redis_subscription_mode: ioplex::adapter::redis::SubscriptionMode,
    /// Channel prefix shared with the fleet (the Node adapter's `key` option).
    #[arg(long, env = "IOPLEX_REDIS_KEY", default_value = "socket.io")]
    pub redis_key: String,
    /// Milliseconds fleet requests (fetchSockets, allRooms, ...) wait for every node (`requestsTimeout`).
    #[arg(long, env = "IOPLEX_REDIS_REQUESTS_TIMEOUT", default_value_t = 5000)]
    pub redis_requests_timeout: u64,
    /// Longest wait between Redis reconnect attempts, in ms; the delay grows by
    /// --redis-reconnect-step per attempt up to it, and attempts never stop.
    #[arg(long, env = "IOPLEX_REDIS_RECONNECT_MAX", default_value_t = 500)]
    pub redis_reconnect_max: u64,
    /// Growth of the delay between Redis reconnect attempts, in ms.
    #[arg(long, env = "IOPLEX_REDIS_RECONNECT_STEP", default_value_t = 50)]
    pub redis_reconnect_step: u64,
    /// Largest message accepted from Redis, in bytes; larger ones are dropped unread and counted.
    #[arg(long, env = "IOPLEX_REDIS_MAX_MESSAGE_BYTES", default_value_t = ioplex::adapter::redis::DEFAULT_MAX_MESSAGE_BYTES)]
    pub redis_max_message_bytes: usize,
    /// Answer fleet peers' `fetchSockets` with sockets' cookie / authorization headers and CONNECT `auth`
    /// (Node's behaviour). Off: any client of the Redis could read them. Per tenant: `share-credentials`.
    #[arg(long, env = "IOPLEX_FLEET_SHARE_CREDENTIALS")]
    pub fleet_share_credentials: bool,
    /// Broadcasts held while Redis is unreachable, sent after it returns; older ones are dropped past this.
    #[arg(long, env = "IOPLEX_REDIS_OUTAGE_BUFFER", default_value_t = 10_000)]
    pub redis_outage_buffer: usize,
    /// Secret (32+ bytes) shared by the fleet's nodes, never stored in Redis, that signs plugin uploads
    /// shared through Redis; without it uploads serve on the receiving node only. `openssl rand -hex 32`.
    #[arg(long, env = "IOPLEX_FLEET_KEY", hide_env_values = true)]
    pub fleet_key: Option<String>,
    /// Directory of tenant plugins: `<dir>/<tenant>/<name>.wasm` (or a signed, precompiled
    /// `<name>.cwasm`) plus an optional `<name>.toml` (settings, limits). Watched: a changed file is validated and swapped in with no restart; a
    /// broken one is refused and the previous version keeps serving. Default: ./plugins.d if it exists.
    #[arg(long, env = "IOPLEX_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// How often the plugin directory is checked for changes, in ms.
    #[arg(long, env = "IOPLEX_PLUGINS_POLL", default_value_t = 1000)]
    pub plugins_poll: u64,
    /// Public keys (hex, comma-separated) whose signed precompiled plugins (`.cwasm`, made by
    /// `ioplex plugin compile`) this node loads. Without one, precompiled plugins are refused.
    #[arg(long, env = "IOPLEX_PLUGIN_TRUSTED_KEYS", value_parser = ioplex::plugin::TrustedKeys::parse)]
    pub plugin_trusted_keys: Option<ioplex::plugin::TrustedKeys>,
    /// Where compiled plugins are cached between restarts (default: $XDG_CACHE_HOME/ioplex/plugins or
    /// ~/.cache/ioplex/plugins); `none` turns the cache off.
    #[arg(long, env = "IOPLEX_PLUGIN_CACHE_DIR")]
    pub plugin_cache_dir: Option<String>,
    /// Serve the files of this directory on the same port, for paths nothing else claims (a demo page
    /// and its client bundle, say).
    #[arg(long, env = "IOPLEX_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// On SIGTERM or Ctrl-C, how long to drain (ms): /readyz turns 503, new handshakes are refused,
    /// open sessions are closed so clients reconnect elsewhere (spread over half this time when there
    /// are many), then the process exits 0.
    #[arg(long, env = "IOPLEX_SHUTDOWN_GRACE", default_value_t = 10_000)]
    pub shutdown_grace: u64,
    /// HTTP connections held at once (websockets not included); past it the oldest idle connection is
    /// closed to make room. Default: the file-descriptor limit less a reserve.
    #[arg(long, env = "IOPLEX_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,
    /// Idle HTTP connections (no request in flight) one client address may hold; a new one closes that
    /// address's oldest. 0: no cap (behind a load balancer that pools idle connections).
    #[arg(
        long,
        env = "IOPLEX_MAX_IDLE_CONNECTIONS_PER_IP",
        default_value_t = 128
    )]
    pub max_idle_connections_per_ip: usize,
    /// Milliseconds a client has to send a request's headers, on a new or a kept-alive connection.
    #[arg(long, env = "IOPLEX_HEADER_READ_TIMEOUT", default_value_t = 10_000)]
    pub header_read_timeout: u64,
    /// Largest request head (request line and headers), in bytes; larger ones get 431 (Node's default).
    #[arg(long, env = "IOPLEX_MAX_HEADER_BYTES", default_value_t = 16 << 10)]
    pub max_header_bytes: usize,
    /// Bearer token /metrics requires (it lists tenant ids and client-chosen namespaces); without it
    /// /metrics is open, for a port only the monitoring network reaches.
    #[arg(long, env = "IOPLEX_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Log format.
    #[arg(long, env = "IOPLEX_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A transport clients may use.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

impl ServeArgs {
    /// The Engine.IO settings.
    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let transports = Transports {
            polling: self
                .transports
                .iter()
                .any(|t| matches!(t, Transport::Polling)),
            websocket: self
                .transports
                .iter()
                .any(|t| matches!(t, Transport::Websocket)),
        };
        anyhow::ensure!(
            transports.polling || transports.websocket,
            "--transports must name at least one of polling, websocket"
        );
        anyhow::ensure!(
            self.ping_interval > 0 && self.ping_timeout > 0,
            "ping interval and timeout must be positive"
        );
        let cors = if self.cors_origin.iter().any(|o| o == "*") {
            AllowedOrigins::Any
        } else if self.cors_origin.is_empty() {
            AllowedOrigins::SameOrigin
        } else {
            AllowedOrigins::List(self.cors_origin.clone())
        };
        Ok(EngineConfig {
            path: self.path.clone(),
            ping_interval: Duration::from_millis(self.ping_interval),
            ping_timeout: Duration::from_millis(self.ping_timeout),
            upgrade_timeout: Duration::from_millis(self.upgrade_timeout),
            max_payload: self.max_http_buffer_size,
            transports,
            cors,
            max_buffered_bytes: self.max_buffered_bytes,
            ..EngineConfig::default()
        })
    }

    /// The gateway's Redis settings, when `--redis-url` is given.
    pub fn redis_config(&self) -> Option<RedisConfig> {
        let url = self.redis_url.as_ref()?;
        let mut config = RedisConfig::new(url.clone());
        config.key = self.redis_key.clone();
        config.requests_timeout = Duration::from_millis(self.redis_requests_timeout);
        config.reconnect_max = Duration::from_millis(self.redis_reconnect_max.max(1));
        config.reconnect_step = Duration::from_millis(self.redis_reconnect_step.max(1));
        config.outage.max_messages = self.redis_outage_buffer.max(1);
        config.max_message_bytes = self.redis_max_message_bytes.max(1024);
        config.share_credentials = self.fleet_share_credentials;
        config.adapter = self.redis_adapter;
        config.stream_max_len = self.redis_stream_max_len;
        config.recovery_window =
            (self.recovery_window_ms > 0).then(|| Duration::from_millis(self.recovery_window_ms));
        Some(config)
    }

    /// The cluster settings, when `--redis-cluster-nodes` is given.
    pub fn cluster_config(&self) -> Option<ioplex::adapter::redis::ClusterConfig> {
        let seeds = self.redis_cluster_nodes.as_ref()?;
        let mut config = ioplex::adapter::redis::ClusterConfig::new(seeds.clone());
        config.key = self.redis_key.clone();
        config.mode = self.redis_subscription_mode;
        config.requests_timeout = Duration::from_millis(self.redis_requests_timeout);
        config.max_message_bytes = self.redis_max_message_bytes.max(1024);
        config.policy = ioplex::adapter::redis::PeerPolicy {
            max_rooms_per_socket: self.max_rooms_per_socket,
            share_credentials: self.fleet_share_credentials,
        };
        Some(config)
    }

    /// The Socket.IO settings every tenant starts from.
    pub fn socketio_config(&self) -> SocketIoConfig {
        SocketIoConfig {
            connect_timeout: Duration::from_millis(self.connect_timeout),
            max_dynamic_namespaces: self.max_dynamic_namespaces,
            recovery: (self.recovery_window_ms > 0).then(|| ioplex::socketio::RecoveryConfig {
                window: Duration::from_millis(self.recovery_window_ms),
                max_packets: self.recovery_max_packets.max(1),
                ..ioplex::socketio::RecoveryConfig::default()
            }),
            ..SocketIoConfig::default()
        }
    }

    /// The client contract's settings every tenant starts from.
    pub fn contract_config(&self) -> ContractConfig {
        ContractConfig {
            max_rooms_per_socket: self.max_rooms_per_socket,
            ..ContractConfig::default()
        }
    }

    /// What the listeners admit.
    pub fn listener_limits(&self) -> ListenerLimits {
        ListenerLimits {
            max_connections: self
                .max_http_connections
                .unwrap_or_else(ioplex::serve::admission::fd_budget),
            max_idle_per_ip: self.max_idle_connections_per_ip,
            header_read_timeout: Duration::from_millis(self.header_read_timeout.max(1)),
            max_header_bytes: self.max_header_bytes.max(1024),
        }
    }

    /// The plugin directory: `--plugins-dir`, else `./plugins.d` when it exists.
    pub fn plugins_dir_or_default(&self) -> Option<PathBuf> {
        self.plugins_dir.clone().or_else(|| {
            let default = PathBuf::from("plugins.d");
            default.is_dir().then_some(default)
        })
    }
}
