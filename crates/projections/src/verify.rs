//! Verifying a projection: fold the log up to the live checkpoint into a
//! scratch copy and compare every row. What `tallyd verify` runs.

use std::cmp::Ordering;

use tally_store::sqlite::SqliteStore;
use tally_store::{EventStore, LogPosition, ProjectionStore, SqlRow, SqlStatement, SqlValue};

use crate::runner::{Projector, RunnerConfig, Step};
use crate::tables::{Table, dump_queries};
use crate::{Projection, ProjectionError};

/// Differences listed in a report; the count covers all of them.
const LISTED: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub projection: Projection,
    /// The live checkpoint the scratch copy was rebuilt up to.
    pub checkpoint: Option<LogPosition>,
    pub rows_compared: u64,
    pub differences: u64,
    /// The first few differences, described.
    pub examples: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.differences == 0
    }
}

/// Rebuilds `projection` from `store`'s log into a scratch SQLite file up
/// to the live checkpoint, and compares it with the live rows, read in one
/// snapshot with that checkpoint.
pub async fn verify<S: EventStore + ProjectionStore>(
    store: &S,
    projection: Projection,
    batch: usize,
    now_ms: i64,
) -> Result<VerifyReport, ProjectionError> {
    let dumps = dump_queries(projection);
    let mut queries = vec![SqlStatement::new(
        "SELECT tx, seq FROM projection_checkpoints WHERE name = $1",
        vec![SqlValue::text(projection.name())],
    )];
    queries.extend(dumps.iter().map(|(_, query)| query.clone()));
    let mut live = store.query_projection(queries).await?;
    let checkpoint = live.remove(0).first().and_then(|row| {
        Some(LogPosition::new(
            u64::try_from(row[0].as_int()?).ok()?,
            u64::try_from(row[1].as_int()?).ok()?,
        ))
    });

    let dir = tempfile::tempdir()
        .map_err(|e| ProjectionError::Corrupt(format!("cannot make a scratch directory: {e}")))?;
    let scratch = SqliteStore::open(dir.path().join("scratch.sqlite")).await?;
    if let Some(checkpoint) = checkpoint {
        let mut projector = Projector::new(&[projection], &RunnerConfig::default());
        loop {
            match projector
                .step(store, &scratch, batch, Some(checkpoint), now_ms)
                .await?
            {
                Step::Applied { .. } => {}
                Step::Idle => break,
                Step::Moved | Step::Reset => {
                    return Err(ProjectionError::Corrupt(
                        "the scratch copy moved under its only runner".into(),
                    ));
                }
            }
        }
    }
    let rebuilt = scratch
        .query_projection(dumps.iter().map(|(_, query)| query.clone()).collect())
        .await?;

    let mut report = VerifyReport {
        projection,
        checkpoint,
        rows_compared: 0,
        differences: 0,
        examples: Vec::new(),
    };
    for (((table, _), live), rebuilt) in dumps.iter().zip(live).zip(rebuilt) {
        compare(table, &live, &rebuilt, &mut report);
    }
    Ok(report)
}

/// Every row `projection` owns, table by table in key order: two stores
/// hold the same projection exactly when their dumps are equal.
pub async fn dump<S: ProjectionStore>(
    store: &S,
    projection: Projection,
) -> Result<Vec<Vec<SqlRow>>, ProjectionError> {
    let queries = dump_queries(projection)
        .into_iter()
        .map(|(_, query)| query)
        .collect();
    Ok(store.query_projection(queries).await?)
}

/// Merges two dumps in key order, noting rows missing, extra or different.
fn compare(table: &Table, live: &[SqlRow], rebuilt: &[SqlRow], report: &mut VerifyReport) {
    let key_len = table.key.len();
    let key = |row: &SqlRow| row[..key_len].to_vec();
    let (mut l, mut r) = (0, 0);
    let note = |report: &mut VerifyReport, what: String| {
        report.differences += 1;
        if report.examples.len() < LISTED {
            report.examples.push(format!("{}: {what}", table.name));
        }
    };
    while l < live.len() || r < rebuilt.len() {
        report.rows_compared += 1;
        let order = match (live.get(l), rebuilt.get(r)) {
            (Some(a), Some(b)) => key(a).cmp(&key(b)),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                note(
                    report,
                    format!("live row {:?} is not in the rebuild", key(&live[l])),
                );
                l += 1;
            }
            Ordering::Greater => {
                note(
                    report,
                    format!("rebuilt row {:?} is missing live", key(&rebuilt[r])),
                );
                r += 1;
            }
            Ordering::Equal => {
                let (a, b) = (&live[l], &rebuilt[r]);
                if a != b {
                    let columns: Vec<&str> = table
                        .columns
                        .iter()
                        .zip(a.iter().zip(b))
                        .filter(|(_, (x, y))| x != y)
                        .map(|(c, _)| *c)
                        .collect();
                    note(
                        report,
                        format!("row {:?} differs in {}", key(a), columns.join(", ")),
                    );
                }
                l += 1;
                r += 1;
            }
        }
    }
}
