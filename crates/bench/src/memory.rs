//! Resident memory per cached account: tallyd keeps each active account in
//! memory (an actor with its state) until it idles out, so RSS grows with
//! the accounts in use. Touch K accounts, read VmRSS before and after.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::MemoryArgs;
use crate::scenario::Names;
use crate::spawn::{self, Tallyd};
use crate::tally;

/// Lets the allocator and the engine's background work settle before a
/// reading, and outlasts the actors' idle timeout (five seconds): a reading
/// counts accounts held in the caches, not actors still running.
const SETTLE: Duration = Duration::from_secs(8);

#[derive(Debug, serde::Serialize)]
pub struct MemoryStep {
    pub accounts: usize,
    pub rss_bytes: u64,
    /// (RSS - baseline) / accounts.
    pub bytes_per_account: f64,
    /// RSS growth since the previous step / accounts added since then.
    pub marginal_bytes_per_account: f64,
    pub setup_seconds: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct MemoryReport {
    pub store: crate::cli::StoreKind,
    /// Whether the accounts were opened on a plan.
    pub on_plan: bool,
    pub baseline_rss_bytes: u64,
    pub steps: Vec<MemoryStep>,
    pub machine: crate::report::Machine,
}

pub async fn run(args: MemoryArgs) -> anyhow::Result<MemoryReport> {
    if args.target.connect.is_some() {
        bail!("memory reads tallyd's /proc status, so it must spawn tallyd itself (no --connect)");
    }
    let mut steps = args.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    if steps.first() == Some(&0) || steps.is_empty() {
        bail!("--steps must be positive account counts");
    }
    let binary = match &args.target.tallyd {
        Some(path) => path.clone(),
        None => spawn::default_tallyd()?,
    };
    let tallyd = Tallyd::spawn(
        &binary,
        args.target.store(),
        &args.target.database_url,
        args.target.server_log,
    )
    .await?;
    let result = measure(&tallyd, &args, &steps).await;
    tallyd.stop().await?;
    result
}

async fn measure(
    tallyd: &Tallyd,
    args: &MemoryArgs,
    steps: &[usize],
) -> anyhow::Result<MemoryReport> {
    let channels = tally::connect(tallyd.addr, args.connections).await?;
    let plan = args.plan.then_some(spawn::PLAN);
    let names = Names::fresh();
    // One account first, so the baseline already includes the runtime, the
    // store's caches and one-off structures.
    let first = vec![names.account("w", 0)];
    tally::open_accounts(&channels, &names, &first, plan, 1).await?;
    tokio::time::sleep(SETTLE).await;
    let baseline = tallyd.rss_bytes()?;
    println!(
        "memory: tallyd pid {} on {}, accounts {}, baseline RSS {:.1} MiB",
        tallyd.pid(),
        tallyd.store.name(),
        if args.plan {
            "on a plan (a monthly allowance)"
        } else {
            "without a plan (a promotional grant)"
        },
        mib(baseline)
    );
    let mut report = MemoryReport {
        store: tallyd.store,
        on_plan: args.plan,
        baseline_rss_bytes: baseline,
        steps: Vec::new(),
        machine: crate::report::Machine::here(None),
    };
    let mut opened = 0usize;
    let mut previous_rss = baseline;
    for &target in steps {
        let started = Instant::now();
        let previous = opened;
        let accounts: Vec<String> = (opened..target).map(|i| names.account("m", i)).collect();
        tally::open_accounts(&channels, &names, &accounts, plan, args.callers).await?;
        // One debit each, so every account has the state a live one has:
        // a bucket drawn on, a receipt, an idempotency record.
        tally::debit_each(&channels, &names, &accounts, args.callers).await?;
        opened = target;
        let setup_seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(SETTLE).await;
        let rss = tallyd.rss_bytes().context("reading RSS")?;
        let per_account = rss.saturating_sub(baseline) as f64 / target as f64;
        let marginal = (rss as f64 - previous_rss as f64) / (target - previous) as f64;
        previous_rss = rss;
        println!(
            "memory: {target:>7} accounts cached: RSS {:.1} MiB, {per_account:.0} bytes per account ({marginal:.0} for the last {}; set up in {setup_seconds:.1}s)",
            mib(rss),
            target - previous,
        );
        report.steps.push(MemoryStep {
            accounts: target,
            rss_bytes: rss,
            bytes_per_account: per_account,
            marginal_bytes_per_account: marginal,
            setup_seconds,
        });
    }
    Ok(report)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
