//! Tenant configuration: one TOML file, plus a directory with one file per tenant.
//!
//! ```toml
//! tenants-dir = "tenants.d"          # optional; relative to this file; <id>.toml each
//!
//! [tenants.acme]
//! hosts = ["chat.acme.example"]      # Host header (port ignored)
//! query = "acme"                     # ?tenant=acme (default: the id)
//! default = false                    # serves requests that name no tenant
//! cors-origins = ["https://app.acme.example"]
//! namespaces = ["/", "/support"]     # default: any namespace a client asks for
//! redis-url = "redis://10.0.0.5:6379"  # default: the gateway's REDIS_URL
//! redis-key = "socket.io"            # default: see `TenantConfig::redis_key`
//! # instead of redis-url: the tenant's Redis Cluster (sharded adapter, Node's createShardedAdapter)
//! # redis-cluster-nodes = "10.0.0.7:7000,10.0.0.8:7000"
//! # redis-subscription-mode = "dynamic"  # static | dynamic | dynamic-private; default: the gateway's
//! # redis-adapter = "streams"          # classic | streams; default: the gateway's REDIS_ADAPTER
//! # recovery-window-ms = 120000        # connection state recovery; 0 = off
//! # parser = "auto"                    # auto | default | msgpack (socket.io-msgpack-parser)
//! # allow-eio3 = true                  # Engine.IO v3 clients (socket.io-client 2.x)
//! api-keys = ["k_live_..."]
//! share-credentials = false          # fetchSockets replies carry cookie/authorization/auth
//!
//! [tenants.acme.limits]
//! max-connections = 10000            # per node
//! events-per-second = 20             # per socket, token bucket
//! events-burst = 40
//! on-rate-exceeded = "error"         # or "disconnect"
//! max-payload = 100000               # bytes per message
//! max-rooms-per-socket = 100
//! max-plugins = 16                   # installed at once
//! max-plugin-instances = 64          # warm and in use, all its plugins together
//!
//! [tenants.acme.admin-ui]            # the @socket.io/admin-ui dashboard (absent: none)
//! username = "admin"
//! password-hash = "$2b$10$..."       # bcrypt, as Node's instrument({ auth }) takes
//! namespace = "/admin"
//! readonly = false
//! mode = "development"               # or "production": statistics only
//! max-sockets-listed = 5000
//!
//! [tenants.acme.events]              # client contract event names
//! join = "join"
//! leave = "leave"
//! publish = "publish"
//! request = "request"
//! members = "members"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration that cannot be used; the gateway keeps its previous one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid TOML for this schema.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (line, column, field).
        reason: String,
    },
    /// The files are valid one by one but not together.
    #[error("{0}")]
    Invalid(String),
}

