//! Turning bytes into a compiled component: format checks, then Cranelift, with an on-disk cache of the
//! compiled form keyed by content hash and engine compatibility hash.

#[cfg(feature = "compiler")]
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::PluginError;
use super::wasm_engine::PluginEngine;

/// The first eight bytes of a component binary: magic, then version 0x0d and layer 1.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Hex SHA-256 of a component's bytes: its identity in caches, logs and the fleet.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses a file over the size limit before any work is spent on it.
pub(crate) fn check_size(bytes: &[u8], max: usize) -> Result<(), PluginError> {
    if bytes.len() > max {
        return Err(PluginError::TooLarge {
            size: bytes.len(),
            limit: max,
        });
    }
    Ok(())
}

/// Checks the bytes are a component we may compile (never precompiled native code from outside).
pub(crate) fn check_format(bytes: &[u8], max: usize) -> Result<(), PluginError> {
    check_size(bytes, max)?;
    if Engine::detect_precompiled(bytes).is_some() {
        return Err(PluginError::Precompiled);
    }
    match bytes.get(..8) {
        Some(h) if h == COMPONENT_HEADER => Ok(()),
        Some(h) if h == MODULE_HEADER => Err(PluginError::NotAComponent(
            "this is a core module; build for wasm32-wasip2 or wrap it with `wasm-tools component new`".into(),
        )),
        _ => Err(PluginError::NotAComponent(
            "the file does not start with the WebAssembly magic number".into(),
        )),
    }
}

/// What this build cannot do: the edge build carries no compiler.
#[cfg(not(feature = "compiler"))]
pub(crate) fn compile(
    engine: &PluginEngine,
    bytes: &[u8],
    _sha: &str,
) -> Result<Component, PluginError> {
    check_format(bytes, engine.options.max_component_bytes)?;
    Err(PluginError::NoCompiler)
}

/// Compiles `bytes` (blocking: call from `spawn_blocking`), using and filling the cache.
#[cfg(feature = "compiler")]
pub(crate) fn compile(
    engine: &PluginEngine,
    bytes: &[u8],
    sha: &str,
) -> Result<Component, PluginError> {
    check_format(bytes, engine.options.max_component_bytes)?;
    let cached = engine
        .options
        .cache_dir
        .as_ref()
        .map(|dir| dir.join(format!("{sha}-{}.cwasm", engine.compat)));
    if let Some(path) = &cached
        && path.exists()
    {
        // SAFETY: only this process's own compiler writes the cache directory (see `store_cached`), and the
        // file name binds the artifact to the component's hash and this engine's compatibility hash.
        match unsafe { Component::deserialize_file(&engine.engine, path) } {
            Ok(component) => return Ok(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "dropping an unusable compiled plugin");
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let component = Component::new(&engine.engine, bytes)
        .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
    if let Some(path) = &cached {
        store_cached(&component, path);
    }
    Ok(component)
}

/// Writes the compiled form next to the others, atomically (temp file + rename). Failure only costs time.
#[cfg(feature = "compiler")]
fn store_cached(component: &Component, path: &Path) {
    let result = (|| -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("plugin"),
            std::process::id()
        ));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        tracing::warn!(path = %path.display(), error = %err, "cannot cache a compiled plugin");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_component() {
        assert!(matches!(
            check_format(b"hello", 100),
            Err(PluginError::NotAComponent(_))
        ));
        assert!(matches!(
            check_format(&MODULE_HEADER, 100),
            Err(PluginError::NotAComponent(m)) if m.contains("core module")
        ));
        assert!(matches!(
            check_format(&COMPONENT_HEADER, 4),
            Err(PluginError::TooLarge { size: 8, limit: 4 })
        ));
        assert!(check_format(&COMPONENT_HEADER, 100).is_ok());
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
