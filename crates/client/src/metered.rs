//! Reserve, run, commit: the metering pattern as one call.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tally_api::v1 as pb;
use tracing::warn;

use crate::offline::{Admission, Unreachable};
use crate::{ActionKeys, ClientError, TallyClient};

/// What to hold before the task starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Estimate {
    /// This many milli-credits.
    Amount(i64),
    /// What these dimensions cost on the rate card.
    Dimensions(pb::Dimensions),
    /// The rate card's default hold for the action.
    RateCard,
}

/// What the task actually cost, reported by the task.
#[derive(Clone, Debug, PartialEq)]
pub enum Cost {
    /// This many milli-credits (zero or more).
    Amount(i64),
    /// What these dimensions cost on the card the hold was priced on.
    Dimensions(pb::Dimensions),
}

/// The action being metered: its key, an optional model, and the
/// idempotency keys of its steps (fresh ones unless given).
#[derive(Clone, Debug)]
pub struct Action {
    /// The action key, e.g. `article.draft`.
    pub name: String,
    /// The model, when the price depends on one.
    pub model: String,
    /// The keys of the action's Reserve, Commit, Release and Extends.
    pub keys: ActionKeys,
}

impl Action {
    /// The action `name`, with fresh keys.
    pub fn new(name: impl Into<String>) -> Action {
        Action {
            name: name.into(),
            model: String::new(),
            keys: ActionKeys::new(),
        }
    }

    /// With a model.
    pub fn model(mut self, model: impl Into<String>) -> Action {
        self.model = model.into();
        self
    }

    /// With keys derived from a base the caller chose (e.g. its task id):
    /// a caller that crashes and runs the task again finds the same hold
    /// and the same charge.
    pub fn keys(mut self, keys: ActionKeys) -> Action {
        self.keys = keys;
        self
    }
}

impl From<&str> for Action {
    fn from(name: &str) -> Action {
        Action::new(name)
    }
}

impl From<String> for Action {
    fn from(name: String) -> Action {
        Action::new(name)
    }
}

/// The hold a task runs under, handed to the task.
#[derive(Clone, Debug)]
pub struct Hold {
    /// The account.
    pub account_id: String,
    /// Tally's reservation; `None` when the task runs on the local
    /// allowance because Tally is unreachable.
    pub reservation_id: Option<String>,
    /// What is held (or counted against the local allowance).
    pub held_millicredits: i64,
    /// The keys of the action's steps.
    pub keys: ActionKeys,
}

/// How a metered action was settled.
#[derive(Clone, Debug, PartialEq)]
pub enum Settlement {
    /// Tally committed it; its receipt.
    Charged(pb::Receipt),
    /// Tally could not be reached: the usage is recorded locally, under
    /// the commit's idempotency key, and will be reported by
    /// [`TallyClient::flush`].
    Deferred(pb::UsageRecord),
}

impl Settlement {
    /// The receipt, when Tally charged the action.
    pub fn receipt(&self) -> Option<&pb::Receipt> {
        match self {
            Settlement::Charged(receipt) => Some(receipt),
            Settlement::Deferred(_) => None,
        }
    }
}

/// What must still happen to the hold if the metered future is dropped
/// (cancelled) now.
enum OnDrop {
    /// The task had not finished: release the hold.
    Release(pb::ReleaseRequest),
    /// The task finished and its Commit was under way: the work is done,
    /// so the Commit is sent again (same key: charged once); if Tally
    /// cannot be reached, the usage record is queued for
    /// [`TallyClient::flush`].
    Commit(Box<(pb::CommitRequest, pb::UsageRecord)>),
}

/// Settles the hold in a spawned task when dropped while armed.
struct SettleOnDrop {
    client: TallyClient,
    on_drop: Option<OnDrop>,
}

impl SettleOnDrop {
    fn disarm(&mut self) {
        self.on_drop = None;
    }
}

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        let Some(on_drop) = self.on_drop.take() else {
            return;
        };
        // Drop cannot wait: the settlement runs on its own. Outside a
        // tokio runtime it cannot run at all, and the hold expires at its
        // TTL.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(
                "a metered task was dropped outside a tokio runtime; its hold expires at its TTL"
            );
            return;
        };
        let client = self.client.clone();
        runtime.spawn(async move {
            match on_drop {
                OnDrop::Release(request) => {
                    if let Err(e) = client.release(request).await {
                        warn!(error = %e, "releasing the hold of a cancelled task failed; it expires at its TTL");
                    }
                }
                OnDrop::Commit(settle) => match client.commit(settle.0).await {
                    Ok(_) => {}
                    Err(e) if e.is_unavailable() => {
                        let record = settle.1;
                        let amount = record.amount_millicredits.unwrap_or(0);
                        client.inner.offline.record(record, amount);
                    }
                    Err(e) => warn!(error = %e, "the commit of a cancelled task was refused"),
                },
            }
        });
    }
}

