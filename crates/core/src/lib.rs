//! Tally's domain core: accounts, credit buckets, the deduction order,
//! reservations and pricing, as pure functions over values.
//!
//! `decide(&Account, &Command, &Context) -> Result<Decision, Rejection>`
//! says what happens; `Account::apply(&Event)` folds it in. No I/O, no
//! async, no clock of its own: time arrives in [`Context`], so every
//! decision is reproducible and property-testable.

mod account;
mod alert;
mod amount;
mod bucket;
pub mod calendar;
mod charge;
mod command;
mod decide;
mod event;
mod ids;
mod plan;
mod pricing;
mod rate_cards;
mod rejection;
mod reservation;
mod terms;
#[cfg(feature = "testing")]
pub mod testing;
mod time;

pub use account::{Account, BalanceView, CorruptEvent, LastDebit, Totals};
pub use alert::{Alert, AlertKey, Severity};
pub use amount::Millicredits;
pub use bucket::{Bucket, BucketKind, CostBasis, Draw, GrantSource};
pub use calendar::{BillingAnchor, CalendarError, TimeZoneName};
pub use charge::{Charge, RefundSource};
pub use command::{Command, GrantCommand, OpenAccount, Outcome};
pub use decide::{Context, Decision, advance, decide, execute, next_due, settle};
pub use event::{Debit, Event, EventKind, Refund};
pub use ids::{
    AccountId, ActionKey, GrantId, IdError, IdempotencyKey, MemberId, ModelName, PackName,
    PlanName, ReservationId, TestClockId, UnitName,
};
pub use plan::{
    AlertThresholds, AutoTopUp, InvalidThresholds, MAX_ALERT_LEVELS, Pack, Plan, PlanCatalogue,
    PlanTerms, Rollover, Trial,
};
pub use pricing::{
    ActionPrice, BUILT_IN_DIMENSIONS, BasePrice, Dimensions, MAX_UNITS_PER_CALL, ModelPrice,
    Multiplier, RateCard, RateOverrides, Rates, Rounding,
};
pub use rate_cards::RateCards;
pub use rejection::Rejection;
pub use reservation::{
    EXPIRED_RETENTION_MILLIS, RESOLVED_RETENTION_MILLIS, Reservation, Resolution,
    ResolvedReservation,
};
pub use terms::{AccountTerms, Period};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
