//! The echo baseline: a bare tonic server whose Debit answers at once with
//! a fixed receipt, and whose GetBalance answers at once with a fixed
//! balance. Same messages, same callers and connections as the Tally run,
//! so its figures are the floor that gRPC, HTTP/2, protobuf and this
//! machine put under any service: what Tally adds is the ratio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::account_service_server::{AccountService, AccountServiceServer};
use tally_api::v1::metering_service_client::MeteringServiceClient;
use tally_api::v1::metering_service_server::{MeteringService, MeteringServiceServer};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::load::{Outcome, Workload};
use crate::scenario::{self, DEBIT_MILLICREDITS, Names, Scenario};

/// Serves the echo service on `listen` until killed; prints
/// `listening on ADDR` first so the bench can find the port.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(MeteringServiceServer::new(Echo {
            answer: Arc::new(fixed_answer()),
        }))
        .add_service(AccountServiceServer::new(EchoAccounts {
            balance: Arc::new(fixed_balance()),
        }))
        .serve_with_incoming(tokio_stream_listener(listener))
        .await?;
    Ok(())
}

/// A listener as the stream of connections tonic takes, without pulling in
/// tokio-stream for one adapter.
fn tokio_stream_listener(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// About the size of a real one-bucket Debit answer.
fn fixed_answer() -> pb::DebitResponse {
    pb::DebitResponse {
        receipt: Some(pb::Receipt {
            reservation_id: "rsv_01a1fcb3ecf67350bf00ba5255062b6b".into(),
            member_id: scenario::MEMBER.into(),
            action: scenario::ACTION.into(),
            charged_millicredits: DEBIT_MILLICREDITS,
            draws: vec![pb::Draw {
                grant_id: "grn_01a1fcb3ec8b7412b4d002602bd0d262".into(),
                kind: pb::BucketKind::Promotional as i32,
                amount_millicredits: DEBIT_MILLICREDITS,
            }],
            ..Default::default()
        }),
        available_millicredits: scenario::GRANT_MILLICREDITS,
        consistency_token: "0.123456".into(),
    }
}

/// Sets a protobuf timestamp field, with milliseconds as tallyd's carry
/// (the bench does not depend on prost-types to name the type).
macro_rules! set_time {
    ($field:expr, $seconds:expr, $nanos:expr) => {{
        $field = Some(Default::default());
        if let Some(time) = &mut $field {
            time.seconds = $seconds;
            time.nanos = $nanos;
        }
    }};
}

/// What tallyd answers GetBalance for an account of the balance scenario
/// (opened without a plan, one promotional grant, nothing charged), field
/// for field, so the reply is the same size on the wire give or take a byte.
fn fixed_balance() -> pb::GetBalanceResponse {
    let granted = scenario::GRANT_MILLICREDITS;
    let mut bucket = pb::Bucket {
        grant_id: "grn_01a223ca1bd27446bb1f8fee00a2c562".into(),
        kind: pb::BucketKind::Promotional as i32,
        source: pb::GrantSource::Promo as i32,
        priority: 40,
        amount_millicredits: granted,
        remaining_millicredits: granted,
        ..Default::default()
    };
    set_time!(bucket.effective_at, 1_795_896_777, 682_000_000);
    let mut balance = pb::Balance {
        account_id: "tb31638-1795896727-a1234".into(),
        available_millicredits: granted,
        buckets: vec![bucket],
        granted_millicredits: granted,
        version: 3,
        time_zone: "UTC".into(),
        billing_anchor: Some(pb::BillingAnchor {
            day: 28,
            hour: 20,
            minute: 12,
        }),
        alert_thresholds: Some(pb::AlertThresholds {
            low_balance_millicredits: vec![100_000, 10_000],
            critical_level_millicredits: 10_000,
            usage_percent: vec![80],
            auto_top_up: None,
        }),
        ..Default::default()
    };
    set_time!(balance.last_activity_at, 1_795_896_777, 683_000_000);
    set_time!(balance.cycle_start, 1_795_896_777, 677_000_000);
    // A cycle ends on the minute of the billing anchor.
    set_time!(balance.cycle_end, 1_798_488_720, 0);
    pb::GetBalanceResponse {
        balance: Some(balance),
    }
}

struct Echo {
    answer: Arc<pb::DebitResponse>,
}

fn not_echoed() -> Status {
    Status::unimplemented("the echo baseline answers Debit, ReportUsage and GetBalance only")
}

#[tonic::async_trait]
impl MeteringService for Echo {
    async fn debit(
        &self,
        _request: Request<pb::DebitRequest>,
    ) -> Result<Response<pb::DebitResponse>, Status> {
        Ok(Response::new(pb::DebitResponse::clone(&self.answer)))
    }

    /// Every record answered as charged, with the Debit answer.
    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        let records = request.into_inner().records.len();
        let charged = pb::UsageRecordResult {
            outcome: Some(pb::usage_record_result::Outcome::Charged(
                pb::DebitResponse::clone(&self.answer),
            )),
        };
        Ok(Response::new(pb::ReportUsageResponse {
            results: vec![charged; records],
            charged: records as i64,
            refused: 0,
        }))
    }

    async fn report_usage_stream(
        &self,
        _request: Request<tonic::Streaming<pb::ReportUsageStreamRequest>>,
    ) -> Result<Response<pb::ReportUsageStreamResponse>, Status> {
        Err(not_echoed())
    }

    async fn quote(
        &self,
        _request: Request<pb::QuoteRequest>,
    ) -> Result<Response<pb::QuoteResponse>, Status> {
        Err(not_echoed())
    }

    async fn reserve(
        &self,
        _request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        Err(not_echoed())
    }

    async fn commit(
        &self,
        _request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        Err(not_echoed())
    }

    async fn release(
        &self,
        _request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        Err(not_echoed())
    }

    async fn extend(
        &self,
        _request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        Err(not_echoed())
    }

    async fn refund(
        &self,
        _request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        Err(not_echoed())
    }
}

