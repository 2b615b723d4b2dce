//! Deciders for charges: a direct debit, and a commit settling a hold.
//! Both end in one `CreditsDebited`.

use crate::{
    Account, ActionKey, Debit, Dimensions, Event, MemberId, Millicredits, ModelName, Outcome,
    Rejection, ReservationId, Resolution, Timestamp,
};

use super::price::{Priced, Use, price_commit, price_new, within_cap};
use super::settle::{draws_covering, spendable_draws, split_draws};
use super::{Context, Decision};

/// How long ago a reported action may have happened (a day of usage
/// already closed is not rewritten past this).
pub const MAX_OCCURRED_AGO_MS: i64 = 7 * 24 * 3_600_000;
/// How far ahead of the account's clock a reported action may be (the
/// reporter's clock may run ahead).
pub const MAX_OCCURRED_AHEAD_MS: i64 = 5 * 60_000;

/// The command's fields one by one, as the dispatch destructured them, so
/// a new field does not compile until it is handled.
#[expect(clippy::too_many_arguments)]
pub(super) fn decide_debit(
    account: &Account,
    member: &MemberId,
    action: &ActionKey,
    model: &Option<ModelName>,
    amount: Option<Millicredits>,
    dimensions: &Option<Dimensions>,
    occurred_at: Option<Timestamp>,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
    // Judged against the account's own time: the wall clock's, or its test
    // clock's.
    if let Some(at) = occurred_at {
        let offset = at.as_millis() - now.as_millis();
        if offset < -MAX_OCCURRED_AGO_MS {
            return Err(Rejection::InvalidField {
                field: "occurred_at",
                reason: "is more than 7 days ago".into(),
            });
        }
        if offset > MAX_OCCURRED_AHEAD_MS {
            return Err(Rejection::InvalidField {
                field: "occurred_at",
                reason: "is more than 5 minutes ahead of the account's clock".into(),
            });
        }
    }
    let priced = price_new(ctx, action, model, amount, dimensions, Use::Charge)?;
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
        occurred_at,
    };
    Ok(charged(now, debit))
}

/// Settles a reservation. Never refused for lack of credits or cap: the
/// work has happened. Held credits pay first, then spendable ones, and the
/// rest becomes overage. A hold that expired before the commit came is
/// still charged, as a late debit from what is spendable now.
pub(super) fn decide_commit(
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

fn charged(now: Timestamp, debit: Debit) -> Decision {
    Decision {
        events: vec![Event::CreditsDebited {
            at: now,
            debit: debit.clone(),
        }],
        outcome: Outcome::Charged { debit },
    }
}
