//! The SQLite backend passes the whole conformance suite.

use tally_store::sqlite::SqliteHarness;

tally_store::conformance_tests!(SqliteHarness::new());
