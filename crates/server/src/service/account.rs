//! tally.v1.AccountService.

use crate::Store;
use tally_api::v1 as pb;
use tally_api::v1::account_service_server::AccountService;
use tally_core::{BucketKind, Command, GrantCommand, Millicredits, OpenAccount, Outcome};
use tonic::{Request, Response, Status};

use tally_engine::Engine;

use super::reads::WatchStream;
use super::{Api, NOTE_MAX_BYTES, balance_of, unexpected};
use crate::convert::{self, Validator};

pub struct AccountApi<S: Store>(pub Api<S>);

#[tonic::async_trait]
impl<S: Store> AccountService for AccountApi<S> {
    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::OpenAccountResponse>, Status> {
        let request = request.into_inner();
        let pb::OpenAccountRequest {
            idempotency_key,
            account_id,
            plan,
            time_zone,
            billing_anchor,
            trial,
            spending_cap_millicredits,
            test_clock_id,
        } = &request;
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", idempotency_key);
        let account = v.account("account_id", account_id);
        let open = OpenAccount {
            plan: v.plan("plan", plan),
            time_zone: v.time_zone("time_zone", time_zone),
            anchor: v.billing_anchor("billing_anchor", *billing_anchor),
            trial: *trial,
            spending_cap: spending_cap_millicredits
                .and_then(|cap| v.non_negative_amount("spending_cap_millicredits", cap)),
            test_clock: (!test_clock_id.is_empty())
                .then(|| v.test_clock("test_clock_id", test_clock_id))
                .flatten(),
        };
        let (Some(key), Some(account)) = (key, account) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        if let Some(clock) = &open.test_clock {
            super::test_clock::all_within_reach(self.0.engine()?, clock).await?;
        }
        let applied = self
            .0
            .mutate(
                "OpenAccount",
                &request,
                account.clone(),
                key,
                Command::OpenAccount(open),
            )
            .await?;
        Ok(Response::new(pb::OpenAccountResponse {
            balance: balance_of(&applied, &account),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn grant(
        &self,
        request: Request<pb::GrantRequest>,
    ) -> Result<Response<pb::GrantResponse>, Status> {
        let request = request.into_inner();
        let pb::GrantRequest {
            idempotency_key,
            account_id,
            kind,
            amount_millicredits,
            source,
            priority,
            effective_at,
            expires_at,
            cost_basis,
            reference,
            pack,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let pack = v.pack("pack", &pack);
        // A pack brings its own kind, amount and expiry.
        let (kind, amount) = if pack.is_some() {
            for (field, set) in [
                ("kind", kind != 0),
                ("amount_millicredits", amount_millicredits != 0),
                ("expires_at", expires_at.is_some()),
            ] {
                if set {
                    v.violation(field, "must be unset when a pack is given");
                }
            }
            (Some(BucketKind::TopUp), Some(Millicredits::ZERO))
        } else {
            (
                v.bucket_kind("kind", kind),
                v.positive_amount("amount_millicredits", amount_millicredits),
            )
        };
        let source = v.grant_source("source", source);
        let effective_at = v.timestamp("effective_at", effective_at);
        let expires_at = v.timestamp("expires_at", expires_at);
        let cost_basis = v.cost_basis("cost_basis", cost_basis);
        let reference = v.text("reference", reference, NOTE_MAX_BYTES);
        let (Some(key), Some(account), Some(kind), Some(amount)) = (key, account, kind, amount)
        else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let grant_id = Engine::<S>::mint_grant_id();
        let command = Command::Grant(GrantCommand {
            grant_id,
            pack,
            kind,
            source,
            priority,
            amount,
            effective_at,
            expires_at,
            cost_basis,
            reference,
        });
        let applied = self
            .0
            .mutate("Grant", &request, account.clone(), key, command)
            .await?;
        let Outcome::Granted {
            grant_id,
            overage_repaid,
        } = &applied.reply.outcome
        else {
            return Err(unexpected(&applied.reply.outcome));
        };
        let balance = applied.reply.balance.as_ref();
        let amount = balance
            .and_then(|b| b.buckets.iter().find(|bucket| &bucket.grant_id == grant_id))
            .map_or(amount, |bucket| bucket.amount);
        Ok(Response::new(pb::GrantResponse {
            bucket: balance
                .and_then(|b| b.buckets.iter().find(|bucket| &bucket.grant_id == grant_id))
                .map(convert::bucket)
                .or_else(|| {
                    // Fully spent on overage already: show it as granted and empty.
                    Some(pb::Bucket {
                        grant_id: grant_id.to_string(),
                        kind: convert::bucket_kind(kind).into(),
                        amount_millicredits: amount.get(),
                        ..Default::default()
                    })
                }),
            overage_repaid_millicredits: overage_repaid.get(),
            balance: balance.map(|b| convert::balance(&account, b)),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn void_grant(
        &self,
        request: Request<pb::VoidGrantRequest>,
    ) -> Result<Response<pb::VoidGrantResponse>, Status> {
        let request = request.into_inner();
        let pb::VoidGrantRequest {
            idempotency_key,
            account_id,
            grant_id,
            reason,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let grant_id = v.grant("grant_id", &grant_id);
        let reason = v.text("reason", reason, NOTE_MAX_BYTES);
        let (Some(key), Some(account), Some(grant_id)) = (key, account, grant_id) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let applied = self
            .0
            .mutate(
                "VoidGrant",
                &request,
                account.clone(),
                key,
                Command::VoidGrant { grant_id, reason },
            )
            .await?;
        let Outcome::Voided { amount } = &applied.reply.outcome else {
            return Err(unexpected(&applied.reply.outcome));
        };
        Ok(Response::new(pb::VoidGrantResponse {
            voided_millicredits: amount.get(),
            balance: balance_of(&applied, &account),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn adjust(
        &self,
        request: Request<pb::AdjustRequest>,
    ) -> Result<Response<pb::AdjustResponse>, Status> {
        let request = request.into_inner();
        let pb::AdjustRequest {
            idempotency_key,
            account_id,
            amount_millicredits,
            reason,
            operator,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        let amount = v.signed_amount("amount_millicredits", amount_millicredits);
        let reason = v.required_text("reason", reason, NOTE_MAX_BYTES);
        let operator = v.required_text("operator", operator, NOTE_MAX_BYTES);
        let (Some(key), Some(account), Some(amount)) = (key, account, amount) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let applied = self
            .0
            .mutate(
                "Adjust",
                &request,
                account.clone(),
                key,
                Command::Adjust {
                    amount,
                    grant_id: Engine::<S>::mint_grant_id(),
                    reason,
                    operator,
                },
            )
            .await?;
        let Outcome::Adjusted {
            amount,
            grant_id,
            draws,
        } = &applied.reply.outcome
        else {
            return Err(unexpected(&applied.reply.outcome));
        };
        Ok(Response::new(pb::AdjustResponse {
            amount_millicredits: amount.get(),
            grant_id: grant_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            draws: convert::draws(draws),
            balance: balance_of(&applied, &account),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn change_plan(
        &self,
        request: Request<pb::ChangePlanRequest>,
    ) -> Result<Response<pb::ChangePlanResponse>, Status> {
        let request = request.into_inner();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &request.idempotency_key);
        let account = v.account("account_id", &request.account_id);
        let plan = v.plan("plan", &request.plan);
        if request.plan.is_empty() {
            v.violation("plan", "must be set");
        }
        let (Some(key), Some(account), Some(plan)) = (key, account, plan) else {
            return Err(v.into_error().into());
        };
        let applied = self
            .0
            .mutate(
                "ChangePlan",
                &request,
                account.clone(),
                key,
                Command::ChangePlan { plan },
            )
            .await?;
        let Outcome::PlanChanged { effective_at } = &applied.reply.outcome else {
            return Err(unexpected(&applied.reply.outcome));
        };
        Ok(Response::new(pb::ChangePlanResponse {
            effective_at: Some(convert::timestamp(*effective_at)),
            balance: balance_of(&applied, &account),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn set_spending_cap(
        &self,
        request: Request<pb::SetSpendingCapRequest>,
    ) -> Result<Response<pb::SetSpendingCapResponse>, Status> {
        let request = request.into_inner();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &request.idempotency_key);
        let account = v.account("account_id", &request.account_id);
        let cap = request
            .spending_cap_millicredits
            .map(|cap| v.non_negative_amount("spending_cap_millicredits", cap));
        let (Some(key), Some(account)) = (key, account) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let applied = self
            .0
            .mutate(
                "SetSpendingCap",
                &request,
                account.clone(),
                key,
                Command::SetSpendingCap { cap: cap.flatten() },
            )
            .await?;
        Ok(Response::new(pb::SetSpendingCapResponse {
            balance: balance_of(&applied, &account),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn set_alert_thresholds(
        &self,
        request: Request<pb::SetAlertThresholdsRequest>,
    ) -> Result<Response<pb::SetAlertThresholdsResponse>, Status> {
        let request = request.into_inner();
        let pb::SetAlertThresholdsRequest {
            idempotency_key,
            account_id,
            thresholds,
        } = request.clone();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &idempotency_key);
        let account = v.account("account_id", &account_id);
        // Unset means "the plan's"; set but invalid is refused below.
        let thresholds = thresholds.map(|t| v.alert_thresholds("thresholds", t));
        let (Some(key), Some(account)) = (key, account) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let applied = self
            .0
            .mutate(
                "SetAlertThresholds",
                &request,
                account.clone(),
                key,
                Command::SetAlertThresholds {
                    thresholds: thresholds.flatten(),
                },
            )
            .await?;
        Ok(Response::new(pb::SetAlertThresholdsResponse {
            balance: balance_of(&applied, &account),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn set_billing_anchor(
        &self,
        request: Request<pb::SetBillingAnchorRequest>,
    ) -> Result<Response<pb::SetBillingAnchorResponse>, Status> {
        let request = request.into_inner();
        let mut v = Validator::default();
        let key = v.idempotency_key("idempotency_key", &request.idempotency_key);
        let account = v.account("account_id", &request.account_id);
        let anchor = v.billing_anchor("billing_anchor", request.billing_anchor);
        if request.billing_anchor.is_none() {
            v.violation("billing_anchor", "must be set");
        }
        let (Some(key), Some(account), Some(anchor)) = (key, account, anchor) else {
            return Err(v.into_error().into());
        };
        let applied = self
            .0
            .mutate(
                "SetBillingAnchor",
                &request,
                account.clone(),
                key,
                Command::SetBillingAnchor { anchor },
            )
            .await?;
        Ok(Response::new(pb::SetBillingAnchorResponse {
            balance: balance_of(&applied, &account),
            consistency_token: applied.position.to_string(),
        }))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        self.0.get_balance(request).await
    }

    async fn list_ledger(
        &self,
        request: Request<pb::ListLedgerRequest>,
    ) -> Result<Response<pb::ListLedgerResponse>, Status> {
        self.0.list_ledger(request).await
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        self.0.get_usage(request).await
    }

    type WatchAccountStream = WatchStream;

    async fn watch_account(
        &self,
        request: Request<pb::WatchAccountRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.0.watch_account(request).await
    }
}
