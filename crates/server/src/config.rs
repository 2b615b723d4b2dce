//! tallyd's configuration: defaults, then `TALLY_*` environment, then
//! flags (clap reads both), then `validate()`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tally_engine::EngineConfig;
use tally_store::postgres::PostgresOptions;

/// The command line: a subcommand (serve by default) and the settings.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "tallyd",
    version,
    about = "Tally: meters AI actions against credit balances over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply the PostgreSQL schema migrations, then exit.
    Migrate,
    /// Empty the projections and fold the whole log into them again, with
    /// a progress bar. If a running tallyd holds a projection, it is reset
    /// and that tallyd rebuilds it; this command follows its progress.
    Rebuild {
        /// Only this projection (balances, ledger or usage).
        #[arg(long)]
        projection: Option<String>,
    },
    /// Ask the tallyd at --health-listen (else --listen, plaintext only)
    /// whether it is serving (gRPC health check): exit 0 if SERVING, 1 if
    /// not, 2 if it cannot be reached. For Docker's HEALTHCHECK in images
    /// without a shell.
    Health {
        /// The service to check (e.g. tally.v1.AccountService); the whole
        /// server by default.
        #[arg(long, default_value = "")]
        service: String,
        /// How long to wait for an answer, in seconds.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Mint an API key: prints the secret once (give it to the caller) and
    /// the entry to add to the key file (which stores only its SHA-256).
    Keygen {
        /// The key's name in logs and metrics, e.g. the calling service.
        #[arg(long)]
        id: String,
        /// meter, read or admin; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// An account the key may touch (`tenant-7/*` for a prefix);
        /// repeat for several. Without any: every account.
        #[arg(long = "account")]
        accounts: Vec<String>,
    },
    /// Rebuild the projections into a scratch copy up to their live
    /// checkpoints and compare every row; exits non-zero on any difference.
    Verify {
        /// Only this projection (balances, ledger or usage).
        #[arg(long)]
        projection: Option<String>,
    },
}

