//! The catalog: every published rate card and plan catalogue.
//!
//! It lives in the event store as one stream, [`CATALOG_STREAM`], so every
//! replica reads the same versions and a publish is as durable as a debit.
//! Each replica keeps the catalog in memory and polls the stream's version
//! to pick up what another replica published.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tally_core::{PlanCatalogue, RateCard, RateCards, Rejection};
use tally_store::{AppendRequest, EventStore, NewEvent, StoreError};

use crate::service_streams::fold_after;
use crate::{Engine, EngineError};

/// The catalog's stream. `$` cannot start an account id, so no account
/// can collide with it.
pub const CATALOG_STREAM: &str = "$catalog";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CatalogEvent {
    RateCardPublished { card: RateCard },
    PlanCataloguePublished { catalogue: PlanCatalogue },
}

impl CatalogEvent {
    fn type_name(&self) -> &'static str {
        match self {
            CatalogEvent::RateCardPublished { .. } => "rate_card_published",
            CatalogEvent::PlanCataloguePublished { .. } => "plan_catalogue_published",
        }
    }
}

/// What decisions are priced and planned with.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub rate_cards: RateCards,
    /// Every published plan catalogue, by version.
    plan_catalogues: BTreeMap<u64, PlanCatalogue>,
    /// How much of the catalog stream this reflects.
    stream_version: u64,
}

impl Catalog {
    /// The newest plan catalogue; the empty one (version 0) before any.
    pub fn plans(&self) -> &PlanCatalogue {
        static EMPTY: PlanCatalogue = PlanCatalogue {
            version: 0,
            plans: BTreeMap::new(),
            packs: BTreeMap::new(),
        };
        self.plan_catalogues.values().next_back().unwrap_or(&EMPTY)
    }

    pub fn plan_catalogue(&self, version: u64) -> Option<&PlanCatalogue> {
        self.plan_catalogues.get(&version)
    }

    fn apply(&mut self, event: CatalogEvent) {
        match event {
            CatalogEvent::RateCardPublished { card } => {
                // Versions were checked before the append; a replayed log
                // holds them in increasing order.
                let _ = self.rate_cards.publish(card);
            }
            CatalogEvent::PlanCataloguePublished { catalogue } => {
                self.plan_catalogues.insert(catalogue.version, catalogue);
            }
        }
    }
}

/// What a publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    New {
        version: u64,
    },
    /// The same version with the same content was already published.
    AlreadyPublished {
        version: u64,
    },
}

impl<S: EventStore> Engine<S> {
    pub fn catalog(&self) -> Arc<Catalog> {
        self.shared.catalog()
    }

    /// Reads what was published since this replica last looked. Returns
    /// whether anything changed.
    pub async fn refresh_catalog(&self) -> Result<bool, EngineError> {
        let current = self.catalog();
        let store = &self.shared.store;
        if store.stream_version(CATALOG_STREAM).await? == current.stream_version {
            return Ok(false);
        }
        let mut next = (*current).clone();
        next.stream_version = fold_after(
            store,
            CATALOG_STREAM,
            next.stream_version,
            "catalog",
            |event: CatalogEvent| next.apply(event),
        )
        .await?;
        let mut slot = self.shared.catalog.write().expect("catalog lock");
        // A concurrent refresh may have got further; keep the newer.
        if next.stream_version > slot.stream_version {
            *slot = Arc::new(next);
        }
        Ok(true)
    }

    /// Publishes a rate card. Its version must be above every published
    /// one; publishing the current version again with the same content is
    /// a no-op, so a retry (or a restart with the same file) is safe.
    pub async fn publish_rate_card(&self, card: RateCard) -> Result<Published, EngineError> {
        card.validate().map_err(|reason| Rejection::InvalidField {
            field: "rate_card",
            reason,
        })?;
        self.publish(
            card.version,
            |catalog| {
                let current = catalog.rate_cards.current();
                (
                    current.version,
                    catalog.rate_cards.version(card.version) == Some(&card),
                )
            },
            CatalogEvent::RateCardPublished { card: card.clone() },
        )
        .await
    }

    /// Publishes a plan catalogue, on the same terms as a rate card.
    pub async fn publish_plans(&self, catalogue: PlanCatalogue) -> Result<Published, EngineError> {
        catalogue
            .validate()
            .map_err(|reason| Rejection::InvalidField {
                field: "plan_catalogue",
                reason,
            })?;
        self.publish(
            catalogue.version,
            |catalog| {
                (
                    catalog.plans().version,
                    catalog.plan_catalogue(catalogue.version) == Some(&catalogue),
                )
            },
            CatalogEvent::PlanCataloguePublished {
                catalogue: catalogue.clone(),
            },
        )
        .await
    }

    async fn publish(
        &self,
        version: u64,
        current: impl Fn(&Catalog) -> (u64, bool),
        event: CatalogEvent,
    ) -> Result<Published, EngineError> {
        let payload = serde_json::to_vec(&event)
            .map_err(|e| EngineError::Corrupt(format!("cannot encode catalog event: {e}")))?;
        for _ in 0..self.shared.config.max_attempts {
            self.refresh_catalog().await?;
            let catalog = self.catalog();
            let (newest, same) = current(&catalog);
            if same {
                return Ok(Published::AlreadyPublished { version });
            }
            if version <= newest {
                return Err(Rejection::InvalidField {
                    field: "version",
                    reason: format!("must be above the published version {newest}"),
                }
                .into());
            }
            let appended = self
                .shared
                .store
                .append(AppendRequest {
                    stream_id: CATALOG_STREAM.to_owned(),
                    expected_version: catalog.stream_version,
                    events: vec![NewEvent {
                        event_type: event.type_name().to_owned(),
                        payload: payload.clone(),
                        recorded_at_ms: self.now().as_millis(),
                    }],
                    idempotency: Vec::new(),
                    holds: Vec::new(),
                    charges: Vec::new(),
                    next_wakeup_ms: None,
                })
                .await;
            match appended {
                Ok(_) => {
                    self.refresh_catalog().await?;
                    return Ok(Published::New { version });
                }
                // Another replica published first: look again.
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention {
            account: CATALOG_STREAM.to_owned(),
            attempts: self.shared.config.max_attempts,
        })
    }
}
