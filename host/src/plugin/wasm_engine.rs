//! The one wasmtime engine every tenant's plugins share: compiler settings, the instance pool, the epoch
//! ticker that enforces deadlines, and the linker holding the host's imports.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::error::PluginError;
use super::precompiled::TrustedKeys;
use super::state::HostState;

/// Settings of the plugin engine, shared by every tenant.
#[derive(Debug, Clone)]
pub struct WasmEngineOptions {
    /// How often the epoch advances; deadlines are whole ticks.
    pub epoch_tick: Duration,
    /// Pre-reserve instance slots (fast instantiation) instead of mapping memory per instance.
    pub pooling: bool,
    /// Instance slots in the pool (warm instances of all tenants together, plus calls in flight).
    pub pool_instances: u32,
    /// Largest linear memory any plugin may be given (per-plugin caps sit below it).
    pub max_memory_bytes: usize,
    /// Wasm call-stack limit.
    pub max_wasm_stack: usize,
    /// Where compiled components are kept between restarts (`None`: compile on every start).
    pub cache_dir: Option<PathBuf>,
    /// Largest component accepted, in bytes.
    pub max_component_bytes: usize,
    /// Keys whose signed precompiled plugins (`.cwasm`) this node loads.
    pub trusted_keys: TrustedKeys,
}

impl Default for WasmEngineOptions {
    fn default() -> Self {
        WasmEngineOptions {
            epoch_tick: Duration::from_millis(1),
            pooling: true,
            pool_instances: 1000,
            max_memory_bytes: 512 << 20,
            max_wasm_stack: 512 << 10,
            cache_dir: default_cache_dir(),
            max_component_bytes: 64 << 20,
            trusted_keys: TrustedKeys::default(),
        }
    }
}

/// `$XDG_CACHE_HOME/ioplex/plugins`, else `$HOME/.cache/ioplex/plugins`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("ioplex").join("plugins"))
}

/// The engine and its linker.
pub(crate) struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    /// Hash of everything a compiled artifact depends on (wasmtime version, settings, CPU features).
    #[cfg(feature = "compiler")]
    pub(crate) compat: String,
    pub(crate) options: WasmEngineOptions,
}

impl PluginEngine {
    pub(crate) fn new(options: WasmEngineOptions) -> Result<Self, PluginError> {
        let engine = match build_engine(&options, options.pooling) {
            Ok(engine) => engine,
            Err(err) if options.pooling => {
                tracing::warn!(error = %err, "instance pool unavailable here; plugins use on-demand allocation");
                build_engine(&options, false)?
            }
            Err(err) => return Err(err),
        };
        spawn_epoch_ticker(&engine, options.epoch_tick);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        bindings::ioplex::plugin::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        #[cfg(feature = "compiler")]
        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            env!("CARGO_PKG_VERSION").hash(&mut h);
            format!("{:016x}", h.finish())
        };
        Ok(PluginEngine {
            engine,
            linker,
            #[cfg(feature = "compiler")]
            compat,
            options,
        })
    }

    /// Epoch ticks a deadline spans (at least one).
    pub(crate) fn ticks(&self, deadline: Duration) -> u64 {
        let tick = self.options.epoch_tick.as_nanos().max(1);
        (deadline.as_nanos().div_ceil(tick) as u64).max(1)
    }
}

fn build_engine(options: &WasmEngineOptions, pooling: bool) -> Result<Engine, PluginError> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(options.max_wasm_stack);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        let n = options.pool_instances;
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .max_memory_size(options.max_memory_bytes)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))
}

/// Advances the epoch until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("ioplex-plugin-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        });
    if let Err(err) = spawned {
        // Without the ticker no deadline would ever fire; better to say so loudly.
        tracing::error!(error = %err, "cannot start the plugin epoch ticker: plugin deadlines are not enforced");
    }
}
