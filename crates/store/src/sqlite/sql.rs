//! The statements, as blocking functions over one connection. The async
//! plumbing in `mod.rs` decides which connection and which thread.

use std::collections::{BTreeSet, HashSet};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::{is_unique_violation, store_error};
use super::txn::Tx;
use crate::{
    AppendRequest, AppendResult, ChargeRecord, HoldRecord, IdempotencyRecord, LogPosition,
    RecordedEvent, Snapshot, StoreError, Wakeup,
};

// A statement that compares an indexed column with a parameter and also
// orders by (or takes the MAX of) that index is planned anew by SQLite
// every time the parameter is rebound (seen with SQLite 3.54; STAT4 or
// not): a version check parsed per append. `CAST(?1 AS TEXT)` (the
// column's type, so the same index seek) keeps the first plan.
// `keyed_statements_are_planned_once` checks each statement here.

// Both read the columns in the order `recorded_event` expects.
const READ_STREAM: &str = "SELECT seq, stream_id, version, event_type, payload, recorded_at_ms
    FROM events WHERE stream_id = CAST(?1 AS TEXT) AND version >= CAST(?2 AS INTEGER)
    ORDER BY version LIMIT CAST(?3 AS INTEGER)";
const READ_VERSION: &str = "SELECT seq, stream_id, version, event_type, payload, recorded_at_ms
    FROM events WHERE stream_id = ?1 AND version = ?2";
const READ_LOG: &str = "SELECT seq, stream_id, version, event_type, payload, recorded_at_ms
    FROM events WHERE seq > ?1 ORDER BY seq LIMIT CAST(?2 AS INTEGER)";

/// The append has checked its version under the write lock, so its wakeup
/// is the newest the stream can have; an unchanged one is left as it is,
/// with the version it was set at (one page write fewer per append under
/// spread traffic). A `NULL` `at_ms` keeps the row so that a cleared wakeup
/// is still a row a stale `set_wakeup` is checked against.
const WRITE_WAKEUP: &str = "INSERT INTO wakeups (stream_id, version, at_ms) VALUES (?1, ?2, ?3)
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, at_ms = excluded.at_ms
    WHERE wakeups.at_ms IS NOT excluded.at_ms";

/// Writes only if the stream's last event is at `?2`; the conflict clause's
/// guard never lets a wakeup go back to an older version. Same statement as
/// the PostgreSQL backend's, which takes the row's lock before it so that a
/// racing append is seen; here the write lock already serialises the two.
const SET_WAKEUP: &str = "INSERT INTO wakeups (stream_id, version, at_ms)
    SELECT ?1, ?2, ?3
    WHERE (SELECT MAX(version) FROM events WHERE stream_id = CAST(?1 AS TEXT)) = ?2
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, at_ms = excluded.at_ms
    WHERE wakeups.version <= excluded.version";

/// Served by the partial index `wakeups_due`, in its order; TEXT compares
/// bytewise (BINARY), as the contract asks.
const DUE_WAKEUPS: &str = "SELECT stream_id, at_ms, version FROM wakeups
    WHERE at_ms <= ?1 ORDER BY at_ms, stream_id LIMIT CAST(?2 AS INTEGER)";

/// Appends to several streams in one `BEGIN IMMEDIATE` transaction, one
/// fsync for all: each request in a savepoint of its own, so one that fails
/// (a conflict, a duplicate key) is rolled back alone and the others commit.
pub(super) fn append_batch(
    conn: &mut Connection,
    requests: Vec<AppendRequest>,
) -> Vec<Result<AppendResult, StoreError>> {
    // IMMEDIATE takes the write lock before reading any version, so no other
    // process can append between a check and its inserts.
    let tx = match Tx::immediate(conn) {
        Ok(tx) => tx,
        Err(err) => {
            let err = store_error(err);
            return requests.iter().map(|_| Err(err.clone())).collect();
        }
    };
    let mut streams = HashSet::new();
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        let result = if streams.insert(request.stream_id.clone()) {
            append_one(&tx, request)
        } else {
            Err(StoreError::InvalidAppend(format!(
                "stream {:?} appears twice in one batch",
                request.stream_id
            )))
        };
        results.push(result);
    }
    if let Err(err) = tx.commit() {
        let err = store_error(err);
        return results.iter().map(|_| Err(err.clone())).collect();
    }
    results
}

