//! tally.v1.CatalogService: publishing and reading the rate card and the
//! plan catalogue, as TOML documents in the same format as the files.

use crate::Store;
use serde::Serialize;
use tally_api::v1 as pb;
use tally_api::v1::catalog_service_server::CatalogService;
use tally_core::{PlanCatalogue, RateCard};
use tally_engine::Published;
use tonic::{Request, Response, Status};

use super::Api;
use crate::ServiceError;
use crate::convert::Validator;

/// Catalog documents are small; this bounds what one request may parse.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

pub struct CatalogApi<S: Store>(pub Api<S>);

fn document<T>(field: &str, text: &str, parse: fn(&str) -> Result<T, String>) -> Result<T, Status> {
    let mut v = Validator::default();
    if text.len() > MAX_DOCUMENT_BYTES {
        v.violation(field, format!("must be at most {MAX_DOCUMENT_BYTES} bytes"));
        return Err(v.into_error().into());
    }
    parse(text).map_err(|e| {
        v.violation(field, e);
        v.into_error().into()
    })
}

fn to_toml(value: &impl Serialize) -> Result<String, Status> {
    toml::to_string(value)
        .map_err(|e| ServiceError::Internal(format!("cannot render TOML: {e}")).into())
}

fn published(p: Published) -> (i64, bool) {
    match p {
        Published::New { version } => (crate::convert::version(version), false),
        Published::AlreadyPublished { version } => (crate::convert::version(version), true),
    }
}

fn requested_version(version: Option<i64>) -> Result<Option<u64>, Status> {
    version
        .map(|v| {
            u64::try_from(v).map_err(|_| {
                let mut invalid = Validator::default();
                invalid.violation("version", "must not be negative");
                Status::from(invalid.into_error())
            })
        })
        .transpose()
}

#[tonic::async_trait]
impl<S: Store> CatalogService for CatalogApi<S> {
    async fn publish_rate_card(
        &self,
        request: Request<pb::PublishRateCardRequest>,
    ) -> Result<Response<pb::PublishRateCardResponse>, Status> {
        let card = document("toml", &request.into_inner().toml, RateCard::from_toml_str)?;
        let (version, already_published) = published(
            self.0
                .engine()?
                .publish_rate_card(card)
                .await
                .map_err(ServiceError::from)?,
        );
        Ok(Response::new(pb::PublishRateCardResponse {
            version,
            already_published,
        }))
    }

    async fn get_rate_card(
        &self,
        request: Request<pb::GetRateCardRequest>,
    ) -> Result<Response<pb::GetRateCardResponse>, Status> {
        let wanted = requested_version(request.into_inner().version)?;
        let catalog = self.0.engine()?.catalog();
        let card = match wanted {
            None => catalog.rate_cards.current(),
            Some(v) => catalog
                .rate_cards
                .version(v)
                .ok_or(ServiceError::UnknownVersion {
                    document: "rate card",
                    version: v,
                })?,
        };
        Ok(Response::new(pb::GetRateCardResponse {
            version: crate::convert::version(card.version),
            toml: to_toml(card)?,
        }))
    }

    async fn publish_plan_catalogue(
        &self,
        request: Request<pb::PublishPlanCatalogueRequest>,
    ) -> Result<Response<pb::PublishPlanCatalogueResponse>, Status> {
        let catalogue = document(
            "toml",
            &request.into_inner().toml,
            PlanCatalogue::from_toml_str,
        )?;
        let (version, already_published) = published(
            self.0
                .engine()?
                .publish_plans(catalogue)
                .await
                .map_err(ServiceError::from)?,
        );
        Ok(Response::new(pb::PublishPlanCatalogueResponse {
            version,
            already_published,
        }))
    }

    async fn get_plan_catalogue(
        &self,
        request: Request<pb::GetPlanCatalogueRequest>,
    ) -> Result<Response<pb::GetPlanCatalogueResponse>, Status> {
        let wanted = requested_version(request.into_inner().version)?;
        let catalog = self.0.engine()?.catalog();
        let catalogue = match wanted {
            None => catalog.plans(),
            Some(v) => catalog
                .plan_catalogue(v)
                .ok_or(ServiceError::UnknownVersion {
                    document: "plan catalogue",
                    version: v,
                })?,
        };
        Ok(Response::new(pb::GetPlanCatalogueResponse {
            version: crate::convert::version(catalogue.version),
            toml: to_toml(catalogue)?,
        }))
    }
}
