//! tally.v1.MeteringService: the hot path.

use crate::Store;
use tally_api::v1 as pb;
use tally_api::v1::metering_service_server::MeteringService;
use tally_core::{Command, Outcome};
use tally_engine::{Applied, Engine, Mutation, QuoteItem};
use tonic::{Request, Response, Status, Streaming};

use super::{Api, NOTE_MAX_BYTES, fingerprint, unexpected};
use crate::ServiceError;
use crate::convert::{self, Validator};
use crate::status::{self, InvalidArgument, record_error};

const MAX_QUOTE_ITEMS: usize = 1_000;
const MAX_QUOTE_COUNT: i64 = 1_000_000;
/// Records in one ReportUsage call, or one message of its stream.
const MAX_RECORDS_PER_MESSAGE: usize = 1_000;
/// Records in one ReportUsageStream: every result is kept until it ends.
const MAX_RECORDS_PER_STREAM: usize = 100_000;

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
            occurred_at: None,
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

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        let request = request.into_inner();
        let pb::RefundRequest {
            idempotency_key,
            account_id,
            charge_idempotency_key,
            amount_millicredits,
            reason,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let charge_key = v.idempotency_key("charge_idempotency_key", &charge_idempotency_key);
        let amount = amount_millicredits.map(|a| v.positive_amount("amount_millicredits", a));
        let reason = v.required_text("reason", reason, NOTE_MAX_BYTES);
        let (Some(key), Some(account), Some(charge_key)) = (key, account, charge_key) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let applied = self
            .0
            .mutate(
                "Refund",
                &request,
                account,
                key,
                Command::Refund {
                    charge_key,
                    amount: amount.flatten(),
                    reason,
                    refund_grant_id: Engine::<S>::mint_grant_id(),
                },
            )
            .await?;
        let Outcome::Refunded { refund } = &applied.reply.outcome else {
            return Err(unexpected(&applied.reply.outcome));
        };
        Ok(Response::new(pb::RefundResponse {
            refund: Some(convert::refund_receipt(refund)),
            available_millicredits: applied.reply.available.get(),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        let records = request.into_inner().records;
        if records.len() > MAX_RECORDS_PER_MESSAGE {
            return Err(too_many_records(MAX_RECORDS_PER_MESSAGE, "per call").into());
        }
        let mut queued = Vec::with_capacity(records.len());
        for record in records {
            queued.push(self.queue_record(record).await);
        }
        Ok(Response::new(report(answers(queued).await)))
    }

    async fn report_usage_stream(
        &self,
        request: Request<Streaming<pb::ReportUsageStreamRequest>>,
    ) -> Result<Response<pb::ReportUsageStreamResponse>, Status> {
        let mut stream = request.into_inner();
        // Each message's records are queued in order as it arrives, and
        // charged while the next is read; the answers are gathered at the end.
        let mut queued = Vec::new();
        while let Some(message) = stream.message().await.map_err(status::inbound)? {
            if message.records.len() > MAX_RECORDS_PER_MESSAGE {
                return Err(too_many_records(MAX_RECORDS_PER_MESSAGE, "per message").into());
            }
            if queued.len() + message.records.len() > MAX_RECORDS_PER_STREAM {
                return Err(too_many_records(MAX_RECORDS_PER_STREAM, "per stream").into());
            }
            for record in message.records {
                queued.push(self.queue_record(record).await);
            }
        }
        let pb::ReportUsageResponse {
            results,
            charged,
            refused,
        } = report(answers(queued).await);
        Ok(Response::new(pb::ReportUsageStreamResponse {
            results,
            charged,
            refused,
        }))
    }
}

fn too_many_records(max: usize, per: &str) -> InvalidArgument {
    InvalidArgument::field("records", format!("at most {max} records {per}"))
}

fn report(results: Vec<pb::UsageRecordResult>) -> pb::ReportUsageResponse {
    let charged = results
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                Some(pb::usage_record_result::Outcome::Charged(_))
            )
        })
        .count() as i64;
    pb::ReportUsageResponse {
        charged,
        refused: results.len() as i64 - charged,
        results,
    }
}

/// The results of queued records, in order.
async fn answers(
    queued: Vec<Result<tally_engine::Submitted, Status>>,
) -> Vec<pb::UsageRecordResult> {
    use pb::usage_record_result::Outcome;
    futures::future::join_all(queued.into_iter().map(|queued| async move {
        let charged = match queued {
            Ok(submitted) => submitted
                .answer()
                .await
                .map_err(|e| Status::from(ServiceError::from(e)))
                .and_then(|applied| {
                    Ok(pb::DebitResponse {
                        receipt: Some(receipt_of(&applied)?),
                        available_millicredits: applied.reply.available.get(),
                        consistency_token: applied.position.to_string(),
                    })
                }),
            Err(status) => Err(status),
        };
        pb::UsageRecordResult {
            outcome: Some(match charged {
                Ok(charged) => Outcome::Charged(charged),
                Err(status) => Outcome::Refused(record_error(&status)),
            }),
        }
    }))
    .await
}

impl<S: Store> MeteringApi<S> {
    /// Validates a record and queues it as a Debit behind the account's
    /// earlier commands (the engine decides and commits what is queued
    /// together in shared transactions). Fields are named as in
    /// `UsageRecord`.
    async fn queue_record(
        &self,
        record: pb::UsageRecord,
    ) -> Result<tally_engine::Submitted, Status> {
        // Checked before the engine is asked for: a bad record is the
        // caller's mistake whether or not the store is open yet. How far
        // `occurred_at` may be from now is the engine's to judge: the
        // account may live on a test clock.
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &record.idempotency_key);
        let account = v.account("account_id", &record.account_id);
        let member = v.member("member_id", &record.member_id);
        let action = v.action("action", &record.action);
        let model = v.model("model", &record.model);
        let amount = record
            .amount_millicredits
            .map(|a| v.positive_amount("amount_millicredits", a));
        let dimensions = v.dimensions_instead_of(amount.flatten(), record.dimensions.clone());
        let occurred_at = v.timestamp("occurred_at", record.occurred_at);
        let (Some(key), Some(account), Some(member), Some(action)) = (key, account, member, action)
        else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let engine = self.0.engine()?;
        let mutation = Mutation {
            account,
            idempotency_key: key,
            fingerprint: fingerprint("ReportUsage", &record),
            command: Command::Debit {
                member,
                action,
                model,
                amount: amount.flatten(),
                dimensions,
                occurred_at,
            },
        };
        engine
            .submit_batched(mutation)
            .await
            .map_err(|e| ServiceError::from(e).into())
    }
}
