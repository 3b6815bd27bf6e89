//! The plugin runtime a gateway owns: one engine, one slot per tenant, and the install pipeline
//! (compile off the request path, validate, swap).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use wasmtime::component::Component;

use super::chain::{PluginChain, PluginSlot};
use super::compile::{check_size, compile, sha256_hex};
use super::error::PluginError;
use super::loaded::{LoadedPlugin, PluginSource};
use super::manifest::PluginManifest;
use super::precompiled::{self, SigningKey};
use super::state::PluginContext;
use super::wasm_engine::{PluginEngine, WasmEngineOptions};

/// Default of [`TenantQuota::max_plugins`].
pub const DEFAULT_MAX_PLUGINS: usize = 16;
/// Default of [`TenantQuota::max_instances`].
pub const DEFAULT_MAX_INSTANCES: usize = 64;
/// Compile jobs of all tenants at once (each tenant also runs one at a time).
const COMPILE_JOBS: usize = 2;
/// Longest an install waits for a compile slot before it is refused.
const COMPILE_QUEUE_WAIT: Duration = Duration::from_secs(60);

/// What one tenant's plugins may hold, so that one tenant cannot use up the engine's shared instance
/// pool or fill it with plugins.
#[derive(Debug)]
pub struct TenantQuota {
    max_plugins: AtomicUsize,
    max_instances: AtomicUsize,
    instances: AtomicUsize,
}

impl Default for TenantQuota {
    fn default() -> Self {
        TenantQuota {
            max_plugins: AtomicUsize::new(DEFAULT_MAX_PLUGINS),
            max_instances: AtomicUsize::new(DEFAULT_MAX_INSTANCES),
            instances: AtomicUsize::new(0),
        }
    }
}

impl TenantQuota {
    /// Plugins the tenant may have installed at once.
    pub fn max_plugins(&self) -> usize {
        self.max_plugins.load(Ordering::Relaxed)
    }

    /// Instances (warm and in use) all the tenant's plugins may hold at once.
    pub fn max_instances(&self) -> usize {
        self.max_instances.load(Ordering::Relaxed)
    }

    /// Instances held now.
    pub fn instances(&self) -> usize {
        self.instances.load(Ordering::Relaxed)
    }

    /// Takes one instance seat; `None` when the tenant's share is used up.
    pub(crate) fn take_seat(self: &Arc<Self>) -> Option<QuotaSeat> {
        let max = self.max_instances();
        self.instances
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(QuotaSeat(Arc::clone(self)))
    }
}

/// One instance counted against its tenant's share; released on drop.
#[derive(Debug)]
pub(crate) struct QuotaSeat(Arc<TenantQuota>);

impl Drop for QuotaSeat {
    fn drop(&mut self) {
        self.0.instances.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs every tenant's plugins.
pub struct PluginRuntime {
    engine: Arc<PluginEngine>,
    slots: DashMap<Arc<str>, Arc<PluginSlot>>,
    compiles: tokio::sync::Semaphore,
    /// Plugin changes from Redis this node refused (bad signature, unknown tenant, ...).
    pub fleet_rejected: AtomicU64,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("tenants", &self.slots.len())
            .finish()
    }
}

impl PluginRuntime {
    /// Builds the engine (instance pool, epoch ticker, linker).
    pub fn new(options: WasmEngineOptions) -> Result<Arc<Self>, PluginError> {
        Ok(Arc::new(PluginRuntime {
            engine: Arc::new(PluginEngine::new(options)?),
            slots: DashMap::new(),
            compiles: tokio::sync::Semaphore::new(COMPILE_JOBS),
            fleet_rejected: AtomicU64::new(0),
        }))
    }

    /// Sets what `tenant`'s plugins may hold (from its configuration); applies to calls from now on.
    pub fn set_quota(&self, tenant: &str, max_plugins: usize, max_instances: usize) {
        let slot = self.slot(tenant);
        let quota = slot.quota();
        quota.max_plugins.store(max_plugins, Ordering::Relaxed);
        quota
            .max_instances
            .store(max_instances.max(1), Ordering::Relaxed);
    }

