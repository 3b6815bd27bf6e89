//! The `ioplex` binary: with no arguments it serves the embedded default (one node, in-memory adapter,
//! every namespace open, the client contract) on 0.0.0.0:3000.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use ioplex::adapter::redis::RedisConfig;
use ioplex::contract::ContractConfig;
use ioplex::engineio::{AllowedOrigins, EngineConfig, Transports};
use ioplex::plugin::{
    EngineOptions, FleetKey, PluginDir, PluginFleet, PluginManifest, PluginRuntime,
};
use ioplex::serve::{Router, bind, serve};
use ioplex::socketio::SocketIoConfig;
use ioplex::tenant::config::valid_tenant_id;
use ioplex::tenant::{DEFAULT_TENANT, GatewayDefaults, TenantConfig, Tenants, TenantsConfig};

/// Multi-tenant Socket.IO gateway (Engine.IO v4 / Socket.IO v5).
///
/// With no options it serves the embedded default: a single node with an in-memory adapter, every
/// namespace open, and the client contract (join / leave / publish / request / members events). With
/// --config it serves many tenants, each with its own rooms, limits, Redis channels and plugins, plus an
/// HTTP API for their backends. Timing and size options default to Node socket.io's values.
#[derive(Parser, Debug)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve Socket.IO clients (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List the tenants a configuration defines: how each is reached, its limits, and whether each of
    /// its plugins would be served; with --url, also the live connections of a running node.
    Tenants {
        /// Tenant configuration (default: the tenants a gateway without one serves).
        #[arg(long, short = 'c', env = "IOPLEX_CONFIG")]
        config: Option<PathBuf>,
        /// Plugin directory to validate (`<dir>/<tenant>/<name>.wasm`).
        #[arg(long, env = "IOPLEX_PLUGINS_DIR")]
        plugins_dir: Option<PathBuf>,
        /// A running node (e.g. http://127.0.0.1:3000) whose /metrics give each tenant's connections.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Validate a plugin as the gateway would before serving it: compile, check imports and exports
    /// against the ioplex:plugin contract, instantiate, and call each hook once. Prints the contract
    /// version and the hooks it implements; exits 1 if the gateway would refuse it.
    Check {
        /// The component (.wasm).
        file: PathBuf,
        /// Its manifest (settings and limits); default: FILE with a .toml extension, if present.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

/// Options of `ioplex serve`.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Tenant configuration (TOML; see README). Re-read when it or its tenants directory changes.
    /// Without it the gateway serves the single default tenant (plus one per plugin directory).
    #[arg(long, short = 'c', env = "IOPLEX_CONFIG")]
    config: Option<PathBuf>,
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
    #[arg(long, env = "IOPLEX_MAX_ROOMS_PER_SOCKET", default_value_t = 100)]
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
    /// Largest message accepted from Redis, in bytes; larger ones are dropped unread and counted.
    #[arg(long, env = "IOPLEX_REDIS_MAX_MESSAGE_BYTES", default_value_t = ioplex::adapter::redis::DEFAULT_MAX_MESSAGE_BYTES)]
    redis_max_message_bytes: usize,
    /// Answer fleet peers' `fetchSockets` with sockets' cookie / authorization headers and CONNECT `auth`
    /// (Node's behaviour). Off: any client of the Redis could read them. Per tenant: `share-credentials`.
    #[arg(long, env = "IOPLEX_FLEET_SHARE_CREDENTIALS")]
    fleet_share_credentials: bool,
    /// Broadcasts held while Redis is unreachable, sent after it returns; older ones are dropped past this.
    #[arg(long, env = "IOPLEX_REDIS_OUTAGE_BUFFER", default_value_t = 10_000)]
    redis_outage_buffer: usize,
    /// Secret (32+ bytes) shared by the fleet's nodes, never stored in Redis, that signs plugin uploads
    /// shared through Redis; without it uploads serve on the receiving node only. `openssl rand -hex 32`.
    #[arg(long, env = "IOPLEX_FLEET_KEY", hide_env_values = true)]
    fleet_key: Option<String>,
    /// Directory of tenant plugins: `<dir>/<tenant>/<name>.wasm` plus an optional `<name>.toml`
    /// (settings, limits). Watched: a changed file is validated and swapped in with no restart; a
    /// broken one is refused and the previous version keeps serving. Default: ./plugins.d if it exists.
    #[arg(long, env = "IOPLEX_PLUGINS_DIR")]
    plugins_dir: Option<PathBuf>,
    /// How often the plugin directory is checked for changes, in ms.
    #[arg(long, env = "IOPLEX_PLUGINS_POLL", default_value_t = 1000)]
    plugins_poll: u64,
    /// Where compiled plugins are cached between restarts (default: $XDG_CACHE_HOME/ioplex/plugins or
    /// ~/.cache/ioplex/plugins); `none` turns the cache off.
    #[arg(long, env = "IOPLEX_PLUGIN_CACHE_DIR")]
    plugin_cache_dir: Option<String>,
    /// Serve the files of this directory on the same port, for paths nothing else claims (a demo page
    /// and its client bundle, say).
    #[arg(long, env = "IOPLEX_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// On SIGTERM or Ctrl-C, how long to drain (ms): /readyz turns 503, new handshakes are refused,
    /// open sessions are closed so clients reconnect elsewhere (spread over half this time when there
    /// are many), then the process exits 0.
    #[arg(long, env = "IOPLEX_SHUTDOWN_GRACE", default_value_t = 10_000)]
    shutdown_grace: u64,
    /// HTTP connections held at once (websockets not included); past it the oldest idle connection is
    /// closed to make room. Default: the file-descriptor limit less a reserve.
    #[arg(long, env = "IOPLEX_MAX_HTTP_CONNECTIONS")]
    max_http_connections: Option<usize>,
    /// Idle HTTP connections (no request in flight) one client address may hold; a new one closes that
    /// address's oldest. 0: no cap (behind a load balancer that pools idle connections).
    #[arg(
        long,
        env = "IOPLEX_MAX_IDLE_CONNECTIONS_PER_IP",
        default_value_t = 128
    )]
    max_idle_connections_per_ip: usize,
    /// Milliseconds a client has to send a request's headers, on a new or a kept-alive connection.
    #[arg(long, env = "IOPLEX_HEADER_READ_TIMEOUT", default_value_t = 10_000)]
    header_read_timeout: u64,
    /// Largest request head (request line and headers), in bytes; larger ones get 431 (Node's default).
    #[arg(long, env = "IOPLEX_MAX_HEADER_BYTES", default_value_t = 16 << 10)]
    max_header_bytes: usize,
    /// Bearer token /metrics requires (it lists tenant ids and client-chosen namespaces); without it
    /// /metrics is open, for a port only the monitoring network reaches.
    #[arg(long, env = "IOPLEX_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
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

