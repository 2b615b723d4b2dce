//! tallyd's configuration: defaults, then `TALLY_*` environment, then
//! flags (clap reads both), then `validate()`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Clone, Debug, Parser)]
#[command(
    name = "tallyd",
    version,
    about = "Tally: meters AI actions against credit balances over gRPC"
)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Folder of the embedded store (one SQLite file inside).
    #[arg(long, env = "TALLY_DATA_DIR", default_value = "./tally-data")]
    pub data_dir: PathBuf,

    /// Rate card file (TOML). Without one every action is unknown and
    /// callers give amounts themselves.
    #[arg(long, env = "TALLY_RATE_CARD")]
    pub rate_card: Option<PathBuf>,

    /// How long a hold lives when Reserve names no TTL, in seconds.
    #[arg(long, env = "TALLY_DEFAULT_HOLD_TTL_SECS", default_value_t = 300)]
    pub default_hold_ttl_secs: u64,

    /// The longest TTL Reserve or Extend may ask for, in seconds.
    #[arg(long, env = "TALLY_MAX_HOLD_TTL_SECS", default_value_t = 86_400)]
    pub max_hold_ttl_secs: u64,

    /// How long in-flight calls may take to finish after a shutdown
    /// signal, in seconds. A second signal exits at once.
    #[arg(long, env = "TALLY_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Log format.
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "TALLY_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_hold_ttl_secs == 0 {
            return Err("default-hold-ttl-secs must be more than zero".into());
        }
        if self.max_hold_ttl_secs < self.default_hold_ttl_secs {
            return Err("max-hold-ttl-secs must be at least default-hold-ttl-secs".into());
        }
        Ok(())
    }

    pub fn default_hold_ttl(&self) -> Duration {
        Duration::from_secs(self.default_hold_ttl_secs)
    }

    pub fn max_hold_ttl(&self) -> Duration {
        Duration::from_secs(self.max_hold_ttl_secs)
    }

    /// A configuration for tests: an ephemeral port and the given data dir.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut config = Config::parse_from(["tallyd"]);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.data_dir = data_dir;
        config
    }
}
