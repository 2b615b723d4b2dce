//! Cached prices for UI estimates.
//!
//! A price depends only on the action, the model, the dimensions and the
//! rate card version, so a cached price is exact for as long as that
//! version is current. The cache learns that a new version was published
//! in three ways:
//!
//! 1. every Quote answer carries the current version;
//! 2. every hold and charge this client makes (Reserve, Commit, Debit)
//!    carries the version it was priced on: a newer one than the cache's
//!    drops every cached price at once;
//! 3. a version not confirmed by Tally for
//!    [`ClientConfig::quote_max_age`](crate::ClientConfig::quote_max_age)
//!    (60 s by default) is asked again: the next lookup is a Quote.
//!
//! So a price shown can be stale for at most `quote_max_age` after a
//! publish, unless this client's own traffic saw the new version sooner.
//! [`TallyClient::forget_prices`] drops everything at once (e.g. for the
//! process that publishes cards).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tally_api::v1 as pb;

use crate::{ClientError, TallyClient};

/// The price of one run of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    /// Milli-credits.
    pub unit_price_millicredits: i64,
    /// The rate card version it comes from.
    pub rate_card_version: i64,
    /// True when it came from the cache, not from a Quote just now.
    pub cached: bool,
}

/// The action, model and dimensions, in a form that hashes the same for
/// the same dimensions (their `units` map sorted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Item {
    action: String,
    model: String,
    dimensions: Option<[i64; 5]>,
    units: Vec<(String, i64)>,
}

impl Item {
    fn new(action: &str, model: &str, dimensions: Option<&pb::Dimensions>) -> Item {
        let mut units: Vec<(String, i64)> = dimensions
            .map(|d| d.units.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        units.sort();
        Item {
            action: action.into(),
            model: model.into(),
            dimensions: dimensions.map(|d| {
                [
                    d.input_tokens,
                    d.output_tokens,
                    d.context_tokens,
                    d.images,
                    d.tool_calls,
                ]
            }),
            units,
        }
    }
}

#[derive(Default)]
pub(crate) struct QuoteCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The newest rate card version seen, and when Tally last said so.
    version: i64,
    confirmed_at: Option<Instant>,
    /// Prices keyed by item and version (only the newest version's are
    /// kept).
    prices: HashMap<(Item, i64), i64>,
}

impl QuoteCache {
    /// A version seen in an answer: a newer one drops older prices.
    pub(crate) fn observe_version(&self, version: i64) {
        // 0: a caller-given amount, priced on no card.
        if version <= 0 {
            return;
        }
        let mut state = self.state.lock().expect("quote cache lock");
        if version > state.version {
            state.version = version;
            state.prices.retain(|(_, v), _| *v == version);
        }
    }

    /// The cached price of the current version, however old: for
    /// checking the fail-open allowance while Tally is unreachable.
    pub(crate) fn cached_price(
        &self,
        action: &str,
        model: &str,
        dimensions: Option<&pb::Dimensions>,
    ) -> Option<i64> {
        let state = self.state.lock().expect("quote cache lock");
        state
            .prices
            .get(&(Item::new(action, model, dimensions), state.version))
            .copied()
    }

    fn fresh(&self, item: &Item, max_age: std::time::Duration) -> Option<Price> {
        let state = self.state.lock().expect("quote cache lock");
        let confirmed = state.confirmed_at?;
        if confirmed.elapsed() > max_age {
            return None;
        }
        state
            .prices
            .get(&(item.clone(), state.version))
            .map(|price| Price {
                unit_price_millicredits: *price,
                rate_card_version: state.version,
                cached: true,
            })
    }

    fn store(&self, item: Item, version: i64, price: i64) {
        self.observe_version(version);
        let mut state = self.state.lock().expect("quote cache lock");
        if version == state.version {
            state.confirmed_at = Some(Instant::now());
            state.prices.insert((item, version), price);
        }
    }

    fn clear(&self) {
        let mut state = self.state.lock().expect("quote cache lock");
        state.prices.clear();
        state.confirmed_at = None;
    }
}

impl TallyClient {
    /// The price of one run of `action` (with `model` and `dimensions`
    /// when the price depends on them), from the cache when its rate
    /// card version is known to be current, else from a Quote for
    /// `account`. For showing estimates; Reserve and Debit price on the
    /// server whatever this says.
    ///
    /// A price depends only on the action, the model, the dimensions and
    /// the rate card version, so a cached price is exact while its
    /// version is current. The cache learns of a newer version from every
    /// Quote answer, and from every hold and charge this client makes
    /// (Reserve, Commit and Debit answers carry the version they were
    /// priced on): a newer version drops every cached price. A version
    /// Tally has not confirmed for
    /// [`ClientConfig::quote_max_age`](crate::ClientConfig::quote_max_age)
    /// (60 s by default) is asked again. So after a publish, a price can
    /// be stale for at most `quote_max_age`, unless this client's own
    /// traffic saw the new version sooner.
    ///
    /// ```no_run
    /// # async fn run(tally: tally_client::TallyClient) -> Result<(), tally_client::ClientError> {
    /// let price = tally.price("acme", "article.draft", "", None).await?;
    /// println!("{} credits", price.unit_price_millicredits as f64 / 1000.0);
    /// # Ok(()) }
    /// ```
    pub async fn price(
        &self,
        account: &str,
        action: &str,
        model: &str,
        dimensions: Option<pb::Dimensions>,
    ) -> Result<Price, ClientError> {
        let cache = &self.inner.quotes;
        let item = Item::new(action, model, dimensions.as_ref());
        if let Some(price) = cache.fresh(&item, self.inner.config.quote_max_age) {
            return Ok(price);
        }
        let answer = self
            .quote(pb::QuoteRequest {
                account_id: account.into(),
                items: vec![pb::QuoteItem {
                    action: action.into(),
                    model: model.into(),
                    count: 1,
                    dimensions,
                }],
            })
            .await?;
        let line = answer
            .lines
            .first()
            .ok_or(ClientError::Malformed("QuoteResponse.lines"))?;
        cache.store(item, answer.rate_card_version, line.unit_price_millicredits);
        Ok(Price {
            unit_price_millicredits: line.unit_price_millicredits,
            rate_card_version: answer.rate_card_version,
            cached: false,
        })
    }

    /// Drops every cached price: the next lookups ask Tally.
    pub fn forget_prices(&self) {
        self.inner.quotes.clear();
    }
}
