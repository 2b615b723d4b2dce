//! Starts the real tallyd in-process on 127.0.0.1:0 over a real embedded
//! store in a temporary folder, with a clock the test moves, and hands out
//! gRPC clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tally_api::v1 as pb;
pub use tally_api::v1::account_service_client::AccountServiceClient;
pub use tally_api::v1::catalog_service_client::CatalogServiceClient;
pub use tally_api::v1::metering_service_client::MeteringServiceClient;
pub use tally_api::v1::test_clock_service_client::TestClockServiceClient;
use tally_core::{ManualClock, Timestamp};
use tally_server::{Config, RunningServer};
use tally_store::conformance::Harness;
use tally_store::postgres::{PostgresHarness, PostgresLocation};
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub use pb::*;

/// 2026-01-15T00:00:00Z: tests start on a fixed day.
pub const START: Timestamp = Timestamp::from_millis(1_768_435_200_000);

/// The rate card the tests run with.
pub const RATE_CARD: &str = r#"
version = 3

[actions."article.draft"]
price_millicredits = 2000

[actions."topic.research"]
price_millicredits = 0

[actions."x.engage"]
price_millicredits = 1000
models = { "premium" = 2000 }
"#;

/// Which store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file in the data dir.
    Embedded,
    /// A fresh database of its own on the test PostgreSQL server
    /// (`TALLY_TEST_DATABASE_URL`), dropped with the server.
    Postgres,
}

pub const BOTH_BACKENDS: [Backend; 2] = [Backend::Embedded, Backend::Postgres];

/// What a test server starts with.
#[derive(Clone, Debug)]
pub struct Options {
    pub backend: Backend,
    /// Rate card TOML, written to the data dir and given as --rate-card.
    pub rate_card: String,
    /// Plan catalogue TOML, given as --plans.
    pub plans: Option<String>,
    /// Where the clock starts.
    pub start: Timestamp,
    /// API key file (TOML), written to the data dir as `api-keys.toml` and
    /// given as --api-keys; rewrite that file to rotate keys.
    pub api_keys: Option<String>,
    /// Start with `--test-clocks refuse`, as production does.
    pub refuse_test_clocks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Embedded,
            rate_card: RATE_CARD.into(),
            plans: None,
            start: START,
            api_keys: None,
            refuse_test_clocks: false,
        }
    }
}

pub struct TestServer {
    data: TempDir,
    clock: Arc<ManualClock>,
    running: Option<RunningServer>,
    database_url: Option<String>,
    refuse_test_clocks: bool,
    // Declared last: the database is dropped after the server stops.
    _database: Option<PostgresLocation>,
    pub addr: std::net::SocketAddr,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let data = TempDir::new().expect("temp dir");
        std::fs::write(data.path().join("rate-card.toml"), &options.rate_card).expect("rate card");
        if let Some(plans) = &options.plans {
            std::fs::write(data.path().join("plans.toml"), plans).expect("plans");
        }
        if let Some(keys) = &options.api_keys {
            std::fs::write(data.path().join(API_KEYS_FILE), keys).expect("api keys");
        }
        let (database_url, database) = match options.backend {
            Backend::Embedded => (None, None),
            Backend::Postgres => {
                let (store, location) = PostgresHarness::new().create().await;
                drop(store);
                (Some(database_url(&location.name)), Some(location))
            }
        };
        let clock = Arc::new(ManualClock::new(options.start));
        let running = launch(
            data.path(),
            database_url.clone(),
            clock.clone(),
            options.refuse_test_clocks,
        )
        .await;
        TestServer {
            addr: running.addr,
            data,
            clock,
            running: Some(running),
            database_url,
            refuse_test_clocks: options.refuse_test_clocks,
            _database: database,
        }
    }

    /// Stops the server gracefully and starts a new one on the same data
    /// (a new port: clients must reconnect).
    pub async fn restart(&mut self) {
        self.stop().await;
        let running = launch(
            self.data.path(),
            self.database_url.clone(),
            self.clock.clone(),
            self.refuse_test_clocks,
        )
        .await;
        self.addr = running.addr;
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("server stops cleanly");
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance_millis(by.as_millis() as i64);
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connects")
    }

    pub async fn accounts(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.channel().await)
    }

    pub async fn metering(&self) -> MeteringServiceClient<Channel> {
        MeteringServiceClient::new(self.channel().await)
    }

    pub async fn test_clocks(&self) -> TestClockServiceClient<Channel> {
        TestClockServiceClient::new(self.channel().await)
    }

    pub async fn catalog(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.channel().await)
    }
}

/// The key file's name in the data dir (see [`Options::api_keys`]).
pub const API_KEYS_FILE: &str = "api-keys.toml";

/// The test server's URL with another database name.
fn database_url(name: &str) -> String {
    let admin = PostgresHarness::admin_url();
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin.as_str(), String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _db)| server);
    format!("{server}/{name}{query}")
}

async fn launch(
    data_dir: &Path,
    database_url: Option<String>,
    clock: Arc<ManualClock>,
    refuse_test_clocks: bool,
) -> RunningServer {
    let mut config = Config::for_tests(PathBuf::from(data_dir));
    if refuse_test_clocks {
        config.test_clocks = tally_server::TestClocks::Refuse;
    }
    config.rate_card = Some(data_dir.join("rate-card.toml"));
    let plans = data_dir.join("plans.toml");
    config.plans = plans.exists().then_some(plans);
    config.database_url = database_url;
    let keys = data_dir.join(API_KEYS_FILE);
    config.api_keys = keys.exists().then_some(keys);
    let running = tally_server::start(config, clock)
        .await
        .expect("server starts");
    wait_until_serving(running.addr).await;
    running
}

