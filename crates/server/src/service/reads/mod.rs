//! The reads of AccountService: answered from the projections, after
//! waiting for them to be as fresh as the caller asked. One file per read
//! RPC; what they share (freshness, deadlines, the account as of now) is
//! here.

mod get_balance;
mod get_usage;
mod list_ledger;
mod watch_account;

use std::time::Duration;

use tally_api::v1 as pb;
use tally_core::{Account, AccountId, Rejection, TestClockId, Timestamp, advance};
use tally_engine::EngineError;
use tally_projections::reads;
use tally_projections::{Freshness, Projection};
use tally_store::LogPosition;
use tokio::time::Instant;
use tonic::{Request, Status};

use super::Api;
use crate::convert::Validator;
use crate::{ServiceError, Store};

pub use watch_account::WatchStream;

/// How long a read waits for freshness when the call names no deadline.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

impl Validator {
    /// The freshness a read asked for (unset: as the projection stands).
    fn consistency(&mut self, field: &str, consistency: Option<&pb::ReadConsistency>) -> Freshness {
        use pb::read_consistency::Requirement;
        match consistency.and_then(|c| c.requirement.as_ref()) {
            None | Some(Requirement::MinimizeLatency(_)) => Freshness::Any,
            Some(Requirement::FullyConsistent(true)) => Freshness::Full,
            Some(Requirement::FullyConsistent(false)) => Freshness::Any,
            Some(Requirement::AtLeastAsFresh(token)) => match token.parse::<LogPosition>() {
                Ok(position) => Freshness::AtLeast(position),
                Err(_) => {
                    self.violation(
                        &format!("{field}.at_least_as_fresh"),
                        "is not a consistency token this service issued",
                    );
                    Freshness::Any
                }
            },
        }
    }
}

/// How long a read may wait to be fresh: the call's own deadline (the
/// `grpc-timeout` header) or a default, less a margin so that the caller
/// hears DEADLINE_EXCEEDED from us, with the reason, rather than its own
/// timer's CANCELLED. A tenth of the timeout, up to a quarter second:
/// enough for the answer to cross a busy machine (30 ms was not, in CI).
fn deadline_of<T>(request: &Request<T>) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(DEFAULT_WAIT);
    let margin = (timeout / 10).min(Duration::from_millis(250));
    Instant::now() + timeout - margin
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3_600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn unknown_account() -> Status {
    ServiceError::from(EngineError::from(Rejection::UnknownAccount)).into()
}

impl<S: Store> Api<S> {
    async fn fresh(
        &self,
        projection: Projection,
        freshness: Freshness,
        deadline: Instant,
    ) -> Result<(), Status> {
        self.projections()?
            .wait_for(projection, freshness, deadline)
            .await
            .map_err(|e| ServiceError::from(e).into())
    }

    /// The test clock the account lives on, as the balances projection
    /// knows it (fixed at opening, so any copy of the account tells).
    async fn test_clock_of(&self, account: &AccountId) -> Result<Option<TestClockId>, Status> {
        let state = self.projected_state(account).await?;
        Ok(state.and_then(|state| state.terms.test_clock.map(|clock| *clock)))
    }

    /// The account as the balances projection holds it; `None` if unknown.
    async fn projected_state(&self, account: &AccountId) -> Result<Option<Account>, Status> {
        let projections = self.projections()?;
        match projections.cached_state(account.as_str()) {
            Some(state) => Ok(Some(state)),
            None => reads::balance_state(projections.store(), account.as_str())
                .await
                .map_err(|e| ServiceError::from(e).into()),
        }
    }

    /// The account as the balances projection holds it, advanced to now:
    /// holds and buckets expired, cycles renewed, up to the moment of the
    /// read, exactly as the next command would see it.
    async fn account_now(&self, account: &AccountId) -> Result<(Account, Timestamp), Status> {
        let Some(mut state) = self.projected_state(account).await? else {
            return Err(unknown_account());
        };
        let now = self
            .engine()?
            .now_on(state.terms.test_clock.as_deref())
            .await
            .map_err(ServiceError::from)?
            .max(state.last_event_at.unwrap_or_default());
        advance(&mut state, now);
        Ok((state, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
