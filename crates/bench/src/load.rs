//! The load driver: N callers sending operations, closed loop or open loop
//! at a fixed rate, with latencies in HdrHistograms.
//!
//! The driver knows nothing of Tally, PostgreSQL or echo: a [`Workload`]
//! turns (caller, sequence number) into one operation and says how it went.
//! Every system of a run goes through this same loop, so their figures
//! differ only by what the operation does.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Latencies are recorded in microseconds, from 1 µs to an hour.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;

/// A new, empty latency histogram (µs, three significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3).expect("valid histogram bounds")
}

/// What one operation reported: which kind it was (mixed runs several) and,
/// when it failed, a label to count it under (a gRPC code, a SQLSTATE) with
/// a sample message.
#[derive(Debug)]
pub struct Outcome {
    pub kind: &'static str,
    pub error: Option<OpError>,
}

#[derive(Debug)]
pub struct OpError {
    pub label: String,
    pub message: String,
}

impl Outcome {
    pub fn ok(kind: &'static str) -> Outcome {
        Outcome { kind, error: None }
    }

    pub fn failed(
        kind: &'static str,
        label: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Outcome {
            kind,
            error: Some(OpError {
                label: label.into(),
                message: message.into(),
            }),
        }
    }
}

/// One system's operation. Each caller owns a `Caller` (its client and
/// whatever it must remember, e.g. the debits it saw succeed), handed back
/// when the run ends so the balances can be checked.
pub trait Workload: Send + Sync + 'static {
    type Caller: Send + 'static;

    /// Performs operation `n` of this caller.
    fn call(&self, caller: &mut Self::Caller, n: u64) -> impl Future<Output = Outcome> + Send;
}

/// How long a run lasts and how operations are paced.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub warmup: Duration,
    pub bound: Bound,
    /// Open loop at this many ops per second; `None` is closed loop.
    pub rate: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// Measure for this long after the warm-up.
    Time(Duration),
    /// Exactly this many operations in all (history pre-fill), as fast as
    /// the callers go.
    Ops(u64),
}

/// What the callers measured, merged.
pub struct Measured {
    /// Successful operations started inside the measured window.
    pub ok: u64,
    /// Failed operations in the window, by label.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each error label.
    pub error_samples: BTreeMap<String, String>,
    /// Latency of the successful operations in the window.
    pub latency: Histogram<u64>,
    /// The same, per kind of operation.
    pub by_kind: BTreeMap<&'static str, Histogram<u64>>,
    /// The measured window.
    pub window: Duration,
    /// Open loop: scheduled sends the callers never made because they were
    /// too far behind when the window closed.
    pub unsent: u64,
}

impl Measured {
    fn empty() -> Measured {
        Measured {
            ok: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            latency: new_histogram(),
            by_kind: BTreeMap::new(),
            window: Duration::ZERO,
            unsent: 0,
        }
    }

    fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome.error {
            None => {
                let micros = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                self.ok += 1;
                self.latency.saturating_record(micros);
                self.by_kind
                    .entry(outcome.kind)
                    .or_insert_with(new_histogram)
                    .saturating_record(micros);
            }
            Some(error) => {
                *self.errors.entry(error.label.clone()).or_default() += 1;
                self.error_samples
                    .entry(error.label)
                    .or_insert(error.message);
            }
        }
    }

    fn merge(&mut self, other: Measured) {
        self.ok += other.ok;
        for (label, count) in other.errors {
            *self.errors.entry(label).or_default() += count;
        }
        for (label, message) in other.error_samples {
            self.error_samples.entry(label).or_insert(message);
        }
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
        for (kind, histogram) in other.by_kind {
            self.by_kind
                .entry(kind)
                .or_insert_with(new_histogram)
                .add(&histogram)
                .expect("histograms share their bounds");
        }
        self.unsent += other.unsent;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn ops_per_sec(&self) -> f64 {
        let seconds = self.window.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Runs `workload` with one task per caller and returns the merged figures
/// and the callers, in order.
pub async fn drive<W: Workload>(
    workload: Arc<W>,
    callers: Vec<W::Caller>,
    pace: Pace,
) -> anyhow::Result<(Measured, Vec<W::Caller>)> {
    let count = callers.len();
    anyhow::ensure!(count > 0, "a run needs at least one caller");
    let start = Instant::now();
    let measure_from = start + pace.warmup;
    let plan = Plan {
        start,
        measure_from,
        callers: count as u64,
        pace,
    };
    let mut tasks = Vec::with_capacity(count);
    for (index, caller) in callers.into_iter().enumerate() {
        let workload = workload.clone();
        tasks.push(tokio::spawn(run_caller(
            workload,
            caller,
            index as u64,
            plan,
        )));
    }
    let mut measured = Measured::empty();
    let mut returned = Vec::with_capacity(count);
    for task in tasks {
        let (caller_measured, caller) = task.await?;
        measured.merge(caller_measured);
        returned.push(caller);
    }
    measured.window = match pace.bound {
        Bound::Time(duration) => duration,
        Bound::Ops(_) => measure_from.elapsed(),
    };
    Ok((measured, returned))
}

#[derive(Clone, Copy)]
struct Plan {
    start: Instant,
    measure_from: Instant,
    callers: u64,
    pace: Pace,
}

impl Plan {
    /// When the measured window closes (`None`: bounded by count).
    fn end(&self) -> Option<Instant> {
        match self.pace.bound {
            Bound::Time(duration) => Some(self.measure_from + duration),
            Bound::Ops(_) => None,
        }
    }

    /// Whether caller `index` still has an operation number `n` to make.
    fn has_op(&self, index: u64, n: u64) -> bool {
        match self.pace.bound {
            Bound::Ops(total) => n * self.callers + index < total,
            Bound::Time(_) => true,
        }
    }

    /// Open loop: when operation `n` of caller `index` is due. The callers
    /// interleave, so the whole run sends at `rate` evenly.
    fn scheduled(&self, rate: f64, index: u64, n: u64) -> Instant {
        let slot = n * self.callers + index;
        self.start + Duration::from_secs_f64(slot as f64 / rate)
    }
}

async fn run_caller<W: Workload>(
    workload: Arc<W>,
    mut caller: W::Caller,
    index: u64,
    plan: Plan,
) -> (Measured, W::Caller) {
    let mut measured = Measured::empty();
    let end = plan.end();
    let mut n = 0u64;
    while plan.has_op(index, n) {
        // Closed loop: the operation starts now. Open loop: it was due at
        // its scheduled time, and its latency counts from then, so a server
        // that stalls is charged for the requests that queued behind the
        // stall (no coordinated omission).
        let mut due = match plan.pace.rate {
            None => Instant::now(),
            Some(rate) => plan.scheduled(rate, index, n),
        };
        if let Some(end) = end {
            if due >= end {
                break;
            }
            if Instant::now() >= end {
                // Behind schedule when the window closed: what is left was
                // never sent.
                measured.unsent += unsent_after(&plan, index, n, end);
                break;
            }
        }
        let in_window = due >= plan.measure_from;
        if Instant::now() < due {
            // Early: the caller sleeps until it is due, and tokio's timer
            // wakes it up to a millisecond late (it rounds up to its tick).
            // That lateness is the generator's, not the server's, so the
            // latency counts from the wake-up. A caller that was still busy
            // with its previous call past this one's due time was held up
            // by the server, and is charged from the due time.
            tokio::time::sleep_until(due).await;
            due = Instant::now();
        }
        let outcome = workload.call(&mut caller, n).await;
        if in_window {
            measured.record(outcome, due.elapsed());
        }
        n += 1;
    }
    (measured, caller)
}

/// Open loop: the operations of caller `index` from `n` on that were due
/// inside the measured window.
fn unsent_after(plan: &Plan, index: u64, n: u64, end: Instant) -> u64 {
    let Some(rate) = plan.pace.rate else {
        return 0;
    };
    let mut missed = 0;
    let mut k = n;
    loop {
        let due = plan.scheduled(rate, index, k);
        if due >= end {
            return missed;
        }
        if due >= plan.measure_from {
            missed += 1;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Counting {
        calls: AtomicU64,
    }

    impl Workload for Counting {
        type Caller = Vec<u64>;

        async fn call(&self, caller: &mut Vec<u64>, n: u64) -> Outcome {
            self.calls.fetch_add(1, Ordering::Relaxed);
            caller.push(n);
            if n % 5 == 4 {
                Outcome::failed("op", "UNAVAILABLE", "every fifth")
            } else {
                Outcome::ok("op")
            }
        }
    }

    #[tokio::test]
    async fn a_count_bound_run_makes_exactly_that_many_calls() {
        let workload = Arc::new(Counting {
            calls: AtomicU64::new(0),
        });
        let pace = Pace {
            warmup: Duration::ZERO,
            bound: Bound::Ops(103),
            rate: None,
        };
        let (measured, callers) = drive(workload.clone(), vec![Vec::new(); 4], pace)
            .await
            .unwrap();
        assert_eq!(workload.calls.load(Ordering::Relaxed), 103);
        assert_eq!(callers.iter().map(Vec::len).sum::<usize>(), 103);
        assert_eq!(measured.ok + measured.error_count(), 103);
        assert_eq!(measured.errors["UNAVAILABLE"], measured.error_count());
        assert_eq!(measured.latency.len(), measured.ok);
    }

    #[tokio::test]
    async fn an_open_loop_sends_at_its_rate() {
        let workload = Arc::new(Counting {
            calls: AtomicU64::new(0),
        });
        let pace = Pace {
            warmup: Duration::from_millis(100),
            bound: Bound::Time(Duration::from_millis(200)),
            rate: Some(1_000.0),
        };
        let (measured, _) = drive(workload.clone(), vec![Vec::new(); 3], pace)
            .await
            .unwrap();
        // 300 ms of schedule at 1,000/s; 200 sends fall in the measured
        // window. A loaded machine may leave some unsent, never more.
        assert!(workload.calls.load(Ordering::Relaxed) <= 300);
        assert_eq!(measured.ok + measured.error_count() + measured.unsent, 200);
    }

    /// The first call takes 35 ms, every other 1 ms; one caller at 100/s.
    struct StallsOnce;

    impl Workload for StallsOnce {
        type Caller = ();

        async fn call(&self, _: &mut (), n: u64) -> Outcome {
            let took = if n == 0 { 35 } else { 1 };
            tokio::time::sleep(Duration::from_millis(took)).await;
            Outcome::ok("op")
        }
    }

    /// Every call takes 1 ms.
    struct TakesOneMilli;

    impl Workload for TakesOneMilli {
        type Caller = ();

        async fn call(&self, _: &mut (), _: u64) -> Outcome {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Outcome::ok("op")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_does_not_charge_the_timer_s_lateness_to_the_server() {
        // Due every 3⅓ ms: tokio's timer wakes a sleeper at the next whole
        // millisecond, up to ⅔ ms after it was due.
        let pace = Pace {
            warmup: Duration::ZERO,
            bound: Bound::Time(Duration::from_millis(100)),
            rate: Some(300.0),
        };
        let (measured, _) = drive(Arc::new(TakesOneMilli), vec![()], pace)
            .await
            .unwrap();
        assert_eq!(measured.ok, 30);
        assert_eq!(measured.latency.max(), 1_000);
        assert_eq!(measured.latency.min(), 1_000);
    }

    // The paused clock makes every wake-up exact, so the figures are too.
    #[tokio::test(start_paused = true)]
    async fn an_open_loop_charges_a_stall_to_the_calls_queued_behind_it() {
        let pace = Pace {
            warmup: Duration::ZERO,
            bound: Bound::Time(Duration::from_millis(100)),
            rate: Some(100.0),
        };
        let (measured, _) = drive(Arc::new(StallsOnce), vec![()], pace).await.unwrap();
        // Due at 0, 10, …, 90 ms. The first ends at 35 ms; the three due
        // meanwhile (10, 20, 30) were sent late, back to back, at 35, 36
        // and 37 ms, and are charged from when they were due: 26, 17 and
        // 8 ms. The rest were sent on time and took their own 1 ms.
        // In whole milliseconds: the histogram keeps 3 significant digits.
        let millis = |micros: u64| (micros + 500) / 1_000;
        assert_eq!(measured.ok, 10);
        let mut seen: Vec<u64> = measured
            .latency
            .iter_recorded()
            .flat_map(|v| {
                std::iter::repeat_n(millis(v.value_iterated_to()), v.count_at_value() as usize)
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 1, 1, 1, 1, 1, 8, 17, 26, 35]);
    }
}
