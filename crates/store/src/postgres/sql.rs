//! The statements, over one pooled connection. `mod.rs` decides which
//! connection; `log.rs` has the global log and its fence.

use deadpool_postgres::{Client, GenericClient};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;

use super::error::{Failure, store_error};
use crate::{
    ChargeRecord, HoldRecord, IdempotencyRecord, LogPosition, RecordedEvent, Snapshot, StoreError,
    Wakeup,
};

/// A stream's events from a version on: its primary key, in order, in the
/// columns `recorded_event` reads. xid8 has no Rust type in tokio-postgres;
/// as text it converts losslessly to bigint (a full transaction id stays
/// below 2^63 until the epoch counter wraps 2^31 times).
pub(super) const READ_STREAM: &str =
    "SELECT stream_id, version, position, tx::text::bigint, event_type, payload, recorded_at_ms
     FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3";

/// One primary-key lookup per version, as [`FIND_IDEMPOTENCY`] does per key.
pub(super) const READ_VERSIONS: &str = "
    SELECT e.stream_id, e.version, e.position, e.tx::text::bigint, e.event_type, e.payload, e.recorded_at_ms
    FROM (SELECT DISTINCT v FROM unnest($2::bigint[]) AS v) AS wanted(version)
    JOIN events e ON e.stream_id = $1 AND e.version = wanted.version
    ORDER BY e.version";

/// One primary-key lookup per key, whatever the plan cache decides: with
/// `key = ANY($2)`, a cached generic plan scanned every key of the stream.
/// A repeated key still matches its row once.
pub(super) const FIND_IDEMPOTENCY: &str = "
    SELECT i.key, i.fingerprint, i.response
    FROM (SELECT DISTINCT k FROM unnest($2::text[]) AS k) AS wanted(key)
    JOIN idempotency i ON i.stream_id = $1 AND i.key = wanted.key";

/// Like [`FIND_IDEMPOTENCY`], by primary key.
pub(super) const FIND_HOLDS: &str = "
    SELECT h.hold_id, h.payload
    FROM (SELECT DISTINCT k FROM unnest($2::text[]) AS k) AS wanted(hold_id)
    JOIN resolved_holds h ON h.stream_id = $1 AND h.hold_id = wanted.hold_id";

/// Like [`FIND_IDEMPOTENCY`], by primary key.
pub(super) const FIND_CHARGES: &str = "
    SELECT c.charge_key, c.payload
    FROM (SELECT DISTINCT k FROM unnest($2::text[]) AS k) AS wanted(charge_key)
    JOIN refunded_charges c ON c.stream_id = $1 AND c.charge_key = wanted.charge_key";

pub(super) const LOAD_SNAPSHOT: &str =
    "SELECT version, payload FROM snapshots WHERE stream_id = $1";

pub(super) const STREAM_VERSION: &str =
    "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1";

/// Writes only if the stream's last event is at `$2`. Run after
/// [`LOCK_WAKEUP`] in the same transaction: the version check reads this
/// statement's snapshot, taken once the row lock is held, so an append
/// that wrote or kept the row (keeping it still locks it) has committed
/// and its version is seen, and the write is refused. Without the lock an
/// append committing between the check and the write would go unseen: it
/// leaves the row's version alone when the wakeup did not change, so the
/// conflict clause's guard below could not tell. The guard still orders a
/// first row that an append inserts meanwhile (its insert always records
/// its version).
const SET_WAKEUP: &str = "
    INSERT INTO wakeups (stream_id, version, at_ms)
    SELECT $1::text, $2::bigint, $3::bigint
    WHERE (SELECT MAX(version) FROM events WHERE stream_id = $1::text) = $2::bigint
    ON CONFLICT (stream_id)
    DO UPDATE SET version = excluded.version, at_ms = excluded.at_ms
    WHERE wakeups.version <= excluded.version";

