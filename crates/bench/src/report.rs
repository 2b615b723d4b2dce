//! What a run prints and writes: the figures of each system, Tally's ratio
//! to each baseline, the balance check, and the machine it ran on.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::CheckReport;
use crate::load::Measured;
use crate::naive::NaiveCheck;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1_000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1_000.0,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct KindFigures {
    pub ops: u64,
    pub ops_per_sec: f64,
    pub latency_ms: Percentiles,
}

/// One measured system: Tally, naive or echo.
#[derive(Clone, Debug, Serialize)]
pub struct SystemFigures {
    pub system: String,
    /// Successful operations in the measured window.
    pub ops: u64,
    pub ops_per_sec: f64,
    /// RPCs (or transactions) per operation.
    pub calls_per_op: u32,
    /// Records charged per operation (a report call's records; else 1).
    pub records_per_op: u32,
    /// ops_per_sec × records_per_op.
    pub records_per_sec: f64,
    pub latency_ms: Percentiles,
    pub by_kind: BTreeMap<String, KindFigures>,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: BTreeMap<String, String>,
    /// Open loop: sends due in the window that were never made.
    pub unsent: u64,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

impl SystemFigures {
    pub fn new(system: impl Into<String>, calls_per_op: u32, measured: &Measured) -> Self {
        let seconds = measured.window.as_secs_f64().max(f64::MIN_POSITIVE);
        SystemFigures {
            system: system.into(),
            ops: measured.ok,
            ops_per_sec: measured.ops_per_sec(),
            calls_per_op,
            records_per_op: 1,
            records_per_sec: measured.ops_per_sec(),
            latency_ms: Percentiles::of(&measured.latency),
            by_kind: measured
                .by_kind
                .iter()
                .map(|(kind, histogram)| {
                    (
                        (*kind).to_owned(),
                        KindFigures {
                            ops: histogram.len(),
                            ops_per_sec: histogram.len() as f64 / seconds,
                            latency_ms: Percentiles::of(histogram),
                        },
                    )
                })
                .collect(),
            errors: measured.errors.clone(),
            error_samples: measured.error_samples.clone(),
            unsent: measured.unsent,
            histogram: measured.latency.clone(),
        }
    }

