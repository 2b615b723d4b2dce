//! The tables and columns of the PostgreSQL schema, read from the
//! migrations, and the tables and columns a dashboard query uses. Not a
//! SQL parser: enough to catch a misspelt or dropped table or column in
//! the simple SELECTs a dashboard runs.

use std::collections::{BTreeMap, BTreeSet};

/// Table name → its columns.
pub type Schema = BTreeMap<String, BTreeSet<String>>;

/// Every `CREATE TABLE` in `crates/store/src/postgres/migrations/*.sql`.
pub fn migrations_schema() -> Schema {
    let dir = crate::repo_root().join("crates/store/src/postgres/migrations");
    let mut schema = Schema::new();
    for path in crate::files_with_suffix(&dir, &[".sql"]) {
        schema.extend(
            tables_created(&crate::read(&path))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        );
    }
    assert!(!schema.is_empty(), "no CREATE TABLE in {}", dir.display());
    schema
}

fn strip_comments(sql: &str) -> String {
    sql.lines()
        .map(|line| line.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tables (and their columns) that the `CREATE TABLE` statements of
/// `sql` create.
pub fn tables_created(sql: &str) -> Result<Schema, String> {
    let sql = strip_comments(sql);
    let mut schema = Schema::new();
    let mut rest = sql.as_str();
    while let Some(at) = rest.find("CREATE TABLE ") {
        rest = &rest[at + "CREATE TABLE ".len()..];
        let open = rest.find('(').ok_or("CREATE TABLE without '('")?;
        let name = rest[..open]
            .trim()
            .trim_start_matches("IF NOT EXISTS ")
            .trim()
            .to_owned();
        let body = &rest[open + 1..];
        let mut depth = 0;
        let mut parts = vec![String::new()];
        let mut end = None;
        for (i, c) in body.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(String::new());
                    continue;
                }
                _ => {}
            }
            parts.last_mut().expect("one part at least").push(c);
        }
        end.ok_or_else(|| format!("CREATE TABLE {name}: no closing ')'"))?;
        let columns = parts
            .iter()
            .filter_map(|part| part.split_whitespace().next())
            .filter(|first| {
                ![
                    "CONSTRAINT",
                    "PRIMARY",
                    "UNIQUE",
                    "CHECK",
                    "FOREIGN",
                    "EXCLUDE",
                ]
                .contains(&first.to_ascii_uppercase().as_str())
            })
            .map(str::to_owned)
            .collect();
        schema.insert(name, columns);
    }
    Ok(schema)
}

/// SQL words that are neither tables nor columns. Functions need no entry:
/// a word followed by `(` is taken for one.
const KEYWORDS: &[&str] = &[
    "all", "and", "as", "asc", "at", "between", "by", "case", "desc", "distinct", "else", "end",
    "false", "filter", "first", "from", "group", "having", "ilike", "in", "inner", "interval",
    "is", "join", "last", "left", "like", "limit", "not", "null", "nulls", "offset", "on", "or",
    "order", "outer", "right", "select", "then", "time", "true", "when", "where", "zone",
];

/// What a query reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub tables: BTreeSet<String>,
    /// Words that must be columns of those tables.
    pub columns: BTreeSet<String>,
}

/// The tables (after `FROM` and `JOIN`) and the column names of `sql`.
/// Strings, comments, numbers, Grafana macros and variables (`$__timeFrom()`,
/// `$account`, `${account}`), type casts (`::text`), output aliases (after
/// `AS`), function names and keywords are not column names.
pub fn query(sql: &str) -> Result<Query, String> {
    let chars: Vec<char> = strip_comments(sql).chars().collect();
    let mut words: Vec<(String, bool)> = Vec::new(); // (word, followed by '(')
    let mut i = 0;
    let mut after_cast = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            if i == chars.len() {
                return Err("unterminated string".into());
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                if chars.get(i) == Some(&'(') && chars.get(i + 1) == Some(&')') {
                    i += 2;
                }
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            after_cast = true;
            i += 2;
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i]
                .iter()
                .collect::<String>()
                .to_ascii_lowercase();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if after_cast {
                after_cast = false; // a type name
            } else {
                words.push((word, chars.get(j) == Some(&'(')));
            }
        } else {
            i += 1;
        }
    }
    // Output aliases may be used again (ORDER BY credits).
    let aliases: BTreeSet<&str> = words
        .windows(2)
        .filter(|pair| pair[0].0 == "as")
        .map(|pair| pair[1].0.as_str())
        .collect();
    let mut found = Query::default();
    let mut previous = "";
    for (word, call) in &words {
        match previous {
            "from" | "join" => {
                found.tables.insert(word.clone());
            }
            _ if *call || KEYWORDS.contains(&word.as_str()) || aliases.contains(word.as_str()) => {}
            _ => {
                found.columns.insert(word.clone());
            }
        }
        previous = word;
    }
    if found.tables.is_empty() {
        return Err("no FROM".into());
    }
    Ok(found)
}

/// Checks that every table of `sql` is in `schema` and every column name
/// belongs to one of them.
pub fn check_query(schema: &Schema, sql: &str) -> Result<(), String> {
    let query = query(sql)?;
    let mut problems = Vec::new();
    let mut columns = BTreeSet::new();
    for table in &query.tables {
        match schema.get(table) {
            Some(of_table) => columns.extend(of_table.iter().cloned()),
            None => problems.push(format!("no table {table} in the migrations")),
        }
    }
    for column in &query.columns {
        if !columns.contains(column) {
            problems.push(format!("no column {column} in {:?}", query.tables));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATION: &str = "
-- a comment (with, commas)
CREATE TABLE usage_daily (
    account_id text COLLATE \"C\" NOT NULL,
    day        text NOT NULL, -- local
    charged    bigint NOT NULL CHECK (charged >= 0),
    CONSTRAINT usage_daily_pkey PRIMARY KEY (account_id, day)
);
CREATE INDEX x ON usage_daily (account_id);
";

    #[test]
    fn reads_tables_and_columns() {
        let schema = tables_created(MIGRATION).unwrap();
        assert_eq!(
            schema["usage_daily"].iter().collect::<Vec<_>>(),
            ["account_id", "charged", "day"]
        );
    }

    #[test]
    fn checks_tables_and_columns() {
        let schema = tables_created(MIGRATION).unwrap();
        let good = "SELECT to_timestamp(day, 'YYYY-MM-DD') AS time, sum(charged) / 1000.0 AS credits \
                    FROM usage_daily WHERE account_id IN ($account) \
                    AND day >= to_char($__timeFrom()::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD') \
                    GROUP BY 1 ORDER BY credits DESC";
        assert_eq!(check_query(&schema, good), Ok(()));
        assert!(check_query(&schema, "SELECT day FROM usage_days").is_err());
        assert!(check_query(&schema, "SELECT member FROM usage_daily").is_err());
    }
}
