//! The tenants a gateway serves: one Socket.IO server and Engine.IO endpoint per tenant (its own rooms,
//! Redis channels, limits and plugins), chosen per request by host name or `tenant` parameter, and
//! replaced in place when the configuration changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, Uri, header};
use parking_lot::Mutex;

use super::config::{OnRateExceeded, TenantConfig, TenantsConfig};
use crate::adapter::redis::{
    ClusterConfig, PeerPolicy, RedisAdapterFactory, RedisAdapterKind, RedisBus, RedisConfig,
    ShardedAdapterFactory, ShardedBus, StreamsAdapterFactory, StreamsBus, SubscriptionMode,
};
use crate::admin_ui::AdminUi;
use crate::contract::ContractConfig;
use crate::engineio::Endpoints;
use crate::engineio::{AllowedOrigins, Engine, EngineConfig, RequestError};
use crate::http_util::query_param;
use crate::plugin::PluginRuntime;
use crate::socketio::{Handlers, RateAction, RateLimit, SocketIo, SocketIoConfig};

/// What every tenant starts from: the gateway's own settings (flags and environment).
#[derive(Clone)]
pub struct GatewayDefaults {
    /// Engine.IO settings; a tenant overrides CORS, payload size and connection cap.
    pub engine: EngineConfig,
    /// Socket.IO settings.
    pub socketio: SocketIoConfig,
    /// Client contract settings; a tenant overrides event names and rooms per socket.
    pub contract: ContractConfig,
    /// Redis settings when the gateway has a Redis (`REDIS_URL`); a tenant overrides URL and key.
    pub redis: Option<RedisConfig>,
    /// Redis Cluster settings when the gateway uses the sharded adapter (`REDIS_CLUSTER_NODES`); tenants
    /// without a Redis of their own use it, each under its channel prefix.
    pub cluster: Option<ClusterConfig>,
    /// The gateway's channel prefix (`--redis-key`).
    pub redis_key: String,
    /// Tenant plugins, when a plugin directory is configured.
    pub plugins: Option<Arc<PluginRuntime>>,
}

/// One tenant being served.
pub struct Tenant {
    id: String,
    config: TenantConfig,
    io: SocketIo,
    engine: Engine,
}

impl Tenant {
    /// The tenant id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its configuration.
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    /// Its Socket.IO server.
    pub fn io(&self) -> &SocketIo {
        &self.io
    }

    /// Its Engine.IO endpoint.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// The routing table, swapped whole on reload.
#[derive(Default)]
struct Table {
    tenants: HashMap<String, Arc<Tenant>>,
    hosts: HashMap<String, String>,
    queries: HashMap<String, String>,
    default: Option<String>,
}

impl Table {
    fn build(tenants: HashMap<String, Arc<Tenant>>) -> Table {
        let mut table = Table::default();
        for (id, t) in &tenants {
            for host in &t.config.hosts {
                table.hosts.insert(host.to_ascii_lowercase(), id.clone());
            }
            table
                .queries
                .insert(t.config.query_value(id).to_owned(), id.clone());
            if t.config.default {
                table.default = Some(id.clone());
            }
        }
        table.tenants = tenants;
        table
    }
}

/// What one Redis Cluster connection is shared by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClusterKey {
    seeds: String,
    key: String,
    mode: SubscriptionMode,
}

/// Every tenant of the gateway; the [`Endpoints`] of its router.
pub struct Tenants {
    defaults: GatewayDefaults,
    table: ArcSwap<Table>,
    /// Redis connections by (URL, key), shared by tenants and kept across rebuilds.
    factories: Mutex<HashMap<(String, String), Arc<RedisAdapterFactory>>>,
    cluster_factories: Mutex<HashMap<ClusterKey, Arc<ShardedAdapterFactory>>>,
    streams_factories: Mutex<HashMap<(String, String), Arc<StreamsAdapterFactory>>>,
}

fn request_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    Some(name.to_ascii_lowercase())
}

/// Why tenants could not be started or reloaded; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The configuration does not hold together (two tenants on one Redis channel prefix, say).
    #[error(transparent)]
    Config(#[from] super::ConfigError),
    /// A tenant's Redis settings are unusable.
    #[error("tenant {tenant}: {source}")]
    Redis {
        /// The tenant.
        tenant: String,
        /// What Redis setup refused.
        #[source]
        source: crate::adapter::redis::BusError,
    },
}

