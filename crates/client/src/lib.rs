//! A typed Rust client for Tally.
//!
//! [`TallyClient`] wraps the generated tonic stubs of `tally.v1` with what
//! every product needs around them:
//!
//! - **Deadlines** on every call (5 s by default, [`ClientConfig::deadline`]).
//! - **Retries** with exponential backoff ([`RetryPolicy`]) on
//!   `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED` (waiting what
//!   the server's `google.rpc.RetryInfo` asks, when it sends one) and
//!   `ABORTED`. Every attempt resends the same request with the same
//!   idempotency key, so a retry after a lost answer gets the first answer
//!   back and never charges twice. A request with an empty key gets a
//!   fresh one ([`new_key`]) before its first attempt.
//! - **An API key**, sent as `authorization: Bearer <key>` on every call.
//! - **The metering pattern in one call**, [`TallyClient::metered`]:
//!   reserve the estimate, run the task, commit what it cost; release the
//!   hold when the task fails or its future is dropped; extend the hold
//!   while the task runs past half its TTL.
//! - **A policy for an unreachable Tally** ([`Unreachable`]): fail closed,
//!   or fail open up to a local allowance per account, recording the
//!   usage locally and reporting it once Tally is back.
//! - **A quote cache** for UI estimates ([`TallyClient::price`]).
//!
//! ```no_run
//! use tally_client::{Cost, Estimate, Settlement, TallyClient};
//!
//! # async fn run() -> Result<(), tally_client::ClientError> {
//! let tally = TallyClient::connect("http://127.0.0.1:50051").await?;
//! let settled = tally
//!     .metered("acme", "alice", "article.draft", Estimate::Amount(8_000), |_hold| async {
//!         // ... draft the article ...
//!         Ok::<_, std::io::Error>(Cost::Amount(6_500))
//!     })
//!     .await?;
//! if let Settlement::Charged(receipt) = settled {
//!     println!("charged {} mc", receipt.charged_millicredits);
//! }
//! # Ok(()) }
//! ```

mod error;
mod journal;
mod keys;
mod metered;
mod offline;
mod quote;
mod retry;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;
use tally_api::v1::catalog_service_client::CatalogServiceClient;
use tally_api::v1::metering_service_client::MeteringServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Response, Status};

pub use error::ClientError;
pub use keys::{ActionKeys, new_key};
pub use metered::{Action, Cost, Estimate, Hold, Settlement};
pub use offline::{FlushReport, RefusedRecord, Unreachable};
pub use quote::Price;
pub use retry::RetryPolicy;
/// The generated messages of `tally.v1`, for requests and answers.
pub use tally_api::v1;

/// How a [`TallyClient`] behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Sent as `authorization: Bearer <key>` on every call, for a server
    /// started with `--api-keys`.
    pub api_key: Option<String>,
    /// How long one attempt of a call may take.
    pub deadline: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How failed calls are retried.
    pub retry: RetryPolicy,
    /// What [`TallyClient::metered`] does when Tally cannot be reached.
    pub unreachable: Unreachable,
    /// The TTL of the holds [`TallyClient::metered`] takes; the hold is
    /// extended by this much each time the task passes half of it.
    pub hold_ttl: Duration,
    /// How long a cached quote's rate card version is trusted without
    /// asking Tally (see [`TallyClient::price`]).
    pub quote_max_age: Duration,
    /// A file that keeps the usage [`Unreachable::FailOpen`] records until
    /// Tally has it, so it survives the process: each record is fsynced
    /// before the action's result returns, and a client that opens the
    /// journal reports what it holds (every record under its own key, so
    /// none is charged twice). One client (process) per file. `None`: in
    /// memory only.
    pub offline_journal: Option<PathBuf>,
    /// TLS to a tallyd started with `--tls-cert` (use an `https://`
    /// endpoint). `None`: plaintext.
    pub tls: Option<ClientTls>,
}

/// How the client checks tallyd's certificate, and proves its own.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// CA certificates (PEM) tallyd's certificate must chain to; `None`:
    /// the system's roots.
    pub ca_pem: Option<String>,
    /// For a tallyd with `--tls-client-ca` (mutual TLS): this client's
    /// certificate chain and its private key, both PEM.
    pub identity: Option<(String, String)>,
    /// The name tallyd's certificate must carry; default: the endpoint's
    /// host.
    pub domain_name: Option<String>,
}

