//! `tallyd rebuild` and `tallyd verify`: operator commands over the log
//! and the projections, run against the same store the service uses.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tally_core::{Clock, SystemClock};
use tally_projections::rebuild::{Progress, rebuild, request_rebuild};
use tally_projections::verify::{verify, verify_log};
use tally_projections::{Projection, ProjectionError};
use tally_store::LogPosition;
use tally_store::postgres::{PostgresStore, SchemaStatus};
use tally_store::sqlite::SqliteStore;

use crate::{Config, EMBEDDED_STORE_FILE, Store};

/// Events folded per transaction when rebuilding or verifying. Larger
/// batches put more of an account's ledger entries side by side in each
/// index (they are inserted in key order); past 10,000 a rebuild of 1M
/// events ran no faster on either store (docs/benchmarks.md, sessions 12
/// and 22: on the embedded store 100,000 wrote a quarter of the bytes but
/// took as long, with 2.5 times the memory).
const REBUILD_BATCH: usize = 10_000;

fn selected(projection: Option<&str>) -> anyhow::Result<Vec<Projection>> {
    match projection {
        None => Ok(Projection::ALL.to_vec()),
        Some(name) => Projection::from_name(name).map(|p| vec![p]).ok_or_else(|| {
            anyhow::anyhow!("unknown projection {name:?}: expected balances, ledger or usage")
        }),
    }
}

fn now_ms() -> i64 {
    SystemClock.now().as_millis()
}

/// Opens the store the configuration names; on PostgreSQL, also says
/// whether its schema and log are current.
async fn open(config: &Config) -> anyhow::Result<PostgresOrSqlite> {
    match &config.database_url {
        Some(url) => {
            let store = PostgresStore::connect(url, config.postgres_options())
                .await
                .context("connecting to PostgreSQL")?;
            let status = store.schema_status().await?;
            Ok(PostgresOrSqlite::Postgres(store, status))
        }
        None => {
            let path = config.data_dir.join(EMBEDDED_STORE_FILE);
            anyhow::ensure!(path.exists(), "no embedded store at {}", path.display());
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            Ok(PostgresOrSqlite::Sqlite(store))
        }
    }
}

/// Runs `work` over the store the configuration names, once its schema and
/// log are current.
async fn with_store<T>(
    config: &Config,
    work: impl AsyncFnOnce(PostgresOrSqlite) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let store = open(config).await?;
    if let PostgresOrSqlite::Postgres(_, status) = &store {
        anyhow::ensure!(
            status.can_serve(),
            "schema is not current ({status}): run `tallyd migrate`"
        );
    }
    work(store).await
}

enum PostgresOrSqlite {
    Postgres(PostgresStore, SchemaStatus),
    Sqlite(SqliteStore),
}

/// What `tallyd verify` found; `main` makes it the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The log is in order and every projection matches a rebuild from it.
    Clean,
    /// A projection differs from a rebuild: `tallyd rebuild` repairs it.
    ProjectionsDiffer,
    /// An engine snapshot is not the fold of its stream: written behind
    /// the service's back (the service's role may write snapshots).
    SnapshotsDiffer,
    /// The log itself is out of order, so the projections were not
    /// compared: after a logical restore, `tallyd migrate`; otherwise the
    /// log was written behind the store's back.
    LogOutOfOrder,
}

/// `tallyd rebuild [--projection NAME]`.
pub async fn rebuild_projections(config: &Config, projection: Option<&str>) -> anyhow::Result<()> {
    let projections = selected(projection)?;
    with_store(config, async |store| match store {
        PostgresOrSqlite::Postgres(store, _) => rebuild_all(&store, &projections).await,
        PostgresOrSqlite::Sqlite(store) => rebuild_all(&store, &projections).await,
    })
    .await
}

/// `tallyd verify [--projection NAME]`: the log's order, then every
/// projection against a rebuild from it.
pub async fn verify_projections(
    config: &Config,
    projection: Option<&str>,
) -> anyhow::Result<Verdict> {
    let projections = selected(projection)?;
    match open(config).await? {
        PostgresOrSqlite::Postgres(store, status) if status.can_serve() => {
            verify_all(&store, &projections).await
        }
        PostgresOrSqlite::Postgres(_, status @ SchemaStatus::LogNeedsRenumbering { .. }) => {
            // Reading on would wait on the fence for events that sit beyond
            // it, and fold the ones before it in the wrong order.
            println!("log: OUT OF ORDER: {status}");
            println!(
                "  run `tallyd migrate`, then `tallyd verify` again; projections not verified"
            );
            Ok(Verdict::LogOutOfOrder)
        }
        PostgresOrSqlite::Postgres(_, status) => {
            anyhow::bail!("schema is not current ({status}): run `tallyd migrate`")
        }
        PostgresOrSqlite::Sqlite(store) => verify_all(&store, &projections).await,
    }
}

