//! The command line: a scenario and how hard, how long and against what to
//! drive it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The admin URL the bench creates its databases from when none is given.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Parser)]
#[command(
    name = "tally-bench",
    version,
    about = "Drives tallyd over real gRPC and compares it with baselines measured in the same run",
    long_about = "Drives tallyd over real gRPC: N callers on M connections, closed loop or open \
                  loop at a fixed rate, for a bounded time. Every Tally figure is printed as a \
                  ratio to two baselines measured in the same invocation: `naive` (one \
                  PostgreSQL transaction per debit) and `echo` (a bare tonic unary server). \
                  See docs/benchmarks.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Debit one account from every caller: the single-account hot path.
    Hot(BenchArgs),
    /// Debit accounts spread over --accounts (10,000 by default).
    Spread(BenchArgs),
    /// Reserve then commit on one account (--accounts to spread); one op is the pair.
    ReserveCommit(BenchArgs),
    /// Reserve, commit, release, quote and get-balance in a fixed mix.
    Mixed(BenchArgs),
    /// ReportUsage calls of 500 records each, spread over --accounts (10,000
    /// by default; --accounts 1 for one hot account). Figures in records/s.
    Report(BenchArgs),
    /// GetBalance spread over --accounts (10,000 by default), asking no
    /// freshness, as a dashboard reads. Nothing is charged.
    Balance(BenchArgs),
    /// Cross-replica notification latency: two tallyd on one PostgreSQL
    /// database, one WatchAccount stream per account (--accounts, 100 by
    /// default) on one, Debits at --rate (200/s by default) on the other;
    /// from each Debit's answer to the watch message carrying its entry.
    /// No baselines.
    Watch(WatchArgs),
    /// Resident memory of tallyd per cached account.
    Memory(MemoryArgs),
    /// Drop the databases that runs killed before their end (SIGKILL) left
    /// behind: tally_bench_* databases whose process is gone from this
    /// machine and that no session is connected to. Prints each one dropped.
    DropStale {
        /// PostgreSQL admin URL the runs created their databases through.
        #[arg(long, env = "TALLY_BENCH_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
    },
    /// Serve the echo baseline: a bare tonic unary server (used by the bench itself).
    EchoServer {
        /// Address to listen on; port 0 picks a free one, printed on stdout.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// Which store a spawned tallyd runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded SQLite store, in a temporary data dir.
    Sqlite,
    /// A fresh PostgreSQL database, migrated with `tallyd migrate`.
    Postgres,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// Where the server under test comes from.
#[derive(Clone, Debug, Args)]
pub struct Target {
    /// Store of the spawned tallyd [default: sqlite; watch runs on
    /// postgres only].
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,

    /// PostgreSQL admin URL. The bench creates and drops its own databases
    /// (tally_bench_<pid>_*) through it, for tallyd and for the naive baseline.
    #[arg(long, env = "TALLY_BENCH_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// The tallyd binary to spawn (default: `tallyd` beside this executable).
    #[arg(long)]
    pub tallyd: Option<PathBuf>,

    /// Drive an already-running tallyd at this address instead of spawning one.
    /// Its rate card must price `bench.op` for the mixed scenario's quotes.
    #[arg(long)]
    pub connect: Option<SocketAddr>,

    /// Show the spawned tallyd's own log lines (warnings and errors are always shown).
    #[arg(long)]
    pub server_log: bool,
}

#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    pub callers: usize,

    /// gRPC connections (HTTP/2); callers are assigned round-robin.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,

    /// How long to measure, after the warm-up (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before measuring starts, not counted (same units as --duration).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Open loop at this many ops per second (spread over the callers);
    /// without it, closed loop: each caller sends when its previous call
    /// answers (watch is always open loop, at 200/s without it).
    #[arg(long)]
    pub rate: Option<f64>,

    /// Accounts to spread over (spread, balance: 10,000; reserve-commit: 1;
    /// mixed: 100; watch: 100, one watch stream each).
    #[arg(long)]
    pub accounts: Option<usize>,

    /// Pre-fill the store with about this many events before measuring.
    #[arg(long, default_value_t = 0)]
    pub history: u64,

    /// Accounts the history is spread over. Few enough that several
    /// callers meet on each account: tallyd commits one account's queued
    /// commands in one transaction, so this is what makes a 1M pre-fill fast.
    #[arg(long, default_value_t = 100)]
    pub history_accounts: usize,

    /// Concurrent callers writing the history.
    #[arg(long, default_value_t = 256)]
    pub history_callers: usize,

    /// Put the history on the measured accounts themselves (reserve and
    /// commit pairs), so a hot account carries a long stream.
    #[arg(long)]
    pub history_on_hot: bool,

    /// Baselines to measure in the same run: naive, echo, both, or none.
    #[arg(long, default_value = "naive,echo", value_parser = parse_baselines)]
    pub baseline: Baselines,

    /// Connections of the naive baseline's PostgreSQL pool.
    #[arg(long, default_value_t = 16)]
    pub naive_pool: usize,

    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write a latency-percentile plot (SVG) to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Per-call deadline; a call past it counts as DEADLINE_EXCEEDED.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub target: Target,
}