impl ClientTls {
    fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name);
        }
        config
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            api_key: None,
            deadline: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            unreachable: Unreachable::FailClosed,
            hold_ttl: Duration::from_secs(300),
            quote_max_age: Duration::from_secs(60),
            offline_journal: None,
            tls: None,
        }
    }
}

/// Adds the API key to every call.
#[derive(Clone)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// The transport under the generated clients.
pub type Transport = InterceptedService<Channel, BearerAuth>;

/// A client of one Tally deployment. Cloning is cheap and clones share
/// the connection, the local usage of [`Unreachable::FailOpen`] and the
/// quote cache.
#[derive(Clone)]
pub struct TallyClient {
    inner: Arc<Inner>,
}

struct Inner {
    metering: MeteringServiceClient<Transport>,
    accounts: AccountServiceClient<Transport>,
    catalog: CatalogServiceClient<Transport>,
    config: ClientConfig,
    offline: offline::Offline,
    quotes: quote::QuoteCache,
}

impl TallyClient {
    /// A client of the Tally at `endpoint` (e.g. `http://127.0.0.1:50051`,
    /// plaintext) with the default [`ClientConfig`].
    ///
    /// The connection is opened on the first call, and again after it
    /// breaks, so a client can be made while Tally is down.
    pub async fn connect(endpoint: impl Into<String>) -> Result<TallyClient, ClientError> {
        TallyClient::connect_with(endpoint, ClientConfig::default()).await
    }

