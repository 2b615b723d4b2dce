//! The projections' tables (created by the store's migrations) and the
//! statements that write and dump them, in the dialect both backends share.

use std::sync::LazyLock;

use tally_store::{SqlStatement, SqlValue};

use crate::{ACCOUNT_FOLD, Projection};

/// A projection table: its columns in a fixed order, and its key, which
/// orders a dump so that two copies compare row by row.
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub key: &'static [&'static str],
}

pub(crate) const STATES: Table = Table {
    name: "projection_account_states",
    columns: &["account_id", "projection", "version", "state"],
    key: &["account_id", "projection"],
};

pub(crate) const BALANCES: Table = Table {
    name: "account_balances",
    columns: &[
        "account_id",
        "version",
        "tx",
        "seq",
        "opened_at_ms",
        "plan",
        "pending_plan",
        "time_zone",
        "available",
        "upcoming",
        "held",
        "overage",
        "granted",
        "consumed",
        "expired",
        "voided",
        "open_reservations",
        "used_in_cycle",
        "cycle_start_ms",
        "cycle_end_ms",
        "spending_cap",
        "last_activity_ms",
    ],
    key: &["account_id"],
};

pub(crate) const BUCKETS: Table = Table {
    name: "account_buckets",
    columns: &[
        "account_id",
        "grant_id",
        "kind",
        "source",
        "priority",
        "amount",
        "remaining",
        "held",
        "effective_at_ms",
        "expires_at_ms",
        "reference",
    ],
    key: &["account_id", "grant_id"],
};

pub(crate) const LEDGER: Table = Table {
    name: "ledger_entries",
    columns: &[
        "account_id",
        "seq",
        "tx",
        "log_seq",
        "occurred_at_ms",
        "kind",
        "member_id",
        "action",
        "model",
        "amount",
        "available_before",
        "available_after",
    ],
    key: &["account_id", "seq"],
};

pub(crate) const USAGE: Table = Table {
    name: "usage_daily",
    columns: &[
        "account_id",
        "day",
        "cycle_start_ms",
        "action",
        "capability",
        "member_id",
        "model",
        "charged",
        "overage",
        "actions",
        "input_tokens",
        "output_tokens",
        "context_tokens",
        "images",
        "tool_calls",
    ],
    key: &[
        "account_id",
        "day",
        "cycle_start_ms",
        "action",
        "capability",
        "member_id",
        "model",
    ],
};

/// How many leading usage columns form the key; the rest are sums.
pub(crate) const USAGE_KEY_COLUMNS: usize = 7;

/// Usage of the units a rate card declares itself: a row per usage group
/// and unit.
pub(crate) const USAGE_UNITS: Table = Table {
    name: "usage_daily_units",
    columns: &[
        "account_id",
        "day",
        "cycle_start_ms",
        "action",
        "capability",
        "member_id",
        "model",
        "unit",
        "amount",
    ],
    key: &[
        "account_id",
        "day",
        "cycle_start_ms",
        "action",
        "capability",
        "member_id",
        "model",
        "unit",
    ],
};

/// The tables a projection owns, besides its rows in [`STATES`].
pub(crate) fn tables_of(projection: Projection) -> &'static [&'static Table] {
    match projection {
        Projection::Balances => &[&BALANCES, &BUCKETS],
        Projection::Ledger => &[&LEDGER],
        Projection::Usage => &[&USAGE, &USAGE_UNITS],
    }
}

fn insert_sql(table: &Table, conflict: &str) -> String {
    let placeholders: Vec<String> = (1..=table.columns.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}) {conflict}",
        table.name,
        table.columns.join(", "),
        placeholders.join(", ")
    )
}

fn replace_all(table: &Table) -> String {
    let updates: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !table.key.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        table.key.join(", "),
        updates.join(", ")
    )
}

pub(crate) static UPSERT_STATE: LazyLock<String> =
    LazyLock::new(|| insert_sql(&STATES, &replace_all(&STATES)));
pub(crate) static UPSERT_BALANCE: LazyLock<String> =
    LazyLock::new(|| insert_sql(&BALANCES, &replace_all(&BALANCES)));
pub(crate) static UPSERT_BUCKET: LazyLock<String> =
    LazyLock::new(|| insert_sql(&BUCKETS, &replace_all(&BUCKETS)));
pub(crate) static INSERT_LEDGER: LazyLock<String> = LazyLock::new(|| insert_sql(&LEDGER, ""));
/// Adds to the sums of an existing row.
pub(crate) static ADD_USAGE: LazyLock<String> = LazyLock::new(|| {
    let sums: Vec<String> = USAGE.columns[USAGE_KEY_COLUMNS..]
        .iter()
        .map(|c| format!("{c} = {}.{c} + excluded.{c}", USAGE.name))
        .collect();
    insert_sql(
        &USAGE,
        &format!(
            "ON CONFLICT ({}) DO UPDATE SET {}",
            USAGE.key.join(", "),
            sums.join(", ")
        ),
    )
});

/// Adds to a unit's sum.
pub(crate) static ADD_USAGE_UNIT: LazyLock<String> = LazyLock::new(|| {
    insert_sql(
        &USAGE_UNITS,
        &format!(
            "ON CONFLICT ({}) DO UPDATE SET amount = {}.amount + excluded.amount",
            USAGE_UNITS.key.join(", "),
            USAGE_UNITS.name
        ),
    )
});

pub(crate) const DELETE_BUCKET: &str =
    "DELETE FROM account_buckets WHERE account_id = $1 AND grant_id = $2";

/// The names of the tables `projections` own, none shared: what a reset
/// empties, and what a refold loads without their read indexes.
pub(crate) fn table_names(projections: &[Projection]) -> Vec<&'static str> {
    projections
        .iter()
        .flat_map(|&projection| tables_of(projection).iter().map(|table| table.name))
        .collect()
}

/// Forgets the account fold's saved states, so it starts again from the
/// start of the log.
pub(crate) fn reset_fold_statements() -> Vec<SqlStatement> {
    vec![SqlStatement::new(
        "DELETE FROM projection_account_states WHERE projection = $1",
        vec![SqlValue::text(ACCOUNT_FOLD)],
    )]
}

/// Every row a projection owns, table by table in key order: what verify
/// compares. Names each result set after its table. The account fold's
/// states are not compared: they are the means, the rows are the result.
pub(crate) fn dump_queries(projection: Projection) -> Vec<(&'static Table, SqlStatement)> {
    tables_of(projection)
        .iter()
        .map(|table| {
            (
                *table,
                SqlStatement::new(
                    format!(
                        "SELECT {} FROM {} ORDER BY {}",
                        table.columns.join(", "),
                        table.name,
                        table.key.join(", ")
                    ),
                    vec![],
                ),
            )
        })
        .collect()
}
