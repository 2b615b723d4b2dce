//! The instruments, built from the names in [`crate::names`]. Built from
//! the global meter provider: before [`crate::init`] installs one (or
//! when telemetry is off) they record nothing and cost next to nothing.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::{AsyncInstrument, Counter, Histogram, Meter, ObservableGauge};

use crate::names::{self, Instrument, attr};

/// Seconds: from a fast SQLite append to a call that waited on a lock.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 10.0,
];

/// Events per append: group commit batches up to 512 commands.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The synchronous instruments. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    rpc_duration: Histogram<f64>,
    granted: Counter<u64>,
    reserved: Counter<u64>,
    committed: Counter<u64>,
    released: Counter<u64>,
    expired: Counter<u64>,
    overage: Counter<u64>,
    refunded: Counter<u64>,
    refusals: Counter<u64>,
    auth_refusals: Counter<u64>,
    shed: Counter<u64>,
    tls_handshake_failures: Counter<u64>,
    append_duration: Histogram<f64>,
    append_batch_size: Histogram<u64>,
    append_held_back: Histogram<f64>,
}

/// Why held credits went back to their buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReason {
    Released,
    /// A commit below its hold returned the rest.
    Committed,
    Expired,
}

impl ReleaseReason {
    fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::Released => "released",
            ReleaseReason::Committed => "committed",
            ReleaseReason::Expired => "expired",
        }
    }
}

/// How an append ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    Ok,
    /// Another writer moved the stream first; the batch is decided again.
    Conflict,
    Error,
}

impl AppendOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AppendOutcome::Ok => "ok",
            AppendOutcome::Conflict => "conflict",
            AppendOutcome::Error => "error",
        }
    }
}

impl Metrics {
    /// The instruments of the global meter provider as it is now.
    pub fn global() -> Self {
        Metrics::new(&global::meter(names::SCOPE))
    }

    pub fn new(meter: &Meter) -> Self {
        let counter = |i: Instrument| {
            meter
                .u64_counter(i.name)
                .with_unit(i.unit)
                .with_description(i.description)
                .build()
        };
        let seconds = |i: Instrument| {
            meter
                .f64_histogram(i.name)
                .with_unit(i.unit)
                .with_description(i.description)
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build()
        };
        Metrics {
            rpc_duration: seconds(names::RPC_SERVER_CALL_DURATION),
            granted: counter(names::CREDITS_GRANTED),
            reserved: counter(names::CREDITS_RESERVED),
            committed: counter(names::CREDITS_COMMITTED),
            released: counter(names::CREDITS_RELEASED),
            expired: counter(names::CREDITS_EXPIRED),
            overage: counter(names::CREDITS_OVERAGE),
            refunded: counter(names::CREDITS_REFUNDED),
            refusals: counter(names::REFUSALS),
            auth_refusals: counter(names::AUTH_REFUSALS),
            shed: counter(names::SHED),
            tls_handshake_failures: counter(names::TLS_HANDSHAKE_FAILURES),
            append_duration: seconds(names::STORE_APPEND_DURATION),
            append_batch_size: meter
                .u64_histogram(names::STORE_APPEND_BATCH_SIZE.name)
                .with_unit(names::STORE_APPEND_BATCH_SIZE.unit)
                .with_description(names::STORE_APPEND_BATCH_SIZE.description)
                .with_boundaries(BATCH_BUCKETS.to_vec())
                .build(),
            append_held_back: seconds(names::STORE_APPEND_HELD_BACK),
        }
    }

