//! The PostgreSQL backend passes the whole conformance suite, each case in a
//! fresh database on the server named by `TALLY_TEST_DATABASE_URL`.

use tally_store::postgres::PostgresHarness;

tally_store::conformance_tests!(PostgresHarness::new());
