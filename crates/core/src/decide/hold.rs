//! Deciders for holds: reserving credits, releasing a hold and extending
//! it. Committing one is a charge (see `debit.rs`).

use crate::{
    Account, ActionKey, Dimensions, Event, MemberId, Millicredits, ModelName, Outcome, Rejection,
    Reservation, ReservationId, Resolution, Timestamp,
};

use super::price::{Use, price_new, within_cap};
use super::settle::draws_covering;
use super::{Context, Decision};

/// The command's fields one by one, as the dispatch destructured them, so
/// a new field does not compile until it is handled.
#[expect(clippy::too_many_arguments)]
pub(super) fn decide_reserve(
    account: &Account,
    reservation_id: &ReservationId,
    member: &MemberId,
    action: &ActionKey,
    model: &Option<ModelName>,
    amount: Option<Millicredits>,
    dimensions: &Option<Dimensions>,
    ttl_millis: i64,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
    let priced = price_new(ctx, action, model, amount, dimensions, Use::Hold)?;
    within_cap(account, priced.amount)?;
    let reservation = Reservation {
        id: reservation_id.clone(),
        member: member.clone(),
        action: action.clone(),
        model: model.clone(),
        amount: priced.amount,
        draws: draws_covering(account, priced.amount, now)?,
        created_at: now,
        expires_at: now.plus_millis(ttl_millis),
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

pub(super) fn decide_release(
    account: &Account,
    reservation_id: &ReservationId,
    now: Timestamp,
) -> Result<Decision, Rejection> {
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

pub(super) fn decide_extend(
    account: &Account,
    reservation_id: &ReservationId,
    ttl_millis: i64,
    now: Timestamp,
) -> Result<Decision, Rejection> {
    let mut reservation = open_reservation(account, reservation_id, now)?.clone();
    // Extending never shortens a hold: release it to end it early.
    reservation.expires_at = reservation.expires_at.max(now.plus_millis(ttl_millis));
    Ok(Decision {
        events: vec![Event::HoldExtended {
            at: now,
            reservation_id: reservation_id.clone(),
            expires_at: reservation.expires_at,
        }],
        outcome: Outcome::Extended { reservation },
    })
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
