//! `ioplex plugin check`, and the plugin runtime settings the commands share.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use ioplex::plugin::{
    PluginManifest, PluginRuntime, TrustedKeys, WasmEngineOptions, is_precompiled,
};

/// The plugin engine's settings with `--plugin-cache-dir` (`none` turns the cache off) and
/// `--plugin-trusted-keys` applied.
pub fn plugin_engine_options(
    cache_dir: Option<&str>,
    trusted_keys: TrustedKeys,
) -> WasmEngineOptions {
    let mut options = WasmEngineOptions {
        trusted_keys,
        ..WasmEngineOptions::default()
    };
    match cache_dir {
        Some("none") => options.cache_dir = None,
        Some(dir) => options.cache_dir = Some(PathBuf::from(dir)),
        None => {}
    }
    options
}

/// A plugin runtime for validating files from the command line: no instance pool, no compile cache.
pub fn checking_runtime(trusted_keys: TrustedKeys) -> anyhow::Result<Arc<PluginRuntime>> {
    let mut options = plugin_engine_options(None, trusted_keys);
    options.pooling = false;
    options.cache_dir = None;
    Ok(PluginRuntime::new(options)?)
}

/// The manifest of the plugin at `wasm`: `explicit` (which must be readable), else `<wasm>.toml` if
/// it exists, else the defaults.
pub fn read_manifest(wasm: &Path, explicit: Option<&Path>) -> anyhow::Result<PluginManifest> {
    let path = explicit.map_or_else(|| wasm.with_extension("toml"), Path::to_path_buf);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(PluginManifest::parse(&text, &path.display().to_string())?),
        Err(_) if explicit.is_none() => Ok(PluginManifest::default()),
        Err(err) => anyhow::bail!("cannot read {}: {err}", path.display()),
    }
}

/// `ioplex plugin check`: exit code 0 if the gateway would serve the plugin, 1 if it would refuse it.
pub fn check_plugin(
    file: &Path,
    manifest: Option<&Path>,
    trusted_keys: TrustedKeys,
) -> anyhow::Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let manifest = read_manifest(file, manifest)?;
    let runtime = checking_runtime(trusted_keys)?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let started = Instant::now();
    match runtime.prepare("check", name, &bytes, manifest) {
        Ok(plugin) => {
            let hooks: Vec<_> = plugin.hooks().iter().map(|h| h.name()).collect();
            println!("{}: ok", file.display());
            println!("  contract: {}", ioplex::plugin::CONTRACT);
            println!("  hooks:    {}", hooks.join(", "));
            println!("  sha256:   {}", plugin.sha256());
            println!(
                "  size:     {} bytes, {} and smoke-tested in {} ms",
                plugin.size(),
                if is_precompiled(&bytes) {
                    "signature checked, loaded"
                } else {
                    "compiled"
                },
                started.elapsed().as_millis()
            );
            Ok(true)
        }
        Err(err) => {
            println!("{}: refused: {err}", file.display());
            Ok(false)
        }
    }
}
