//! Every published rate card, by version. A hold is settled on the card it
//! was priced from, so publishing a new card never reprices work already
//! under way.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use crate::RateCard;

static EMPTY: LazyLock<Arc<RateCard>> = LazyLock::new(|| Arc::new(RateCard::default()));

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateCards {
    cards: BTreeMap<u64, Arc<RateCard>>,
}

impl RateCards {
    pub fn new(cards: impl IntoIterator<Item = RateCard>) -> Self {
        RateCards {
            cards: cards
                .into_iter()
                .map(|card| (card.version, Arc::new(card)))
                .collect(),
        }
    }

    /// The newest card; the empty card (version 0) before any is published.
    pub fn current(&self) -> &RateCard {
        self.cards.values().next_back().unwrap_or(&EMPTY)
    }

    pub fn version(&self, version: u64) -> Option<&RateCard> {
        self.cards.get(&version).map(|card| &**card)
    }

    /// The card a reservation was priced on, or the current one for a
    /// reservation the caller priced itself.
    pub fn for_version(&self, version: u64) -> &RateCard {
        match version {
            0 => self.current(),
            v => self.version(v).unwrap_or_else(|| self.current()),
        }
    }

    /// Adds `card`, whose version must be above every published one.
    pub fn publish(&mut self, card: RateCard) -> Result<(), u64> {
        let current = self.current().version;
        if card.version <= current {
            return Err(current);
        }
        self.cards.insert(card.version, Arc::new(card));
        Ok(())
    }
}
