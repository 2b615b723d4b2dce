//! Settlement: withdrawing what can no longer be spent, paying overage,
//! and drawing credits in deduction order for holds, debits, commits and
//! corrections.

use crate::bucket::plan_draws;
use crate::{Account, Event, Millicredits, Rejection, Timestamp};

use super::apply_decided;

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

/// Draws covering `amount` from spendable credits, or the refusal that
/// says how much is available.
pub(super) fn draws_covering(
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

/// Draws up to `wanted` from spendable credits; returns the draws and what
/// they could not cover.
pub(super) fn spendable_draws(
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
pub(super) fn split_draws(
    held: &[crate::Draw],
    amount: Millicredits,
) -> (Vec<crate::Draw>, Vec<crate::Draw>) {
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
