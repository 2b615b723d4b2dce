//! Deciding: given an account and a command, which events happen. Pure:
//! time and prices come in through [`Context`], ids are minted by the
//! caller, and a refusal is a [`Rejection`] value that writes nothing.

use crate::alert::{Levels, raise};
use crate::bucket::plan_draws;
use crate::calendar::{next_anchor, next_midnight, plus_days, plus_months};
use crate::{
    Account, AccountTerms, ActionKey, AlertThresholds, BucketKind, Command, Debit, Dimensions,
    Event, GrantCommand, GrantId, GrantSource, InvalidThresholds, Millicredits, ModelName,
    OpenAccount, Outcome, PlanCatalogue, PlanName, RateCards, Rejection, Reservation,
    ReservationId, Resolution, Timestamp,
};

/// What a decision may depend on besides the account.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub now: Timestamp,
    pub rate_cards: &'a RateCards,
    pub plans: &'a PlanCatalogue,
}

/// An accepted command: its events, in order, and the caller's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub events: Vec<Event>,
    pub outcome: Outcome,
}

/// Decides `command` against `account`, applies the events to it, then
/// settles what the change made due (credits returned to an expired or
/// voided bucket, overage that new credits can pay), and last raises the
/// alerts the whole command crossed. On a rejection the account is
/// untouched.
///
/// The account must already be advanced to `ctx.now` (see [`advance`]).
pub fn execute(
    account: &mut Account,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    if let Some(total) = account.total_past_ceiling() {
        return Err(Rejection::TotalsOverflow { total });
    }
    let mut decision = decide(account, command, ctx)?;
    let before = Levels::of(account, ctx.now);
    for event in &decision.events {
        apply_decided(account, event);
    }
    let settled = settle(account, ctx.now);
    if let Outcome::Granted { overage_repaid, .. } = &mut decision.outcome {
        *overage_repaid = settled
            .iter()
            .map(|e| match e {
                Event::OverageRepaid { amount, .. } => *amount,
                _ => Millicredits::ZERO,
            })
            .sum();
    }
    decision.events.extend(settled);
    // A command can make time-driven work due at once: opening an account
    // starts its first cycle, an upgrade can start a daily allowance. That
    // work is part of the command's window, so its alerts are raised once,
    // below, rather than per boundary.
    decision
        .events
        .extend(advance_boundaries(account, ctx.now, Alerts::LeftToCaller));
    decision.events.extend(raise(account, &before, ctx.now));
    Ok(decision)
}

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
enum Alerts {
    PerBoundary,
    /// The caller raises them once for its whole window.
    LeftToCaller,
}

