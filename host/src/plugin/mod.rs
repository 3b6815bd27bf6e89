//! Tenant plugins: sandboxed WebAssembly components that decide who connects, who joins which room,
//! and what events and broadcasts carry.
//!
//! The contract is the WIT package `ioplex:plugin@0.1.0` (`wit/plugin.wit`). This module knows
//! nothing of sockets: callers build the WIT records ([`types`]) and act on the answers.
//!
//! - [`PluginRuntime`]: one wasmtime engine (instance pool, epoch ticker) and one [`PluginSlot`] per
//!   tenant. [`PluginRuntime::install`] compiles off the request path, validates (imports, exports, a
//!   smoke call per hook) and swaps atomically; a refused version leaves the old one serving.
//! - [`PluginChain`]: what a request holds: the tenant's plugins in name order, each hook run as a chain.
//! - Every call runs on a warm instance under a CPU deadline and a memory cap; a trap, timeout or OOM
//!   drops that instance, fails the request closed, is logged and counted, and repeated failures open
//!   the plugin's breaker.
//! - [`PluginDir`]: plugins from `<dir>/<tenant>/<name>.wasm` or `<name>.cwasm` (+ `<name>.toml`),
//!   watched for changes.
//! - Precompiled plugins (`.cwasm`, [`PluginRuntime::precompile`]): compiled on a build machine, signed
//!   with its [`SigningKey`], loaded only by nodes that trust the key ([`TrustedKeys`]). The edge build
//!   (no `compiler` feature) serves nothing else.

mod bindings;
mod breaker;
mod chain;
mod compile;
mod deadline;
mod error;
mod fleet;
mod fleet_key;
mod limits;
mod loaded;
mod manifest;
mod precompiled;
mod runtime;
mod state;
#[cfg(test)]
pub(crate) mod test_support;
mod wasm_engine;
mod watch;

pub use bindings::types;
pub use chain::{BroadcastOutcome, EventOutcome, HookError, PluginChain, PluginSlot};
pub use compile::sha256_hex;
pub use error::{CallFailure, PluginError};
pub use fleet::{FleetError, PluginFleet, TenantExists};
pub use fleet_key::{FleetKey, WeakKey};
pub use limits::PluginLimits;
pub use loaded::{
    CONTRACT, Hook, LATENCY_BUCKETS, LatencyHistogram, LoadedPlugin, PluginSource, PluginStats,
};
pub use manifest::PluginManifest;
pub use precompiled::{
    BadKey, EXTENSION as PRECOMPILED_EXTENSION, SigningKey, SigningKeyError, TrustedKey,
    TrustedKeys, is_precompiled,
};
pub use runtime::{DEFAULT_MAX_INSTANCES, DEFAULT_MAX_PLUGINS, PluginRuntime, TenantQuota};
pub use state::PluginContext;
pub use wasm_engine::{WasmEngineOptions, default_cache_dir};
pub use watch::{PluginDir, ScanReport};
