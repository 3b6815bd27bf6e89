//! What a plugin's store holds, and the host functions a plugin may import.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::LogLevel;
use super::bindings::ioplex::plugin::{host, types};
use super::deadline::CallClock;
use super::limits::MemoryCap;

/// Log lines a plugin may write per call; more are dropped (a guest must not flood the host's logs).
const LOGS_PER_CALL: u32 = 16;
/// Longest log line kept, in bytes.
const LOG_LINE_MAX: usize = 1024;

/// Who a plugin instance runs for; shared by every instance of one plugin version.
#[derive(Debug)]
pub struct PluginContext {
    /// The tenant the plugin belongs to.
    pub tenant: Arc<str>,
    /// The plugin's name within the tenant (its file name without `.wasm`).
    pub name: Arc<str>,
    /// First 12 hex digits of the component's SHA-256.
    pub version: String,
    /// Settings from the tenant's configuration, read by the guest through `host.setting`.
    pub settings: BTreeMap<String, String>,
}

/// The data of one plugin store: an empty WASI context (no files, network, environment, arguments or
/// stdio), the memory cap, and the plugin's identity.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) cap: MemoryCap,
    ctx: Arc<PluginContext>,
    logs_this_call: u32,
    pub(crate) clock: CallClock,
}

/// Random bytes one WASI call may ask for (guest runtimes seed themselves with a few dozen).
const MAX_RANDOM_BYTES: u64 = 4096;

/// The WASI context of a plugin: nothing to open, clocks no finer than `host.now-ms` gives (a
/// millisecond; a finer timer would serve timing side channels), random bytes in small amounts. The
/// socket interfaces are linked (language runtimes such as componentize-py's import them), but TCP, UDP
/// and name lookups are refused before the host makes an OS socket, so a plugin can neither reach the
/// network nor spend the node's file descriptors.
fn sandbox_wasi() -> WasiCtx {
    WasiCtx::builder()
        .wall_clock(MillisecondWallClock)
        .monotonic_clock(MillisecondMonotonicClock(std::time::Instant::now()))
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

const MILLISECOND: std::time::Duration = std::time::Duration::from_millis(1);

/// Wall-clock time truncated to the millisecond.
struct MillisecondWallClock;

impl wasmtime_wasi::HostWallClock for MillisecondWallClock {
    fn resolution(&self) -> std::time::Duration {
        MILLISECOND
    }

    fn now(&self) -> std::time::Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        std::time::Duration::from_millis(now.as_millis() as u64)
    }
}

/// Monotonic time since the instance started, truncated to the millisecond (in nanoseconds).
struct MillisecondMonotonicClock(std::time::Instant);

impl wasmtime_wasi::HostMonotonicClock for MillisecondMonotonicClock {
    fn resolution(&self) -> u64 {
        MILLISECOND.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        (self.0.elapsed().as_millis() as u64).saturating_mul(1_000_000)
    }
}

impl HostState {
    pub(crate) fn new(ctx: Arc<PluginContext>, memory_bytes: usize) -> Self {
        HostState {
            wasi: sandbox_wasi(),
            table: ResourceTable::new(),
            cap: MemoryCap::new(memory_bytes),
            ctx,
            logs_this_call: 0,
            clock: CallClock::new(),
        }
    }

    /// Resets per-call state before a call (or an instantiation) with this deadline.
    pub(crate) fn start_call(&mut self, deadline: std::time::Duration) {
        self.logs_this_call = 0;
        self.clock.start(deadline);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.logs_this_call += 1;
        if self.logs_this_call > LOGS_PER_CALL {
            return Ok(());
        }
        let mut message = message;
        if message.len() > LOG_LINE_MAX {
            let mut end = LOG_LINE_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let (tenant, plugin, version) = (&*self.ctx.tenant, &*self.ctx.name, &self.ctx.version);
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "ioplex::plugin::guest", tenant, plugin, version, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "ioplex::plugin::guest", tenant, plugin, version, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "ioplex::plugin::guest", tenant, plugin, version, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "ioplex::plugin::guest", tenant, plugin, version, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "ioplex::plugin::guest", tenant, plugin, version, "{message}")
            }
        }
        Ok(())
    }

    fn setting(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.settings.get(&key).cloned())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64))
    }
}

#[cfg(test)]
mod tests {
    use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

    use super::*;

    #[test]
    fn plugin_clocks_tick_in_whole_milliseconds() {
        let wall = MillisecondWallClock;
        assert_eq!(wall.resolution(), MILLISECOND);
        assert_eq!(wall.now().subsec_nanos() % 1_000_000, 0);
        let mono = MillisecondMonotonicClock(std::time::Instant::now());
        assert_eq!(mono.resolution(), 1_000_000);
        std::thread::sleep(std::time::Duration::from_millis(3));
        let now = mono.now();
        assert_eq!(now % 1_000_000, 0);
        assert!(now >= 3_000_000);
    }
}