fn advance_boundaries(account: &mut Account, now: Timestamp, alerts: Alerts) -> Vec<Event> {
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

/// A grant the plan makes. Its id is derived from what and when, so the
/// same boundary always yields the same grant, whoever notices it.
fn plan_grant(
    label: &str,
    kind: BucketKind,
    amount: Millicredits,
    at: Timestamp,
    expires_at: Timestamp,
) -> Event {
    Event::CreditsGranted {
        at,
        grant_id: GrantId::parse(format!("plan:{label}:{}", at.as_millis()))
            .expect("plan grant ids are well-formed"),
        kind,
        source: GrantSource::Plan,
        priority: kind.default_priority(),
        amount,
        effective_at: at,
        expires_at: Some(expires_at),
        cost_basis: None,
        reference: format!("plan {label} allowance"),
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
    hold_expiries
        .chain(bucket_expiries)
        .chain(allowances)
        .chain(repayments)
        .min()
}

/// Withdraws credits that sit in buckets that can no longer be spent
/// (expired or voided), then pays overage from what is spendable.
pub fn settle(account: &mut Account, at: Timestamp) -> Vec<Event> {
    let mut events = Vec::new();
    for bucket in &account.buckets {
        if !bucket.remaining.is_positive() {
            continue;
        }
        if bucket.voided {
            events.push(Event::GrantVoided {
                at,
                grant_id: bucket.grant_id.clone(),
                amount: bucket.remaining,
                reason: "held credits returned to a voided grant".into(),
            });
        } else if bucket.is_expired_at(at) {
            events.push(Event::BucketExpired {
                at,
                grant_id: bucket.grant_id.clone(),
                amount: bucket.remaining,
            });
        }
    }
    for event in &events {
        apply_decided(account, event);
    }
    if account.overage.is_positive() {
        let (draws, unpaid) = spendable_draws(account, account.overage, at);
        if !draws.is_empty() {
            let event = Event::OverageRepaid {
                at,
                amount: account.overage - unpaid,
                draws,
            };
            apply_decided(account, &event);
            events.push(event);
        }
    }
    events
}

fn apply_decided(account: &mut Account, event: &Event) {
    account
        .apply(event)
        .unwrap_or_else(|e| panic!("the core produced an event apply refuses: {e}"));
}

/// Decides without applying. Most callers want [`execute`].
pub fn decide(
    account: &Account,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
    if let Command::OpenAccount(open) = command {
        if account.is_open() {
            return Err(Rejection::AccountExists);
        }
        return decide_open(open, ctx);
    }
    if !account.is_open() {
        return Err(Rejection::UnknownAccount);
    }
    match command {
        Command::OpenAccount(_) => unreachable!("handled above"),
        Command::ChangePlan { plan } => decide_change_plan(account, plan, ctx),
        Command::SetSpendingCap { cap } => Ok(Decision {
            events: vec![Event::SpendingCapSet { at: now, cap: *cap }],
            outcome: Outcome::SpendingCapSet,
        }),
        Command::SetBillingAnchor { anchor } => Ok(Decision {
            events: vec![Event::BillingAnchorSet {
                at: now,
                anchor: *anchor,
            }],
            outcome: Outcome::BillingAnchorSet,
        }),
        Command::SetAlertThresholds { thresholds } => {
            if let Some(thresholds) = thresholds {
                valid_thresholds(thresholds, ctx)?;
            }
            Ok(Decision {
                events: vec![Event::AlertThresholdsSet {
                    at: now,
                    thresholds: thresholds.clone(),
                }],
                outcome: Outcome::AlertThresholdsSet,
            })
        }
        Command::Grant(grant) => decide_grant(account, grant, ctx),
        Command::VoidGrant { grant_id, reason } => {
            let bucket = account
                .bucket(grant_id)
                .ok_or_else(|| Rejection::GrantNotFound {
                    id: grant_id.clone(),
                })?;
            if bucket.voided {
                return Err(Rejection::GrantAlreadyVoided {
                    id: grant_id.clone(),
                });
            }
            Ok(Decision {
                events: vec![Event::GrantVoided {
                    at: now,
                    grant_id: grant_id.clone(),
                    amount: bucket.remaining,
                    reason: reason.clone(),
                }],
                outcome: Outcome::Voided {
                    amount: bucket.remaining,
                },
            })
        }
        Command::Adjust {
            amount,
            grant_id,
            reason,
            operator,
        } => decide_adjust(account, *amount, grant_id, reason, operator, now),
        Command::Reserve {
            reservation_id,
            member,
            action,
            model,
            amount,
            dimensions,
            ttl_millis,
        } => {
            let priced = price_new(ctx, action, model, *amount, dimensions, Use::Hold)?;
            within_cap(account, priced.amount)?;
            let reservation = Reservation {
                id: reservation_id.clone(),
                member: member.clone(),
                action: action.clone(),
                model: model.clone(),
                amount: priced.amount,
                draws: draws_covering(account, priced.amount, now)?,
                created_at: now,
                expires_at: now.plus_millis(*ttl_millis),
                rate_card_version: priced.rate_card_version,
                dimensions: priced.dimensions,
                capability: priced.capability,
            };
            Ok(Decision {
                events: vec![Event::CreditsHeld {
                    at: now,
                    reservation: reservation.clone(),
                }],
                outcome: Outcome::Reserved { reservation },
            })
        }
        Command::Commit {
            reservation_id,
            amount,
            dimensions,
        } => decide_commit(account, reservation_id, *amount, dimensions, ctx),
        Command::Release { reservation_id } => {
            let reservation = open_reservation(account, reservation_id, now)?;
            Ok(Decision {
                events: vec![Event::HoldReleased {
                    at: now,
                    reservation_id: reservation_id.clone(),
                    amount: reservation.amount,
                    returned: reservation.draws.clone(),
                }],
                outcome: Outcome::Released {
                    amount: reservation.amount,
                },
            })
        }
        Command::Extend {
            reservation_id,
            ttl_millis,
        } => {
            let mut reservation = open_reservation(account, reservation_id, now)?.clone();
            // Extending never shortens a hold: release it to end it early.
            reservation.expires_at = reservation.expires_at.max(now.plus_millis(*ttl_millis));
            Ok(Decision {
                events: vec![Event::HoldExtended {
                    at: now,
                    reservation_id: reservation_id.clone(),
                    expires_at: reservation.expires_at,
                }],
                outcome: Outcome::Extended { reservation },
            })
        }
        Command::Debit {
            member,
            action,
            model,
            amount,
            dimensions,
            occurred_at,
        } => {
            let priced = price_new(ctx, action, model, *amount, dimensions, Use::Charge)?;
            within_cap(account, priced.amount)?;
            let debit = Debit {
                reservation_id: None,
                member: member.clone(),
                action: action.clone(),
                model: model.clone(),
                charged: priced.amount,
                from_hold: Vec::new(),
                from_available: draws_covering(account, priced.amount, now)?,
                returned: Vec::new(),
                overage: Millicredits::ZERO,
                late: false,
                rate_card_version: priced.rate_card_version,
                dimensions: priced.dimensions,
                capability: priced.capability,
                occurred_at: *occurred_at,
            };
            Ok(charged(now, debit))
        }
    }
}

/// Checks an account's own thresholds against the current catalogue,
/// naming the request's fields.
fn valid_thresholds(thresholds: &AlertThresholds, ctx: &Context<'_>) -> Result<(), Rejection> {
    thresholds
        .validate(&ctx.plans.packs)
        .map_err(|invalid| match invalid {
            InvalidThresholds::UnknownPack(pack) => Rejection::UnknownPack { pack },
            InvalidThresholds::Field { field, reason } => Rejection::InvalidField {
                field: match field {
                    "low_balance_millicredits" => "thresholds.low_balance_millicredits",
                    "usage_percent" => "thresholds.usage_percent",
                    "critical_level_millicredits" => "thresholds.critical_level_millicredits",
                    "auto_top_up.below_millicredits" => "thresholds.auto_top_up.below_millicredits",
                    _ => "thresholds",
                },
                reason,
            },
        })
}

/// An amount and where it came from.
struct Priced {
    amount: Millicredits,
    /// 0 when the caller gave the amount.
    rate_card_version: u64,
    dimensions: Option<Dimensions>,
    /// The card action's capability, when the card priced it.
    capability: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// A hold without an estimate holds the action's default hold.
    Hold,
    Charge,
}

/// Prices a new hold or debit: the caller's amount, else the current rate
/// card's price for the dimensions given, else its default for the action.
fn price_new(
    ctx: &Context<'_>,
    action: &ActionKey,
    model: &Option<ModelName>,
    amount: Option<Millicredits>,
    dimensions: &Option<Dimensions>,
    use_: Use,
) -> Result<Priced, Rejection> {
    if let Some(amount) = amount {
        return Ok(Priced {
            amount,
            rate_card_version: 0,
            dimensions: dimensions.clone(),
            capability: None,
        });
    }
    let card = ctx.rate_cards.current();
    let amount = match (dimensions, use_) {
        (Some(dimensions), _) => card.price_of(action, model.as_ref(), dimensions)?,
        (None, Use::Hold) => card.hold_of(action, model.as_ref())?,
        (None, Use::Charge) => card.price_of(action, model.as_ref(), &Dimensions::default())?,
    };
    Ok(Priced {
        amount,
        rate_card_version: card.version,
        dimensions: dimensions.clone(),
        capability: card.capability_of(action).map(str::to_owned),
    })
}

/// Refuses new spending that would take usage in the cycle, plus what is
/// held, past the cap. Free actions always pass: they spend nothing.
fn within_cap(account: &Account, amount: Millicredits) -> Result<(), Rejection> {
    let Some(cap) = account.terms.spending_cap else {
        return Ok(());
    };
    let held = account.held();
    if amount.is_positive() && account.used_in_cycle + held + amount > cap {
        return Err(Rejection::SpendingCapReached {
            cap,
            used: account.used_in_cycle,
            held,
            needed: amount,
        });
    }
    Ok(())
}

/// Draws covering `amount` from spendable credits, or the refusal that
/// says how much is available.
fn draws_covering(
    account: &Account,
    amount: Millicredits,
    at: Timestamp,
) -> Result<Vec<crate::Draw>, Rejection> {
    let (draws, missing) = spendable_draws(account, amount, at);
    if missing.is_positive() {
        return Err(Rejection::InsufficientCredits {
            available: amount - missing,
            needed: amount,
        });
    }
    Ok(draws)
}

fn decide_open(open: &OpenAccount, ctx: &Context<'_>) -> Result<Decision, Rejection> {
    let now = ctx.now;
    let plan = open
        .plan
        .as_ref()
        .map(|name| plan_terms(ctx, name))
        .transpose()?;
    let time_zone = open.time_zone.clone().unwrap_or_default();
    let trial = match (&plan, open.trial) {
        (_, false) => None,
        (Some(terms), true) => Some(terms.plan.trial.ok_or_else(|| Rejection::InvalidField {
            field: "trial",
            reason: format!("plan {} has no trial", terms.name),
        })?),
        (None, true) => {
            return Err(Rejection::InvalidField {
                field: "trial",
                reason: "a trial needs a plan".into(),
            });
        }
    };
    let allowances_from = trial.map_or(now, |t| plus_days(&time_zone, now, t.days));
    let anchor = open
        .anchor
        .unwrap_or_else(|| crate::BillingAnchor::at(&time_zone, allowances_from));
    let mut terms = AccountTerms {
        plan: None,
        time_zone,
        anchor,
        spending_cap: open.spending_cap,
        cap_set_by_account: open.spending_cap.is_some(),
        alerts: None,
    };
    if let Some(plan) = plan {
        terms.adopt(plan);
    }
    let mut events = vec![Event::AccountOpened {
        at: now,
        terms,
        allowances_from: Some(allowances_from),
    }];
    if let Some(trial) = trial.filter(|t| t.allowance_millicredits.is_positive()) {
        events.push(Event::CreditsGranted {
            at: now,
            grant_id: GrantId::parse(format!("plan:trial:{}", now.as_millis()))
                .expect("plan grant ids are well-formed"),
            kind: BucketKind::Trial,
            source: GrantSource::Plan,
            priority: BucketKind::Trial.default_priority(),
            amount: trial.allowance_millicredits,
            effective_at: now,
            expires_at: Some(allowances_from),
            cost_basis: None,
            reference: "plan trial allowance".into(),
        });
    }
    Ok(Decision {
        events,
        outcome: Outcome::Opened,
    })
}

fn plan_terms(ctx: &Context<'_>, name: &PlanName) -> Result<crate::PlanTerms, Rejection> {
    ctx.plans
        .terms(name)
        .ok_or_else(|| Rejection::UnknownPlan { plan: name.clone() })
}

/// Upgrades (no allowance smaller) take effect now, and the difference in
/// each allowance is granted for the rest of the current cycle or day.
/// Anything else is a downgrade and waits for the next billing anchor, so
/// credits already given are never taken back mid-cycle.
fn decide_change_plan(
    account: &Account,
    name: &PlanName,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
    let new = plan_terms(ctx, name)?;
    if account.terms.plan.as_ref() == Some(&new) {
        return Err(Rejection::InvalidField {
            field: "plan",
            reason: format!("the account is on plan {name} already"),
        });
    }
    let (old_monthly, old_daily) = (
        account.terms.monthly_allowance(),
        account.terms.daily_allowance(),
    );
    let (new_monthly, new_daily) = (
        new.plan.monthly_allowance_millicredits,
        new.plan.daily_allowance_millicredits,
    );
    let upgrade = new_monthly >= old_monthly && new_daily >= old_daily;
    let Some(cycle) = account.cycle.filter(|_| !upgrade) else {
        // An upgrade, or a change before the first cycle (during a trial):
        // the new terms apply now.
        let mut events = vec![Event::PlanChanged {
            at: now,
            terms: new,
            effective_at: now,
        }];
        if let Some(cycle) = account.cycle {
            let extra = new_monthly - old_monthly;
            if extra.is_positive() {
                events.push(plan_grant(
                    "upgrade-monthly",
                    BucketKind::Monthly,
                    extra,
                    now,
                    cycle.end,
                ));
            }
            match account.day.filter(|day| day.end > now) {
                Some(day) if (new_daily - old_daily).is_positive() => events.push(plan_grant(
                    "upgrade-daily",
                    BucketKind::Daily,
                    new_daily - old_daily,
                    now,
                    day.end,
                )),
                Some(_) => {}
                None if new_daily.is_positive() => {
                    let end = next_midnight(&account.terms.time_zone, now);
                    events.push(Event::DayStarted { at: now, end });
                    events.push(plan_grant("daily", BucketKind::Daily, new_daily, now, end));
                }
                None => {}
            }
        }
        return Ok(Decision {
            events,
            outcome: Outcome::PlanChanged { effective_at: now },
        });
    };
    Ok(Decision {
        events: vec![Event::PlanChanged {
            at: now,
            terms: new,
            effective_at: cycle.end,
        }],
        outcome: Outcome::PlanChanged {
            effective_at: cycle.end,
        },
    })
}

fn decide_grant(
    account: &Account,
    grant: &GrantCommand,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
    let mut grant = grant.clone();
    if let Some(name) = &grant.pack {
        let pack = ctx
            .plans
            .packs
            .get(name)
            .ok_or_else(|| Rejection::UnknownPack { pack: name.clone() })?;
        grant.kind = BucketKind::TopUp;
        grant.amount = pack.credits_millicredits;
        grant.expires_at = pack
            .expires_after_months
            .map(|months| plus_months(&account.terms.time_zone, now, months));
        grant.cost_basis = grant.cost_basis.or_else(|| pack.cost_basis.clone());
        if grant.reference.is_empty() {
            grant.reference = format!("pack {name}");
        }
    }
    let effective_at = grant.effective_at.unwrap_or(now);
    if let Some(expires_at) = grant.expires_at {
        if expires_at <= now {
            return Err(Rejection::InvalidField {
                field: "expires_at",
                reason: "must be in the future".into(),
            });
        }
        if expires_at <= effective_at {
            return Err(Rejection::InvalidField {
                field: "expires_at",
                reason: "must be after effective_at".into(),
            });
        }
    }
    if account.bucket(&grant.grant_id).is_some() {
        return Err(Rejection::InvalidField {
            field: "grant_id",
            reason: "exists already".into(),
        });
    }
    Ok(Decision {
        events: vec![Event::CreditsGranted {
            at: now,
            grant_id: grant.grant_id.clone(),
            kind: grant.kind,
            source: grant.source.unwrap_or(grant.kind.default_source()),
            priority: grant.priority.unwrap_or(grant.kind.default_priority()),
            amount: grant.amount,
            effective_at,
            expires_at: grant.expires_at,
            cost_basis: grant.cost_basis.clone(),
            reference: grant.reference.clone(),
        }],
        outcome: Outcome::Granted {
            grant_id: grant.grant_id.clone(),
            overage_repaid: Millicredits::ZERO,
        },
    })
}

/// Settles a reservation. Never refused for lack of credits or cap: the
/// work has happened. Held credits pay first, then spendable ones, and the
/// rest becomes overage. A hold that expired before the commit came is
/// still charged, as a late debit from what is spendable now.
fn decide_commit(
    account: &Account,
    reservation_id: &ReservationId,
    amount: Option<Millicredits>,
    dimensions: &Option<Dimensions>,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
    let (reservation, late) = match account.reservations.get(reservation_id) {
        Some(open) => (open, false),
        None => match account.resolved_hold(reservation_id, now) {
            Some(resolved) if resolved.resolution == Resolution::Expired => {
                (&resolved.reservation, true)
            }
            Some(resolved) => {
                return Err(Rejection::AlreadyResolved {
                    id: reservation_id.clone(),
                    resolution: resolved.resolution,
                });
            }
            None => {
                return Err(Rejection::ReservationNotFound {
                    id: reservation_id.clone(),
                });
            }
        },
    };
    let Priced {
        amount: actual,
        rate_card_version,
        dimensions,
        capability,
    } = price_commit(ctx, reservation, amount, dimensions)?;
    let held = if late {
        Vec::new()
    } else {
        reservation.draws.clone()
    };
    let (from_hold, returned) = split_draws(&held, actual);
    let from_hold_total: Millicredits = from_hold.iter().map(|d| d.amount).sum();
    let (from_available, overage) = spendable_draws(account, actual - from_hold_total, now);
    let debit = Debit {
        reservation_id: Some(reservation_id.clone()),
        member: reservation.member.clone(),
        action: reservation.action.clone(),
        model: reservation.model.clone(),
        charged: actual,
        from_hold,
        from_available,
        returned,
        overage,
        late,
        rate_card_version,
        dimensions,
        capability,
        occurred_at: None,
    };
    Ok(charged(now, debit))
}

/// Prices a commit: the caller's amount, else the actual dimensions on the
/// card the hold was priced from, else what was held.
fn price_commit(
    ctx: &Context<'_>,
    reservation: &Reservation,
    amount: Option<Millicredits>,
    dimensions: &Option<Dimensions>,
) -> Result<Priced, Rejection> {
    if let Some(amount) = amount {
        return Ok(Priced {
            amount,
            rate_card_version: 0,
            dimensions: dimensions.clone(),
            capability: None,
        });
    }
    let card = ctx.rate_cards.for_version(reservation.rate_card_version);
    let (action, model) = (&reservation.action, reservation.model.as_ref());
    let capability = card.capability_of(action).map(str::to_owned);
    match dimensions {
        Some(actual) => Ok(Priced {
            amount: card.price_of(action, model, actual)?,
            rate_card_version: card.version,
            dimensions: Some(actual.clone()),
            capability,
        }),
        // A hold the caller sized itself settles at the card's price.
        None if reservation.rate_card_version == 0 => Ok(Priced {
            amount: card.price_of(action, model, &Dimensions::default())?,
            rate_card_version: card.version,
            dimensions: None,
            capability,
        }),
        None => Ok(Priced {
            amount: reservation.amount,
            rate_card_version: reservation.rate_card_version,
            dimensions: reservation.dimensions.clone(),
            capability: reservation.capability.clone(),
        }),
    }
}

fn charged(now: Timestamp, debit: Debit) -> Decision {
    Decision {
        events: vec![Event::CreditsDebited {
            at: now,
            debit: debit.clone(),
        }],
        outcome: Outcome::Charged { debit },
    }
}

fn open_reservation<'a>(
    account: &'a Account,
    id: &ReservationId,
    now: Timestamp,
) -> Result<&'a Reservation, Rejection> {
    if let Some(open) = account.reservations.get(id) {
        return Ok(open);
    }
    Err(match account.resolved_hold(id, now) {
        Some(resolved) if resolved.resolution == Resolution::Expired => {
            Rejection::ReservationExpired { id: id.clone() }
        }
        Some(resolved) => Rejection::AlreadyResolved {
            id: id.clone(),
            resolution: resolved.resolution,
        },
        None => Rejection::ReservationNotFound { id: id.clone() },
    })
}

