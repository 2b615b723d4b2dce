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
//! Each tails the global log from its own checkpoint, and commits its rows
//! and the new checkpoint in one transaction, so a crash never applies an
//! event twice or skips one ([`runner`]). Each also keeps the account
//! aggregate as it folded it (`projection_account_states`), so it resumes
//! without replaying streams. A projection is a pure function of the log:
//! [`rebuild`] empties and refills one, and [`verify`] refills a scratch
//! copy and diffs it against the live tables.

mod apply;
mod error;
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
            Projection::Balances => 1,
            Projection::Ledger => 1,
            Projection::Usage => 1,
        }
    }
}

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
