//! Turning bytes into a compiled component: format checks, then Cranelift, with an on-disk cache of the
//! compiled form keyed by content hash and engine compatibility hash (also holding precompiled
//! artifacts once their signature was checked).

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::PluginError;
use super::wasm_engine::PluginEngine;

/// The first eight bytes of a component binary: magic, then version 0x0d and layer 1.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Hex SHA-256 of a component's bytes: its identity in caches, logs and the fleet.
pub fn sha256_hex(bytes: &[u8]) -> String {
    // ring's SHA-256 is assembly (SHA extensions where the CPU has them): a precompiled JavaScript
    // plugin is ~40 MB, hashed on every load, and the edge build optimises Rust code for size.
    crate::hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
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
    let cached = cache_path(engine, &format!("{sha}-{}.cwasm", engine.compat));
    if let Some(component) = cached.as_deref().and_then(|path| load_cached(engine, path)) {
        return Ok(component);
    }
    let component = Component::new(&engine.engine, bytes)
        .map_err(|e| PluginError::Compile(format!("{e:#}")))?;
    if let Some(path) = &cached {
        match component.serialize() {
            Ok(artifact) => store_cached(path, &artifact),
            Err(err) => {
                tracing::warn!(error = %err, "cannot serialize a compiled plugin to cache it")
            }
        }
    }
    Ok(component)
}

/// Where the cache keeps `file_name`, if this node has a cache.
pub(crate) fn cache_path(engine: &PluginEngine, file_name: &str) -> Option<PathBuf> {
    engine
        .options
        .cache_dir
        .as_ref()
        .map(|dir| dir.join(file_name))
}

/// A compiled component from the cache (mapped, not read), if one is there; one that no longer loads is
/// dropped.
pub(crate) fn load_cached(engine: &PluginEngine, path: &Path) -> Option<Component> {
    if !path.exists() {
        return None;
    }
    // SAFETY: only this process writes the cache directory (`store_cached`), with artifacts it compiled
    // itself or verified against a trusted signature, under names that bind them to their hash.
    match unsafe { Component::deserialize_file(&engine.engine, path) } {
        Ok(component) => Some(component),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "dropping an unusable compiled plugin");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Writes a compiled form next to the others, atomically (temp file + rename). Failure only costs time.
pub(crate) fn store_cached(path: &Path, artifact: &[u8]) {
    let result = (|| -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("plugin"),
            std::process::id()
        ));
        std::fs::write(&tmp, artifact)?;
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