impl Tenants {
    /// Starts every tenant of `config` (connecting to Redis where configured).
    pub async fn start(
        defaults: GatewayDefaults,
        config: &TenantsConfig,
    ) -> Result<Arc<Tenants>, TenantError> {
        config.check_channels(
            defaults.redis.as_ref().map(|r| r.url.as_str()),
            &defaults.redis_key,
        )?;
        let tenants = Arc::new(Tenants {
            defaults,
            table: ArcSwap::from_pointee(Table::default()),
            factories: Mutex::new(HashMap::new()),
            cluster_factories: Mutex::new(HashMap::new()),
            streams_factories: Mutex::new(HashMap::new()),
        });
        let mut built = HashMap::new();
        for (id, tc) in &config.tenants {
            built.insert(id.clone(), Arc::new(tenants.build(id, tc).await?));
        }
        tenants.table.store(Arc::new(Table::build(built)));
        Ok(tenants)
    }

    /// Applies a new configuration: new tenants start, removed ones are drained, changed ones are
    /// updated in place when only routing or API keys changed, and otherwise rebuilt (their clients are
    /// told to reconnect and land on the new settings). On error nothing changes.
    pub async fn reload(&self, config: &TenantsConfig) -> Result<(), TenantError> {
        config.check_channels(
            self.defaults.redis.as_ref().map(|r| r.url.as_str()),
            &self.defaults.redis_key,
        )?;
        let current = self.table.load_full();
        let mut next = HashMap::new();
        let mut rebuilt = Vec::new();
        for (id, tc) in &config.tenants {
            let tenant = match current.tenants.get(id) {
                Some(old) if old.config == *tc => Arc::clone(old),
                Some(old) if old.config.same_sessions_as(tc) => Arc::new(Tenant {
                    id: id.clone(),
                    config: tc.clone(),
                    io: old.io.clone(),
                    engine: old.engine.clone(),
                }),
                Some(old) => {
                    rebuilt.push(Arc::clone(old));
                    Arc::new(self.build(id, tc).await?)
                }
                None => Arc::new(self.build(id, tc).await?),
            };
            next.insert(id.clone(), tenant);
        }
        let removed: Vec<_> = current
            .tenants
            .iter()
            .filter(|(id, _)| !config.tenants.contains_key(*id))
            .map(|(_, t)| Arc::clone(t))
            .collect();
        self.table.store(Arc::new(Table::build(next)));
        for (old, why) in rebuilt
            .iter()
            .map(|t| (t, "settings changed"))
            .chain(removed.iter().map(|t| (t, "removed")))
        {
            tracing::info!(
                tenant = old.id,
                sessions = old.engine.session_count(),
                why,
                "tenant replaced: its clients are told to reconnect"
            );
            old.engine.begin_drain();
            old.engine.close_all();
        }
        Ok(())
    }

