//! tally.v1.MeteringService: the hot path.

use crate::Store;
use tally_api::v1 as pb;
use tally_api::v1::metering_service_server::MeteringService;
use tally_core::{Command, Outcome};
use tally_engine::{Applied, Engine, QuoteItem};
use tonic::{Request, Response, Status};

use super::{Api, unexpected};
use crate::ServiceError;
use crate::convert::{self, Validator};

const MAX_QUOTE_ITEMS: usize = 1_000;
const MAX_QUOTE_COUNT: i64 = 1_000_000;

pub struct MeteringApi<S: Store>(pub Api<S>);

fn receipt_of(applied: &Applied) -> Result<pb::Receipt, Status> {
    match &applied.reply.outcome {
        Outcome::Charged { debit } => Ok(convert::receipt(debit)),
        other => Err(unexpected(other)),
    }
}

fn reservation_of(applied: &Applied) -> Result<pb::Reservation, Status> {
    match &applied.reply.outcome {
        Outcome::Reserved { reservation } | Outcome::Extended { reservation } => {
            Ok(convert::reservation(reservation))
        }
        other => Err(unexpected(other)),
    }
}

#[tonic::async_trait]
impl<S: Store> MeteringService for MeteringApi<S> {
    async fn quote(
        &self,
        request: Request<pb::QuoteRequest>,
    ) -> Result<Response<pb::QuoteResponse>, Status> {
        let pb::QuoteRequest { account_id, items } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        if items.is_empty() || items.len() > MAX_QUOTE_ITEMS {
            v.violation("items", format!("must list 1 to {MAX_QUOTE_ITEMS} items"));
        }
        let mut priced = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let pb::QuoteItem {
                action,
                model,
                count,
                dimensions,
            } = item;
            let action = v.action(&format!("items[{i}].action"), &action);
            let model = v.model(&format!("items[{i}].model"), &model);
            let dimensions = v.dimensions(&format!("items[{i}].dimensions"), dimensions);
            let count = match count {
                0 => 1,
                1..=MAX_QUOTE_COUNT => count,
                _ => {
                    v.violation(
                        &format!("items[{i}].count"),
                        format!("must be 0 (once) to {MAX_QUOTE_COUNT}"),
                    );
                    1
                }
            };
            if let Some(action) = action {
                priced.push(QuoteItem {
                    action,
                    model,
                    count,
                    dimensions,
                });
            }
        }
        let Some(account) = account else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let quote = self
            .0
            .engine()?
            .quote(&account, priced)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::QuoteResponse {
            affordable: quote.affordable(),
            lines: quote
                .lines
                .iter()
                .map(|line| pb::QuoteLine {
                    action: line.item.action.to_string(),
                    model: line
                        .item
                        .model
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    count: line.item.count,
                    unit_price_millicredits: line.unit_price.get(),
                    total_millicredits: line.total.get(),
                })
                .collect(),
            total_millicredits: quote.total.get(),
            available_millicredits: quote.available.get(),
            rate_card_version: convert::version(quote.rate_card_version),
            spending_cap_millicredits: quote.spending_cap.map(|cap| cap.get()),
            used_this_cycle_millicredits: quote.used_this_cycle.get(),
            held_millicredits: quote.held.get(),
            within_cap: quote.within_cap(),
        }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let request = request.into_inner();
        let pb::ReserveRequest {
            idempotency_key,
            account_id,
            member_id,
            action,
            model,
            amount_millicredits,
            ttl,
            dimensions,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let member = v.member("member_id", &member_id);
        let action = v.action("action", &action);
        let model = v.model("model", &model);
        let amount = amount_millicredits.map(|a| v.positive_amount("amount_millicredits", a));
        let dimensions = v.dimensions_instead_of(amount.flatten(), dimensions);
        let ttl = v.ttl("ttl", ttl, self.0.hold_ttl.default, self.0.hold_ttl.max);
        let (Some(key), Some(account), Some(member), Some(action), Some(ttl_millis)) =
            (key, account, member, action, ttl)
        else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let command = Command::Reserve {
            reservation_id: Engine::<S>::mint_reservation_id(),
            member,
            action,
            model,
            amount: amount.flatten(),
            dimensions,
            ttl_millis,
        };
        let applied = self
            .0
            .mutate("Reserve", &request, account, key, command)
            .await?;
        Ok(Response::new(pb::ReserveResponse {
            reservation: Some(reservation_of(&applied)?),
            available_millicredits: applied.reply.available.get(),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let request = request.into_inner();
        let pb::CommitRequest {
            idempotency_key,
            account_id,
            reservation_id,
            amount_millicredits,
            dimensions,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let reservation_id = v.reservation("reservation_id", &reservation_id);
        let amount = amount_millicredits.map(|a| v.non_negative_amount("amount_millicredits", a));
        let dimensions = v.dimensions_instead_of(amount.flatten(), dimensions);
        let (Some(key), Some(account), Some(reservation_id)) = (key, account, reservation_id)
        else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let command = Command::Commit {
            reservation_id,
            amount: amount.flatten(),
            dimensions,
        };
        let applied = self
            .0
            .mutate("Commit", &request, account, key, command)
            .await?;
        Ok(Response::new(pb::CommitResponse {
            receipt: Some(receipt_of(&applied)?),
            available_millicredits: applied.reply.available.get(),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let request = request.into_inner();
        let pb::ReleaseRequest {
            idempotency_key,
            account_id,
            reservation_id,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let reservation_id = v.reservation("reservation_id", &reservation_id);
        let (Some(key), Some(account), Some(reservation_id)) = (key, account, reservation_id)
        else {
            return Err(v.into_error().into());
        };
        let applied = self
            .0
            .mutate(
                "Release",
                &request,
                account,
                key,
                Command::Release { reservation_id },
            )
            .await?;
        let Outcome::Released { amount } = &applied.reply.outcome else {
            return Err(unexpected(&applied.reply.outcome));
        };
        Ok(Response::new(pb::ReleaseResponse {
            released_millicredits: amount.get(),
            available_millicredits: applied.reply.available.get(),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        let request = request.into_inner();
        let pb::ExtendRequest {
            idempotency_key,
            account_id,
            reservation_id,
            ttl,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let reservation_id = v.reservation("reservation_id", &reservation_id);
        if ttl.is_none() {
            v.violation("ttl", "must be set");
        }
        let ttl = v.ttl("ttl", ttl, self.0.hold_ttl.default, self.0.hold_ttl.max);
        let (Some(key), Some(account), Some(reservation_id), Some(ttl_millis)) =
            (key, account, reservation_id, ttl)
        else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let command = Command::Extend {
            reservation_id,
            ttl_millis,
        };
        let applied = self
            .0
            .mutate("Extend", &request, account, key, command)
            .await?;
        Ok(Response::new(pb::ExtendResponse {
            reservation: Some(reservation_of(&applied)?),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn debit(
        &self,
        request: Request<pb::DebitRequest>,
    ) -> Result<Response<pb::DebitResponse>, Status> {
        let request = request.into_inner();
        let pb::DebitRequest {
            idempotency_key,
            account_id,
            member_id,
            action,
            model,
            amount_millicredits,
            dimensions,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let member = v.member("member_id", &member_id);
        let action = v.action("action", &action);
        let model = v.model("model", &model);
        let amount = amount_millicredits.map(|a| v.positive_amount("amount_millicredits", a));
        let dimensions = v.dimensions_instead_of(amount.flatten(), dimensions);
        let (Some(key), Some(account), Some(member), Some(action)) = (key, account, member, action)
        else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let command = Command::Debit {
            member,
            action,
            model,
            amount: amount.flatten(),
            dimensions,
        };
        let applied = self
            .0
            .mutate("Debit", &request, account, key, command)
            .await?;
        Ok(Response::new(pb::DebitResponse {
            receipt: Some(receipt_of(&applied)?),
            available_millicredits: applied.reply.available.get(),
            consistency_token: applied.position.to_string(),
        }))
    }
}