/// What a tenant is and may do.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TenantConfig {
    /// Host names that select this tenant (lower case, port ignored).
    pub hosts: Vec<String>,
    /// Value of the `tenant` query parameter that selects it (default: the tenant id).
    pub query: Option<String>,
    /// Serves requests that match no host and name no tenant.
    pub default: bool,
    /// Origins allowed to use polling and to open websockets; empty: same-origin pages only; `*`: any.
    pub cors_origins: Vec<String>,
    /// Namespaces clients may join; empty: any.
    pub namespaces: Vec<String>,
    /// Redis of the tenant's fleet (default: the gateway's).
    pub redis_url: Option<String>,
    /// Channel prefix in Redis (the Node adapter's `key`).
    pub redis_key: Option<String>,
    /// Which Node adapter the tenant's fleet speaks on its Redis: `classic` or `streams`
    /// (default: the gateway's `REDIS_ADAPTER`).
    pub redis_adapter: Option<String>,
    /// Connection state recovery's window in ms (in memory without Redis, in Redis with the streams
    /// adapter); 0 turns it off (default: the gateway's `RECOVERY_WINDOW_MS`).
    pub recovery_window_ms: Option<u64>,
    /// Socket.IO parsers its clients may speak: `auto` (each connection's first packet tells),
    /// `default` (socket.io-parser only) or `msgpack` (socket.io-msgpack-parser only).
    pub parser: Option<crate::codec::ParserChoice>,
    /// Accept Engine.IO v3 clients (socket.io-client 2.x); default true (Node's `allowEIO3`).
    pub allow_eio3: Option<bool>,
    /// Seed nodes of the tenant's own Redis Cluster (`host:port,…`), for the sharded adapter; not
    /// with `redis-url`.
    pub redis_cluster_nodes: Option<String>,
    /// Which rooms get a shard channel (`static`, `dynamic`, `dynamic-private`); default: the
    /// gateway's `REDIS_SUBSCRIPTION_MODE`.
    pub redis_subscription_mode: Option<String>,
    /// Keys the tenant's backend uses for the HTTP API.
    pub api_keys: Vec<String>,
    /// Answer the fleet's `fetchSockets` with the sockets' `cookie` / `authorization` headers and CONNECT
    /// `auth` (default: the gateway's `--fleet-share-credentials`, off). Anyone who can publish on the
    /// tenant's channels could read them.
    pub share_credentials: Option<bool>,
    /// Limits.
    pub limits: TenantLimits,
    /// Client contract event names.
    pub events: ContractEvents,
    /// The `@socket.io/admin-ui` dashboard; absent: no admin namespace.
    pub admin_ui: Option<crate::admin_ui::AdminUiConfig>,
}

/// Per-tenant limits; absent means the gateway's default.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TenantLimits {
    /// Sessions this tenant may hold on one node.
    pub max_connections: Option<usize>,
    /// Events per second one socket may send (token bucket refill).
    pub events_per_second: Option<f64>,
    /// Events one socket may send back to back (bucket size; default: twice the rate, at least 1).
    pub events_burst: Option<f64>,
    /// What happens past the rate.
    pub on_rate_exceeded: OnRateExceeded,
    /// Largest message, in bytes.
    pub max_payload: Option<usize>,
    /// Rooms one socket may be in.
    pub max_rooms_per_socket: Option<usize>,
    /// Plugins the tenant may have installed at once (default 16).
    pub max_plugins: Option<usize>,
    /// Plugin instances (warm and in use) the tenant's plugins may hold at once (default 64).
    pub max_plugin_instances: Option<usize>,
}

/// What a socket over its event rate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRateExceeded {
    /// The event is dropped and its ack says `rate_limited`.
    #[default]
    Error,
    /// The socket is disconnected.
    Disconnect,
}

/// Client contract event names, for apps whose own events already use `join` and the like.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContractEvents {
    /// Joins a room.
    pub join: String,
    /// Leaves a room.
    pub leave: String,
    /// Publishes to rooms.
    pub publish: String,
    /// Asks one socket.
    pub request: String,
    /// Lists a room's members.
    pub members: String,
}

impl Default for ContractEvents {
    fn default() -> Self {
        ContractEvents {
            join: "join".into(),
            leave: "leave".into(),
            publish: "publish".into(),
            request: "request".into(),
            members: "members".into(),
        }
    }
}

impl TenantConfig {
    /// The `tenant` query value that selects it.
    pub fn query_value<'a>(&'a self, id: &'a str) -> &'a str {
        self.query.as_deref().unwrap_or(id)
    }

    /// The Redis channel prefix: the configured one; else the gateway's key when the tenant has a Redis
    /// of its own (its Node fleet's channels as they are); else `<gateway key>/<id>`, so tenants sharing
    /// one Redis never share rooms.
    pub fn redis_key(&self, id: &str, gateway_key: &str) -> String {
        match (&self.redis_key, self.has_own_redis()) {
            (Some(key), _) => key.clone(),
            (None, true) => gateway_key.to_owned(),
            (None, false) => format!("{gateway_key}/{id}"),
        }
    }

