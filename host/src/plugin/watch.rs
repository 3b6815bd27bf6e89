//! Plugins from a directory: `<dir>/<tenant>/<name>.wasm` (a component) or `<name>.cwasm` (precompiled
//! and signed, see `precompiled`; it wins when both are present), with an optional `<name>.toml` manifest
//! beside it, installed at start-up and reinstalled when either file changes.
//!
//! Replace a plugin by writing the new file under another name and renaming it over the old one; a
//! half-written file is refused like any broken upload (the old version keeps serving) and retried when
//! it changes again.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::manifest::PluginManifest;
use super::precompiled::EXTENSION as PRECOMPILED;
use super::runtime::PluginRuntime;
use crate::file_watch::{self, FileStamp, Watched};

/// What identifies one version of a plugin's files without reading them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    plugin: FileStamp,
    manifest: Option<FileStamp>,
}

/// A plugin file that appeared or changed.
struct Changed {
    tenant: String,
    name: String,
    file: String,
    stamp: Stamp,
    bytes: std::io::Result<Vec<u8>>,
    manifest: Option<(PathBuf, std::io::Result<String>)>,
}

/// What a scan found on disk.
#[derive(Default)]
struct Collected {
    tenants: Vec<String>,
    changed: Vec<Changed>,
    present: Vec<(String, String)>,
}

/// Keeps a runtime in step with a plugin directory.
pub struct PluginDir {
    root: PathBuf,
    runtime: Arc<PluginRuntime>,
    seen: HashMap<(String, String), Stamp>,
}

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// `tenant/name` of versions now serving.
    pub installed: Vec<String>,
    /// `tenant/name: error` of versions refused.
    pub refused: Vec<String>,
    /// `tenant/name` of plugins whose files went away.
    pub removed: Vec<String>,
}

/// Plugin names: what may appear in file names, metrics labels and Redis keys.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

