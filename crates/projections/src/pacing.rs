//! Whether appends outrun the projections: the policy behind holding
//! writes back so that sustained writes go at the pace the projections
//! keep (see `tallyd`'s `--max-projection-backlog`).
//!
//! Holding writes back is for one situation only: a runner that had caught
//! up and is now losing ground to the writes. Not for a backlog that was
//! there before (a rebuild, a process that starts behind, a runner back
//! after an outage): it shrinks on its own and holding writes for it would
//! turn a rebuild into an outage. Not for a runner that stopped advancing:
//! that is an incident for the lag alert, and held writes would not help.

use std::time::Duration;

use tokio::time::Instant;

use tally_store::LogPosition;

/// A runner whose checkpoint has not moved for this long is stalled.
const STALLED_AFTER: Duration = Duration::from_secs(5);

/// What the slowest projection owes the log, as measured at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backlog {
    /// Events appended that it has not applied (an upper bound on
    /// PostgreSQL, like `Lag::events`).
    pub(crate) events: u64,
    /// Its checkpoint.
    pub(crate) checkpoint: Option<LogPosition>,
}

/// The backlog measurements seen so far, reduced to what the policy needs.
#[derive(Debug, Default)]
pub(crate) struct BacklogWatch {
    latest: Option<Backlog>,
    /// The backlog has been within bounds since the last reset (or since
    /// the process started): only then can writes be said to outrun.
    armed: bool,
    /// When the checkpoint last moved forward.
    advanced_at: Option<Instant>,
}

impl BacklogWatch {
    pub(crate) fn observe(&mut self, sample: Backlog, at: Instant, max: u64) {
        if let Some(previous) = self.latest {
            if sample.checkpoint < previous.checkpoint {
                // Reset: a rebuild starts from the beginning of the log.
                self.armed = false;
            }
            if sample.checkpoint > previous.checkpoint {
                self.advanced_at = Some(at);
            }
        }
        if sample.events <= max {
            self.armed = true;
        }
        self.latest = Some(sample);
    }

    /// Whether appends outrun the projections by more than `max` events.
    pub(crate) fn outrun(&self, now: Instant, max: u64) -> bool {
        let advancing = self
            .advanced_at
            .is_some_and(|at| now.saturating_duration_since(at) < STALLED_AFTER);
        self.armed && advancing && self.latest.is_some_and(|b| b.events > max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, events: u64) -> Backlog {
        Backlog {
            events,
            checkpoint: Some(LogPosition { tx: seq, seq }),
        }
    }

    const MAX: u64 = 100;

    #[test]
    fn writes_outrun_a_runner_that_had_caught_up_and_falls_behind() {
        let start = Instant::now();
        let mut watch = BacklogWatch::default();
        watch.observe(at(10, 5), start, MAX);
        assert!(!watch.outrun(start, MAX), "within bounds");
        watch.observe(at(20, 150), start + Duration::from_millis(250), MAX);
        assert!(watch.outrun(start + Duration::from_millis(250), MAX));
        // Still behind, the runner between commits: still outrun.
        watch.observe(at(20, 170), start + Duration::from_millis(500), MAX);
        assert!(watch.outrun(start + Duration::from_millis(500), MAX));
        watch.observe(at(200, 40), start + Duration::from_millis(750), MAX);
        assert!(!watch.outrun(start + Duration::from_millis(750), MAX));
    }

    #[test]
    fn a_backlog_from_before_is_left_to_shrink() {
        let start = Instant::now();
        let mut watch = BacklogWatch::default();
        watch.observe(at(10, 5_000), start, MAX);
        watch.observe(at(900, 4_200), start + Duration::from_secs(1), MAX);
        assert!(!watch.outrun(start + Duration::from_secs(1), MAX));
        watch.observe(at(5_000, 50), start + Duration::from_secs(2), MAX);
        watch.observe(at(5_010, 400), start + Duration::from_secs(3), MAX);
        assert!(
            watch.outrun(start + Duration::from_secs(3), MAX),
            "caught up, then behind"
        );
    }

    #[test]
    fn a_rebuild_holds_nothing_back() {
        let start = Instant::now();
        let mut watch = BacklogWatch::default();
        watch.observe(at(1_000, 10), start, MAX);
        // Reset to the start of the log, then folding it again.
        let rebuilt = Backlog {
            events: 1_000,
            checkpoint: None,
        };
        watch.observe(rebuilt, start + Duration::from_secs(1), MAX);
        watch.observe(at(300, 900), start + Duration::from_secs(2), MAX);
        assert!(!watch.outrun(start + Duration::from_secs(2), MAX));
    }

    #[test]
    fn a_stalled_runner_holds_nothing_back() {
        let start = Instant::now();
        let mut watch = BacklogWatch::default();
        watch.observe(at(10, 5), start, MAX);
        watch.observe(at(20, 500), start + Duration::from_secs(1), MAX);
        assert!(watch.outrun(start + Duration::from_secs(1), MAX));
        watch.observe(at(20, 900), start + Duration::from_secs(4), MAX);
        assert!(watch.outrun(start + Duration::from_secs(4), MAX));
        watch.observe(at(20, 2_000), start + Duration::from_secs(7), MAX);
        assert!(
            !watch.outrun(start + Duration::from_secs(7), MAX),
            "no commit for 6 s: stalled"
        );
    }
}
