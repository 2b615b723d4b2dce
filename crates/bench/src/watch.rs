//! How long a write through one replica takes to reach a `WatchAccount`
//! stream on another: two `tallyd`s share one PostgreSQL database, the
//! watchers listen on the second, debits go to the first at a fixed rate,
//! and each debit is timed from its answer to the watch message carrying
//! its ledger entry (matched by idempotency key).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::metering_service_client::MeteringServiceClient;
use tokio::time::Instant;

use crate::check::{self, CheckReport};
use crate::cli::{StoreKind, Target};
use crate::load::new_histogram;
use crate::report::{Machine, Percentiles};
use crate::scenario::{self, DEBIT_MILLICREDITS, Names};
use crate::settle::Settled;
use crate::spawn::{self, Tallyd};
use crate::tally;

/// How long after the last debit a watch message may still arrive before
/// it counts as missing.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, clap::Args)]
pub struct WatchArgs {
    /// How long to send debits.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub duration: Duration,

    /// Debits per second sent to the first replica (open loop).
    #[arg(long, default_value_t = 200)]
    pub rate: u32,

    /// Accounts watched on the second replica, one stream each; the debits
    /// go round them.
    #[arg(long, default_value_t = 100)]
    pub accounts: usize,

    /// Watch on this already-running replica (with --connect for the one
    /// written to) instead of spawning a second one.
    #[arg(long, requires = "connect")]
    pub connect_watch: Option<SocketAddr>,

    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Serialize)]
pub struct WatchReport {
    pub accounts: usize,
    pub rate: u32,
    /// Debits answered OK by the first replica.
    pub debits: u64,
    /// Their entries seen on the second replica's watches.
    pub delivered: u64,
    /// Not seen within the grace period.
    pub missing: u64,
    /// From a debit's answer on one replica to its watch message on the
    /// other, in milliseconds (0 when the message came first).
    pub latency_ms: Percentiles,
    pub check: CheckReport,
    pub machine: Machine,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<WatchReport> {
    if args.accounts == 0 || args.rate == 0 {
        bail!("--accounts and --rate must be positive");
    }
    let (written, watched, spawned) = match (args.target.connect, args.connect_watch) {
        (Some(written), Some(watched)) => (written, watched, Vec::new()),
        (Some(_), None) => bail!("--connect needs --connect-watch: the replica to watch on"),
        _ => {
            if args.target.store != StoreKind::Postgres {
                bail!("watch measures replicas sharing one database: run it with --store postgres");
            }
            let binary = match &args.target.tallyd {
                Some(path) => path.clone(),
                None => spawn::default_tallyd()?,
            };
            let first = Tallyd::spawn(
                &binary,
                StoreKind::Postgres,
                &args.target.database_url,
                args.target.server_log,
            )
            .await?;
            let second = Tallyd::spawn_replica(&binary, &first, args.target.server_log).await?;
            (first.addr, second.addr, vec![first, second])
        }
    };
    println!("watch: debits to {written}, watches on {watched}");
    let result = measure(&args, written, watched).await;
    // The second replica first: the first owns the database.
    for tallyd in spawned.into_iter().rev() {
        tallyd.stop().await?;
    }
    result
}

/// When each watched entry arrived, by idempotency key.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn measure(
    args: &WatchArgs,
    written: SocketAddr,
    watched: SocketAddr,
) -> anyhow::Result<WatchReport> {
    let writers = tally::connect(written, 2).await?;
    let watchers = tally::connect(watched, 2).await?;
    let names = Names::fresh();
    let accounts: Vec<String> = (0..args.accounts).map(|i| names.account("w", i)).collect();
    tally::open_accounts(&writers, &names, &accounts, 32).await?;

    let arrivals: Arrivals = Arc::default();
    let mut streams = Vec::with_capacity(accounts.len());
    for (i, account) in accounts.iter().enumerate() {
        let mut client = AccountServiceClient::new(watchers[i % watchers.len()].clone());
        let stream = client
            .watch_account(pb::WatchAccountRequest {
                account_id: account.clone(),
                after_sequence: None,
            })
            .await
            .with_context(|| format!("WatchAccount {account} on {watched}"))?
            .into_inner();
        streams.push(stream);
    }
    // Each stream's first message is the balance now: the watch is live.
    let mut followers = Vec::with_capacity(streams.len());
    for mut stream in streams {
        stream
            .next()
            .await
            .context("a watch ended before its first message")??;
        let arrivals = arrivals.clone();
        followers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let now = Instant::now();
                if let Some(entry) = message.entry {
                    arrivals
                        .lock()
                        .expect("arrivals")
                        .insert(entry.idempotency_key, now);
                }
            }
        }));
    }

    println!(
        "watch: {} watches open; {} debits/s for {:.0}s",
        accounts.len(),
        args.rate,
        args.duration.as_secs_f64()
    );
    let answered: Arc<Mutex<Vec<(String, usize, Instant)>>> = Arc::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sends = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < args.duration {
        ticker.tick().await;
        let index = (n % accounts.len() as u64) as usize;
        let key = names.key("watch", 0, n, "");
        let request = scenario::debit_request(accounts[index].clone(), key.clone());
        let mut client = MeteringServiceClient::new(writers[n as usize % writers.len()].clone());
        let answered = answered.clone();
        sends.push(tokio::spawn(async move {
            if client.debit(request).await.is_ok() {
                answered
                    .lock()
                    .expect("answered")
                    .push((key, index, Instant::now()));
            }
        }));
        n += 1;
    }
    for send in sends {
        send.await?;
    }
    let answered = std::mem::take(&mut *answered.lock().expect("answered"));
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        let seen = arrivals.lock().expect("arrivals").len();
        if seen >= answered.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for follower in followers {
        follower.abort();
    }

    let arrivals = std::mem::take(&mut *arrivals.lock().expect("arrivals"));
    let mut histogram = new_histogram();
    let (mut delivered, mut missing) = (0, 0);
    let mut settled = Settled::default();
    for (key, index, at) in &answered {
        *settled
            .consumed
            .entry(accounts[*index].clone())
            .or_default() += DEBIT_MILLICREDITS;
        match arrivals.get(key) {
            Some(seen) => {
                delivered += 1;
                let micros = seen.saturating_duration_since(*at).as_micros() as u64;
                let _ = histogram.record(micros.max(1));
            }
            None => missing += 1,
        }
    }
    let check = check::check_tally(&watchers, &accounts, &settled, 32).await;
    Ok(WatchReport {
        accounts: accounts.len(),
        rate: args.rate,
        debits: answered.len() as u64,
        delivered,
        missing,
        latency_ms: Percentiles::of(&histogram),
        check,
        machine: Machine::here(None),
    })
}

impl WatchReport {
    pub fn table(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "watch: {} debits at {}/s over {} accounts; {} entries delivered to the other replica's watches, {} missing\n\
             commit answered on one replica → entry on the other's watch: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms\n\
             balances: {}\n",
            self.debits,
            self.rate,
            self.accounts,
            self.delivered,
            self.missing,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.check.summary(),
        )
    }
}
