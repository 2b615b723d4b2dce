//! Runs of one projection statement become one set-based statement.
//!
//! A projection batch writes a row per event or per account: hundreds of
//! executions of the same single-row `INSERT`. Each execution costs
//! PostgreSQL a bind, an executor start and a plan check; for rows of a
//! dozen columns that overhead is most of the work. A run of the same
//! `INSERT … VALUES ($1, …, $n) …` becomes one
//! `INSERT … SELECT * FROM unnest($1::bigint[], …) …`, and a run of the
//! same `DELETE … WHERE column = $1` becomes a join with `unnest($1)`: one
//! execution, one prepared plan whatever the number of rows.
//!
//! [`ProjectionCommit`](crate::ProjectionCommit) allows this: the rows of
//! one run never touch the same row twice.

use tokio_postgres::types::ToSql;

use crate::{SqlStatement, SqlValue};

/// One statement to execute: the SQL and its parameters, owned.
pub(super) struct Coalesced {
    pub(super) sql: String,
    pub(super) params: Vec<Param>,
}

/// A parameter: one value, or a column of a run's values.
pub(super) enum Param {
    Int(Option<i64>),
    Text(Option<String>),
    Ints(Vec<Option<i64>>),
    Texts(Vec<Option<String>>),
}

impl Param {
    pub(super) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Int(v) => v,
            Param::Text(v) => v,
            Param::Ints(v) => v,
            Param::Texts(v) => v,
        }
    }
}

fn single(value: &SqlValue) -> Param {
    match value {
        SqlValue::Int(v) => Param::Int(*v),
        SqlValue::Text(v) => Param::Text(v.clone()),
    }
}

/// The statements, with every run of two or more identical statements that
/// can be set-based made into one.
pub(super) fn coalesce(statements: &[SqlStatement]) -> Vec<Coalesced> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < statements.len() {
        let sql = &statements[start].sql;
        let end = start
            + statements[start..]
                .iter()
                .take_while(|s| &s.sql == sql)
                .count();
        let run = &statements[start..end];
        match (run.len() > 1).then(|| set_based(run)).flatten() {
            Some(statement) => out.push(statement),
            None => out.extend(run.iter().map(|s| Coalesced {
                sql: s.sql.to_string(),
                params: s.params.iter().map(single).collect(),
            })),
        }
        start = end;
    }
    out
}

fn set_based(run: &[SqlStatement]) -> Option<Coalesced> {
    let columns = columns_of(run)?;
    let sql = &run[0].sql;
    let sql = if let Some(values) = values_clause(sql, columns.len()) {
        let unnest: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, column)| match column {
                Param::Ints(_) => format!("${}::bigint[]", i + 1),
                _ => format!("${}::text[]", i + 1),
            })
            .collect();
        format!(
            "{}SELECT * FROM unnest({}){}",
            &sql[..values.start],
            unnest.join(", "),
            &sql[values.end..]
        )
    } else if let Some((table, key)) = delete_by_key(sql) {
        // A join with `unnest`, not `= ANY($1)`: a generic plan cannot
        // tell how long the array is and may scan the whole table; a join
        // with a set-returning function is planned as a few index lookups.
        if key.len() != columns.len() {
            return None;
        }
        let arrays: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, column)| match column {
                Param::Ints(_) => format!("${}::bigint[]", i + 1),
                _ => format!("${}::text[]", i + 1),
            })
            .collect();
        let names: Vec<String> = (1..=key.len()).map(|i| format!("k{i}")).collect();
        let conditions: Vec<String> = key
            .iter()
            .zip(&names)
            .map(|(column, name)| format!("{table}.{column} = run.{name}"))
            .collect();
        format!(
            "DELETE FROM {table} USING unnest({}) AS run({}) WHERE {}",
            arrays.join(", "),
            names.join(", "),
            conditions.join(" AND ")
        )
    } else {
        return None;
    };
    Some(Coalesced {
        sql,
        params: columns,
    })
}

/// The run's parameters as columns, if every column holds one type.
fn columns_of(run: &[SqlStatement]) -> Option<Vec<Param>> {
    let width = run[0].params.len();
    let mut columns: Vec<Param> = run[0]
        .params
        .iter()
        .map(|value| match value {
            SqlValue::Int(_) => Param::Ints(Vec::with_capacity(run.len())),
            SqlValue::Text(_) => Param::Texts(Vec::with_capacity(run.len())),
        })
        .collect();
    for statement in run {
        if statement.params.len() != width {
            return None;
        }
        for (column, value) in columns.iter_mut().zip(&statement.params) {
            match (column, value) {
                (Param::Ints(values), SqlValue::Int(v)) => values.push(*v),
                (Param::Texts(values), SqlValue::Text(v)) => values.push(v.clone()),
                _ => return None,
            }
        }
    }
    Some(columns)
}

