//! Why a plugin was refused, and why a call failed.

use std::time::Duration;

/// A plugin version that cannot serve. The old version, if any, keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Bare native code: only loaded from this node's own cache or inside a signed envelope.
    #[error(
        "this is bare precompiled native code; install the .wasm component, or a .cwasm made by `ioplex plugin compile`"
    )]
    Precompiled,
    /// A precompiled plugin whose envelope is not signed by a key this node trusts, or was altered.
    #[error("precompiled plugin refused: {0}")]
    Untrusted(String),
    /// A trusted precompiled plugin built for another wasmtime version, engine settings or CPU.
    #[error(
        "precompiled plugin does not fit this node (recompile it with this ioplex version): {0}"
    )]
    Incompatible(String),
    /// This build has no compiler (the edge build) and the plugin is not precompiled.
    #[error(
        "this ioplex build has no compiler: install the plugin precompiled (`ioplex plugin compile` on a build machine) as <name>.cwasm"
    )]
    NoCompiler,
    /// A core module, or not WebAssembly at all.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// Larger than the configured limit.
    #[error("the component is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Cranelift refused it.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// It imports something the host does not provide (files, sockets, another contract version...).
    #[error(
        "the component imports `{0}`, which ioplex does not provide (plugins may import ioplex:plugin/host@0.1 and WASI 0.2 only)"
    )]
    ForbiddenImport(String),
    /// It exports none of the hooks of a contract version this host serves.
    #[error("the component exports no ioplex hook (expected one of {expected}; found: {found})")]
    NoHooks {
        /// The hooks the host serves.
        expected: String,
        /// What the component exports.
        found: String,
    },
    /// An export has the right name but the wrong shape.
    #[error("the hook {hook} does not match the contract: {reason}")]
    HookMismatch {
        /// The hook.
        hook: &'static str,
        /// How it differs from the contract.
        reason: String,
    },
    /// Linking or instantiating failed.
    #[error("the component cannot be instantiated: {0}")]
    Instantiate(String),
    /// The smoke call trapped, timed out or ran out of memory.
    #[error("the smoke call of {hook} failed: {failure}")]
    SmokeCall {
        /// The hook called.
        hook: &'static str,
        /// How the call failed.
        failure: CallFailure,
    },
    /// The manifest next to the component is unreadable.
    #[error("manifest {path}: {reason}")]
    Manifest {
        /// The manifest file.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The engine could not be set up.
    #[error("plugin engine: {0}")]
    Engine(String),
    /// The tenant is at one of its plugin limits (plugins, compile jobs).
    #[error("{0}")]
    Limit(String),
}

/// A hook call that produced no answer. Every kind fails closed and counts toward the tenant's breaker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The call ran past its CPU deadline and was interrupted.
    #[error("ran past its {0:?} deadline")]
    Timeout(Duration),
    /// The guest tried to grow its memory past the cap.
    #[error("ran out of memory (cap {0} bytes)")]
    OutOfMemory(usize),
    /// The guest trapped (a panic, an unreachable, a bad memory access, a stack overflow).
    #[error("trapped: {0}")]
    Trap(String),
    /// A fresh instance could not be made (e.g. the instance pool is full).
    #[error("no instance available: {0}")]
    Unavailable(String),
    /// The tenant's breaker is open after repeated failures: calls are refused until it closes.
    #[error("plugin disabled for {0:?} after repeated failures")]
    BreakerOpen(Duration),
}

impl CallFailure {
    /// A short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::Timeout(_) => "timeout",
            CallFailure::OutOfMemory(_) => "out_of_memory",
            CallFailure::Trap(_) => "trap",
            CallFailure::Unavailable(_) => "unavailable",
            CallFailure::BreakerOpen(_) => "breaker_open",
        }
    }
}
