//! Change signals: every landed append and projection commit made through
//! a handle is signalled to that handle's subscribers.

use std::time::Duration;

use tokio::sync::broadcast;

use super::{Harness, events, request};
use crate::{
    CommitOutcome, EventStore, LogPosition, ProjectedTo, ProjectionCommit, ProjectionStore,
    StoreChange,
};

/// Far longer than any signal should take; only a missing one waits it out.
const PATIENCE: Duration = Duration::from_secs(30);

/// Waits for a signal that `wanted` accepts, passing over others (a
/// backend may signal `Unknown`, or spuriously, at any time).
pub async fn next_signal(
    changes: &mut broadcast::Receiver<StoreChange>,
    what: &str,
    wanted: impl Fn(&StoreChange) -> bool,
) -> StoreChange {
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            match changes.recv().await {
                Ok(change) if wanted(&change) => return change,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the signals ended"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no signal of {what} within {PATIENCE:?}"))
}

fn names(change: &StoreChange, stream: &str) -> bool {
    matches!(change, StoreChange::Appended(streams) if streams.iter().any(|s| s == stream))
}

pub async fn changes_signal_appends_and_projection_commits<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let mut changes = store.changes();

    store
        .append(request("single", 0, events("single", 2)))
        .await
        .expect("append");
    next_signal(&mut changes, "the append to `single`", |c| {
        names(c, "single")
    })
    .await;

    // One request of the batch loses on its version: the other is signalled.
    let results = store
        .append_batch(vec![
            request("single", 0, events("late", 1)),
            request("batched", 0, events("batched", 1)),
        ])
        .await;
    assert!(results[0].is_err() && results[1].is_ok(), "{results:?}");
    next_signal(&mut changes, "the batched append", |c| names(c, "batched")).await;

    let later = store.changes();
    let position = Some(LogPosition::new(0, 3));
    let outcome = store
        .commit_projection(ProjectionCommit::single(
            "signalled",
            0,
            position,
            1,
            0,
            Vec::new(),
        ))
        .await
        .expect("commit");
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
    let expected = ProjectedTo {
        name: "signalled".into(),
        generation: 1,
        position,
    };
    for mut receiver in [changes, later] {
        next_signal(
            &mut receiver,
            "the projection commit",
            |c| matches!(c, StoreChange::Projected(moved) if moved.contains(&expected)),
        )
        .await;
    }
}
