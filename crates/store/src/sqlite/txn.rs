//! Transactions and savepoints run through the connection's statement
//! cache.
//!
//! rusqlite's `Transaction` and `Savepoint` send `BEGIN`, `SAVEPOINT`,
//! `RELEASE` and `COMMIT` through `execute_batch`, which parses and plans
//! each one anew (and formats the savepoint's name). A group commit opens a
//! savepoint per stream, so under spread traffic that parsing was about 4 %
//! of `tallyd`'s CPU on this store. Here each is prepared once per
//! connection and stepped again after that.
//!
//! Both guards roll back unless finished: dropping a [`Tx`] before
//! [`Tx::commit`] rolls the transaction back, dropping a [`Savepoint`]
//! before [`Savepoint::release`] undoes what was written since it opened.

use rusqlite::Connection;

/// A transaction begun and ended through the statement cache; rolled
/// back on drop unless committed.
pub(super) struct Tx<'c> {
    conn: &'c Connection,
}

impl<'c> Tx<'c> {
    /// `BEGIN IMMEDIATE`: the write lock is taken at once, before anything
    /// is read.
    pub(super) fn immediate(conn: &'c Connection) -> rusqlite::Result<Self> {
        run(conn, "BEGIN IMMEDIATE")?;
        Ok(Tx { conn })
    }

    /// `BEGIN`: in WAL mode, one snapshot from the first read on.
    pub(super) fn deferred(conn: &'c Connection) -> rusqlite::Result<Self> {
        run(conn, "BEGIN")?;
        Ok(Tx { conn })
    }

    pub(super) fn conn(&self) -> &'c Connection {
        self.conn
    }

    /// A savepoint inside the transaction; one at a time.
    pub(super) fn savepoint(&self) -> rusqlite::Result<Savepoint<'_>> {
        run(self.conn, "SAVEPOINT one_stream")?;
        Ok(Savepoint {
            conn: self.conn,
            released: false,
        })
    }

    /// On an error the transaction is rolled back when `self` drops, unless
    /// SQLite has already rolled it back itself (an I/O error does).
    pub(super) fn commit(self) -> rusqlite::Result<()> {
        run(self.conn, "COMMIT")
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // Committed (or rolled back by SQLite): nothing is open.
        if !self.conn.is_autocommit() {
            let _ = run(self.conn, "ROLLBACK");
        }
    }
}

pub(super) struct Savepoint<'t> {
    conn: &'t Connection,
    released: bool,
}

impl<'t> Savepoint<'t> {
    pub(super) fn conn(&self) -> &'t Connection {
        self.conn
    }

    /// Keeps what was written since the savepoint opened, as part of the
    /// enclosing transaction.
    pub(super) fn release(mut self) -> rusqlite::Result<()> {
        run(self.conn, "RELEASE one_stream")?;
        self.released = true;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.released && !self.conn.is_autocommit() {
            // Undo, then pop it off the stack; the transaction stays open.
            let _ = run(self.conn, "ROLLBACK TO one_stream");
            let _ = run(self.conn, "RELEASE one_stream");
        }
    }
}

fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .unwrap();
        conn
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut statement = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn insert(conn: &Connection, x: i64) -> rusqlite::Result<usize> {
        conn.prepare_cached("INSERT INTO t (x) VALUES (?1)")?
            .execute([x])
    }

    #[test]
    fn a_dropped_savepoint_undoes_only_its_own_writes() {
        let conn = table();
        let tx = Tx::immediate(&conn).unwrap();
        let kept = tx.savepoint().unwrap();
        insert(kept.conn(), 1).unwrap();
        kept.release().unwrap();
        let dropped = tx.savepoint().unwrap();
        insert(dropped.conn(), 2).unwrap();
        // A duplicate fails half-way, as a repeated idempotency key does.
        assert!(insert(dropped.conn(), 2).is_err());
        drop(dropped);
        let after = tx.savepoint().unwrap();
        insert(after.conn(), 3).unwrap();
        after.release().unwrap();
        tx.commit().unwrap();
        assert_eq!(rows(&conn), vec![1, 3]);
        assert!(conn.is_autocommit());
    }

    #[test]
    fn a_dropped_transaction_writes_nothing_and_the_statements_run_again() {
        let conn = table();
        for round in 0..3 {
            let tx = Tx::immediate(&conn).unwrap();
            let savepoint = tx.savepoint().unwrap();
            insert(savepoint.conn(), 10 + round).unwrap();
            savepoint.release().unwrap();
            insert(tx.conn(), 20 + round).unwrap();
            drop(tx);
            assert!(
                conn.is_autocommit(),
                "round {round} left a transaction open"
            );
        }
        assert!(rows(&conn).is_empty());
        let tx = Tx::immediate(&conn).unwrap();
        insert(tx.conn(), 7).unwrap();
        tx.commit().unwrap();
        assert_eq!(rows(&conn), vec![7]);
    }

    #[test]
    fn begin_takes_the_write_lock_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock.db");
        let first = Connection::open(&path).unwrap();
        first
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)")
            .unwrap();
        let second = Connection::open(&path).unwrap();
        let held = Tx::immediate(&first).unwrap();
        // IMMEDIATE: the second writer is refused before it reads anything.
        let err = Tx::immediate(&second).err().expect("the lock is held");
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy)
        );
        held.commit().unwrap();
        Tx::immediate(&second).unwrap().commit().unwrap();
    }
}
