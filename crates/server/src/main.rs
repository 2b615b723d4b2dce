//! tallyd: parse the configuration, set up logging, serve until a signal.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tally_core::SystemClock;
use tally_server::Config;
use tally_server::config::{Cli, Command, LogFormat};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let Cli { command, config } = Cli::parse();
    if let Err(e) = config.validate() {
        eprintln!("tallyd: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tallyd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(run(config)),
        Command::Migrate => runtime.block_on(tally_server::migrate(&config)),
        Command::Rebuild { projection } => runtime.block_on(tally_server::rebuild_projections(
            &config,
            projection.as_deref(),
        )),
        Command::Verify { projection } => {
            match runtime.block_on(tally_server::verify_projections(
                &config,
                projection.as_deref(),
            )) {
                Ok(true) => Ok(()),
                // Differences were printed; the exit code says so to scripts.
                Ok(false) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "tallyd failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    info!(config = ?config.redacted(), "effective configuration");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let mut server = tally_server::start(config, Arc::new(SystemClock)).await?;
    info!(addr = %server.addr, "tallyd listening");

    tokio::select! {
        _ = shutdown_signal() => {}
        stopped = server.stopped() => return stopped,
    }
    info!("shutting down: finishing in-flight calls (a second signal exits at once)");
    tokio::spawn(async {
        shutdown_signal().await;
        warn!("second signal: exiting now");
        std::process::exit(130);
    });
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
