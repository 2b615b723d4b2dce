//! The gauges read at each metric collection: projection lag, open
//! reservations, and the PostgreSQL pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::ObservableGauge;
use tally_projections::Projections;
use tally_telemetry::names::{self, attr};
use tally_telemetry::{observe_f64, observe_u64};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Store;

/// Registered gauges; they report until this is dropped.
pub(crate) struct Gauges {
    _f64: Vec<ObservableGauge<f64>>,
    _u64: Vec<ObservableGauge<u64>>,
    refresher: JoinHandle<()>,
}

impl Drop for Gauges {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Not measured yet: nothing is reported rather than a false zero.
const UNKNOWN: i64 = -1;

pub(crate) fn register<S: Store>(projections: Projections<S>, store: S) -> Gauges {
    let meter = global::meter(names::SCOPE);
    let lagging = projections.clone();
    let lag = observe_f64(&meter, names::PROJECTION_LAG, move |gauge| {
        for (projection, lag) in lagging.lag() {
            gauge.observe(
                lag.age.as_secs_f64(),
                &[KeyValue::new(attr::PROJECTION, projection.name())],
            );
        }
    });
    let lag_events = observe_u64(&meter, names::PROJECTION_LAG_EVENTS, move |gauge| {
        for (projection, lag) in projections.lag() {
            gauge.observe(
                lag.events,
                &[KeyValue::new(attr::PROJECTION, projection.name())],
            );
        }
    });

    // Counting open reservations is a query, and callbacks must not
    // block: each collection reports the last count and asks for a new
    // one, so the store is only read as often as metrics are collected.
    let open = Arc::new(AtomicI64::new(UNKNOWN));
    let wanted = Arc::new(Notify::new());
    let reported = open.clone();
    let ask = wanted.clone();
    let reservations = observe_u64(&meter, names::RESERVATIONS_OPEN, move |gauge| {
        if let Ok(count) = u64::try_from(reported.load(Ordering::Relaxed)) {
            gauge.observe(count, &[]);
        }
        ask.notify_one();
    });
    let counting = store.clone();
    wanted.notify_one();
    let refresher = tokio::spawn(async move {
        loop {
            wanted.notified().await;
            match tally_projections::open_reservations(&counting).await {
                Ok(count) => {
                    open.store(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed)
                }
                Err(e) => tracing::debug!(error = %e, "counting open reservations failed"),
            }
        }
    });

    let mut u64_gauges = vec![lag_events, reservations];
    if store.pool_status().is_some() {
        let pool = || KeyValue::new(attr::DB_POOL_NAME, names::POOL_NAME);
        let of = store.clone();
        u64_gauges.push(observe_u64(
            &meter,
            names::DB_CONNECTION_COUNT,
            move |gauge| {
                if let Some(status) = of.pool_status() {
                    let used = status.size.saturating_sub(status.idle);
                    for (state, count) in [("idle", status.idle), ("used", used)] {
                        gauge.observe(
                            count as u64,
                            &[pool(), KeyValue::new(attr::DB_CONNECTION_STATE, state)],
                        );
                    }
                }
            },
        ));
        let of = store.clone();
        u64_gauges.push(observe_u64(
            &meter,
            names::DB_CONNECTION_MAX,
            move |gauge| {
                if let Some(status) = of.pool_status() {
                    gauge.observe(status.max_size as u64, &[pool()]);
                }
            },
        ));
        let of = store;
        u64_gauges.push(observe_u64(
            &meter,
            names::DB_CONNECTION_PENDING,
            move |gauge| {
                if let Some(status) = of.pool_status() {
                    gauge.observe(status.waiting as u64, &[pool()]);
                }
            },
        ));
    }
    Gauges {
        _f64: vec![lag],
        _u64: u64_gauges,
        refresher,
    }
}
