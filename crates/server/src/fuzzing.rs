//! tally.v1's request path without a network or a store, for the fuzz
//! targets (`fuzz/`; `crates/fuzz-targets` holds their bodies and replays
//! their corpus in `cargo test`). Behind the feature `fuzzing`: tallyd is
//! built without it.
//!
//! A request body goes where a call's body goes once the API key and load
//! shedding have let it in: tonic's framing, the servers' codec
//! (`tally_api::codec`), the handler's validation (`crate::convert`),
//! the one mapping of errors to statuses (`crate::status`) and
//! `crate::inbound`'s rewrites. There it meets a store that is not open
//! yet, as every call does between tallyd binding its port and its store
//! opening: a request that passes validation is answered UNAVAILABLE
//! ([`STORE_NOT_OPEN`]) instead of being decided, and nothing is written.
//! Handlers check their request before they ask for the store, so every
//! check that needs only the request is reached (those that need the
//! account, such as `WatchAccount`'s `after_sequence` past its last
//! entry, are not).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http_body::Body as _;
use tally_api::v1::account_service_server::AccountServiceServer;
use tally_api::v1::catalog_service_server::CatalogServiceServer;
use tally_api::v1::metering_service_server::MeteringServiceServer;
use tally_api::v1::test_clock_service_server::TestClockServiceServer;
use tally_core::Timestamp;
use tally_store::sqlite::SqliteStore;
use tonic::codegen::Bytes;
use tower::{Layer as _, ServiceExt as _};

use crate::inbound::InboundErrors;
use crate::service::{AccountApi, Api, CatalogApi, HoldTtl, MeteringApi, TestClockApi};
use crate::{Config, MAX_REQUEST_BYTES};

/// The message of the UNAVAILABLE a request gets when it passed every
/// check and would now be decided.
pub const STORE_NOT_OPEN: &str = "the store is not open yet";

/// The time the seeds' timestamps are written around
/// (2026-01-01T00:00:00Z). How far a usage record's `occurred_at` may be
/// from the account's time is the engine's to judge, so no check here
/// depends on it.
pub const NOW: Timestamp = Timestamp::from_millis(1_767_225_600_000);

/// What the server answered a call.
#[derive(Debug)]
pub struct Answer {
    /// From the answer's headers (a trailers-only answer) or its trailers.
    pub status: tonic::Status,
    /// The messages before the trailers, each without its frame.
    pub messages: Vec<Bytes>,
}

/// tally.v1's services as tallyd serves them (the same message size
/// limit, the same inbound rewrites), over a store that never opens.
#[derive(Clone)]
pub struct Services {
    account: AccountServiceServer<AccountApi<SqliteStore>>,
    metering: MeteringServiceServer<MeteringApi<SqliteStore>>,
    catalog: CatalogServiceServer<CatalogApi<SqliteStore>>,
    test_clocks: TestClockServiceServer<TestClockApi<SqliteStore>>,
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl Services {
    /// The services with tallyd's default hold TTLs.
    pub fn new() -> Self {
        let config = Config::for_tests(std::path::PathBuf::new());
        let api = Api::<SqliteStore>::new(
            Arc::new(OnceLock::new()),
            HoldTtl {
                default: config.default_hold_ttl(),
                max: config.max_hold_ttl(),
            },
        );
        Services {
            account: AccountServiceServer::new(AccountApi(api.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            metering: MeteringServiceServer::new(MeteringApi(api.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            catalog: CatalogServiceServer::new(CatalogApi(api.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            test_clocks: TestClockServiceServer::new(TestClockApi(api))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        }
    }

    /// Calls `path` (`/tally.v1.MeteringService/Debit`) with `body` as the
    /// request body, exactly as given (framing included), and reads the
    /// whole answer. Needs a Tokio runtime, as tallyd's handlers do.
    pub async fn call(&self, path: &str, body: Vec<u8>) -> Answer {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://tally{path}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(OneChunk(Some(body.into()))))
            .expect("a request");
        let service = path.trim_start_matches('/').split('/').next();
        let response = match service {
            Some("tally.v1.AccountService") => {
                InboundErrors
                    .layer(self.account.clone())
                    .oneshot(request)
                    .await
            }
            Some("tally.v1.MeteringService") => {
                InboundErrors
                    .layer(self.metering.clone())
                    .oneshot(request)
                    .await
            }
            Some("tally.v1.CatalogService") => {
                InboundErrors
                    .layer(self.catalog.clone())
                    .oneshot(request)
                    .await
            }
            Some("tally.v1.TestClockService") => {
                InboundErrors
                    .layer(self.test_clocks.clone())
                    .oneshot(request)
                    .await
            }
            _ => Ok(tonic::Status::unimplemented(format!("no service for {path}")).into_http()),
        };
        let response = match response {
            Ok(response) => response,
            Err(never) => match never {},
        };
        read_answer(response).await
    }
}

async fn read_answer(response: http::Response<tonic::body::Body>) -> Answer {
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return Answer {
            status,
            messages: Vec::new(),
        };
    }
    let mut data = Vec::new();
    let mut body = std::pin::pin!(response.into_body());
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(status) => {
                return Answer {
                    status,
                    messages: unframe(&data),
                };
            }
        };
        match frame.into_data() {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => {
                let status = frame
                    .into_trailers()
                    .ok()
                    .and_then(|trailers| tonic::Status::from_header_map(&trailers))
                    .unwrap_or_else(|| tonic::Status::unknown("an answer without grpc-status"));
                return Answer {
                    status,
                    messages: unframe(&data),
                };
            }
        }
    }
    Answer {
        status: tonic::Status::unknown("an answer that ended without trailers"),
        messages: unframe(&data),
    }
}

/// The messages of an answer's body (tonic frames what it sends whole).
fn unframe(mut data: &[u8]) -> Vec<Bytes> {
    let mut messages = Vec::new();
    while data.len() >= 5 {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let end = (5 + len).min(data.len());
        messages.push(Bytes::copy_from_slice(&data[5..end]));
        data = &data[end..];
    }
    messages
}

/// A request body of one chunk.
struct OneChunk(Option<Bytes>);

impl http_body::Body for OneChunk {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|data| Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}
