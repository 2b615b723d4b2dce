//! The processes a run starts: tallyd on a fresh store and the echo
//! server. Each is killed when its handle is dropped, so a failed run
//! leaves nothing behind.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::StoreKind;
use crate::pg::Database;

/// The rate card a spawned tallyd runs with: the mixed scenario quotes
/// `bench.op`. Every mutation names its amount, so nothing else needs a price.
pub const RATE_CARD: &str = r#"
version = 1

[actions."bench.op"]
price_millicredits = 1000
"#;

/// The plan catalogue the spawned tallyd publishes: one plan shaped like
/// the seed products' (a monthly allowance, the default alerts), for the
/// runs that open accounts on a plan (`memory --plan`).
pub const PLANS: &str = r#"
version = 1

[plans.bench]
monthly_allowance_millicredits = 2500000
spending_cap_millicredits = 2000000
"#;

/// The plan of [`PLANS`].
pub const PLAN: &str = "bench";

/// How long tallyd may take to listen and report SERVING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long tallyd gets to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines kept to explain a failed start.
const LOG_TAIL: usize = 30;

/// Warnings and errors tallyd logged while the bench ran.
#[derive(Debug, Default)]
pub struct LogCounts {
    pub warnings: AtomicU64,
    pub errors: AtomicU64,
}

/// A tallyd this run started, on a store of its own.
pub struct Tallyd {
    child: Child,
    pub addr: SocketAddr,
    pub store: StoreKind,
    pub logs: Arc<LogCounts>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// How its log lines are prefixed: `tallyd`, or `tallyd B` for a replica.
    label: &'static str,
    // Declared after the child: the data dir outlives the process using it.
    _data: TempDir,
    database: Option<Database>,
}

impl Tallyd {
    /// Starts `binary` on a free loopback port with an empty store (a temp
    /// data dir, or a new database migrated with `tallyd migrate`), and
    /// waits until its health says SERVING.
    pub async fn spawn(
        binary: &Path,
        store: StoreKind,
        admin_url: &str,
        show_log: bool,
    ) -> anyhow::Result<Tallyd> {
        if !binary.exists() {
            bail!(
                "no tallyd at {}: build it with `cargo build --release -p tally-server`, or pass --tallyd PATH or --connect ADDR",
                binary.display()
            );
        }
        let database = match store {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => {
                let database = Database::create(admin_url, "tallyd").await?;
                migrate(binary, &database.url).await?;
                Some(database)
            }
        };
        let url = database.as_ref().map(|d| d.url.clone());
        Self::start(binary, store, url, database, show_log, "tallyd").await
    }

    /// Another replica on the PostgreSQL database of `first`, which keeps
    /// owning (and drops) the database.
    pub async fn spawn_replica(
        binary: &Path,
        first: &Tallyd,
        show_log: bool,
    ) -> anyhow::Result<Tallyd> {
        let url = first
            .database
            .as_ref()
            .map(|d| d.url.clone())
            .context("a second replica needs PostgreSQL")?;
        Self::start(
            binary,
            StoreKind::Postgres,
            Some(url),
            None,
            show_log,
            "tallyd B",
        )
        .await
    }

