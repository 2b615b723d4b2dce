//! What the projections' integration tests share.

use std::time::Duration;

use tally_projections::{Freshness, Projection, Projections};
use tally_store::{EventStore, ProjectionStore};
use tokio::time::Instant;

/// Waits until every projection has applied the whole log; panics after a
/// minute.
pub async fn caught_up<S: EventStore + ProjectionStore + Clone>(projections: &Projections<S>) {
    for projection in Projection::ALL {
        projections
            .wait_for(
                projection,
                Freshness::Full,
                Instant::now() + Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("{projection} did not catch up: {e}"));
    }
}