/// One request inside the batch's transaction, in a savepoint: all of it is
/// written, or none.
fn append_one(tx: &Tx<'_>, request: AppendRequest) -> Result<AppendResult, StoreError> {
    request.validate()?;
    let AppendRequest {
        stream_id,
        expected_version,
        events,
        idempotency,
        holds,
        charges,
        next_wakeup_ms,
    } = request;
    let last_version = expected_version + events.len() as u64;
    // Dropping the savepoint on an early return rolls it back.
    let savepoint = tx.savepoint().map_err(store_error)?;
    let conn = savepoint.conn();

    let actual = current_version(conn, &stream_id)?;
    if actual != expected_version {
        return Err(StoreError::VersionConflict {
            stream_id,
            expected: expected_version,
            actual,
        });
    }

    let mut positions = Vec::with_capacity(events.len());
    {
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO events (stream_id, version, event_type, payload, recorded_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(store_error)?;
        for (version, event) in (expected_version + 1..).zip(&events) {
            insert
                .execute(params![
                    stream_id,
                    to_sql_int(version),
                    event.event_type,
                    event.payload,
                    event.recorded_at_ms
                ])
                .map_err(store_error)?;
            let seq = u64::try_from(conn.last_insert_rowid())
                .map_err(|_| StoreError::Corrupt("negative rowid in events".into()))?;
            positions.push(LogPosition::new(0, seq));
        }
    }
    {
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO idempotency (stream_id, key, fingerprint, response)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(store_error)?;
        for record in &idempotency {
            insert
                .execute(params![
                    stream_id,
                    record.key,
                    record.fingerprint,
                    record.response
                ])
                .map_err(|err| {
                    if is_unique_violation(&err) {
                        StoreError::DuplicateIdempotencyKey {
                            stream_id: stream_id.clone(),
                            key: record.key.clone(),
                        }
                    } else {
                        store_error(err)
                    }
                })?;
        }
    }
    {
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO resolved_holds (stream_id, hold_id, payload) VALUES (?1, ?2, ?3)
                 ON CONFLICT (stream_id, hold_id) DO UPDATE SET payload = excluded.payload",
            )
            .map_err(store_error)?;
        for hold in &holds {
            upsert
                .execute(params![stream_id, hold.hold_id, hold.payload])
                .map_err(store_error)?;
        }
    }
    if !charges.is_empty() {
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO refunded_charges (stream_id, charge_key, payload) VALUES (?1, ?2, ?3)
                 ON CONFLICT (stream_id, charge_key) DO UPDATE SET payload = excluded.payload",
            )
            .map_err(store_error)?;
        for charge in &charges {
            upsert
                .execute(params![stream_id, charge.charge_key, charge.payload])
                .map_err(store_error)?;
        }
    }
    conn.prepare_cached(WRITE_WAKEUP)
        .map_err(store_error)?
        .execute(params![stream_id, to_sql_int(last_version), next_wakeup_ms])
        .map_err(store_error)?;
    savepoint.release().map_err(store_error)?;

    Ok(AppendResult {
        first_version: expected_version + 1,
        last_version,
        positions,
    })
}

pub(super) fn read_stream(
    conn: &Connection,
    stream_id: &str,
    from_version: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let from_version = from_version.max(1);
    if limit == 0 || from_version > i64::MAX as u64 {
        return Ok(Vec::new());
    }
    let mut statement = conn.prepare_cached(READ_STREAM).map_err(store_error)?;
    let events = statement
        .query_map(
            params![stream_id, to_sql_int(from_version), to_sql_limit(limit)],
            recorded_event,
        )
        .map_err(store_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_error)?;

    // The UNIQUE constraint rules out duplicates but not holes; a hole would
    // make every fold over this stream silently wrong.
    if let Some((expected, event)) = (from_version..)
        .zip(&events)
        .find(|(expected, event)| event.version != *expected)
    {
        return Err(StoreError::Corrupt(format!(
            "stream {stream_id:?} has no version {expected} but has {}",
            event.version
        )));
    }
    Ok(events)
}

pub(super) fn read_versions(
    conn: &Connection,
    stream_id: &str,
    versions: &[u64],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let wanted: std::collections::BTreeSet<u64> = versions
        .iter()
        .copied()
        .filter(|v| *v <= i64::MAX as u64)
        .collect();
    let mut statement = conn.prepare_cached(READ_VERSION).map_err(store_error)?;
    let mut events = Vec::with_capacity(wanted.len());
    for version in wanted {
        let mut rows = statement
            .query_map(params![stream_id, to_sql_int(version)], recorded_event)
            .map_err(store_error)?;
        if let Some(event) = rows.next() {
            events.push(event.map_err(store_error)?);
        }
    }
    Ok(events)
}