    /// One finished gRPC call. `code` is the numeric gRPC status code.
    pub fn rpc_served(&self, service: &str, method: &str, code: i64, elapsed: Duration) {
        self.rpc_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new(attr::RPC_SYSTEM, "grpc"),
                KeyValue::new(attr::RPC_SERVICE, service.to_owned()),
                KeyValue::new(attr::RPC_METHOD, method.to_owned()),
                KeyValue::new(attr::RPC_GRPC_STATUS_CODE, code),
            ],
        );
    }

    pub fn granted(&self, millicredits: u64, bucket_kind: &'static str, clock: AccountClock) {
        self.granted.add(
            millicredits,
            &[
                KeyValue::new(attr::BUCKET_KIND, bucket_kind),
                clock.attribute(),
            ],
        );
    }

    pub fn reserved(&self, millicredits: u64, action: &str, capability: &str, clock: AccountClock) {
        self.reserved
            .add(millicredits, &action_attributes(action, capability, clock));
    }

    pub fn committed(
        &self,
        millicredits: u64,
        action: &str,
        capability: &str,
        clock: AccountClock,
    ) {
        self.committed
            .add(millicredits, &action_attributes(action, capability, clock));
    }

    pub fn refunded(&self, millicredits: u64, action: &str, capability: &str, clock: AccountClock) {
        self.refunded
            .add(millicredits, &action_attributes(action, capability, clock));
    }

    pub fn overage(&self, millicredits: u64, action: &str, capability: &str, clock: AccountClock) {
        self.overage
            .add(millicredits, &action_attributes(action, capability, clock));
    }

    pub fn released(
        &self,
        millicredits: u64,
        action: &str,
        capability: &str,
        why: ReleaseReason,
        clock: AccountClock,
    ) {
        let [action, capability, clock] = action_attributes(action, capability, clock);
        self.released.add(
            millicredits,
            &[
                action,
                capability,
                clock,
                KeyValue::new(attr::RELEASE_REASON, why.as_str()),
            ],
        );
    }

    pub fn expired(&self, millicredits: u64, bucket_kind: &'static str, clock: AccountClock) {
        self.expired.add(
            millicredits,
            &[
                KeyValue::new(attr::BUCKET_KIND, bucket_kind),
                clock.attribute(),
            ],
        );
    }

    /// A command refused with `reason` (the caller's `ErrorInfo.reason`).
    /// A call refused before any handler ran: no valid key
    /// (`API_KEY_*`) or a key without the scope (`SCOPE_MISSING`).
    pub fn auth_refused(&self, reason: &'static str) {
        self.auth_refusals
            .add(1, &[KeyValue::new(attr::REASON, reason)]);
    }

    /// A call refused at once for load (`SERVER_OVERLOADED`,
    /// `ACCOUNT_OVERLOADED`), nothing decided.
    pub fn shed(&self, reason: &'static str) {
        self.shed.add(1, &[KeyValue::new(attr::REASON, reason)]);
    }

    /// A connection dropped because its TLS handshake failed: `timeout`,
    /// `not_tls`, `no_client_certificate`, `bad_client_certificate` or
    /// `other` (the listener says which).
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .add(1, &[KeyValue::new(attr::REASON, reason)]);
    }

    pub fn refused(&self, reason: &'static str, command: &'static str) {
        self.refusals.add(
            1,
            &[
                KeyValue::new(attr::REASON, reason),
                KeyValue::new(attr::COMMAND, command),
            ],
        );
    }

    /// A group-commit append that waited `waited` for the projections to
    /// catch up before it went.
    pub fn append_held_back(&self, waited: Duration) {
        self.append_held_back.record(waited.as_secs_f64(), &[]);
    }

    /// One append to the log; `events` counts only for committed appends.
    pub fn appended(
        &self,
        system: &'static str,
        outcome: AppendOutcome,
        elapsed: Duration,
        events: usize,
    ) {
        let system = KeyValue::new(attr::DB_SYSTEM_NAME, system);
        self.append_duration.record(
            elapsed.as_secs_f64(),
            &[
                system.clone(),
                KeyValue::new(attr::OUTCOME, outcome.as_str()),
            ],
        );
        if outcome == AppendOutcome::Ok {
            self.append_batch_size.record(events as u64, &[system]);
        }
    }
}

fn action_attributes(action: &str, capability: &str, clock: AccountClock) -> [KeyValue; 3] {
    [
        KeyValue::new(attr::ACTION, action.to_owned()),
        KeyValue::new(attr::CAPABILITY, capability.to_owned()),
        clock.attribute(),
    ]
}

/// Whose credits a credit counter counts: a real account's, or one on a
/// test clock (`tally.test_clock`), which dashboards of real money leave
/// out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountClock {
    Wall,
    Test,
}

impl AccountClock {
    fn attribute(self) -> KeyValue {
        KeyValue::new(attr::TEST_CLOCK, self == AccountClock::Test)
    }
}

/// Registers an integer gauge read by `observe` at each collection. Keep
/// the handle for as long as the gauge should report.
pub fn observe_u64(
    meter: &Meter,
    instrument: Instrument,
    observe: impl Fn(&dyn AsyncInstrument<u64>) + Send + Sync + 'static,
) -> ObservableGauge<u64> {
    meter
        .u64_observable_gauge(instrument.name)
        .with_unit(instrument.unit)
        .with_description(instrument.description)
        .with_callback(observe)
        .build()
}

/// Registers a gauge of seconds read by `observe` at each collection.
pub fn observe_f64(
    meter: &Meter,
    instrument: Instrument,
    observe: impl Fn(&dyn AsyncInstrument<f64>) + Send + Sync + 'static,
) -> ObservableGauge<f64> {
    meter
        .f64_observable_gauge(instrument.name)
        .with_unit(instrument.unit)
        .with_description(instrument.description)
        .with_callback(observe)
        .build()
}
