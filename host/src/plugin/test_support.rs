//! Helpers for the plugin runtime's tests: the example components built by `plugins/build` (real
//! WebAssembly components, not stand-ins), a runtime without the pool or the disk cache, and hook inputs.

use std::path::PathBuf;
use std::sync::Arc;

use super::{PluginRuntime, TrustedKeys, WasmEngineOptions, types};

/// Where the built example plugins are: `$IOPLEX_PLUGINS_DIST`, else `plugins/dist` of the repository.
fn dist_dir() -> PathBuf {
    std::env::var_os("IOPLEX_PLUGINS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist"))
}

/// The bytes of the example plugin `name` (e.g. `chaos`).
pub(crate) fn component(name: &str) -> Vec<u8> {
    let path = dist_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; build the example plugins first with plugins/build",
            path.display()
        )
    })
}

/// A runtime for tests: no instance pool, no compile cache.
pub(crate) fn runtime() -> Arc<PluginRuntime> {
    runtime_trusting(TrustedKeys::default())
}

/// A test runtime that loads precompiled plugins signed by `keys`.
pub(crate) fn runtime_trusting(keys: TrustedKeys) -> Arc<PluginRuntime> {
    let options = WasmEngineOptions {
        pooling: false,
        cache_dir: None,
        trusted_keys: keys,
        ..WasmEngineOptions::default()
    };
    PluginRuntime::new(options).expect("plugin runtime")
}

/// A join of `room` by a socket of tenant `t`.
pub(crate) fn join(room: &str) -> types::JoinRequest {
    types::JoinRequest {
        socket: types::SocketInfo {
            tenant: "t".into(),
            namespace: "/".into(),
            id: "socket-0000000000000".into(),
            user_id: None,
            data_json: "null".into(),
            rooms: Vec::new(),
        },
        room: room.into(),
    }
}
