//! One benchmark invocation: Tally under the scenario (with its history and
//! balance check), then each baseline under the same load, one system at a
//! time so they never compete for the machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use tonic::transport::Channel;

use crate::check::{self, CheckReport};
use crate::cli::{BenchArgs, StoreKind};
use crate::echo::EchoWorkload;
use crate::lag::{self, LagFigures};
use crate::load::{self, Bound, Pace};
use crate::naive::{Naive, NaiveCheck, NaiveWorkload};
use crate::report::{HistoryFigures, Machine, Ratios, RunReport, SystemFigures, TallydFigures};
use crate::scenario::{Names, Scenario};
use crate::settle::{self, Settled};
use crate::spawn::{self, EchoServer, Tallyd};
use crate::tally::{self, TallyWorkload};

/// Calls in flight while setting up accounts.
const SETUP_CONCURRENCY: usize = 64;
/// Fully consistent reads in flight during the balance check: few, since
/// each may wait on the projections, and tallyd's store pool is shared with
/// the projections those reads wait for.
const CHECK_CONCURRENCY: usize = 8;
/// Longest wait, after a `--history` pre-fill, for the projections to apply
/// it before the measured run starts.
const PROJECTIONS_CATCH_UP_LIMIT: Duration = Duration::from_secs(900);

/// What the Tally phase produced.
struct TallyPhase {
    figures: SystemFigures,
    lag: Option<LagFigures>,
    history: Option<HistoryFigures>,
    check: CheckReport,
    rss_bytes_after: Option<u64>,
}