    /// The slot of `tenant`, created empty on first use.
    pub fn slot(&self, tenant: &str) -> Arc<PluginSlot> {
        if let Some(slot) = self.slots.get(tenant) {
            return Arc::clone(&slot);
        }
        let tenant: Arc<str> = Arc::from(tenant);
        Arc::clone(
            &self
                .slots
                .entry(Arc::clone(&tenant))
                .or_insert_with(|| Arc::new(PluginSlot::new(tenant))),
        )
    }

    /// Every tenant with its current chain.
    pub fn tenants(&self) -> Vec<(String, Arc<PluginChain>)> {
        let mut all: Vec<_> = self
            .slots
            .iter()
            .map(|e| (e.key().to_string(), e.value().chain()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Compiles (or, for a signed `.cwasm`, loads) and validates a plugin version without installing it
    /// (blocking; seconds for a JavaScript component, milliseconds from the compile cache).
    pub fn prepare(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
        manifest: PluginManifest,
    ) -> Result<LoadedPlugin, PluginError> {
        let sha = precompiled::version_hash(bytes);
        let component = if precompiled::is_precompiled(bytes) {
            check_size(bytes, self.engine.options.max_component_bytes)?;
            precompiled::open(&self.engine, bytes, &self.engine.options.trusted_keys)?
        } else {
            compile(&self.engine, bytes, &sha)?
        };
        self.validate(tenant, name, &component, sha, bytes.len(), manifest)
    }

    /// Compiles and validates a component as [`PluginRuntime::prepare`] does, then seals its compiled
    /// form with `key` for nodes that carry no compiler: the bytes of a `.cwasm`.
    pub fn precompile(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: PluginManifest,
        key: &SigningKey,
    ) -> Result<(Vec<u8>, LoadedPlugin), PluginError> {
        let sha = sha256_hex(bytes);
        let component = compile(&self.engine, bytes, &sha)?;
        let artifact = component
            .serialize()
            .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        let sealed = precompiled::seal(&artifact, &sha, key);
        let plugin = self.validate("build", name, &component, sha, bytes.len(), manifest)?;
        Ok((sealed, plugin))
    }

    fn validate(
        &self,
        tenant: &str,
        name: &str,
        component: &Component,
        sha: String,
        size: usize,
        manifest: PluginManifest,
    ) -> Result<LoadedPlugin, PluginError> {
        let ctx = Arc::new(PluginContext {
            tenant: Arc::from(tenant),
            name: Arc::from(name),
            version: sha[..12].to_owned(),
            settings: manifest.settings,
        });
        LoadedPlugin::validate(&self.engine, component, ctx, sha, size, manifest.limits)
    }

    /// Validates a new version off the request path and swaps it in. Calls in flight finish on the old
    /// version; on any error the old version keeps serving. A tenant compiles one version at a time,
    /// and all tenants together at most two, so uploads cannot take the node's cores.
    pub async fn install(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        bytes: Vec<u8>,
        manifest: PluginManifest,
        source: PluginSource,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let started = Instant::now();
        let slot = self.slot(tenant);
        if !slot.has_room_for(name) {
            return Err(PluginError::Limit(format!(
                "tenant {tenant} already has {} plugins, its limit; remove one first",
                slot.quota().max_plugins()
            )));
        }
        let busy = || PluginError::Limit("too many plugin uploads at once; retry later".into());
        let _tenant_turn = tokio::time::timeout(COMPILE_QUEUE_WAIT, slot.installing.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let _compile_slot = tokio::time::timeout(COMPILE_QUEUE_WAIT, self.compiles.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let runtime = Arc::clone(self);
        let (t, n) = (tenant.to_owned(), name.to_owned());
        let prepared =
            tokio::task::spawn_blocking(move || runtime.prepare(&t, &n, &bytes, manifest))
                .await
                .map_err(|e| PluginError::Engine(format!("validation task failed: {e}")))?;
        let plugin = match prepared {
            Ok(mut plugin) => {
                plugin.source = source;
                Arc::new(plugin)
            }
            Err(err) => {
                tracing::warn!(tenant, plugin = name, error = %err, "plugin version refused; the previous version keeps serving");
                return Err(err);
            }
        };
        slot.install(Arc::clone(&plugin))?;
        tracing::info!(
            tenant,
            plugin = name,
            version = %plugin.context().version,
            hooks = ?plugin.hooks().iter().map(|h| h.name()).collect::<Vec<_>>(),
            took_ms = started.elapsed().as_millis() as u64,
            "plugin serving"
        );
        Ok(plugin)
    }

    /// Removes a plugin from a tenant; true if it was installed.
    pub fn remove(&self, tenant: &str, name: &str) -> bool {
        let removed = self.slots.get(tenant).is_some_and(|s| s.remove(name));
        if removed {
            tracing::info!(tenant, plugin = name, "plugin removed");
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Hook;
    use crate::plugin::test_support::{component, join, runtime, runtime_trusting};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_installed_plugin_serves_its_tenant_only() {
        let runtime = runtime();
        let plugin = runtime
            .install(
                "t",
                "chaos",
                component("chaos"),
                PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect("chaos validates");
        assert!(plugin.has(Hook::AuthorizeJoin));
        assert_eq!(plugin.sha256().len(), 64);
        assert!(runtime.slot("t").chain().has(Hook::AuthorizeJoin));
        assert!(
            runtime.slot("other").is_empty(),
            "another tenant has no plugin"
        );
        assert!(runtime.remove("t", "chaos"));
        assert!(runtime.slot("t").is_empty());
        assert!(
            !runtime.remove("t", "chaos"),
            "removing twice removes nothing"
        );
    }

    #[test]
    fn a_precompiled_plugin_loads_only_intact_and_signed_by_a_trusted_key() {
        let (key, _) = SigningKey::generate().expect("key");
        let (other, _) = SigningKey::generate().expect("key");
        let wasm = component("chaos");
        let (sealed, built) = runtime()
            .precompile("chaos", &wasm, PluginManifest::default(), &key)
            .expect("precompiled");
        assert_eq!(built.sha256(), sha256_hex(&wasm));

        let trusting = runtime_trusting(vec![other.public_key(), key.public_key()].into());
        let plugin = trusting
            .prepare("t", "chaos", &sealed, PluginManifest::default())
            .expect("a signed artifact loads");
        assert_eq!(plugin.hooks(), built.hooks());
        assert_eq!(plugin.sha256(), precompiled::version_hash(&sealed));
        assert_ne!(plugin.sha256(), sha256_hex(&sealed), "the header names it");

        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        let err = trusting
            .prepare("t", "chaos", &altered, PluginManifest::default())
            .expect_err("an altered artifact is refused");
        assert!(
            matches!(&err, PluginError::Untrusted(m) if m.contains("not the one that was signed")),
            "{err}"
        );

        let err = runtime_trusting(vec![other.public_key()].into())
            .prepare("t", "chaos", &sealed, PluginManifest::default())
            .expect_err("another key's artifact is refused");
        assert!(
            matches!(&err, PluginError::Untrusted(m) if m.contains("does not trust")),
            "{err}"
        );
        let err = runtime()
            .prepare("t", "chaos", &sealed, PluginManifest::default())
            .expect_err("no trusted key, no precompiled plugin");
        assert!(matches!(err, PluginError::Untrusted(_)), "{err}");

        let header_end = sealed
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .map(|(i, _)| i + 1)
            .expect("header");
        let err = trusting
            .prepare(
                "t",
                "chaos",
                &sealed[header_end..],
                PluginManifest::default(),
            )
            .expect_err("a bare artifact is refused");
        assert!(matches!(err, PluginError::Precompiled), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_upload_is_refused_and_the_previous_version_keeps_serving() {
        let runtime = runtime();
        runtime
            .install(
                "t",
                "p",
                component("chaos"),
                PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect("valid");
        let err = runtime
            .install(
                "t",
                "p",
                b"\0asm not really".to_vec(),
                PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect_err("garbage is refused");
        assert!(matches!(err, PluginError::NotAComponent(_)), "{err}");
        let chain = runtime.slot("t").chain();
        assert_eq!(chain.plugins().len(), 1, "the old version serves on");
        assert!(chain.authorize_join(&join("lobby")).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_past_its_plugin_count_is_refused() {
        let runtime = runtime();
        runtime.set_quota("t", 1, 8);
        runtime
            .install(
                "t",
                "one",
                component("chaos"),
                PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect("first");
        let err = runtime
            .install(
                "t",
                "two",
                component("chaos"),
                PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect_err("over the count");
        assert!(err.to_string().contains("already has 1 plugins"), "{err}");
        runtime
            .install(
                "t",
                "one",
                component("chaos"),
                PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect("replacing a plugin is not adding one");
    }
}