    /// A client with the given configuration.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tally_client::{ClientConfig, TallyClient, Unreachable};
    ///
    /// # async fn run() -> Result<(), tally_client::ClientError> {
    /// let tally = TallyClient::connect_with(
    ///     "http://tally.internal:50051",
    ///     ClientConfig {
    ///         api_key: Some(std::env::var("TALLY_API_KEY").unwrap()),
    ///         deadline: Duration::from_secs(2),
    ///         unreachable: Unreachable::FailOpen { allowance_millicredits: 50_000 },
    ///         ..ClientConfig::default()
    ///     },
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        endpoint: impl Into<String>,
        config: ClientConfig,
    ) -> Result<TallyClient, ClientError> {
        let endpoint = endpoint.into();
        let mut channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| ClientError::InvalidEndpoint(format!("{endpoint}: {e}")))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &config.tls {
            channel = channel
                .tls_config(tls.config())
                .map_err(|e| ClientError::InvalidEndpoint(format!("{endpoint}: TLS: {e}")))?;
        }
        let channel = channel.connect_lazy();
        let header = config
            .api_key
            .as_ref()
            .map(|key| {
                format!("Bearer {key}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ClientError::InvalidApiKey)
            })
            .transpose()?;
        let auth = BearerAuth { header };
        let offline = match &config.offline_journal {
            Some(path) => offline::Offline::with_journal(path)
                .map_err(|e| ClientError::Journal(format!("{}: {e}", path.display())))?,
            None => offline::Offline::default(),
        };
        let client = TallyClient {
            inner: Arc::new(Inner {
                metering: MeteringServiceClient::with_interceptor(channel.clone(), auth.clone()),
                accounts: AccountServiceClient::with_interceptor(channel.clone(), auth.clone()),
                catalog: CatalogServiceClient::with_interceptor(channel, auth),
                offline,
                quotes: quote::QuoteCache::default(),
                config,
            }),
        };
        // What an earlier process recorded goes to Tally as soon as it can.
        client.flush_in_background();
        Ok(client)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The generated MeteringService client (API key included; no
    /// deadlines or retries), for what this crate does not wrap.
    pub fn metering(&self) -> MeteringServiceClient<Transport> {
        self.inner.metering.clone()
    }

    /// The generated AccountService client (API key included).
    pub fn accounts(&self) -> AccountServiceClient<Transport> {
        self.inner.accounts.clone()
    }

    /// The generated CatalogService client (API key included).
    pub fn catalog(&self) -> CatalogServiceClient<Transport> {
        self.inner.catalog.clone()
    }

    /// One call with the configured deadline and retries: every attempt
    /// sends a clone of `request`.
    async fn call<C, Req, Resp, F, Fut>(
        &self,
        client: &C,
        request: Req,
        send: F,
    ) -> Result<Resp, ClientError>
    where
        C: Clone,
        Req: Clone,
        F: Fn(C, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let config = &self.inner.config;
        retry::with_retries(&config.retry, config.deadline, |deadline| {
            let mut request = Request::new(request.clone());
            request.set_timeout(deadline);
            send(client.clone(), request)
        })
        .await
        .map(Response::into_inner)
    }

    /// Holds an estimate (Reserve). An empty idempotency key is filled in.
    pub async fn reserve(
        &self,
        mut request: pb::ReserveRequest,
    ) -> Result<pb::ReserveResponse, ClientError> {
        fill_key(&mut request.idempotency_key);
        let answer = self
            .call(&self.inner.metering, request, |mut c, r| async move {
                c.reserve(r).await
            })
            .await?;
        if let Some(reservation) = &answer.reservation {
            self.inner
                .quotes
                .observe_version(reservation.rate_card_version);
        }
        Ok(answer)
    }

    /// Settles a hold (Commit). An empty idempotency key is filled in.
    pub async fn commit(
        &self,
        mut request: pb::CommitRequest,
    ) -> Result<pb::CommitResponse, ClientError> {
        fill_key(&mut request.idempotency_key);
        let answer = self
            .call(&self.inner.metering, request, |mut c, r| async move {
                c.commit(r).await
            })
            .await?;
        if let Some(receipt) = &answer.receipt {
            self.inner.quotes.observe_version(receipt.rate_card_version);
        }
        Ok(answer)
    }

    /// Cancels a hold (Release). An empty idempotency key is filled in.
    pub async fn release(
        &self,
        mut request: pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, ClientError> {
        fill_key(&mut request.idempotency_key);
        self.call(&self.inner.metering, request, |mut c, r| async move {
            c.release(r).await
        })
        .await
    }

    /// Pushes a hold's expiry back (Extend). An empty idempotency key is
    /// filled in.
    pub async fn extend(
        &self,
        mut request: pb::ExtendRequest,
    ) -> Result<pb::ExtendResponse, ClientError> {
        fill_key(&mut request.idempotency_key);
        self.call(&self.inner.metering, request, |mut c, r| async move {
            c.extend(r).await
        })
        .await
    }

    /// Charges an instant action (Debit). An empty idempotency key is
    /// filled in.
    pub async fn debit(
        &self,
        mut request: pb::DebitRequest,
    ) -> Result<pb::DebitResponse, ClientError> {
        fill_key(&mut request.idempotency_key);
        let answer = self
            .call(&self.inner.metering, request, |mut c, r| async move {
                c.debit(r).await
            })
            .await?;
        if let Some(receipt) = &answer.receipt {
            self.inner.quotes.observe_version(receipt.rate_card_version);
        }
        Ok(answer)
    }

    /// Charges many actions (ReportUsage). Records with an empty key get
    /// one. Each record is idempotent on its own key, so the retries of
    /// the whole call charge each record once.
    pub async fn report_usage(
        &self,
        mut request: pb::ReportUsageRequest,
    ) -> Result<pb::ReportUsageResponse, ClientError> {
        for record in &mut request.records {
            fill_key(&mut record.idempotency_key);
        }
        self.call(&self.inner.metering, request, |mut c, r| async move {
            c.report_usage(r).await
        })
        .await
    }

    /// Prices actions (Quote), uncached. See [`TallyClient::price`] for
    /// the cached price of one action.
    pub async fn quote(&self, request: pb::QuoteRequest) -> Result<pb::QuoteResponse, ClientError> {
        let answer = self
            .call(&self.inner.metering, request, |mut c, r| async move {
                c.quote(r).await
            })
            .await?;
        self.inner.quotes.observe_version(answer.rate_card_version);
        Ok(answer)
    }

    /// The account's balance (GetBalance).
    pub async fn balance(
        &self,
        request: pb::GetBalanceRequest,
    ) -> Result<pb::GetBalanceResponse, ClientError> {
        self.call(&self.inner.accounts, request, |mut c, r| async move {
            c.get_balance(r).await
        })
        .await
    }
}

fn fill_key(key: &mut String) {
    if key.is_empty() {
        *key = new_key();
    }
}
