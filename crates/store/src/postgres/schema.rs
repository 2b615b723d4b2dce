//! The schema, as numbered SQL migrations compiled into the binary.
//!
//! `tally_schema_migrations` records which have been applied. Migrating is an
//! explicit step ([`PostgresStore::migrate`], `tallyd migrate`), never a side
//! effect of connecting: the service may run as a role that cannot change
//! the schema, and several replicas starting at once should not race to.
//! Migrations are append-only like the data: never edit one that has
//! shipped, add the next.
//!
//! Each migration says whether the build before it may keep serving
//! against the schema it leaves ([`Rollback`]): an *expand* migration only
//! adds what older code ignores, so a release can be rolled back after its
//! migration ran; a *contract* one changes or removes what older code
//! uses. The database records, with each version, the oldest schema
//! version a build may have and still serve against it (`serves_from`), so
//! an older build, which cannot know the newer migrations, can still tell.

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
    rollback: Rollback,
}

/// Whether builds older than a migration may serve against its schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// No shipped migration is expand-only yet: each of 1 to 8 came with events
// or reads that older builds do not have.
#[cfg_attr(not(test), allow(dead_code))]
enum Rollback {
    /// Expand: it only adds what older builds do not use (a table, a
    /// nullable column, an index), so the builds that could serve before it
    /// still can. Declare it only if the release also writes no event an
    /// older build cannot read (docs/operations.md, "Rolling back").
    Safe,
    /// Contract (or not known to be safe): only builds that know it serve.
    Unsafe,
}

impl Migration {
    /// The oldest schema version that serves against this migration's
    /// schema, given the one that served against the schema before it.
    fn serves_from_after(&self, before: u32) -> u32 {
        match self.rollback {
            Rollback::Safe => before,
            Rollback::Unsafe => self.version,
        }
    }

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
        rollback: Rollback::Unsafe,
    },
    Migration {
        version: 2,
        name: "tally_app_role",
        sql: include_str!("migrations/0002_tally_app_role.sql"),
        rollback: Rollback::Unsafe,
    },
    Migration {
        version: 3,
        name: "wakeups",
        sql: include_str!("migrations/0003_wakeups.sql"),
        rollback: Rollback::Unsafe,
    },
    Migration {
        version: 4,
        name: "projections",
        sql: include_str!("migrations/0004_projections.sql"),
        rollback: Rollback::Unsafe,
    },
    Migration {
        version: 5,
        name: "resolved_holds",
        sql: include_str!("migrations/0005_resolved_holds.sql"),
        rollback: Rollback::Unsafe,
    },
    Migration {
        version: 6,
        name: "usage_units",
        sql: include_str!("migrations/0006_usage_units.sql"),
        rollback: Rollback::Unsafe,
    },
    Migration {
        version: 7,
        name: "log_order",
        sql: include_str!("migrations/0007_log_order.sql"),
        rollback: Rollback::Unsafe,
    },
    Migration {
        version: 8,
        name: "refunded_charges",
        sql: include_str!("migrations/0008_refunded_charges.sql"),
        rollback: Rollback::Unsafe,
    },
    Migration {
        version: 9,
        name: "ledger_without_events",
        sql: include_str!("migrations/0009_ledger_without_events.sql"),
        // An older build writes and reads the dropped columns.
        rollback: Rollback::Unsafe,
    },
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Key of the transaction-scoped advisory lock that serialises migrators
/// on one database (advisory locks are per database). Any constant works as
/// long as nothing else in the database uses it: "tally" in ASCII.
const MIGRATION_LOCK: i64 = 0x74_616c_6c79;

