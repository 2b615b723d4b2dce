//! The global log's order across a logical dump and restore: the offset
//! added to transaction ids, how a log that needs a new one is recognised,
//! and how `migrate` sets it.
//!
//! # Why an offset
//!
//! The log is ordered by `(tx, position)` and read behind the fence in
//! `log.rs`, `tx` being the id of the transaction that wrote the event. A
//! physical backup restores the cluster's transaction counter with the data,
//! but `pg_dump` restored into a new cluster does not: the events keep their
//! `tx`, and the new cluster hands out ids from where it stands, often far
//! below. Its new events would sort before the restored ones, behind every
//! projection's checkpoint, and never be applied; the restored events above
//! the new cluster's ids would sit behind the fence.
//!
//! So `tx` is the transaction id plus `log_order.tx_offset` (migration 7):
//! 0 on a database that was never restored, raised by `migrate` after a
//! restore so that new transactions sort after every restored event. The
//! fence moves with it (`xmin + offset`), and its argument holds as before:
//! a transaction that commits from now on has an id at or above `xmin`,
//! hence a `tx` at or above `xmin + offset`. The offset only ever grows, so
//! a reader whose snapshot still shows the old one computes a lower fence:
//! more cautious, never wrong. Events already written keep their `tx`:
//! they are append-only, and their positions live on in checkpoints and in
//! the consistency tokens callers hold.
//!
//! The append reads no table for it: `migrate` writes the offset into
//! `events.tx`'s default as a constant, in the same transaction as the
//! table, so the two always agree. At offset 0 the default is the bare
//! `pg_current_xact_id()` the log always had.
//!
//! # Recognising a log that needs it
//!
//! Every event this cluster wrote was written by a transaction that has
//! finished, so its id is below the `xmax` of any later snapshot (one past
//! the newest finished transaction) and its `tx` below `xmax + offset`. A newest `tx`
//! at or above that was written elsewhere, by a cluster whose counter was
//! ahead of this one's: a logical restore. [`PostgresStore::schema_status`]
//! reports it as [`SchemaStatus::LogNeedsRenumbering`], so `tallyd` does not
//! serve (nor append events that would sort before it) until `tallyd
//! migrate` has run; `tallyd verify` reports it as a log out of order.
//!
//! # Setting it
//!
//! Under `LOCK TABLE events IN EXCLUSIVE MODE`, which waits for appends in
//! flight and holds new ones until the migration commits while reads go on,
//! the offset becomes `newest + 1 - xmin`, `xmin` being the oldest
//! transaction still running anywhere on the cluster: every transaction that
//! can write from then on has an id at or above it, hence a `tx` above the
//! newest event. (Not `xmax`: a transaction still running may have an id
//! below it, and append after the migration.) Run again, it finds nothing
//! to do.
//!
//! # On Citus
//!
//! The offset and the check are per node: they hold for one node's
//! transaction ids. They do not make one order out of several workers'
//! counters; see "Distributing by account" in `docs/operations.md`.
//!
//! [`PostgresStore::schema_status`]: super::PostgresStore::schema_status
//! [`SchemaStatus::LogNeedsRenumbering`]: super::SchemaStatus::LogNeedsRenumbering

use deadpool_postgres::GenericClient;

use super::error::store_error;
use super::sql::get;
use crate::StoreError;

/// The schema version that creates `log_order`.
pub(super) const LOG_ORDER_VERSION: u32 = 7;

/// The newest event's `tx`, the snapshot's bounds and the offset, all from
/// one snapshot. `events.tx` (not `tx`) so that the index on `(tx,
/// position)` serves the `ORDER BY`: one descent, whatever the log's size.
const READ_ORDER: &str = "
    SELECT (SELECT events.tx::text::bigint FROM events ORDER BY events.tx DESC LIMIT 1),
           pg_snapshot_xmin(s)::text::bigint,
           pg_snapshot_xmax(s)::text::bigint,
           o.tx_offset
    FROM pg_current_snapshot() AS s CROSS JOIN log_order o";

/// Where the log stands against this cluster's transaction ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LogOrder {
    /// The newest event's `tx`; `None` for an empty log.
    pub(super) newest_tx: Option<i64>,
    /// The oldest transaction id still running.
    pub(super) xmin: i64,
    /// One past the newest finished transaction id.
    pub(super) xmax: i64,
    pub(super) offset: i64,
}

impl LogOrder {
    /// Every `tx` this cluster has written is below this.
    pub(super) fn next_tx(&self) -> i64 {
        self.xmax.saturating_add(self.offset)
    }

    /// Whether the newest event was written by a cluster whose transaction
    /// ids were ahead of this one's.
    pub(super) fn needs_renumbering(&self) -> bool {
        self.newest_tx
            .is_some_and(|newest| newest >= self.next_tx())
    }

