//! How stale the projections run under load, as a reader sees it: every
//! half second during the measured run, a probe debits an account of its
//! own and times how long until a read asking to be at least as fresh as
//! that write answers.

use std::time::Duration;

use serde::Serialize;
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::metering_service_client::MeteringServiceClient;
use tally_api::v1::read_consistency::Requirement;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::load::new_histogram;
use crate::report::Percentiles;
use crate::scenario::{self, DEBIT_MILLICREDITS, Names};

/// Time between probes.
const EVERY: Duration = Duration::from_millis(500);
/// A probe whose read has not answered by then counts as this late.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The probes' figures: write-to-readable latency in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct LagFigures {
    pub probes: u64,
    /// Probes whose write or read failed.
    pub failed: u64,
    pub latency_ms: Percentiles,
}

/// The probe's account: opened and funded with the measured ones.
pub fn probe_account(names: &Names) -> String {
    names.account("probe", 0)
}

/// What the probe charged, for the balance check.
pub struct ProbeCharges {
    pub consumed: i64,
    /// Debits never answered even when retried: the check cannot be exact.
    pub unknown: usize,
}

/// Probes until `stop` turns true.
pub async fn probe(
    channel: Channel,
    names: Names,
    mut stop: watch::Receiver<bool>,
) -> (LagFigures, ProbeCharges) {
    let account = probe_account(&names);
    let mut metering = MeteringServiceClient::new(channel.clone());
    let mut reads = AccountServiceClient::new(channel);
    let mut histogram = new_histogram();
    let (mut failed, mut consumed, mut unknown) = (0, 0, 0);
    let mut ticker = tokio::time::interval(EVERY);
    for n in 0.. {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let debit = scenario::debit_request(account.clone(), names.key("probe", 0, n, ""));
        // Retried with its key until answered, so what it charged is known.
        let mut answer = None;
        for _ in 0..5 {
            match metering.debit(debit.clone()).await {
                Ok(answered) => {
                    answer = Some(answered.into_inner());
                    break;
                }
                Err(status) if crate::tally::outcome_unknown(status.code()) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => break,
            }
        }
        let Some(answer) = answer else {
            failed += 1;
            unknown += 1;
            continue;
        };
        consumed += DEBIT_MILLICREDITS;
        let token = answer.consistency_token;
        let written = std::time::Instant::now();
        let mut request = tonic::Request::new(pb::GetBalanceRequest {
            account_id: account.clone(),
            consistency: Some(pb::ReadConsistency {
                requirement: Some(Requirement::AtLeastAsFresh(token)),
            }),
        });
        request.set_timeout(READ_TIMEOUT);
        match reads.get_balance(request).await {
            Ok(_) => {
                let micros = written.elapsed().as_micros() as u64;
                let _ = histogram.record(micros.max(1));
            }
            Err(_) => failed += 1,
        }
    }
    (
        LagFigures {
            probes: histogram.len(),
            failed,
            latency_ms: Percentiles::of(&histogram),
        },
        ProbeCharges { consumed, unknown },
    )
}
