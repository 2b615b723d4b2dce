//! tallyd: Tally's gRPC server. `start` opens the store, builds the engine
//! and serves tally.v1 with health and reflection; `main.rs` adds signals.

mod auth;
pub mod config;
mod convert;
mod drain;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gauges;
mod inbound;
mod maintenance;
mod pacing;
mod reload;
mod service;
mod shared_fold;
mod shed;
mod status;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use tally_api::v1::account_service_server::AccountServiceServer;
use tally_api::v1::catalog_service_server::CatalogServiceServer;
use tally_api::v1::metering_service_server::MeteringServiceServer;
use tally_api::v1::test_clock_service_server::TestClockServiceServer;
use tally_core::{Clock, PlanCatalogue, RateCard};
use tally_engine::{Engine, EngineError};
use tally_projections::{ProjectionError, Projections, RunnerConfig};
use tally_store::postgres::{PostgresOptions, PostgresStore};
use tally_store::sqlite::SqliteStore;
use tally_store::{EventStore, ProjectionStore, StoreError, Traced};
use tally_telemetry::{GrpcTelemetryLayer, Metrics};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

pub use config::{Config, TestClocks};
pub use maintenance::{Verdict, rebuild_projections, verify_projections};
pub use status::{ERROR_DOMAIN, InvalidArgument};
pub use tls::TlsFiles;

use service::{AccountApi, Api, CatalogApi, HoldTtl, MeteringApi, Running, TestClockApi};

/// What tallyd needs of a store: the log, the projections' tables, and
/// cheap handles to share between the engine and the projections.
pub trait Store: EventStore + ProjectionStore + Clone {}

impl<S: EventStore + ProjectionStore + Clone> Store for S {}

/// Why a handler failed: bad input, or whatever the engine said.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid argument")]
    Invalid(InvalidArgument),
    /// The caller's API key may not touch an account the request names.
    #[error(transparent)]
    Denied(#[from] tally_auth::Denied),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// A read asked for a catalog version that was never published.
    #[error("no {document} version {version} has been published")]
    UnknownVersion {
        document: &'static str,
        version: u64,
    },
    /// A stored document could not be rendered back: a bug, not the
    /// caller's fault.
    #[error("{0}")]
    Internal(String),
}