    /// The tenant `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.table.load().tenants.get(id).cloned()
    }

    /// Every tenant, by id.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        let mut all: Vec<_> = self.table.load().tenants.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The Redis connections in use, with their channel prefix (readiness and metrics).
    pub fn redis_buses(&self) -> Vec<(String, Arc<RedisBus>)> {
        let mut buses: Vec<_> = self
            .factories
            .lock()
            .iter()
            .map(|((_, key), f)| (key.clone(), Arc::clone(f.bus())))
            .collect();
        buses.sort_by(|a, b| a.0.cmp(&b.0));
        buses
    }

    /// The tenant a request belongs to: its host name; else its `tenant` parameter (a name no tenant
    /// answers to is unknown, never the default); else the default tenant.
    pub fn resolve_tenant(&self, uri: &Uri, headers: &HeaderMap) -> Option<Arc<Tenant>> {
        let table = self.table.load();
        let by_host = request_host(headers).and_then(|h| table.hosts.get(&h));
        let id = match (by_host, query_param(uri, "tenant")) {
            (Some(id), _) => id,
            (None, Some(q)) => table.queries.get(&q)?,
            (None, None) => table.default.as_ref()?,
        };
        table.tenants.get(id).cloned()
    }

    async fn redis_factory(
        &self,
        config: RedisConfig,
    ) -> Result<Arc<RedisAdapterFactory>, crate::adapter::redis::BusError> {
        let key = (config.url.clone(), config.key.clone());
        if let Some(f) = self.factories.lock().get(&key) {
            return Ok(Arc::clone(f));
        }
        let factory = Arc::new(RedisAdapterFactory::start(config).await?);
        Ok(Arc::clone(
            self.factories.lock().entry(key).or_insert(factory),
        ))
    }

    async fn streams_factory(
        &self,
        config: RedisConfig,
    ) -> Result<Arc<StreamsAdapterFactory>, crate::adapter::redis::BusError> {
        let key = (config.url.clone(), config.key.clone());
        if let Some(f) = self.streams_factories.lock().get(&key) {
            return Ok(Arc::clone(f));
        }
        let factory = Arc::new(StreamsAdapterFactory::start(config.streams()).await?);
        Ok(Arc::clone(
            self.streams_factories.lock().entry(key).or_insert(factory),
        ))
    }

    /// The streams connection of every prefix in use, by prefix.
    pub fn streams_buses(&self) -> Vec<(String, Arc<StreamsBus>)> {
        let mut buses: Vec<_> = self
            .streams_factories
            .lock()
            .iter()
            .map(|((_, key), f)| (key.clone(), Arc::clone(f.bus())))
            .collect();
        buses.sort_by(|a, b| a.0.cmp(&b.0));
        buses
    }

    async fn cluster_factory(
        &self,
        config: ClusterConfig,
    ) -> Result<Arc<ShardedAdapterFactory>, crate::adapter::redis::BusError> {
        // One connection per (cluster, prefix, mode): the mode decides what the bus subscribes to.
        let key = ClusterKey {
            seeds: config.seeds.clone(),
            key: config.key.clone(),
            mode: config.mode,
        };
        if let Some(f) = self.cluster_factories.lock().get(&key) {
            return Ok(Arc::clone(f));
        }
        let factory = Arc::new(ShardedAdapterFactory::start(config).await?);
        Ok(Arc::clone(
            self.cluster_factories.lock().entry(key).or_insert(factory),
        ))
    }

    /// The cluster connection of every channel prefix in use, by prefix.
    pub fn cluster_buses(&self) -> Vec<(String, Arc<ShardedBus>)> {
        let mut buses: Vec<_> = self
            .cluster_factories
            .lock()
            .iter()
            .map(|(key, f)| (key.key.clone(), Arc::clone(f.bus())))
            .collect();
        buses.sort_by(|a, b| a.0.cmp(&b.0));
        buses
    }

    async fn build(&self, id: &str, tc: &TenantConfig) -> Result<Tenant, TenantError> {
        let d = &self.defaults;
        let mut engine_config = d.engine.clone();
        if !tc.cors_origins.is_empty() {
            engine_config.cors = if tc.cors_origins.iter().any(|o| o == "*") {
                AllowedOrigins::Any
            } else {
                AllowedOrigins::List(tc.cors_origins.clone())
            };
        }
        if let Some(max) = tc.limits.max_payload {
            engine_config.max_payload = max;
        }
        engine_config.max_sessions = tc.limits.max_connections;
        if let Some(allow) = tc.allow_eio3 {
            engine_config.allow_eio3 = allow;
        }

        let mut contract = d.contract.clone();
        contract.join_event = tc.events.join.clone();
        contract.leave_event = tc.events.leave.clone();
        contract.publish_event = tc.events.publish.clone();
        contract.request_event = tc.events.request.clone();
        contract.members_event = tc.events.members.clone();
        if let Some(max) = tc.limits.max_rooms_per_socket {
            contract.max_rooms_per_socket = max;
        }
        let contract_rooms = contract.max_rooms_per_socket;
        if let Some(runtime) = &d.plugins {
            runtime.set_quota(
                id,
                tc.limits
                    .max_plugins
                    .unwrap_or(crate::plugin::DEFAULT_MAX_PLUGINS),
                tc.limits
                    .max_plugin_instances
                    .unwrap_or(crate::plugin::DEFAULT_MAX_INSTANCES),
            );
        }
        let mut handlers: Handlers = match &d.plugins {
            Some(runtime) => super::namespace_handlers(contract, runtime.slot(id)),
            None => crate::contract::handlers(contract),
        };
        if let Some(rate) = tc.limits.events_per_second {
            handlers = handlers.rate_limit(RateLimit {
                per_second: rate,
                burst: tc.limits.events_burst.unwrap_or((rate * 2.0).max(1.0)),
                action: match tc.limits.on_rate_exceeded {
                    OnRateExceeded::Error => RateAction::Reject,
                    OnRateExceeded::Disconnect => RateAction::Disconnect,
                },
            });
        }

        let mut socketio = d.socketio.clone();
        if let Some(parser) = tc.parser {
            socketio.parser = parser;
        }
        if let Some(ms) = tc.recovery_window_ms {
            let base = socketio.recovery.clone().unwrap_or_default();
            socketio.recovery = (ms > 0).then(|| crate::socketio::RecoveryConfig {
                window: Duration::from_millis(ms),
                ..base
            });
        }
        let mut builder = SocketIo::builder().config(socketio);
        let redis = match (&tc.redis_url, &d.redis) {
            (Some(url), Some(base)) => Some(RedisConfig {
                url: url.clone(),
                ..base.clone()
            }),
            (Some(url), None) => Some(RedisConfig::new(url.clone())),
            (None, Some(base)) => Some(base.clone()),
            (None, None) => None,
        };
        let cluster = match (&tc.redis_cluster_nodes, &d.cluster) {
            (Some(seeds), base) => Some(ClusterConfig {
                seeds: seeds.clone(),
                ..base
                    .clone()
                    .unwrap_or_else(|| ClusterConfig::new(seeds.clone()))
            }),
            (None, base) => base.clone().filter(|_| tc.redis_url.is_none()),
        };
        if let Some(mut cluster) = cluster {
            cluster.key = tc.redis_key(id, &d.redis_key);
            if let Some(mode) = &tc.redis_subscription_mode {
                // `check` refused an unknown mode already.
                cluster.mode = mode.parse().unwrap_or(cluster.mode);
            }
            let policy = PeerPolicy {
                max_rooms_per_socket: contract_rooms,
                share_credentials: tc
                    .share_credentials
                    .unwrap_or(cluster.policy.share_credentials),
            };
            let connection =
                self.cluster_factory(cluster)
                    .await
                    .map_err(|source| TenantError::Redis {
                        tenant: id.to_owned(),
                        source,
                    })?;
            builder = builder.adapter(Arc::new(connection.with_policy(policy)));
        } else if let Some(mut redis) = redis {
            redis.key = tc.redis_key(id, &d.redis_key);
            redis.max_rooms_per_socket = contract_rooms;
            redis.share_credentials = tc.share_credentials.unwrap_or(redis.share_credentials);
            if let Some(kind) = &tc.redis_adapter {
                // `check` refused an unknown adapter already.
                redis.adapter = kind.parse().unwrap_or(redis.adapter);
            }
            if let Some(ms) = tc.recovery_window_ms {
                redis.recovery_window = (ms > 0).then(|| Duration::from_millis(ms));
            }
            let policy = PeerPolicy::of(&redis);
            if redis.adapter == RedisAdapterKind::Streams {
                let connection =
                    self.streams_factory(redis)
                        .await
                        .map_err(|source| TenantError::Redis {
                            tenant: id.to_owned(),
                            source,
                        })?;
                builder = builder.adapter(Arc::new(connection.with_policy(policy)));
            } else {
                let connection =
                    self.redis_factory(redis)
                        .await
                        .map_err(|source| TenantError::Redis {
                            tenant: id.to_owned(),
                            source,
                        })?;
                // One connection per (Redis, prefix), but this tenant's settings as they are now.
                builder = builder.adapter(Arc::new(connection.with_policy(policy)));
            }
        }
        builder = if tc.namespaces.is_empty() {
            builder.dynamic_namespaces(handlers)
        } else {
            tc.namespaces
                .iter()
                .fold(builder, |b, nsp| b.namespace(nsp, handlers.clone()))
        };
        let admin = tc.admin_ui.clone().map(AdminUi::new);
        if let Some(admin) = &admin {
            builder = admin.install(builder);
        }
        let io = builder.build();
        let engine = io.engine(engine_config);
        if let Some(admin) = &admin {
            admin.start(&io, &engine);
        }
        Ok(Tenant {
            id: id.to_owned(),
            config: tc.clone(),
            io,
            engine,
        })
    }
}

