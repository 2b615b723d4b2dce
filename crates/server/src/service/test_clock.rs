//! tally.v1.TestClockService: creating, reading and advancing test clocks
//! (see `tally_engine::TestClock` and docs/test-clocks.md).

use tally_api::v1 as pb;
use tally_api::v1::test_clock_service_server::TestClockService;
use tally_core::TestClockId;
use tally_engine::TestClock;
use tonic::{Request, Response, Status};

use super::Api;
use crate::convert::{Validator, timestamp};
use crate::{ServiceError, Store};

pub struct TestClockApi<S: Store>(pub Api<S>);

/// The clock as a response shows it: only the accounts the caller's key
/// may touch, so a tenant's key learns nothing of another tenant's.
fn test_clock(clock: &TestClock) -> pb::TestClock {
    pb::TestClock {
        test_clock_id: clock.id.to_string(),
        frozen_time: Some(timestamp(clock.now)),
        start_time: Some(timestamp(clock.started_at)),
        account_ids: clock
            .accounts
            .iter()
            .filter(|account| crate::auth::may_touch(account.as_str()).is_ok())
            .map(ToString::to_string)
            .collect(),
    }
}

/// Refuses (PERMISSION_DENIED) unless the caller's key may touch every
/// account on the clock: a tenant's key may advance only a clock of its own
/// accounts, and put an account only on such a clock, so that no tenant
/// moves another's time or blocks its clock.
pub(super) async fn all_within_reach<S: Store>(
    engine: &tally_engine::Engine<S>,
    id: &TestClockId,
) -> Result<(), Status> {
    let clock = match engine.test_clock(id).await {
        Ok(clock) => clock,
        // No such clock: the engine's refusal says so (or that test clocks
        // are refused here), in its own order.
        Err(tally_engine::EngineError::Rejected(tally_core::Rejection::UnknownTestClock {
            ..
        })) => return Ok(()),
        Err(e) => return Err(ServiceError::from(e).into()),
    };
    for account in &clock.accounts {
        if let Err(denied) = crate::auth::may_touch(account.as_str()) {
            tally_telemetry::Metrics::global().auth_refused(denied.reason());
            return Err(ServiceError::from(denied).into());
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl<S: Store> TestClockService for TestClockApi<S> {
    async fn create_test_clock(
        &self,
        request: Request<pb::CreateTestClockRequest>,
    ) -> Result<Response<pb::CreateTestClockResponse>, Status> {
        let pb::CreateTestClockRequest {
            test_clock_id,
            frozen_time,
        } = request.into_inner();
        let mut v = Validator::default();
        let id = v.test_clock("test_clock_id", &test_clock_id);
        let at = v.required_timestamp("frozen_time", frozen_time);
        let (Some(id), Some(at)) = (id, at) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let clock = self
            .0
            .engine()?
            .create_test_clock(&id, at)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::CreateTestClockResponse {
            test_clock: Some(test_clock(&clock)),
        }))
    }

    async fn get_test_clock(
        &self,
        request: Request<pb::GetTestClockRequest>,
    ) -> Result<Response<pb::GetTestClockResponse>, Status> {
        let mut v = Validator::default();
        let id = v.test_clock("test_clock_id", &request.into_inner().test_clock_id);
        let Some(id) = id else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let clock = self
            .0
            .engine()?
            .test_clock(&id)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::GetTestClockResponse {
            test_clock: Some(test_clock(&clock)),
        }))
    }

    async fn advance_test_clock(
        &self,
        request: Request<pb::AdvanceTestClockRequest>,
    ) -> Result<Response<pb::AdvanceTestClockResponse>, Status> {
        let pb::AdvanceTestClockRequest {
            test_clock_id,
            frozen_time,
        } = request.into_inner();
        let mut v = Validator::default();
        let id = v.test_clock("test_clock_id", &test_clock_id);
        let to = v.required_timestamp("frozen_time", frozen_time);
        let (Some(id), Some(to)) = (id, to) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let engine = self.0.engine()?;
        // An advance writes to every account on the clock.
        all_within_reach(engine, &id).await?;
        let advanced = engine
            .advance_test_clock(&id, to)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::AdvanceTestClockResponse {
            test_clock: Some(test_clock(&advanced.clock)),
            events_written: i64::try_from(advanced.events_written).unwrap_or(i64::MAX),
        }))
    }
}