fn bar(names: &str, head: Option<LogPosition>) -> ProgressBar {
    let bar = ProgressBar::new(head.map_or(0, |h| h.seq));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
        )
        .expect("a valid template"),
    );
    bar.set_prefix(names.to_owned());
    bar
}

fn rate(events: u64, elapsed: Duration) -> u64 {
    // Display only: events per second, rounded.
    (events as f64 / elapsed.as_secs_f64().max(1e-3)).round() as u64
}

async fn rebuild_all<S: Store>(store: &S, projections: &[Projection]) -> anyhow::Result<()> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let names = names.join(", ");
    let head = store.log_head().await?;
    let bar = bar(&names, head);
    let started = Instant::now();
    let outcome = rebuild(
        store,
        projections,
        REBUILD_BATCH,
        now_ms,
        |progress: Progress| {
            if let Some(position) = progress.position {
                bar.set_position(position.seq);
            }
            if progress.building_indexes {
                bar.set_message(format!(
                    "{} events folded; building the indexes",
                    progress.events
                ));
            } else {
                bar.set_message(format!(
                    "{} events, {} events/s",
                    progress.events,
                    rate(progress.events, started.elapsed())
                ));
            }
        },
    )
    .await;
    match outcome {
        Ok(report) => {
            bar.finish_and_clear();
            println!(
                "rebuilt {names}: {} events in {:.1?} ({} events/s)",
                report.events,
                report.elapsed,
                rate(report.events, report.elapsed)
            );
        }
        Err(ProjectionError::Busy(_)) => {
            // A running tallyd holds the runner's lock: reset them and let
            // that runner rebuild, following their checkpoints.
            for &projection in projections {
                request_rebuild(store, projection, now_ms()).await?;
            }
            bar.set_message("rebuilt by the running tallyd");
            let target = head;
            loop {
                let mut slowest = target;
                for &projection in projections {
                    let checkpoint = store.projection_checkpoint(projection.name()).await?;
                    slowest = slowest.min(checkpoint.position);
                }
                if let Some(position) = slowest {
                    bar.set_position(position.seq);
                }
                if target.is_none() || slowest >= target {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            bar.finish_and_clear();
            let events = target.map_or(0, |t| t.seq);
            println!(
                "rebuilt {names} (by the running tallyd): up to position {} in {:.1?} (~{} events/s)",
                target.map_or_else(|| "start".to_owned(), |t| t.to_string()),
                started.elapsed(),
                rate(events, started.elapsed())
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn verify_all<S: Store>(store: &S, projections: &[Projection]) -> anyhow::Result<Verdict> {
    let log = verify_log(store, REBUILD_BATCH).await?;
    let up_to = log
        .scanned_to
        .map_or_else(|| "the start".to_owned(), |p| p.to_string());
    if !log.is_ordered() {
        println!(
            "log: OUT OF ORDER: {} of {} events up to {up_to} do not follow their stream's previous version ({} of {} streams)",
            log.out_of_order, log.events, log.disordered_streams, log.streams
        );
        for example in &log.examples {
            println!("  {example}");
        }
        println!(
            "  projections not verified: they fold each stream in log order; see \"Verifying the log\" in docs/operations.md"
        );
        return Ok(Verdict::LogOutOfOrder);
    }
    println!(
        "log: ok ({} events over {} streams in order, up to {up_to})",
        log.events, log.streams
    );
    let snapshots = tally_engine::verify_snapshots(store, &log.stream_ids).await?;
    let snapshots_differ = snapshots.differing > 0;
    if snapshots_differ {
        println!(
            "snapshots: {} of {} are not the fold of their stream",
            snapshots.differing, snapshots.checked
        );
        for example in &snapshots.examples {
            println!("  {example}");
        }
        println!(
            "  delete those rows from `snapshots` (they are a cache) and find out who wrote them; see docs/security.md"
        );
    } else {
        println!("snapshots: ok ({} match their stream)", snapshots.checked);
    }
    let mut clean = true;
    for &projection in projections {
        let report = verify(store, projection, REBUILD_BATCH, now_ms()).await?;
        let at = report
            .checkpoint
            .map_or_else(|| "the start".to_owned(), |c| c.to_string());
        if report.is_clean() {
            println!(
                "{projection}: ok ({} rows match a rebuild up to {at})",
                report.rows_compared
            );
        } else {
            clean = false;
            println!(
                "{projection}: {} differences from a rebuild up to {at}",
                report.differences
            );
            for example in &report.examples {
                println!("  {example}");
            }
        }
    }
    Ok(if !clean {
        Verdict::ProjectionsDiffer
    } else if snapshots_differ {
        Verdict::SnapshotsDiffer
    } else {
        Verdict::Clean
    })
}
