//! What happens while Tally cannot be reached: fail closed, or fail open
//! up to a local allowance, recording usage to report later.
//!
//! The local record is in memory, and also in a journal file when
//! [`crate::ClientConfig::offline_journal`] names one: then usage recorded
//! while Tally was unreachable survives the process (a crash, a restart)
//! and is reported by the next client that opens the journal. Without a
//! journal it is lost if the process exits before a [`TallyClient::flush`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use tally_api::v1 as pb;
use tracing::warn;

use crate::journal::Journal;
use crate::{ClientError, TallyClient};

/// What [`TallyClient::metered`] does when Tally cannot be reached (every
/// attempt of its Reserve failed with UNAVAILABLE, DEADLINE_EXCEEDED,
/// RESOURCE_EXHAUSTED or ABORTED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// Refuse the action: [`ClientError::Unavailable`].
    FailClosed,
    /// Let actions through while each account's usage recorded locally
    /// and not yet reported stays within `allowance_millicredits`; beyond
    /// it, refuse with [`ClientError::FailOpenExhausted`]. The usage is
    /// reported to Tally (ReportUsage, under each action's commit key) by
    /// [`TallyClient::flush`], which also runs on its own after the next
    /// Reserve of [`TallyClient::metered`] that Tally answers.
    FailOpen {
        /// The most an account may have unreported at once.
        allowance_millicredits: i64,
    },
}

/// Usage recorded locally, waiting to be reported.
#[derive(Default)]
pub(crate) struct Offline {
    state: Mutex<State>,
    /// Where the pending records are kept on disk, if anywhere.
    journal: Option<Journal>,
    /// One flush at a time, so a record is never in two reports at once
    /// (a second report would be harmless, but would count as refused).
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// In the order recorded.
    pending: Vec<Pending>,
    /// Estimates of actions running on the allowance now, per account.
    running: HashMap<String, i64>,
}

struct Pending {
    record: pb::UsageRecord,
    /// What it counts against the allowance.
    millicredits: i64,
}

impl State {
    fn pending_for(&self, account: &str) -> i64 {
        self.pending
            .iter()
            .filter(|p| p.record.account_id == account)
            .map(|p| p.millicredits)
            .sum::<i64>()
            + self.running.get(account).copied().unwrap_or(0)
    }
}

/// An action running on the allowance. Dropped without
/// [`Admission::complete`] (the task failed or was cancelled), it gives
/// its estimate back.
pub(crate) struct Admission<'a> {
    offline: &'a Offline,
    account: String,
    millicredits: i64,
}

impl Admission<'_> {
    /// The action ran: its usage replaces its estimate.
    pub(crate) fn complete(self, record: pb::UsageRecord, millicredits: i64) {
        self.offline.record(record, millicredits);
        // Drop gives the estimate back.
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut state = self.offline.state.lock().expect("offline lock");
        if let Some(running) = state.running.get_mut(&self.account) {
            *running -= self.millicredits;
            if *running <= 0 {
                state.running.remove(&self.account);
            }
        }
    }
}

