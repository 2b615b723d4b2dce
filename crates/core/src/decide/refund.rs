//! `Refund`: credits of an earlier charge go back where they came from.

use super::Decision;
use crate::{
    Account, BucketKind, Draw, Event, GrantId, IdempotencyKey, Millicredits, Outcome, Refund,
    RefundSource, Rejection, Timestamp,
};

/// Returns `amount` (all that is left when `None`) of the charge made with
/// `charge_key`, which the caller has loaded into `account.charges`.
///
/// The refund walks the charge in refund order (see
/// [`crate::Charge::next_slice`]): its overage comes off the account's debt
/// while there is debt left; credits go back to the bucket that paid while
/// that bucket is live (not voided, not expired, still in the account);
/// everything else goes into one new promotional bucket that never expires
/// (`refund_grant_id`), because the credits it stands for were spent and
/// the bucket they came from can no longer take them.
pub(super) fn decide_refund(
    account: &Account,
    charge_key: &IdempotencyKey,
    amount: Option<Millicredits>,
    reason: &str,
    refund_grant_id: &GrantId,
    now: Timestamp,
) -> Result<Decision, Rejection> {
    let charge = account
        .charges
        .get(charge_key)
        .ok_or_else(|| Rejection::ChargeNotFound {
            key: charge_key.clone(),
        })?;
    let refundable = charge.refundable();
    let asked = amount.unwrap_or(refundable);
    if !asked.is_positive() || asked > refundable {
        return Err(Rejection::RefundExceedsCharge {
            key: charge_key.clone(),
            asked: amount.unwrap_or(charge.debit.charged),
            refundable,
        });
    }

    let mut returned: Vec<Draw> = Vec::new();
    let mut overage_cancelled = Millicredits::ZERO;
    let mut to_refund_bucket = Millicredits::ZERO;
    for (source, piece) in charge.next_slice(asked) {
        match source {
            RefundSource::Overage => {
                let cancel = piece.min(account.overage - overage_cancelled);
                overage_cancelled += cancel;
                to_refund_bucket += piece - cancel;
            }
            RefundSource::Bucket(grant_id, kind) => {
                let live = account
                    .bucket(&grant_id)
                    .is_some_and(|b| !b.voided && !b.is_expired_at(now));
                if !live {
                    to_refund_bucket += piece;
                } else if let Some(draw) = returned.iter_mut().find(|d| d.grant_id == grant_id) {
                    draw.amount += piece;
                } else {
                    returned.push(Draw {
                        grant_id,
                        kind,
                        amount: piece,
                    });
                }
            }
        }
    }
    let refund_grant = to_refund_bucket.is_positive().then(|| Draw {
        grant_id: refund_grant_id.clone(),
        kind: BucketKind::Promotional,
        amount: to_refund_bucket,
    });
    if refund_grant.is_some() && account.bucket(refund_grant_id).is_some() {
        return Err(Rejection::InvalidField {
            field: "grant_id",
            reason: format!("grant {refund_grant_id} exists already"),
        });
    }
    // Only a charge of the current cycle made room under the cap that the
    // refund can give back.
    let this_cycle = match (charge.charged_at, account.cycle) {
        (Some(charged_at), Some(cycle)) => charged_at >= cycle.start,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let cycle_returned = if this_cycle {
        asked.min(account.used_in_cycle)
    } else {
        Millicredits::ZERO
    };
    let debit = &charge.debit;
    let refund = Refund {
        charge_key: charge_key.clone(),
        amount: asked,
        returned,
        overage_cancelled,
        refund_grant,
        cycle_returned,
        charged: debit.charged,
        refunded: charge.refunded + asked,
        member: debit.member.clone(),
        action: debit.action.clone(),
        model: debit.model.clone(),
        capability: debit.capability.clone(),
        reason: reason.to_owned(),
    };
    Ok(Decision {
        events: vec![Event::CreditsRefunded {
            at: now,
            refund: refund.clone(),
        }],
        outcome: Outcome::Refunded { refund },
    })
}
