//! The plugin runtime a gateway owns: one engine, one slot per tenant, and the install pipeline
//! (compile off the request path, validate, swap).

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use wasmtime::component::Component;

use super::chain::{PluginChain, PluginSlot};
use super::compile::{compile, sha256_hex};
use super::engine::{EngineOptions, PluginEngine};
use super::error::PluginError;
use super::loaded::LoadedPlugin;
use super::manifest::PluginManifest;
use super::state::PluginContext;

/// Runs every tenant's plugins.
pub struct PluginRuntime {
    engine: Arc<PluginEngine>,
    slots: DashMap<Arc<str>, Arc<PluginSlot>>,
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
    pub fn new(options: EngineOptions) -> Result<Arc<Self>, PluginError> {
        Ok(Arc::new(PluginRuntime {
            engine: Arc::new(PluginEngine::new(options)?),
            slots: DashMap::new(),
        }))
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

    /// The slot of `tenant` if it has one (a tenant directory, or an install).
    pub fn existing_slot(&self, tenant: &str) -> Option<Arc<PluginSlot>> {
        self.slots.get(tenant).map(|s| Arc::clone(&s))
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

    /// Compiles and validates a plugin version without installing it (blocking; seconds for a
    /// JavaScript component, milliseconds from the compile cache).
    pub fn prepare(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
        manifest: PluginManifest,
    ) -> Result<LoadedPlugin, PluginError> {
        let sha = sha256_hex(bytes);
        let component: Component = compile(&self.engine, bytes, &sha)?;
        let ctx = Arc::new(PluginContext {
            tenant: Arc::from(tenant),
            name: Arc::from(name),
            version: sha[..12].to_owned(),
            settings: manifest.settings,
        });
        LoadedPlugin::validate(
            &self.engine,
            &component,
            ctx,
            sha,
            bytes.len(),
            manifest.limits,
        )
    }

    /// Validates a new version off the request path and swaps it in. Calls in flight finish on the old
    /// version; on any error the old version keeps serving.
    pub async fn install(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        bytes: Vec<u8>,
        manifest: PluginManifest,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let started = Instant::now();
        let runtime = Arc::clone(self);
        let (t, n) = (tenant.to_owned(), name.to_owned());
        let prepared =
            tokio::task::spawn_blocking(move || runtime.prepare(&t, &n, &bytes, manifest))
                .await
                .map_err(|e| PluginError::Engine(format!("validation task failed: {e}")))?;
        let plugin = match prepared {
            Ok(plugin) => Arc::new(plugin),
            Err(err) => {
                tracing::warn!(tenant, plugin = name, error = %err, "plugin version refused; the previous version keeps serving");
                return Err(err);
            }
        };
        self.slot(tenant).install(Arc::clone(&plugin));
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
