//! The schema, as numbered SQL migrations compiled into the binary.
//!
//! `tally_schema_migrations` records which have been applied. Migrating is an
//! explicit step ([`PostgresStore::migrate`], `tallyd migrate`), never a side
//! effect of connecting: the service may run as a role that cannot change
//! the schema, and several replicas starting at once should not race to.
//! Migrations are append-only like the data: never edit one that has
//! shipped, add the next.

use std::fmt;

use tokio_postgres::IsolationLevel;

use super::PostgresStore;
use super::error::store_error;
use super::order::{self, LOG_ORDER_VERSION, Renumbering};
use crate::StoreError;

struct Migration {
    version: u32,
    name: &'static str,
    sql: &'static str,
}

impl Migration {
    /// Says which migration failed, keeping the error's kind.
    fn failed(&self, err: StoreError) -> StoreError {
        let context =
            |message: String| format!("migration {} ({}): {message}", self.version, self.name);
        match err {
            StoreError::Unavailable(message) => StoreError::Unavailable(context(message)),
            StoreError::Corrupt(message) => StoreError::Corrupt(context(message)),
            StoreError::Internal(message) => StoreError::Internal(context(message)),
            other => other,
        }
    }
}

/// `MIGRATIONS[i]` takes a database from version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "tally_app_role",
        sql: include_str!("migrations/0002_tally_app_role.sql"),
    },
    Migration {
        version: 3,
        name: "wakeups",
        sql: include_str!("migrations/0003_wakeups.sql"),
    },
    Migration {
        version: 4,
        name: "projections",
        sql: include_str!("migrations/0004_projections.sql"),
    },
    Migration {
        version: 5,
        name: "resolved_holds",
        sql: include_str!("migrations/0005_resolved_holds.sql"),
    },
    Migration {
        version: 6,
        name: "usage_units",
        sql: include_str!("migrations/0006_usage_units.sql"),
    },
    Migration {
        version: 7,
        name: "log_order",
        sql: include_str!("migrations/0007_log_order.sql"),
    },
    Migration {
        version: 8,
        name: "refunded_charges",
        sql: include_str!("migrations/0008_refunded_charges.sql"),
    },
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Key of the transaction-scoped advisory lock that serialises migrators
/// on one database (advisory locks are per database). Any constant works as
/// long as nothing else in the database uses it: "tally" in ASCII.
const MIGRATION_LOCK: i64 = 0x74_616c_6c79;

const CREATE_MIGRATIONS_TABLE: &str = "
    CREATE TABLE IF NOT EXISTS tally_schema_migrations (
        version    integer     PRIMARY KEY,
        name       text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )";

/// What [`PostgresStore::migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// The version found, under the lock, before migrating (0: never
    /// migrated).
    pub from_version: u32,
    /// The version now: [`SCHEMA_VERSION`] (unless a test harness stopped
    /// earlier on purpose).
    pub to_version: u32,
    /// The migrations this call applied, in order. Empty when the database
    /// was current, including when a concurrent migrator got there first.
    pub applied: Vec<u32>,
    /// Set when the log came from a cluster whose transaction ids were
    /// ahead of this one's (a logical restore) and this call moved new
    /// transactions past it (`order.rs`).
    pub renumbered: Option<Renumbering>,
}

/// Whether a database's schema is the one this build expects, and its log
/// in an order this cluster can continue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaStatus {
    /// At [`SCHEMA_VERSION`]: ready to serve.
    Current,
    /// Older (0: never migrated): run the migration before serving.
    Behind { found: u32 },
    /// Migrated by a newer build: this one must not write to it.
    Ahead { found: u32 },
    /// At [`SCHEMA_VERSION`], but the newest event's `tx` is at or past
    /// `next_tx`, where this cluster's transactions stand (every event it
    /// wrote is below): the log was restored from a logical dump of a
    /// cluster ahead of this one, and new events would sort before it. Run
    /// the migration: it moves new transactions past the log (`order.rs`).
    LogNeedsRenumbering { newest_tx: u64, next_tx: u64 },
}

impl SchemaStatus {
    fn of(found: u32) -> Self {
        match found.cmp(&SCHEMA_VERSION) {
            std::cmp::Ordering::Equal => Self::Current,
            std::cmp::Ordering::Less => Self::Behind { found },
            std::cmp::Ordering::Greater => Self::Ahead { found },
        }
    }

    pub fn is_current(self) -> bool {
        self == Self::Current
    }
}

impl fmt::Display for SchemaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => write!(f, "schema is at version {SCHEMA_VERSION}"),
            Self::Behind { found } => write!(
                f,
                "schema is at version {found}, this build needs {SCHEMA_VERSION}: run the migration"
            ),
            Self::Ahead { found } => write!(
                f,
                "schema is at version {found}, newer than this build's {SCHEMA_VERSION}: upgrade tallyd"
            ),
            Self::LogNeedsRenumbering { newest_tx, next_tx } => write!(
                f,
                "the log's newest event (tx {newest_tx}) is ahead of this cluster's transactions \
                 (at tx {next_tx}), as after restoring a logical dump into a new cluster: new \
                 events would sort before it and never reach the projections; run the migration, \
                 which moves new transactions past the log"
            ),
        }
    }
}

