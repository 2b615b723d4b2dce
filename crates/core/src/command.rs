//! What callers ask of an account, and what an accepted command yields.
//! Commands arrive validated: ids parsed, amounts in range, TTLs bounded.

use serde::{Deserialize, Serialize};

use crate::{
    ActionKey, AlertThresholds, BillingAnchor, BucketKind, CostBasis, Debit, Dimensions, Draw,
    GrantId, GrantSource, IdempotencyKey, MemberId, Millicredits, ModelName, PackName, PlanName,
    Refund, Reservation, ReservationId, TestClockId, TimeZoneName, Timestamp,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    OpenAccount(OpenAccount),
    /// Upgrades take effect at once, downgrades at the next billing anchor
    /// (see `docs/plans.md`).
    ChangePlan {
        plan: PlanName,
    },
    /// `None` removes the cap.
    SetSpendingCap {
        cap: Option<Millicredits>,
    },
    SetBillingAnchor {
        anchor: BillingAnchor,
    },
    /// `None` goes back to the plan's thresholds (or the defaults).
    SetAlertThresholds {
        thresholds: Option<AlertThresholds>,
    },
    Grant(GrantCommand),
    VoidGrant {
        grant_id: GrantId,
        reason: String,
    },
    /// A signed manual correction by an operator: credits added (a new
    /// promotional bucket, `grant_id`) or removed (from spendable credits
    /// in deduction order, never more than is available).
    Adjust {
        /// Not zero.
        amount: Millicredits,
        /// Minted by the caller of `decide`; used when credits are added.
        grant_id: GrantId,
        reason: String,
        operator: String,
    },
    Reserve {
        /// Minted by the caller of `decide`, so deciding stays pure.
        reservation_id: ReservationId,
        member: MemberId,
        action: ActionKey,
        model: Option<ModelName>,
        /// `None` prices the action from the rate card: from `dimensions`
        /// when given (an estimate), else the action's default hold.
        amount: Option<Millicredits>,
        dimensions: Option<Dimensions>,
        ttl_millis: i64,
    },
    Commit {
        reservation_id: ReservationId,
        /// `None` prices the action from the rate card: from the actual
        /// `dimensions` when given, else at what was held.
        amount: Option<Millicredits>,
        dimensions: Option<Dimensions>,
    },
    Release {
        reservation_id: ReservationId,
    },
    Extend {
        reservation_id: ReservationId,
        ttl_millis: i64,
    },
    /// Gives back credits of an earlier charge, whole (`amount: None`) or
    /// in part, never more than was charged less what was refunded.
    Refund {
        /// The idempotency key the charge (a debit, a commit, a usage
        /// record) was made with.
        charge_key: IdempotencyKey,
        amount: Option<Millicredits>,
        reason: String,
        /// Minted by the caller of `decide`; used when some credits go
        /// back to a bucket that is gone.
        refund_grant_id: GrantId,
    },
    Debit {
        member: MemberId,
        action: ActionKey,
        model: Option<ModelName>,
        amount: Option<Millicredits>,
        dimensions: Option<Dimensions>,
        /// When the action happened, for an action reported after the fact
        /// (`ReportUsage`): its usage counts on that local day. The charge
        /// itself happens now, against the balance and cap as they are now.
        occurred_at: Option<Timestamp>,
    },
}