impl Offline {
    /// Local usage kept in `journal` too, starting with what it holds.
    pub(crate) fn with_journal(path: &Path) -> std::io::Result<Offline> {
        let (journal, entries) = Journal::open(path)?;
        let pending = entries
            .into_iter()
            .map(|(record, millicredits)| Pending {
                record,
                millicredits,
            })
            .collect();
        Ok(Offline {
            state: Mutex::new(State {
                pending,
                running: HashMap::new(),
            }),
            journal: Some(journal),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    /// Counts `needed` against the account's allowance, or refuses.
    pub(crate) fn admit(
        &self,
        account: &str,
        needed: i64,
        allowance: i64,
    ) -> Result<Admission<'_>, ClientError> {
        let mut state = self.state.lock().expect("offline lock");
        let pending = state.pending_for(account);
        if pending.saturating_add(needed) > allowance {
            return Err(ClientError::FailOpenExhausted {
                account: account.into(),
                pending_millicredits: pending,
                needed_millicredits: needed,
                allowance_millicredits: allowance,
            });
        }
        *state.running.entry(account.into()).or_default() += needed;
        Ok(Admission {
            offline: self,
            account: account.into(),
            millicredits: needed,
        })
    }

    /// Queues a record to report. A zero amount charges nothing and is
    /// not queued (Tally would refuse it).
    pub(crate) fn record(&self, record: pb::UsageRecord, millicredits: i64) {
        if record.amount_millicredits == Some(0) {
            return;
        }
        let mut state = self.state.lock().expect("offline lock");
        // Under the lock, so the journal's order is the queue's.
        if let Some(journal) = &self.journal
            && let Err(e) = journal.append(&record, millicredits)
        {
            warn!(error = %e, key = %record.idempotency_key, "cannot write usage to the offline journal: it is kept in memory only");
        }
        state.pending.push(Pending {
            record,
            millicredits,
        });
    }

    /// Takes the records Tally answered for off the queue (and the journal).
    fn forget(&self, answered: &[pb::UsageRecord]) {
        let mut state = self.state.lock().expect("offline lock");
        state.pending.retain(|p| {
            !answered.iter().any(|record| {
                p.record.idempotency_key == record.idempotency_key
                    && p.record.account_id == record.account_id
            })
        });
        if let Some(journal) = &self.journal
            && let Err(e) =
                journal.rewrite(state.pending.iter().map(|p| (&p.record, p.millicredits)))
        {
            // Reported records left in the journal are reported again by
            // the next client to open it: charged once, by their keys.
            warn!(error = %e, "cannot rewrite the offline journal");
        }
    }

    fn is_empty(&self) -> bool {
        self.state.lock().expect("offline lock").pending.is_empty()
    }
}

/// What a [`TallyClient::flush`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlushReport {
    /// Records Tally charged (or had charged: a record whose earlier
    /// report's answer was lost is answered as it first was).
    pub charged: Vec<pb::DebitResponse>,
    /// Records whose key Tally had already seen for another request: a
    /// commit that landed although its answer was lost. Charged once,
    /// by that commit.
    pub already_committed: usize,
    /// Records Tally refused (e.g. INSUFFICIENT_CREDITS): taken off the
    /// queue and handed back, for the caller to decide.
    pub refused: Vec<RefusedRecord>,
    /// Records still queued (Tally could not be reached).
    pub still_pending: usize,
}

/// A record Tally refused.
#[derive(Clone, Debug, PartialEq)]
pub struct RefusedRecord {
    /// The record.
    pub record: pb::UsageRecord,
    /// Why.
    pub error: pb::RecordError,
}

/// The most records one ReportUsage takes.
const BATCH: usize = 1_000;

impl TallyClient {
    /// Reports the usage recorded while Tally was unreachable
    /// (ReportUsage, each record under its action's commit key, so a
    /// record reported twice is charged once). Records leave the queue
    /// when Tally answers for them; if Tally cannot be reached they stay,
    /// and the error is returned.
    ///
    /// ```no_run
    /// # async fn run(tally: tally_client::TallyClient) -> Result<(), tally_client::ClientError> {
    /// let report = tally.flush().await?;
    /// for refused in &report.refused {
    ///     eprintln!("{} refused: {}", refused.record.idempotency_key, refused.error.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<FlushReport, ClientError> {
        let offline = &self.inner.offline;
        let _one_at_a_time = offline.flushing.lock().await;
        let mut report = FlushReport::default();
        loop {
            let batch: Vec<pb::UsageRecord> = {
                let state = offline.state.lock().expect("offline lock");
                state
                    .pending
                    .iter()
                    .take(BATCH)
                    .map(|p| p.record.clone())
                    .collect()
            };
            if batch.is_empty() {
                return Ok(report);
            }
            let answer = self
                .report_usage(pb::ReportUsageRequest {
                    records: batch.clone(),
                })
                .await
                .inspect_err(|_| {
                    report.still_pending =
                        offline.state.lock().expect("offline lock").pending.len();
                })?;
            if answer.results.len() != batch.len() {
                return Err(ClientError::Malformed("a result per record"));
            }
            for (record, result) in batch.iter().zip(answer.results) {
                match result.outcome {
                    Some(pb::usage_record_result::Outcome::Charged(charged)) => {
                        report.charged.push(charged)
                    }
                    Some(pb::usage_record_result::Outcome::Refused(error))
                        if error.reason == "IDEMPOTENCY_KEY_REUSED" =>
                    {
                        report.already_committed += 1
                    }
                    Some(pb::usage_record_result::Outcome::Refused(error)) => {
                        warn!(key = %record.idempotency_key, reason = %error.reason, "Tally refused usage recorded while it was unreachable");
                        report.refused.push(RefusedRecord {
                            record: record.clone(),
                            error,
                        })
                    }
                    None => return Err(ClientError::Malformed("UsageRecordResult.outcome")),
                }
            }
            offline.forget(&batch);
        }
    }

    /// How many records wait to be reported.
    pub fn pending_usage(&self) -> usize {
        self.inner
            .offline
            .state
            .lock()
            .expect("offline lock")
            .pending
            .len()
    }

    /// Starts a flush on its own when records wait (and no flush runs).
    pub(crate) fn flush_in_background(&self) {
        if self.inner.offline.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.clone();
        runtime.spawn(async move {
            if let Err(e) = client.flush().await {
                warn!(error = %e, "reporting usage recorded while Tally was unreachable failed; it stays queued");
            }
        });
    }
}