/// Health turns SERVING once the store is open.
async fn wait_until_serving(addr: std::net::SocketAddr) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..200 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.is_ok_and(|s| {
            s == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server never reported SERVING");
}

/// The `ErrorInfo.reason` of a status.
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// The `ErrorInfo.metadata` value under `key`.
pub fn metadata(status: &tonic::Status, key: &str) -> Option<String> {
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get(key).cloned())
}

/// The fields named by a status's `BadRequest` violations.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

pub fn seconds(s: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: s,
        nanos: 0,
    }
}

/// Convenience builders for the requests tests send most.
pub async fn open(accounts: &mut AccountServiceClient<Channel>, account: &str) {
    accounts
        .open_account(OpenAccountRequest {
            idempotency_key: format!("open-{account}"),
            account_id: account.into(),
            ..Default::default()
        })
        .await
        .expect("account opens");
}

pub async fn grant(
    accounts: &mut AccountServiceClient<Channel>,
    account: &str,
    key: &str,
    kind: BucketKind,
    amount: i64,
) -> GrantResponse {
    accounts
        .grant(GrantRequest {
            idempotency_key: key.into(),
            account_id: account.into(),
            kind: kind.into(),
            amount_millicredits: amount,
            ..Default::default()
        })
        .await
        .expect("grant succeeds")
        .into_inner()
}

/// Reads see every write acknowledged before them (the tests check
/// what their writes did).
pub fn fully_consistent() -> Option<tally_api::v1::ReadConsistency> {
    Some(tally_api::v1::ReadConsistency {
        requirement: Some(tally_api::v1::read_consistency::Requirement::FullyConsistent(true)),
    })
}

pub async fn balance(accounts: &mut AccountServiceClient<Channel>, account: &str) -> Balance {
    accounts
        .get_balance(GetBalanceRequest {
            account_id: account.into(),
            consistency: fully_consistent(),
        })
        .await
        .expect("balance")
        .into_inner()
        .balance
        .expect("balance is set")
}

pub async fn ledger(
    accounts: &mut AccountServiceClient<Channel>,
    account: &str,
) -> Vec<LedgerEntry> {
    accounts
        .list_ledger(ListLedgerRequest {
            account_id: account.into(),
            page_size: 1000,
            consistency: fully_consistent(),
            ..Default::default()
        })
        .await
        .expect("ledger")
        .into_inner()
        .entries
}

pub fn reserve_request(account: &str, key: &str, amount: i64) -> ReserveRequest {
    ReserveRequest {
        idempotency_key: key.into(),
        account_id: account.into(),
        member_id: "alice".into(),
        action: "article.draft".into(),
        amount_millicredits: Some(amount),
        ..Default::default()
    }
}

/// gRPC's 5-byte frame around a message: not compressed, then its length.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("fits").to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Sends `body` as the request body of the gRPC call `path`
/// (`/tally.v1.MeteringService/Debit`) exactly as given, framing
/// included, and returns the status the server answered: from the headers
/// of a trailers-only answer, else from the trailers after any messages.
pub async fn raw_call(channel: Channel, path: &str, body: Vec<u8>) -> tonic::Status {
    raw_exchange(channel, path, body).await.1
}

/// [`raw_call`], with the messages of the answer (each without its frame).
pub async fn raw_exchange(
    channel: Channel,
    path: &str,
    body: Vec<u8>,
) -> (Vec<Vec<u8>>, tonic::Status) {
    use http_body::Body as _;
    use tower::ServiceExt as _;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://tally{path}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(OneChunk(Some(body.into()))))
        .expect("request");
    let response = channel.oneshot(request).await.expect("an HTTP answer");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return (Vec::new(), status);
    }
    let mut data = Vec::new();
    let mut body = std::pin::pin!(response.into_body());
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.expect("the answer's body");
        match frame.into_data() {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => {
                let trailers = frame.into_trailers().expect("data or trailers");
                let status =
                    tonic::Status::from_header_map(&trailers).expect("grpc-status in the trailers");
                return (unframe(&data), status);
            }
        }
    }
    panic!("the answer has no grpc-status");
}

/// The messages of a gRPC body, without their frames.
fn unframe(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while data.len() >= 5 {
        let len = u32::from_be_bytes(data[1..5].try_into().expect("4 bytes")) as usize;
        messages.push(data[5..5 + len].to_vec());
        data = &data[5 + len..];
    }
    messages
}

/// A request body of one chunk.
struct OneChunk(Option<tonic::codegen::Bytes>);

impl http_body::Body for OneChunk {
    type Data = tonic::codegen::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|data| Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// How many bytes a status takes on the wire: its `grpc-message` and
/// `grpc-status-details-bin` values, encoded as tonic sends them.
pub fn wire_size(status: &tonic::Status) -> usize {
    let mut headers = http::HeaderMap::new();
    status
        .add_header(&mut headers)
        .expect("a status that encodes");
    ["grpc-message", "grpc-status-details-bin"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .map(|value| value.len())
        .sum()
}

/// Every method of the tally.v1 API, as its path
/// (`/tally.v1.MeteringService/Debit`).
pub fn api_methods() -> Vec<String> {
    use prost::Message as _;
    let set =
        prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    format!("/{}.{}/{}", file.package(), service.name(), method.name())
                })
            })
        })
        .collect()
}