/// Waits for any append that holds the stream's wakeup row (whether it
/// changed it or not) to finish; an absent row locks nothing.
const LOCK_WAKEUP: &str = "SELECT 1 FROM wakeups WHERE stream_id = $1 FOR UPDATE";

/// Served by the partial index `wakeups_due`, in its order; the column's "C"
/// collation makes the tie-break bytewise.
const DUE_WAKEUPS: &str = "
    SELECT stream_id, at_ms, version FROM wakeups
    WHERE at_ms <= $1 ORDER BY at_ms, stream_id LIMIT $2";

pub(super) async fn read_stream(
    client: &Client,
    stream_id: &str,
    from_version: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let from_version = from_version.max(1);
    if limit == 0 || from_version > i64::MAX as u64 {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(READ_STREAM)
        .await
        .map_err(store_error)?;
    let rows = client
        .query(
            &statement,
            &[&stream_id, &to_sql_int(from_version), &to_sql_limit(limit)],
        )
        .await
        .map_err(store_error)?;
    let events = rows
        .iter()
        .map(recorded_event)
        .collect::<Result<Vec<_>, _>>()?;

    // The primary key rules out duplicates but not holes; a hole would make
    // every fold over this stream silently wrong.
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

pub(super) async fn stream_version(
    client: &impl GenericClient,
    stream_id: &str,
) -> Result<u64, StoreError> {
    // Answered from the primary key index: one seek.
    let statement = client
        .prepare_cached(STREAM_VERSION)
        .await
        .map_err(store_error)?;
    let row = client
        .query_one(&statement, &[&stream_id])
        .await
        .map_err(store_error)?;
    get_u64(&row, 0)
}

pub(super) async fn find_idempotency(
    client: &Client,
    stream_id: &str,
    keys: &[String],
) -> Result<Vec<IdempotencyRecord>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(FIND_IDEMPOTENCY)
        .await
        .map_err(store_error)?;
    client
        .query(&statement, &[&stream_id, &keys])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(IdempotencyRecord {
                key: get(row, 0)?,
                fingerprint: get(row, 1)?,
                response: get(row, 2)?,
            })
        })
        .collect()
}

pub(super) async fn find_holds(
    client: &Client,
    stream_id: &str,
    hold_ids: &[String],
) -> Result<Vec<HoldRecord>, StoreError> {
    if hold_ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(FIND_HOLDS)
        .await
        .map_err(store_error)?;
    client
        .query(&statement, &[&stream_id, &hold_ids])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(HoldRecord {
                hold_id: get(row, 0)?,
                payload: get(row, 1)?,
            })
        })
        .collect()
}

pub(super) async fn find_charges(
    client: &Client,
    stream_id: &str,
    charge_keys: &[String],
) -> Result<Vec<ChargeRecord>, StoreError> {
    if charge_keys.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(FIND_CHARGES)
        .await
        .map_err(store_error)?;
    client
        .query(&statement, &[&stream_id, &charge_keys])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(ChargeRecord {
                charge_key: get(row, 0)?,
                payload: get(row, 1)?,
            })
        })
        .collect()
}

pub(super) async fn save_snapshot(
    client: &Client,
    stream_id: &str,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    if snapshot.version > i64::MAX as u64 {
        return Err(StoreError::Internal(format!(
            "snapshot version {} of stream {stream_id:?} is out of range",
            snapshot.version
        )));
    }
    let statement = client
        .prepare_cached(
            "INSERT INTO snapshots (stream_id, version, payload) VALUES ($1, $2, $3)
             ON CONFLICT (stream_id)
             DO UPDATE SET version = excluded.version, payload = excluded.payload",
        )
        .await
        .map_err(store_error)?;
    client
        .execute(
            &statement,
            &[&stream_id, &to_sql_int(snapshot.version), &snapshot.payload],
        )
        .await
        .map_err(store_error)?;
    Ok(())
}

