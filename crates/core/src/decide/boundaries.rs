//! Time boundaries: what time alone makes due (holds and buckets expiring,
//! upcoming grants taking effect, cycles and days starting with their
//! allowances, overage paid when a grant becomes effective), and when the
//! next such moment is.

use crate::alert::{Levels, raise};
use crate::calendar::{next_anchor, next_midnight};
use crate::{
    Account, BucketKind, Event, GrantId, GrantSource, Millicredits, Reservation, Timestamp,
};

use super::apply_decided;
use super::settle::settle;

/// Applies everything that time alone makes due up to `now`, each at its
/// own boundary and in time order: holds expire at their expiry, what is
/// left in a bucket expires at the bucket's expiry, and overage is paid when
/// a granted bucket becomes effective. After each boundary, the alerts it
/// crossed are raised, stamped with the boundary. Returns the events it
/// applied.
///
/// Whether this runs on the next command or from a background sweep, the
/// events are the same, because they depend only on the state and the
/// boundaries, never on when they were noticed. That is why alerts are
/// judged per boundary: a sweep that wakes at every boundary and a command
/// that crosses many at once see the same windows.
pub fn advance(account: &mut Account, now: Timestamp) -> Vec<Event> {
    advance_boundaries(account, now, Alerts::PerBoundary)
}

/// Whether [`advance_boundaries`] raises alerts itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Alerts {
    PerBoundary,
    /// The caller raises them once for its whole window.
    LeftToCaller,
}

pub(super) fn advance_boundaries(
    account: &mut Account,
    now: Timestamp,
    alerts: Alerts,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut cursor = account
        .last_event_at
        .unwrap_or(Timestamp::from_millis(i64::MIN));
    while let Some(due) = next_boundary(account, cursor).filter(|due| *due <= now) {
        // Measured when the last event happened: a bucket that expires at
        // `due` is still in the balance then, and the drop it causes is
        // this boundary's.
        let before = Levels::of(account, account.last_event_at.unwrap_or(due));
        let mut time_events = Vec::new();
        let mut expiring: Vec<&Reservation> = account
            .reservations
            .values()
            .filter(|r| r.expires_at <= due)
            .collect();
        expiring.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
        let expired: Vec<Event> = expiring
            .into_iter()
            .map(|r| Event::HoldExpired {
                at: r.expires_at,
                reservation_id: r.id.clone(),
                amount: r.amount,
                returned: r.draws.clone(),
            })
            .collect();
        for event in expired {
            apply_decided(account, &event);
            time_events.push(event);
        }
        // Upcoming buckets whose time has come: spendable from here on,
        // before anything below draws on them (overage first).
        let mut taking_effect: Vec<&crate::Bucket> = account
            .buckets
            .iter()
            .filter(|b| b.upcoming && b.effective_at <= due && b.remaining.is_positive())
            .collect();
        taking_effect.sort_by_key(|b| (b.effective_at, b.granted_version));
        let took_effect: Vec<Event> = taking_effect
            .into_iter()
            .map(|b| Event::GrantTookEffect {
                at: b.effective_at,
                grant_id: b.grant_id.clone(),
                amount: b.remaining,
            })
            .collect();
        for event in took_effect {
            apply_decided(account, &event);
            time_events.push(event);
        }
        // What rolls over is measured before the old allowance expires.
        let cycle_due = next_cycle_at(account) == Some(due);
        let carried = if cycle_due {
            rollover(account, due)
        } else {
            Millicredits::ZERO
        };
        time_events.extend(settle(account, due));
        if cycle_due {
            start_cycle(account, due, carried, &mut time_events);
        }
        if next_day_at(account) == Some(due) {
            start_day(account, due, &mut time_events);
        }
        // New allowances pay overage first.
        time_events.extend(settle(account, due));
        // A boundary that changed nothing crossed nothing; skipping it also
        // keeps a boundary noticed twice from being judged twice.
        if alerts == Alerts::PerBoundary && !time_events.is_empty() {
            time_events.extend(raise(account, &before, due));
        }
        events.extend(time_events);
        cursor = due;
    }
    events
}

/// When the next billing cycle starts: at the current one's end, or when
/// the allowances begin.
fn next_cycle_at(account: &Account) -> Option<Timestamp> {
    account.opened_at?;
    match account.cycle {
        Some(cycle) => Some(cycle.end),
        None => account.allowances_from,
    }
}

/// When the next local day with a daily allowance starts. Days run inside
/// cycles: the first one starts with the cycle that brings the allowance,
/// so it may be a partial day.
fn next_day_at(account: &Account) -> Option<Timestamp> {
    let cycle = account.cycle?;
    if !account.terms.daily_allowance().is_positive() {
        return None;
    }
    match account.day {
        Some(day) if day.end > cycle.start => Some(day.end),
        _ => Some(cycle.start),
    }
}

