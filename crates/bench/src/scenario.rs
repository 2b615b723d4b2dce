//! What each scenario sends, independent of the system it is sent to: the
//! accounts it touches, the amounts, the mix, and the request shapes that
//! Tally and the echo baseline share.

use tally_api::v1 as pb;

/// What one Debit charges.
pub const DEBIT_MILLICREDITS: i64 = 1_000;
/// What one Reserve holds.
pub const HOLD_MILLICREDITS: i64 = 2_000;
/// What one Commit charges: less than the hold, so the rest is released,
/// as with most real tasks.
pub const COMMIT_MILLICREDITS: i64 = 1_500;
/// Each account's one grant: the most one Grant may carry (a billion
/// credits), enough for a billion debits, so no run ever runs out.
pub const GRANT_MILLICREDITS: i64 = 1_000_000_000_000;
pub const MEMBER: &str = "bench-member";
/// Priced by the spawned tallyd's rate card; only Quote relies on that.
pub const ACTION: &str = "bench.op";

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Hot,
    Spread,
    ReserveCommit,
    Mixed,
    Report,
    /// GetBalance, consistency unset: the read path.
    Balance,
    /// Debits on one replica, watched on another (see watch.rs).
    Watch,
}

/// Records in one ReportUsage call of the report scenario.
pub const RECORDS_PER_CALL: u32 = 500;

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Hot => "hot",
            Scenario::Spread => "spread",
            Scenario::ReserveCommit => "reserve-commit",
            Scenario::Mixed => "mixed",
            Scenario::Report => "report",
            Scenario::Balance => "balance",
            Scenario::Watch => "watch",
        }
    }

    pub fn default_accounts(self) -> usize {
        match self {
            Scenario::Hot => 1,
            Scenario::Spread => 10_000,
            Scenario::ReserveCommit => 1,
            Scenario::Mixed => 100,
            Scenario::Report => 10_000,
            Scenario::Balance => 10_000,
            Scenario::Watch => 100,
        }
    }

    /// RPCs per operation: a reserve-commit op is the pair. The echo
    /// baseline makes as many calls per op, so ratios compare like with like.
    pub fn calls_per_op(self) -> u32 {
        match self {
            Scenario::ReserveCommit => 2,
            Scenario::Hot
            | Scenario::Spread
            | Scenario::Mixed
            | Scenario::Report
            | Scenario::Balance
            | Scenario::Watch => 1,
        }
    }

    /// Records charged per call: a report call carries many; the naive
    /// baseline charges one per transaction whatever the scenario.
    pub fn records_per_call(self) -> u32 {
        match self {
            Scenario::Report => RECORDS_PER_CALL,
            Scenario::Hot
            | Scenario::Spread
            | Scenario::ReserveCommit
            | Scenario::Mixed
            | Scenario::Balance
            | Scenario::Watch => 1,
        }
    }

    /// The account operation `n` of caller `caller` works on.
    pub fn account(self, accounts: usize, caller: usize, n: u64) -> usize {
        match self {
            Scenario::Hot => 0,
            Scenario::Spread
            | Scenario::ReserveCommit
            | Scenario::Mixed
            | Scenario::Report
            | Scenario::Balance
            | Scenario::Watch => spread(accounts, caller, n),
        }
    }
}

/// A well-mixed account index, so callers do not march over the accounts
/// in lockstep (splitmix64 of caller and sequence).
fn spread(accounts: usize, caller: usize, n: u64) -> usize {
    if accounts <= 1 {
        return 0;
    }
    let mut z = (caller as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(n)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % accounts as u64) as usize
}

/// One call of the mixed scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixedStep {
    Reserve,
    Commit,
    Release,
    Quote,
    GetBalance,
}

impl MixedStep {
    pub fn kind(self) -> &'static str {
        match self {
            MixedStep::Reserve => "reserve",
            MixedStep::Commit => "commit",
            MixedStep::Release => "release",
            MixedStep::Quote => "quote",
            MixedStep::GetBalance => "get-balance",
        }
    }
}

/// The mixed scenario's cycle, per caller: 30% reserve, 20% commit, 10%
/// release, 20% quote, 20% get-balance. Each hold is resolved two steps
/// after it was taken, so a caller has at most one or two open at a time.
pub const MIXED_CYCLE: [MixedStep; 10] = [
    MixedStep::Reserve,
    MixedStep::Quote,
    MixedStep::Commit,
    MixedStep::GetBalance,
    MixedStep::Reserve,
    MixedStep::Quote,
    MixedStep::Release,
    MixedStep::GetBalance,
    MixedStep::Reserve,
    MixedStep::Commit,
];