    /// Whether the tenant names a Redis (or Redis Cluster) of its own.
    pub fn has_own_redis(&self) -> bool {
        self.redis_url.is_some() || self.redis_cluster_nodes.is_some()
    }

    /// Whether `other` differs only in what can change on live sessions (routing and API keys).
    pub fn same_sessions_as(&self, other: &TenantConfig) -> bool {
        let strip = |c: &TenantConfig| TenantConfig {
            hosts: Vec::new(),
            query: None,
            default: false,
            api_keys: Vec::new(),
            ..c.clone()
        };
        strip(self) == strip(other)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MainFile {
    #[serde(default)]
    tenants_dir: Option<PathBuf>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantConfig>,
}

/// Every tenant, by id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantsConfig {
    /// Tenants by id.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The directory of per-tenant files, if any (watched with the main file).
    pub tenants_dir: Option<PathBuf>,
}

/// `host:port` of a Redis URL (scheme, credentials and database left out), lower case.
/// A Redis Cluster named by its seed nodes (order, scheme and credentials ignored).
fn cluster_name(seeds: &str) -> String {
    let mut nodes: Vec<String> = seeds
        .split(',')
        .map(|seed| redis_server(seed.trim()))
        .filter(|seed| !seed.is_empty())
        .collect();
    nodes.sort();
    format!("cluster {}", nodes.join(","))
}

fn redis_server(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = authority.to_ascii_lowercase();
    if authority.contains(':') && !authority.ends_with(']') {
        authority
    } else {
        format!("{authority}:6379")
    }
}

/// Tenant ids: what may appear in paths, metrics labels and Redis keys.
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl TenantsConfig {
    /// The tenants served with no configuration file: [`super::DEFAULT_TENANT`] (taking requests that
    /// name no tenant, on the gateway's own Redis channels `redis_key`), plus one per subdirectory of
    /// the plugin directory, selected with `?tenant=<name>`.
    pub fn implicit(redis_key: &str, plugins_dir: Option<&Path>) -> Self {
        let mut config = TenantsConfig::default();
        config.tenants.insert(
            super::DEFAULT_TENANT.to_owned(),
            TenantConfig {
                default: true,
                redis_key: Some(redis_key.to_owned()),
                ..TenantConfig::default()
            },
        );
        if let Some(entries) = plugins_dir.and_then(|d| std::fs::read_dir(d).ok()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() && valid_tenant_id(&name) && name != super::DEFAULT_TENANT
                {
                    config.tenants.insert(name, TenantConfig::default());
                }
            }
        }
        config
    }

