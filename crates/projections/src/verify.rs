//! Verifying the log's order and the projections: what `tallyd verify`
//! runs. [`verify_log`] reads the whole log once and checks that every
//! stream's events come in version order; [`verify`] folds the log up to a
//! projection's live checkpoint into a scratch copy and compares every row.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use tally_store::sqlite::SqliteStore;
use tally_store::{EventStore, LogPosition, ProjectionStore, SqlRow, SqlStatement, SqlValue};

use crate::runner::{Projector, RunnerConfig, Step};
use crate::tables::{Table, dump_queries, table_names};
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
    // The copy is read once, in key order, and thrown away: the indexes
    // only reads walk would cost most of its writes and serve nothing.
    scratch.suspend_indexes(&table_names(&[projection])).await?;
    if let Some(checkpoint) = checkpoint {
        let mut projector = Projector::new(&[projection], &RunnerConfig::default()).reading_ahead();
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

/// What a pass over the whole log found about its order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogReport {
    /// The last position read: the log's head when the pass started, unless
    /// the store held later events back (PostgreSQL's fence, behind a
    /// transaction that stayed open).
    pub scanned_to: Option<LogPosition>,
    pub events: u64,
    pub streams: u64,
    /// Events that did not come as the version after their stream's
    /// previous event in the log.
    pub out_of_order: u64,
    /// Streams with at least one such event.
    pub disordered_streams: u64,
    /// The first few, described.
    pub examples: Vec<String>,
    /// Every stream seen, in order: what other checks (the engine's
    /// snapshots) go through.
    pub stream_ids: Vec<String>,
}

impl LogReport {
    pub fn is_ordered(&self) -> bool {
        self.out_of_order == 0
    }
}

/// Reads the whole log, up to its head when the pass starts, and checks
/// that each stream's events come as versions 1, 2, 3... in log order.
///
/// A projection folds each account's events in log order and trusts that
/// order to be the stream's, so a version that comes after a higher one, or
/// before the one due, is a log the projections cannot be rebuilt from: on
/// PostgreSQL, the trace of events appended to a restored log before
/// `tallyd migrate` renumbered it, or of rows written behind the store's
/// back. Memory grows with the number of streams (one entry each).
pub async fn verify_log<S: EventStore + ProjectionStore>(
    store: &S,
    batch: usize,
) -> Result<LogReport, ProjectionError> {
    let mut report = LogReport::default();
    let Some(head) = store.log_head().await? else {
        return Ok(report);
    };
    // The version due next in each stream: the one after its previous
    // event, so that a run of events out of place is reported where it
    // starts and where it ends, not at every event in between.
    let mut due: HashMap<String, u64> = HashMap::new();
    let mut disordered: HashSet<String> = HashSet::new();
    while report.scanned_to < Some(head) {
        let events = store.read_log(report.scanned_to, batch.max(1)).await?;
        if events.is_empty() {
            break;
        }
        for event in events.iter().take_while(|e| e.position <= head) {
            report.events += 1;
            let next = due.entry(event.stream_id.clone()).or_insert(1);
            if event.version != *next {
                report.out_of_order += 1;
                if report.examples.len() < LISTED {
                    report.examples.push(format!(
                        "stream {:?}: version {} at {} where version {} was due",
                        event.stream_id, event.version, event.position, next
                    ));
                }
                disordered.insert(event.stream_id.clone());
            }
            *next = event.version.saturating_add(1);
        }
        report.scanned_to = events.last().map(|e| e.position.min(head));
    }
    report.streams = due.len() as u64;
    report.disordered_streams = disordered.len() as u64;
    report.stream_ids = due.into_keys().collect();
    report.stream_ids.sort_unstable();
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
