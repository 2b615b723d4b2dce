//! The one place PostgreSQL and pool errors become [`StoreError`]s.

use std::io;

use deadpool_postgres::{PoolError, TimeoutType};
use tokio_postgres::error::SqlState;

use crate::StoreError;

/// Anything the PostgreSQL backend can fail with, before it is classified.
#[derive(Debug)]
pub(super) enum Failure {
    /// A statement, or a connection being opened.
    Postgres(tokio_postgres::Error),
    /// Waiting for a connection from the pool.
    Pool(PoolError),
    /// A stored value that does not fit what the schema promises.
    Decode(String),
    /// Building the pool from a valid configuration: a bug.
    Setup(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Postgres(err)
    }
}

impl From<PoolError> for Failure {
    fn from(err: PoolError) -> Self {
        Self::Pool(err)
    }
}

/// Classifies by what the caller can do about it: retry later
/// (`Unavailable`), stop trusting the data (`Corrupt`) or report a bug
/// (`Internal`). An append's conflicts and duplicate keys are told apart by
/// the append itself (`append.rs`), which knows which stream failed.
pub(super) fn store_error(failure: impl Into<Failure>) -> StoreError {
    classify(failure.into())
}

fn classify(failure: Failure) -> StoreError {
    let err = match failure {
        Failure::Decode(message) => return StoreError::Corrupt(message),
        Failure::Setup(message) => return StoreError::Internal(message),
        Failure::Pool(PoolError::Timeout(kind)) => {
            let what = match kind {
                TimeoutType::Wait => "waiting for a free connection in the pool",
                TimeoutType::Create => "opening a connection",
                TimeoutType::Recycle => "checking a pooled connection",
            };
            return StoreError::Unavailable(format!("postgres: timed out {what}"));
        }
        Failure::Pool(PoolError::Closed) => {
            return StoreError::Unavailable("postgres: the connection pool is closed".into());
        }
        Failure::Pool(PoolError::Backend(err)) => err,
        Failure::Pool(other) => return StoreError::Internal(format!("postgres pool: {other}")),
        Failure::Postgres(err) => err,
    };

    let Some(db) = err.as_db_error() else {
        return client_error(&err);
    };
    let message = format!("postgres: {db}");
    let code = db.code();
    match code {
        c if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            StoreError::Unavailable(message)
        }
        c if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
            StoreError::Corrupt(message)
        }
        c if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::UNDEFINED_COLUMN => {
            StoreError::Unavailable(format!(
                "{message} (is the database migrated to this build's schema? run the migration)"
            ))
        }
        c if is_transient(c) => StoreError::Unavailable(message),
        // Includes the append-only trigger firing and missing privileges:
        // a bug or a misconfiguration, which retrying will not fix.
        _ => StoreError::Internal(message),
    }
}

/// SQLSTATEs meaning the database cannot serve right now: connection
/// exceptions, shutdown and recovery, resource exhaustion, timeouts,
/// a standby after failover, authentication and a missing database.
fn is_transient(code: &SqlState) -> bool {
    const CLASSES: [&str; 5] = [
        "08", // connection exception
        "53", // insufficient resources (too many connections, disk full)
        "57", // operator intervention (shutdown, statement timeout)
        "58", // system error (I/O)
        "28", // invalid authorization
    ];
    let code_text = code.code();
    CLASSES.iter().any(|class| code_text.starts_with(class))
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::UNDEFINED_DATABASE
        || *code == SqlState::TOO_MANY_CONNECTIONS
}

/// An error the client raised itself (no SQLSTATE). Its kind is private to
/// tokio-postgres, so classify by what is public: closed connections and I/O
/// errors are the database being unreachable; so are the connect-time
/// timeout, TLS and authentication failures; the rest (parameter and column
/// mismatches, protocol surprises) are bugs.
fn client_error(err: &tokio_postgres::Error) -> StoreError {
    // tokio-postgres' message names the kind only ("error performing TLS
    // handshake"); the source says why (the server has no TLS, whose
    // certificate it was).
    let message = match std::error::Error::source(err) {
        Some(source) => format!("postgres: {err}: {source}"),
        None => format!("postgres: {err}"),
    };
    let has_io_source =
        std::error::Error::source(err).is_some_and(|source| source.is::<io::Error>());
    if err.is_closed() || has_io_source {
        return StoreError::Unavailable(message);
    }
    match err.to_string().as_str() {
        "timeout waiting for server"
        | "error performing TLS handshake"
        | "authentication error" => StoreError::Unavailable(message),
        _ => StoreError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_and_closed_pools_are_unavailable() {
        for kind in [TimeoutType::Wait, TimeoutType::Create, TimeoutType::Recycle] {
            assert!(matches!(
                store_error(PoolError::Timeout(kind)),
                StoreError::Unavailable(_)
            ));
        }
        assert!(matches!(
            store_error(PoolError::Closed),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            store_error(PoolError::NoRuntimeSpecified),
            StoreError::Internal(_)
        ));
    }

    #[test]
    fn undecodable_values_are_corrupt() {
        assert!(matches!(
            store_error(Failure::Decode("negative version".into())),
            StoreError::Corrupt(_)
        ));
    }

    #[test]
    fn transient_sqlstates() {
        for code in [
            SqlState::CONNECTION_FAILURE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::QUERY_CANCELED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::DISK_FULL,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::INVALID_PASSWORD,
            SqlState::UNDEFINED_DATABASE,
        ] {
            assert!(is_transient(&code), "{code:?}");
        }
        for code in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::RAISE_EXCEPTION,
            SqlState::SYNTAX_ERROR,
        ] {
            assert!(!is_transient(&code), "{code:?}");
        }
    }
}