impl Target {
    /// The store of a spawned tallyd: sqlite unless --store says otherwise.
    pub fn store(&self) -> StoreKind {
        self.store.unwrap_or(StoreKind::Sqlite)
    }
}

/// The watch measurement: the common flags (--accounts is the number of
/// watched accounts, --rate the Debits per second on replica A, --connect
/// replica A) and what only it needs.
#[derive(Clone, Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub bench: BenchArgs,

    /// Watch on an already-running tallyd at this address (replica B)
    /// while --connect (replica A) takes the Debits; both must share one
    /// PostgreSQL database. Give both or neither.
    #[arg(long)]
    pub connect_watch: Option<SocketAddr>,

    /// After the last Debit, how long to wait for the watch messages still
    /// on their way; what has not arrived by then counts as missing.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,
}

#[derive(Clone, Debug, Args)]
pub struct MemoryArgs {
    /// Cumulative account counts to measure at, comma-separated.
    #[arg(long, default_value = "10000,50000", value_delimiter = ',')]
    pub steps: Vec<usize>,

    /// Open the accounts on a plan with a monthly allowance (its terms and
    /// the allowance's bucket are part of every cached account), instead
    /// of pay-as-you-go with a promotional grant.
    #[arg(long)]
    pub plan: bool,

    /// Concurrent callers while touching accounts.
    #[arg(long, default_value_t = 64)]
    pub callers: usize,

    /// gRPC connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,

    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    #[command(flatten)]
    pub target: Target,
}

/// The baselines a run measures besides Tally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Baselines {
    pub naive: bool,
    pub echo: bool,
}

fn parse_baselines(text: &str) -> anyhow::Result<Baselines> {
    let mut baselines = Baselines::default();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "naive" => baselines.naive = true,
            "echo" => baselines.echo = true,
            "both" | "all" => {
                baselines.naive = true;
                baselines.echo = true;
            }
            "none" => {}
            other => bail!("unknown baseline `{other}` (naive, echo, both or none)"),
        }
    }
    Ok(baselines)
}

/// `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 10s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        other => bail!("unknown unit `{other}` in `{text}` (ms, s, m or h)"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("`{text}` is not a duration");
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl BenchArgs {
    /// Refuses settings that would make the figures meaningless.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.callers == 0 || self.connections == 0 {
            bail!("--callers and --connections must be more than zero");
        }
        if self.duration.is_zero() {
            bail!("--duration must be more than zero");
        }
        if let Some(rate) = self.rate
            && (!rate.is_finite() || rate <= 0.0)
        {
            bail!("--rate must be a positive number of ops per second");
        }
        if self.accounts == Some(0) || self.history_accounts == 0 || self.history_callers == 0 {
            bail!("--accounts, --history-accounts and --history-callers must be more than zero");
        }
        if self.naive_pool == 0 {
            bail!("--naive-pool must be more than zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn baselines() {
        let both = Baselines {
            naive: true,
            echo: true,
        };
        assert_eq!(parse_baselines("naive,echo").unwrap(), both);
        assert_eq!(parse_baselines("both").unwrap(), both);
        assert_eq!(parse_baselines("none").unwrap(), Baselines::default());
        assert_eq!(
            parse_baselines("echo").unwrap(),
            Baselines {
                naive: false,
                echo: true
            }
        );
        assert!(parse_baselines("fast").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