impl Endpoints for Tenants {
    fn resolve(&self, uri: &Uri, headers: &HeaderMap) -> Result<Option<Engine>, RequestError> {
        if !self.defaults.engine.serves_path(uri.path()) {
            return Ok(None);
        }
        match self.resolve_tenant(uri, headers) {
            Some(t) => Ok(Some(t.engine.clone())),
            None => Err(RequestError::UnknownTenant),
        }
    }

    fn all(&self) -> Vec<Engine> {
        self.table
            .load()
            .tenants
            .values()
            .map(|t| t.engine.clone())
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::{GatewayDefaults, Tenants};
    use crate::contract::ContractConfig;
    use crate::engineio::EngineConfig;
    use crate::socketio::SocketIoConfig;
    use crate::tenant::TenantsConfig;

    /// Gateway defaults with no Redis and no plugins.
    pub(crate) fn defaults() -> GatewayDefaults {
        GatewayDefaults {
            engine: EngineConfig::default(),
            socketio: SocketIoConfig::default(),
            contract: ContractConfig::default(),
            redis: None,
            cluster: None,
            redis_key: "socket.io".into(),
            plugins: None,
        }
    }

    /// A fresh directory for one test's configuration files.
    pub(crate) fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ioplex-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// Tenants served from the TOML `text` written to `dir/ioplex.toml`.
    pub(crate) async fn tenants_from(dir: &Path, text: &str) -> (Arc<Tenants>, TenantsConfig) {
        let file = dir.join("ioplex.toml");
        std::fs::write(&file, text).expect("write config");
        let config = TenantsConfig::load(&file).expect("valid config");
        (
            Tenants::start(defaults(), &config)
                .await
                .expect("tenants start"),
            config,
        )
    }
}

#[cfg(all(test, unix))]
mod tests {
    use http::{HeaderMap, HeaderValue, Uri};

