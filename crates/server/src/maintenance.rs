//! `tallyd rebuild` and `tallyd verify`: operator commands over the
//! projections, run against the same store the service uses.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tally_core::{Clock, SystemClock};
use tally_projections::rebuild::{Progress, rebuild, request_rebuild};
use tally_projections::verify::verify;
use tally_projections::{Projection, ProjectionError};
use tally_store::LogPosition;
use tally_store::postgres::PostgresStore;
use tally_store::sqlite::SqliteStore;

use crate::{Config, EMBEDDED_STORE_FILE, Store};

/// Events folded per transaction when rebuilding.
const REBUILD_BATCH: usize = 1_000;

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

/// Runs `work` over the store the configuration names.
async fn with_store<T>(
    config: &Config,
    work: impl AsyncFnOnce(PostgresOrSqlite) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match &config.database_url {
        Some(url) => {
            let store = PostgresStore::connect(url, config.postgres_options())
                .await
                .context("connecting to PostgreSQL")?;
            let status = store.schema_status().await?;
            anyhow::ensure!(
                status.is_current(),
                "schema is not current ({status}): run `tallyd migrate`"
            );
            work(PostgresOrSqlite::Postgres(store)).await
        }
        None => {
            let path = config.data_dir.join(EMBEDDED_STORE_FILE);
            anyhow::ensure!(path.exists(), "no embedded store at {}", path.display());
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            work(PostgresOrSqlite::Sqlite(store)).await
        }
    }
}

enum PostgresOrSqlite {
    Postgres(PostgresStore),
    Sqlite(SqliteStore),
}

/// `tallyd rebuild [--projection NAME]`.
pub async fn rebuild_projections(config: &Config, projection: Option<&str>) -> anyhow::Result<()> {
    let projections = selected(projection)?;
    with_store(config, async |store| match store {
        PostgresOrSqlite::Postgres(store) => rebuild_all(&store, &projections).await,
        PostgresOrSqlite::Sqlite(store) => rebuild_all(&store, &projections).await,
    })
    .await
}

/// `tallyd verify [--projection NAME]`: whether every projection matched.
pub async fn verify_projections(config: &Config, projection: Option<&str>) -> anyhow::Result<bool> {
    let projections = selected(projection)?;
    with_store(config, async |store| match store {
        PostgresOrSqlite::Postgres(store) => verify_all(&store, &projections).await,
        PostgresOrSqlite::Sqlite(store) => verify_all(&store, &projections).await,
    })
    .await
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
            bar.set_message(format!(
                "{} events, {} events/s",
                progress.events,
                rate(progress.events, started.elapsed())
            ));
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

async fn verify_all<S: Store>(store: &S, projections: &[Projection]) -> anyhow::Result<bool> {
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
    Ok(clean)
}