/// A positive correction is a new promotional bucket; a negative one takes
/// spendable credits in deduction order and is refused beyond what is
/// available (a correction never puts an account into debt).
fn decide_adjust(
    account: &Account,
    amount: Millicredits,
    grant_id: &GrantId,
    reason: &str,
    operator: &str,
    now: Timestamp,
) -> Result<Decision, Rejection> {
    if amount.is_zero() {
        return Err(Rejection::InvalidField {
            field: "amount_millicredits",
            reason: "must not be zero".into(),
        });
    }
    let (grant_id, draws) = if amount.is_positive() {
        if account.bucket(grant_id).is_some() {
            return Err(Rejection::InvalidField {
                field: "grant_id",
                reason: format!("grant {grant_id} exists already"),
            });
        }
        (Some(grant_id.clone()), Vec::new())
    } else {
        let wanted = -amount;
        let (draws, short) = spendable_draws(account, wanted, now);
        if short.is_positive() {
            return Err(Rejection::InsufficientCredits {
                available: account.available_at(now),
                needed: wanted,
            });
        }
        (None, draws)
    };
    Ok(Decision {
        events: vec![Event::CreditsAdjusted {
            at: now,
            amount,
            grant_id: grant_id.clone(),
            draws: draws.clone(),
            reason: reason.to_owned(),
            operator: operator.to_owned(),
        }],
        outcome: Outcome::Adjusted {
            amount,
            grant_id,
            draws,
        },
    })
}

/// Draws up to `wanted` from spendable credits; returns the draws and what
/// they could not cover.
fn spendable_draws(
    account: &Account,
    wanted: Millicredits,
    at: Timestamp,
) -> (Vec<crate::Draw>, Millicredits) {
    plan_draws(
        account.buckets.iter().filter(|b| b.is_spendable_at(at)),
        wanted,
        |b| b.remaining,
    )
}

/// Splits held draws into the part that pays `amount` (in deduction order)
/// and the part that goes back.
fn split_draws(held: &[crate::Draw], amount: Millicredits) -> (Vec<crate::Draw>, Vec<crate::Draw>) {
    let mut left = amount;
    let mut used = Vec::new();
    let mut returned = Vec::new();
    for draw in held {
        let take = draw.amount.min(left.max(Millicredits::ZERO));
        left -= take;
        if take.is_positive() {
            used.push(crate::Draw {
                amount: take,
                ..draw.clone()
            });
        }
        if take < draw.amount {
            returned.push(crate::Draw {
                amount: draw.amount - take,
                ..draw.clone()
            });
        }
    }
    (used, returned)
}
