//! Tally's read models, materialised from the global log.
//!
//! Three projections, each in tables of the same store as the log:
//!
//! - **balances** — one row per account (`account_balances`) and one per
//!   bucket (`account_buckets`), as of the account's last event;
//! - **ledger** — one entry per account event (`ledger_entries`) with the
//!   available balance before and after it, behind `ListLedger`;
//! - **usage** — what actions cost per local day and cycle, by action,
//!   capability, member and model (`usage_daily`), behind `GetUsage`.
//!
//! One runner reads the global log once, decodes each event once, and folds
//! it into its account's state once; every projection then writes only the
//! rows the event changed ([`runner`]). Each projection keeps its own
//! checkpoint, committed in the same transaction as its rows, so a crash
//! never applies an event twice or skips one. The folded account states
//! are saved with every batch (`projection_account_states`, under the
//! [`ACCOUNT_FOLD`] checkpoint), so a runner resumes without replaying
//! streams, and `GetBalance` reads them. A projection reset to be rebuilt
//! catches up on a fold of its own while the others go on, then joins. A projection is a pure function of the log:
//! [`rebuild`] empties and refills one, and [`verify`] refills a scratch
//! copy and diffs it against the live tables.

mod apply;
mod error;
mod pacing;
pub mod reads;
pub mod rebuild;
pub mod runner;
mod tables;
pub mod verify;

pub use error::ProjectionError;
pub use reads::{
    LedgerEntry, LedgerPage, LedgerQuery, Runway, UsageGroup, UsageGrouping, UsagePeriod,
    UsageQuery, UsageReport, open_reservations, runway,
};
pub use runner::{Freshness, Lag, Projections, RunnerConfig};

/// A read model and its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Balances,
    Ledger,
    Usage,
}

impl Projection {
    pub const ALL: [Projection; 3] = [Projection::Balances, Projection::Ledger, Projection::Usage];

    /// The name in checkpoints, locks, metrics and `tallyd rebuild --projection`.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Balances => "balances",
            Projection::Ledger => "ledger",
            Projection::Usage => "usage",
        }
    }

    pub fn from_name(name: &str) -> Option<Projection> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Bump when what the projection writes changes: runners of the new
    /// code then rebuild it from the log on their own.
    pub fn schema_version(self) -> u32 {
        match self {
            // 2: rows written from one shared fold; the states they kept
            // under their own names are dropped.
            Projection::Balances => 2,
            // 3: an expiry's entry shows the credits it took away in its
            // "available before" (it showed the balance after).
            Projection::Ledger => 3,
            Projection::Usage => 2,
        }
    }
}

/// The checkpoint of the account states the projections fold together, and
/// the name their saved states go under.
pub const ACCOUNT_FOLD: &str = "accounts";

/// Bump when the saved account state's encoding changes: the fold then
/// starts again from the log (the projections' rows stay).
pub(crate) const ACCOUNT_FOLD_SCHEMA_VERSION: u32 = 1;

/// The lock a process holds while it runs the projections.
pub(crate) const RUNNER_LOCK: &str = "projections";

impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Streams that are not accounts (the `$catalog`) start with `$`, which
/// account ids cannot.
pub(crate) fn is_account_stream(stream_id: &str) -> bool {
    !stream_id.starts_with('$')
}