/// What the ending cycle carries into the next one, under the ending
/// plan's rollover rule. Only the plan's own monthly buckets roll over.
fn rollover(account: &Account, at: Timestamp) -> Millicredits {
    let Some(rule) = account.terms.plan.as_ref().and_then(|p| p.plan.rollover) else {
        return Millicredits::ZERO;
    };
    let left: Millicredits = account
        .buckets
        .iter()
        .filter(|b| is_plan_grant(b, BucketKind::Monthly) && b.expires_at == Some(at))
        .map(|b| b.remaining)
        .sum();
    rule.carried(left)
}

fn is_plan_grant(bucket: &crate::Bucket, kind: BucketKind) -> bool {
    bucket.kind == kind
        && bucket.source == GrantSource::Plan
        && bucket.grant_id.as_str().starts_with("plan:")
}

fn start_cycle(account: &mut Account, at: Timestamp, carried: Millicredits, out: &mut Vec<Event>) {
    let terms = &account.terms;
    let end = next_anchor(&terms.time_zone, terms.anchor, at);
    let started = Event::CycleStarted { at, end };
    apply_decided(account, &started);
    out.push(started);
    let allowance = account.terms.monthly_allowance();
    for (label, amount) in [("monthly", allowance), ("rollover", carried)] {
        if amount.is_positive() {
            let grant = plan_grant(label, BucketKind::Monthly, amount, at, end);
            apply_decided(account, &grant);
            out.push(grant);
        }
    }
}

fn start_day(account: &mut Account, at: Timestamp, out: &mut Vec<Event>) {
    let end = next_midnight(&account.terms.time_zone, at);
    let started = Event::DayStarted { at, end };
    apply_decided(account, &started);
    out.push(started);
    let allowance = account.terms.daily_allowance();
    if allowance.is_positive() {
        let grant = plan_grant("daily", BucketKind::Daily, allowance, at, end);
        apply_decided(account, &grant);
        out.push(grant);
    }
}

/// A grant the plan makes at a boundary. Its id is derived from what and
/// when, so the same boundary always yields the same grant, whoever
/// notices it.
fn plan_grant(
    label: &str,
    kind: BucketKind,
    amount: Millicredits,
    at: Timestamp,
    expires_at: Timestamp,
) -> Event {
    let grant_id = GrantId::parse(format!("plan:{label}:{}", at.as_millis()))
        .expect("plan grant ids are well-formed");
    plan_grant_named(grant_id, label, kind, amount, at, expires_at)
}

/// A grant a plan change makes (`ChangePlan`): named by the stream version
/// it will be written at as well as the time, because two changes can be
/// decided in one millisecond (one batch) and must not mint the same id.
pub(super) fn change_grant(
    version: u64,
    label: &str,
    kind: BucketKind,
    amount: Millicredits,
    at: Timestamp,
    expires_at: Timestamp,
) -> Event {
    let grant_id = GrantId::parse(format!("plan:{label}:{}:v{version}", at.as_millis()))
        .expect("plan grant ids are well-formed");
    plan_grant_named(grant_id, label, kind, amount, at, expires_at)
}

fn plan_grant_named(
    grant_id: GrantId,
    label: &str,
    kind: BucketKind,
    amount: Millicredits,
    at: Timestamp,
    expires_at: Timestamp,
) -> Event {
    Event::CreditsGranted {
        at,
        grant_id,
        kind,
        source: GrantSource::Plan,
        priority: kind.default_priority(),
        amount,
        effective_at: at,
        expires_at: Some(expires_at),
        cost_basis: None,
        reference: format!("plan {label} allowance"),
        upcoming: false,
    }
}

/// When time will next change the account on its own: what a background
/// sweep must wake it for. `None` when nothing is scheduled.
pub fn next_due(account: &Account) -> Option<Timestamp> {
    let cursor = account
        .last_event_at
        .unwrap_or(Timestamp::from_millis(i64::MIN));
    next_boundary(account, cursor)
}

/// The next moment after `cursor` at which time changes the account.
fn next_boundary(account: &Account, cursor: Timestamp) -> Option<Timestamp> {
    let hold_expiries = account.reservations.values().map(|r| r.expires_at);
    let bucket_expiries = account
        .buckets
        .iter()
        .filter(|b| b.remaining.is_positive())
        .filter_map(|b| b.expires_at);
    let allowances = [next_cycle_at(account), next_day_at(account)]
        .into_iter()
        .flatten();
    let repayments = account
        .buckets
        .iter()
        .filter(|b| account.overage.is_positive() && b.remaining.is_positive())
        .map(|b| b.effective_at)
        .filter(|at| *at > cursor);
    // An upcoming bucket announces itself when it takes effect (buckets of
    // logs written before that, past their time, never will).
    let taking_effect = account
        .buckets
        .iter()
        .filter(|b| b.upcoming && b.remaining.is_positive())
        .map(|b| b.effective_at)
        .filter(|at| *at > cursor);
    hold_expiries
        .chain(bucket_expiries)
        .chain(allowances)
        .chain(repayments)
        .chain(taking_effect)
        .min()
}
