//! Group commit across accounts: every actor hands its append to one
//! writer, which puts whatever has queued up, from any number of accounts,
//! into one store transaction (`EventStore::append_batch`).
//!
//! An actor already batches its own account's commands; this batches the
//! accounts. A thousand quiet accounts each appending one debit cost one
//! commit (one fsync), not a thousand. Each stream keeps its own version
//! check, and one stream's conflict fails only that stream's append.
//!
//! The writer takes a permit before it gathers, so while `concurrency`
//! transactions are in flight the queue fills and the next transaction
//! carries more: batches grow with load instead of commits queueing up.
//! It also asks the engine's [`AppendGate`], if one is set, before it
//! gathers: while the gate holds it back the queue fills the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use tally_store::{AppendRequest, AppendResult, EventStore, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{Instrument, Span};

use crate::Shared;

/// Holds appends back while something that follows the log falls behind
/// it (in `tallyd`, the projections under more writes than they can fold).
/// The writer awaits [`admit`](Self::admit) before each transaction; an
/// implementation must return within a bounded time whatever happens
/// downstream, so that a stalled follower slows writes but never stops
/// them.
pub trait AppendGate: Send + Sync + 'static {
    fn admit(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// One actor's append, waiting for its transaction.
pub(crate) struct PendingAppend {
    pub(crate) request: AppendRequest,
    /// The batch span of the actor that asked: the transaction is traced
    /// under the first append it carries.
    pub(crate) span: Span,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// Appends queued beyond what the transactions in flight carry. Actors
/// wait for their append, so at most one per active account is queued.
const QUEUE: usize = 65_536;

/// Starts the writer for `shared`. It holds the engine weakly, and stops
/// once the engine is dropped (every sender gone).
pub(crate) fn start<S: EventStore>(shared: &Arc<Shared<S>>) -> mpsc::Sender<PendingAppend> {
    let (sender, queue) = mpsc::channel(QUEUE);
    tokio::spawn(run(Arc::downgrade(shared), queue));
    sender
}

async fn run<S: EventStore>(shared: Weak<Shared<S>>, mut queue: mpsc::Receiver<PendingAppend>) {
    let (concurrency, max_streams) = match shared.upgrade() {
        Some(shared) => (
            shared.config.commit_concurrency.max(1),
            shared.config.commit_max_streams.max(1),
        ),
        None => return,
    };
    let permits = Arc::new(Semaphore::new(concurrency));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Some(gate) = shared.gate.get() {
            gate.admit().await;
        }
        let mut batch = vec![first];
        while batch.len() < max_streams {
            match queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        tokio::spawn(async move {
            commit(&shared.store, batch).await;
            drop(permit);
        });
    }
}

async fn commit<S: EventStore>(store: &S, batch: Vec<PendingAppend>) {
    let span = batch[0].span.clone();
    let mut requests = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for pending in batch {
        requests.push(pending.request);
        replies.push(pending.reply);
    }
    // The store opens its client span when the call is made, so the call
    // is made inside the batch span (entered only for that, never across
    // an await), and the future runs inside it.
    let append = {
        let _entered = span.enter();
        store.append_batch(requests)
    };
    let started = std::time::Instant::now();
    let results = append.instrument(span).await;
    // How batches form under load, for whoever tunes commit concurrency.
    tracing::debug!(
        streams = replies.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "writer committed"
    );
    for (reply, result) in replies.into_iter().zip(results) {
        // An actor that stopped waiting learns nothing; its callers' keys
        // tell their retries what happened.
        let _ = reply.send(result);
    }
}
