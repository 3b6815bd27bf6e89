//! The tenants file and directory, re-read when they change: a new configuration is applied to the
//! running [`Tenants`]; one that does not parse or validate is logged and the running one stays.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::config::TenantsConfig;
use super::registry::Tenants;
use crate::file_watch::{self, FileStamp, Watched};

/// Keeps a gateway's tenants in step with their configuration file.
pub struct ConfigWatch {
    file: PathBuf,
    current: TenantsConfig,
    seen: Vec<(PathBuf, Option<FileStamp>)>,
    tenants: Weak<Tenants>,
}

/// What one check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigCheck {
    /// No file changed, or the change left the configuration as it was.
    Unchanged,
    /// The new configuration is serving.
    Applied,
    /// The files changed but their configuration was refused; the message says why.
    Refused(String),
}

impl ConfigWatch {
    /// A watch of `file` (and the tenants directory it names), which `tenants` serves as `current`.
    pub fn new(file: PathBuf, current: TenantsConfig, tenants: &Arc<Tenants>) -> Self {
        let seen = stamps(&file, current.tenants_dir.as_deref());
        ConfigWatch {
            file,
            current,
            seen,
            tenants: Arc::downgrade(tenants),
        }
    }

    /// Checks every `interval` until the tenants are dropped.
    pub fn spawn(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        file_watch::every(interval, self)
    }

    /// Looks at the files once and applies a changed configuration.
    pub async fn check_once(&mut self, tenants: &Tenants) -> ConfigCheck {
        let now = stamps(&self.file, self.current.tenants_dir.as_deref());
        if now == self.seen {
            return ConfigCheck::Unchanged;
        }
        self.seen = now;
        match TenantsConfig::load(&self.file) {
            Ok(next) if next == self.current => ConfigCheck::Unchanged,
            Ok(next) => match tenants.reload(&next).await {
                Ok(()) => {
                    tracing::info!(file = %self.file.display(), tenants = next.tenants.len(), "configuration reloaded");
                    self.current = next;
                    ConfigCheck::Applied
                }
                Err(err) => {
                    let message = format!("{err:#}");
                    tracing::error!(error = %message, "configuration not applied; the previous one stays");
                    ConfigCheck::Refused(message)
                }
            },
            Err(err) => {
                tracing::error!(error = %err, "configuration refused; the previous one stays");
                ConfigCheck::Refused(err.to_string())
            }
        }
    }
}

impl Watched for ConfigWatch {
    async fn check(&mut self) -> ControlFlow<()> {
        let Some(tenants) = self.tenants.upgrade() else {
            return ControlFlow::Break(());
        };
        self.check_once(&tenants).await;
        ControlFlow::Continue(())
    }
}

/// The file and every entry of the tenants directory, with their stamps, in name order.
fn stamps(file: &Path, dir: Option<&Path>) -> Vec<(PathBuf, Option<FileStamp>)> {
    let mut files = vec![file.to_path_buf()];
    if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stamp = FileStamp::of(&p);
            (p, stamp)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::registry::test_support::{scratch, tenants_from};

    #[tokio::test]
    async fn a_changed_file_is_applied_and_a_broken_one_refused() {
        let dir = scratch("watch");
        let (tenants, config) = tenants_from(&dir, "[tenants.acme]\ndefault = true\n").await;
        let file = dir.join("ioplex.toml");
        let mut watch = ConfigWatch::new(file.clone(), config, &tenants);
        assert_eq!(watch.check_once(&tenants).await, ConfigCheck::Unchanged);

        std::fs::write(
            &file,
            "[tenants.acme]\ndefault = true\n\n[tenants.globex]\n",
        )
        .expect("write");
        assert_eq!(watch.check_once(&tenants).await, ConfigCheck::Applied);
        assert!(tenants.get("globex").is_some());

        std::fs::write(&file, "[tenants.acme]\ndefault = true\nnot-a-field = 1\n").expect("write");
        match watch.check_once(&tenants).await {
            ConfigCheck::Refused(message) => assert!(message.contains("not-a-field"), "{message}"),
            other => panic!("a typo must be refused, got {other:?}"),
        }
        assert!(
            tenants.get("globex").is_some(),
            "the running configuration stays"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[tokio::test]
    async fn a_new_file_in_the_tenants_directory_counts_as_a_change() {
        let dir = scratch("watch-dir");
        std::fs::create_dir_all(dir.join("tenants.d")).expect("dir");
        let (tenants, config) = tenants_from(
            &dir,
            "tenants-dir = \"tenants.d\"\n[tenants.acme]\ndefault = true\n",
        )
        .await;
        let mut watch = ConfigWatch::new(dir.join("ioplex.toml"), config, &tenants);
        std::fs::write(
            dir.join("tenants.d/hooli.toml"),
            "hosts = [\"hooli.example\"]\n",
        )
        .expect("write");
        assert_eq!(watch.check_once(&tenants).await, ConfigCheck::Applied);
        assert!(tenants.get("hooli").is_some());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
