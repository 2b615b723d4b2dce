//! The metric catalogue: what `docs/metrics.md` says tallyd exports, by
//! its Prometheus names. Dashboards and alerts may use these and nothing
//! else, plus the few built-ins listed here.

use std::collections::{BTreeMap, BTreeSet};

/// Series Prometheus makes itself, which the dashboard and alerts may use.
/// `up` is the scrape of the collector.
pub const BUILTIN_SERIES: &[&str] = &["up"];

/// Labels that are not tallyd attributes: `le` (histogram buckets), `job`
/// and `instance` (the collector's exporter derives them from the
/// resource's `service.name` and `service.instance.id`; Prometheus keeps
/// them with `honor_labels`).
pub const BUILTIN_LABELS: &[&str] = &["le", "job", "instance"];

/// The suffixes of a histogram's series.
pub const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One row of the metrics table.
#[derive(Clone, Debug)]
pub struct Metric {
    /// The OpenTelemetry instrument name, e.g. `tally.refusals`.
    pub otel_name: String,
    /// The Prometheus name, e.g. `tally_refusals_total`.
    pub prometheus_name: String,
    pub kind: Kind,
    /// The unit, e.g. `s` or `{millicredit}`.
    pub unit: String,
    /// Its attributes' Prometheus label names.
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    /// By Prometheus name.
    pub metrics: BTreeMap<String, Metric>,
    /// Every documented attribute, as a Prometheus label name.
    pub labels: BTreeSet<String>,
}

/// An attribute's label name after the exporter's translation.
pub fn prometheus_label(attribute: &str) -> String {
    attribute.replace('.', "_")
}

/// The Prometheus name an instrument gets, by the rules docs/metrics.md
/// states: dots become underscores, a unit of seconds adds `_seconds`,
/// counters add `_total`, curly-brace units add nothing.
pub fn translated_name(otel_name: &str, kind: Kind, unit: &str) -> String {
    let mut name = otel_name.replace('.', "_");
    if unit == "s" {
        name.push_str("_seconds");
    }
    if kind == Kind::Counter {
        name.push_str("_total");
    }
    name
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

impl Catalogue {
    /// Reads `docs/metrics.md`.
    pub fn load() -> Catalogue {
        let path = crate::repo_root().join("docs/metrics.md");
        Catalogue::from_markdown(&crate::read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Parses the metrics table (the one with a "Prometheus" column) and
    /// the attributes table (first column "Attribute").
    pub fn from_markdown(text: &str) -> Result<Catalogue, String> {
        let mut catalogue = Catalogue::default();
        let mut header: Option<Vec<String>> = None;
        for line in text.lines() {
            if !line.trim_start().starts_with('|') {
                header = None;
                continue;
            }
            let row = cells(line);
            if row
                .iter()
                .all(|cell| cell.chars().all(|c| "-: ".contains(c)))
            {
                continue; // the separator
            }
            let Some(columns) = &header else {
                header = Some(row.iter().map(|c| c.to_string()).collect());
                continue;
            };
            let column = |name: &str| columns.iter().position(|c| c == name);
            if let (Some(name), Some(prometheus), Some(kind), Some(unit), Some(attributes)) = (
                column("Name"),
                column("Prometheus"),
                column("Type"),
                column("Unit"),
                column("Attributes"),
            ) {
                let cell = |i: usize| row.get(i).copied().unwrap_or("");
                let single = |i: usize| -> Result<String, String> {
                    match backticked(cell(i)).as_slice() {
                        [one] => Ok(one.clone()),
                        _ => Err(format!("expected one `name` in {:?}", cell(i))),
                    }
                };
                let kind = match cell(kind) {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" => Kind::Histogram,
                    other => return Err(format!("unknown metric type {other:?} in {line}")),
                };
                let labels: Vec<String> = backticked(cell(attributes))
                    .iter()
                    .map(|a| prometheus_label(a))
                    .collect();
                catalogue.labels.extend(labels.iter().cloned());
                let metric = Metric {
                    otel_name: single(name)?,
                    prometheus_name: single(prometheus)?,
                    kind,
                    unit: single(unit)?,
                    labels,
                };
                catalogue
                    .metrics
                    .insert(metric.prometheus_name.clone(), metric);
            } else if columns.first().map(String::as_str) == Some("Attribute") {
                for attribute in backticked(row[0]) {
                    catalogue.labels.insert(prometheus_label(&attribute));
                }
            }
        }
        if catalogue.metrics.is_empty() {
            return Err("no metrics table (a table with a \"Prometheus\" column)".into());
        }
        Ok(catalogue)
    }

    /// Whether `series` is a series tallyd exports (or a built-in): a
    /// counter's or gauge's name, or a histogram's name with `_bucket`,
    /// `_sum` or `_count` (a histogram's bare name is no series).
    pub fn check_series(&self, series: &str) -> Result<(), String> {
        if BUILTIN_SERIES.contains(&series) {
            return Ok(());
        }
        match self.metrics.get(series) {
            Some(metric) if metric.kind == Kind::Histogram => {
                return Err(format!(
                    "{series} is a histogram: use {series}_bucket, _sum or _count"
                ));
            }
            Some(_) => return Ok(()),
            None => {}
        }
        for suffix in HISTOGRAM_SUFFIXES {
            if let Some(base) = series.strip_suffix(suffix) {
                match self.metrics.get(base) {
                    Some(metric) if metric.kind == Kind::Histogram => return Ok(()),
                    Some(_) => return Err(format!("{base} is not a histogram, so no {series}")),
                    None => {}
                }
            }
        }
        Err(format!("{series} is not in docs/metrics.md"))
    }

    /// Whether `label` is a documented attribute or a built-in label.
    pub fn check_label(&self, label: &str) -> Result<(), String> {
        if self.labels.contains(label) || BUILTIN_LABELS.contains(&label) {
            Ok(())
        } else {
            Err(format!(
                "label {label} is not an attribute in docs/metrics.md"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
| Name | Prometheus | Type | Unit | Attributes | What it measures |
|---|---|---|---|---|---|
| `a.calls` | `a_calls_total` | counter | `{call}` | `rpc.method` | Calls. |
| `a.wait` | `a_wait_seconds` | histogram | `s` | | Waits. |

| Attribute | Values |
|---|---|
| `tally.reason` | the reason |
";

    #[test]
    fn reads_both_tables() {
        let catalogue = Catalogue::from_markdown(SAMPLE).unwrap();
        assert_eq!(
            catalogue.metrics.keys().collect::<Vec<_>>(),
            ["a_calls_total", "a_wait_seconds"]
        );
        assert!(catalogue.check_label("rpc_method").is_ok());
        assert!(catalogue.check_label("tally_reason").is_ok());
        assert!(catalogue.check_label("le").is_ok());
        assert!(catalogue.check_label("member_id").is_err());
    }

    #[test]
    fn histograms_only_through_their_series() {
        let catalogue = Catalogue::from_markdown(SAMPLE).unwrap();
        assert!(catalogue.check_series("a_calls_total").is_ok());
        assert!(catalogue.check_series("a_wait_seconds_bucket").is_ok());
        assert!(catalogue.check_series("a_wait_seconds_count").is_ok());
        assert!(catalogue.check_series("a_wait_seconds").is_err());
        assert!(catalogue.check_series("a_calls_total_count").is_err());
        assert!(catalogue.check_series("a_calls").is_err());
        assert!(catalogue.check_series("up").is_ok());
    }
}
