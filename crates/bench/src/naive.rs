//! The naive baseline: what a first design on PostgreSQL does. A balance
//! row per account and a ledger table; per debit one transaction that locks
//! the row (`SELECT … FOR UPDATE`), updates it and inserts a ledger line,
//! through tokio-postgres on a pool. Same callers, same mix, same counts as
//! the Tally run, so the ratio says what Tally's design buys.

use std::collections::{HashMap, VecDeque};

use anyhow::Context;
use deadpool_postgres::{Config, ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::load::{Outcome, Workload};
use crate::pg::Database;
use crate::scenario::{
    self, COMMIT_MILLICREDITS, DEBIT_MILLICREDITS, HOLD_MILLICREDITS, MixedStep, Names, Scenario,
};

const SCHEMA: &str = "
CREATE TABLE accounts (
    id text PRIMARY KEY,
    balance bigint NOT NULL,
    held bigint NOT NULL DEFAULT 0
);
CREATE TABLE ledger (
    id bigserial PRIMARY KEY,
    account_id text NOT NULL,
    kind text NOT NULL,
    amount bigint NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    at timestamptz NOT NULL DEFAULT now()
);
";

const LOCK: &str = "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE";
const INSERT: &str = "INSERT INTO ledger (account_id, kind, amount, idempotency_key, at) VALUES ($1, $2, $3, $4, now())";
/// A debit, or a commit's charge: `$3` was held (0 for a debit), `$2` is charged.
const CHARGE: &str =
    "UPDATE accounts SET balance = balance + $3 - $2, held = held - $3 WHERE id = $1";
const HOLD: &str = "UPDATE accounts SET balance = balance - $2, held = held + $2 WHERE id = $1";
const READ: &str = "SELECT balance, held FROM accounts WHERE id = $1";

/// The baseline's own database, schema and accounts.
pub struct Naive {
    pub database: Database,
    pub pool: Pool,
}

impl Naive {
    /// Creates a fresh database with `accounts` funded accounts named like
    /// Tally's, and `history` ledger lines already in it (so its unique
    /// index is as large as Tally's log when the run pre-fills one).
    pub async fn create(
        admin_url: &str,
        pool_size: usize,
        names: &Names,
        accounts: usize,
        history: u64,
    ) -> anyhow::Result<Naive> {
        let database = Database::create(admin_url, "naive").await?;
        let client = crate::pg::connect(&database.url).await?;
        client.batch_execute(SCHEMA).await.context("naive schema")?;
        client
            .execute(
                "INSERT INTO accounts (id, balance)
                 SELECT $1::text || g::text, $2::bigint FROM generate_series(0, $3::int - 1) g",
                &[
                    &names.account_prefix("a"),
                    &scenario::GRANT_MILLICREDITS,
                    &i32::try_from(accounts)?,
                ],
            )
            .await
            .context("naive accounts")?;
        if history > 0 {
            client
                .execute(
                    "INSERT INTO ledger (account_id, kind, amount, idempotency_key)
                     SELECT $1::text || (g % $2::int)::text, 'history', $3::bigint, $1::text || 'h-' || g::text
                     FROM generate_series(0, $4::bigint - 1) g",
                    &[
                        &names.account_prefix("a"),
                        &i32::try_from(accounts)?,
                        &DEBIT_MILLICREDITS,
                        &i64::try_from(history)?,
                    ],
                )
                .await
                .context("naive history")?;
            client.batch_execute("VACUUM ANALYZE ledger").await?;
        }
        let mut config = Config::new();
        config.url = Some(database.url.clone());
        config.pool = Some(PoolConfig::new(pool_size));
        config.manager = Some(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .context("naive pool")?;
        Ok(Naive { database, pool })
    }

    /// Compares the ledger's charges per account with what the callers saw
    /// answered, and checks nothing is still held.
    pub async fn check(
        &self,
        callers: &[NaiveCaller],
        names: &Names,
    ) -> anyhow::Result<NaiveCheck> {
        let mut expected: HashMap<String, i64> = HashMap::new();
        for caller in callers {
            for (account, amount) in &caller.consumed {
                *expected.entry(names.account("a", *account)).or_default() += amount;
            }
        }
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT account_id, sum(amount)::bigint FROM ledger WHERE kind = 'debit' GROUP BY account_id",
                &[],
            )
            .await?;
        let mut mismatches = 0;
        let mut found = 0i64;
        for row in &rows {
            let account: String = row.get(0);
            let sum: i64 = row.get(1);
            found += sum;
            if expected.remove(&account).unwrap_or(0) != sum {
                mismatches += 1;
            }
        }
        mismatches += expected.values().filter(|amount| **amount != 0).count();
        let held: i64 = client
            .query_one("SELECT coalesce(sum(held), 0)::bigint FROM accounts", &[])
            .await?
            .get(0);
        Ok(NaiveCheck {
            consumed_millicredits: found,
            mismatches,
            held_millicredits: held,
            exact: mismatches == 0 && held == 0,
        })
    }

    /// Releases the holds a mixed run left open.
    pub async fn release_open(
        &self,
        callers: &mut [NaiveCaller],
        names: &Names,
    ) -> anyhow::Result<()> {
        for caller in callers.iter_mut() {
            while let Some(account) = caller.open.pop_front() {
                let id = names.account("a", account);
                let client = self.pool.get().await?;
                client
                    .execute(CHARGE, &[&id, &0i64, &HOLD_MILLICREDITS])
                    .await?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, serde::Serialize)]
pub struct NaiveCheck {
    pub consumed_millicredits: i64,
    pub mismatches: usize,
    pub held_millicredits: i64,
    pub exact: bool,
}

pub struct NaiveWorkload {
    pub scenario: Scenario,
    pub names: Names,
    pub accounts: usize,
    pub pool: Pool,
}

pub struct NaiveCaller {
    index: usize,
    /// Millicredits charged per account index, from committed transactions.
    consumed: HashMap<usize, i64>,
    /// Accounts with a hold this caller took and has not resolved.
    open: VecDeque<usize>,
}

impl NaiveWorkload {
    pub fn callers(&self, count: usize) -> Vec<NaiveCaller> {
        (0..count)
            .map(|index| NaiveCaller {
                index,
                consumed: HashMap::new(),
                open: VecDeque::new(),
            })
            .collect()
    }

    /// One transaction: lock the row, check the balance, update, insert.
    async fn transact(
        &self,
        account: usize,
        kind: &'static str,
        amount: i64,
        held: i64,
        key: String,
    ) -> Result<(), (String, String)> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| ("pool".into(), e.to_string()))?;
        let id = self.names.account("a", account);
        let tx = client.transaction().await.map_err(pg_error)?;
        let lock = tx.prepare_cached(LOCK).await.map_err(pg_error)?;
        let balance: i64 = tx.query_one(&lock, &[&id]).await.map_err(pg_error)?.get(0);
        let needed = if kind == "hold" {
            amount
        } else {
            amount - held
        };
        if needed > balance {
            return Err(("insufficient".into(), format!("{balance} < {needed}")));
        }
        let update = if kind == "hold" {
            tx.prepare_cached(HOLD).await.map_err(pg_error)?
        } else {
            tx.prepare_cached(CHARGE).await.map_err(pg_error)?
        };
        if kind == "hold" {
            tx.execute(&update, &[&id, &amount])
                .await
                .map_err(pg_error)?;
        } else {
            tx.execute(&update, &[&id, &amount, &held])
                .await
                .map_err(pg_error)?;
        }
        let insert = tx.prepare_cached(INSERT).await.map_err(pg_error)?;
        tx.execute(&insert, &[&id, &kind, &amount, &key])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn read(&self, account: usize) -> Result<(), (String, String)> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| ("pool".into(), e.to_string()))?;
        let read = client.prepare_cached(READ).await.map_err(pg_error)?;
        client
            .query_one(&read, &[&self.names.account("a", account)])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn debit(&self, caller: &mut NaiveCaller, n: u64) -> Outcome {
        let account = self.scenario.account(self.accounts, caller.index, n);
        let key = self.names.key("m", caller.index, n, "");
        match self
            .transact(account, "debit", DEBIT_MILLICREDITS, 0, key)
            .await
        {
            Ok(()) => {
                *caller.consumed.entry(account).or_default() += DEBIT_MILLICREDITS;
                Outcome::ok("debit")
            }
            Err((label, message)) => Outcome::failed("debit", label, message),
        }
    }

    async fn reserve(&self, caller: &mut NaiveCaller, n: u64, kind: &'static str) -> Outcome {
        let account = self.scenario.account(self.accounts, caller.index, n);
        let key = self.names.key("m", caller.index, n, "r");
        match self
            .transact(account, "hold", HOLD_MILLICREDITS, 0, key)
            .await
        {
            Ok(()) => {
                caller.open.push_back(account);
                Outcome::ok(kind)
            }
            Err((label, message)) => Outcome::failed(kind, label, message),
        }
    }

    async fn resolve(
        &self,
        caller: &mut NaiveCaller,
        n: u64,
        commit: bool,
        kind: &'static str,
    ) -> Outcome {
        let Some(account) = caller.open.pop_front() else {
            return self.reserve(caller, n, "reserve").await;
        };
        let (ledger_kind, charged, suffix) = if commit {
            ("debit", COMMIT_MILLICREDITS, "c")
        } else {
            ("release", 0, "x")
        };
        let key = self.names.key("m", caller.index, n, suffix);
        match self
            .transact(account, ledger_kind, charged, HOLD_MILLICREDITS, key)
            .await
        {
            Ok(()) => {
                *caller.consumed.entry(account).or_default() += charged;
                Outcome::ok(kind)
            }
            Err((label, message)) => {
                caller.open.push_back(account);
                Outcome::failed(kind, label, message)
            }
        }
    }
}

fn pg_error(error: tokio_postgres::Error) -> (String, String) {
    let label = match error.code() {
        Some(code) => format!("sqlstate {}", code.code()),
        None => "postgres".into(),
    };
    (label, error.to_string())
}

impl NaiveWorkload {
    /// A balance read: the account's row by its key.
    async fn read_op(&self, caller: &NaiveCaller, n: u64, kind: &'static str) -> Outcome {
        match self
            .read(self.scenario.account(self.accounts, caller.index, n))
            .await
        {
            Ok(()) => Outcome::ok(kind),
            Err((label, message)) => Outcome::failed(kind, label, message),
        }
    }
}

impl Workload for NaiveWorkload {
    type Caller = NaiveCaller;

    async fn call(&self, caller: &mut NaiveCaller, n: u64) -> Outcome {
        match self.scenario {
            // A report record is a debit: one transaction each.
            Scenario::Hot | Scenario::Spread | Scenario::Report | Scenario::Watch => {
                self.debit(caller, n).await
            }
            Scenario::ReserveCommit => {
                let reserved = self.reserve(caller, n, "reserve-commit").await;
                if reserved.error.is_some() {
                    return reserved;
                }
                self.resolve(caller, n, true, "reserve-commit").await
            }
            Scenario::Mixed => match scenario::mixed_step(n) {
                MixedStep::Reserve => self.reserve(caller, n, "reserve").await,
                MixedStep::Commit => self.resolve(caller, n, true, "commit").await,
                MixedStep::Release => self.resolve(caller, n, false, "release").await,
                MixedStep::Quote | MixedStep::GetBalance => {
                    self.read_op(caller, n, scenario::mixed_step(n).kind())
                        .await
                }
            },
            Scenario::Balance => self.read_op(caller, n, "get-balance").await,
        }
    }
}
