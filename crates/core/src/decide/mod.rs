//! Deciding: given an account and a command, which events happen. Pure:
//! time and prices come in through [`Context`], ids are minted by the
//! caller, and a refusal is a [`Rejection`] value that writes nothing.

mod account;
mod adjust;
mod boundaries;
mod debit;
mod grant;
mod hold;
mod price;
mod refund;
mod settle;

use crate::alert::{Levels, raise};
use crate::{
    Account, Command, Event, Millicredits, Outcome, PlanCatalogue, RateCards, Rejection, Timestamp,
};

use account::{
    decide_change_plan, decide_open, decide_set_alert_thresholds, decide_set_billing_anchor,
    decide_set_spending_cap,
};
use adjust::decide_adjust;
use boundaries::{Alerts, advance_boundaries};
pub use boundaries::{advance, next_due};
use debit::{decide_commit, decide_debit};
use grant::{decide_grant, decide_void_grant};
use hold::{decide_extend, decide_release, decide_reserve};
use refund::decide_refund;
pub use settle::settle;

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
        Command::SetSpendingCap { cap } => decide_set_spending_cap(*cap, now),
        Command::SetBillingAnchor { anchor } => decide_set_billing_anchor(*anchor, now),
        Command::SetAlertThresholds { thresholds } => decide_set_alert_thresholds(thresholds, ctx),
        Command::Grant(grant) => decide_grant(account, grant, ctx),
        Command::VoidGrant { grant_id, reason } => {
            decide_void_grant(account, grant_id, reason, now)
        }
        Command::Adjust {
            amount,
            grant_id,
            reason,
            operator,
        } => decide_adjust(account, *amount, grant_id, reason, operator, now),
        Command::Refund {
            charge_key,
            amount,
            reason,
            refund_grant_id,
        } => decide_refund(account, charge_key, *amount, reason, refund_grant_id, now),
        Command::Reserve {
            reservation_id,
            member,
            action,
            model,
            amount,
            dimensions,
            ttl_millis,
        } => decide_reserve(
            account,
            reservation_id,
            member,
            action,
            model,
            *amount,
            dimensions,
            *ttl_millis,
            ctx,
        ),
        Command::Commit {
            reservation_id,
            amount,
            dimensions,
        } => decide_commit(account, reservation_id, *amount, dimensions, ctx),
        Command::Release { reservation_id } => decide_release(account, reservation_id, now),
        Command::Extend {
            reservation_id,
            ttl_millis,
        } => decide_extend(account, reservation_id, *ttl_millis, now),
        Command::Debit {
            member,
            action,
            model,
            amount,
            dimensions,
            occurred_at,
        } => decide_debit(
            account,
            member,
            action,
            model,
            *amount,
            dimensions,
            *occurred_at,
            ctx,
        ),
    }
}