impl TallyClient {
    /// Meters one action: holds `estimate` on `account` for `member`,
    /// runs `task`, and commits the cost the task reports.
    ///
    /// - The task's error releases the hold and comes back as
    ///   [`ClientError::Task`].
    /// - Dropping the returned future (a cancelled request, a timeout
    ///   around it) while the task runs releases the hold in a spawned
    ///   task; dropped while the Commit is under way, the Commit is sent
    ///   again in a spawned task (the work is done). Dropped during the
    ///   Reserve, nothing is known of the hold: if the Reserve landed,
    ///   the hold expires at its TTL.
    /// - While the task runs, the hold is extended by
    ///   [`ClientConfig::hold_ttl`](crate::ClientConfig::hold_ttl) each
    ///   time half of it has passed, so a long task never loses its hold.
    /// - A refused Reserve (e.g. `INSUFFICIENT_CREDITS`) is
    ///   [`ClientError::Refused`], and the task does not run.
    /// - When Tally cannot be reached for the Reserve, the
    ///   [`Unreachable`] policy decides: fail closed returns
    ///   [`ClientError::Unavailable`]; fail open runs the task on the
    ///   local allowance and returns [`Settlement::Deferred`].
    /// - When Tally cannot be reached for the Commit, the work is done:
    ///   the usage is recorded locally under the commit's key (whatever
    ///   the policy) and reported by [`TallyClient::flush`]; the hold
    ///   expires. If the commit did land, the report of the same key is
    ///   refused as a different request, so nothing is charged twice.
    ///
    /// ```no_run
    /// use tally_client::{Action, Cost, Estimate, TallyClient, v1::Dimensions};
    ///
    /// # async fn run(tally: TallyClient) -> Result<(), tally_client::ClientError> {
    /// let settled = tally
    ///     .metered(
    ///         "acme",
    ///         "alice",
    ///         Action::new("chat.reply").model("large"),
    ///         Estimate::Dimensions(Dimensions { output_tokens: 2_000, ..Default::default() }),
    ///         |hold| async move {
    ///             println!("running under {:?}", hold.reservation_id);
    ///             // ... call the model ...
    ///             Ok::<_, std::io::Error>(Cost::Dimensions(Dimensions {
    ///                 input_tokens: 350,
    ///                 output_tokens: 1_210,
    ///                 ..Default::default()
    ///             }))
    ///         },
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn metered<F, Fut, E>(
        &self,
        account: &str,
        member: &str,
        action: impl Into<Action>,
        estimate: Estimate,
        task: F,
    ) -> Result<Settlement, ClientError>
    where
        F: FnOnce(Hold) -> Fut,
        Fut: Future<Output = Result<Cost, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let action = action.into();
        let ttl = self.inner.config.hold_ttl;
        let (amount, dimensions) = match &estimate {
            Estimate::Amount(amount) => (Some(*amount), None),
            Estimate::Dimensions(dimensions) => (None, Some(dimensions.clone())),
            Estimate::RateCard => (None, None),
        };
        let reserved = self
            .reserve(pb::ReserveRequest {
                idempotency_key: action.keys.reserve(),
                account_id: account.into(),
                member_id: member.into(),
                action: action.name.clone(),
                model: action.model.clone(),
                amount_millicredits: amount,
                ttl: Some(duration(ttl)),
                dimensions,
            })
            .await;
        let reservation = match reserved {
            Ok(answer) => answer
                .reservation
                .ok_or(ClientError::Malformed("ReserveResponse.reservation"))?,
            Err(e) if e.is_unavailable() => {
                return match self.inner.config.unreachable {
                    Unreachable::FailClosed => Err(e),
                    Unreachable::FailOpen {
                        allowance_millicredits,
                    } => {
                        self.metered_offline(
                            account,
                            member,
                            action,
                            estimate,
                            allowance_millicredits,
                            task,
                        )
                        .await
                    }
                };
            }
            Err(e) => return Err(e),
        };
        // Tally answered: usage recorded while it was not can go now.
        self.flush_in_background();

