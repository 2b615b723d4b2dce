//! After a Tally run: replay every mutation whose answer never came and
//! release every hold still open, so that what the run charged is known
//! exactly before the balances are checked.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tonic::{Request, Status};

use crate::scenario::{self, COMMIT_MILLICREDITS, DEBIT_MILLICREDITS};
use crate::tally::{
    Hold, TallyCaller, TallyWorkload, Unresolved, count_report, outcome_unknown, with_timeout,
};

/// What a run charged, per account id, once every unknown outcome was
/// replayed and every open hold released.
#[derive(Debug, Default)]
pub struct Settled {
    pub consumed: HashMap<String, i64>,
    /// Mutations whose outcome stayed unknown even after replays: the
    /// balance check cannot be exact while any remain.
    pub still_unknown: usize,
    /// Holds the clean-up could not release.
    pub left_open: usize,
}

impl Settled {
    pub fn absorb(&mut self, other: Settled) {
        for (account, amount) in other.consumed {
            *self.consumed.entry(account).or_default() += amount;
        }
        self.still_unknown += other.still_unknown;
        self.left_open += other.left_open;
    }
}

/// Replays: same request, same key. Tally answers a replay with the first
/// result, or applies the request now if it never was: either way it has
/// then happened exactly once.
const REPLAY_ATTEMPTS: u32 = 5;
const REPLAY_PAUSE: Duration = Duration::from_millis(200);

enum Replayed<T> {
    Applied(T),
    Refused,
    Unknown,
}

/// Sends `request` until it is answered (or refused), a few times at most.
async fn replay<Req, T, F, Fut>(mut send: F, request: Req, timeout: Duration) -> Replayed<T>
where
    Req: Clone,
    F: FnMut(Request<Req>) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    for attempt in 1..=REPLAY_ATTEMPTS {
        match send(with_timeout(request.clone(), timeout)).await {
            Ok(answer) => return Replayed::Applied(answer),
            Err(status) if outcome_unknown(status.code()) => {
                if attempt < REPLAY_ATTEMPTS {
                    tokio::time::sleep(REPLAY_PAUSE).await;
                }
            }
            Err(_) => return Replayed::Refused,
        }
    }
    Replayed::Unknown
}

/// Settles every caller: replays what is unknown, releases open holds.
pub async fn settle(workload: &TallyWorkload, callers: Vec<TallyCaller>) -> Settled {
    let settled = futures::future::join_all(
        callers
            .into_iter()
            .map(|caller| settle_caller(workload, caller)),
    )
    .await;
    let mut total = Settled::default();
    for one in settled {
        total.absorb(one);
    }
    total
}

async fn settle_caller(workload: &TallyWorkload, mut caller: TallyCaller) -> Settled {
    let client = caller.metering.clone();
    let timeout = workload.timeout;
    let mut still_unknown = 0;
    for item in std::mem::take(&mut caller.ledger.unresolved) {
        let (account, charged, replayed) = match item {
            Unresolved::Debit(account, request) => {
                let replayed = replay(
                    |r| {
                        let mut client = client.clone();
                        async move { client.debit(r).await.map(drop) }
                    },
                    request,
                    timeout,
                )
                .await;
                (account, DEBIT_MILLICREDITS, replayed)
            }
            Unresolved::Report(accounts, request) => {
                let replayed = replay(
                    |r| {
                        let mut client = client.clone();
                        async move { client.report_usage(r).await.map(|r| r.into_inner()) }
                    },
                    request,
                    timeout,
                )
                .await;
                match replayed {
                    // Each record answers as it first did, or is charged now.
                    Replayed::Applied(response) => {
                        count_report(&mut caller.ledger, &accounts, &response);
                    }
                    Replayed::Refused => {}
                    Replayed::Unknown => still_unknown += 1,
                }
                continue;
            }
            Unresolved::Commit(account, request) => {
                let replayed = replay(
                    |r| {
                        let mut client = client.clone();
                        async move { client.commit(r).await.map(drop) }
                    },
                    request,
                    timeout,
                )
                .await;
                (account, COMMIT_MILLICREDITS, replayed)
            }
            Unresolved::Reserve(account, request) => {
                // A hold that was taken after all is released below.
                let replayed = replay(
                    |r| {
                        let mut client = client.clone();
                        async move { client.reserve(r).await.map(|r| r.into_inner()) }
                    },
                    request,
                    timeout,
                )
                .await;
                match replayed {
                    Replayed::Applied(response) => caller.open.push_back(Hold {
                        account,
                        reservation_id: response
                            .reservation
                            .map(|r| r.reservation_id)
                            .unwrap_or_default(),
                    }),
                    Replayed::Refused => {}
                    Replayed::Unknown => still_unknown += 1,
                }
                continue;
            }
            Unresolved::Release(request) => {
                let replayed = replay(
                    |r| {
                        let mut client = client.clone();
                        async move { client.release(r).await.map(drop) }
                    },
                    request,
                    timeout,
                )
                .await;
                (0, 0, replayed)
            }
        };
        match replayed {
            Replayed::Applied(()) => {
                *caller.ledger.consumed.entry(account).or_default() += charged;
            }
            Replayed::Refused => {}
            Replayed::Unknown => still_unknown += 1,
        }
    }
    let mut left_open = 0;
    for (i, hold) in std::mem::take(&mut caller.open).into_iter().enumerate() {
        let request = scenario::release_request(
            workload.accounts[hold.account].clone(),
            hold.reservation_id,
            workload
                .names
                .key(workload.tag, caller.index, i as u64, "-cleanup"),
        );
        let released = replay(
            |r| {
                let mut client = client.clone();
                async move { client.release(r).await.map(drop) }
            },
            request,
            timeout,
        )
        .await;
        if !matches!(released, Replayed::Applied(())) {
            left_open += 1;
        }
    }
    Settled {
        consumed: caller
            .ledger
            .consumed
            .into_iter()
            .map(|(account, amount)| (workload.accounts[account].clone(), amount))
            .collect(),
        still_unknown,
        left_open,
    }
}