    /// Reads the main file and the tenants directory it names, and checks them together.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let main: MainFile = parse(file, &read(file)?)?;
        let mut tenants = main.tenants;
        let tenants_dir = main
            .tenants_dir
            .map(|d| file.parent().unwrap_or(Path::new(".")).join(d));
        if let Some(dir) = &tenants_dir {
            let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
                .collect();
            files.sort();
            for path in files {
                let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                    continue;
                };
                let tenant: TenantConfig = parse(&path, &read(&path)?)?;
                if tenants.insert(id.clone(), tenant).is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "tenant {id} is defined both in {} and in {}",
                        file.display(),
                        path.display()
                    )));
                }
            }
        }
        let config = TenantsConfig {
            tenants,
            tenants_dir,
        };
        config.check()?;
        config.check_channels(None, "socket.io")?;
        Ok(config)
    }

    /// No two tenants on one Redis with one channel prefix: they would read each other's broadcasts.
    /// `gateway_url` is the gateway's `REDIS_URL` (tenants without a `redis-url` use it); Redis pub/sub
    /// ignores the database number, so `/0` and `/1` of one server are the same channels.
    pub fn check_channels(
        &self,
        gateway_url: Option<&str>,
        gateway_key: &str,
    ) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<(String, String), &str> = BTreeMap::new();
        for (id, t) in &self.tenants {
            let server = match (
                &t.redis_cluster_nodes,
                t.redis_url.as_deref().or(gateway_url),
            ) {
                (Some(seeds), _) => cluster_name(seeds),
                (None, Some(url)) => redis_server(url),
                (None, None) => continue,
            };
            let key = t.redis_key(id, gateway_key);
            if let Some(other) = seen.insert((server.clone(), key.clone()), id) {
                return Err(ConfigError::Invalid(format!(
                    "tenants {other} and {id} would share the channels \"{key}\" on the Redis at \
                     {server}: give one of them its own redis-key"
                )));
            }
        }
        Ok(())
    }

    /// Ids valid, host names and query values unique, at most one default, Redis settings coherent.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut hosts = BTreeMap::new();
        let mut queries = BTreeMap::new();
        let mut default = None;
        for (id, t) in &self.tenants {
            if !valid_tenant_id(id) {
                return Err(ConfigError::Invalid(format!(
                    "tenant id \"{id}\": use 1 to 64 lower-case letters, digits, - or _"
                )));
            }
            for host in &t.hosts {
                if let Some(other) = hosts.insert(host.to_ascii_lowercase(), id) {
                    return Err(ConfigError::Invalid(format!(
                        "host {host} is claimed by tenants {other} and {id}"
                    )));
                }
            }
            if let Some(other) = queries.insert(t.query_value(id), id) {
                return Err(ConfigError::Invalid(format!(
                    "query value {} is claimed by tenants {other} and {id}",
                    t.query_value(id)
                )));
            }
            if t.default
                && let Some(other) = default.replace(id)
            {
                return Err(ConfigError::Invalid(format!(
                    "tenants {other} and {id} are both marked default"
                )));
            }
            if let Some(admin) = &t.admin_ui {
                if let Some(problem) = admin.problem() {
                    return Err(ConfigError::Invalid(format!("tenant {id}: {problem}")));
                }
                if t.namespaces.contains(&admin.namespace) {
                    return Err(ConfigError::Invalid(format!(
                        "tenant {id}: {} is both a client namespace and the admin-ui namespace",
                        admin.namespace
                    )));
                }
            }
            if t.redis_url.is_some() && t.redis_cluster_nodes.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "tenant {id}: give redis-url or redis-cluster-nodes, not both"
                )));
            }
            if let Some(mode) = &t.redis_subscription_mode
                && let Err(err) = mode.parse::<crate::adapter::redis::SubscriptionMode>()
            {
                return Err(ConfigError::Invalid(format!("tenant {id}: {err}")));
            }
            if let Some(kind) = &t.redis_adapter
                && let Err(err) = kind.parse::<crate::adapter::redis::RedisAdapterKind>()
            {
                return Err(ConfigError::Invalid(format!("tenant {id}: {err}")));
            }
            if let Some(rate) = t.limits.events_per_second
                && !(rate > 0.0 && rate.is_finite())
            {
                return Err(ConfigError::Invalid(format!(
                    "tenant {id}: events-per-second must be a positive number"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ioplex-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
        dir
    }

    #[test]
    fn main_file_and_directory_are_merged() {
        let dir = temp_dir("merge");
        let main = write(
            &dir,
            "ioplex.toml",
            "tenants-dir = \"tenants.d\"\n[tenants.acme]\nhosts = [\"Chat.Acme.example\"]\n[tenants.acme.limits]\nevents-per-second = 5\n",
        );
        write(
            &dir.join("tenants.d"),
            "globex.toml",
            "default = true\napi-keys = [\"k\"]\n",
        );
        let config = TenantsConfig::load(&main).unwrap();
        assert_eq!(config.tenants.len(), 2);
        assert_eq!(config.tenants["acme"].limits.events_per_second, Some(5.0));
        assert!(config.tenants["globex"].default);
        assert_eq!(config.tenants["globex"].query_value("globex"), "globex");
        assert_eq!(
            config.tenants["acme"].redis_key("acme", "socket.io"),
            "socket.io/acme"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conflicts_and_typos_are_errors_naming_the_file() {
        let dir = temp_dir("conflicts");
        let main = write(
            &dir,
            "a.toml",
            "[tenants.a]\nhosts = [\"x\"]\n[tenants.b]\nhosts = [\"X\"]\n",
        );
        assert!(
            matches!(TenantsConfig::load(&main), Err(ConfigError::Invalid(m)) if m.contains("host X"))
        );
        let typo = write(&dir, "b.toml", "[tenants.a]\nhost = [\"x\"]\n");
        let err = TenantsConfig::load(&typo).unwrap_err().to_string();
        assert!(
            err.contains("b.toml") && err.contains("unknown field `host`"),
            "{err}"
        );
        let bad_id = write(&dir, "c.toml", "[tenants.\"Acme Corp\"]\n");
        assert!(
            TenantsConfig::load(&bad_id)
                .unwrap_err()
                .to_string()
                .contains("tenant id")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn routing_and_keys_change_live_the_rest_rebuilds() {
        let a = TenantConfig::default();
        let mut b = a.clone();
        b.hosts.push("x".into());
        b.api_keys.push("k".into());
        assert!(a.same_sessions_as(&b));
        b.limits.max_rooms_per_socket = Some(3);
        assert!(!a.same_sessions_as(&b));
    }

    #[test]
    fn cluster_settings_are_checked() {
        let dir = temp_dir("cluster");
        let parse = |text: &str| TenantsConfig::load(&write(&dir, "c.toml", text));
        let both = parse(
            "[tenants.a]\nredis-url = \"redis://r:6379\"\nredis-cluster-nodes = \"c:7000\"\n",
        );
        assert!(both.unwrap_err().to_string().contains("not both"));
        let mode = parse(
            "[tenants.a]\nredis-cluster-nodes = \"c:7000\"\nredis-subscription-mode = \"sharded\"\n",
        );
        assert!(
            mode.unwrap_err()
                .to_string()
                .contains("unknown subscription mode")
        );
        let shared = parse(
            "[tenants.a]\nredis-cluster-nodes = \"c1:7000,c2:7000\"\n\
             [tenants.b]\nredis-cluster-nodes = \"redis://c2:7000, c1:7000\"\n",
        );
        let err = shared.unwrap_err().to_string();
        assert!(err.contains("tenants a and b"), "{err}");
        let apart = parse(
            "[tenants.a]\nredis-cluster-nodes = \"c1:7000\"\n\
             [tenants.b]\nredis-cluster-nodes = \"c1:7000\"\nredis-key = \"b\"\nredis-subscription-mode = \"static\"\n",
        );
        assert!(apart.is_ok(), "{apart:?}");
        let a = TenantConfig {
            redis_cluster_nodes: Some("c:7000".into()),
            ..TenantConfig::default()
        };
        assert_eq!(
            a.redis_key("a", "socket.io"),
            "socket.io",
            "its own cluster: Node's channels"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_redis_adapter_is_checked_and_streams_keep_sessions_per_prefix() {
        let dir = temp_dir("streams");
        let parse = |text: &str| TenantsConfig::load(&write(&dir, "s.toml", text));
        let unknown = parse("[tenants.a]\nredis-adapter = \"kafka\"\n");
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown Redis adapter \"kafka\"")
        );
        let ok = parse("[tenants.a]\nredis-adapter = \"streams\"\nrecovery-window-ms = 0\n")
            .expect("streams");
        let a = &ok.tenants["a"];
        assert_eq!(a.redis_adapter.as_deref(), Some("streams"));
        assert_eq!(a.recovery_window_ms, Some(0));
        // Node's default prefix keeps Node's session keys; any other prefix its own.
        let mut redis = crate::adapter::redis::RedisConfig::new("redis://r:6379");
        assert_eq!(redis.streams().session_prefix, "sio:session:");
        redis.key = a.redis_key("a", "socket.io");
        assert_eq!(redis.streams().session_prefix, "socket.io/a:session:");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
