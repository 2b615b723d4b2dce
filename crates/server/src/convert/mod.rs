//! Conversions between the wire (tally.v1) and the domain. Input is
//! validated here, every violation collected, so a bad request is refused
//! whole and names each bad field.

mod alerts;
mod ledger;
mod validate;
mod wire;

pub use alerts::alert;
pub use ledger::ledger_entry;
pub use validate::Validator;
pub use wire::{
    balance, bucket, bucket_kind, draws, receipt, refund_receipt, reservation, test_clock_id,
    timestamp, version,
};
