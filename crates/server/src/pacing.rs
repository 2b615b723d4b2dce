//! Appends paced to the projections. A burst of writes runs at full
//! speed and the projections catch up behind it; sustained writes faster
//! than the projections can fold them would leave every read staler by
//! the second (and AccountService NOT_SERVING past
//! `--max-projection-lag-secs`). So while the projections are more than
//! `--max-projection-backlog` events behind and still losing ground, each
//! group-commit transaction waits for the next lag measurement that says
//! otherwise, at most a second: writes then go at the projections' pace.
//! A rebuild (the backlog shrinks) and a stalled runner (its checkpoint
//! does not move) hold nothing back.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tally_engine::AppendGate;
use tally_projections::Projections;
use tally_telemetry::Metrics;

use crate::Store;

/// The longest one transaction waits, whatever the projections do.
const PATIENCE: Duration = Duration::from_secs(1);

/// The projections' runner config says how far behind is too far.
pub(crate) struct PacedToProjections<S> {
    pub(crate) projections: Projections<S>,
    pub(crate) metrics: Metrics,
}

impl<S: Store> AppendGate for PacedToProjections<S> {
    fn admit(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let Some(waited) = self.projections.hold_back_appends(PATIENCE).await else {
                return;
            };
            self.metrics.append_held_back(waited);
            tracing::debug!(
                waited_ms = waited.as_millis() as u64,
                "append held back for the projections"
            );
        })
    }
}