impl PluginDir {
    /// A directory source for `runtime`; nothing is read until [`PluginDir::scan`].
    pub fn new(root: impl Into<PathBuf>, runtime: Arc<PluginRuntime>) -> Self {
        PluginDir {
            root: root.into(),
            runtime,
            seen: HashMap::new(),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists the plugin files and reads those that changed since the last scan (blocking I/O).
    fn collect(root: &Path, seen: &HashMap<(String, String), Stamp>) -> Collected {
        let mut found = Collected::default();
        let Ok(dirs) = std::fs::read_dir(root) else {
            return found;
        };
        let Collected {
            tenants,
            changed,
            present,
        } = &mut found;
        for tenant_dir in dirs.flatten() {
            let tenant = tenant_dir.file_name().to_string_lossy().into_owned();
            if !valid_name(&tenant) || !tenant_dir.path().is_dir() {
                continue;
            }
            tenants.push(tenant.clone());
            let Ok(files) = std::fs::read_dir(tenant_dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                match path.extension().and_then(|e| e.to_str()) {
                    Some(PRECOMPILED) => {}
                    Some("wasm") if !path.with_extension(PRECOMPILED).exists() => {}
                    _ => continue,
                }
                let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                if !valid_name(&name) {
                    continue;
                }
                let Some(plugin) = FileStamp::of(&path) else {
                    continue;
                };
                let manifest_path = path.with_extension("toml");
                let stamp = Stamp {
                    plugin,
                    manifest: FileStamp::of(&manifest_path),
                };
                let key = (tenant.clone(), name.clone());
                present.push(key.clone());
                if seen.get(&key) == Some(&stamp) {
                    continue;
                }
                let manifest = stamp.manifest.is_some().then(|| {
                    (
                        manifest_path.clone(),
                        std::fs::read_to_string(&manifest_path),
                    )
                });
                changed.push(Changed {
                    tenant: key.0,
                    name: key.1,
                    file: file.file_name().to_string_lossy().into_owned(),
                    stamp,
                    bytes: std::fs::read(&path),
                    manifest,
                });
            }
        }
        found
    }

    /// Installs what changed, removes what went away. Every tenant directory gets a slot; a plugin whose
    /// first version is refused leaves the tenant failing closed until a valid version arrives (a broken
    /// room-auth plugin must not open every room).
    pub async fn scan(&mut self) -> ScanReport {
        let root = self.root.clone();
        let seen = self.seen.clone();
        let Collected {
            tenants,
            changed,
            present,
        } = match tokio::task::spawn_blocking(move || Self::collect(&root, &seen)).await {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(error = %err, "plugin directory scan failed");
                return ScanReport::default();
            }
        };
        for tenant in &tenants {
            self.runtime.slot(tenant);
        }
        let mut report = ScanReport::default();
        for c in changed {
            let id = format!("{}/{}", c.tenant, c.name);
            self.seen
                .insert((c.tenant.clone(), c.name.clone()), c.stamp);
            let result = async {
                let bytes = c.bytes.map_err(|e| format!("{}: {e}", c.file))?;
                let manifest = match c.manifest {
                    None => PluginManifest::default(),
                    Some((path, text)) => {
                        let origin = path.display().to_string();
                        let text = text.map_err(|e| format!("{origin}: {e}"))?;
                        PluginManifest::parse(&text, &origin).map_err(|e| e.to_string())?
                    }
                };
                let current = self.runtime.slot(&c.tenant).chain();
                if let Some(p) = current.get(&c.name)
                    && p.sha256() == super::precompiled::version_hash(&bytes)
                    && p.context().settings == manifest.settings
                    && *p.limits() == manifest.limits
                {
                    return Ok(false); // touched, not changed
                }
                self.runtime
                    .install(
                        &c.tenant,
                        &c.name,
                        bytes,
                        manifest,
                        super::loaded::PluginSource::Directory,
                    )
                    .await
                    .map(|_| true)
                    .map_err(|e| e.to_string())
            }
            .await;
            match result {
                Ok(true) => report.installed.push(id),
                Ok(false) => {}
                Err(err) => {
                    let slot = self.runtime.slot(&c.tenant);
                    let serving = slot.chain().get(&c.name).is_some();
                    if !serving {
                        slot.mark_unavailable(&c.name);
                    }
                    tracing::warn!(plugin = %id, error = %err, previous_version_serving = serving, "plugin file refused");
                    report.refused.push(format!("{id}: {err}"));
                }
            }
        }
        let gone: Vec<_> = self
            .seen
            .keys()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        for key in gone {
            self.seen.remove(&key);
            if self.runtime.remove(&key.0, &key.1) {
                report.removed.push(format!("{}/{}", key.0, key.1));
            }
        }
        report
    }

    /// Scans every `interval` until the runtime is dropped elsewhere and this is the last reference.
    pub fn watch(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        file_watch::every(interval, self)
    }
}

impl Watched for PluginDir {
    async fn check(&mut self) -> ControlFlow<()> {
        self.scan().await;
        if Arc::strong_count(&self.runtime) == 1 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::test_support::{component, runtime};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_directory_installs_refuses_and_removes() {
        let root = std::env::temp_dir().join(format!("ioplex-plugindir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("acme")).expect("tenant dir");
        std::fs::write(root.join("acme/chaos.wasm"), component("chaos")).expect("write plugin");
        std::fs::write(root.join("acme/broken.wasm"), b"not wasm").expect("write broken");
        let runtime = runtime();
        let mut dir = PluginDir::new(&root, Arc::clone(&runtime));
        let report = dir.scan().await;
        assert_eq!(report.installed, vec!["acme/chaos".to_owned()]);
        assert_eq!(report.refused.len(), 1);
        assert!(
            report.refused[0].starts_with("acme/broken: "),
            "{:?}",
            report.refused
        );
        assert_eq!(
            dir.scan().await,
            ScanReport::default(),
            "nothing changed, nothing done"
        );

        std::fs::remove_file(root.join("acme/chaos.wasm")).expect("remove");
        let report = dir.scan().await;
        assert_eq!(report.removed, vec!["acme/chaos".to_owned()]);
        assert!(runtime.slot("acme").chain().get("chaos").is_none());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn plugin_names_are_what_files_metrics_and_keys_can_carry() {
        assert!(valid_name("10-room_auth.v2"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