impl ServeArgs {
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
    // Colours only on a terminal: log files and collectors get plain `key=value` text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
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

fn plugin_engine_options(cache_dir: Option<&str>) -> EngineOptions {
    let mut options = EngineOptions::default();
    match cache_dir {
        Some("none") => options.cache_dir = None,
        Some(dir) => options.cache_dir = Some(PathBuf::from(dir)),
        None => {}
    }
    options
}

/// A plugin runtime for validating files from the command line: no instance pool, no compile cache.
fn checking_runtime() -> anyhow::Result<Arc<PluginRuntime>> {
    let mut options = plugin_engine_options(None);
    options.pooling = false;
    options.cache_dir = None;
    Ok(PluginRuntime::new(options)?)
}

/// The manifest of the plugin at `wasm`: `explicit` (which must be readable), else `<wasm>.toml` if
/// it exists, else the defaults.
fn read_manifest(wasm: &Path, explicit: Option<&Path>) -> anyhow::Result<PluginManifest> {
    let path = explicit.map_or_else(|| wasm.with_extension("toml"), Path::to_path_buf);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(PluginManifest::parse(&text, &path.display().to_string())?),
        Err(_) if explicit.is_none() => Ok(PluginManifest::default()),
        Err(err) => anyhow::bail!("cannot read {}: {err}", path.display()),
    }
}