impl From<InvalidArgument> for ServiceError {
    fn from(invalid: InvalidArgument) -> Self {
        ServiceError::Invalid(invalid)
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// After the last in-flight call answers, how long connections get to
/// flush before they are closed.
const FLUSH_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

/// The largest request message a tally.v1 service reads (tonic's default,
/// said here): a larger one is refused by its length alone, before it is
/// buffered, with RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE`.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// The file the embedded store keeps in the data dir.
pub const EMBEDDED_STORE_FILE: &str = "tally.sqlite";

/// Reads a rate card file (TOML).
pub fn load_rate_card(path: &Path) -> anyhow::Result<RateCard> {
    load_document(path, "rate card", RateCard::from_toml_str)
}

/// Reads a plan catalogue file (TOML).
pub fn load_plans(path: &Path) -> anyhow::Result<PlanCatalogue> {
    load_document(path, "plan catalogue", PlanCatalogue::from_toml_str)
}

fn load_document<T>(
    path: &Path,
    what: &str,
    parse: fn(&str) -> Result<T, String>,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

/// The documents given on the command line, published once the store is
/// open.
struct Seeds {
    rate_card: Option<RateCard>,
    plans: Option<PlanCatalogue>,
}

/// Publishes the files' versions when they are newer than the store's. A
/// file older than what was published over gRPC does not win, and a file
/// whose version was published with other content is reported, not
/// forced: the store is the truth every replica shares.
async fn publish_seeds<S: Store>(engine: &Engine<S>, seeds: Seeds) -> anyhow::Result<()> {
    engine.refresh_catalog().await?;
    if let Some(card) = seeds.rate_card {
        let version = card.version;
        let current = engine.catalog().rate_cards.current().version;
        if version < current {
            warn!(
                file = version,
                published = current,
                "the rate card file is older than the published one; keeping the published"
            );
        } else {
            match engine.publish_rate_card(card).await {
                Ok(published) => info!(?published, "rate card"),
                Err(EngineError::Rejected(rejection)) => {
                    warn!(%rejection, version, "the rate card file differs from the published version; publish it as a new version")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let Some(plans) = seeds.plans {
        let version = plans.version;
        let current = engine.catalog().plans().version;
        if version < current {
            warn!(
                file = version,
                published = current,
                "the plan catalogue file is older than the published one; keeping the published"
            );
        } else {
            match engine.publish_plans(plans).await {
                Ok(published) => info!(?published, "plan catalogue"),
                Err(EngineError::Rejected(rejection)) => {
                    warn!(%rejection, version, "the plan catalogue file differs from the published version; publish it as a new version")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Reflection knows tally.v1, health, and google.rpc's error details, so
/// grpcurl can show an error's ErrorInfo and field violations.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tally_api::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// A running server.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The plaintext health-only address, with --health-listen.
    pub health_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    health: HealthReporter,
    /// The services health reports on, "" (the whole server) included.
    health_names: Vec<&'static str>,
    /// Set while draining: lag changes no longer flip health back.
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl RunningServer {
    /// Health says NOT_SERVING from now on, while calls are still served:
    /// the first step of a shutdown, so load balancers and endpoint
    /// controllers stop sending calls before the server stops taking them.
    pub async fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for name in &self.health_names {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
    }

    /// Resolves when the server stops on its own: it could not open its
    /// store, or serving failed.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task panicked")?
    }

    /// Stops taking calls, lets in-flight calls finish, then stops the
    /// engine after it has answered everything it took in.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.await.context("server task panicked")?
    }
}

/// `tallyd health`: asks the server for the health of `service` ("" is
/// the whole server), on its plaintext health listener when it has one
/// (`--health-listen`), else on `--listen` (the loopback address when it
/// listens on all interfaces), which must then be plaintext.
pub async fn check_health(
    config: &Config,
    service: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<i32> {
    let mut addr = match config.health_listen {
        Some(health) => health,
        None if config.tls_cert.is_some() => anyhow::bail!(
            "the server serves TLS: give it a plaintext health listener (--health-listen) for this check"
        ),
        None => config.listen,
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .with_context(|| format!("checking the health of {addr}"))?;
    Ok(response.into_inner().status)
}

/// `tallyd migrate`: brings the PostgreSQL schema to this build's version.
/// Safe to run from several places at once (an advisory lock serialises
/// migrators).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let Some(url) = &config.database_url else {
        anyhow::bail!("migrate needs --database-url (the embedded store migrates itself on open)");
    };
    let store = PostgresStore::connect(url, config.postgres_options())
        .await
        .context("connecting to PostgreSQL")?;
    let report = store.migrate().await.context("migrating")?;
    info!(
        from = report.from_version,
        to = report.to_version,
        applied = report.applied.len(),
        renumbered = ?report.renumbered,
        "schema migrated"
    );
    Ok(())
}

/// How often tallyd retries PostgreSQL while it waits to serve.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Connects to PostgreSQL and waits until the schema is at this build's
/// version: unreachable databases are retried, unmigrated ones waited for.
///
/// What the store calls `Unavailable` is retried: the server down or not
/// yet up, timeouts, a TLS handshake that failed, authentication refused
/// and a database that does not exist (a password rotated on one side
/// first, roles and databases made by a job that runs beside tallyd). What
/// it calls anything else will not change by waiting, and tallyd exits with
/// it: a connection string that does not parse (an `sslmode` it does not
/// know), a CA file that cannot be read, a setting the server refuses.
async fn open_postgres(url: String, options: PostgresOptions) -> anyhow::Result<PostgresStore> {
    loop {
        match PostgresStore::connect(&url, options.clone()).await {
            Ok(store) => loop {
                match store.schema_status().await {
                    Ok(status) if status.is_current() => {
                        info!("PostgreSQL store open; schema current");
                        return Ok(store);
                    }
                    Ok(status) if status.can_serve() => {
                        warn!(
                            %status,
                            "PostgreSQL store open on a newer schema that serves this build \
                             (a rollback after an expand migration): finish rolling back or \
                             forward"
                        );
                        return Ok(store);
                    }
                    Ok(status) => {
                        warn!(%status, "not serving until the schema is current: run `tallyd migrate`")
                    }
                    Err(e) => warn!(error = %e, "cannot read the schema version; retrying"),
                }
                tokio::time::sleep(STORE_RETRY).await;
            },
            Err(StoreError::Unavailable(e)) => {
                warn!(error = %e, "cannot connect to PostgreSQL; retrying")
            }
            Err(
                e @ (StoreError::Internal(_)
                | StoreError::InvalidAppend(_)
                | StoreError::Corrupt(_)
                | StoreError::VersionConflict { .. }
                | StoreError::DuplicateIdempotencyKey { .. }),
            ) => {
                return Err(anyhow::Error::new(e))
                    .context("connecting to PostgreSQL (--database-url); retrying will not help");
            }
        }
        tokio::time::sleep(STORE_RETRY).await;
    }
}

/// Binds, starts serving (health NOT_SERVING), opens the store, then
/// reports SERVING.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<RunningServer> {
    config.validate().map_err(|e| anyhow::anyhow!(e))?;
    let seeds = Seeds {
        rate_card: config
            .rate_card
            .as_deref()
            .map(load_rate_card)
            .transpose()?,
        plans: config.plans.as_deref().map(load_plans).transpose()?,
    };
    let keys = config
        .api_keys
        .as_deref()
        .map(auth::KeyRing::open)
        .transpose()
        .context("loading the API keys (--api-keys)")?;
    let tls = config
        .tls_files()
        .map(tls::ServerTls::open)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))
        .context("loading the TLS certificate (--tls-cert, --tls-key, --tls-client-ca)")?;
    if let Some(warning) = exposure_warning(config.listen, keys.is_some(), tls.is_some()) {
        warn!(listen = %config.listen, "{warning}");
    }
    let listeners = Listeners {
        grpc: TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?,
        health: match config.health_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the health address {addr}"))?,
            ),
            None => None,
        },
        tls,
    };
    // Store calls made for a traced request get spans of their own.
    if let Some(url) = config.database_url.clone() {
        let options = config.postgres_options();
        let open = async move { open_postgres(url, options).await.map(Traced::new) };
        return serve(listeners, &config, keys, clock, seeds, open).await;
    }
    let store_path = config.data_dir.join(EMBEDDED_STORE_FILE);
    let open = async move {
        let store = SqliteStore::open(&store_path)
            .await
            .with_context(|| format!("opening the embedded store {}", store_path.display()))?;
        info!(path = %store_path.display(), "embedded store open");
        Ok(Traced::new(store))
    };
    serve(listeners, &config, keys, clock, seeds, open).await
}

/// What to shout at start when the listener is reachable from other hosts
/// and a caller there could act without a key or be read on the way.
fn exposure_warning(listen: SocketAddr, keys: bool, tls: bool) -> Option<&'static str> {
    if listen.ip().is_loopback() {
        return None;
    }
    match (keys, tls) {
        (true, true) => None,
        (false, false) => Some(
            "SERVING WITHOUT API KEYS OR TLS on a non-loopback address: anyone who can reach it \
             can debit, grant and publish rate cards for every account, and anyone on the path \
             can read every call. Give --api-keys, and --tls-cert with --tls-key.",
        ),
        (false, true) => Some(
            "SERVING WITHOUT API KEYS on a non-loopback address: anyone who can reach it can \
             debit, grant and publish rate cards for every account. Give --api-keys.",
        ),
        (true, false) => Some(
            "SERVING WITHOUT TLS on a non-loopback address: API keys and every call cross the \
             network in the clear, for anyone on the path to read and replay. Give --tls-cert \
             and --tls-key (or terminate TLS in front of tallyd on the same host).",
        ),
    }
}

/// The sockets tallyd serves on.
struct Listeners {
    grpc: TcpListener,
    /// Plaintext, grpc.health.v1 only (--health-listen).
    health: Option<TcpListener>,
    /// TLS on `grpc`, when configured.
    tls: Option<Arc<tls::ServerTls>>,
}

/// Accepted connections, with Nagle's algorithm off: a unary answer is one
/// small write, and held back waiting for the client's delayed ACK it
/// arrives some 40 ms late. (`tonic` sets this only on listeners it binds.)
fn accepted(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Serves tally.v1 on `listener` over the store `open` yields. Until it
/// does, health says NOT_SERVING and calls get UNAVAILABLE.
async fn serve<S: Store>(
    listeners: Listeners,
    config: &Config,
    keys: Option<Arc<auth::KeyRing>>,
    clock: Arc<dyn Clock>,
    seeds: Seeds,
    open: impl Future<Output = anyhow::Result<S>> + Send + 'static,
) -> anyhow::Result<RunningServer> {
    let addr = listeners.grpc.local_addr()?;
    let health_addr = listeners
        .health
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_health::<S>(&reporter, ServingStatus::NotServing).await;
    let health = reporter.clone();
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lag_draining = draining.clone();

    let running_cell: Arc<OnceLock<Running<S>>> = Arc::new(OnceLock::new());
    let api = Api::new(
        running_cell.clone(),
        HoldTtl {
            default: config.default_hold_ttl(),
            max: config.max_hold_ttl(),
        },
    );

    let (shutdown_tx, mut shutdown_rx) = oneshot::channel::<()>();
    // Both listeners stop accepting when this says so (or is dropped).
    let (stop_accepting_tx, stop_accepting_rx) = watch::channel(false);
    let stop_accepting = move || {
        let mut stop = stop_accepting_rx.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };
    let in_flight = Arc::new(drain::InFlight::default());
    let key_watch = keys.as_ref().map(|keys| AbortOnDrop(keys.watch()));
    let tls_watch = listeners.tls.as_ref().map(|tls| AbortOnDrop(tls.watch()));
    let health_server = listeners.health.map(|listener| {
        tonic::transport::Server::builder()
            .add_service(health_service.clone())
            .serve_with_incoming_shutdown(accepted(listener), stop_accepting())
    });
    let authenticate = keys.map(|keys| auth::Authenticate {
        keys,
        open_reflection: config.open_reflection,
        metrics: Metrics::global(),
    });
    let router = tonic::transport::Server::builder()
        .layer(drain::TrackInFlight(in_flight.clone()))
        .layer(GrpcTelemetryLayer::new(Metrics::global()))
        .layer(shed::ShedLoad::new(
            config.max_concurrent_calls,
            Metrics::global(),
        ))
        .layer(tower::util::option_layer(authenticate))
        .layer(inbound::InboundErrors)
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            AccountServiceServer::new(AccountApi(api.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            MeteringServiceServer::new(MeteringApi(api.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            CatalogServiceServer::new(CatalogApi(api.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            TestClockServiceServer::new(TestClockApi(api))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        );
    let tcp = accepted(listeners.grpc);
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match listeners.tls {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                tls::incoming(tcp, tls, Metrics::global()),
                stop_accepting(),
            )),
            None => Box::pin(router.serve_with_incoming_shutdown(tcp, stop_accepting())),
        };

    let grace = std::time::Duration::from_secs(config.shutdown_grace_secs);
    let settings = config.clone();
    let max_lag = config.max_projection_lag();
    let task = tokio::spawn(async move {
        // Key and certificate reloads end with the server, and so does
        // the health listener.
        let _key_watch = key_watch;
        let _tls_watch = tls_watch;
        let _health = health_server.map(|health| {
            AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = health.await {
                    warn!(error = %e, "the health listener stopped");
                }
            }))
        });
        let mut serving = tokio::spawn(server);
        let mut readiness = None;
        let mut gauges = None;
        let engine = tokio::select! {
            store = open => {
                let store = match store {
                    Ok(store) => store,
                    Err(e) => {
                        serving.abort();
                        return Err(e);
                    }
                };
                let engine = Engine::new(store.clone(), clock.clone(), settings.engine_config(store.system_name()));
                if let Err(e) = publish_seeds(&engine, seeds).await {
                    serving.abort();
                    return Err(e);
                }
                engine.start_background();
                let projections = Projections::new(
                    store.clone(),
                    clock,
                    RunnerConfig {
                        commit_interval: settings.projection_commit_interval(),
                        max_backlog: settings.max_projection_backlog,
                        cached_states: settings.max_folded_accounts,
                        ..RunnerConfig::default()
                    },
                );
                projections.start();
                // A new engine shares with nobody yet: this cannot be refused.
                let _ = engine.share_folded_states(Arc::new(shared_fold::SharedFold {
                    projections: projections.clone(),
                }));
                if settings.max_projection_backlog > 0 {
                    let gate = Arc::new(pacing::PacedToProjections {
                        projections: projections.clone(),
                        metrics: Metrics::global(),
                    });
                    // A new engine has no gate yet: this cannot be refused.
                    let _ = engine.gate_appends(gate);
                }
                gauges = Some(gauges::register(projections.clone(), store));
                let _ = running_cell.set(Running {
                    engine: engine.clone(),
                    projections: projections.clone(),
                });
                if !lag_draining.load(std::sync::atomic::Ordering::SeqCst) {
                    set_health::<S>(&reporter, ServingStatus::Serving).await;
                }
                readiness = Some(tokio::spawn(follow_projection_lag::<S>(
                    reporter.clone(),
                    projections.clone(),
                    max_lag,
                    lag_draining,
                )));
                Some((engine, projections))
            }
            _ = &mut shutdown_rx => None,
        };
        let served = match engine {
            Some(_) => tokio::select! {
                served = &mut serving => Some(served.context("serve task panicked")?),
                _ = shutdown_rx => None,
            },
            None => None,
        };
        let served = match served {
            Some(served) => served,
            None => {
                set_health::<S>(&reporter, ServingStatus::NotServing).await;
                let _ = stop_accepting_tx.send(true);
                // In-flight calls finish; idle connections do not hold us.
                if tokio::time::timeout(grace, in_flight.idle()).await.is_err() {
                    tracing::warn!(
                        in_flight = in_flight.count(),
                        "grace period over: cutting calls off"
                    );
                }
                // A moment for the last responses to leave the sockets.
                if tokio::time::timeout(FLUSH_WINDOW, &mut serving)
                    .await
                    .is_err()
                {
                    serving.abort();
                }
                Ok(())
            }
        };
        if let Some(readiness) = readiness {
            readiness.abort();
        }
        drop(gauges);
        if let Some((engine, projections)) = engine {
            engine.shutdown().await;
            projections.shutdown().await;
        }
        served.context("serving gRPC")
    });

    Ok(RunningServer {
        addr,
        health_addr,
        shutdown: Some(shutdown_tx),
        task,
        health,
        health_names: vec![
            <AccountServiceServer<AccountApi<S>> as NamedService>::NAME,
            <MeteringServiceServer<MeteringApi<S>> as NamedService>::NAME,
            "",
        ],
        draining,
    })
}

async fn set_health<S: Store>(reporter: &HealthReporter, status: ServingStatus) {
    reporter
        .set_service_status(
            <AccountServiceServer<AccountApi<S>> as NamedService>::NAME,
            status,
        )
        .await;
    reporter
        .set_service_status(
            <MeteringServiceServer<MeteringApi<S>> as NamedService>::NAME,
            status,
        )
        .await;
    reporter.set_service_status("", status).await;
}

/// Reads come from the projections, so AccountService is only as ready as
/// they are fresh: NOT_SERVING while any lags the log by more than
/// `max_lag`. The log is shared, so lag is the same on every replica;
/// metering (writes) is unaffected and stays SERVING, as does the whole
/// server (service "").
async fn follow_projection_lag<S: Store>(
    reporter: HealthReporter,
    projections: Projections<S>,
    max_lag: std::time::Duration,
    draining: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut fresh = true;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if draining.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let lagging: Vec<String> = projections
            .lag()
            .into_iter()
            .filter(|(_, lag)| lag.age > max_lag)
            .map(|(projection, lag)| format!("{projection} ({:?} behind)", lag.age))
            .collect();
        if lagging.is_empty() != fresh {
            fresh = lagging.is_empty();
            let status = if fresh {
                info!("projections caught up: AccountService serving");
                ServingStatus::Serving
            } else {
                warn!(lagging = ?lagging, "projections lag: AccountService not serving");
                ServingStatus::NotServing
            };
            reporter
                .set_service_status(
                    <AccountServiceServer<AccountApi<S>> as NamedService>::NAME,
                    status,
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database URL that can never work stops the server with the
    /// reason, instead of being retried every second (one that may work
    /// later is retried: see tests/process.rs).
    #[tokio::test]
    async fn a_database_url_that_cannot_work_stops_the_server() {
        let data = tempfile::tempdir().unwrap();
        for (url, why) in [
            (
                "postgres://tally:s3cret@127.0.0.1:1/tally?sslmode=bogus",
                "sslmode",
            ),
            (
                "host=127.0.0.1 port=1 user=tally password=my s3cret words",
                "single quotes",
            ),
            (
                "postgres://tally:s3cret@127.0.0.1:1/tally?sslmode=verify-full",
                "CA file",
            ),
        ] {
            let mut config = Config::for_tests(data.path().to_owned());
            config.database_url = Some(url.to_owned());
            let mut server = start(config, Arc::new(tally_core::SystemClock))
                .await
                .expect("binds");
            let stopped =
                tokio::time::timeout(std::time::Duration::from_secs(10), server.stopped())
                    .await
                    .unwrap_or_else(|_| panic!("{url}: still retrying"));
            let error = format!("{:#}", stopped.expect_err(url));
            assert!(error.contains("retrying will not help"), "{error}");
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        use tokio_stream::StreamExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(accepted(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = incoming.next().await.unwrap().unwrap();
        assert!(stream.nodelay().unwrap(), "TCP_NODELAY is off");
    }

    #[test]
    fn a_reachable_listener_without_keys_or_tls_is_shouted_about() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 50051));
        let everywhere = SocketAddr::from(([0, 0, 0, 0], 50051));
        for (keys, tls) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(exposure_warning(loopback, keys, tls), None);
        }
        assert_eq!(exposure_warning(everywhere, true, true), None);
        let warned = |keys, tls| exposure_warning(everywhere, keys, tls).expect("a warning");
        assert!(warned(false, false).contains("WITHOUT API KEYS OR TLS"));
        assert!(warned(false, true).contains("WITHOUT API KEYS on"));
        assert!(warned(true, false).contains("WITHOUT TLS"));
    }
}
