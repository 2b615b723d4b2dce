//! Deciding: given an account and a command, which events happen. Pure:
//! time and prices come in through [`Context`], ids are minted by the
//! caller, and a refusal is a [`Rejection`] value that writes nothing.

use crate::bucket::plan_draws;
use crate::{
    Account, ActionKey, Command, Debit, Event, GrantCommand, Millicredits, ModelName, Outcome,
    RateCard, Rejection, Reservation, ReservationId, Resolution, Timestamp,
};

/// What a decision may depend on besides the account.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub now: Timestamp,
    pub rate_card: &'a RateCard,
}

/// An accepted command: its events, in order, and the caller's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub events: Vec<Event>,
    pub outcome: Outcome,
}

/// Decides `command` against `account`, applies the events to it, then
/// settles what the change made due (credits returned to an expired or
/// voided bucket, overage that new credits can pay). On a rejection the
/// account is untouched.
///
/// The account must already be advanced to `ctx.now` (see [`advance`]).
pub fn execute(
    account: &mut Account,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let mut decision = decide(account, command, ctx)?;
    for event in &decision.events {
        account
            .apply(event)
            .unwrap_or_else(|e| panic!("decide produced an event apply refuses: {e}"));
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
    Ok(decision)
}

/// Applies everything that time alone makes due up to `now`, each at its
/// own boundary and in time order: holds expire at their expiry, what is
/// left in a bucket expires at the bucket's expiry, and overage is paid when
/// a granted bucket becomes effective. Returns the events it applied.
///
/// Whether this runs on the next command or from a background sweep, the
/// events are the same, because they depend only on the state and the
/// boundaries, never on when they were noticed.
pub fn advance(account: &mut Account, now: Timestamp) -> Vec<Event> {
    let mut events = Vec::new();
    let mut cursor = account
        .last_event_at
        .unwrap_or(Timestamp::from_millis(i64::MIN));
    while let Some(due) = next_boundary(account, cursor).filter(|due| *due <= now) {
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
            events.push(event);
        }
        events.extend(settle(account, due));
        cursor = due;
    }
    events
}

/// The next moment after `cursor` at which time changes the account.
fn next_boundary(account: &Account, cursor: Timestamp) -> Option<Timestamp> {
    let hold_expiries = account.reservations.values().map(|r| r.expires_at);
    let bucket_expiries = account
        .buckets
        .iter()
        .filter(|b| b.remaining.is_positive())
        .filter_map(|b| b.expires_at);
    let repayments = account
        .buckets
        .iter()
        .filter(|b| account.overage.is_positive() && b.remaining.is_positive())
        .map(|b| b.effective_at)
        .filter(|at| *at > cursor);
    hold_expiries.chain(bucket_expiries).chain(repayments).min()
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
    if let Command::OpenAccount = command {
        if account.is_open() {
            return Err(Rejection::AccountExists);
        }
        return Ok(Decision {
            events: vec![Event::AccountOpened { at: now }],
            outcome: Outcome::Opened,
        });
    }
    if !account.is_open() {
        return Err(Rejection::UnknownAccount);
    }
    match command {
        Command::OpenAccount => unreachable!("handled above"),
        Command::Grant(grant) => decide_grant(account, grant, now),
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
        Command::Reserve {
            reservation_id,
            member,
            action,
            model,
            amount,
            ttl_millis,
        } => {
            let (amount, rate_card_version) = priced(ctx, action, model.as_ref(), *amount)?;
            let reservation = Reservation {
                id: reservation_id.clone(),
                member: member.clone(),
                action: action.clone(),
                model: model.clone(),
                amount,
                draws: draws_covering(account, amount, now)?,
                created_at: now,
                expires_at: now.plus_millis(*ttl_millis),
                rate_card_version,
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
        } => decide_commit(account, reservation_id, *amount, ctx),
        Command::Release { reservation_id } => {
            let reservation = open_reservation(account, reservation_id)?;
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
            let mut reservation = open_reservation(account, reservation_id)?.clone();
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
        } => {
            let (amount, rate_card_version) = priced(ctx, action, model.as_ref(), *amount)?;
            let debit = Debit {
                reservation_id: None,
                member: member.clone(),
                action: action.clone(),
                model: model.clone(),
                charged: amount,
                from_hold: Vec::new(),
                from_available: draws_covering(account, amount, now)?,
                returned: Vec::new(),
                overage: Millicredits::ZERO,
                late: false,
                rate_card_version,
            };
            Ok(charged(now, debit))
        }
    }
}

/// The amount the caller gave, or else the rate card's price, with the
/// rate card version it came from (0 for a caller's amount).
fn priced(
    ctx: &Context<'_>,
    action: &ActionKey,
    model: Option<&ModelName>,
    amount: Option<Millicredits>,
) -> Result<(Millicredits, u64), Rejection> {
    match amount {
        Some(amount) => Ok((amount, 0)),
        None => Ok((ctx.rate_card.price(action, model)?, ctx.rate_card.version)),
    }
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

fn decide_grant(
    account: &Account,
    grant: &GrantCommand,
    now: Timestamp,
) -> Result<Decision, Rejection> {
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
    ctx: &Context<'_>,
) -> Result<Decision, Rejection> {
    let now = ctx.now;
    let (reservation, late) = match account.reservations.get(reservation_id) {
        Some(open) => (open, false),
        None => match account.resolved.get(reservation_id) {
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
    let (actual, rate_card_version) =
        priced(ctx, &reservation.action, reservation.model.as_ref(), amount)?;
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

fn open_reservation<'a>(
    account: &'a Account,
    id: &ReservationId,
) -> Result<&'a Reservation, Rejection> {
    if let Some(open) = account.reservations.get(id) {
        return Ok(open);
    }
    Err(match account.resolved.get(id) {
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
