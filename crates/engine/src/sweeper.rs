//! The background sweep: writes what time has made due (cycle and day
//! starts, allowance and bucket expiries, hold expiries) for accounts that
//! nobody is using, so those events exist at their boundaries without
//! waiting for the next command.
//!
//! Every append records when its account next needs waking (the store's
//! wakeup index). Each replica's sweep reads the due wakeups and hands each
//! account to its actor, which advances it exactly as a command would: the
//! events are the same whoever writes them, and the stream version lets
//! only one writer append them.

use std::time::Duration;

use tally_core::AccountId;
use tally_store::EventStore;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::{Engine, EngineError, WhenFull, actor};

/// What one sweep round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Accounts whose wakeup was due.
    pub accounts: usize,
    /// Events written for them (another replica may have written the rest).
    pub events: usize,
    /// Accounts the sweep could not advance this round; they stay due.
    pub failed: usize,
}

impl<S: EventStore> Engine<S> {
    /// One round: every account due now (up to the configured batch) is
    /// advanced and its time-due events appended.
    pub async fn sweep_once(&self) -> Result<SweepReport, EngineError> {
        let now = self.now();
        let due = self
            .store()
            .due_wakeups(now.as_millis(), self.shared.config.sweep_batch)
            .await?;
        let mut report = SweepReport {
            accounts: due.len(),
            ..SweepReport::default()
        };
        let mut answers = Vec::with_capacity(due.len());
        for wakeup in due {
            // Only account streams have wakeups; anything else is skipped.
            let Ok(account) = AccountId::parse(&wakeup.stream_id) else {
                continue;
            };
            let (reply, answer) = oneshot::channel();
            self.send(&account, actor::Job::Sweep(reply), WhenFull::Wait)
                .await?;
            answers.push((account, answer));
        }
        for (account, answer) in answers {
            match answer.await {
                Ok(Ok(events)) => report.events += events,
                Ok(Err(e)) => {
                    report.failed += 1;
                    warn!(%account, error = %e, "sweep could not advance the account");
                }
                Err(_) => return Err(EngineError::ShuttingDown),
            }
        }
        Ok(report)
    }

    /// Starts the periodic sweep and catalog refresh. They stop at
    /// [`Engine::shutdown`].
    pub fn start_background(&self) {
        let engine = self.clone();
        let every = self.shared.config.sweep_every;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = engine.refresh_catalog().await {
                    warn!(error = %e, "catalog refresh failed");
                }
                engine.sweep_until_idle().await;
            }
        });
        self.shared
            .background
            .lock()
            .expect("background lock")
            .push(task);
    }

    /// Sweeps rounds while they come back full, so a backlog (after an
    /// outage, or at a busy midnight) clears without waiting for ticks.
    async fn sweep_until_idle(&self) {
        let batch = self.shared.config.sweep_batch;
        loop {
            match self.sweep_once().await {
                Ok(report) => {
                    if report.events > 0 {
                        debug!(?report, "swept");
                    }
                    if report.accounts < batch || report.failed > 0 {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "sweep failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return;
                }
            }
        }
    }
}
