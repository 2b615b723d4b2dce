//! Pricing without side effects: one action or a whole campaign.

use tally_core::{AccountId, ActionKey, Dimensions, Millicredits, ModelName, Rejection};
use tally_store::EventStore;

use crate::{Engine, EngineError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteItem {
    pub action: ActionKey,
    pub model: Option<ModelName>,
    pub count: i64,
    /// What one run of a metered action is expected to use.
    pub dimensions: Option<Dimensions>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteLine {
    pub item: QuoteItem,
    pub unit_price: Millicredits,
    pub total: Millicredits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    pub lines: Vec<QuoteLine>,
    pub total: Millicredits,
    pub available: Millicredits,
    pub rate_card_version: u64,
    pub spending_cap: Option<Millicredits>,
    pub used_this_cycle: Millicredits,
    pub held: Millicredits,
}

impl Quote {
    /// The account can pay for it all now.
    pub fn affordable(&self) -> bool {
        self.total <= self.available
    }

    /// Starting it all now stays within the spending cap, counting what is
    /// held, as Reserve and Debit do.
    pub fn within_cap(&self) -> bool {
        self.spending_cap
            .is_none_or(|cap| self.used_this_cycle + self.held + self.total <= cap)
    }
}

impl<S: EventStore> Engine<S> {
    /// Prices `items` on the current rate card and compares the total with
    /// what the account can spend now.
    #[tracing::instrument(target = "tally::engine", skip(self, items), fields(items = items.len()))]
    pub async fn quote(
        &self,
        account: &AccountId,
        items: Vec<QuoteItem>,
    ) -> Result<Quote, EngineError> {
        let catalog = self.catalog();
        let card = catalog.rate_cards.current();
        let mut lines = Vec::with_capacity(items.len());
        let mut total = 0i64;
        for item in items {
            let unit_price = card.price_of(
                &item.action,
                item.model.as_ref(),
                item.dimensions.as_ref().unwrap_or(&Dimensions::default()),
            )?;
            let line_total = unit_price
                .get()
                .checked_mul(item.count)
                .ok_or_else(|| too_large("items.count"))?;
            total = total
                .checked_add(line_total)
                .ok_or_else(|| too_large("items"))?;
            lines.push(QuoteLine {
                item,
                unit_price,
                total: Millicredits::new(line_total),
            });
        }
        let (available, spending_cap, used_this_cycle, held) = self
            .read(account, |state, now| {
                (
                    state.available_at(now),
                    state.terms.spending_cap,
                    state.used_in_cycle,
                    state.held(),
                )
            })
            .await?;
        Ok(Quote {
            lines,
            total: Millicredits::new(total),
            available,
            rate_card_version: card.version,
            spending_cap,
            used_this_cycle,
            held,
        })
    }
}

fn too_large(field: &'static str) -> EngineError {
    Rejection::InvalidField {
        field,
        reason: "the total does not fit in 64-bit milli-credits".into(),
    }
    .into()
}
