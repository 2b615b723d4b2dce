//! Files tallyd reads again without a restart (the API key file, the TLS
//! certificate and key): whenever one changes on disk, checked every
//! second, and on SIGHUP.
//!
//! A change is a new modification time or length. Kubernetes updates a
//! mounted Secret by swapping a symlink, which changes what the path
//! resolves to, so that counts as well.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often the files are looked at for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Some files and how they were when last read.
pub struct WatchedFiles {
    paths: Vec<PathBuf>,
    seen: Mutex<Vec<Stamp>>,
}

impl WatchedFiles {
    /// Takes the files' stamps now: make it before reading them, so that a
    /// change made while they are read is seen at the next look.
    pub fn new(paths: Vec<PathBuf>) -> WatchedFiles {
        let seen = paths.iter().map(|p| stamp(p)).collect();
        WatchedFiles {
            paths,
            seen: Mutex::new(seen),
        }
    }

    /// Whether any file changed since the last look; remembers the stamps.
    fn changed(&self) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        let mut seen = self.seen.lock().expect("watched files lock");
        let changed = *seen != now;
        *seen = now;
        changed
    }

    /// Calls `reload` whenever a file changes and on SIGHUP, until the
    /// task is aborted. `reload` keeps what it had when the files do not
    /// load.
    pub fn watch(
        self: Arc<Self>,
        reload: impl Fn() + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            loop {
                #[cfg(unix)]
                let hung_up = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hung_up = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = tick.tick() => {
                        if self.changed() {
                            reload();
                        }
                    }
                    _ = hung_up => {
                        self.changed();
                        reload();
                    }
                }
            }
        })
    }
}