#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(
        long,
        global = true,
        env = "TALLY_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// Folder of the embedded store (one SQLite file inside).
    #[arg(
        long,
        global = true,
        env = "TALLY_DATA_DIR",
        default_value = "./tally-data"
    )]
    pub data_dir: PathBuf,

    /// PostgreSQL connection URL. Without one, the embedded store in
    /// --data-dir is used.
    #[arg(long, global = true, env = "TALLY_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Rate card file (TOML). Published at start when its version is above
    /// the store's; otherwise the store's newest card (published over gRPC
    /// by CatalogService) stays current.
    #[arg(long, global = true, env = "TALLY_RATE_CARD")]
    pub rate_card: Option<PathBuf>,

    /// Plan catalogue file (TOML), published at start on the same terms as
    /// the rate card.
    #[arg(long, global = true, env = "TALLY_PLANS")]
    pub plans: Option<PathBuf>,

    /// How long a hold lives when Reserve names no TTL, in seconds.
    #[arg(
        long,
        global = true,
        env = "TALLY_DEFAULT_HOLD_TTL_SECS",
        default_value_t = 300
    )]
    pub default_hold_ttl_secs: u64,

    /// The longest TTL Reserve or Extend may ask for, in seconds.
    #[arg(
        long,
        global = true,
        env = "TALLY_MAX_HOLD_TTL_SECS",
        default_value_t = 86_400
    )]
    pub max_hold_ttl_secs: u64,

    /// How long in-flight calls may take to finish after a shutdown
    /// signal, in seconds. A second signal exits at once.
    #[arg(
        long,
        global = true,
        env = "TALLY_SHUTDOWN_GRACE_SECS",
        default_value_t = 30
    )]
    pub shutdown_grace_secs: u64,

    /// On SIGTERM/SIGINT, how long to keep serving with health NOT_SERVING
    /// before stopping to take calls, in seconds: time for load balancers
    /// and Kubernetes endpoints to stop sending calls here (instead of a
    /// `preStop` sleep). 0 stops taking calls at once.
    #[arg(
        long,
        global = true,
        env = "TALLY_SHUTDOWN_DELAY_SECS",
        default_value_t = 0
    )]
    pub shutdown_delay_secs: u64,

    /// AccountService (reads) reports NOT_SERVING while a projection lags
    /// the log by more than this, in seconds.
    #[arg(
        long,
        global = true,
        env = "TALLY_MAX_PROJECTION_LAG_SECS",
        default_value_t = 30
    )]
    pub max_projection_lag_secs: u64,

    /// Appends wait while the projections, having caught up, fall more than
    /// this many events behind the log and are still advancing, so that
    /// sustained writes go at the pace the projections keep instead of
    /// leaving reads ever staler. Each group-commit transaction waits at
    /// most a second; a rebuild or a stalled runner holds nothing back. 0:
    /// never hold appends back.
    #[arg(
        long,
        global = true,
        env = "TALLY_MAX_PROJECTION_BACKLOG",
        default_value_t = 10_000
    )]
    pub max_projection_backlog: u64,

    /// Most connections to PostgreSQL at once.
    #[arg(
        long,
        global = true,
        env = "TALLY_PG_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub pg_max_connections: usize,

    /// Longest wait to open a PostgreSQL connection, in seconds (unless the
    /// URL sets connect_timeout).
    #[arg(
        long,
        global = true,
        env = "TALLY_PG_CONNECT_TIMEOUT_SECS",
        default_value_t = 5
    )]
    pub pg_connect_timeout_secs: u64,

    /// Longest wait for a free pooled connection, in seconds.
    #[arg(
        long,
        global = true,
        env = "TALLY_PG_ACQUIRE_TIMEOUT_SECS",
        default_value_t = 5
    )]
    pub pg_acquire_timeout_secs: u64,

    /// PostgreSQL's statement_timeout for tallyd's sessions, in seconds: a
    /// statement running longer is cancelled and its call answers
    /// UNAVAILABLE. 0: the server's own setting. `tallyd migrate` lifts it
    /// for its transaction, which may wait on locks and rewrite tables.
    #[arg(
        long,
        global = true,
        env = "TALLY_PG_STATEMENT_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub pg_statement_timeout_secs: u64,

    /// CA certificates (PEM) that PostgreSQL's certificate must lead to,
    /// for `sslmode=verify-ca` or `verify-full` in the URL (the URL's
    /// `sslrootcert` takes precedence). With `require` or `prefer` it makes
    /// them check the chain too, as libpq does.
    #[arg(long, global = true, env = "TALLY_PG_CA_FILE")]
    pub pg_ca_file: Option<PathBuf>,

    /// Group-commit transactions in flight at once, each carrying the
    /// appends of many accounts. Default: 4 on PostgreSQL, 1 on the
    /// embedded store (SQLite has one writer).
    #[arg(long, global = true, env = "TALLY_COMMIT_CONCURRENCY")]
    pub commit_concurrency: Option<usize>,

    /// Idle accounts kept in the engine's own cache, least recently used
    /// evicted first; an evicted account is reloaded from its snapshot and
    /// the tail of its stream when next used. On the replica that runs the
    /// projections, an idle account their fold holds at the same version
    /// is left there instead (see --max-folded-accounts), not cached twice.
    #[arg(
        long,
        global = true,
        env = "TALLY_MAX_CACHED_ACCOUNTS",
        default_value_t = 100_000
    )]
    pub max_cached_accounts: usize,

    /// Accounts whose folded state the projections keep in memory between
    /// batches, on the replica that runs them; past it a quarter of them
    /// are dropped, those not folded lately first (each is saved with its
    /// batch), and read back from the store when next folded. The engine leaves idle accounts here rather
    /// than in its own cache, so this is also how many idle accounts that
    /// replica holds in memory. Each costs about 1 KB.
    #[arg(
        long,
        global = true,
        env = "TALLY_MAX_FOLDED_ACCOUNTS",
        default_value_t = 100_000
    )]
    pub max_folded_accounts: usize,

    /// How long a caught-up projection lets new events gather before its
    /// next commit, in milliseconds (a read that asks for freshness does
    /// not wait for it). Longer: fewer, larger projection transactions;
    /// shorter: reads that ask for no freshness are staler by less.
    #[arg(
        long,
        global = true,
        env = "TALLY_PROJECTION_COMMIT_INTERVAL_MS",
        default_value_t = 20
    )]
    pub projection_commit_interval_ms: u64,

    /// Calls in flight at once (health checks and WatchAccount streams
    /// aside); past it a call is refused at once with RESOURCE_EXHAUSTED
    /// (`SERVER_OVERLOADED`) and a retry hint, rather than queued.
    #[arg(
        long,
        global = true,
        env = "TALLY_MAX_CONCURRENT_CALLS",
        default_value_t = 4_096
    )]
    pub max_concurrent_calls: usize,

    /// API key file (TOML; see docs/security.md). With one, every call but
    /// health checks needs `authorization: Bearer <key>` with the scope the
    /// call needs; the file is read again on SIGHUP and when it changes.
    /// Without one, anyone who reaches the port may do anything: keep the
    /// default loopback address.
    #[arg(long, global = true, env = "TALLY_API_KEYS")]
    pub api_keys: Option<PathBuf>,

    /// The listener's TLS certificate chain (PEM, leaf first). With
    /// --tls-key, tallyd serves TLS only; without, plaintext. Read again on
    /// SIGHUP and when the files change.
    #[arg(long, global = true, env = "TALLY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, env = "TALLY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: every client must present a certificate issued by a CA
    /// in this file (PEM). Needs --tls-cert.
    #[arg(
        long,
        global = true,
        env = "TALLY_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// A second, plaintext address serving only grpc.health.v1, for probes
    /// that cannot speak TLS or present a client certificate (the kubelet's
    /// gRPC probes).
    #[arg(long, global = true, env = "TALLY_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Serve gRPC reflection to callers without a key (grpcurl can then
    /// list the API without one; calls still need a key).
    #[arg(long, global = true, env = "TALLY_OPEN_REFLECTION")]
    pub open_reflection: bool,

    /// Whether test clocks (TestClockService, and OpenAccount on a clock)
    /// are allowed. Production deployments refuse them, so no account
    /// there can live on a time an admin moves by hand; accounts already
    /// on a clock keep working.
    #[arg(long, global = true, env = "TALLY_TEST_CLOCKS", value_enum, default_value_t = TestClocks::Allow)]
    pub test_clocks: TestClocks,

    /// Log format.
    #[arg(long, global = true, env = "TALLY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, global = true, env = "TALLY_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TestClocks {
    Allow,
    Refuse,
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
        if self.pg_max_connections == 0 {
            return Err("pg-max-connections must be at least 1".into());
        }
        if self.pg_connect_timeout_secs == 0 || self.pg_acquire_timeout_secs == 0 {
            return Err(
                "pg-connect-timeout-secs and pg-acquire-timeout-secs must be more than zero".into(),
            );
        }
        if self.commit_concurrency == Some(0) {
            return Err("commit-concurrency must be at least 1".into());
        }
        if self.max_concurrent_calls == 0 {
            return Err("max-concurrent-calls must be at least 1".into());
        }
        if self.max_cached_accounts == 0 {
            return Err("max-cached-accounts must be at least 1".into());
        }
        if self.max_folded_accounts == 0 {
            return Err("max-folded-accounts must be at least 1".into());
        }
        // clap checks the flags; these also cover settings made in code.
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls-cert and tls-key go together".into());
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("tls-client-ca needs tls-cert and tls-key".into());
        }
        if self
            .health_listen
            .is_some_and(|health| health == self.listen && health.port() != 0)
        {
            return Err("health-listen must differ from listen".into());
        }
        Ok(())
    }

    pub fn default_hold_ttl(&self) -> Duration {
        Duration::from_secs(self.default_hold_ttl_secs)
    }

    pub fn max_projection_lag(&self) -> Duration {
        Duration::from_secs(self.max_projection_lag_secs)
    }

    pub fn projection_commit_interval(&self) -> Duration {
        Duration::from_millis(self.projection_commit_interval_ms)
    }

    pub fn max_hold_ttl(&self) -> Duration {
        Duration::from_secs(self.max_hold_ttl_secs)
    }

    /// The listener's TLS files, when it serves TLS.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The PostgreSQL pool's settings.
    pub fn postgres_options(&self) -> PostgresOptions {
        PostgresOptions {
            max_connections: self.pg_max_connections,
            connect_timeout: Duration::from_secs(self.pg_connect_timeout_secs),
            acquire_timeout: Duration::from_secs(self.pg_acquire_timeout_secs),
            statement_timeout: (self.pg_statement_timeout_secs > 0)
                .then(|| Duration::from_secs(self.pg_statement_timeout_secs)),
            ca_file: self.pg_ca_file.clone(),
            ..PostgresOptions::default()
        }
    }

    /// The engine's settings for a store whose `db.system.name` is
    /// `system` (`sqlite` serialises writers, so one transaction at a time
    /// batches best there).
    pub fn engine_config(&self, system: &str) -> EngineConfig {
        let default_concurrency = if system == "sqlite" { 1 } else { 4 };
        EngineConfig {
            commit_concurrency: self.commit_concurrency.unwrap_or(default_concurrency),
            max_cached_accounts: self.max_cached_accounts,
            test_clocks_allowed: self.test_clocks == TestClocks::Allow,
            ..EngineConfig::default()
        }
    }

    /// The configuration as it may be logged: the database URL as the
    /// settings tallyd reads from it, without the password (see
    /// [`tally_store::postgres::loggable_connection_string`]), or only why it
    /// does not parse.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        shown.database_url = self.database_url.as_deref().map(|url| {
            tally_store::postgres::loggable_connection_string(url)
                .unwrap_or_else(|e| format!("(not shown: {e})"))
        });
        shown
    }

    /// A configuration for tests: an ephemeral port and the given data dir.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut config = Cli::parse_from(["tallyd"]).config;
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.data_dir = data_dir;
        config
    }
}