/// `ioplex plugin check`: exit code 0 if the gateway would serve the plugin, 1 if it would refuse it.
fn check_plugin(file: &Path, manifest: Option<&Path>) -> anyhow::Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let manifest = read_manifest(file, manifest)?;
    let runtime = checking_runtime()?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let started = Instant::now();
    match runtime.prepare("check", name, &bytes, manifest) {
        Ok(plugin) => {
            let hooks: Vec<_> = plugin.hooks().iter().map(|h| h.name()).collect();
            println!("{}: ok", file.display());
            println!("  contract: {}", ioplex::plugin::CONTRACT);
            println!("  hooks:    {}", hooks.join(", "));
            println!("  sha256:   {}", plugin.sha256());
            println!(
                "  size:     {} bytes, compiled and smoke-tested in {} ms",
                plugin.size(),
                started.elapsed().as_millis()
            );
            Ok(true)
        }
        Err(err) => {
            println!("{}: refused: {err}", file.display());
            Ok(false)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Plugin(PluginCommand::Check { file, manifest })) => {
            init_tracing(LogFormat::Text);
            let ok = check_plugin(&file, manifest.as_deref())?;
            return Ok(if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            });
        }
        Some(Command::Tenants {
            config,
            plugins_dir,
            url,
        }) => {
            init_tracing(LogFormat::Text);
            let ok =
                list_tenants(config.as_deref(), plugins_dir.as_deref(), url.as_deref()).await?;
            return Ok(if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            });
        }
        Some(Command::Serve(args)) => *args,
        None => cli.serve,
    };
    serve_gateway(args).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Live sessions per tenant and transport, from a running node's `/metrics`.
async fn live_connections(
    url: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, (u64, u64)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url
        .strip_prefix("http://")
        .context("--url must be http://host:port")?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot reach {authority}"))?;
    let token = std::env::var("IOPLEX_METRICS_TOKEN")
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {authority}\r\n{token}\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("no body in the /metrics answer")?;
    let mut live = std::collections::BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("ioplex_connections{tenant=\"") else {
            continue;
        };
        let Some((tenant, rest)) = rest.split_once("\",transport=\"") else {
            continue;
        };
        let Some((transport, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let n: u64 = value.trim().parse().unwrap_or(0);
        let entry: &mut (u64, u64) = live.entry(tenant.to_owned()).or_default();
        if transport == "websocket" {
            entry.0 = n;
        } else {
            entry.1 = n;
        }
    }
    Ok(live)
}

/// `ioplex tenants`: exit code 0 when the configuration and every plugin would be served.
async fn list_tenants(
    config: Option<&Path>,
    plugins_dir: Option<&Path>,
    url: Option<&str>,
) -> anyhow::Result<bool> {
    let tenants = match config {
        Some(file) => match TenantsConfig::load(file) {
            Ok(c) => c,
            Err(err) => {
                println!("configuration refused: {err}");
                return Ok(false);
            }
        },
        None => implicit_tenants("socket.io", plugins_dir),
    };
    let live = match url {
        Some(url) => Some(live_connections(url).await?),
        None => None,
    };
    let runtime = match plugins_dir {
        Some(_) => Some(checking_runtime()?),
        None => None,
    };
    let mut all_ok = true;
    for (id, t) in &tenants.tenants {
        let mut reached = Vec::new();
        if !t.hosts.is_empty() {
            reached.push(format!("hosts {}", t.hosts.join(", ")));
        }
        reached.push(format!("?tenant={}", t.query_value(id)));
        if t.default {
            reached.push("default".into());
        }
        println!("{id}: {}", reached.join("; "));
        let l = &t.limits;
        let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "  limits: connections {}, events/s {}, payload {}, rooms/socket {}; api keys: {}",
            show(l.max_connections.map(|v| v.to_string())),
            show(l.events_per_second.map(|v| v.to_string())),
            show(l.max_payload.map(|v| v.to_string())),
            show(l.max_rooms_per_socket.map(|v| v.to_string())),
            t.api_keys.len()
        );
        if let Some(live) = &live {
            let (ws, polling) = live.get(id).copied().unwrap_or_default();
            println!("  live: {ws} websocket, {polling} polling connections");
        }
        if let (Some(runtime), Some(dir)) = (&runtime, plugins_dir) {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(id))
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.retain(|p| p.extension().and_then(|e| e.to_str()) == Some("wasm"));
            files.sort();
            for file in files {
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("?")
                    .to_owned();
                let verdict = (|| -> anyhow::Result<String> {
                    let manifest = read_manifest(&file, None)?;
                    let bytes = std::fs::read(&file)?;
                    let plugin = runtime.prepare(id, &name, &bytes, manifest)?;
                    let hooks: Vec<_> = plugin.hooks().iter().map(|h| h.name()).collect();
                    Ok(format!(
                        "ok ({}, {})",
                        plugin.context().version,
                        hooks.join(", ")
                    ))
                })();
                match verdict {
                    Ok(text) => println!("  plugin {name}: {text}"),
                    Err(err) => {
                        all_ok = false;
                        println!("  plugin {name}: refused: {err:#}");
                    }
                }
            }
        }
    }
    Ok(all_ok)
}

