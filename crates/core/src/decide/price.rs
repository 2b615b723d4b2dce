//! Pricing new spending from the rate card, pricing a commit from the card
//! its hold was priced on, and the spending cap new spending must fit.

use crate::{Account, ActionKey, Dimensions, Millicredits, ModelName, Rejection, Reservation};

use super::Context;

/// An amount and where it came from.
pub(super) struct Priced {
    pub(super) amount: Millicredits,
    /// 0 when the caller gave the amount.
    pub(super) rate_card_version: u64,
    pub(super) dimensions: Option<Dimensions>,
    /// The card action's capability, when the card priced it.
    pub(super) capability: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// A hold without an estimate holds the action's default hold.
    Hold,
    Charge,
}

/// Prices a new hold or debit: the caller's amount, else the current rate
/// card's price for the dimensions given, else its default for the action.
pub(super) fn price_new(
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
pub(super) fn within_cap(account: &Account, amount: Millicredits) -> Result<(), Rejection> {
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

/// Prices a commit: the caller's amount, else the actual dimensions on the
/// card the hold was priced from, else what was held.
pub(super) fn price_commit(
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
