//! The balance check after a Tally run: every account's lifetime consumption
//! must equal exactly what the answered calls charged, and nothing may stay
//! held. A benchmark of a ledger that loses or doubles a debit is worthless,
//! however fast.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::read_consistency::Requirement;
use tonic::Request;
use tonic::transport::Channel;

use crate::settle::Settled;

/// How long a fully consistent read may wait for the projection to catch up
/// with a run's last writes.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Mismatches listed in full; the rest are counted.
const SHOWN: usize = 10;

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub accounts: usize,
    /// Events in the checked accounts' streams (the sum of their versions).
    pub events: i64,
    pub expected_consumed_millicredits: i64,
    pub consumed_millicredits: i64,
    pub mismatches: usize,
    /// Accounts whose balance could not be read even after retries.
    pub unreadable: usize,
    pub examples: Vec<String>,
    /// Mutations whose outcome stayed unknown: no exact check possible.
    pub still_unknown: usize,
    /// Holds the clean-up could not release.
    pub left_open: usize,
    pub exact: bool,
}

impl CheckReport {
    fn mismatch(&mut self, what: String) {
        self.mismatches += 1;
        if self.examples.len() < SHOWN {
            self.examples.push(what);
        }
    }

    pub fn summary(&self) -> String {
        if self.exact {
            format!(
                "PASS: {} accounts, {} events, consumed {} mc as charged, nothing held",
                self.accounts, self.events, self.consumed_millicredits
            )
        } else {
            let mut text = format!(
                "FAIL: {} of {} accounts differ or could not be read ({} unreadable; expected {} mc consumed, found {}); {} outcomes unknown, {} holds left open",
                self.mismatches,
                self.accounts,
                self.unreadable,
                self.expected_consumed_millicredits,
                self.consumed_millicredits,
                self.still_unknown,
                self.left_open
            );
            for example in &self.examples {
                text.push_str("\n    ");
                text.push_str(example);
            }
            text
        }
    }
}

/// Attempts at reading one balance: a server busy catching up (its
/// projections lag after a large pre-fill) answers UNAVAILABLE or
/// DEADLINE_EXCEEDED for a while, which says nothing about the balance.
const READ_ATTEMPTS: u32 = 10;
const READ_PAUSE: Duration = Duration::from_secs(1);

async fn read_balance(
    client: &mut AccountServiceClient<Channel>,
    account_id: &str,
) -> Result<pb::GetBalanceResponse, tonic::Status> {
    let mut attempt = 1;
    loop {
        let mut request = Request::new(pb::GetBalanceRequest {
            account_id: account_id.to_owned(),
            consistency: Some(pb::ReadConsistency {
                requirement: Some(Requirement::FullyConsistent(true)),
            }),
        });
        request.set_timeout(READ_TIMEOUT);
        match client.get_balance(request).await {
            Err(status)
                if attempt < READ_ATTEMPTS
                    && matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    ) =>
            {
                attempt += 1;
                tokio::time::sleep(READ_PAUSE).await;
            }
            answer => return answer.map(tonic::Response::into_inner),
        }
    }
}

/// Waits until a fully consistent read of `account_id` succeeds: the
/// projections have applied everything written before the call. After a
/// large pre-fill they lag; measuring while they catch up would measure
/// the catching up. Gives up after `limit`.
pub async fn wait_for_projections(
    channel: &Channel,
    account_id: &str,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    let mut client = AccountServiceClient::new(channel.clone());
    loop {
        match read_balance(&mut client, account_id).await {
            Ok(_) => return Ok(started.elapsed()),
            // read_balance already paused between its attempts.
            Err(_) if started.elapsed() < limit => {}
            Err(status) => anyhow::bail!(
                "the projections did not catch up within {limit:?}: {:?} {}",
                status.code(),
                status.message()
            ),
        }
    }
}

/// Reads every account fully consistently and compares it with `settled`.
/// `accounts` lists every account the run opened, charged or not.
pub async fn check_tally(
    channels: &[Channel],
    accounts: &[String],
    settled: &Settled,
    concurrency: usize,
) -> CheckReport {
    let mut report = CheckReport {
        accounts: accounts.len(),
        still_unknown: settled.still_unknown,
        left_open: settled.left_open,
        ..Default::default()
    };
    let mut reads = futures::stream::iter(accounts.iter().enumerate())
        .map(|(i, account_id)| {
            let mut client = AccountServiceClient::new(channels[i % channels.len()].clone());
            async move { (account_id, read_balance(&mut client, account_id).await) }
        })
        .buffer_unordered(concurrency.max(1));
    let expected_of = |account: &str| settled.consumed.get(account).copied().unwrap_or(0);
    while let Some((account, answer)) = reads.next().await {
        let expected = expected_of(account);
        report.expected_consumed_millicredits += expected;
        let balance = match answer {
            Ok(pb::GetBalanceResponse {
                balance: Some(balance),
            }) => balance,
            Ok(_) => {
                report.mismatch(format!("{account}: GetBalance answered no balance"));
                continue;
            }
            Err(status) => {
                report.unreadable += 1;
                report.mismatch(format!(
                    "{account}: GetBalance failed: {:?} {}",
                    status.code(),
                    status.message()
                ));
                continue;
            }
        };
        report.consumed_millicredits += balance.consumed_millicredits;
        report.events += balance.version;
        if balance.consumed_millicredits != expected {
            report.mismatch(format!(
                "{account}: consumed {} mc, the answered calls charged {expected} mc",
                balance.consumed_millicredits
            ));
        } else if balance.held_millicredits != 0 || balance.open_reservations != 0 {
            report.mismatch(format!(
                "{account}: {} mc still held in {} reservations after every hold was resolved",
                balance.held_millicredits, balance.open_reservations
            ));
        } else if balance.overage_millicredits != 0 {
            report.mismatch(format!(
                "{account}: {} mc overage although the grant covers every charge",
                balance.overage_millicredits
            ));
        }
    }
    // Charges recorded against accounts the run did not list would be a
    // bench bug; count them so they cannot hide.
    let listed: HashSet<&str> = accounts.iter().map(String::as_str).collect();
    for (account, amount) in &settled.consumed {
        if *amount != 0 && !listed.contains(account.as_str()) {
            report.mismatch(format!("{account}: charged but never checked"));
        }
    }
    report.exact = report.mismatches == 0 && report.still_unknown == 0 && report.left_open == 0;
    report
}
