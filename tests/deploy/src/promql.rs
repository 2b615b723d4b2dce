//! The metric and label names a PromQL expression refers to. Not a parser:
//! a tokenizer that knows where PromQL puts names — a metric is a bare
//! identifier that is not a function, an aggregation or a keyword; labels
//! appear in `{…}` matchers and in `by`/`without`/`on`/`ignoring`/
//! `group_left`/`group_right` lists. Strings, durations, numbers and
//! Grafana variables (`$__rate_interval`, `${var}`) are skipped. An
//! identifier followed by `(` that is no known function is an error, so a
//! misspelt function is not taken for a metric.

use std::collections::BTreeSet;

/// The names an expression uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    pub metrics: BTreeSet<String>,
    pub labels: BTreeSet<String>,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log2",
    "log10",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Keywords followed by a list of label names in parentheses.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other words that are not metric names.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end",
];

fn is_identifier_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

struct Cursor {
    chars: Vec<char>,
    at: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(is_identifier_char) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// Skips a quoted string, the cursor on its opening quote.
    fn skip_string(&mut self) -> Result<(), String> {
        let quote = self.chars[self.at];
        self.at += 1;
        while let Some(c) = self.peek() {
            self.at += 1;
            if c == '\\' && quote != '`' {
                self.at += 1;
            } else if c == quote {
                return Ok(());
            }
        }
        Err("unterminated string".into())
    }

    /// Skips a Grafana variable: `$name`, `$__name` or `${name...}`.
    fn skip_variable(&mut self) -> Result<(), String> {
        self.at += 1;
        if self.peek() == Some('{') {
            return self.skip_past('}');
        }
        self.identifier();
        Ok(())
    }

    fn skip_past(&mut self, close: char) -> Result<(), String> {
        while let Some(c) = self.peek() {
            self.at += 1;
            if c == close {
                return Ok(());
            }
        }
        Err(format!("no closing {close:?}"))
    }

    /// Label matchers `{name op "value", ...}`, the cursor on `{`.
    fn matchers(&mut self, labels: &mut BTreeSet<String>) -> Result<(), String> {
        self.at += 1;
        loop {
            self.skip_space();
            match self.peek() {
                Some('}') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(',') => self.at += 1,
                Some('"') | Some('\'') | Some('`') => self.skip_string()?,
                Some('$') => self.skip_variable()?,
                Some('=') | Some('!') | Some('~') => self.at += 1,
                Some(c) if is_identifier_start(c) => {
                    let name = self.identifier();
                    if name == "__name__" {
                        return Err("select metrics by name, not with __name__".into());
                    }
                    labels.insert(name);
                }
                Some(c) => return Err(format!("unexpected {c:?} in label matchers")),
                None => return Err("no closing '}'".into()),
            }
        }
    }

    /// A parenthesised list of label names, the cursor on `(`.
    fn label_list(&mut self, labels: &mut BTreeSet<String>) -> Result<(), String> {
        self.at += 1;
        loop {
            self.skip_space();
            match self.peek() {
                Some(')') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(',') => self.at += 1,
                Some(c) if is_identifier_start(c) => {
                    labels.insert(self.identifier());
                }
                Some(c) => return Err(format!("unexpected {c:?} in a label list")),
                None => return Err("no closing ')'".into()),
            }
        }
    }
}

/// The metrics and labels `expr` uses.
pub fn references(expr: &str) -> Result<References, String> {
    let mut cursor = Cursor {
        chars: expr.chars().collect(),
        at: 0,
    };
    let mut found = References::default();
    while let Some(c) = cursor.peek() {
        match c {
            '"' | '\'' | '`' => cursor.skip_string()?,
            '#' => cursor.skip_past('\n').unwrap_or(()),
            '$' => cursor.skip_variable()?,
            // A range or subquery: durations and variables only.
            '[' => cursor.skip_past(']')?,
            '{' => cursor.matchers(&mut found.labels)?,
            c if c.is_ascii_digit()
                || (c == '.'
                    && cursor
                        .chars
                        .get(cursor.at + 1)
                        .is_some_and(char::is_ascii_digit)) =>
            {
                // A number or a duration: 0.99, 1e3, 5m, 1h30m.
                while cursor
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
                {
                    cursor.at += 1;
                }
            }
            c if is_identifier_start(c) => {
                let word = cursor.identifier();
                cursor.skip_space();
                let call = cursor.peek() == Some('(');
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if call {
                        cursor.label_list(&mut found.labels)?;
                    }
                } else if KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&word.as_str())
                    || FUNCTIONS.contains(&word.as_str())
                {
                    // An operator or a call: its arguments come next.
                } else if call {
                    return Err(format!("{word}( is no PromQL function"));
                } else {
                    found.metrics.insert(word);
                }
            }
            _ => cursor.at += 1,
        }
    }
    Ok(found)
}

/// The metric and label of a Grafana Prometheus variable query,
/// `label_values(metric, label)` or `label_values(label)`; other variable
/// queries are PromQL.
pub fn variable_references(query: &str) -> Result<References, String> {
    let query = query.trim();
    let Some(arguments) = query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    else {
        return references(
            query
                .strip_prefix("query_result(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or(query),
        );
    };
    let (selector, label) = match arguments.rsplit_once(',') {
        Some((selector, label)) => (Some(selector), label),
        None => (None, arguments),
    };
    let mut found = match selector {
        Some(selector) => references(selector)?,
        None => References::default(),
    };
    found.labels.insert(label.trim().to_owned());
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> (Vec<String>, Vec<String>) {
        let found = references(expr).unwrap();
        (
            found.metrics.into_iter().collect(),
            found.labels.into_iter().collect(),
        )
    }

    #[test]
    fn metrics_and_grouping_labels() {
        assert_eq!(
            names(
                "histogram_quantile(0.99, sum by (le, rpc_method) \
                 (rate(rpc_server_call_duration_seconds_bucket{rpc_method!=\"WatchAccount\"}[$__rate_interval])))"
            ),
            (
                vec!["rpc_server_call_duration_seconds_bucket".into()],
                vec!["le".into(), "rpc_method".into()]
            )
        );
    }

    #[test]
    fn aggregation_clauses_either_side() {
        assert_eq!(
            names("sum(rate(a_total[5m])) by (x) / on(y) group_left(z) max without (w) (b)"),
            (
                vec!["a_total".into(), "b".into()],
                vec!["w".into(), "x".into(), "y".into(), "z".into()]
            )
        );
    }

    #[test]
    fn strings_numbers_durations_and_variables_are_not_names() {
        assert_eq!(
            names(
                "sum by (r) (rate(c_total{a=~\"$action|b.c\", d='x y'}[1d] offset 10m)) * 60 / 1e3 > 0.05 \
                 unless vector(0) and bool ${var} "
            ),
            (
                vec!["c_total".into()],
                vec!["a".into(), "d".into(), "r".into()]
            )
        );
    }

    #[test]
    fn an_unknown_function_is_an_error() {
        assert!(references("rat(a_total[5m])").is_err());
        assert!(references("{__name__=\"a\"}").is_err());
        assert!(references("a{b=\"c\"").is_err());
    }

    #[test]
    fn grafana_label_values() {
        let found = variable_references("label_values(a_total{x=\"1\"}, tally_action)").unwrap();
        assert_eq!(found.metrics.into_iter().collect::<Vec<_>>(), ["a_total"]);
        assert_eq!(
            found.labels.into_iter().collect::<Vec<_>>(),
            ["tally_action", "x"]
        );
    }
}
