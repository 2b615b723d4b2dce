//! Checking the engine's snapshots against the log. A snapshot is a cache
//! the engine trusts when it loads an account (it folds only the events
//! after it), and the service's database role may write it; so
//! `tallyd verify` folds each stream up to its snapshot's version and
//! compares. A snapshot that does not decode, or says another version than
//! it holds, is not trusted anyway: loading ignores it and folds the whole
//! stream.

use tally_core::Account;
use tally_store::EventStore;

use crate::{EngineError, codec};

/// What checking the snapshots found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Snapshots the engine would use, compared with their stream.
    pub checked: u64,
    /// Those that are not the fold of their stream up to their version.
    pub differing: u64,
    /// The first few, named.
    pub examples: Vec<String>,
}

const LISTED: usize = 20;

/// Events folded per read of a stream.
const PAGE: usize = 1_000;

/// Compares the snapshot of each of `streams` (those that have one) with a
/// fold of the stream's events up to the snapshot's version.
pub async fn verify_snapshots<S: EventStore>(
    store: &S,
    streams: &[String],
) -> Result<SnapshotReport, EngineError> {
    let mut report = SnapshotReport::default();
    for stream in streams {
        let Some(snapshot) = store.load_snapshot(stream).await? else {
            continue;
        };
        let Some(saved) = codec::decode_snapshot(&snapshot.payload)
            .filter(|state| state.version == snapshot.version)
        else {
            continue;
        };
        report.checked += 1;
        let mut folded = Account::default();
        while folded.version < snapshot.version {
            let events = store.read_stream(stream, folded.version + 1, PAGE).await?;
            if events.is_empty() {
                break;
            }
            for recorded in events.iter().take_while(|e| e.version <= snapshot.version) {
                folded.apply(&codec::decode_event(recorded)?.event)?;
            }
        }
        // What a snapshot leaves out: the engine looks these up in the store.
        folded.resolved.clear();
        folded.charges.clear();
        if folded != saved {
            report.differing += 1;
            if report.examples.len() < LISTED {
                report.examples.push(format!(
                    "stream {stream:?}: the snapshot at version {} is not the fold of its events",
                    snapshot.version
                ));
            }
        }
    }
    Ok(report)
}