/// An endpoint URL (a collector's) as it may be logged: its scheme, host,
/// port and path, without user info or query, where credentials go.
pub fn loggable_endpoint(url: &str) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return "(not shown: not a URL)".to_owned();
    };
    let scheme = uri
        .scheme_str()
        .map(|s| format!("{s}://"))
        .unwrap_or_default();
    let host = uri.host().unwrap_or_default();
    let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}{host}{port}{}", uri.path())
}

#[cfg(test)]
mod tests {
    use super::{Cli, loggable_endpoint};
    use clap::Parser;
    use std::time::Duration;

    #[test]
    fn the_projection_backlog_that_holds_appends_back_is_a_flag() {
        let default = Cli::parse_from(["tallyd"]).config;
        assert_eq!(default.max_projection_backlog, 10_000);
        let off = Cli::parse_from(["tallyd", "serve", "--max-projection-backlog", "0"]).config;
        assert_eq!(off.max_projection_backlog, 0);
    }

    #[test]
    fn both_caches_of_accounts_in_memory_are_capped_by_flags() {
        let default = Cli::parse_from(["tallyd"]).config;
        assert_eq!(
            (default.max_cached_accounts, default.max_folded_accounts),
            (100_000, 100_000)
        );
        let set = Cli::parse_from([
            "tallyd",
            "serve",
            "--max-cached-accounts",
            "2000",
            "--max-folded-accounts",
            "1000",
        ])
        .config;
        assert_eq!(
            (set.max_cached_accounts, set.max_folded_accounts),
            (2000, 1000)
        );
        assert_eq!(set.engine_config("postgres").max_cached_accounts, 2000);
        let none = Cli::parse_from(["tallyd", "serve", "--max-folded-accounts", "0"]).config;
        assert!(none.validate().unwrap_err().contains("max-folded-accounts"));
    }

