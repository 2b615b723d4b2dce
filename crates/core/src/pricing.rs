//! The rate card: what an action costs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ActionKey, Millicredits, ModelName, Rejection};

/// A versioned price book. Version 0 is the empty card: every action is
/// unknown, so callers must give amounts themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCard {
    pub version: u64,
    #[serde(default)]
    pub actions: BTreeMap<ActionKey, ActionPrice>,
}

/// The price of one action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionPrice {
    /// The price when no model (or no listed model) is named.
    pub price_millicredits: Millicredits,
    /// Prices for particular models, e.g. a higher-cost model.
    #[serde(default)]
    pub models: BTreeMap<ModelName, Millicredits>,
}

impl RateCard {
    /// The price of one `action` on `model`. A model without its own price
    /// pays the action's price.
    pub fn price(
        &self,
        action: &ActionKey,
        model: Option<&ModelName>,
    ) -> Result<Millicredits, Rejection> {
        let price = self
            .actions
            .get(action)
            .ok_or_else(|| Rejection::UnknownAction {
                action: action.clone(),
            })?;
        Ok(model
            .and_then(|m| price.models.get(m).copied())
            .unwrap_or(price.price_millicredits))
    }

    /// Checks what serde cannot: prices are not negative.
    pub fn validate(&self) -> Result<(), String> {
        for (action, price) in &self.actions {
            let all = std::iter::once(&price.price_millicredits).chain(price.models.values());
            if all.into_iter().any(|p| p.get() < 0) {
                return Err(format!("action {action}: prices must not be negative"));
            }
        }
        Ok(())
    }
}
