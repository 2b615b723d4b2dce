//! Checkpoints off the commit path.
//!
//! In WAL mode a commit appends pages to the write-ahead log, and a
//! checkpoint copies them into the database file and syncs it. By default
//! SQLite runs a checkpoint inside whichever commit takes the log past
//! 1,000 pages: every few milliseconds under load an append or a
//! projection batch holds the only writer while pages are copied and the
//! file is synced, and everything queued behind it waits. So the writers
//! never checkpoint (`wal_autocheckpoint = 0`, set by the store); a thread
//! of the store's own does, on connections of its own, every [`INTERVAL`].
//! Writers keep appending to the log meanwhile (WAL mode runs one
//! checkpoint beside one writer), and a page rewritten many times in the
//! interval, as a hot account's are, is copied once.
//!
//! A round has several passes, all `PASSIVE` (none waits for a reader):
//! the first ones copy the log while the writer goes on, each what was
//! committed during the one before, until little is left; the last, with
//! the writer's lock held, copies the few pages committed since. The log can
//! only start again from its beginning when it has been copied to its end
//! at a moment no commit follows, which under steady writes only the
//! pass under the lock provides: without it the log grows without bound. The lock
//! is held for those few pages and the file's sync. What a reader still
//! uses is copied on a later round. Durability is the log's (synced at
//! every commit of the event file), so how often this runs bounds only the
//! log's size and how much a reopen replays.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Mutex;

use super::error::store_error;
use crate::StoreError;

/// Time between rounds. At the write rates a 2-core machine reaches (about
/// 300 MB of log a second), the log stays in the tens of megabytes.
const INTERVAL: Duration = Duration::from_millis(100);

/// The checkpointing thread. Dropping this stops it and waits for it, so
/// that once the store is dropped every connection to its files is closed
/// (the one that closes last checkpoints what is left and removes the log:
/// the file alone is then a copy of the store).
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // At most one round: the thread sees the sender gone as soon
            // as it next waits.
            let _ = thread.join();
        }
    }
}

/// A file to checkpoint and the lock its writer takes.
pub(super) struct Checkpointed {
    pub(super) path: PathBuf,
    pub(super) writer: Arc<Mutex<Connection>>,
}

impl Checkpointer {
    /// Starts checkpointing `files`, which must exist and be in WAL mode.
    pub(super) fn start(files: Vec<Checkpointed>) -> Result<Self, StoreError> {
        let files = files
            .into_iter()
            .map(|file| {
                Connection::open_with_flags(
                    &file.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map(|conn| (file, conn))
                .map_err(store_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (stop, stopped) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("tally-sqlite-checkpoint".into())
            .spawn(move || run(files, &stopped))
            .map_err(|err| {
                StoreError::Unavailable(format!("cannot start the sqlite checkpointer: {err}"))
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn run(files: Vec<(Checkpointed, Connection)>, stopped: &mpsc::Receiver<()>) {
    // The sender is never used: dropping it is the signal.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
        for (file, conn) in &files {
            let copied = catch_up(conn).and_then(|()| {
                // A thread of its own, never a runtime's: blocking is fine.
                let _writer = file.writer.blocking_lock();
                checkpoint(conn)
            });
            if let Err(err) = copied {
                tracing::warn!(
                    path = %file.path.display(),
                    error = %err,
                    "sqlite checkpoint failed; the next round tries again"
                );
            }
        }
    }
}

/// Passes without the lock until one finds little left to copy, so that
/// the pass under the lock (which holds the writer for its copy and its
/// sync) is short: each pass copies what was committed during the one
/// before, and copying is faster than a writer commits.
fn catch_up(conn: &Connection) -> rusqlite::Result<()> {
    let mut copied_before = 0;
    for _ in 0..MAX_UNLOCKED_PASSES {
        let (log, copied) = checkpoint(conn)?;
        // A log that started again is shorter than what was copied of it.
        let fresh = if log >= copied_before {
            log - copied_before
        } else {
            log
        };
        if fresh <= FEW_FRAMES {
            break;
        }
        copied_before = copied;
    }
    Ok(())
}

/// Pages left for the pass under the lock: a millisecond or two of copying.
const FEW_FRAMES: i64 = 256;

/// Passes without the lock before one with it, whatever is left.
const MAX_UNLOCKED_PASSES: usize = 6;

/// One passive checkpoint: `(log frames, frames now in the database)`.
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}
