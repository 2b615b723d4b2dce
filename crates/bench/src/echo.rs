//! The echo baseline: a bare tonic server whose Debit answers at once with
//! a fixed receipt. Same messages, same callers and connections as the Tally
//! run, so its figures are the floor that gRPC, HTTP/2, protobuf and this
//! machine put under any service: what Tally adds is the ratio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tally_api::v1 as pb;
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

struct Echo {
    answer: Arc<pb::DebitResponse>,
}

fn not_echoed() -> Status {
    Status::unimplemented("the echo baseline answers Debit and ReportUsage only")
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
}

/// Drives the echo server with the scenario's Debit requests (built exactly
/// as the Tally run builds them), `calls_per_op` per operation.
pub struct EchoWorkload {
    pub scenario: Scenario,
    pub names: Names,
    pub accounts: usize,
    pub timeout: Duration,
}

pub struct EchoCaller {
    index: usize,
    client: MeteringServiceClient<Channel>,
}

impl EchoWorkload {
    pub fn callers(&self, channels: &[Channel], count: usize) -> Vec<EchoCaller> {
        (0..count)
            .map(|index| EchoCaller {
                index,
                client: MeteringServiceClient::new(channels[index % channels.len()].clone()),
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
            Scenario::Hot | Scenario::Spread => "debit",
            // A unary call of about a balance's size, answered at once.
            Scenario::Balance => "get-balance",
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
