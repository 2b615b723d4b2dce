//! `WatchAccount`: the account's balance, then every entry as it is
//! appended, with the alerts among them.

use std::pin::Pin;
use std::time::Duration;

use tally_api::v1 as pb;
use tally_core::{Account, AccountId, Event, Timestamp};
use tally_engine::{EngineError, decode_event};
use tally_projections::LedgerEntry;
use tally_projections::reads;
use tally_store::{EventStore, StoreChange};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::unknown_account;
use crate::convert::{self, Validator};
use crate::service::Api;
use crate::{ServiceError, Store};

/// How often a watch looks for writes even when no signal came: the
/// store's change signals wake it at once, this poll is the backstop for
/// a signal lost between replicas.
const WATCH_POLL: Duration = Duration::from_secs(2);
/// Events a watch reads from the stream at a time.
const WATCH_PAGE: usize = 256;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchAccountResponse, Status>> + Send>>;

impl<S: Store> Api<S> {
    pub(in crate::service) async fn watch_account(
        &self,
        request: Request<pb::WatchAccountRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let pb::WatchAccountRequest {
            account_id,
            after_sequence,
        } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        let after = match after_sequence.map(u64::try_from) {
            None => None,
            Some(Ok(after)) => Some(after),
            Some(Err(_)) => {
                v.violation("after_sequence", "must not be negative");
                None
            }
        };
        let Some(account) = account else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let engine = self.engine()?.clone();
        let store = engine.store().clone();
        // Subscribed before the first read, so no append falls in between.
        let appended = store.changes();
        // The balances projection's state saves replaying the stream from
        // its start, unless it is already past where the watch resumes.
        let folded = reads::balance_state(&store, account.as_str())
            .await
            .map_err(ServiceError::from)?
            .filter(|state| after.is_none_or(|after| state.version <= after))
            .unwrap_or_default();
        let start = catch_up(&store, &account, folded, after, |_| Ok(())).await?;
        if !start.is_open() && after != Some(0) {
            return Err(unknown_account());
        }
        if let Some(after) = after.filter(|after| *after > start.version) {
            let mut v = Validator::default();
            v.violation(
                "after_sequence",
                format!(
                    "{after} is past the account's last entry, {}",
                    start.version
                ),
            );
            return Err(v.into_error().into());
        }
        let (tx, rx) = mpsc::channel(64);
        if after.is_none() {
            let at = state_time(&start);
            let _ = tx
                .send(Ok(pb::WatchAccountResponse {
                    sequence: i64::try_from(start.version).unwrap_or(i64::MAX),
                    balance: Some(convert::balance(&account, &start.balance_at(at))),
                    entry: None,
                    alert: None,
                }))
                .await;
        }
        tokio::spawn(follow(store, account, start, appended, tx));
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as WatchStream
        ))
    }
}

fn state_time(state: &Account) -> Timestamp {
    state.last_event_at.unwrap_or_default()
}

/// Reads the stream after `state`, up to `until` (or its end), folding
/// each event into `state` and handing it to `each`.
async fn catch_up<S: EventStore>(
    store: &S,
    account: &AccountId,
    mut state: Account,
    until: Option<u64>,
    mut each: impl FnMut(LedgerStep<'_>) -> Result<(), ()>,
) -> Result<Account, Status> {
    loop {
        let limit = match until {
            Some(until) if until <= state.version => return Ok(state),
            Some(until) => usize::try_from(until - state.version)
                .unwrap_or(WATCH_PAGE)
                .min(WATCH_PAGE),
            None => WATCH_PAGE,
        };
        let page = store
            .read_stream(account.as_str(), state.version + 1, limit)
            .await
            .map_err(|e| Status::from(ServiceError::from(EngineError::from(e))))?;
        for recorded in &page {
            let decoded =
                decode_event(recorded).map_err(|e| Status::from(ServiceError::from(e)))?;
            let at = decoded.event.at();
            let available_before = state.available_before(at);
            state
                .apply(&decoded.event)
                .map_err(|e| Status::from(ServiceError::from(EngineError::from(e))))?;
            let entry = LedgerEntry {
                version: decoded.version,
                available_before,
                available_after: state.available_before(at),
                event: decoded.event,
                idempotency_key: decoded.idempotency_key,
            };
            if each(LedgerStep {
                entry: &entry,
                state: &state,
            })
            .is_err()
            {
                return Ok(state);
            }
        }
        if page.len() < limit {
            return Ok(state);
        }
    }
}

/// One event folded: the entry and the state right after it.
struct LedgerStep<'a> {
    entry: &'a LedgerEntry,
    state: &'a Account,
}

/// Sends every event after `state` as it is appended, until the watcher
/// goes away. Wakes on the store's signal of an append to the account,
/// from this process or another replica.
async fn follow<S: EventStore>(
    store: S,
    account: AccountId,
    mut state: Account,
    mut appended: broadcast::Receiver<StoreChange>,
    tx: mpsc::Sender<Result<pb::WatchAccountResponse, Status>>,
) {
    loop {
        let mut outbox = Vec::new();
        let caught = catch_up(&store, &account, state.clone(), None, |step| {
            outbox.push(pb::WatchAccountResponse {
                sequence: i64::try_from(step.entry.version).unwrap_or(i64::MAX),
                balance: Some(convert::balance(
                    &account,
                    &step.state.balance_at(step.entry.event.at()),
                )),
                entry: Some(convert::ledger_entry(step.entry)),
                alert: watch_alert(step.entry),
            });
            Ok(())
        })
        .await;
        match caught {
            Ok(next) => state = next,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
        for message in outbox {
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
        let wake = async {
            loop {
                match appended.recv().await {
                    Ok(change) if change.touches(account.as_str()) => return,
                    Ok(_) => continue,
                    // Missed some: one of them may be ours.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(WATCH_POLL) => {}
            _ = tx.closed() => return,
        }
    }
}

/// The alert an entry is, for watchers: alerts the log recorded, and each
/// cycle start as a cycle reset.
fn watch_alert(entry: &LedgerEntry) -> Option<pb::Alert> {
    match &entry.event {
        Event::AlertRaised { at, alert } => Some(convert::alert(alert, *at, entry.version)),
        Event::CycleStarted { at, .. } => Some(pb::Alert {
            kind: pb::AlertKind::CycleReset.into(),
            severity: pb::AlertSeverity::Info.into(),
            raised_at: Some(convert::timestamp(*at)),
            sequence: i64::try_from(entry.version).unwrap_or(i64::MAX),
            ..Default::default()
        }),
        _ => None,
    }
}
