//! The `ioplex` binary: with no arguments it serves the embedded default (one node, in-memory adapter,
//! every namespace open, the client contract) on 0.0.0.0:3000.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use ioplex::adapter::redis::{RedisAdapterFactory, RedisConfig};
use ioplex::contract::{self, ContractConfig};
use ioplex::engineio::{AllowedOrigins, EngineConfig, Transports};
use ioplex::serve::{Router, bind, serve};
use ioplex::socketio::{SocketIo, SocketIoConfig};

/// Multi-tenant Socket.IO gateway (Engine.IO v4 / Socket.IO v5).
///
/// With no options it serves the embedded default: a single node with an in-memory adapter, every
/// namespace open, and the client contract (join / leave / publish / request events). Timing and size
/// options default to Node socket.io's values.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Address to listen on. The default also listens on [::] so clients resolving `localhost` to ::1 connect.
    #[arg(long, env = "IOPLEX_HOST", default_value = "0.0.0.0")]
    host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,
    /// Path of the Socket.IO endpoint (clients' `path` option).
    #[arg(long, env = "IOPLEX_PATH", default_value = "/socket.io/")]
    path: String,
    /// Milliseconds between server pings (Node's pingInterval).
    #[arg(long, env = "IOPLEX_PING_INTERVAL", default_value_t = 25_000)]
    ping_interval: u64,
    /// Milliseconds a client has to answer a ping before it is dropped (Node's pingTimeout).
    #[arg(long, env = "IOPLEX_PING_TIMEOUT", default_value_t = 20_000)]
    ping_timeout: u64,
    /// Milliseconds a new connection has to join a namespace before it is closed (Node's connectTimeout).
    #[arg(long, env = "IOPLEX_CONNECT_TIMEOUT", default_value_t = 45_000)]
    connect_timeout: u64,
    /// Milliseconds a polling client has to finish upgrading to websocket.
    #[arg(long, env = "IOPLEX_UPGRADE_TIMEOUT", default_value_t = 10_000)]
    upgrade_timeout: u64,
    /// Largest polling body or websocket message accepted, in bytes (Node's maxHttpBufferSize).
    /// Larger ones close the connection: HTTP 413 for polling, close code 1009 for websocket.
    #[arg(long, env = "IOPLEX_MAX_HTTP_BUFFER_SIZE", default_value_t = 1_000_000)]
    max_http_buffer_size: usize,
    /// Transports clients may use, comma-separated.
    #[arg(
        long,
        env = "IOPLEX_TRANSPORTS",
        value_delimiter = ',',
        default_value = "polling,websocket"
    )]
    transports: Vec<Transport>,
    /// Origins whose pages may use polling (CORS), comma-separated; `*` allows every origin. Allowed
    /// origins are echoed with credentials allowed. Default: same-origin pages only.
    #[arg(long, env = "IOPLEX_CORS_ORIGINS", value_delimiter = ',')]
    cors_origin: Vec<String>,
    /// Outgoing bytes queued for one client before it is disconnected as too slow.
    #[arg(long, env = "IOPLEX_MAX_BUFFERED_BYTES", default_value_t = 8 << 20)]
    max_buffered_bytes: usize,
    /// Namespaces clients may open on demand; further ones are refused with `Too many namespaces`.
    #[arg(long, env = "IOPLEX_MAX_DYNAMIC_NAMESPACES", default_value_t = 1000)]
    max_dynamic_namespaces: usize,
    /// Rooms a client may join through the client contract.
    #[arg(long, env = "IOPLEX_MAX_ROOMS_PER_SOCKET", default_value_t = 1000)]
    max_rooms_per_socket: usize,
    /// Redis to share rooms and broadcasts with the rest of the fleet (ioplex and Node socket.io servers
    /// using `@socket.io/redis-adapter`): `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    /// Without it the node serves alone with an in-memory adapter.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Channel prefix shared with the fleet (the Node adapter's `key` option).
    #[arg(long, env = "IOPLEX_REDIS_KEY", default_value = "socket.io")]
    redis_key: String,
    /// Milliseconds fleet requests (fetchSockets, allRooms, ...) wait for every node (`requestsTimeout`).
    #[arg(long, env = "IOPLEX_REDIS_REQUESTS_TIMEOUT", default_value_t = 5000)]
    redis_requests_timeout: u64,
    /// Longest wait between Redis reconnect attempts, in ms; the delay grows by
    /// --redis-reconnect-step per attempt up to it, and attempts never stop.
    #[arg(long, env = "IOPLEX_REDIS_RECONNECT_MAX", default_value_t = 500)]
    redis_reconnect_max: u64,
    /// Growth of the delay between Redis reconnect attempts, in ms.
    #[arg(long, env = "IOPLEX_REDIS_RECONNECT_STEP", default_value_t = 50)]
    redis_reconnect_step: u64,
    /// Broadcasts held while Redis is unreachable, sent after it returns; older ones are dropped past this.
    #[arg(long, env = "IOPLEX_REDIS_OUTAGE_BUFFER", default_value_t = 10_000)]
    redis_outage_buffer: usize,
    /// Log format.
    #[arg(long, env = "IOPLEX_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Transport {
    Polling,
    Websocket,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Cli {
    fn engine_config(&self) -> anyhow::Result<EngineConfig> {
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
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let engine_config = cli.engine_config()?;

    let mut builder = SocketIo::builder();
    let mut readiness: Option<ioplex::serve::Readiness> = None;
    let mode = match &cli.redis_url {
        Some(url) => {
            let mut config = RedisConfig::new(url.clone());
            config.key = cli.redis_key.clone();
            config.requests_timeout = Duration::from_millis(cli.redis_requests_timeout);
            config.reconnect_max = Duration::from_millis(cli.redis_reconnect_max.max(1));
            config.reconnect_step = Duration::from_millis(cli.redis_reconnect_step.max(1));
            config.outage.max_messages = cli.redis_outage_buffer.max(1);
            let factory = RedisAdapterFactory::start(config).await?;
            let bus = Arc::clone(factory.bus());
            readiness = Some(Arc::new(move || {
                if bus.is_connected() {
                    Ok(())
                } else {
                    Err("Redis unreachable: serving local clients only, reconnecting".into())
                }
            }));
            builder = builder.adapter(Arc::new(factory));
            "fleet: Redis adapter"
        }
        None => "embedded default: single node, in-memory adapter",
    };
    let io = builder
        .config(SocketIoConfig {
            connect_timeout: Duration::from_millis(cli.connect_timeout),
            max_dynamic_namespaces: cli.max_dynamic_namespaces,
            ..SocketIoConfig::default()
        })
        .dynamic_namespaces(contract::handlers(ContractConfig {
            max_rooms_per_socket: cli.max_rooms_per_socket,
            ..ContractConfig::default()
        }))
        .build();
    let engine = io.engine(engine_config);
    let path = engine.config().path.clone();

    let listeners = bind(cli.host, cli.port)
        .await
        .with_context(|| format!("cannot listen on {}:{}", cli.host, cli.port))?;
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, %path, mode, "ioplex listening");
        }
    }
    let mut router = Router::new(vec![engine]);
    if let Some(check) = readiness {
        router = router.with_readiness(check);
    }
    serve(listeners, router, shutdown_signal()).await?;
    tracing::info!("ioplex stopped");
    Ok(())
}
