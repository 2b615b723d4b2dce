//! The one place rusqlite errors become [`StoreError`]s.

use rusqlite::ErrorCode;

use crate::StoreError;

/// Classifies by what the caller can do about it: retry later
/// (`Unavailable`), stop trusting the file (`Corrupt`), or report a bug
/// (`Internal`). Conflicts and duplicate keys are detected by the append
/// itself, where it knows which stream and key they concern.
pub(super) fn store_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &err {
        E::SqliteFailure(failure, _) => match failure.code {
            // The writer lock was not granted within busy_timeout, or the
            // file cannot be opened, read or written right now.
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::OutOfMemory => StoreError::Unavailable(err.to_string()),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(err.to_string())
            }
            // Includes the append-only triggers firing: only a bug in this
            // crate can get there.
            _ => StoreError::Internal(err.to_string()),
        },
        // A stored value does not fit its Rust type: the schema's invariants
        // no longer hold for this row.
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => StoreError::Corrupt(err.to_string()),
        E::InvalidPath(_) => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Internal(err.to_string()),
    }
}

/// Whether `err` is a UNIQUE or PRIMARY KEY violation, which the append maps
/// to the domain error for the row it was inserting.
pub(super) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn failure(extended_code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(extended_code), None)
    }

    #[test]
    fn busy_and_io_are_unavailable() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_FULL,
            ffi::SQLITE_CANTOPEN,
        ] {
            assert!(
                matches!(store_error(failure(code)), StoreError::Unavailable(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn damaged_files_and_bad_values_are_corrupt() {
        assert!(matches!(
            store_error(failure(ffi::SQLITE_CORRUPT)),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            store_error(failure(ffi::SQLITE_NOTADB)),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            store_error(rusqlite::Error::IntegralValueOutOfRange(0, -1)),
            StoreError::Corrupt(_)
        ));
    }

    #[test]
    fn trigger_aborts_are_internal_not_duplicates() {
        let err = failure(ffi::SQLITE_CONSTRAINT_TRIGGER);
        assert!(!is_unique_violation(&err));
        assert!(matches!(store_error(err), StoreError::Internal(_)));
        assert!(is_unique_violation(&failure(
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )));
        assert!(is_unique_violation(&failure(ffi::SQLITE_CONSTRAINT_UNIQUE)));
    }
}