impl PostgresStore {
    /// Applies the migrations the database has not had, all in one
    /// transaction, so an upgrade is all or nothing.
    ///
    /// Safe to run from several processes at once: each takes a
    /// transaction-scoped advisory lock first, so one migrates and the
    /// others then find the database current. Refuses a database migrated
    /// by a newer build.
    ///
    /// Then, in the same transaction, puts the log back in order if it was
    /// restored from a cluster ahead of this one
    /// ([`SchemaStatus::LogNeedsRenumbering`]); that step waits for appends
    /// in flight and holds new ones until the commit.
    #[tracing::instrument(level = "info", skip(self))]
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        self.migrate_to(SCHEMA_VERSION).await
    }

    /// [`migrate`](Self::migrate), stopping at `target`. Only the test
    /// harness stops early, to make a database as an older build left it.
    pub(super) async fn migrate_to(&self, target: u32) -> Result<MigrationReport, StoreError> {
        if target > SCHEMA_VERSION {
            return Err(StoreError::Internal(format!(
                "cannot migrate to version {target}: this build stops at {SCHEMA_VERSION}"
            )));
        }
        let mut client = self.client().await?;
        // Whatever the database's default: renumbering the log must see the
        // appends that committed while it waited for its lock.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(store_error)?;
        // Migrations may rewrite big tables: the configured statement
        // timeout is for the service's queries, not for this.
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(store_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(store_error)?;
        tx.batch_execute(CREATE_MIGRATIONS_TABLE)
            .await
            .map_err(store_error)?;
        let from_version = applied_version(&tx).await?;
        if let SchemaStatus::Ahead { .. } = SchemaStatus::of(from_version) {
            return Err(StoreError::Unavailable(
                SchemaStatus::of(from_version).to_string(),
            ));
        }

        let mut applied = Vec::new();
        let pending = MIGRATIONS
            .get(from_version as usize..target as usize)
            .unwrap_or_default();
        for migration in pending {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applying migration"
            );
            tx.batch_execute(migration.sql)
                .await
                .map_err(|err| migration.failed(store_error(err)))?;
            tx.execute(
                "INSERT INTO tally_schema_migrations (version, name) VALUES ($1, $2)",
                &[&(migration.version as i32), &migration.name],
            )
            .await
            .map_err(store_error)?;
            applied.push(migration.version);
        }
        let to_version = from_version.max(target);
        let renumbered = if to_version >= LOG_ORDER_VERSION {
            order::renumber(&tx).await?
        } else {
            None
        };
        if let Some(renumbered) = &renumbered {
            tracing::info!(
                newest_tx = renumbered.newest_tx,
                offset_before = renumbered.offset_before,
                offset_after = renumbered.offset_after,
                "the log came from a cluster ahead of this one: new transactions now sort after it"
            );
        }
        tx.commit().await.map_err(store_error)?;
        Ok(MigrationReport {
            from_version,
            to_version,
            applied,
            renumbered,
        })
    }

    /// Whether the database is at the schema version this build expects,
    /// with a log this cluster can append to in order. Connecting does not
    /// migrate, so the server asks this before serving.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let client = self.client().await?;
        let tracked: bool = client
            .query_one(
                "SELECT to_regclass('tally_schema_migrations') IS NOT NULL",
                &[],
            )
            .await
            .map_err(store_error)?
            .get(0);
        let found = if tracked {
            applied_version(&client).await?
        } else {
            0
        };
        let status = SchemaStatus::of(found);
        if !status.is_current() {
            return Ok(status);
        }
        let order = order::read(&client).await?;
        if order.needs_renumbering() {
            let unsigned = |value: i64| u64::try_from(value).unwrap_or_default();
            return Ok(SchemaStatus::LogNeedsRenumbering {
                newest_tx: unsigned(order.newest_tx.unwrap_or_default()),
                next_tx: unsigned(order.next_tx()),
            });
        }
        Ok(status)
    }
}

async fn applied_version(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<u32, StoreError> {
    let version: i32 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM tally_schema_migrations",
            &[],
        )
        .await
        .map_err(store_error)?
        .get(0);
    u32::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("tally_schema_migrations has version {version}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
            assert!(!migration.sql.trim().is_empty(), "{}", migration.name);
        }
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }

    #[test]
    fn the_log_order_is_read_from_the_migration_that_creates_it() {
        let migration = &MIGRATIONS[LOG_ORDER_VERSION as usize - 1];
        assert_eq!(migration.name, "log_order");
        assert!(migration.sql.contains("CREATE TABLE log_order"));
    }

    #[test]
    fn status_compares_with_this_build() {
        assert!(SchemaStatus::of(SCHEMA_VERSION).is_current());
        assert_eq!(SchemaStatus::of(0), SchemaStatus::Behind { found: 0 });
        assert_eq!(
            SchemaStatus::of(SCHEMA_VERSION + 1),
            SchemaStatus::Ahead {
                found: SCHEMA_VERSION + 1
            }
        );
    }
}
