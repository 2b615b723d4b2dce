//! What the credit counters learn from the events a batch writes. Noted
//! while the batch is decided, recorded only once its append commits, so
//! a lost race or a failed append counts nothing.

use std::collections::HashMap;

use tally_core::{Account, BucketKind, Event, GrantId, Millicredits, ReservationId, Timestamp};
use tally_telemetry::{AccountClock, Metrics, ReleaseReason};

#[derive(Debug)]
enum Measurement {
    Granted(u64, &'static str),
    Expired(u64, &'static str),
    Reserved(u64, Metered),
    Committed(u64, Metered),
    Overage(u64, Metered),
    Refunded(u64, Metered),
    Released(u64, Metered, ReleaseReason),
}

/// The action and capability a charge counts under.
#[derive(Clone, Debug)]
struct Metered {
    action: String,
    capability: String,
}

pub(crate) struct Observations {
    /// The kind of every bucket the batch may expire: those already past
    /// their expiry at `now` (usually none: no allocation), and those it
    /// grants. An expired bucket leaves the state, so its kind must be
    /// known beforehand.
    kinds: HashMap<GrantId, &'static str>,
    measurements: Vec<Measurement>,
}

impl Observations {
    pub(crate) fn before(state: &Account, now: Timestamp) -> Self {
        Observations {
            kinds: state
                .buckets
                .iter()
                .filter(|bucket| bucket.expires_at.is_some_and(|at| at <= now))
                .map(|bucket| (bucket.grant_id.clone(), bucket.kind.as_str()))
                .collect(),
            measurements: Vec::new(),
        }
    }

    /// Notes `event`, already applied to `state`.
    pub(crate) fn note(&mut self, event: &Event, state: &Account) {
        let measurement = match event {
            Event::CreditsGranted {
                grant_id,
                kind,
                amount,
                ..
            } => {
                self.kinds.insert(grant_id.clone(), kind.as_str());
                Measurement::Granted(count(*amount), kind.as_str())
            }
            Event::BucketExpired {
                grant_id, amount, ..
            } => Measurement::Expired(
                count(*amount),
                self.kinds.get(grant_id).copied().unwrap_or("unknown"),
            ),
            Event::CreditsHeld { reservation, .. } => Measurement::Reserved(
                count(reservation.amount),
                Metered {
                    action: reservation.action.to_string(),
                    capability: reservation
                        .action
                        .capability(reservation.capability.as_deref())
                        .to_owned(),
                },
            ),
            Event::CreditsDebited { debit, .. } => {
                let metered = Metered {
                    action: debit.action.to_string(),
                    capability: debit
                        .action
                        .capability(debit.capability.as_deref())
                        .to_owned(),
                };
                if debit.overage.is_positive() {
                    self.measurements
                        .push(Measurement::Overage(count(debit.overage), metered.clone()));
                }
                let returned = debit.released();
                if returned.is_positive() {
                    self.measurements.push(Measurement::Released(
                        count(returned),
                        metered.clone(),
                        ReleaseReason::Committed,
                    ));
                }
                Measurement::Committed(count(debit.charged), metered)
            }
            Event::HoldReleased {
                reservation_id,
                amount,
                ..
            } => Measurement::Released(
                count(*amount),
                metered_hold(state, reservation_id),
                ReleaseReason::Released,
            ),
            Event::HoldExpired {
                reservation_id,
                amount,
                ..
            } => Measurement::Released(
                count(*amount),
                metered_hold(state, reservation_id),
                ReleaseReason::Expired,
            ),
            Event::CreditsRefunded { refund, .. } => Measurement::Refunded(
                count(refund.amount),
                Metered {
                    action: refund.action.to_string(),
                    capability: refund
                        .action
                        .capability(refund.capability.as_deref())
                        .to_owned(),
                },
            ),
            // Credits an operator added are granted, in a promotional
            // bucket; what one removed counts like a void: not at all.
            Event::CreditsAdjusted { amount, .. } if amount.is_positive() => {
                Measurement::Granted(count(*amount), BucketKind::Promotional.as_str())
            }
            // Nothing the credit counters count: terms, boundaries,
            // alerts, extensions, voids, repaid overage and upcoming
            // grants taking effect (counted as granted when granted).
            Event::AccountOpened { .. }
            | Event::GrantTookEffect { .. }
            | Event::CycleStarted { .. }
            | Event::DayStarted { .. }
            | Event::PlanChanged { .. }
            | Event::SpendingCapSet { .. }
            | Event::BillingAnchorSet { .. }
            | Event::GrantVoided { .. }
            | Event::CreditsAdjusted { .. }
            | Event::HoldExtended { .. }
            | Event::OverageRepaid { .. }
            | Event::AlertThresholdsSet { .. }
            | Event::AlertRaised { .. } => return,
        };
        self.measurements.push(measurement);
    }

    /// The append committed: count what it wrote.
    /// Records what was noted, for an account on a test clock or not
    /// (known once the batch is decided: its first batch opens it).
    pub(crate) fn record(self, metrics: &Metrics, on_test_clock: bool) {
        let clock = if on_test_clock {
            AccountClock::Test
        } else {
            AccountClock::Wall
        };
        for measurement in self.measurements {
            match measurement {
                Measurement::Granted(amount, kind) => metrics.granted(amount, kind, clock),
                Measurement::Expired(amount, kind) => metrics.expired(amount, kind, clock),
                Measurement::Reserved(amount, m) => {
                    metrics.reserved(amount, &m.action, &m.capability, clock)
                }
                Measurement::Committed(amount, m) => {
                    metrics.committed(amount, &m.action, &m.capability, clock)
                }
                Measurement::Refunded(amount, m) => {
                    metrics.refunded(amount, &m.action, &m.capability, clock)
                }
                Measurement::Overage(amount, m) => {
                    metrics.overage(amount, &m.action, &m.capability, clock)
                }
                Measurement::Released(amount, m, why) => {
                    metrics.released(amount, &m.action, &m.capability, why, clock)
                }
            }
        }
    }
}

/// A resolved hold's action, from the account's memory of it.
fn metered_hold(state: &Account, id: &ReservationId) -> Metered {
    let reservation = state
        .resolved
        .get(id)
        .map(|resolved| &resolved.reservation)
        .or_else(|| state.reservations.get(id));
    match reservation {
        Some(reservation) => Metered {
            action: reservation.action.to_string(),
            capability: reservation
                .action
                .capability(reservation.capability.as_deref())
                .to_owned(),
        },
        None => Metered {
            action: "unknown".into(),
            capability: "unknown".into(),
        },
    }
}

fn count(amount: Millicredits) -> u64 {
    u64::try_from(amount.get()).unwrap_or(0)
}