pub(super) async fn load_snapshot(
    client: &Client,
    stream_id: &str,
) -> Result<Option<Snapshot>, StoreError> {
    let statement = client
        .prepare_cached(LOAD_SNAPSHOT)
        .await
        .map_err(store_error)?;
    client
        .query_opt(&statement, &[&stream_id])
        .await
        .map_err(store_error)?
        .map(|row| {
            Ok(Snapshot {
                version: get_u64(&row, 0)?,
                payload: get(&row, 1)?,
            })
        })
        .transpose()
}

pub(super) async fn set_wakeup(
    client: &mut Client,
    stream_id: &str,
    version: u64,
    at_ms: Option<i64>,
) -> Result<bool, StoreError> {
    // No stream is at version 0 (it has no row to guard) or past i64::MAX.
    if version == 0 || version > i64::MAX as u64 {
        return Ok(false);
    }
    let tx = client.transaction().await.map_err(store_error)?;
    let lock = tx.prepare_cached(LOCK_WAKEUP).await.map_err(store_error)?;
    let statement = tx.prepare_cached(SET_WAKEUP).await.map_err(store_error)?;
    let written = async {
        tx.execute(&lock, &[&stream_id]).await?;
        tx.execute(&statement, &[&stream_id, &to_sql_int(version), &at_ms])
            .await
    }
    .await;
    match written {
        Ok(changed) => {
            tx.commit().await.map_err(store_error)?;
            Ok(changed > 0)
        }
        // Only under a stricter default isolation than READ COMMITTED, where
        // meeting the append's newer row fails instead of re-checking: the
        // same outcome, a stale wakeup not written.
        Err(err) if err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) => Ok(false),
        Err(err) => Err(store_error(err)),
    }
}

pub(super) async fn due_wakeups(
    client: &Client,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Wakeup>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(DUE_WAKEUPS)
        .await
        .map_err(store_error)?;
    client
        .query(&statement, &[&now_ms, &to_sql_limit(limit)])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(Wakeup {
                stream_id: get(row, 0)?,
                at_ms: get(row, 1)?,
                version: get_u64(row, 2)?,
            })
        })
        .collect()
}

pub(super) async fn read_versions(
    client: &Client,
    stream_id: &str,
    versions: &[u64],
) -> Result<Vec<RecordedEvent>, StoreError> {
    // A version past i64 is one no stream has.
    let versions: Vec<i64> = versions
        .iter()
        .filter_map(|v| i64::try_from(*v).ok())
        .collect();
    if versions.is_empty() {
        return Ok(Vec::new());
    }
    let statement = client
        .prepare_cached(READ_VERSIONS)
        .await
        .map_err(store_error)?;
    let rows = client
        .query(&statement, &[&stream_id, &versions])
        .await
        .map_err(store_error)?;
    rows.iter().map(recorded_event).collect()
}

/// Reads a row selected like [`READ_STREAM`].
pub(super) fn recorded_event(row: &Row) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        stream_id: get(row, 0)?,
        version: get_u64(row, 1)?,
        position: LogPosition::new(get_u64(row, 3)?, get_u64(row, 2)?),
        event_type: get(row, 4)?,
        payload: get(row, 5)?,
        recorded_at_ms: get(row, 6)?,
    })
}

pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index).map_err(|err| {
        store_error(Failure::Decode(format!(
            "column {index} ({}): {err}",
            row.columns().get(index).map_or("?", |column| column.name())
        )))
    })
}

/// Versions, positions and transaction ids are never negative; one that is
/// means the data is not what the schema promises.
pub(super) fn get_u64(row: &Row, index: usize) -> Result<u64, StoreError> {
    let value: i64 = get(row, index)?;
    u64::try_from(value).map_err(|_| {
        store_error(Failure::Decode(format!(
            "column {index} holds {value}, expected a non-negative integer"
        )))
    })
}

/// Callers have checked `value <= i64::MAX` (versions via
/// `AppendRequest::validate`).
fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).expect("checked to be <= i64::MAX by the caller")
}

pub(super) fn to_sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
