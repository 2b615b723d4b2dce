//! Deciders for the account's own terms: opening it, changing its plan,
//! its spending cap, billing anchor and alert thresholds.

use crate::calendar::{next_midnight, plus_days};
use crate::{
    Account, AccountTerms, AlertThresholds, BillingAnchor, BucketKind, Event, GrantId, GrantSource,
    InvalidThresholds, Millicredits, OpenAccount, Outcome, PlanName, Rejection, Timestamp,
};

use super::boundaries::change_grant;
use super::{Context, Decision};

pub(super) fn decide_open(open: &OpenAccount, ctx: &Context<'_>) -> Result<Decision, Rejection> {
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
        test_clock: open.test_clock.clone().map(Box::new),
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
            upcoming: false,
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
pub(super) fn decide_change_plan(
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
            // The stream version the next event will have.
            let next = |events: &[Event]| account.version + events.len() as u64 + 1;
            let extra = new_monthly - old_monthly;
            if extra.is_positive() {
                events.push(change_grant(
                    next(&events),
                    "upgrade-monthly",
                    BucketKind::Monthly,
                    extra,
                    now,
                    cycle.end,
                ));
            }
            match account.day.filter(|day| day.end > now) {
                Some(day) if (new_daily - old_daily).is_positive() => events.push(change_grant(
                    next(&events),
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
                    events.push(change_grant(
                        next(&events),
                        "daily",
                        BucketKind::Daily,
                        new_daily,
                        now,
                        end,
                    ));
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

pub(super) fn decide_set_spending_cap(
    cap: Option<Millicredits>,
    now: Timestamp,
) -> Result<Decision, Rejection> {
    Ok(Decision {
        events: vec![Event::SpendingCapSet { at: now, cap }],
        outcome: Outcome::SpendingCapSet,
    })
}

pub(super) fn decide_set_billing_anchor(
    anchor: BillingAnchor,
    now: Timestamp,
) -> Result<Decision, Rejection> {
    Ok(Decision {
        events: vec![Event::BillingAnchorSet { at: now, anchor }],
        outcome: Outcome::BillingAnchorSet,
    })
}

pub(super) fn decide_set_alert_thresholds(
    thresholds: &Option<AlertThresholds>,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
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