/// Answers GetBalance with the fixed balance; nothing else.
struct EchoAccounts {
    balance: Arc<pb::GetBalanceResponse>,
}

/// The reply type of an RPC the echo server does not answer.
type Refused<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AccountService for EchoAccounts {
    async fn get_balance(
        &self,
        _request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        Ok(Response::new(pb::GetBalanceResponse::clone(&self.balance)))
    }

    async fn open_account(
        &self,
        _request: Request<pb::OpenAccountRequest>,
    ) -> Refused<pb::OpenAccountResponse> {
        Err(not_echoed())
    }

    async fn grant(&self, _request: Request<pb::GrantRequest>) -> Refused<pb::GrantResponse> {
        Err(not_echoed())
    }

    async fn void_grant(
        &self,
        _request: Request<pb::VoidGrantRequest>,
    ) -> Refused<pb::VoidGrantResponse> {
        Err(not_echoed())
    }

    async fn adjust(&self, _request: Request<pb::AdjustRequest>) -> Refused<pb::AdjustResponse> {
        Err(not_echoed())
    }

    async fn list_ledger(
        &self,
        _request: Request<pb::ListLedgerRequest>,
    ) -> Refused<pb::ListLedgerResponse> {
        Err(not_echoed())
    }

    async fn get_usage(
        &self,
        _request: Request<pb::GetUsageRequest>,
    ) -> Refused<pb::GetUsageResponse> {
        Err(not_echoed())
    }

    type WatchAccountStream = futures::stream::Empty<Result<pb::WatchAccountResponse, Status>>;

    async fn watch_account(
        &self,
        _request: Request<pb::WatchAccountRequest>,
    ) -> Refused<Self::WatchAccountStream> {
        Err(not_echoed())
    }

    async fn change_plan(
        &self,
        _request: Request<pb::ChangePlanRequest>,
    ) -> Refused<pb::ChangePlanResponse> {
        Err(not_echoed())
    }

    async fn set_spending_cap(
        &self,
        _request: Request<pb::SetSpendingCapRequest>,
    ) -> Refused<pb::SetSpendingCapResponse> {
        Err(not_echoed())
    }

    async fn set_billing_anchor(
        &self,
        _request: Request<pb::SetBillingAnchorRequest>,
    ) -> Refused<pb::SetBillingAnchorResponse> {
        Err(not_echoed())
    }

    async fn set_alert_thresholds(
        &self,
        _request: Request<pb::SetAlertThresholdsRequest>,
    ) -> Refused<pb::SetAlertThresholdsResponse> {
        Err(not_echoed())
    }
}

/// Drives the echo server with the scenario's Debit requests (built exactly
/// as the Tally run builds them), `calls_per_op` per operation; in the
/// balance scenario, with its GetBalance requests.
pub struct EchoWorkload {
    pub scenario: Scenario,
    pub names: Names,
    pub accounts: usize,
    pub timeout: Duration,
}

pub struct EchoCaller {
    index: usize,
    client: MeteringServiceClient<Channel>,
    reads: AccountServiceClient<Channel>,
}

impl EchoWorkload {
    pub fn callers(&self, channels: &[Channel], count: usize) -> Vec<EchoCaller> {
        (0..count)
            .map(|index| {
                let channel = channels[index % channels.len()].clone();
                EchoCaller {
                    index,
                    client: MeteringServiceClient::new(channel.clone()),
                    reads: AccountServiceClient::new(channel),
                }
            })
            .collect()
    }
}

impl Workload for EchoWorkload {
    type Caller = EchoCaller;

    async fn call(&self, caller: &mut EchoCaller, n: u64) -> Outcome {
        let kind = match self.scenario {
            Scenario::Mixed => scenario::mixed_step(n).kind(),
            Scenario::ReserveCommit => "reserve-commit",
            Scenario::Hot | Scenario::Spread | Scenario::Watch => "debit",
            Scenario::Balance => {
                // The request Tally's balance run sends (consistency unset).
                let account = self.scenario.account(self.accounts, caller.index, n);
                let mut request = Request::new(pb::GetBalanceRequest {
                    account_id: self.names.account("a", account),
                    consistency: None,
                });
                request.set_timeout(self.timeout);
                return match caller.reads.get_balance(request).await {
                    Ok(_) => Outcome::ok("get-balance"),
                    Err(status) => Outcome::failed(
                        "get-balance",
                        format!("{:?}", status.code()),
                        status.message(),
                    ),
                };
            }
            Scenario::Report => {
                let (request, _) = scenario::report_request(
                    &self.names,
                    "m",
                    self.accounts,
                    |i| self.names.account("a", i),
                    caller.index,
                    n,
                );
                let mut request = Request::new(request);
                request.set_timeout(self.timeout);
                return match caller.client.report_usage(request).await {
                    Ok(_) => Outcome::ok("report"),
                    Err(status) => {
                        Outcome::failed("report", format!("{:?}", status.code()), status.message())
                    }
                };
            }
        };
        let account = self.scenario.account(self.accounts, caller.index, n);
        for call in 0..self.scenario.calls_per_op() {
            let request = scenario::debit_request(
                self.names.account("a", account),
                self.names
                    .key("m", caller.index, n, if call == 0 { "" } else { "c" }),
            );
            let mut request = Request::new(request);
            request.set_timeout(self.timeout);
            if let Err(status) = caller.client.debit(request).await {
                return Outcome::failed(kind, format!("{:?}", status.code()), status.message());
            }
        }
        Outcome::ok(kind)
    }
}
