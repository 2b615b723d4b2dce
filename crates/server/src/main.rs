//! tallyd: parse the configuration, set up logging, serve until a signal.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tally_core::SystemClock;
use tally_server::config::{Cli, Command, LogFormat, loggable_endpoint};
use tally_server::{Config, Verdict};
use tally_telemetry::TelemetryConfig;
use tracing::{error, info, warn};

/// Every request allocates and frees many small buffers on two worker
/// threads; glibc's allocator spent about a fifth of tallyd's CPU on it
/// under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let Cli { command, config } = Cli::parse();
    if let Some(Command::Keygen {
        id,
        scopes,
        accounts,
    }) = &command
    {
        return keygen(id, scopes, accounts);
    }
    if let Err(e) = config.validate() {
        eprintln!("tallyd: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tallyd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry_config =
        TelemetryConfig::from_env(config.log_format == LogFormat::Json, config.log.clone());
    // The exporters' connections live on the runtime.
    let telemetry = match runtime.block_on(async { tally_telemetry::init(&telemetry_config) }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("tallyd: cannot set up telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        traces_endpoint = telemetry_config
            .traces_endpoint
            .as_deref()
            .map(loggable_endpoint),
        metrics_endpoint = telemetry_config
            .metrics_endpoint
            .as_deref()
            .map(loggable_endpoint),
        "telemetry"
    );
    let command = command.unwrap_or(Command::Serve);
    if let Command::Health {
        service,
        timeout_secs,
    } = &command
    {
        // Quiet: a probe's output is its exit code.
        return runtime.block_on(health(&config, service, *timeout_secs));
    }
    // Like diff: 1 means differences found, 2 that verify could not tell;
    // and 3 that the log itself is out of order (docs/operations.md).
    let verifying = matches!(command, Command::Verify { .. });
    let mut verdict = Verdict::Clean;
    let result = match command {
        Command::Keygen { .. } | Command::Health { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Serve => runtime.block_on(run(config)),
        Command::Migrate => runtime.block_on(tally_server::migrate(&config)),
        Command::Rebuild { projection } => runtime.block_on(tally_server::rebuild_projections(
            &config,
            projection.as_deref(),
        )),
        Command::Verify { projection } => {
            // Findings were printed; the exit code says so to scripts.
            runtime
                .block_on(tally_server::verify_projections(
                    &config,
                    projection.as_deref(),
                ))
                .map(|found| verdict = found)
        }
    };
    if let Err(e) = &result {
        error!(error = format!("{e:#}"), "tallyd failed");
    }
    // The last spans and metrics, unless the collector is unreachable.
    runtime.block_on(telemetry.shutdown(TELEMETRY_FLUSH));
    match result {
        Ok(()) => match verdict {
            Verdict::Clean => ExitCode::SUCCESS,
            Verdict::ProjectionsDiffer | Verdict::SnapshotsDiffer => ExitCode::from(1),
            Verdict::LogOutOfOrder => ExitCode::from(3),
        },
        Err(_) if verifying => ExitCode::from(2),
        Err(_) => ExitCode::FAILURE,
    }
}

/// `tallyd keygen`: the secret on stdout's first line (for the caller),
/// then the key file entry; the secret is shown only here.
fn keygen(id: &str, scopes: &[String], accounts: &[String]) -> ExitCode {
    match tally_auth::new_key_entry(id, scopes, accounts) {
        Ok((secret, entry)) => {
            println!("{secret}");
            println!();
            println!("# Add to the key file (it keeps only the secret's SHA-256):");
            print!("{entry}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tallyd keygen: {e}");
            ExitCode::from(2)
        }
    }
}

/// `tallyd health`: 0 serving, 1 not serving, 2 unreachable.
async fn health(config: &Config, service: &str, timeout_secs: u64) -> ExitCode {
    use tonic_health::pb::health_check_response::ServingStatus;
    let timeout = Duration::from_secs(timeout_secs.max(1));
    match tally_server::check_health(config, service, timeout).await {
        Ok(status) if status == ServingStatus::Serving as i32 => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!(
                "tallyd health: {}",
                ServingStatus::try_from(status).map_or("unknown", |s| s.as_str_name())
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tallyd health: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The most exiting waits for telemetry to leave.
const TELEMETRY_FLUSH: Duration = Duration::from_secs(5);

async fn run(config: Config) -> anyhow::Result<()> {
    info!(config = ?config.redacted(), "effective configuration");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let delay = Duration::from_secs(config.shutdown_delay_secs);
    let mut server = tally_server::start(config, Arc::new(SystemClock)).await?;
    info!(
        addr = %server.addr,
        health_addr = server.health_addr.map(tracing::field::display),
        "tallyd listening"
    );

    tokio::select! {
        _ = shutdown_signal() => {}
        stopped = server.stopped() => return stopped,
    }
    tokio::spawn(async {
        shutdown_signal().await;
        warn!("second signal: exiting now");
        std::process::exit(130);
    });
    if delay > Duration::ZERO {
        info!(
            delay_secs = delay.as_secs(),
            "shutting down: health NOT_SERVING, still serving while endpoints drain (a second signal exits at once)"
        );
        server.drain().await;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            stopped = server.stopped() => return stopped,
        }
    }
    info!("shutting down: finishing in-flight calls (a second signal exits at once)");
    match tokio::time::timeout(grace, server.stop()).await {
        Ok(result) => result,
        Err(_) => {
            warn!(
                grace_secs = grace.as_secs(),
                "in-flight calls did not finish in time; exiting"
            );
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