    /// The offset under which every transaction still to write sorts after
    /// the newest event; never lower than the current one.
    fn renumbered_offset(&self) -> i64 {
        let past_newest = self.newest_tx.map_or(0, |newest| {
            newest.saturating_add(1).saturating_sub(self.xmin)
        });
        self.offset.max(past_newest)
    }
}

/// What `migrate` did to the log's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renumbering {
    /// The newest event's `tx`, which every new event now follows.
    pub newest_tx: u64,
    pub offset_before: u64,
    pub offset_after: u64,
}

/// Reads where the log stands. Needs schema version [`LOG_ORDER_VERSION`].
pub(super) async fn read(client: &impl GenericClient) -> Result<LogOrder, StoreError> {
    let row = client
        .query_opt(READ_ORDER, &[])
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            StoreError::Corrupt("log_order has no row: the log's order is unknown".into())
        })?;
    Ok(LogOrder {
        newest_tx: get(&row, 0)?,
        xmin: get(&row, 1)?,
        xmax: get(&row, 2)?,
        offset: get(&row, 3)?,
    })
}

/// `events.tx`'s default for `offset`: a constant in the expression, so an
/// append reads no table. Through text because `xid8` has no arithmetic.
fn tx_default(offset: i64) -> String {
    if offset == 0 {
        "pg_current_xact_id()".to_owned()
    } else {
        format!("(((pg_current_xact_id()::text)::bigint + {offset})::text)::xid8")
    }
}

/// Raises the offset if the log needs it, inside `migrate`'s transaction
/// (READ COMMITTED, so each statement sees what committed before it).
/// Returns what it did; `None` when the order was already right.
pub(super) async fn renumber(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Option<Renumbering>, StoreError> {
    // Unlocked first: an ordered log, the usual case, blocks no append.
    if !read(tx).await?.needs_renumbering() {
        return Ok(None);
    }
    tx.batch_execute("LOCK TABLE events IN EXCLUSIVE MODE")
        .await
        .map_err(store_error)?;
    // Again under the lock: no append is in flight now, so the newest event
    // is final and every transaction that may still write one is at or
    // above this snapshot's xmin.
    let order = read(tx).await?;
    let offset = order.renumbered_offset();
    if offset == order.offset {
        return Ok(None);
    }
    tx.batch_execute(&format!(
        "ALTER TABLE events ALTER COLUMN tx SET DEFAULT {}",
        tx_default(offset)
    ))
    .await
    .map_err(store_error)?;
    tx.execute("UPDATE log_order SET tx_offset = $1", &[&offset])
        .await
        .map_err(store_error)?;
    let unsigned = |value: i64| {
        u64::try_from(value).map_err(|_| {
            StoreError::Corrupt(format!("the log's order holds a negative number: {value}"))
        })
    };
    Ok(Some(Renumbering {
        newest_tx: unsigned(order.newest_tx.unwrap_or_default())?,
        offset_before: unsigned(order.offset)?,
        offset_after: unsigned(offset)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(newest_tx: Option<i64>, xmin: i64, xmax: i64, offset: i64) -> LogOrder {
        LogOrder {
            newest_tx,
            xmin,
            xmax,
            offset,
        }
    }

    #[test]
    fn a_log_this_cluster_wrote_is_in_order() {
        assert!(!order(None, 700, 710, 0).needs_renumbering());
        assert!(!order(Some(709), 700, 710, 0).needs_renumbering());
        // Written under an offset, and read back with it.
        assert!(!order(Some(5_709), 700, 710, 5_000).needs_renumbering());
    }

    #[test]
    fn a_log_from_a_cluster_ahead_needs_renumbering() {
        assert!(order(Some(710), 700, 710, 0).needs_renumbering());
        assert!(order(Some(90_000), 700, 710, 0).needs_renumbering());
        assert!(order(Some(90_000), 700, 710, 5_000).needs_renumbering());
    }

    #[test]
    fn the_new_offset_puts_every_transaction_still_to_write_after_the_newest_event() {
        let restored = order(Some(90_000), 700, 710, 0);
        let offset = restored.renumbered_offset();
        // The oldest transaction that may still write gets the next tx.
        assert_eq!(700 + offset, 90_001);
        let after = order(Some(90_000), 700, 710, offset);
        assert!(!after.needs_renumbering());
        // And again: nothing to change.
        assert_eq!(after.renumbered_offset(), offset);
    }

    #[test]
    fn the_offset_never_goes_down() {
        assert_eq!(order(Some(10), 700, 710, 5_000).renumbered_offset(), 5_000);
        assert_eq!(order(None, 700, 710, 5_000).renumbered_offset(), 5_000);
    }

    #[test]
    fn the_default_is_the_bare_transaction_id_until_an_offset_is_needed() {
        assert_eq!(tx_default(0), "pg_current_xact_id()");
        assert_eq!(
            tx_default(89_301),
            "(((pg_current_xact_id()::text)::bigint + 89301)::text)::xid8"
        );
    }
}
