//! A conformance harness for the PostgreSQL backend: a fresh, migrated
//! database per store, dropped when its [`PostgresLocation`] is.
//!
//! A test process that is killed leaves its databases behind. They are all
//! named `tally_test_*`; remove them with
//!
//! ```sh
//! psql -Atc "SELECT format('DROP DATABASE %I WITH (FORCE);', datname)
//!            FROM pg_database WHERE datname LIKE 'tally\_test\_%'" | psql
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::{Config, NoTls};

use super::{PostgresOptions, PostgresStore, SCHEMA_VERSION};
use crate::conformance::Harness;

/// The environment variable naming the server the tests use, as the URL of
/// a database a superuser (or a role with `CREATEDB` and `CREATEROLE`) can
/// connect to.
pub const TEST_DATABASE_URL_ENV: &str = "TALLY_TEST_DATABASE_URL";
const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Makes each store in a database of its own on the server named by
/// `TALLY_TEST_DATABASE_URL` (default: the local `postgres` superuser).
#[derive(Clone, Debug)]
pub struct PostgresHarness {
    admin: Config,
    options: PostgresOptions,
}

impl Default for PostgresHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl PostgresHarness {
    /// Panics if `TALLY_TEST_DATABASE_URL` is not a valid PostgreSQL URL.
    pub fn new() -> Self {
        Self::with_options(PostgresOptions::default())
    }

    pub fn with_options(options: PostgresOptions) -> Self {
        let url = Self::admin_url();
        let admin = url
            .parse()
            .unwrap_or_else(|err| panic!("{TEST_DATABASE_URL_ENV}={url:?} is not valid: {err}"));
        Self { admin, options }
    }

    /// The URL of the administrative database the harness connects to.
    pub fn admin_url() -> String {
        std::env::var(TEST_DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.into())
    }

    /// A new, empty database that is not migrated, and where it is. For tests
    /// of the migrations themselves.
    pub async fn create_unmigrated(&self) -> (PostgresStore, PostgresLocation) {
        let name = unique_database_name();
        let admin = connect_raw(&self.admin).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|err| panic!("CREATE DATABASE {name}: {err:?}"));
        let mut config = self.admin.clone();
        config.dbname(&name);
        let location = PostgresLocation {
            config,
            admin: self.admin.clone(),
            name,
        };
        let store =
            PostgresStore::connect_with_config(location.config.clone(), self.options.clone())
                .await
                .unwrap_or_else(|err| panic!("connect to {}: {err}", location.name));
        (store, location)
    }

    /// A new database migrated only up to `version`, as a build of that
    /// schema version left it: for tests that migrate existing data forward.
    pub async fn create_at_schema_version(
        &self,
        version: u32,
    ) -> (PostgresStore, PostgresLocation) {
        let (store, location) = self.create_unmigrated().await;
        let report = store
            .migrate_to(version)
            .await
            .unwrap_or_else(|err| panic!("migrate {} to {version}: {err}", location.name));
        assert_eq!(report.to_version, version);
        (store, location)
    }
}

/// One test database. Dropping this drops the database (terminating any
/// connection still open to it), so keep it for as long as the store is
/// needed.
#[derive(Debug)]
pub struct PostgresLocation {
    /// Connects to this database, as the harness's user.
    pub config: Config,
    /// The database's name.
    pub name: String,
    admin: Config,
}

impl Drop for PostgresLocation {
    fn drop(&mut self) {
        // Drop is synchronous and may run inside (or after) a tokio runtime,
        // so the DROP DATABASE gets a thread and a runtime of its own.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) = admin.connect(NoTls).await.ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!(
                "could not drop test database {}: drop it by hand",
                self.name
            );
        }
    }
}

impl Harness for PostgresHarness {
    type Store = PostgresStore;
    type Location = PostgresLocation;

    async fn create(&self) -> (PostgresStore, PostgresLocation) {
        let (store, location) = self.create_unmigrated().await;
        let report = store
            .migrate()
            .await
            .unwrap_or_else(|err| panic!("migrate {}: {err}", location.name));
        assert_eq!(report.to_version, SCHEMA_VERSION);
        (store, location)
    }

    async fn reopen(&self, location: &PostgresLocation) -> PostgresStore {
        let store =
            PostgresStore::connect_with_config(location.config.clone(), self.options.clone())
                .await
                .unwrap_or_else(|err| panic!("reconnect to {}: {err}", location.name));
        let status = store.schema_status().await.expect("schema_status");
        assert!(status.is_current(), "{}: {status}", location.name);
        store
    }
}

/// Unique across concurrent test processes (pid) and within one (counter),
/// and across runs (time), so a database left by a killed run is never
/// reused. Lowercase ASCII: it needs no quoting.
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "tally_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000_000
    )
}

/// A plain connection to the harness's server, for setup.
async fn connect_raw(config: &Config) -> tokio_postgres::Client {
    let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|err| {
        panic!(
            "cannot connect to the test PostgreSQL ({TEST_DATABASE_URL_ENV}={}): {err}",
            PostgresHarness::admin_url()
        )
    });
    tokio::spawn(connection);
    client
}
