//! `ListLedger`: a page of the account's ledger, filtered.

use tally_api::v1 as pb;
use tally_projections::Projection;
use tally_projections::reads::{self, LedgerQuery};
use tonic::{Request, Response, Status};

use super::{deadline_of, unknown_account};
use crate::convert::{self, Validator};
use crate::service::Api;
use crate::{ServiceError, Store};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1_000;

impl<S: Store> Api<S> {
    pub(in crate::service) async fn list_ledger(
        &self,
        request: Request<pb::ListLedgerRequest>,
    ) -> Result<Response<pb::ListLedgerResponse>, Status> {
        let deadline = deadline_of(&request);
        let pb::ListLedgerRequest {
            account_id,
            page_size,
            page_token,
            member_id,
            action,
            kinds,
            start_time,
            end_time,
            consistency,
        } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        let limit = match usize::try_from(page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) if size <= MAX_PAGE_SIZE => size,
            _ => {
                v.violation(
                    "page_size",
                    format!("must be between 0 and {MAX_PAGE_SIZE}"),
                );
                DEFAULT_PAGE_SIZE
            }
        };
        let after_version = if page_token.is_empty() {
            0
        } else {
            parse_page_token(&page_token).unwrap_or_else(|| {
                v.violation("page_token", "is not a token this service issued");
                0
            })
        };
        let member = (!member_id.is_empty())
            .then(|| v.member("member_id", &member_id))
            .flatten();
        let action = (!action.is_empty())
            .then(|| v.action("action", &action))
            .flatten();
        let kinds = v.ledger_kinds("kinds", &kinds);
        let start = v.timestamp("start_time", start_time);
        let end = v.timestamp("end_time", end_time);
        let freshness = v.consistency("consistency", consistency.as_ref());
        let Some(account) = account else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        self.fresh(Projection::Ledger, freshness, deadline).await?;
        let query = LedgerQuery {
            member,
            action,
            kinds,
            start,
            end,
            after_version,
            limit,
        };
        let page = reads::ledger_page(self.projections()?.store(), account.as_str(), &query)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(unknown_account)?;
        Ok(Response::new(pb::ListLedgerResponse {
            entries: page.entries.iter().map(convert::ledger_entry).collect(),
            next_page_token: page
                .next_after_version
                .map(page_token_after)
                .unwrap_or_default(),
        }))
    }
}

/// Page tokens are opaque to callers; inside, the stream version to
/// continue after. Stable: entries are only ever appended after it.
fn page_token_after(version: u64) -> String {
    format!("v1.{version}")
}

fn parse_page_token(token: &str) -> Option<u64> {
    token.strip_prefix("v1.")?.parse().ok()
}