/// The tenants served with no configuration file: `default` (taking requests that name no tenant, on
/// the gateway's own Redis channels), plus one per plugin directory, selected with `?tenant=<name>`.
fn implicit_tenants(redis_key: &str, plugins_dir: Option<&Path>) -> TenantsConfig {
    let mut config = TenantsConfig::default();
    config.tenants.insert(
        DEFAULT_TENANT.to_owned(),
        TenantConfig {
            default: true,
            redis_key: Some(redis_key.to_owned()),
            ..TenantConfig::default()
        },
    );
    if let Some(entries) = plugins_dir.and_then(|d| std::fs::read_dir(d).ok()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && valid_tenant_id(&name) && name != DEFAULT_TENANT {
                config.tenants.insert(name, TenantConfig::default());
            }
        }
    }
    config
}

/// Re-reads the configuration when its file or tenants directory changes; a broken edit is logged
/// and the running configuration stays.
fn watch_config(file: PathBuf, mut current: TenantsConfig, tenants: Arc<Tenants>) {
    fn stamp(
        file: &Path,
        dir: Option<&Path>,
    ) -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
        let meta = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| (m.modified().ok(), m.len()))
                .unwrap_or((None, 0))
        };
        let mut files = vec![file.to_path_buf()];
        if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let (modified, len) = meta(&p);
                (p, modified, len)
            })
            .collect()
    }
    tokio::spawn(async move {
        let mut seen = stamp(&file, current.tenants_dir.as_deref());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = stamp(&file, current.tenants_dir.as_deref());
            if now == seen {
                continue;
            }
            seen = now;
            match TenantsConfig::load(&file) {
                Ok(next) if next == current => {}
                Ok(next) => match tenants.reload(&next).await {
                    Ok(()) => {
                        tracing::info!(file = %file.display(), tenants = next.tenants.len(), "configuration reloaded");
                        current = next;
                    }
                    Err(err) => {
                        tracing::error!(error = %format!("{err:#}"), "configuration not applied; the previous one stays")
                    }
                },
                Err(err) => {
                    tracing::error!(error = %err, "configuration refused; the previous one stays")
                }
            }
        }
    });
}

