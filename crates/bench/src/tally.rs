//! Tally as a system under load: connections, account setup, the scenario
//! operations over gRPC, and settling what a run left open or unknown.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::metering_service_client::MeteringServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::load::{Outcome, Workload};
use crate::scenario::{self, COMMIT_MILLICREDITS, DEBIT_MILLICREDITS, MixedStep, Names, Scenario};

/// Opens `count` HTTP/2 connections to `addr`: one `Endpoint::connect`
/// each, so callers spread over real separate connections.
pub async fn connect(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(channels)
}

pub(crate) fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Opens each account and grants it one promotional bucket big enough for
/// any run, `concurrency` calls at a time.
pub async fn open_accounts(
    channels: &[Channel],
    names: &Names,
    accounts: &[String],
    plan: Option<&str>,
    concurrency: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(accounts.iter().enumerate())
        .map(|(i, account_id)| {
            let mut client = AccountServiceClient::new(channels[i % channels.len()].clone());
            let open_key = names.key("open", 0, i as u64, "");
            let grant_key = names.key("grant", 0, i as u64, "");
            async move {
                client
                    .open_account(pb::OpenAccountRequest {
                        idempotency_key: open_key,
                        account_id: account_id.clone(),
                        plan: plan.unwrap_or_default().to_owned(),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("OpenAccount {account_id}"))?;
                client
                    .grant(pb::GrantRequest {
                        idempotency_key: grant_key,
                        account_id: account_id.clone(),
                        kind: pb::BucketKind::Promotional as i32,
                        source: pb::GrantSource::Promo as i32,
                        amount_millicredits: scenario::GRANT_MILLICREDITS,
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("Grant {account_id}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await
}

/// Debits each account once, `concurrency` calls at a time.
pub async fn debit_each(
    channels: &[Channel],
    names: &Names,
    accounts: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(accounts.iter().enumerate())
        .map(|(i, account_id)| {
            let mut client = MeteringServiceClient::new(channels[i % channels.len()].clone());
            let request =
                scenario::debit_request(account_id.clone(), names.key("touch", 0, i as u64, ""));
            async move {
                client
                    .debit(request)
                    .await
                    .with_context(|| format!("Debit {account_id}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await
}

/// Whether a failed mutation may still have been written: the caller never
/// heard the answer. Every other code is a refusal that wrote nothing.
pub(crate) fn outcome_unknown(code: Code) -> bool {
    match code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated => false,
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => true,
    }
}

/// Adds a report's charged records to the ledger; returns the first
/// refusal, if any.
pub(crate) fn count_report(
    ledger: &mut Ledger,
    accounts: &[usize],
    response: &pb::ReportUsageResponse,
) -> Option<pb::RecordError> {
    let mut refused = None;
    for (account, result) in accounts.iter().zip(&response.results) {
        match &result.outcome {
            Some(pb::usage_record_result::Outcome::Charged(_)) => {
                *ledger.consumed.entry(*account).or_default() += DEBIT_MILLICREDITS;
            }
            Some(pb::usage_record_result::Outcome::Refused(error)) => {
                refused.get_or_insert_with(|| error.clone());
            }
            None => {}
        }
    }
    refused
}

fn failed(kind: &'static str, status: &Status) -> Outcome {
    Outcome::failed(kind, format!("{:?}", status.code()), status.message())
}

/// Tally under one scenario, over a list of accounts.
pub struct TallyWorkload {
    pub scenario: Scenario,
    pub names: Names,
    /// Distinguishes the keys of the history pre-fill from the measured run's.
    pub tag: &'static str,
    pub accounts: Arc<Vec<String>>,
    pub timeout: Duration,
}

/// A hold a caller took and has not resolved.
pub(crate) struct Hold {
    pub(crate) account: usize,
    pub(crate) reservation_id: String,
}

/// What a caller knows was charged, and what it could not tell.
#[derive(Default)]
pub struct Ledger {
    /// Millicredits consumed per account index, from answered calls.
    pub consumed: HashMap<usize, i64>,
    /// Mutations whose answer never came: replayed after the run.
    pub(crate) unresolved: Vec<Unresolved>,
}

pub(crate) enum Unresolved {
    Debit(usize, pb::DebitRequest),
    /// A report call, with the account index of each record.
    Report(Vec<usize>, pb::ReportUsageRequest),
    Reserve(usize, pb::ReserveRequest),
    Commit(usize, pb::CommitRequest),
    Release(pb::ReleaseRequest),
}

pub struct TallyCaller {
    pub(crate) index: usize,
    pub(crate) metering: MeteringServiceClient<Channel>,
    reads: AccountServiceClient<Channel>,
    pub(crate) ledger: Ledger,
    /// Holds taken and not yet resolved, oldest first.
    pub(crate) open: VecDeque<Hold>,
}

impl TallyWorkload {
    pub fn callers(&self, channels: &[Channel], count: usize) -> Vec<TallyCaller> {
        (0..count)
            .map(|index| {
                let channel = channels[index % channels.len()].clone();
                TallyCaller {
                    index,
                    metering: MeteringServiceClient::new(channel.clone()),
                    reads: AccountServiceClient::new(channel),
                    ledger: Ledger::default(),
                    open: VecDeque::new(),
                }
            })
            .collect()
    }

    fn key(&self, caller: &TallyCaller, n: u64, suffix: &str) -> String {
        self.names.key(self.tag, caller.index, n, suffix)
    }

    /// The idempotency key of operation `n` of `caller` when it is a Debit
    /// (the watch measurement finds the Debit's entry by it).
    pub(crate) fn debit_key(&self, caller: &TallyCaller, n: u64) -> String {
        self.key(caller, n, "")
    }

    async fn debit(&self, caller: &mut TallyCaller, n: u64) -> Outcome {
        let account = self.scenario.account(self.accounts.len(), caller.index, n);
        let request =
            scenario::debit_request(self.accounts[account].clone(), self.debit_key(caller, n));
        match caller
            .metering
            .debit(with_timeout(request.clone(), self.timeout))
            .await
        {
            Ok(_) => {
                *caller.ledger.consumed.entry(account).or_default() += DEBIT_MILLICREDITS;
                Outcome::ok("debit")
            }
            Err(status) => {
                if outcome_unknown(status.code()) {
                    caller
                        .ledger
                        .unresolved
                        .push(Unresolved::Debit(account, request));
                }
                failed("debit", &status)
            }
        }
    }

    /// One ReportUsage call; a refused record fails the op (the run grants
    /// enough that none should be).
    async fn report(&self, caller: &mut TallyCaller, n: u64) -> Outcome {
        let (request, accounts) = scenario::report_request(
            &self.names,
            self.tag,
            self.accounts.len(),
            |i| self.accounts[i].clone(),
            caller.index,
            n,
        );
        match caller
            .metering
            .report_usage(with_timeout(request.clone(), self.timeout))
            .await
        {
            Ok(response) => {
                let refused = count_report(&mut caller.ledger, &accounts, &response.into_inner());
                match refused {
                    None => Outcome::ok("report"),
                    Some(error) => Outcome::failed("report", error.reason.clone(), error.message),
                }
            }
            Err(status) => {
                if outcome_unknown(status.code()) {
                    caller
                        .ledger
                        .unresolved
                        .push(Unresolved::Report(accounts, request));
                }
                failed("report", &status)
            }
        }
    }

    /// Reserves on the scenario's account for `n`; on success the hold is
    /// queued on the caller.
    async fn reserve(&self, caller: &mut TallyCaller, n: u64, kind: &'static str) -> Outcome {
        let account = self.scenario.account(self.accounts.len(), caller.index, n);
        let request =
            scenario::reserve_request(self.accounts[account].clone(), self.key(caller, n, "r"));
        match caller
            .metering
            .reserve(with_timeout(request.clone(), self.timeout))
            .await
        {
            Ok(response) => {
                let reservation_id = response
                    .into_inner()
                    .reservation
                    .map(|r| r.reservation_id)
                    .unwrap_or_default();
                caller.open.push_back(Hold {
                    account,
                    reservation_id,
                });
                Outcome::ok(kind)
            }
            Err(status) => {
                if outcome_unknown(status.code()) {
                    caller
                        .ledger
                        .unresolved
                        .push(Unresolved::Reserve(account, request));
                }
                failed(kind, &status)
            }
        }
    }

    /// Commits the caller's oldest hold; a refused commit leaves it open
    /// for the clean-up to release.
    async fn commit(&self, caller: &mut TallyCaller, n: u64, kind: &'static str) -> Outcome {
        let Some(hold) = caller.open.pop_front() else {
            return self.reserve(caller, n, "reserve").await;
        };
        let request = scenario::commit_request(
            self.accounts[hold.account].clone(),
            hold.reservation_id.clone(),
            self.key(caller, n, "c"),
        );
        match caller
            .metering
            .commit(with_timeout(request.clone(), self.timeout))
            .await
        {
            Ok(_) => {
                *caller.ledger.consumed.entry(hold.account).or_default() += COMMIT_MILLICREDITS;
                Outcome::ok(kind)
            }
            Err(status) => {
                if outcome_unknown(status.code()) {
                    caller
                        .ledger
                        .unresolved
                        .push(Unresolved::Commit(hold.account, request));
                } else {
                    caller.open.push_back(hold);
                }
                failed(kind, &status)
            }
        }
    }

    async fn release(&self, caller: &mut TallyCaller, n: u64) -> Outcome {
        let Some(hold) = caller.open.pop_front() else {
            return self.reserve(caller, n, "reserve").await;
        };
        let request = scenario::release_request(
            self.accounts[hold.account].clone(),
            hold.reservation_id.clone(),
            self.key(caller, n, "x"),
        );
        match caller
            .metering
            .release(with_timeout(request.clone(), self.timeout))
            .await
        {
            Ok(_) => Outcome::ok("release"),
            Err(status) => {
                if outcome_unknown(status.code()) {
                    caller.ledger.unresolved.push(Unresolved::Release(request));
                } else {
                    caller.open.push_back(hold);
                }
                failed("release", &status)
            }
        }
    }

    async fn quote(&self, caller: &mut TallyCaller, n: u64) -> Outcome {
        let account = self.scenario.account(self.accounts.len(), caller.index, n);
        let request = scenario::quote_request(self.accounts[account].clone());
        match caller
            .metering
            .quote(with_timeout(request, self.timeout))
            .await
        {
            Ok(_) => Outcome::ok("quote"),
            Err(status) => failed("quote", &status),
        }
    }

    /// A read as a dashboard makes it: from the projection as it stands.
    async fn get_balance(&self, caller: &mut TallyCaller, n: u64) -> Outcome {
        let account = self.scenario.account(self.accounts.len(), caller.index, n);
        let request = pb::GetBalanceRequest {
            account_id: self.accounts[account].clone(),
            consistency: None,
        };
        match caller
            .reads
            .get_balance(with_timeout(request, self.timeout))
            .await
        {
            Ok(_) => Outcome::ok("get-balance"),
            Err(status) => failed("get-balance", &status),
        }
    }
}

impl Workload for TallyWorkload {
    type Caller = TallyCaller;

    async fn call(&self, caller: &mut TallyCaller, n: u64) -> Outcome {
        match self.scenario {
            Scenario::Hot | Scenario::Spread | Scenario::Watch => self.debit(caller, n).await,
            Scenario::Report => self.report(caller, n).await,
            Scenario::Balance => self.get_balance(caller, n).await,
            Scenario::ReserveCommit => {
                // One op is the pair; its latency is both calls'.
                let reserved = self.reserve(caller, n, "reserve-commit").await;
                if reserved.error.is_some() {
                    return reserved;
                }
                self.commit(caller, n, "reserve-commit").await
            }
            Scenario::Mixed => match scenario::mixed_step(n) {
                MixedStep::Reserve => self.reserve(caller, n, "reserve").await,
                MixedStep::Commit => self.commit(caller, n, "commit").await,
                MixedStep::Release => self.release(caller, n).await,
                MixedStep::Quote => self.quote(caller, n).await,
                MixedStep::GetBalance => self.get_balance(caller, n).await,
            },
        }
    }
}
