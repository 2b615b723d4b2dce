//! A conformance harness for the SQLite backend, also handy for any test that
//! wants a real, throwaway store.

use std::path::PathBuf;

use tempfile::TempDir;

use super::{SqliteOptions, SqliteStore};
use crate::conformance::Harness;

/// Makes each store in its own temporary directory.
#[derive(Clone, Debug, Default)]
pub struct SqliteHarness {
    options: SqliteOptions,
}

impl SqliteHarness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_options(options: SqliteOptions) -> Self {
        Self { options }
    }
}

/// Where a harness-made store lives; the directory is deleted when this is
/// dropped, so keep it for as long as the store is needed.
#[derive(Debug)]
pub struct SqliteLocation {
    pub path: PathBuf,
    _dir: TempDir,
}

impl Harness for SqliteHarness {
    type Store = SqliteStore;
    type Location = SqliteLocation;

    async fn create(&self) -> (SqliteStore, SqliteLocation) {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        // A subdirectory that does not exist yet, so every case also checks
        // that `open` creates the parent directory.
        let path = dir.path().join("data").join("tally.sqlite");
        let store = SqliteStore::open_with(&path, self.options.clone())
            .await
            .expect("open a fresh sqlite store");
        (store, SqliteLocation { path, _dir: dir })
    }

    async fn reopen(&self, location: &SqliteLocation) -> SqliteStore {
        SqliteStore::open_with(&location.path, self.options.clone())
            .await
            .expect("reopen the sqlite store")
    }
}
