//! Cross-replica notification latency: two tallyd on one PostgreSQL
//! database. Replica B serves one `WatchAccount` stream per account;
//! replica A takes Debits on those accounts at a fixed open-loop rate. For
//! each Debit answered OK on A, the time from that answer to the watch
//! message on B whose entry carries the Debit's idempotency key.
//!
//! Both ends are timed by this one process on one clock, so the figure is
//! what a client of B sees after a client of A was answered: the commit's
//! signal crossing to B (or B's fallback poll), B reading the stream and
//! the message's way back, plus this process's own scheduling.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;

use crate::check::{self, CheckReport};
use crate::cli::{StoreKind, WatchArgs};
use crate::lag::{self, LagFigures};
use crate::load::{self, Bound, Outcome, Pace, Workload, new_histogram};
use crate::report::{Machine, Percentiles, RunReport, SystemFigures, TallydFigures};
use crate::scenario::{Names, Scenario};
use crate::settle::{self, Settled};
use crate::spawn::{self, Tallyd};
use crate::tally::{self, TallyCaller, TallyWorkload};

/// Debits per second on replica A when --rate is not given.
pub const DEFAULT_RATE: f64 = 200.0;
/// Watch streams per connection to replica B: well under HTTP/2's usual
/// limit of concurrent streams per connection (100 to 200).
const STREAMS_PER_CONNECTION: usize = 50;
/// How long every watch may take to answer its first message.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before resuming a watch stream that broke.
const RESUME_PAUSE: Duration = Duration::from_millis(100);
/// Calls in flight while setting up accounts.
const SETUP_CONCURRENCY: usize = 64;
/// Fully consistent reads in flight during the balance check.
const CHECK_CONCURRENCY: usize = 8;

