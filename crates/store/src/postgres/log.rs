//! The global log, and the snapshot fence that keeps a reader from ever
//! skipping an event.
//!
//! # Why a fence
//!
//! `position` comes from an identity sequence, handed out when a row is
//! inserted, not when its transaction commits. Transaction A can take
//! position 10, transaction B position 11, and B can commit first. A reader
//! that returned everything committed, in position order, would return 11;
//! its consumer would checkpoint 11 and, once A commits, never read 10.
//!
//! # The fence
//!
//! Every event also records `tx`, the 64-bit id (`xid8`) of the transaction
//! that wrote it. Ids are handed out in increasing order, and a transaction
//! has its id before it writes. `pg_snapshot_xmin(pg_current_snapshot())` is
//! the oldest transaction id still running when the statement's snapshot was
//! taken: every transaction with a smaller id has finished (committed or
//! rolled back), and any transaction that commits from now on has an id at
//! or above it. So a reader that
//!
//! - returns only events with `tx < xmin` (all final), and
//! - orders the log by `(tx, position)` and pages strictly after the
//!   `(tx, seq)` cursor it was given,
//!
//! can never later meet an event that sorts before one it returned: a late
//! commit has `tx >= xmin`, above everything returned. Rows of one
//! transaction keep their insert order through `position`.
//!
//! # The offset
//!
//! `tx` is, more exactly, the transaction id plus `log_order.tx_offset`: 0
//! until a logical restore into a cluster whose ids are behind the dump's
//! makes `migrate` raise it (`order.rs`). The fence is `xmin` plus the same
//! offset, read in the same statement, so everything above holds with
//! `xmin + offset` in place of `xmin`.
//!
//! The price is latency, not correctness: an event is held back while any
//! older transaction on the cluster is still running (in any database: ids
//! are cluster-wide), e.g. an idle-in-transaction session. Set
//! `idle_in_transaction_session_timeout` on the server.
//!
//! # Read-your-writes
//!
//! The contract also says a read that starts after an append returned sees
//! it. An event held back by the fence breaks that, so when the fence hides
//! committed events that belong in the page, the reader waits for the older
//! transactions to finish (polling, without holding a connection) and reads
//! again, for at most [`PostgresOptions::log_fence_wait`]. Past that it
//! returns the events before the fence: late, never out of order.
//!
//! [`PostgresOptions::log_fence_wait`]: super::PostgresOptions::log_fence_wait

use std::time::Duration;

use tokio::time::Instant;

use super::PostgresStore;
use super::error::store_error;
use super::sql::{get, recorded_event, to_sql_limit};
use crate::{LogPosition, RecordedEvent, StoreError};

/// `settled`: the row's transaction is below the fence, `xmin` plus the
/// log's offset. The payload of a held-back row is not sent: only its
/// existence matters. Read through the `(tx, position)` index from the
/// cursor, stopping after `$3` rows. The offset is a scalar subquery so that
/// a missing `log_order` row makes the fence NULL, an error below, rather
/// than an empty log.
pub(super) const READ_LOG: &str = "
    SELECT e.stream_id, e.version, e.position, e.tx::text::bigint, e.event_type,
           CASE WHEN e.tx < f.fence THEN e.payload END,
           e.recorded_at_ms,
           e.tx < f.fence AS settled
    FROM (
        SELECT ((pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                 + (SELECT tx_offset FROM log_order))::text)::xid8 AS fence
    ) f
    CROSS JOIN LATERAL (
        SELECT * FROM events
        WHERE (tx, position) > ($1::text::xid8, $2::bigint)
        ORDER BY tx, position
        LIMIT $3
    ) e
    ORDER BY e.tx, e.position";

/// Longest pause between two reads while waiting for the fence.
const MAX_PAUSE: Duration = Duration::from_millis(20);

pub(super) async fn read_log(
    store: &PostgresStore,
    after: Option<LogPosition>,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let Some((cursor_tx, cursor_seq)) = cursor(after) else {
        return Ok(Vec::new());
    };
    if limit == 0 {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + store.options().log_fence_wait;
    let mut pause = Duration::from_millis(1);
    loop {
        let page = read_page(store, &cursor_tx, cursor_seq, limit).await?;
        if !page.held_back {
            return Ok(page.settled);
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::debug!(
                returned = page.settled.len(),
                "read_log: older transactions still running, returning the events before them"
            );
            return Ok(page.settled);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

struct Page {
    /// Events below the fence, in log order.
    settled: Vec<RecordedEvent>,
    /// Committed events after them, within the limit, that the fence hid.
    held_back: bool,
}

async fn read_page(
    store: &PostgresStore,
    cursor_tx: &str,
    cursor_seq: i64,
    limit: usize,
) -> Result<Page, StoreError> {
    let client = store.client().await?;
    let statement = client.prepare_cached(READ_LOG).await.map_err(store_error)?;
    let rows = client
        .query(&statement, &[&cursor_tx, &cursor_seq, &to_sql_limit(limit)])
        .await
        .map_err(store_error)?;
    let mut settled = Vec::with_capacity(rows.len());
    for row in &rows {
        // Rows are in (tx, position) order and the fence is one number, so
        // the settled rows are a prefix.
        let Some(below_fence) = get::<Option<bool>>(row, 7)? else {
            return Err(StoreError::Corrupt(
                "log_order has no row: the log's fence is unknown".into(),
            ));
        };
        if !below_fence {
            return Ok(Page {
                settled,
                held_back: true,
            });
        }
        settled.push(recorded_event(row)?);
    }
    Ok(Page {
        settled,
        held_back: false,
    })
}

/// The `(tx, seq)` to read strictly after, as SQL parameters; `None` when no
/// position can follow it.
fn cursor(after: Option<LogPosition>) -> Option<(String, i64)> {
    let after = after.unwrap_or_default();
    match i64::try_from(after.seq) {
        Ok(seq) => Some((after.tx.to_string(), seq)),
        // Positions are bigints: nothing else in this transaction follows.
        Err(_) => after.tx.checked_add(1).map(|tx| (tx.to_string(), 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_from_the_start_and_saturates() {
        assert_eq!(cursor(None), Some(("0".into(), 0)));
        assert_eq!(
            cursor(Some(LogPosition::new(900, 7))),
            Some(("900".into(), 7))
        );
        assert_eq!(
            cursor(Some(LogPosition::new(900, u64::MAX))),
            Some(("901".into(), 0))
        );
        assert_eq!(cursor(Some(LogPosition::new(u64::MAX, u64::MAX))), None);
    }
}
