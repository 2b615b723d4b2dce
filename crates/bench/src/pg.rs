//! Fresh PostgreSQL databases for one run, created and dropped through the
//! admin URL, so a run never touches data it did not make.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use tokio_postgres::NoTls;

/// A database this process created. Dropped with `drop_now` at the end of
/// a run; if a run fails first, `Drop` still removes it (on a thread of its
/// own, since `Drop` cannot await).
pub struct Database {
    admin_url: String,
    pub name: String,
    pub url: String,
    dropped: bool,
}

impl Database {
    /// Creates `tally_bench_<pid>_<n>_<tag>`.
    pub async fn create(admin_url: &str, tag: &str) -> anyhow::Result<Database> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tally_bench_{}_{}_{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(admin_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        let url = same_transport_as_baseline(&with_database(admin_url, &name)?);
        Ok(Database {
            admin_url: admin_url.to_owned(),
            name,
            url,
            dropped: false,
        })
    }

    /// Drops the database, closing whatever sessions are still in it.
    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_database(&admin_url, &name))
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("tally-bench: could not drop database {}: {e:#}", self.name);
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let admin = connect(admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .with_context(|| format!("dropping database {name}"))
}

/// What [`drop_stale`] did.
#[derive(Debug, Default)]
pub struct Stale {
    pub dropped: Vec<String>,
    /// Databases of runs that are gone, still with sessions connected
    /// (most likely the run's own `tallyd`, orphaned by the kill), and
    /// how many.
    pub in_use: Vec<(String, i64)>,
}

/// Drops the databases of runs that ended without dropping their own
/// (killed with SIGKILL, or the machine went down): named as
/// [`Database::create`] names them, made by a process that no longer runs
/// on this machine, and with no session connected. A run on another
/// machine sharing the server keeps sessions open in its databases (its
/// tallyd's pool) for as long as it runs, so it is left alone; each drop is
/// without FORCE, so a database that gains a session meanwhile stays.
pub async fn drop_stale(admin_url: &str) -> anyhow::Result<Stale> {
    anyhow::ensure!(
        Path::new("/proc/self").exists(),
        "telling live runs from dead ones needs /proc (Linux)"
    );
    let admin = connect(admin_url).await?;
    let rows = admin
        .query(
            "SELECT d.datname, \
                    (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid) \
             FROM pg_database d WHERE d.datname LIKE 'tally\\_bench\\_%' \
             ORDER BY d.datname",
            &[],
        )
        .await
        .context("listing tally-bench databases")?;
    let mut stale = Stale::default();
    for row in rows {
        let name: String = row.get(0);
        let sessions: i64 = row.get(1);
        let Some(pid) = creator(&name) else {
            continue;
        };
        if pid == std::process::id() || running(pid) {
            continue;
        }
        if sessions > 0 {
            stale.in_use.push((name, sessions));
            continue;
        }
        let quoted = name.replace('"', "\"\"");
        match admin
            .batch_execute(&format!("DROP DATABASE \"{quoted}\""))
            .await
        {
            Ok(()) => stale.dropped.push(name),
            Err(e) => eprintln!("tally-bench: left {name}: {e}"),
        }
    }
    Ok(stale)
}

/// Whether a process with this id runs on this machine: a zombie (killed,
/// not yet reaped) does not.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The process id in `tally_bench_<pid>_<n>_<tag>`.
fn creator(name: &str) -> Option<u32> {
    name.strip_prefix("tally_bench_")?
        .split('_')
        .next()?
        .parse()
        .ok()
}

/// Connects and drives the connection on a task of its own.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped; an error here
        // shows up on the client's next query too.
        let _ = connection.await;
    });
    Ok(client)
}

/// The server's version string, for the report.
pub async fn server_version(url: &str) -> anyhow::Result<String> {
    let client = connect(url).await?;
    let row = client.query_one("SHOW server_version", &[]).await?;
    Ok(row.get(0))
}

