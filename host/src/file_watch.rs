//! Polling of files that configure a running node (the tenants file, the plugin directory): one loop,
//! one way to tell that a file changed without reading it.
//!
//! Polling, not inotify: it works the same on every file system (network mounts, container volumes,
//! Kubernetes config maps swapped by symlink), and a check every second costs a few `stat` calls.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What tells one version of a file from the next without reading it: its length and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Length in bytes.
    pub len: u64,
    /// Last modification, where the file system keeps it.
    pub modified: Option<SystemTime>,
}

impl FileStamp {
    /// The stamp of the file at `path`, or `None` when it cannot be read (absent, say).
    pub fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Something kept in step with files on disk.
pub trait Watched: Send + 'static {
    /// Looks at the files and applies what changed; `Break` ends the watch (its owner is gone).
    fn check(&mut self) -> impl std::future::Future<Output = ControlFlow<()>> + Send;
}

/// Calls `watched.check()` every `interval` (a slow check delays the next one rather than piling up)
/// until it answers `Break`.
pub fn every<W: Watched>(interval: Duration, mut watched: W) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the owner has just read the files itself
        loop {
            tick.tick().await;
            if watched.check().await.is_break() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_stamp_changes_with_the_content() {
        let dir = std::env::temp_dir().join(format!("ioplex-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a.toml");
        assert_eq!(FileStamp::of(&file), None);
        std::fs::write(&file, "x = 1\n").expect("write");
        let first = FileStamp::of(&file).expect("stamp");
        std::fs::write(&file, "x = 12\n").expect("write");
        let second = FileStamp::of(&file).expect("stamp");
        assert_ne!(first, second, "a longer file has another stamp");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    struct Counter(Arc<AtomicUsize>, usize);
    impl Watched for Counter {
        async fn check(&mut self) -> ControlFlow<()> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_checks_on_each_tick_until_break() {
        let calls = Arc::new(AtomicUsize::new(0));
        let task = every(Duration::from_secs(1), Counter(Arc::clone(&calls), 3));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "nothing before the first interval"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        task.await.expect("the watch ends");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "stopped at Break");
    }
}