pub fn mixed_step(n: u64) -> MixedStep {
    MIXED_CYCLE[(n % MIXED_CYCLE.len() as u64) as usize]
}

/// Names and keys of one run. Every key is unique (`<run>-<tag><caller>-<n>`),
/// so no request is ever an idempotent replay of another.
#[derive(Clone, Debug)]
pub struct Names {
    pub run: String,
}

impl Names {
    pub fn fresh() -> Names {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Names {
            run: format!("tb{}-{seconds}", std::process::id()),
        }
    }

    pub fn account(&self, tag: &str, index: usize) -> String {
        format!("{}{index}", self.account_prefix(tag))
    }

    /// What every account id of `tag` starts with, before its index.
    pub fn account_prefix(&self, tag: &str) -> String {
        format!("{}-{tag}", self.run)
    }

    pub fn key(&self, tag: &str, caller: usize, n: u64, suffix: &str) -> String {
        format!("{}-{tag}{caller}-{n}{suffix}", self.run)
    }
}

pub fn debit_request(account_id: String, idempotency_key: String) -> pb::DebitRequest {
    pb::DebitRequest {
        idempotency_key,
        account_id,
        member_id: MEMBER.into(),
        action: ACTION.into(),
        amount_millicredits: Some(DEBIT_MILLICREDITS),
        ..Default::default()
    }
}

/// Operation `n` of `caller` in the report scenario: its records, each with
/// the index of its account (record `i` is the scenario's account for
/// sequence `n * RECORDS_PER_CALL + i`, so records spread like debits).
pub fn report_request(
    names: &Names,
    tag: &str,
    accounts: usize,
    account_id: impl Fn(usize) -> String,
    caller: usize,
    n: u64,
) -> (pb::ReportUsageRequest, Vec<usize>) {
    let per_call = u64::from(RECORDS_PER_CALL);
    let (records, indices) = (0..per_call)
        .map(|i| {
            let account = Scenario::Report.account(accounts, caller, n * per_call + i);
            let debit = debit_request(
                account_id(account),
                names.key(tag, caller, n, &format!("u{i}")),
            );
            let record = pb::UsageRecord {
                idempotency_key: debit.idempotency_key,
                account_id: debit.account_id,
                member_id: debit.member_id,
                action: debit.action,
                amount_millicredits: debit.amount_millicredits,
                ..Default::default()
            };
            (record, account)
        })
        .unzip();
    (pb::ReportUsageRequest { records }, indices)
}

pub fn reserve_request(account_id: String, idempotency_key: String) -> pb::ReserveRequest {
    pb::ReserveRequest {
        idempotency_key,
        account_id,
        member_id: MEMBER.into(),
        action: ACTION.into(),
        amount_millicredits: Some(HOLD_MILLICREDITS),
        ..Default::default()
    }
}

pub fn commit_request(
    account_id: String,
    reservation_id: String,
    idempotency_key: String,
) -> pb::CommitRequest {
    pb::CommitRequest {
        idempotency_key,
        account_id,
        reservation_id,
        amount_millicredits: Some(COMMIT_MILLICREDITS),
        ..Default::default()
    }
}

pub fn release_request(
    account_id: String,
    reservation_id: String,
    idempotency_key: String,
) -> pb::ReleaseRequest {
    pb::ReleaseRequest {
        idempotency_key,
        account_id,
        reservation_id,
    }
}

pub fn quote_request(account_id: String) -> pb::QuoteRequest {
    pb::QuoteRequest {
        account_id,
        items: vec![pb::QuoteItem {
            action: ACTION.into(),
            count: 1,
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_covers_the_accounts() {
        let mut seen = [false; 100];
        for caller in 0..8 {
            for n in 0..200 {
                seen[Scenario::Spread.account(100, caller, n)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(Scenario::Hot.account(100, 3, 7), 0);
    }

    #[test]
    fn the_mixed_cycle_resolves_every_hold() {
        let reserves = MIXED_CYCLE
            .iter()
            .filter(|s| **s == MixedStep::Reserve)
            .count();
        let resolves = MIXED_CYCLE
            .iter()
            .filter(|s| matches!(s, MixedStep::Commit | MixedStep::Release))
            .count();
        assert_eq!(reserves, resolves);
    }
}
