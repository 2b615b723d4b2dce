//! What can go wrong below the API: a domain refusal (a value, the caller's
//! to handle) or an infrastructure failure (the store's).

use tally_core::{CorruptEvent, Rejection};
use tally_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyKeyReused { key: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log or a stored answer cannot be read back: a bug or damage,
    /// never the caller's fault.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// Other writers kept winning the account's version race.
    #[error("account {account} is too contended: gave up after {attempts} attempts")]
    Contention { account: String, attempts: u32 },
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The account already has `queued` commands waiting: refused at once
    /// rather than queued without end (retry shortly, with the same
    /// idempotency key).
    #[error("account {account} has {queued} commands waiting; try again shortly")]
    AccountOverloaded { account: String, queued: usize },
}

impl From<CorruptEvent> for EngineError {
    fn from(e: CorruptEvent) -> Self {
        EngineError::Corrupt(e.to_string())
    }
}
