//! tally-bench: drives tallyd over real gRPC, N callers on M connections,
//! closed or open loop, and reports every figure beside two baselines
//! measured in the same run. See docs/benchmarks.md.
//!
//! Exit codes: 0 when the run finished and the balances are exact, 1 when
//! the balance check failed, 2 when the run could not be made.

mod check;
mod cli;
mod echo;
mod lag;
mod load;
mod memory;
mod naive;
mod pg;
mod plot;
mod report;
mod run;
mod scenario;
mod settle;
mod spawn;
mod tally;
mod watch;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use crate::cli::{BenchArgs, Cli, Command};
use crate::report::RunReport;
use crate::scenario::Scenario;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tally-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // Ctrl-C or SIGTERM (`timeout`, a CI job's end) drops the run: the
    // spawned processes are killed and the databases dropped by their
    // handles' Drop, instead of left behind.
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = dispatch(cli.command) => outcome,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tally-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The first of Ctrl-C and SIGTERM, by name.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
                _ = terminate.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// Runs the command; `Ok(false)` means a balance check failed.
async fn dispatch(command: Command) -> anyhow::Result<bool> {
    let (scenario, args) = match command {
        Command::EchoServer { listen } => {
            echo::serve(listen).await?;
            return Ok(true);
        }
        Command::DropStale { database_url } => {
            let stale = pg::drop_stale(&database_url).await?;
            for name in &stale.dropped {
                println!("dropped {name}");
            }
            for (name, sessions) in &stale.in_use {
                println!(
                    "left {name}: its run is gone but {sessions} session(s) are connected \
                     (its tallyd may still be running: stop it, then run this again)"
                );
            }
            println!("{} stale database(s) dropped", stale.dropped.len());
            return Ok(true);
        }
        Command::Memory(args) => {
            let json = args.json.clone();
            let report = memory::run(args).await?;
            if let Some(path) = json {
                write(&path, &serde_json::to_string_pretty(&report)?)?;
            }
            return Ok(true);
        }
        Command::Report(args) => (Scenario::Report, args),
        Command::Hot(args) => (Scenario::Hot, args),
        Command::Spread(args) => (Scenario::Spread, args),
        Command::ReserveCommit(args) => (Scenario::ReserveCommit, args),
        Command::Mixed(args) => (Scenario::Mixed, args),
        Command::Balance(args) => (Scenario::Balance, args),
        Command::Watch(args) => {
            let report = watch::run(args.clone()).await?;
            print!("{}", report.table());
            write_outputs(&report, &args.bench)?;
            // An entry that never reached the other replica is as wrong
            // as a balance that is off.
            let delivered = report.watch.as_ref().is_some_and(|w| w.missing == 0);
            return Ok(report.balances_exact && delivered);
        }
    };
    let report = run::run(scenario, args.clone()).await?;
    print!("{}", report.table());
    write_outputs(&report, &args)?;
    // A wrong balance outranks a missing baseline.
    if report.balances_exact && !report.baseline_errors.is_empty() {
        bail!(
            "baselines could not run: {}",
            report
                .baseline_errors
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(report.balances_exact)
}

fn write_outputs(report: &RunReport, args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        write(path, &serde_json::to_string_pretty(report)?)?;
        println!("JSON written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        let systems = report.systems();
        let mut series: Vec<(&str, &hdrhistogram::Histogram<u64>)> = systems
            .iter()
            .map(|s| (s.system.as_str(), &s.histogram))
            .collect();
        if let Some(watch) = &report.watch {
            series.push(("watch on B (A answer→B)", &watch.histogram));
        }
        let title = format!(
            "{} on {}: latency by percentile ({} callers, {} loop)",
            report.scenario, report.store, report.callers, report.mode
        );
        write(path, &plot::svg(&title, &series))?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}

fn write(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
