//! Every metric Tally exports and every attribute it sets, declared once.
//! `docs/metrics.md` documents the same list; a test keeps the two equal,
//! and `deploy/`'s dashboard and alert rules are checked against the doc.

/// What kind of instrument a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
    Gauge,
}

/// A metric's declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instrument {
    pub name: &'static str,
    pub kind: Kind,
    /// UCUM, with `{...}` annotations for counted things.
    pub unit: &'static str,
    pub description: &'static str,
}

impl Instrument {
    /// The series name once the collector's Prometheus exporter has
    /// translated it: dots to underscores, `_seconds` for a unit of
    /// seconds, `_total` for counters; annotation units add nothing.
    pub fn prometheus_name(&self) -> String {
        let mut name = self.name.replace('.', "_");
        if self.unit == "s" && !name.ends_with("_seconds") {
            name.push_str("_seconds");
        }
        if self.kind == Kind::Counter {
            name.push_str("_total");
        }
        name
    }
}

const fn instrument(
    name: &'static str,
    kind: Kind,
    unit: &'static str,
    description: &'static str,
) -> Instrument {
    Instrument {
        name,
        kind,
        unit,
        description,
    }
}

pub const RPC_SERVER_CALL_DURATION: Instrument = instrument(
    "rpc.server.call.duration",
    Kind::Histogram,
    "s",
    "gRPC calls served, from arrival to the last byte of the response",
);
pub const CREDITS_GRANTED: Instrument = instrument(
    "tally.credits.granted",
    Kind::Counter,
    "{millicredit}",
    "Credits granted into buckets",
);
pub const CREDITS_RESERVED: Instrument = instrument(
    "tally.credits.reserved",
    Kind::Counter,
    "{millicredit}",
    "Credits held by reservations",
);
pub const CREDITS_COMMITTED: Instrument = instrument(
    "tally.credits.committed",
    Kind::Counter,
    "{millicredit}",
    "Credits charged by commits and debits, overage included",
);
pub const CREDITS_RELEASED: Instrument = instrument(
    "tally.credits.released",
    Kind::Counter,
    "{millicredit}",
    "Held credits given back to their buckets",
);
pub const CREDITS_EXPIRED: Instrument = instrument(
    "tally.credits.expired",
    Kind::Counter,
    "{millicredit}",
    "Unspent credits lost when their bucket expired",
);
pub const CREDITS_REFUNDED: Instrument = instrument(
    "tally.credits.refunded",
    Kind::Counter,
    "{millicredit}",
    "Credits of earlier charges given back by refunds",
);
pub const CREDITS_OVERAGE: Instrument = instrument(
    "tally.credits.overage",
    Kind::Counter,
    "{millicredit}",
    "Charges the account's credits did not cover",
);
pub const REFUSALS: Instrument = instrument(
    "tally.refusals",
    Kind::Counter,
    "{refusal}",
    "Commands refused, by reason",
);
pub const AUTH_REFUSALS: Instrument = instrument(
    "tally.auth.refusals",
    Kind::Counter,
    "{call}",
    "Calls refused for their API key, by reason",
);
pub const SHED: Instrument = instrument(
    "tally.shed",
    Kind::Counter,
    "{call}",
    "Calls refused at once for load, by reason",
);
pub const TLS_HANDSHAKE_FAILURES: Instrument = instrument(
    "tally.tls.handshake.failures",
    Kind::Counter,
    "{connection}",
    "Connections dropped because their TLS handshake failed, by reason",
);
pub const RESERVATIONS_OPEN: Instrument = instrument(
    "tally.reservations.open",
    Kind::Gauge,
    "{reservation}",
    "Reservations open across all accounts, per the balances projection",
);
pub const STORE_APPEND_DURATION: Instrument = instrument(
    "tally.store.append.duration",
    Kind::Histogram,
    "s",
    "One group-commit append to the event log",
);
pub const STORE_APPEND_BATCH_SIZE: Instrument = instrument(
    "tally.store.append.batch_size",
    Kind::Histogram,
    "{event}",
    "Events per committed append",
);
pub const STORE_APPEND_HELD_BACK: Instrument = instrument(
    "tally.store.append.held_back",
    Kind::Histogram,
    "s",
    "How long a group-commit append waited for the projections to catch up",
);
pub const PROJECTION_LAG: Instrument = instrument(
    "tally.projection.lag",
    Kind::Gauge,
    "s",
    "Age of the oldest log event the projection has not applied",
);
pub const PROJECTION_LAG_EVENTS: Instrument = instrument(
    "tally.projection.lag.events",
    Kind::Gauge,
    "{event}",
    "Log events the projection has not applied",
);
pub const DB_CONNECTION_COUNT: Instrument = instrument(
    "db.client.connection.count",
    Kind::Gauge,
    "{connection}",
    "Pool connections by state",
);
pub const DB_CONNECTION_MAX: Instrument = instrument(
    "db.client.connection.max",
    Kind::Gauge,
    "{connection}",
    "The pool's size limit",
);
pub const DB_CONNECTION_PENDING: Instrument = instrument(
    "db.client.connection.pending_requests",
    Kind::Gauge,
    "{request}",
    "Callers waiting for a pool connection",
);

/// Every metric, in the order `docs/metrics.md` lists them.
pub const ALL: &[Instrument] = &[
    RPC_SERVER_CALL_DURATION,
    CREDITS_GRANTED,
    CREDITS_RESERVED,
    CREDITS_COMMITTED,
    CREDITS_RELEASED,
    CREDITS_EXPIRED,
    CREDITS_REFUNDED,
    CREDITS_OVERAGE,
    REFUSALS,
    AUTH_REFUSALS,
    SHED,
    TLS_HANDSHAKE_FAILURES,
    RESERVATIONS_OPEN,
    STORE_APPEND_DURATION,
    STORE_APPEND_BATCH_SIZE,
    STORE_APPEND_HELD_BACK,
    PROJECTION_LAG,
    PROJECTION_LAG_EVENTS,
    DB_CONNECTION_COUNT,
    DB_CONNECTION_MAX,
    DB_CONNECTION_PENDING,
];

/// Attribute keys: OpenTelemetry's semantic conventions where one exists,
/// `tally.*` otherwise.
pub mod attr {
    pub const RPC_SYSTEM: &str = "rpc.system";
    pub const RPC_SERVICE: &str = "rpc.service";
    pub const RPC_METHOD: &str = "rpc.method";
    pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
    pub const DB_SYSTEM_NAME: &str = "db.system.name";
    pub const DB_OPERATION_NAME: &str = "db.operation.name";
    pub const DB_POOL_NAME: &str = "db.client.connection.pool.name";
    pub const DB_CONNECTION_STATE: &str = "db.client.connection.state";
    pub const ACCOUNT_ID: &str = "tally.account_id";
    pub const ACTION: &str = "tally.action";
    pub const CAPABILITY: &str = "tally.capability";
    pub const BUCKET_KIND: &str = "tally.bucket.kind";
    pub const RELEASE_REASON: &str = "tally.release.reason";
    pub const TEST_CLOCK: &str = "tally.test_clock";
    pub const REASON: &str = "tally.reason";
    pub const COMMAND: &str = "tally.command";
    pub const PROJECTION: &str = "tally.projection";
    pub const OUTCOME: &str = "tally.outcome";
}

/// The pool name on `db.client.connection.*`.
pub const POOL_NAME: &str = "tally";

/// The instrumentation scope Tally's meters and tracers report under.
pub const SCOPE: &str = "tally";