    #[test]
    fn the_projection_commit_interval_is_a_flag_in_milliseconds() {
        let default = Cli::parse_from(["tallyd"]).config;
        assert_eq!(
            default.projection_commit_interval(),
            Duration::from_millis(20)
        );
        let set =
            Cli::parse_from(["tallyd", "serve", "--projection-commit-interval-ms", "250"]).config;
        assert_eq!(set.projection_commit_interval(), Duration::from_millis(250));
    }

    #[test]
    fn postgres_sessions_get_a_statement_timeout_and_a_ca() {
        let default = Cli::parse_from(["tallyd"]).config.postgres_options();
        assert_eq!(default.statement_timeout, Some(Duration::from_secs(30)));
        assert_eq!(default.ca_file, None);
        let set = Cli::parse_from([
            "tallyd",
            "migrate",
            "--pg-statement-timeout-secs",
            "0",
            "--pg-ca-file",
            "/etc/tally/pg-ca.pem",
        ])
        .config
        .postgres_options();
        assert_eq!(set.statement_timeout, None);
        assert_eq!(set.ca_file, Some("/etc/tally/pg-ca.pem".into()));
    }

    #[test]
    fn tls_flags_go_together() {
        assert!(Cli::try_parse_from(["tallyd", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["tallyd", "--tls-key", "k.pem"]).is_err());
        assert!(Cli::try_parse_from(["tallyd", "--tls-client-ca", "ca.pem"]).is_err());
        let plain = Cli::parse_from(["tallyd"]).config;
        assert!(plain.tls_files().is_none());
        let mutual = Cli::parse_from([
            "tallyd",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ])
        .config;
        let files = mutual.tls_files().expect("TLS files");
        assert_eq!(files.cert, std::path::Path::new("c.pem"));
        assert_eq!(files.key, std::path::Path::new("k.pem"));
        assert_eq!(
            files.client_ca.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert!(mutual.validate().is_ok());
        let mut half = plain.clone();
        half.tls_cert = Some("c.pem".into());
        assert!(half.validate().is_err());
    }

    /// The line tallyd logs at start, for `url`.
    fn logged(url: &str) -> String {
        let mut config = Cli::parse_from(["tallyd"]).config;
        config.database_url = Some(url.to_owned());
        format!("{:?}", config.redacted())
    }

    #[test]
    fn passwords_never_reach_the_log() {
        for (url, secret, shown) in [
            (
                "postgres://tally:s3cr:et@db:5432/tally",
                "s3cr",
                "host=db port=5432 user=tally password=*** dbname=tally sslmode=prefer",
            ),
            (
                "postgres://tally:p%40ss@db/tally",
                "p@ss",
                "host=db port=5432 user=tally password=*** dbname=tally",
            ),
            (
                "postgres://tally@db/tally?password=s3cret&application_name=x",
                "s3cret",
                "user=tally password=*** dbname=tally application_name=x",
            ),
            (
                "postgresql://tally@db/tally?sslmode=verify-full&password=s3cret&sslrootcert=/tls/ca.pem",
                "s3cret",
                "password=*** dbname=tally sslmode=verify-full sslrootcert=/tls/ca.pem",
            ),
            (
                "host=db user=tally password='a b' dbname=tally",
                "a b",
                "host=db user=tally password=*** dbname=tally",
            ),
            (
                "host=db user=tally password = s3cret dbname=tally",
                "s3cret",
                "host=db user=tally password=*** dbname=tally",
            ),
            (
                "host=db password='it\\'s s3cret' user=tally",
                "s3cret",
                "host=db user=tally password=***",
            ),
            (
                "host=db user=tally PASSWORD=s3cret",
                "s3cret",
                "(not shown: ",
            ),
            (
                "host=db user=tally password=my s3cret words",
                "s3cret",
                "(not shown: ",
            ),
            (
                "postgres://tally@db/tally?password=s3cr%zzet",
                "s3cr",
                "(not shown: ",
            ),
        ] {
            let line = logged(url);
            assert!(!line.contains(secret), "{url} -> {line}");
            assert!(line.contains(shown), "{url} -> {line}");
        }
        let without = logged("postgres://tally@db/tally");
        assert!(!without.contains("password"), "{without}");
        assert!(without.contains("host=db port=5432 user=tally dbname=tally"));
    }

    #[test]
    fn endpoints_are_logged_without_credentials() {
        assert_eq!(
            loggable_endpoint("https://user:s3cret@collector:4317/v1/traces?token=abc"),
            "https://collector:4317/v1/traces"
        );
        assert_eq!(
            loggable_endpoint("http://otel-collector:4317"),
            "http://otel-collector:4317/"
        );
        assert!(!loggable_endpoint("not a url with s3cret").contains("s3cret"));
    }
}