    async fn start(
        binary: &Path,
        store: StoreKind,
        database_url: Option<String>,
        database: Option<Database>,
        show_log: bool,
        label: &'static str,
    ) -> anyhow::Result<Tallyd> {
        let data = tempfile::Builder::new().prefix("tally-bench-").tempdir()?;
        let rate_card = data.path().join("rate-card.toml");
        std::fs::write(&rate_card, RATE_CARD)?;
        let plans = data.path().join("plans.toml");
        std::fs::write(&plans, PLANS)?;
        let mut command = Command::new(binary);
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data.path())
            .arg("--rate-card")
            .arg(&rate_card)
            .arg("--plans")
            .arg(&plans)
            .arg("--log-format")
            .arg("json")
            .arg("--shutdown-grace-secs")
            .arg("5")
            // The bench's own environment must not redirect tallyd.
            .env_remove("TALLY_DATABASE_URL")
            .env_remove("TALLY_LISTEN")
            .env_remove("TALLY_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &database_url {
            command.arg("--database-url").arg(url);
        }
        if let Some(filter) = log_filter(std::env::var("TALLY_LOG").ok().as_deref()) {
            command.env("TALLY_LOG", filter);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let logs = Arc::new(LogCounts::default());
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (listening_tx, listening_rx) = oneshot::channel();
        let stderr = child.stderr.take().context("tallyd's stderr")?;
        std::thread::spawn({
            let logs = logs.clone();
            let tail = tail.clone();
            move || follow_log(stderr, listening_tx, &logs, &tail, show_log, label)
        });
        let mut tallyd = Tallyd {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            store,
            logs,
            tail,
            label,
            _data: data,
            database,
        };
        let addr = match tokio::time::timeout(STARTUP_TIMEOUT, listening_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => bail!("{label} exited before listening:\n{}", tallyd.log_tail()),
            Err(_) => bail!(
                "{label} did not listen within {STARTUP_TIMEOUT:?}:\n{}",
                tallyd.log_tail()
            ),
        };
        tallyd.addr = addr;
        if let Err(e) = wait_until_serving(addr).await {
            bail!("{e:#}\n{}", tallyd.log_tail());
        }
        Ok(tallyd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// tallyd's resident set size, from /proc/<pid>/status.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("reading tallyd's /proc status (Linux only)")?;
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .context("no VmRSS in /proc status")?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed VmRSS line")?
            .parse()?;
        Ok(kib * 1024)
    }

    fn log_tail(&self) -> String {
        let tail = self.tail.lock().expect("log tail lock");
        tail.iter()
            .map(|line| format!("  {}: {line}", self.label))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops tallyd (SIGTERM, then SIGKILL after a grace period) and drops
    /// its database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid();
        // `kill` the command: std can only SIGKILL, and the workspace
        // forbids the unsafe a libc call would need.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while self.child.try_wait()?.is_none() {
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "tally-bench: {} did not stop on SIGTERM within {STOP_TIMEOUT:?}; killing it",
                    self.label
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(database) = self.database.take() {
            database.drop_now().await?;
        }
        Ok(())
    }
}

impl Drop for Tallyd {
    fn drop(&mut self) {
        // Only reached un-stopped when a run failed: kill at once. The
        // database (if any) is dropped after, by its own Drop.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tallyd migrate --database-url URL`.
async fn migrate(binary: &Path, url: &str) -> anyhow::Result<()> {
    let binary = binary.to_owned();
    let url = url.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&binary)
            .arg("migrate")
            .arg("--database-url")
            .arg(&url)
            .env_remove("TALLY_DATABASE_URL")
            .stdin(Stdio::null())
            .output()
    })
    .await??;
    if !output.status.success() {
        bail!(
            "tallyd migrate failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The log filter to start tallyd with, given the caller's `TALLY_LOG`
/// (passed through, so a run can turn a module's logs up): the address
/// is read from tallyd's INFO line "tallyd listening", so a filter that
/// says nothing of the `tallyd` target gets it at INFO.
fn log_filter(caller: Option<&str>) -> Option<String> {
    let caller = caller.map(str::trim).filter(|f| !f.is_empty())?;
    let names_tallyd = caller
        .split(',')
        .any(|directive| directive.trim().split(['=', '[']).next() == Some("tallyd"));
    Some(if names_tallyd {
        caller.to_owned()
    } else {
        format!("{caller},tallyd=info")
    })
}

/// Reads tallyd's JSON log: hands over the address once it listens, counts
/// warnings and errors (and shows them), keeps a tail for error messages.
fn follow_log(
    stderr: std::process::ChildStderr,
    listening: oneshot::Sender<SocketAddr>,
    logs: &LogCounts,
    tail: &Mutex<VecDeque<String>>,
    show_log: bool,
    label: &str,
) {
    let mut listening = Some(listening);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        let level = parsed
            .as_ref()
            .and_then(|v| v.get("level"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        if let Some(addr) = parsed.as_ref().and_then(listening_addr)
            && let Some(sender) = listening.take()
        {
            let _ = sender.send(addr);
        }
        let loud = match level.as_str() {
            "WARN" => {
                logs.warnings.fetch_add(1, Ordering::Relaxed);
                true
            }
            "ERROR" => {
                logs.errors.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        };
        if loud || show_log {
            eprintln!("  {label}: {line}");
        }
        let mut tail = tail.lock().expect("log tail lock");
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The address in tallyd's `tallyd listening` line.
fn listening_addr(line: &serde_json::Value) -> Option<SocketAddr> {
    // Fields are nested under "fields" by default, flattened otherwise.
    let fields = line.get("fields").unwrap_or(line);
    if fields.get("message")?.as_str()? != "tallyd listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// Polls gRPC health until the whole server, metering and accounts all say
/// SERVING (tallyd says NOT_SERVING until its store is open).
pub async fn wait_until_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        if let Ok(channel) = endpoint.connect().await {
            let mut health = HealthClient::new(channel);
            let mut all = true;
            for service in ["", "tally.v1.MeteringService", "tally.v1.AccountService"] {
                let status = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .map(|r| r.into_inner().status);
                if !matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                    last = format!("health of `{service}`: {status:?}");
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("tallyd at {addr} not SERVING within {STARTUP_TIMEOUT:?} ({last})")
}

/// The echo baseline's server: this same executable, `echo-server`, in a
/// process of its own so it does not share the load generator's runtime.
pub struct EchoServer {
    child: Child,
    pub addr: SocketAddr,
}

impl EchoServer {
    pub async fn spawn() -> anyhow::Result<EchoServer> {
        let exe = std::env::current_exe().context("locating tally-bench itself")?;
        if !exe.exists() {
            bail!(
                "tally-bench's own executable {} is gone (rebuilt while the run went on?); \
                 copy the binary elsewhere for long runs",
                exe.display()
            );
        }
        let mut child = Command::new(exe)
            .arg("echo-server")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the echo server")?;
        let stdout = child.stdout.take().context("echo server's stdout")?;
        let first_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await??;
        let mut server = EchoServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.addr = first_line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .with_context(|| {
                format!("unexpected first line from the echo server: {first_line:?}")
            })?;
        Ok(server)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where tallyd is when --tallyd is not given: beside this executable
/// (`target/release/tally-bench` next to `target/release/tallyd`).
pub fn default_tallyd() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating tally-bench itself")?;
    let dir = exe.parent().context("tally-bench has no parent folder")?;
    Ok(dir.join(format!("tallyd{}", std::env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn the_listening_line_survives_the_callers_log_filter() {
        assert_eq!(log_filter(None), None);
        assert_eq!(log_filter(Some("  ")), None);
        assert_eq!(
            log_filter(Some("warn")).as_deref(),
            Some("warn,tallyd=info")
        );
        assert_eq!(
            log_filter(Some("info,tally_engine::writer=debug")).as_deref(),
            Some("info,tally_engine::writer=debug,tallyd=info")
        );
        // The caller's own word on tallyd stands.
        assert_eq!(
            log_filter(Some("warn,tallyd=debug")).as_deref(),
            Some("warn,tallyd=debug")
        );
    }
}