        let release = pb::ReleaseRequest {
            idempotency_key: action.keys.release(),
            account_id: account.into(),
            reservation_id: reservation.reservation_id.clone(),
        };
        let mut guard = SettleOnDrop {
            client: self.clone(),
            on_drop: Some(OnDrop::Release(release.clone())),
        };
        let hold = Hold {
            account_id: account.into(),
            reservation_id: Some(reservation.reservation_id.clone()),
            held_millicredits: reservation.held_millicredits,
            keys: action.keys.clone(),
        };
        let outcome = {
            let task = task(hold);
            let extender = self.keep_extended(account, &reservation.reservation_id, &action.keys);
            tokio::select! {
                outcome = task => outcome,
                never = extender => match never {},
            }
        };
        let cost = match outcome {
            Ok(cost) => cost,
            Err(e) => {
                // Armed until the release is answered: dropped before,
                // the guard sends it again (same key).
                if let Err(why) = self.release(release).await {
                    warn!(error = %why, "releasing the hold of a failed task failed; it expires at its TTL");
                }
                guard.disarm();
                return Err(ClientError::Task(e.into()));
            }
        };
        let (amount, dimensions) = match cost {
            Cost::Amount(amount) => (Some(amount), None),
            Cost::Dimensions(dimensions) => (None, Some(dimensions)),
        };
        let commit = pb::CommitRequest {
            idempotency_key: action.keys.commit(),
            account_id: account.into(),
            reservation_id: reservation.reservation_id.clone(),
            amount_millicredits: amount,
            dimensions: dimensions.clone(),
        };
        let record = usage_record(account, member, &action, amount, dimensions);
        guard.on_drop = Some(OnDrop::Commit(Box::new((commit.clone(), record.clone()))));
        let committed = self.commit(commit).await;
        match committed {
            Ok(answer) => {
                guard.disarm();
                answer
                    .receipt
                    .map(Settlement::Charged)
                    .ok_or(ClientError::Malformed("CommitResponse.receipt"))
            }
            Err(e) if e.is_unavailable() => {
                // The work is done and must be charged; the hold expires.
                guard.disarm();
                self.inner
                    .offline
                    .record(record.clone(), amount.unwrap_or(0));
                Ok(Settlement::Deferred(record))
            }
            // Refused (e.g. the hold is long gone): nothing to redo.
            Err(e) => {
                guard.disarm();
                Err(e)
            }
        }
    }

    /// Extends the hold each time half its TTL has passed; never returns.
    async fn keep_extended(
        &self,
        account: &str,
        reservation_id: &str,
        keys: &ActionKeys,
    ) -> std::convert::Infallible {
        let ttl = self.inner.config.hold_ttl;
        let mut extensions = 0;
        loop {
            tokio::time::sleep(ttl / 2).await;
            extensions += 1;
            let extended = self
                .extend(pb::ExtendRequest {
                    idempotency_key: keys.extend(extensions),
                    account_id: account.into(),
                    reservation_id: reservation_id.into(),
                    ttl: Some(duration(ttl)),
                })
                .await;
            if let Err(e) = extended {
                // The commit is still recorded if the hold lapses (late).
                warn!(error = %e, reservation_id, "extending a hold failed");
            }
        }
    }

    /// Fail open: runs the task on the account's local allowance.
    async fn metered_offline<F, Fut, E>(
        &self,
        account: &str,
        member: &str,
        action: Action,
        estimate: Estimate,
        allowance: i64,
        task: F,
    ) -> Result<Settlement, ClientError>
    where
        F: FnOnce(Hold) -> Fut,
        Fut: Future<Output = Result<Cost, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let needed = match &estimate {
            Estimate::Amount(amount) => *amount,
            Estimate::Dimensions(dimensions) => self
                .inner
                .quotes
                .cached_price(&action.name, &action.model, Some(dimensions))
                .ok_or_else(|| ClientError::Unpriced {
                    action: action.name.clone(),
                })?,
            Estimate::RateCard => self
                .inner
                .quotes
                .cached_price(&action.name, &action.model, None)
                .ok_or_else(|| ClientError::Unpriced {
                    action: action.name.clone(),
                })?,
        };
        // Released (as a drop guard) if the task fails or is cancelled.
        let admission: Admission<'_> = self.inner.offline.admit(account, needed, allowance)?;
        let hold = Hold {
            account_id: account.into(),
            reservation_id: None,
            held_millicredits: needed,
            keys: action.keys.clone(),
        };
        let cost = task(hold).await.map_err(|e| ClientError::Task(e.into()))?;
        let (amount, dimensions) = match cost {
            Cost::Amount(amount) => (Some(amount), None),
            Cost::Dimensions(dimensions) => (None, Some(dimensions)),
        };
        let record = usage_record(account, member, &action, amount, dimensions);
        // Dimensions are priced by Tally when reported; until then they
        // count as the estimate.
        admission.complete(record.clone(), amount.unwrap_or(needed));
        Ok(Settlement::Deferred(record))
    }
}

/// The usage record reported for an action settled while Tally was
/// unreachable: under the commit's key, stamped with the time it ran.
fn usage_record(
    account: &str,
    member: &str,
    action: &Action,
    amount: Option<i64>,
    dimensions: Option<pb::Dimensions>,
) -> pb::UsageRecord {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    pb::UsageRecord {
        idempotency_key: action.keys.commit(),
        account_id: account.into(),
        member_id: member.into(),
        action: action.name.clone(),
        model: action.model.clone(),
        amount_millicredits: amount,
        dimensions,
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
    }
}

pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
