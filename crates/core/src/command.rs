//! What callers ask of an account, and what an accepted command yields.
//! Commands arrive validated: ids parsed, amounts in range, TTLs bounded.

use serde::{Deserialize, Serialize};

use crate::{
    ActionKey, BucketKind, CostBasis, Debit, GrantId, GrantSource, MemberId, Millicredits,
    ModelName, Reservation, ReservationId, Timestamp,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    OpenAccount,
    Grant(GrantCommand),
    VoidGrant {
        grant_id: GrantId,
        reason: String,
    },
    Reserve {
        /// Minted by the caller of `decide`, so deciding stays pure.
        reservation_id: ReservationId,
        member: MemberId,
        action: ActionKey,
        model: Option<ModelName>,
        /// `None` prices the action from the rate card.
        amount: Option<Millicredits>,
        ttl_millis: i64,
    },
    Commit {
        reservation_id: ReservationId,
        /// `None` prices the reservation's action from the rate card.
        amount: Option<Millicredits>,
    },
    Release {
        reservation_id: ReservationId,
    },
    Extend {
        reservation_id: ReservationId,
        ttl_millis: i64,
    },
    Debit {
        member: MemberId,
        action: ActionKey,
        model: Option<ModelName>,
        amount: Option<Millicredits>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantCommand {
    /// Minted by the caller of `decide`.
    pub grant_id: GrantId,
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
    Granted {
        grant_id: GrantId,
        overage_repaid: Millicredits,
    },
    Voided {
        amount: Millicredits,
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
}
