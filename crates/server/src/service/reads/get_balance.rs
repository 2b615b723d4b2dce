//! `GetBalance`: the balance as the next command would see it.

use tally_api::v1 as pb;
use tally_projections::Projection;
use tonic::{Request, Response, Status};

use super::deadline_of;
use crate::Store;
use crate::convert::{self, Validator};
use crate::service::Api;

impl<S: Store> Api<S> {
    pub(in crate::service) async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let deadline = deadline_of(&request);
        let pb::GetBalanceRequest {
            account_id,
            consistency,
        } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        let freshness = v.consistency("consistency", consistency.as_ref());
        let Some(account) = account else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        self.fresh(Projection::Balances, freshness, deadline)
            .await?;
        let (state, now) = self.account_now(&account).await?;
        Ok(Response::new(pb::GetBalanceResponse {
            balance: Some(convert::balance(&account, &state.balance_at(now))),
        }))
    }
}