    use super::test_support::{scratch, tenants_from};
    use crate::engineio::{Endpoints, MemoryClient};

    const TWO_TENANTS: &str = r#"
[tenants.acme]
hosts = ["chat.acme.example"]
default = true

[tenants.globex]
query = "gx"
"#;

    fn host(name: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static(name));
        headers
    }

    #[tokio::test]
    async fn a_request_goes_to_its_host_then_its_query_then_the_default() {
        let dir = scratch("resolve");
        let (tenants, _) = tenants_from(&dir, TWO_TENANTS).await;
        let uri = |s: &'static str| s.parse::<Uri>().expect("uri");
        let id = |t: Option<std::sync::Arc<super::Tenant>>| t.map(|t| t.id().to_owned());
        assert_eq!(
            id(tenants.resolve_tenant(&uri("/socket.io/"), &host("chat.acme.example:443"))),
            Some("acme".into())
        );
        assert_eq!(
            id(tenants.resolve_tenant(&uri("/socket.io/?tenant=gx"), &host("other.example"))),
            Some("globex".into())
        );
        assert_eq!(
            id(tenants.resolve_tenant(&uri("/socket.io/"), &host("other.example"))),
            Some("acme".into())
        );
        assert_eq!(
            id(tenants.resolve_tenant(&uri("/socket.io/?tenant=nobody"), &host("other.example"))),
            None,
            "an unknown name never falls back to the default"
        );
        assert!(
            tenants
                .resolve(&uri("/socket.io/?tenant=nobody"), &host("x"))
                .is_err(),
            "refused at the handshake"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[tokio::test]
    async fn tenants_never_share_rooms() {
        let dir = scratch("rooms");
        let (tenants, _) = tenants_from(&dir, TWO_TENANTS).await;
        let acme = tenants.get("acme").expect("acme");
        let globex = tenants.get("globex").expect("globex");
        let (mut a, mut g) = (
            MemoryClient::connect(acme.engine(), "EIO=4")
                .await
                .expect("a"),
            MemoryClient::connect(globex.engine(), "EIO=4")
                .await
                .expect("g"),
        );
        for client in [&mut a, &mut g] {
            client.send("40").await.expect("connect");
            assert!(
                client
                    .recv_text()
                    .await
                    .expect("connected")
                    .starts_with("40{")
            );
            client.send(r#"421["join","lobby"]"#).await.expect("join");
            assert_eq!(
                client.recv_text().await.expect("ack"),
                r#"431[{"ok":true}]"#
            );
        }
        a.send(r#"422["publish",{"room":"lobby","event":"m","args":[1],"self":true}]"#)
            .await
            .expect("publish");
        assert_eq!(a.recv_text().await.expect("own copy"), r#"42["m",1]"#);
        assert_eq!(a.recv_text().await.expect("ack"), r#"432[{"ok":true}]"#);
        g.send(r#"422["publish",{"room":"lobby","event":"m","args":[2],"self":true}]"#)
            .await
            .expect("publish");
        assert_eq!(
            g.recv_text().await.expect("globex sees only its own"),
            r#"42["m",2]"#
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[tokio::test]
    async fn a_reload_adds_and_removes_tenants() {
        let dir = scratch("reload");
        let (tenants, _) = tenants_from(&dir, TWO_TENANTS).await;
        let next = crate::tenant::TenantsConfig::load(&{
            let file = dir.join("next.toml");
            std::fs::write(&file, "[tenants.acme]\ndefault = true\n[tenants.initech]\n")
                .expect("write");
            file
        })
        .expect("valid");
        tenants.reload(&next).await.expect("reload");
        assert!(tenants.get("initech").is_some());
        assert!(tenants.get("globex").is_none());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
