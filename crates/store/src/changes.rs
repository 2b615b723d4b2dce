//! Change signals: what a store's writers tell its readers, so a watcher,
//! a projection runner or a read waiting to be fresh looks again at once
//! instead of polling.
//!
//! A signal is a hint, never the data: a subscriber always re-reads the
//! store, and a signal it missed (a lagging receiver, a replica that was
//! not listening) costs latency, never correctness. That is why losing one
//! is allowed and why every consumer keeps a slow poll as a backstop.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::LogPosition;

/// How many signals a slow subscriber may fall behind before it gets
/// `Lagged` (and should then treat everything as changed).
const BACKLOG: usize = 4_096;

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChange {
    /// Events were appended to these streams.
    Appended(Arc<[String]>),
    /// Events were appended to streams this signal does not name (too many
    /// to carry), or signals may have been lost: anything may have changed.
    Unknown,
    /// Projection checkpoints moved: each name to its new position (`None`
    /// after a reset). Generations make resets visible to a reader that
    /// remembers positions.
    Projected(Arc<[ProjectedTo]>),
}

/// A projection checkpoint as one commit left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedTo {
    pub name: String,
    pub generation: u64,
    pub position: Option<LogPosition>,
}

impl StoreChange {
    /// Whether `stream` may have new events.
    pub fn touches(&self, stream: &str) -> bool {
        match self {
            StoreChange::Appended(streams) => streams.iter().any(|s| s == stream),
            StoreChange::Unknown => true,
            StoreChange::Projected(_) => false,
        }
    }
}

/// The in-process side: every handle (and clone) of one store publishes
/// here, every subscriber of it hears. Backends that several processes
/// share relay signals between processes on top (PostgreSQL: `NOTIFY`).
#[derive(Clone, Debug)]
pub(crate) struct ChangeHub {
    sender: broadcast::Sender<StoreChange>,
}

impl Default for ChangeHub {
    fn default() -> Self {
        ChangeHub {
            sender: broadcast::channel(BACKLOG).0,
        }
    }
}

impl ChangeHub {
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StoreChange> {
        self.sender.subscribe()
    }

    /// Tells this process's subscribers (there may be none).
    pub(crate) fn publish(&self, change: StoreChange) {
        let _ = self.sender.send(change);
    }
}

/// What a landed projection commit signals.
pub(crate) fn projected(commit: &crate::ProjectionCommit) -> StoreChange {
    StoreChange::Projected(
        commit
            .checkpoints
            .iter()
            .map(|moved| ProjectedTo {
                name: moved.name.clone(),
                generation: moved.expected_generation + 1,
                position: moved.position,
            })
            .collect(),
    )
}

/// What a batch of appends signals: the streams (in request order) whose
/// append landed.
pub(crate) fn appended<T, E>(
    streams: impl IntoIterator<Item = String>,
    results: &[Result<T, E>],
) -> Option<StoreChange> {
    let streams: Arc<[String]> = streams
        .into_iter()
        .zip(results)
        .filter_map(|(stream, result)| result.is_ok().then_some(stream))
        .collect();
    (!streams.is_empty()).then_some(StoreChange::Appended(streams))
}
