//! The decider for an operator's signed correction.

use crate::{Account, Event, GrantId, Millicredits, Outcome, Rejection, Timestamp};

use super::Decision;
use super::settle::spendable_draws;

/// A positive correction is a new promotional bucket; a negative one takes
/// spendable credits in deduction order and is refused beyond what is
/// available (a correction never puts an account into debt).
pub(super) fn decide_adjust(
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
