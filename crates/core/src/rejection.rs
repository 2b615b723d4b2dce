//! Why the domain refuses a command. A rejection is a value, not a failure:
//! it writes nothing, and a retry is evaluated afresh.

use thiserror::Error;

use crate::{
    ActionKey, GrantId, IdempotencyKey, Millicredits, PackName, PlanName, ReservationId,
    Resolution, TestClockId,
};

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("account is not open")]
    UnknownAccount,
    #[error("account is already open")]
    AccountExists,
    #[error("insufficient credits: {needed} needed, {available} available")]
    InsufficientCredits {
        available: Millicredits,
        needed: Millicredits,
    },
    #[error("unknown action {action}: the rate card has no price for it")]
    UnknownAction { action: ActionKey },
    /// New reservations and debits stop once usage in the cycle, plus what
    /// is held, would pass the cap. Commits of live holds still succeed.
    #[error(
        "spending cap reached: {used} used and {held} held of a {cap} cap, {needed} more asked"
    )]
    SpendingCapReached {
        cap: Millicredits,
        used: Millicredits,
        held: Millicredits,
        needed: Millicredits,
    },
    #[error("unknown plan {plan}: the plan catalogue has no such plan")]
    UnknownPlan { plan: PlanName },
    #[error("unknown pack {pack}: the plan catalogue has no such pack")]
    UnknownPack { pack: PackName },
    #[error("reservation {id} not found")]
    ReservationNotFound { id: ReservationId },
    #[error("reservation {id} has expired")]
    ReservationExpired { id: ReservationId },
    #[error("reservation {id} is already {}", resolution.as_str())]
    AlreadyResolved {
        id: ReservationId,
        resolution: Resolution,
    },
    #[error("grant {id} not found or has nothing left")]
    GrantNotFound { id: GrantId },
    #[error("grant {id} is already voided")]
    GrantAlreadyVoided { id: GrantId },
    /// A refund names a charge the account has no record of: no debit,
    /// commit or usage record was made with that idempotency key.
    #[error(
        "charge {key} not found: no debit, commit or usage record of this account has that idempotency key"
    )]
    ChargeNotFound { key: IdempotencyKey },
    #[error("refund of {asked} exceeds what charge {key} has left to refund ({refundable})")]
    RefundExceedsCharge {
        key: IdempotencyKey,
        asked: Millicredits,
        refundable: Millicredits,
    },
    /// A field that is well-formed but wrong against the account's state or
    /// the current time (e.g. an expiry in the past).
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// The account's lifetime `total` has passed what Tally can count
    /// exactly ([`crate::Totals::CEILING`]): refused rather than wrapped.
    #[error("the account's lifetime {total} credits have passed what can be counted exactly")]
    TotalsOverflow { total: &'static str },
    /// No test clock has this id.
    #[error("test clock {clock} does not exist")]
    UnknownTestClock { clock: TestClockId },
    /// A test clock with this id exists, created at another time.
    #[error("test clock {clock} exists already")]
    TestClockExists { clock: TestClockId },
    /// The clock holds as many accounts as a clock may.
    #[error("test clock {clock} holds {limit} accounts, the most a test clock may")]
    TestClockFull { clock: TestClockId, limit: usize },
    /// This deployment refuses test clocks (`--test-clocks refuse`).
    #[error("test clocks are refused by this deployment's configuration")]
    TestClocksRefused,
}

impl Rejection {
    /// The reason callers see in the error's `ErrorInfo` and operators in
    /// metrics: stable, part of the API.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::UnknownAccount => "UNKNOWN_ACCOUNT",
            Rejection::AccountExists => "ACCOUNT_EXISTS",
            Rejection::InsufficientCredits { .. } => "INSUFFICIENT_CREDITS",
            Rejection::UnknownAction { .. } => "UNKNOWN_ACTION",
            Rejection::SpendingCapReached { .. } => "SPENDING_CAP_REACHED",
            Rejection::UnknownPlan { .. } => "UNKNOWN_PLAN",
            Rejection::UnknownPack { .. } => "UNKNOWN_PACK",
            Rejection::ReservationNotFound { .. } => "RESERVATION_NOT_FOUND",
            Rejection::ReservationExpired { .. } => "RESERVATION_EXPIRED",
            Rejection::AlreadyResolved { .. } => "ALREADY_RESOLVED",
            Rejection::GrantNotFound { .. } => "GRANT_NOT_FOUND",
            Rejection::GrantAlreadyVoided { .. } => "GRANT_ALREADY_VOIDED",
            Rejection::ChargeNotFound { .. } => "CHARGE_NOT_FOUND",
            Rejection::RefundExceedsCharge { .. } => "REFUND_EXCEEDS_CHARGE",
            Rejection::InvalidField { .. } => "INVALID_ARGUMENT",
            Rejection::TotalsOverflow { .. } => "TOTALS_OVERFLOW",
            Rejection::UnknownTestClock { .. } => "UNKNOWN_TEST_CLOCK",
            Rejection::TestClockExists { .. } => "TEST_CLOCK_EXISTS",
            Rejection::TestClockFull { .. } => "TEST_CLOCK_FULL",
            Rejection::TestClocksRefused => "TEST_CLOCKS_REFUSED",
        }
    }
}