impl Command {
    /// The command's name in traces and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::OpenAccount(_) => "open_account",
            Command::ChangePlan { .. } => "change_plan",
            Command::SetSpendingCap { .. } => "set_spending_cap",
            Command::SetBillingAnchor { .. } => "set_billing_anchor",
            Command::SetAlertThresholds { .. } => "set_alert_thresholds",
            Command::Grant(_) => "grant",
            Command::VoidGrant { .. } => "void_grant",
            Command::Adjust { .. } => "adjust",
            Command::Reserve { .. } => "reserve",
            Command::Commit { .. } => "commit",
            Command::Release { .. } => "release",
            Command::Extend { .. } => "extend",
            Command::Debit { .. } => "debit",
            Command::Refund { .. } => "refund",
        }
    }

    /// The hold a commit, release or extend names.
    pub fn reservation_id(&self) -> Option<&ReservationId> {
        match self {
            Command::Commit { reservation_id, .. }
            | Command::Release { reservation_id }
            | Command::Extend { reservation_id, .. } => Some(reservation_id),
            Command::OpenAccount(_)
            | Command::ChangePlan { .. }
            | Command::SetSpendingCap { .. }
            | Command::SetBillingAnchor { .. }
            | Command::SetAlertThresholds { .. }
            | Command::Grant(_)
            | Command::VoidGrant { .. }
            | Command::Adjust { .. }
            | Command::Reserve { .. }
            | Command::Debit { .. }
            | Command::Refund { .. } => None,
        }
    }

    /// The charge a refund names.
    pub fn charge_key(&self) -> Option<&IdempotencyKey> {
        match self {
            Command::Refund { charge_key, .. } => Some(charge_key),
            _ => None,
        }
    }

    /// The action a reserve or debit meters.
    pub fn action(&self) -> Option<&ActionKey> {
        match self {
            Command::Reserve { action, .. } | Command::Debit { action, .. } => Some(action),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenAccount {
    pub plan: Option<PlanName>,
    /// UTC when not given.
    pub time_zone: Option<TimeZoneName>,
    /// When not given: the moment the plan's allowances begin.
    pub anchor: Option<BillingAnchor>,
    /// Start with the plan's trial; its allowances begin when it ends.
    pub trial: bool,
    /// When not given: the plan's default cap.
    pub spending_cap: Option<Millicredits>,
    /// Live on this test clock instead of the wall clock. The engine checks
    /// that the clock exists and decides the opening at the clock's time.
    pub test_clock: Option<TestClockId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantCommand {
    /// Minted by the caller of `decide`.
    pub grant_id: GrantId,
    /// A catalogue pack: it sets the kind, amount, expiry and cost basis.
    pub pack: Option<PackName>,
    pub kind: BucketKind,
    pub source: Option<GrantSource>,
    pub priority: Option<i32>,
    pub amount: Millicredits,
    /// `None` means now.
    pub effective_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub cost_basis: Option<CostBasis>,
    pub reference: String,
}

/// What an accepted command achieved, beyond its events: the answer the
/// caller gets (and gets again on a retry with the same idempotency key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    Opened,
    PlanChanged {
        effective_at: Timestamp,
    },
    SpendingCapSet,
    BillingAnchorSet,
    AlertThresholdsSet,
    Granted {
        grant_id: GrantId,
        overage_repaid: Millicredits,
    },
    Voided {
        amount: Millicredits,
    },
    /// Signed, as asked; `draws` says where removed credits came from.
    Adjusted {
        amount: Millicredits,
        grant_id: Option<GrantId>,
        draws: Vec<Draw>,
    },
    Reserved {
        reservation: Reservation,
    },
    Extended {
        reservation: Reservation,
    },
    Released {
        amount: Millicredits,
    },
    Charged {
        debit: Debit,
    },
    Refunded {
        refund: Refund,
    },
}

impl Outcome {
    /// Whether the answer shows the whole balance: the commands that
    /// change the account's terms or funds as a whole do; a charge or a
    /// hold answers with its receipt or reservation and what is available.
    pub fn shows_balance(&self) -> bool {
        match self {
            Outcome::Opened
            | Outcome::Granted { .. }
            | Outcome::Voided { .. }
            | Outcome::Adjusted { .. }
            | Outcome::PlanChanged { .. }
            | Outcome::SpendingCapSet
            | Outcome::BillingAnchorSet
            | Outcome::AlertThresholdsSet => true,
            Outcome::Reserved { .. }
            | Outcome::Extended { .. }
            | Outcome::Released { .. }
            | Outcome::Charged { .. }
            | Outcome::Refunded { .. } => false,
        }
    }
}