/// What the watchers saw.
#[derive(Clone, Debug, Serialize)]
pub struct WatchFigures {
    /// Watch streams on replica B, one per account.
    pub watchers: usize,
    /// Where the Debits went and where they were watched.
    pub replica_a: String,
    pub replica_b: String,
    /// Debits answered OK on replica A inside the measured window.
    pub answered: u64,
    /// Of those, the ones whose entry reached a watch on B.
    pub delivered: u64,
    /// Of those, the ones whose entry had not reached B when the grace
    /// period after the last Debit ran out.
    pub missing: u64,
    /// Entries that reached B before their Debit's answer reached the
    /// bench from A: counted as 0 ms.
    pub before_answer: u64,
    /// Watch streams that broke and were resumed from their last sequence.
    pub streams_resumed: u64,
    pub grace_seconds: f64,
    /// From a Debit's answer on A to its entry on B.
    pub latency_ms: Percentiles,
    /// Warnings and errors replica B logged (spawned replicas only).
    pub replica_b_warnings_logged: u64,
    pub replica_b_errors_logged: u64,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// When each Debit was answered and when each entry arrived, by key.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

pub async fn run(args: WatchArgs) -> anyhow::Result<RunReport> {
    let bench = &args.bench;
    bench.validate()?;
    if bench.target.store == Some(StoreKind::Sqlite) {
        bail!(
            "watch measures how fast one tallyd hears of another's writes, so both must share \
             one PostgreSQL database; the embedded SQLite store cannot be shared (drop --store \
             or pass --store postgres)"
        );
    }
    if bench.history > 0 {
        bail!("watch does not pre-fill a history (--history)");
    }
    let connect = match (bench.target.connect, args.connect_watch) {
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        _ => bail!(
            "watch against running servers needs both --connect A (takes the Debits) and \
             --connect-watch B (serves the watches): two replicas on one database"
        ),
    };
    let rate = bench.rate.unwrap_or(DEFAULT_RATE);
    let accounts = bench.accounts.unwrap_or(Scenario::Watch.default_accounts());
    let names = Names::fresh();
    println!(
        "tally-bench watch: run {}, {accounts} watched accounts, Debits at {rate}/s from {} callers on {} connections",
        names.run, bench.callers, bench.connections
    );

    let (phase, tallyd_figures, store) = match connect {
        Some((a, b)) => {
            let phase = phase(&args, &names, accounts, rate, (a, b), None).await?;
            let figures = TallydFigures {
                origin: format!("A {a}, B {b}"),
                warnings_logged: 0,
                errors_logged: 0,
                rss_bytes_after: None,
            };
            (phase, figures, "connected")
        }
        None => {
            let binary = match &bench.target.tallyd {
                Some(path) => path.clone(),
                None => spawn::default_tallyd()?,
            };
            let started = Instant::now();
            let a = Tallyd::spawn(
                &binary,
                StoreKind::Postgres,
                &bench.target.database_url,
                bench.target.server_log,
            )
            .await?;
            let b = Tallyd::spawn_replica(&binary, &a, bench.target.server_log).await?;
            println!(
                "tallyd {} on postgres: replica A at {}, replica B at {}, one database, serving after {:.1}s",
                binary.display(),
                a.addr,
                b.addr,
                started.elapsed().as_secs_f64()
            );
            let phase = phase(&args, &names, accounts, rate, (a.addr, b.addr), Some(&b)).await;
            let figures = TallydFigures {
                origin: format!("spawned: A {}, B {}", a.addr, b.addr),
                warnings_logged: a.logs.warnings.load(Ordering::Relaxed),
                errors_logged: a.logs.errors.load(Ordering::Relaxed),
                rss_bytes_after: None,
            };
            // B first: A drops the database they share.
            b.stop().await?;
            a.stop().await?;
            (phase?, figures, "postgres")
        }
    };
    println!("balances: {}", phase.check.summary());
    let postgres = crate::pg::server_version(&bench.target.database_url)
        .await
        .ok();
    Ok(RunReport {
        run: names.run.clone(),
        pid: std::process::id(),
        scenario: Scenario::Watch.name(),
        store,
        mode: "open",
        rate: Some(rate),
        callers: bench.callers,
        connections: bench.connections,
        duration_seconds: bench.duration.as_secs_f64(),
        warmup_seconds: bench.warmup.as_secs_f64(),
        accounts,
        history: None,
        tally: phase.figures,
        projection_lag: Some(phase.lag),
        naive: None,
        echo: None,
        ratios: Default::default(),
        balances_exact: phase.check.exact,
        check: phase.check,
        naive_check: None,
        baseline_errors: Default::default(),
        tallyd: tallyd_figures,
        watch: Some(phase.watch),
        machine: Machine::here(postgres),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

struct WatchPhase {
    figures: SystemFigures,
    lag: LagFigures,
    watch: WatchFigures,
    check: CheckReport,
}

/// Debits through A, watched on B (`replica_b`, when spawned, for its log
/// counts), then the balance check through A.
async fn phase(
    args: &WatchArgs,
    names: &Names,
    accounts: usize,
    rate: f64,
    (a, b): (SocketAddr, SocketAddr),
    replica_b: Option<&Tallyd>,
) -> anyhow::Result<WatchPhase> {
    let bench = &args.bench;
    let channels = tally::connect(a, bench.connections).await?;
    let watched: Vec<String> = (0..accounts).map(|i| names.account("a", i)).collect();
    let probe_account = lag::probe_account(names);
    let mut all = watched.clone();
    all.push(probe_account.clone());
    let started = Instant::now();
    tally::open_accounts(&channels, names, &all, None, SETUP_CONCURRENCY).await?;
    println!(
        "opened and funded {} accounts on A in {:.1}s",
        all.len(),
        started.elapsed().as_secs_f64()
    );

    // Every watch answers its first message (the balance now) once it is
    // subscribed; only then do the Debits start, so none can slip past.
    let connections = bench
        .connections
        .max(accounts.div_ceil(STREAMS_PER_CONNECTION));
    let watch_channels = tally::connect(b, connections).await?;
    let arrived: Arrivals = Arc::default();
    let (stop_watching, stopped) = watch::channel(false);
    let mut watchers = Vec::with_capacity(accounts);
    let mut subscribed = Vec::with_capacity(accounts);
    for (i, account) in watched.iter().enumerate() {
        let (ready, is_ready) = oneshot::channel();
        subscribed.push(is_ready);
        watchers.push(tokio::spawn(follow(
            watch_channels[i % watch_channels.len()].clone(),
            account.clone(),
            arrived.clone(),
            ready,
            stopped.clone(),
        )));
    }
    let started = Instant::now();
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, futures::future::try_join_all(subscribed))
        .await
        .context("the watches on B did not all answer their first message in time")?
        .map_err(|_| watch_failure(&mut watchers))?;
    println!(
        "{accounts} watches on B ({connections} connections) subscribed in {:.1}s; measuring…",
        started.elapsed().as_secs_f64()
    );

    let workload = Arc::new(TallyWorkload {
        scenario: Scenario::Watch,
        names: names.clone(),
        tag: "m",
        accounts: Arc::new(watched),
        timeout: bench.timeout,
    });
    let answered: Arrivals = Arc::default();
    let timed = Arc::new(Answered {
        debits: workload.clone(),
        answered: answered.clone(),
    });
    let callers = workload.callers(&channels, bench.callers);
    let (stop_probe, probe_stopped) = watch::channel(false);
    let probe = tokio::spawn(lag::probe(
        channels[0].clone(),
        names.clone(),
        probe_stopped,
    ));
    let measure_from = Instant::now() + bench.warmup;
    let driven = load::drive(
        timed,
        callers,
        Pace {
            warmup: bench.warmup,
            bound: Bound::Time(bench.duration),
            rate: Some(rate),
        },
    )
    .await;
    let _ = stop_probe.send(true);
    let (lag, charges) = probe.await?;
    let (result, callers) = driven?;

    // The last entries are still on their way: wait for them, up to the
    // grace period, then stop the watches.
    let window = |answers: &HashMap<String, Instant>| -> Vec<(String, Instant)> {
        answers
            .iter()
            .filter(|(_, at)| **at >= measure_from)
            .map(|(key, at)| (key.clone(), *at))
            .collect()
    };
    let expected = window(&answered.lock().expect("answers lock"));
    let deadline = Instant::now() + args.grace;
    loop {
        let pending = {
            let arrived = arrived.lock().expect("arrivals lock");
            expected
                .iter()
                .filter(|(key, _)| !arrived.contains_key(key))
                .count()
        };
        if pending == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_watching.send(true);
    let mut streams_resumed = 0;
    for watcher in watchers {
        streams_resumed += watcher.await?;
    }
    let arrived = arrived.lock().expect("arrivals lock").clone();
    let mut watch = measure(&expected, &arrived);
    watch.watchers = accounts;
    watch.replica_a = a.to_string();
    watch.replica_b = b.to_string();
    watch.streams_resumed = streams_resumed;
    watch.grace_seconds = args.grace.as_secs_f64();
    if let Some(replica_b) = replica_b {
        watch.replica_b_warnings_logged = replica_b.logs.warnings.load(Ordering::Relaxed);
        watch.replica_b_errors_logged = replica_b.logs.errors.load(Ordering::Relaxed);
    }

    let mut settled = Settled::default();
    settled.consumed.insert(probe_account, charges.consumed);
    settled.still_unknown += charges.unknown;
    settled.absorb(settle::settle(&workload, callers).await);
    let check = check::check_tally(&channels, &all, &settled, CHECK_CONCURRENCY).await;
    Ok(WatchPhase {
        figures: SystemFigures::new("tally A (postgres)", 1, &result),
        lag,
        watch,
        check,
    })
}

/// The latencies of the `expected` Debits (key, answered at) whose entries
/// `arrived`; the rest are missing.
fn measure(expected: &[(String, Instant)], arrived: &HashMap<String, Instant>) -> WatchFigures {
    let mut histogram = new_histogram();
    let (mut delivered, mut missing, mut before_answer) = (0, 0, 0);
    for (key, answered_at) in expected {
        let Some(arrived_at) = arrived.get(key) else {
            missing += 1;
            continue;
        };
        delivered += 1;
        let latency = arrived_at.checked_duration_since(*answered_at);
        if latency.is_none() {
            before_answer += 1;
        }
        let micros = latency.map_or(0, |l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        histogram.saturating_record(micros.max(1));
    }
    WatchFigures {
        watchers: 0,
        replica_a: String::new(),
        replica_b: String::new(),
        answered: expected.len() as u64,
        delivered,
        missing,
        before_answer,
        streams_resumed: 0,
        grace_seconds: 0.0,
        latency_ms: Percentiles::of(&histogram),
        replica_b_warnings_logged: 0,
        replica_b_errors_logged: 0,
        histogram,
    }
}

/// Why a watch could not start: the first watcher task that ended.
fn watch_failure(watchers: &mut [tokio::task::JoinHandle<u64>]) -> anyhow::Error {
    for watcher in watchers.iter() {
        watcher.abort();
    }
    anyhow::anyhow!("a WatchAccount call on B failed before its first message (see above)")
}

/// Follows one account's watch on B until `stop`, noting when each entry
/// with an idempotency key arrives; a broken stream is resumed after the
/// last sequence it delivered. Returns how many times it was resumed.
async fn follow(
    channel: Channel,
    account_id: String,
    arrived: Arrivals,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut client = AccountServiceClient::new(channel);
    let mut ready = Some(ready);
    let mut after = None;
    let mut resumed = 0;
    loop {
        let request = pb::WatchAccountRequest {
            account_id: account_id.clone(),
            after_sequence: after,
        };
        let answer = tokio::select! {
            answer = client.watch_account(request) => answer,
            _ = stop.changed() => return resumed,
        };
        match answer {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    let message = tokio::select! {
                        message = stream.message() => message,
                        _ = stop.changed() => return resumed,
                    };
                    let Ok(Some(message)) = message else {
                        break;
                    };
                    let now = Instant::now();
                    after = Some(message.sequence);
                    if let Some(entry) = message.entry
                        && !entry.idempotency_key.is_empty()
                    {
                        arrived
                            .lock()
                            .expect("arrivals lock")
                            .entry(entry.idempotency_key)
                            .or_insert(now);
                    }
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
            }
            Err(status) if ready.is_some() => {
                eprintln!(
                    "tally-bench: WatchAccount {account_id} on B: {:?} {}",
                    status.code(),
                    status.message()
                );
                return resumed;
            }
            Err(_) => {}
        }
        if ready.is_some() {
            eprintln!("tally-bench: the watch of {account_id} on B ended before its first message");
            return resumed;
        }
        resumed += 1;
        tokio::select! {
            _ = tokio::time::sleep(RESUME_PAUSE) => {}
            _ = stop.changed() => return resumed,
        }
    }
}

/// The Debit workload on A, noting when each Debit was answered OK.
struct Answered {
    debits: Arc<TallyWorkload>,
    answered: Arrivals,
}

impl Workload for Answered {
    type Caller = TallyCaller;

    async fn call(&self, caller: &mut TallyCaller, n: u64) -> Outcome {
        let outcome = self.debits.call(caller, n).await;
        if outcome.error.is_none() {
            let now = Instant::now();
            self.answered
                .lock()
                .expect("answers lock")
                .insert(self.debits.debit_key(caller, n), now);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_entries_count_as_zero_and_late_ones_as_missing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let expected = vec![
            ("a".to_owned(), t0),
            ("b".to_owned(), t0 + ms(10)),
            ("c".to_owned(), t0),
        ];
        let arrived = HashMap::from([
            ("a".to_owned(), t0 + ms(120)),
            // Heard on B before A's answer reached the bench.
            ("b".to_owned(), t0 + ms(5)),
            ("unrelated".to_owned(), t0),
        ]);
        let figures = measure(&expected, &arrived);
        assert_eq!(figures.answered, 3);
        assert_eq!(figures.delivered, 2);
        assert_eq!(figures.missing, 1);
        assert_eq!(figures.before_answer, 1);
        assert!(figures.latency_ms.max >= 119.0 && figures.latency_ms.max <= 121.0);
        assert!(figures.histogram.min() <= 1);
    }
}