/// The table and key columns of exactly
/// `DELETE FROM table WHERE a = $1 AND b = $2 …`.
fn delete_by_key(sql: &str) -> Option<(&str, Vec<&str>)> {
    let rest = sql.trim().strip_prefix("DELETE FROM ")?;
    let (table, condition) = rest.split_once(" WHERE ")?;
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut key = Vec::new();
    for (i, term) in condition.split(" AND ").enumerate() {
        let column = term.trim().strip_suffix(&format!("= ${}", i + 1))?.trim();
        if !word(column) {
            return None;
        }
        key.push(column);
    }
    word(table).then_some((table, key))
}

/// Where `VALUES ($1, $2, …, $n)` is in `sql`, if it is exactly that.
fn values_clause(sql: &str, params: usize) -> Option<std::ops::Range<usize>> {
    if !sql.trim_start().starts_with("INSERT INTO ") {
        return None;
    }
    let start = sql.find("VALUES (")?;
    let open = start + "VALUES (".len();
    let close = open + sql[open..].find(')')?;
    let expected: Vec<String> = (1..=params).map(|i| format!("${i}")).collect();
    let found: Vec<&str> = sql[open..close].split(',').map(str::trim).collect();
    (found == expected).then_some(start..close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(a: i64, b: Option<&str>) -> SqlStatement {
        SqlStatement::new(
            "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO NOTHING",
            vec![SqlValue::int(a), SqlValue::Text(b.map(str::to_owned))],
        )
    }

    #[test]
    fn a_run_of_inserts_becomes_one_unnest() {
        let out = coalesce(&[insert(1, Some("x")), insert(2, None)]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].sql,
            "INSERT INTO t (a, b) SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT (a) DO NOTHING"
        );
        match &out[0].params[..] {
            [Param::Ints(a), Param::Texts(b)] => {
                assert_eq!(a, &[Some(1), Some(2)]);
                assert_eq!(b, &[Some("x".to_owned()), None]);
            }
            _ => panic!("columns not gathered"),
        }
    }

    #[test]
    fn a_run_of_deletes_by_key_becomes_a_join() {
        let delete =
            |k: &str| SqlStatement::new("DELETE FROM t WHERE k = $1", vec![SqlValue::text(k)]);
        let out = coalesce(&[delete("a"), delete("b")]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].sql,
            "DELETE FROM t USING unnest($1::text[]) AS run(k1) WHERE t.k = run.k1"
        );
    }

    #[test]
    fn a_run_of_deletes_by_a_composite_key_becomes_a_join() {
        let delete = |k: &str, n: i64| {
            SqlStatement::new(
                "DELETE FROM t WHERE k = $1 AND n = $2",
                vec![SqlValue::text(k), SqlValue::int(n)],
            )
        };
        let out = coalesce(&[delete("a", 1), delete("b", 2)]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].sql,
            "DELETE FROM t USING unnest($1::text[], $2::bigint[]) AS run(k1, k2) \
             WHERE t.k = run.k1 AND t.n = run.k2"
        );
        // Placeholders out of order are not a key the join can take.
        let swapped = SqlStatement::new(
            "DELETE FROM t WHERE k = $2 AND n = $1",
            vec![SqlValue::int(1), SqlValue::text("a")],
        );
        assert_eq!(coalesce(&[swapped.clone(), swapped]).len(), 2);
    }

    #[test]
    fn lone_statements_mixed_types_and_order_are_kept() {
        let other = SqlStatement::new("DELETE FROM t", vec![]);
        let mixed = SqlStatement::new(
            "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO NOTHING",
            vec![SqlValue::text("not an int"), SqlValue::Text(None)],
        );
        let out = coalesce(&[insert(1, None), other.clone(), insert(2, None), mixed]);
        let sqls: Vec<&str> = out.iter().map(|c| c.sql.as_str()).collect();
        assert_eq!(
            sqls,
            [
                insert(1, None).sql.as_ref(),
                "DELETE FROM t",
                insert(2, None).sql.as_ref(),
                insert(2, None).sql.as_ref(),
            ],
            "a run whose columns change type is not coalesced, and order holds"
        );
    }
}