pub async fn run(scenario: Scenario, args: BenchArgs) -> anyhow::Result<RunReport> {
    args.validate()?;
    let accounts = match (scenario, args.accounts) {
        (Scenario::Hot, Some(n)) if n != 1 => {
            bail!(
                "hot drives one account; use spread (or reserve-commit/mixed) with --accounts {n}"
            )
        }
        (_, Some(n)) => n,
        (_, None) => scenario.default_accounts(),
    };
    let names = Names::fresh();
    let store_name = match (&args.target.connect, args.target.store()) {
        (Some(_), _) => "connected",
        (None, StoreKind::Sqlite) => "sqlite",
        (None, StoreKind::Postgres) => "postgres",
    };
    println!(
        "tally-bench {}: run {}, {} accounts, {} callers on {} connections",
        scenario.name(),
        names.run,
        accounts,
        args.callers,
        args.connections
    );

    // Tally first, on a server of its own, stopped before the baselines run.
    let (phase, tallyd_figures) = match args.target.connect {
        Some(addr) => {
            let phase = tally_phase(scenario, &args, &names, accounts, addr, None).await?;
            let figures = TallydFigures {
                origin: addr.to_string(),
                warnings_logged: 0,
                errors_logged: 0,
                rss_bytes_after: None,
            };
            (phase, figures)
        }
        None => {
            let binary = match &args.target.tallyd {
                Some(path) => path.clone(),
                None => spawn::default_tallyd()?,
            };
            let started = Instant::now();
            let tallyd = Tallyd::spawn(
                &binary,
                args.target.store(),
                &args.target.database_url,
                args.target.server_log,
            )
            .await?;
            println!(
                "tallyd {} on {store_name}: serving at {} after {:.1}s",
                binary.display(),
                tallyd.addr,
                started.elapsed().as_secs_f64()
            );
            let phase = tally_phase(
                scenario,
                &args,
                &names,
                accounts,
                tallyd.addr,
                Some(&tallyd),
            )
            .await;
            let figures = TallydFigures {
                origin: "spawned".into(),
                warnings_logged: tallyd.logs.warnings.load(Ordering::Relaxed),
                errors_logged: tallyd.logs.errors.load(Ordering::Relaxed),
                rss_bytes_after: phase.as_ref().ok().and_then(|p| p.rss_bytes_after),
            };
            tallyd.stop().await?;
            (phase?, figures)
        }
    };
    println!("balances: {}", phase.check.summary());

    // A baseline that cannot run must not throw away the Tally figures (a
    // run with a 1M history takes minutes): it is reported and the run
    // exits 2 after writing what it has.
    let calls_per_op = scenario.calls_per_op();
    let mut baseline_errors = std::collections::BTreeMap::new();
    let (mut naive, mut naive_check) = (None, None);
    if args.baseline.naive {
        match naive_phase(scenario, &args, &names, accounts, calls_per_op).await {
            Ok((figures, check)) => {
                naive = Some(figures);
                naive_check = Some(check);
            }
            Err(e) => {
                let e = format!(
                    "{e:#} (the naive baseline needs PostgreSQL at --database-url; --baseline echo skips it)"
                );
                eprintln!("tally-bench: naive baseline failed: {e}");
                baseline_errors.insert("naive".to_owned(), e);
            }
        }
    }
    let mut echo = None;
    if args.baseline.echo {
        match echo_phase(scenario, &args, &names, accounts, calls_per_op).await {
            Ok(figures) => echo = Some(figures),
            Err(e) => {
                eprintln!("tally-bench: echo baseline failed: {e:#}");
                baseline_errors.insert("echo".to_owned(), format!("{e:#}"));
            }
        }
    }

    let mut ratios = std::collections::BTreeMap::new();
    if let Some(naive) = &naive {
        ratios.insert("naive".to_owned(), Ratios::of(&phase.figures, naive));
    }
    if let Some(echo) = &echo {
        ratios.insert("echo".to_owned(), Ratios::of(&phase.figures, echo));
    }
    let postgres = if args.target.store() == StoreKind::Postgres || args.baseline.naive {
        crate::pg::server_version(&args.target.database_url)
            .await
            .ok()
    } else {
        None
    };
    let balances_exact = phase.check.exact && naive_check.as_ref().is_none_or(|c| c.exact);
    Ok(RunReport {
        run: names.run.clone(),
        pid: std::process::id(),
        scenario: scenario.name(),
        store: store_name,
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        rate: args.rate,
        callers: args.callers,
        connections: args.connections,
        duration_seconds: args.duration.as_secs_f64(),
        warmup_seconds: args.warmup.as_secs_f64(),
        accounts,
        history: phase.history,
        tally: phase.figures,
        projection_lag: phase.lag,
        watch: None,
        naive,
        echo,
        ratios,
        check: phase.check,
        naive_check,
        baseline_errors,
        balances_exact,
        tallyd: tallyd_figures,
        machine: Machine::here(postgres),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

fn pace(args: &BenchArgs) -> Pace {
    Pace {
        warmup: args.warmup,
        bound: Bound::Time(args.duration),
        rate: args.rate,
    }
}

async fn tally_phase(
    scenario: Scenario,
    args: &BenchArgs,
    names: &Names,
    accounts: usize,
    addr: SocketAddr,
    tallyd: Option<&Tallyd>,
) -> anyhow::Result<TallyPhase> {
    let channels = tally::connect(addr, args.connections).await?;
    let measured: Vec<String> = (0..accounts).map(|i| names.account("a", i)).collect();
    let history_accounts: Vec<String> = if args.history > 0 && !args.history_on_hot {
        (0..args.history_accounts)
            .map(|i| names.account("h", i))
            .collect()
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let mut all = measured.clone();
    all.extend(history_accounts.iter().cloned());
    let probe_account = lag::probe_account(names);
    all.push(probe_account.clone());
    tally::open_accounts(&channels, names, &all, None, SETUP_CONCURRENCY).await?;
    println!(
        "opened and funded {} accounts in {:.1}s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    if matches!(scenario, Scenario::Balance | Scenario::Mixed) {
        // These read the projections as they stand: until the projections
        // hold the accounts just opened, a read would find none (NotFound),
        // which is the bench racing its own set-up, not an answer to count.
        check::wait_for_projections(
            &channels[0],
            &all[all.len() - 1],
            PROJECTIONS_CATCH_UP_LIMIT,
        )
        .await?;
    }
    let measured = Arc::new(measured);

    let mut settled = Settled::default();
    let history = if args.history > 0 {
        let (figures, history_settled) =
            prefill(args, names, &channels, &measured, history_accounts).await?;
        settled.absorb(history_settled);
        let caught_up = check::wait_for_projections(
            &channels[0],
            &all[all.len() - 1],
            PROJECTIONS_CATCH_UP_LIMIT,
        )
        .await?;
        println!(
            "history: the projections caught up {:.1}s after the pre-fill",
            caught_up.as_secs_f64()
        );
        Some(figures)
    } else {
        None
    };

    let workload = Arc::new(TallyWorkload {
        scenario,
        names: names.clone(),
        tag: "m",
        accounts: measured.clone(),
        timeout: args.timeout,
    });
    let callers = workload.callers(&channels, args.callers);
    println!("tally: measuring…");
    let (stop_probe, stopped) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(lag::probe(channels[0].clone(), names.clone(), stopped));
    let driven = load::drive(workload.clone(), callers, pace(args)).await;
    let _ = stop_probe.send(true);
    let (lag, charges) = probe.await?;
    settled.consumed.insert(probe_account, charges.consumed);
    settled.still_unknown += charges.unknown;
    let (result, callers) = driven?;
    let rss_bytes_after = tallyd.and_then(|t| t.rss_bytes().ok());
    let system = match tallyd {
        Some(t) => format!("tally ({})", t.store.name()),
        None => "tally".to_owned(),
    };
    let figures = SystemFigures::new(system, scenario.calls_per_op(), &result)
        .with_records_per_op(scenario.records_per_call());
    settled.absorb(settle::settle(&workload, callers).await);
    let check = check::check_tally(&channels, &all, &settled, CHECK_CONCURRENCY).await;
    Ok(TallyPhase {
        figures,
        lag: Some(lag),
        history,
        check,
        rss_bytes_after,
    })
}

/// Writes about `args.history` events before measuring, through the API
/// as fast as it takes them: debits spread over accounts of their own, or
/// (--history-on-hot) reserve and commit pairs on the measured accounts.
async fn prefill(
    args: &BenchArgs,
    names: &Names,
    channels: &[Channel],
    measured: &Arc<Vec<String>>,
    history_accounts: Vec<String>,
) -> anyhow::Result<(HistoryFigures, Settled)> {
    let (scenario, accounts, operations) = if args.history_on_hot {
        // A pair writes two events: the hold and the charge.
        (
            Scenario::ReserveCommit,
            measured.clone(),
            args.history.div_ceil(2),
        )
    } else {
        (Scenario::Spread, Arc::new(history_accounts), args.history)
    };
    let workload = Arc::new(TallyWorkload {
        scenario,
        names: names.clone(),
        tag: "h",
        accounts: accounts.clone(),
        timeout: args.timeout,
    });
    println!(
        "history: writing {operations} {} over {} accounts…",
        if args.history_on_hot {
            "reserve-commit pairs"
        } else {
            "debits"
        },
        accounts.len()
    );
    let started = Instant::now();
    let callers = workload.callers(channels, args.history_callers);
    let (result, callers) = load::drive(
        workload.clone(),
        callers,
        Pace {
            warmup: Duration::ZERO,
            bound: Bound::Ops(operations),
            rate: None,
        },
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "history: {} operations in {seconds:.1}s ({:.0}/s), {} errors",
        result.ok,
        result.ok as f64 / seconds,
        result.error_count()
    );
    let settled = settle::settle(&workload, callers).await;
    Ok((
        HistoryFigures {
            requested_events: args.history,
            on_hot: args.history_on_hot,
            accounts: accounts.len(),
            operations: result.ok,
            seconds,
            ops_per_sec: result.ok as f64 / seconds,
            errors: result.errors,
        },
        settled,
    ))
}

async fn naive_phase(
    scenario: Scenario,
    args: &BenchArgs,
    names: &Names,
    accounts: usize,
    calls_per_op: u32,
) -> anyhow::Result<(SystemFigures, NaiveCheck)> {
    let started = Instant::now();
    let naive = Naive::create(
        &args.target.database_url,
        args.naive_pool,
        names,
        accounts,
        args.history,
    )
    .await?;
    println!(
        "naive: database {} ready in {:.1}s; measuring…",
        naive.database.name,
        started.elapsed().as_secs_f64()
    );
    let workload = Arc::new(NaiveWorkload {
        scenario,
        names: names.clone(),
        accounts,
        pool: naive.pool.clone(),
    });
    let callers = workload.callers(args.callers);
    let (result, mut callers) = load::drive(workload, callers, pace(args)).await?;
    naive.release_open(&mut callers, names).await?;
    let check = naive.check(&callers, names).await?;
    naive.pool.close();
    let Naive { database, .. } = naive;
    database.drop_now().await?;
    let figures = SystemFigures::new(
        format!("naive (pg, pool {})", args.naive_pool),
        calls_per_op,
        &result,
    );
    Ok((figures, check))
}

async fn echo_phase(
    scenario: Scenario,
    args: &BenchArgs,
    names: &Names,
    accounts: usize,
    calls_per_op: u32,
) -> anyhow::Result<SystemFigures> {
    let server = EchoServer::spawn().await?;
    println!("echo: serving at {}; measuring…", server.addr);
    let channels = tally::connect(server.addr, args.connections).await?;
    let workload = Arc::new(EchoWorkload {
        scenario,
        names: names.clone(),
        accounts,
        timeout: args.timeout,
    });
    let callers = workload.callers(&channels, args.callers);
    let (result, _) = load::drive(workload, callers, pace(args)).await?;
    drop(channels);
    drop(server);
    Ok(
        SystemFigures::new("echo (bare tonic)", calls_per_op, &result)
            .with_records_per_op(scenario.records_per_call()),
    )
}
