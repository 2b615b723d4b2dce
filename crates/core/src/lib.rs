//! Tally's domain core: accounts, credit buckets, the deduction order,
//! reservations and pricing, as pure functions over values.
//!
//! `decide(&Account, &Command, &Context) -> Result<Decision, Rejection>`
//! says what happens; `Account::apply(&Event)` folds it in. No I/O, no
//! async, no clock of its own: time arrives in [`Context`], so every
//! decision is reproducible and property-testable.

mod account;
mod amount;
mod bucket;
mod command;
mod decide;
mod event;
mod ids;
mod pricing;
mod rejection;
mod reservation;
mod time;

pub use account::{Account, BalanceView, CorruptEvent, Totals};
pub use amount::Millicredits;
pub use bucket::{Bucket, BucketKind, CostBasis, Draw, GrantSource};
pub use command::{Command, GrantCommand, Outcome};
pub use decide::{Context, Decision, advance, decide, execute, settle};
pub use event::{Debit, Event};
pub use ids::{
    AccountId, ActionKey, GrantId, IdError, IdempotencyKey, MemberId, ModelName, ReservationId,
};
pub use pricing::{ActionPrice, RateCard};
pub use rejection::Rejection;
pub use reservation::{
    EXPIRED_RETENTION_MILLIS, RESOLVED_RETENTION_MILLIS, Reservation, Resolution,
    ResolvedReservation,
};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