/// `serves_from`: the oldest schema version a build may have and serve
/// against the database at this version; NULL (rows written before the
/// column existed) means this version itself.
const CREATE_MIGRATIONS_TABLE: &str = "
    CREATE TABLE IF NOT EXISTS tally_schema_migrations (
        version    integer     PRIMARY KEY,
        name       text        NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE tally_schema_migrations ADD COLUMN IF NOT EXISTS serves_from integer";

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
    /// Migrated by a newer build whose migrations since this build's
    /// version are not all expand migrations: this one must not write to
    /// it.
    Ahead { found: u32 },
    /// Migrated by a newer build, with expand migrations only since this
    /// build's version (the database says builds from `serves_from` on may
    /// serve): this build serves, as it did before the upgrade. Rolling
    /// back a release after its migration lands here.
    AheadCompatible { found: u32, serves_from: u32 },
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

    /// Whether this build may serve: the schema is its own, or newer by
    /// expand migrations only, and the log is in order.
    pub fn can_serve(self) -> bool {
        matches!(self, Self::Current | Self::AheadCompatible { .. })
    }

    /// What a database at `found` means for this build, given the
    /// `serves_from` recorded with its version.
    fn of_newer(found: u32, serves_from: Option<u32>) -> Self {
        match Self::of(found) {
            Self::Ahead { found } if serves_from.is_some_and(|v| v <= SCHEMA_VERSION) => {
                Self::AheadCompatible {
                    found,
                    serves_from: serves_from.unwrap_or(found),
                }
            }
            status => status,
        }
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
                "schema is at version {found}, newer than this build's {SCHEMA_VERSION}, and not \
                 declared compatible with it: upgrade tallyd"
            ),
            Self::AheadCompatible { found, serves_from } => write!(
                f,
                "schema is at version {found}, newer than this build's {SCHEMA_VERSION}; its \
                 migrations since are expand-only (builds from version {serves_from} serve)"
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
        let (from_version, serves_from) = newest_migration(&tx).await?;
        match SchemaStatus::of_newer(from_version, serves_from) {
            status @ SchemaStatus::Ahead { .. } => {
                return Err(StoreError::Unavailable(status.to_string()));
            }
            // A rolled-back build's migration job: nothing of its own to
            // apply, and nothing to undo.
            SchemaStatus::AheadCompatible { .. } => {
                tx.commit().await.map_err(store_error)?;
                return Ok(MigrationReport {
                    from_version,
                    to_version: from_version,
                    applied: Vec::new(),
                    renumbered: None,
                });
            }
            _ => {}
        }
        // What the newest version recorded, for the next expand migration
        // to carry forward.
        let mut serves_from = serves_from.unwrap_or(from_version);

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
            serves_from = migration.serves_from_after(serves_from);
            tx.execute(
                "INSERT INTO tally_schema_migrations (version, name, serves_from) \
                 VALUES ($1, $2, $3)",
                &[
                    &(migration.version as i32),
                    &migration.name,
                    &(serves_from as i32),
                ],
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
        let status = if tracked {
            let (found, serves_from) = newest_migration(&client).await?;
            SchemaStatus::of_newer(found, serves_from)
        } else {
            SchemaStatus::Behind { found: 0 }
        };
        if !status.can_serve() {
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

/// The newest version applied (0: none) and the `serves_from` recorded
/// with it. A database migrated only by builds from before the column
/// existed has no such column: its `serves_from` is unknown (`None`).
async fn newest_migration(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<(u32, Option<u32>), StoreError> {
    let has_serves_from: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = current_schema() \
               AND table_name = 'tally_schema_migrations' AND column_name = 'serves_from')",
            &[],
        )
        .await
        .map_err(store_error)?
        .get(0);
    let query = if has_serves_from {
        "SELECT version, serves_from FROM tally_schema_migrations ORDER BY version DESC LIMIT 1"
    } else {
        "SELECT version, NULL::integer FROM tally_schema_migrations ORDER BY version DESC LIMIT 1"
    };
    let Some(row) = client.query_opt(query, &[]).await.map_err(store_error)? else {
        return Ok((0, None));
    };
    let version: i32 = row.get(0);
    let serves_from: Option<i32> = row.get(1);
    let version = u32::try_from(version).map_err(|_| {
        StoreError::Corrupt(format!("tally_schema_migrations has version {version}"))
    })?;
    Ok((version, serves_from.and_then(|v| u32::try_from(v).ok())))
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

    #[test]
    fn expand_migrations_carry_serves_from_forward_and_contract_ones_reset_it() {
        let migration = |version, rollback| Migration {
            version,
            name: "m",
            sql: "SELECT 1",
            rollback,
        };
        // 9 expands 8: builds at 8 still serve; 10 expands too; 11 contracts.
        let after_9 = migration(9, Rollback::Safe).serves_from_after(8);
        let after_10 = migration(10, Rollback::Safe).serves_from_after(after_9);
        let after_11 = migration(11, Rollback::Unsafe).serves_from_after(after_10);
        assert_eq!((after_9, after_10, after_11), (8, 8, 11));
    }

    #[test]
    fn a_newer_schema_serves_this_build_only_when_it_says_so() {
        let newer = SCHEMA_VERSION + 1;
        assert_eq!(
            SchemaStatus::of_newer(newer, Some(SCHEMA_VERSION)),
            SchemaStatus::AheadCompatible {
                found: newer,
                serves_from: SCHEMA_VERSION
            }
        );
        assert!(SchemaStatus::of_newer(newer, Some(SCHEMA_VERSION - 1)).can_serve());
        for refused in [Some(newer), None] {
            let status = SchemaStatus::of_newer(newer, refused);
            assert_eq!(status, SchemaStatus::Ahead { found: newer });
            assert!(!status.can_serve());
        }
        // serves_from says nothing about a schema that is not newer.
        assert_eq!(
            SchemaStatus::of_newer(SCHEMA_VERSION, Some(1)),
            SchemaStatus::Current
        );
        assert_eq!(
            SchemaStatus::of_newer(1, Some(1)),
            SchemaStatus::Behind { found: 1 }
        );
    }
}