pub(super) fn read_log(
    conn: &Connection,
    after: Option<LogPosition>,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let after_seq = match after {
        None => 0,
        // Every SQLite position has tx 0, so any position with tx > 0 is
        // after all of them.
        Some(position) if position.tx > 0 => return Ok(Vec::new()),
        Some(position) => position.seq,
    };
    if limit == 0 || after_seq >= i64::MAX as u64 {
        return Ok(Vec::new());
    }
    let mut statement = conn.prepare_cached(READ_LOG).map_err(store_error)?;
    statement
        .query_map(
            params![to_sql_int(after_seq), to_sql_limit(limit)],
            recorded_event,
        )
        .map_err(store_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_error)
}

pub(super) fn stream_version(conn: &Connection, stream_id: &str) -> Result<u64, StoreError> {
    current_version(conn, stream_id)
}

pub(super) fn find_idempotency(
    conn: &mut Connection,
    stream_id: &str,
    keys: &[String],
) -> Result<Vec<IdempotencyRecord>, StoreError> {
    let keys: BTreeSet<&String> = keys.iter().collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // One read transaction so all lookups see the same snapshot; point
    // lookups on a cached statement avoid building SQL per key count.
    let tx = Tx::deferred(conn).map_err(store_error)?;
    let mut records = Vec::new();
    {
        let mut select = tx
            .conn()
            .prepare_cached(
                "SELECT fingerprint, response FROM idempotency WHERE stream_id = ?1 AND key = ?2",
            )
            .map_err(store_error)?;
        for key in keys {
            let found = select
                .query_row(params![stream_id, key], |row| {
                    Ok(IdempotencyRecord {
                        key: key.clone(),
                        fingerprint: row.get(0)?,
                        response: row.get(1)?,
                    })
                })
                .optional()
                .map_err(store_error)?;
            records.extend(found);
        }
    }
    tx.commit().map_err(store_error)?;
    Ok(records)
}

pub(super) fn find_charges(
    conn: &mut Connection,
    stream_id: &str,
    charge_keys: &[String],
) -> Result<Vec<ChargeRecord>, StoreError> {
    let charge_keys: BTreeSet<&String> = charge_keys.iter().collect();
    let tx = Tx::deferred(conn).map_err(store_error)?;
    let mut charges = Vec::new();
    {
        let mut select = tx
            .conn()
            .prepare_cached(
                "SELECT payload FROM refunded_charges WHERE stream_id = ?1 AND charge_key = ?2",
            )
            .map_err(store_error)?;
        for charge_key in charge_keys {
            let found = select
                .query_row(params![stream_id, charge_key], |row| {
                    Ok(ChargeRecord {
                        charge_key: charge_key.clone(),
                        payload: row.get(0)?,
                    })
                })
                .optional()
                .map_err(store_error)?;
            charges.extend(found);
        }
    }
    tx.commit().map_err(store_error)?;
    Ok(charges)
}

pub(super) fn find_holds(
    conn: &mut Connection,
    stream_id: &str,
    hold_ids: &[String],
) -> Result<Vec<HoldRecord>, StoreError> {
    let hold_ids: BTreeSet<&String> = hold_ids.iter().collect();
    let tx = Tx::deferred(conn).map_err(store_error)?;
    let mut holds = Vec::new();
    {
        let mut select = tx
            .conn()
            .prepare_cached(
                "SELECT payload FROM resolved_holds WHERE stream_id = ?1 AND hold_id = ?2",
            )
            .map_err(store_error)?;
        for hold_id in hold_ids {
            let found = select
                .query_row(params![stream_id, hold_id], |row| {
                    Ok(HoldRecord {
                        hold_id: hold_id.clone(),
                        payload: row.get(0)?,
                    })
                })
                .optional()
                .map_err(store_error)?;
            holds.extend(found);
        }
    }
    tx.commit().map_err(store_error)?;
    Ok(holds)
}

pub(super) fn save_snapshot(
    conn: &Connection,
    stream_id: &str,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    if snapshot.version > i64::MAX as u64 {
        return Err(StoreError::Internal(format!(
            "snapshot version {} of stream {stream_id:?} is out of range",
            snapshot.version
        )));
    }
    conn.prepare_cached(
        "INSERT INTO snapshots (stream_id, version, payload) VALUES (?1, ?2, ?3)
         ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, payload = excluded.payload",
    )
    .map_err(store_error)?
    .execute(params![
        stream_id,
        to_sql_int(snapshot.version),
        snapshot.payload
    ])
    .map_err(store_error)?;
    Ok(())
}

