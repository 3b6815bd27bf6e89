//! How much a plugin may use, and the store limiter that enforces and measures memory.

use std::time::Duration;

use serde::Deserialize;

/// Per-plugin limits. The defaults suit Rust and C plugins and leave room for JavaScript ones.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PluginLimits {
    /// Time one hook call may run before it is interrupted: epoch ticks of wall-clock time, extended
    /// while the calling thread was preempted (see `deadline`), so a busy machine does not kill calls.
    #[serde(with = "millis", rename = "deadline-ms")]
    pub deadline: Duration,
    /// Linear memory one instance may hold, all memories together.
    #[serde(rename = "memory-mib", with = "mebibytes")]
    pub memory_bytes: usize,
    /// Warm instances kept per plugin version; more are made under concurrency and dropped after.
    pub warm_instances: usize,
    /// Calls after which a warm instance is replaced by a fresh one (bounds state a guest accumulates).
    pub calls_per_instance: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            deadline: Duration::from_millis(10),
            memory_bytes: 128 << 20,
            warm_instances: 4,
            calls_per_instance: 100_000,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod mebibytes {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        usize::deserialize(d).map(|mib| mib.saturating_mul(1 << 20))
    }
}

/// Caps an instance's linear memory and remembers whether the cap was hit, so a trap that follows a
/// refused `memory.grow` is reported as out-of-memory rather than as a generic trap.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    cap: usize,
    used: usize,
    denied: bool,
}

impl MemoryCap {
    pub(crate) fn new(cap: usize) -> Self {
        MemoryCap {
            cap,
            used: 0,
            denied: false,
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    pub(crate) fn denied(&self) -> bool {
        self.denied
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.used + desired.saturating_sub(current);
        if grown > self.cap {
            self.denied = true;
            return Ok(false);
        }
        self.used = grown;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        100
    }

    fn tables(&self) -> usize {
        100
    }

    fn memories(&self) -> usize {
        16
    }
}