    /// Each operation charges `records` records.
    pub fn with_records_per_op(mut self, records: u32) -> Self {
        self.records_per_op = records;
        self.records_per_sec = self.ops_per_sec * f64::from(records);
        self
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Tally's figure divided by the baseline's: above 1 for throughput (records
/// charged per second, which is ops/s unless an op carries many) is faster,
/// above 1 for a latency is slower.
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    pub ops_per_sec: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Ratios {
    pub fn of(tally: &SystemFigures, baseline: &SystemFigures) -> Ratios {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        Ratios {
            ops_per_sec: ratio(tally.records_per_sec, baseline.records_per_sec),
            p50: ratio(tally.latency_ms.p50, baseline.latency_ms.p50),
            p90: ratio(tally.latency_ms.p90, baseline.latency_ms.p90),
            p99: ratio(tally.latency_ms.p99, baseline.latency_ms.p99),
            p999: ratio(tally.latency_ms.p999, baseline.latency_ms.p999),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct HistoryFigures {
    pub requested_events: u64,
    pub on_hot: bool,
    pub accounts: usize,
    pub operations: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TallydFigures {
    /// `spawned` or the address given to --connect.
    pub origin: String,
    pub warnings_logged: u64,
    pub errors_logged: u64,
    /// Resident memory after the measured run (spawned tallyd only).
    pub rss_bytes_after: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub kernel: Option<String>,
    pub postgres: Option<String>,
}

impl Machine {
    pub fn here(postgres: Option<String>) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|k| k.trim().to_owned()),
            postgres,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    /// The run's id: the prefix of its account ids and idempotency keys.
    pub run: String,
    /// The bench's process id; its databases are named tally_bench_<pid>_*.
    pub pid: u32,
    pub scenario: &'static str,
    pub store: &'static str,
    /// `closed` or `open`.
    pub mode: &'static str,
    pub rate: Option<f64>,
    pub callers: usize,
    pub connections: usize,
    pub duration_seconds: f64,
    pub warmup_seconds: f64,
    pub accounts: usize,
    pub history: Option<HistoryFigures>,
    pub tally: SystemFigures,
    /// During Tally's measured run: from a write's answer until a read at
    /// least as fresh as it answers.
    pub projection_lag: Option<crate::lag::LagFigures>,
    /// The watch measurement: from a Debit's answer on replica A until a
    /// watch on replica B carries its entry.
    pub watch: Option<crate::watch::WatchFigures>,
    pub naive: Option<SystemFigures>,
    pub echo: Option<SystemFigures>,
    /// Tally's figures over each baseline's, keyed by baseline.
    pub ratios: BTreeMap<String, Ratios>,
    pub check: CheckReport,
    pub naive_check: Option<NaiveCheck>,
    /// Baselines asked for that could not run, with why.
    pub baseline_errors: BTreeMap<String, String>,
    /// The Tally balances (and the naive ones, when run) are exact.
    pub balances_exact: bool,
    pub tallyd: TallydFigures,
    pub machine: Machine,
    pub unix_time: u64,
}

impl RunReport {
    pub fn systems(&self) -> Vec<&SystemFigures> {
        std::iter::once(&self.tally)
            .chain(self.naive.as_ref())
            .chain(self.echo.as_ref())
            .collect()
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate} ops/s"),
            None => "closed loop".into(),
        };
        let _ = writeln!(
            out,
            "\n{} on {} · {mode} · {} callers on {} connections · {} accounts · {:.1}s measured after {:.1}s warm-up",
            self.scenario,
            self.store,
            self.callers,
            self.connections,
            self.accounts,
            self.duration_seconds,
            self.warmup_seconds
        );
        if let Some(history) = &self.history {
            let _ = writeln!(
                out,
                "history: {} operations ({} events asked) {} in {:.1}s ({:.0}/s)",
                history.operations,
                history.requested_events,
                if history.on_hot {
                    "on the measured accounts"
                } else {
                    "spread over their own accounts"
                },
                history.seconds,
                history.ops_per_sec
            );
        }
        let _ = writeln!(
            out,
            "{:<24} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}  errors",
            "system", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for system in self.systems() {
            let errors = system.error_count() + system.unsent;
            let _ = writeln!(
                out,
                "{:<24} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {}",
                system.system,
                system.ops_per_sec,
                system.latency_ms.p50,
                system.latency_ms.p90,
                system.latency_ms.p99,
                system.latency_ms.p999,
                system.latency_ms.max,
                errors
            );
            if system.records_per_op > 1 {
                let _ = writeln!(
                    out,
                    "  {:<22} {:>11.0}  ({} records per call)",
                    "records/s", system.records_per_sec, system.records_per_op
                );
            }
            if system.by_kind.len() > 1 {
                for (kind, figures) in &system.by_kind {
                    let _ = writeln!(
                        out,
                        "  {:<22} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                        kind,
                        figures.ops_per_sec,
                        figures.latency_ms.p50,
                        figures.latency_ms.p90,
                        figures.latency_ms.p99,
                        figures.latency_ms.p999,
                        figures.latency_ms.max
                    );
                }
            }
        }
        if let Some(watch) = &self.watch {
            let figures = &watch.latency_ms;
            let _ = writeln!(
                out,
                "{:<24} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {}",
                "watch on B (A answer→B)",
                watch.delivered as f64 / self.duration_seconds.max(f64::MIN_POSITIVE),
                figures.p50,
                figures.p90,
                figures.p99,
                figures.p999,
                figures.max,
                watch.missing
            );
        }
        // Naive first: it is the comparison the design is about.
        let ordered = ["naive", "echo"]
            .into_iter()
            .filter_map(|name| self.ratios.get(name).map(|r| (name, r)));
        for (baseline, ratios) in ordered {
            let _ = writeln!(
                out,
                "{:<24} {:>11} {:>9} {:>9} {:>9} {:>9}",
                format!("tally / {baseline}"),
                times(ratios.ops_per_sec),
                times(ratios.p50),
                times(ratios.p90),
                times(ratios.p99),
                times(ratios.p999)
            );
        }
        for system in self.systems() {
            for (label, count) in &system.errors {
                let sample = system
                    .error_samples
                    .get(label)
                    .map(String::as_str)
                    .unwrap_or("");
                let _ = writeln!(out, "!! {}: {count} × {label}: {sample}", system.system);
            }
            if system.unsent > 0 {
                let _ = writeln!(
                    out,
                    "!! {}: {} sends due in the window were never made (callers behind schedule: raise --callers or lower --rate)",
                    system.system, system.unsent
                );
            }
        }
        for (baseline, error) in &self.baseline_errors {
            let _ = writeln!(out, "!! the {baseline} baseline could not run: {error}");
        }
        if self.tallyd.warnings_logged + self.tallyd.errors_logged > 0 {
            let _ = writeln!(
                out,
                "!! tallyd logged {} warnings and {} errors during the run (shown above)",
                self.tallyd.warnings_logged, self.tallyd.errors_logged
            );
        }
        if let Some(rss) = self.tallyd.rss_bytes_after {
            let _ = writeln!(
                out,
                "tallyd RSS after the run: {:.1} MiB",
                rss as f64 / (1024.0 * 1024.0)
            );
        }
        if let Some(lag) = &self.projection_lag {
            let _ = writeln!(
                out,
                "projection lag (a write until a read at least as fresh answers): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} probes{}",
                lag.latency_ms.p50,
                lag.latency_ms.p99,
                lag.latency_ms.max,
                lag.probes,
                if lag.failed > 0 {
                    format!(", {} failed", lag.failed)
                } else {
                    String::new()
                }
            );
        }
        if let Some(watch) = &self.watch {
            let _ = writeln!(
                out,
                "watch: {} watched accounts; of {} Debits answered on A in the window, {} delivered on B, {} missing after {:.1}s of grace; {} arrived before A's answer (counted as 0 ms); {} streams resumed",
                watch.watchers,
                watch.answered,
                watch.delivered,
                watch.missing,
                watch.grace_seconds,
                watch.before_answer,
                watch.streams_resumed
            );
            if watch.missing > 0 {
                let _ = writeln!(
                    out,
                    "!! watch: {} Debits answered on A never reached the watches on B",
                    watch.missing
                );
            }
            if watch.replica_b_warnings_logged + watch.replica_b_errors_logged > 0 {
                let _ = writeln!(
                    out,
                    "!! tallyd B logged {} warnings and {} errors during the run (shown above)",
                    watch.replica_b_warnings_logged, watch.replica_b_errors_logged
                );
            }
        }
        let _ = writeln!(out, "balances: {}", self.check.summary());
        if let Some(naive) = &self.naive_check {
            let _ = writeln!(
                out,
                "naive balances: {} ({} mc consumed, {} accounts differ, {} mc held)",
                if naive.exact { "PASS" } else { "FAIL" },
                naive.consumed_millicredits,
                naive.mismatches,
                naive.held_millicredits
            );
        }
        out
    }
}

/// A ratio as `3.86x`, with enough digits to stay readable far from 1.
fn times(ratio: f64) -> String {
    if !ratio.is_finite() {
        "n/a".into()
    } else if ratio >= 10.0 {
        format!("{ratio:.1}x")
    } else if ratio >= 0.1 {
        format!("{ratio:.2}x")
    } else {
        format!("{ratio:.4}x")
    }
}

#[cfg(test)]
mod tests {
    use super::times;

    #[test]
    fn ratios_stay_readable() {
        assert_eq!(times(3.5), "3.50x");
        assert_eq!(times(31.0), "31.0x");
        assert_eq!(times(0.0013), "0.0013x");
        assert_eq!(times(f64::NAN), "n/a");
    }
}
