//! The gRPC handlers: thin. Each validates its request, calls the engine
//! and converts the answer; errors become statuses in `crate::status`.

mod account;
mod catalog;
mod metering;
mod reads;
mod test_clock;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tally_core::{AccountId, Command, IdempotencyKey};
use tally_engine::{Applied, Engine, Mutation};
use tally_projections::Projections;
use tonic::Status;

use crate::{ServiceError, Store};

pub use account::AccountApi;
pub use catalog::CatalogApi;
pub use metering::MeteringApi;
pub use test_clock::TestClockApi;

/// What runs once the store is open: the engine (writes) and the
/// projections (reads).
pub struct Running<S: Store> {
    pub engine: Engine<S>,
    pub projections: Projections<S>,
}

/// What every handler shares.
pub struct Api<S: Store> {
    running: Arc<OnceLock<Running<S>>>,
    hold_ttl: HoldTtl,
}

impl<S: Store> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api {
            running: self.running.clone(),
            hold_ttl: self.hold_ttl,
        }
    }
}

/// The bounds on how long a hold may live.
#[derive(Clone, Copy, Debug)]
pub struct HoldTtl {
    pub default: Duration,
    pub max: Duration,
}

impl<S: Store> Api<S> {
    pub fn new(running: Arc<OnceLock<Running<S>>>, hold_ttl: HoldTtl) -> Self {
        Api { running, hold_ttl }
    }

    fn running(&self) -> Result<&Running<S>, Status> {
        self.running
            .get()
            .ok_or_else(|| Status::unavailable("the store is not open yet"))
    }

    fn engine(&self) -> Result<&Engine<S>, Status> {
        Ok(&self.running()?.engine)
    }

    fn projections(&self) -> Result<&Projections<S>, Status> {
        Ok(&self.running()?.projections)
    }

    /// Runs a mutation whose idempotency fingerprint is the whole request.
    async fn mutate(
        &self,
        method: &str,
        request: &impl prost::Message,
        account: AccountId,
        idempotency_key: IdempotencyKey,
        command: Command,
    ) -> Result<Applied, Status> {
        let engine = self.engine()?;
        let mutation = Mutation {
            account,
            idempotency_key,
            fingerprint: fingerprint(method, request),
            command,
        };
        engine
            .execute(mutation)
            .await
            .map_err(|e| ServiceError::from(e).into())
    }
}

/// A digest of the method and the whole encoded request. prost encodes
/// fields in field order, so equal requests give equal bytes.
fn fingerprint(method: &str, request: &impl prost::Message) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update([0]);
    hasher.update(request.encode_to_vec());
    hasher.finalize().to_vec()
}

/// Longest free-text note stored with an event (a reference, a reason).
const NOTE_MAX_BYTES: usize = 256;

/// The balance a mutation's answer carries, on the wire.
fn balance_of(applied: &Applied, account: &AccountId) -> Option<tally_api::v1::Balance> {
    applied
        .reply
        .balance
        .as_ref()
        .map(|b| crate::convert::balance(account, b))
}

/// An engine answer of the wrong shape: a bug, never the caller's fault.
fn unexpected(outcome: &tally_core::Outcome) -> Status {
    ServiceError::Internal(format!("unexpected outcome {outcome:?}")).into()
}
