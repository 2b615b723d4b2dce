//! Holds on credits. A hold is pessimistic: it counts against the available
//! balance at once, earmarking credits in specific buckets, and resolves at
//! most once (committed, released or expired).

use serde::{Deserialize, Serialize};

use crate::{
    ActionKey, Dimensions, Draw, MemberId, Millicredits, ModelName, ReservationId, Timestamp,
};

/// How long a resolved reservation is remembered, so that a second commit
/// or release gets a precise answer instead of "not found". Expired holds
/// are kept longer: a commit that arrives late must still be recorded.
pub const RESOLVED_RETENTION_MILLIS: i64 = 60 * 60 * 1000;
pub const EXPIRED_RETENTION_MILLIS: i64 = 7 * 24 * 60 * 60 * 1000;

/// An open hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: ReservationId,
    pub member: MemberId,
    pub action: ActionKey,
    pub model: Option<ModelName>,
    pub amount: Millicredits,
    /// The earmarked credits, in deduction order.
    pub draws: Vec<Draw>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// 0 when the caller gave the amount.
    pub rate_card_version: u64,
    /// The estimate the hold was priced from, when the caller gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Dimensions>,
    /// The rate card's capability for the action, when the hold was priced
    /// from a card action that names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
}

/// How a reservation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Committed,
    Released,
    Expired,
}

impl Resolution {
    pub const fn as_str(self) -> &'static str {
        match self {
            Resolution::Committed => "committed",
            Resolution::Released => "released",
            Resolution::Expired => "expired",
        }
    }
}

/// A reservation that has ended, remembered for a while.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedReservation {
    pub reservation: Reservation,
    pub resolution: Resolution,
    pub resolved_at: Timestamp,
}

impl ResolvedReservation {
    pub fn forget_after(&self) -> Timestamp {
        let keep = match self.resolution {
            Resolution::Expired => EXPIRED_RETENTION_MILLIS,
            Resolution::Committed | Resolution::Released => RESOLVED_RETENTION_MILLIS,
        };
        self.resolved_at.plus_millis(keep)
    }
}