pub(super) fn load_snapshot(
    conn: &Connection,
    stream_id: &str,
) -> Result<Option<Snapshot>, StoreError> {
    conn.prepare_cached("SELECT version, payload FROM snapshots WHERE stream_id = ?1")
        .map_err(store_error)?
        .query_row(params![stream_id], |row| {
            Ok(Snapshot {
                version: get_u64(row, 0)?,
                payload: row.get(1)?,
            })
        })
        .optional()
        .map_err(store_error)
}

pub(super) fn set_wakeup(
    conn: &mut Connection,
    stream_id: &str,
    version: u64,
    at_ms: Option<i64>,
) -> Result<bool, StoreError> {
    // No stream is at version 0 (it has no row to guard) or past i64::MAX.
    if version == 0 || version > i64::MAX as u64 {
        return Ok(false);
    }
    // IMMEDIATE, like an append: the version read and the write happen under
    // the write lock, with no chance of SQLITE_BUSY_SNAPSHOT in between.
    let tx = Tx::immediate(conn).map_err(store_error)?;
    let changed = tx
        .conn()
        .prepare_cached(SET_WAKEUP)
        .map_err(store_error)?
        .execute(params![stream_id, to_sql_int(version), at_ms])
        .map_err(store_error)?;
    tx.commit().map_err(store_error)?;
    Ok(changed > 0)
}

pub(super) fn due_wakeups(
    conn: &Connection,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Wakeup>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    conn.prepare_cached(DUE_WAKEUPS)
        .map_err(store_error)?
        .query_map(params![now_ms, to_sql_limit(limit)], |row| {
            Ok(Wakeup {
                stream_id: row.get(0)?,
                at_ms: row.get(1)?,
                version: get_u64(row, 2)?,
            })
        })
        .map_err(store_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_error)
}

/// Answered from the UNIQUE (stream_id, version) index: one seek.
const STREAM_VERSION: &str =
    "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = CAST(?1 AS TEXT)";

fn current_version(conn: &Connection, stream_id: &str) -> Result<u64, StoreError> {
    conn.prepare_cached(STREAM_VERSION)
        .map_err(store_error)?
        .query_row(params![stream_id], |row| get_u64(row, 0))
        .map_err(store_error)
}

fn recorded_event(row: &Row<'_>) -> rusqlite::Result<RecordedEvent> {
    Ok(RecordedEvent {
        position: LogPosition::new(0, get_u64(row, 0)?),
        stream_id: row.get(1)?,
        version: get_u64(row, 2)?,
        event_type: row.get(3)?,
        payload: row.get(4)?,
        recorded_at_ms: row.get(5)?,
    })
}

/// SQLite integers are signed; a negative one where the schema promises a
/// version or position becomes `IntegralValueOutOfRange`, which
/// `store_error` reports as corruption.
fn get_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

/// Callers have checked `value <= i64::MAX` (versions via
/// `AppendRequest::validate`).
fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).expect("checked to be <= i64::MAX by the caller")
}

fn to_sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rusqlite::StatementStatus;

    use super::*;
    use crate::sqlite::schema;

    #[test]
    fn keyed_statements_are_planned_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("tally.sqlite")).unwrap();
        schema::configure(&conn, Duration::from_secs(1)).unwrap();
        schema::migrate(&mut conn).unwrap();
        for stream in ["a", "b", "c", "a", "d"] {
            current_version(&conn, stream).unwrap();
            read_stream(&conn, stream, 1, 10).unwrap();
            set_wakeup(&mut conn, stream, 1, Some(5)).unwrap();
        }
        for (after, limit) in [(0, 10), (3, 100), (7, 10)] {
            read_log(&conn, Some(LogPosition::new(0, after)), limit).unwrap();
            due_wakeups(&conn, after as i64, limit).unwrap();
        }
        for (name, sql) in [
            ("STREAM_VERSION", STREAM_VERSION),
            ("READ_STREAM", READ_STREAM),
            ("SET_WAKEUP", SET_WAKEUP),
            ("READ_LOG", READ_LOG),
            ("DUE_WAKEUPS", DUE_WAKEUPS),
        ] {
            let statement = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                statement.get_status(StatementStatus::RePrepare),
                0,
                "{name} was planned again when its parameters were bound again"
            );
        }
        // Still the index seek the comment above promises, not a scan.
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {STREAM_VERSION}"))
            .unwrap()
            .query_map(["a"], |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING COVERING INDEX") && step.contains("stream_id=?")),
            "{plan:?}"
        );
    }
}