async fn serve_gateway(cli: ServeArgs) -> anyhow::Result<()> {
    init_tracing(cli.log_format);
    let engine_config = cli.engine_config()?;
    let plugins_dir = cli.plugins_dir.clone().or_else(|| {
        let default = PathBuf::from("plugins.d");
        default.is_dir().then_some(default)
    });
    let plugins = match &plugins_dir {
        Some(dir) => {
            let runtime =
                PluginRuntime::new(plugin_engine_options(cli.plugin_cache_dir.as_deref()))?;
            let mut source = PluginDir::new(dir.clone(), Arc::clone(&runtime));
            let report = source.scan().await;
            tracing::info!(
                dir = %dir.display(),
                serving = report.installed.len(),
                refused = report.refused.len(),
                "plugins loaded"
            );
            source.watch(Duration::from_millis(cli.plugins_poll.max(50)));
            Some(runtime)
        }
        None => None,
    };

    let redis = cli.redis_url.as_ref().map(|url| {
        let mut config = RedisConfig::new(url.clone());
        config.key = cli.redis_key.clone();
        config.requests_timeout = Duration::from_millis(cli.redis_requests_timeout);
        config.reconnect_max = Duration::from_millis(cli.redis_reconnect_max.max(1));
        config.reconnect_step = Duration::from_millis(cli.redis_reconnect_step.max(1));
        config.outage.max_messages = cli.redis_outage_buffer.max(1);
        config.max_message_bytes = cli.redis_max_message_bytes.max(1024);
        config.share_credentials = cli.fleet_share_credentials;
        config
    });
    let defaults = GatewayDefaults {
        engine: engine_config,
        socketio: SocketIoConfig {
            connect_timeout: Duration::from_millis(cli.connect_timeout),
            max_dynamic_namespaces: cli.max_dynamic_namespaces,
            ..SocketIoConfig::default()
        },
        contract: ContractConfig {
            max_rooms_per_socket: cli.max_rooms_per_socket,
            ..ContractConfig::default()
        },
        redis,
        redis_key: cli.redis_key.clone(),
        plugins: plugins.clone(),
    };
    let path = defaults.engine.path.clone();
    let tenants_config = match &cli.config {
        Some(file) => TenantsConfig::load(file)
            .with_context(|| format!("cannot use the configuration {}", file.display()))?,
        None => implicit_tenants(&cli.redis_key, plugins_dir.as_deref()),
    };
    let tenants = Tenants::start(defaults, &tenants_config).await?;
    // Uploaded plugins travel to every node through the gateway's Redis.
    let plugin_fleet = match (&plugins, &cli.redis_url, &cli.fleet_key) {
        (Some(runtime), Some(url), Some(key)) => {
            let key = FleetKey::new(key).context("IOPLEX_FLEET_KEY")?;
            let known = Arc::clone(&tenants);
            let tenant_exists: ioplex::plugin::TenantExists =
                Arc::new(move |id: &str| known.get(id).is_some());
            Some(
                PluginFleet::start(url, &cli.redis_key, Arc::clone(runtime), key, tenant_exists)
                    .await?,
            )
        }
        (Some(_), Some(_), None) => {
            tracing::warn!(
                "no IOPLEX_FLEET_KEY: plugin uploads serve on the receiving node only (set the same key on every node to share them through Redis)"
            );
            None
        }
        _ => None,
    };
    if let Some(file) = &cli.config {
        watch_config(file.clone(), tenants_config, Arc::clone(&tenants));
    }
    let mode = match (&cli.config, &cli.redis_url) {
        (Some(_), _) => "tenants from configuration",
        (None, Some(_)) => "fleet: Redis adapter",
        (None, None) => "embedded default: single node, in-memory adapter",
    };
    let readiness: ioplex::serve::Readiness = {
        let tenants = Arc::clone(&tenants);
        Arc::new(move || {
            if tenants
                .redis_buses()
                .iter()
                .all(|(_, bus)| bus.is_connected())
            {
                Ok(())
            } else {
                Err("Redis unreachable: serving local clients only, reconnecting".into())
            }
        })
    };

    let listeners = bind(cli.host, cli.port)
        .await
        .with_context(|| format!("cannot listen on {}:{}", cli.host, cli.port))?;
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            let ids: Vec<String> = tenants.all().iter().map(|t| t.id().to_owned()).collect();
            tracing::info!(%addr, %path, mode, tenants = ?ids, "ioplex listening");
        }
    }
    let admission = ioplex::serve::Admission::new(ioplex::serve::ListenerLimits {
        max_connections: cli
            .max_http_connections
            .unwrap_or_else(ioplex::serve::admission::fd_budget),
        max_idle_per_ip: cli.max_idle_connections_per_ip,
        header_read_timeout: Duration::from_millis(cli.header_read_timeout.max(1)),
        max_header_bytes: cli.max_header_bytes.max(1024),
    });
    let mut router =
        Router::with_endpoints(Arc::clone(&tenants) as Arc<dyn ioplex::serve::Endpoints>)
            .with_admission(Arc::clone(&admission))
            .with_handler(
                "/metrics",
                ioplex::metrics::handler(
                    Arc::clone(&tenants),
                    plugins.clone(),
                    Arc::clone(admission.stats()),
                    cli.metrics_token.clone(),
                ),
            )
            .with_handler(
                ioplex::api::PREFIX,
                ioplex::api::handler(tenants, plugins, plugin_fleet),
            )
            .with_shutdown_grace(Duration::from_millis(cli.shutdown_grace))
            .with_readiness(readiness);
    if let Some(dir) = cli.static_dir.clone() {
        router = router.with_fallback(ioplex::static_files::handler(dir));
    }
    serve(listeners, router, shutdown_signal()).await?;
    tracing::info!("ioplex stopped");
    Ok(())
}