/// `admin_url` with its database replaced by `name`. Accepts URLs with or
/// without a database path and with query parameters.
pub fn with_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let (scheme, rest) = admin_url.split_once("://").with_context(|| {
        format!(
            "{} is not a postgres:// URL (key=value strings are not supported here)",
            redact(admin_url)
        )
    })?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _db)| authority);
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// `url` with `sslmode=disable` added unless it names a mode. tally-bench
/// reaches PostgreSQL in plaintext (its naive baseline as much as its own
/// set-up), while tallyd, given no mode, does what libpq does (`prefer`):
/// TLS whenever the server offers it, as Debian's PostgreSQL does even on
/// loopback. Left alone, tallyd would pay for encryption the baseline
/// does not (2-15 % of hot Debit on PostgreSQL here), and the ratio would
/// compare transports instead of designs.
pub fn same_transport_as_baseline(url: &str) -> String {
    let separator = match url.split_once('?') {
        None => "?",
        Some((_, query)) if query.split('&').any(|pair| pair.starts_with("sslmode=")) => {
            return url.to_owned();
        }
        Some((_, query)) if query.is_empty() || query.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{url}{separator}sslmode=disable")
}

/// The URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((credentials, host)) = rest.rsplit_once('@')
        && let Some((user, _password)) = credentials.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432", "x").unwrap(),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgresql://h/db?sslmode=disable", "x").unwrap(),
            "postgresql://h/x?sslmode=disable"
        );
        assert!(with_database("host=localhost", "x").is_err());
    }

    #[test]
    fn tallyd_gets_the_baselines_plaintext_unless_a_mode_is_named() {
        assert_eq!(
            same_transport_as_baseline("postgres://postgres@127.0.0.1:5432/x"),
            "postgres://postgres@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(
            same_transport_as_baseline("postgresql:///x?host=/run/postgresql&user=u"),
            "postgresql:///x?host=/run/postgresql&user=u&sslmode=disable"
        );
        assert_eq!(
            same_transport_as_baseline("postgres://h/x?sslmode=require"),
            "postgres://h/x?sslmode=require"
        );
        assert_eq!(
            same_transport_as_baseline("postgres://h/x?user=u&sslmode=prefer"),
            "postgres://h/x?user=u&sslmode=prefer"
        );
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
    #[test]
    fn this_process_runs_and_a_pid_above_the_kernels_largest_does_not() {
        assert!(running(std::process::id()));
        assert!(!running(4_000_000_000));
    }

    #[test]
    fn the_creator_is_read_from_the_name() {
        assert_eq!(creator("tally_bench_4242_0_tally"), Some(4242));
        assert_eq!(creator("tally_bench_x_0_tally"), None);
        assert_eq!(creator("tally_4242"), None);
    }

    /// Needs the PostgreSQL the suite runs on.
    #[tokio::test]
    async fn only_databases_of_dead_runs_without_sessions_are_dropped() {
        let admin_url = std::env::var("TALLY_TEST_DATABASE_URL")
            .unwrap_or_else(|_| crate::cli::DEFAULT_DATABASE_URL.to_owned());
        // Above the kernel's largest pid (2^22): no process has them.
        let dead = "tally_bench_4000000000_0_stale";
        let busy = "tally_bench_4000000001_0_busy";
        let live = format!("tally_bench_{}_900_live", std::process::id());
        let admin = connect(&admin_url).await.unwrap();
        for name in [dead, busy, live.as_str()] {
            // Two statements: a multi-statement string is one transaction.
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await
                .unwrap();
        }
        // A session in it, as a run on another machine would hold.
        let session = connect(&with_database(&admin_url, busy).unwrap())
            .await
            .unwrap();

        let stale = drop_stale(&admin_url).await.unwrap();

        let exists = |name: String| {
            let admin = &admin;
            async move {
                admin
                    .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        assert!(stale.dropped.iter().any(|name| name == dead), "{stale:?}");
        assert!(
            stale
                .in_use
                .iter()
                .any(|(name, sessions)| name == busy && *sessions >= 1),
            "{stale:?}"
        );
        assert!(!exists(dead.to_owned()).await);
        assert!(
            exists(busy.to_owned()).await,
            "a database in use was dropped"
        );
        assert!(
            exists(live.clone()).await,
            "a live run's database was dropped"
        );
        drop(session);
        for name in [busy, live.as_str()] {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .unwrap();
        }
    }
}
