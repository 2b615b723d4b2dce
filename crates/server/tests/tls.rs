//! Issue 15, TLS on the listener: the real server (embedded store) with
//! certificates made here by rcgen. A TLS client gets answers and a
//! plaintext one does not; with mutual TLS only a client certificate from
//! the configured CA gets in; replaced certificate files are served to new
//! connections without a restart, and files that do not load are not; the
//! plaintext health address answers health checks only. Failed handshakes
//! are counted by reason (`tally_tls_handshake_failures_total`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tally_api::v1 as pb;
use tally_api::v1::catalog_service_client::CatalogServiceClient;
use tally_core::SystemClock;
use tally_server::{Config, RunningServer};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A CA made for the test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, in PEM and DER.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn server(&self, name: &str) -> Issued {
        self.issue(name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, name: &str) -> Issued {
        self.issue(name, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Where the server's files are, in a folder of the test's.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file whole, as an operator's `mv` of a finished file does.
    fn write(&self, name: &str, content: &str) {
        let staging = self.path(&format!(".{name}.new"));
        std::fs::write(&staging, content).unwrap();
        std::fs::rename(staging, self.path(name)).unwrap();
    }

    fn serve(&self, cert: &Issued) {
        self.write("server.crt", &cert.cert_pem);
        self.write("server.key", &cert.key_pem);
    }
}

/// A meter provider for the whole test process, installed before any
/// server starts (tallyd takes its instruments from the global one).
fn meter() -> &'static (SdkMeterProvider, InMemoryMetricExporter) {
    static METER: OnceLock<(SdkMeterProvider, InMemoryMetricExporter)> = OnceLock::new();
    METER.get_or_init(|| {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        (provider, exporter)
    })
}

/// Failed handshakes counted so far with `reason`, by every server of
/// this process (tests run side by side: compare before and after).
fn handshake_failures(reason: &str) -> u64 {
    let (provider, exporter) = meter();
    provider.force_flush().expect("metrics flushed");
    let exported = exporter.get_finished_metrics().expect("metrics");
    // Cumulative: the newest export that has the counter holds the totals.
    exported
        .iter()
        .rev()
        .flat_map(|resource| resource.scope_metrics())
        .flat_map(|scope| scope.metrics())
        .find(|metric| metric.name() == "tally.tls.handshake.failures")
        .map(|metric| match metric.data() {
            AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
                .data_points()
                .filter(|point| {
                    point
                        .attributes()
                        .any(|kv| kv.key.as_str() == "tally.reason" && kv.value.as_str() == reason)
                })
                .map(|point| point.value())
                .sum(),
            other => panic!("not a counter: {other:?}"),
        })
        .unwrap_or(0)
}

/// Waits until the failures counted with `reason` pass `before` (the
/// accept loop counts a failure when its handshake task ends).
async fn counted(reason: &str, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while handshake_failures(reason) <= before {
        assert!(
            Instant::now() < deadline,
            "no failed handshake counted as {reason}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(files: &Files, client_ca: Option<&Ca>, health: bool) -> RunningServer {
    meter();
    let mut config = Config::for_tests(files.path("data"));
    config.tls_cert = Some(files.path("server.crt"));
    config.tls_key = Some(files.path("server.key"));
    if let Some(ca) = client_ca {
        files.write("clients.pem", &ca.pem);
        config.tls_client_ca = Some(files.path("clients.pem"));
    }
    if health {
        config.health_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    tally_server::start(config, Arc::new(SystemClock))
        .await
        .expect("server starts")
}

/// A TLS channel to `addr` trusting `ca`, with `identity` as the client
/// certificate.
async fn tls_channel(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    }
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Health's answer (1 is SERVING), or how the call failed.
async fn health(channel: Channel) -> Result<i32, String> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|status| format!("{status:?}"))
}

/// Whether a call over TLS with `identity` succeeds: a refused client
/// certificate fails the connection or, with TLS 1.3, the first call.
async fn gets_answers(addr: SocketAddr, ca: &Ca, identity: Option<&Issued>) -> bool {
    match tls_channel(addr, ca, identity).await {
        Ok(channel) => health(channel).await.is_ok(),
        Err(_) => false,
    }
}

/// Waits for SERVING over TLS.
async fn serving(addr: SocketAddr, ca: &Ca, identity: Option<&Issued>) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = tls_channel(addr, ca, identity).await
            && health(channel.clone()).await == Ok(1)
        {
            return channel;
        }
        assert!(Instant::now() < deadline, "never SERVING over TLS");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The certificate a new connection is served, trusting any of `cas`.
async fn served_certificate(addr: SocketAddr, cas: &[&Ca]) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

#[tokio::test]
async fn tls_clients_get_answers_and_plaintext_ones_do_not() {
    let ca = Ca::new("tally test CA");
    let files = Files::new();
    files.serve(&ca.server("tallyd"));
    let server = start(&files, None, false).await;
    let channel = serving(server.addr, &ca, None).await;

    // A real call over TLS: the published rate card (none yet: NOT_FOUND
    // is an answer from the service, not from the transport).
    let answer = CatalogServiceClient::new(channel.clone())
        .get_rate_card(pb::GetRateCardRequest::default())
        .await;
    match &answer {
        Ok(_) => {}
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
    }

    // Plaintext HTTP/2 to the TLS port gets nothing, and is counted.
    let not_tls = handshake_failures("not_tls");
    let plaintext = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let refused = match plaintext.connect().await {
        Ok(channel) => health(channel).await.err(),
        Err(e) => Some(e.to_string()),
    };
    assert!(refused.is_some(), "a plaintext client got an answer");
    counted("not_tls", not_tls).await;

    // A client that does not trust the server's CA gets nothing either;
    // it ends the handshake itself.
    let other = handshake_failures("other");
    assert!(!gets_answers(server.addr, &Ca::new("another CA"), None).await);
    counted("other", other).await;

    // The failures did not stop the accept loop: TLS clients still get in,
    // on the channel made before and on new ones.
    assert_eq!(health(channel).await, Ok(1));
    assert!(gets_answers(server.addr, &ca, None).await);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_lets_in_only_certificates_from_the_client_ca() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new();
    files.serve(&server_ca.server("tallyd"));
    let server = start(&files, Some(&client_ca), false).await;
    let good = client_ca.client("billing-service");
    serving(server.addr, &server_ca, Some(&good)).await;

    let none = handshake_failures("no_client_certificate");
    assert!(
        !gets_answers(server.addr, &server_ca, None).await,
        "no client certificate got in"
    );
    counted("no_client_certificate", none).await;
    let bad = handshake_failures("bad_client_certificate");
    let stranger = Ca::new("someone else's CA").client("billing-service");
    assert!(
        !gets_answers(server.addr, &server_ca, Some(&stranger)).await,
        "a certificate from another CA got in"
    );
    counted("bad_client_certificate", bad).await;
    // A server certificate from the right CA is not a client certificate.
    let bad = handshake_failures("bad_client_certificate");
    let wrong_purpose = client_ca.server("billing-service");
    assert!(
        !gets_answers(server.addr, &server_ca, Some(&wrong_purpose)).await,
        "a certificate without clientAuth got in"
    );
    counted("bad_client_certificate", bad).await;
    assert!(gets_answers(server.addr, &server_ca, Some(&good)).await);
    server.stop().await.unwrap();
}

/// Waits until new connections are served `expected`.
async fn served_within(addr: SocketAddr, cas: &[&Ca], expected: &Issued, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_certificate(addr, cas).await != expected.der {
        assert!(Instant::now() < deadline, "{what}: never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn replaced_certificate_files_are_served_without_a_restart() {
    let first_ca = Ca::new("first CA");
    let second_ca = Ca::new("second CA");
    let files = Files::new();
    let first = first_ca.server("tallyd-1");
    files.serve(&first);
    let server = start(&files, None, false).await;
    let established = serving(server.addr, &first_ca, None).await;
    let cas = [&first_ca, &second_ca];
    assert_eq!(served_certificate(server.addr, &cas).await, first.der);

    // A rotation to a certificate (and key) from another CA.
    let second = second_ca.server("tallyd-2");
    files.serve(&second);
    served_within(server.addr, &cas, &second, "the second certificate").await;
    // Clients that trust only the new CA get in; the connection made
    // before the rotation goes on.
    assert!(gets_answers(server.addr, &second_ca, None).await);
    assert_eq!(health(established).await, Ok(1));

    // A certificate whose key is not there yet does not load: the second
    // stays in service, connections keep working.
    let third = first_ca.server("tallyd-3");
    files.write("server.crt", &third.cert_pem);
    let held = Instant::now();
    while held.elapsed() < Duration::from_millis(2_500) {
        assert_eq!(
            served_certificate(server.addr, &cas).await,
            second.der,
            "a certificate without its key was served, or the old one dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its key arrives: the third is served.
    files.write("server.key", &third.key_pem);
    served_within(server.addr, &cas, &third, "the third certificate").await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_health_address_answers_health_checks_in_plaintext_only() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new();
    files.serve(&server_ca.server("tallyd"));
    let server = start(&files, Some(&client_ca), true).await;
    let health_addr = server.health_addr.expect("a health address");
    serving(server.addr, &server_ca, Some(&client_ca.client("prober"))).await;

    // No TLS, no client certificate: the kubelet's probe.
    let channel = Channel::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .expect("plaintext to the health address");
    assert_eq!(health(channel.clone()).await, Ok(1));
    // Nothing else is served there.
    let status = CatalogServiceClient::new(channel)
        .get_rate_card(pb::GetRateCardRequest::default())
        .await
        .expect_err("the API on the health address");
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    // Stopping stops it too.
    server.stop().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(health_addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the health address still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_key_without_its_certificate_does_not_start() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca = Ca::new("tally test CA");
    let files = Files::new();
    let one = ca.server("one");
    let other = ca.server("other");
    files.write("server.crt", &one.cert_pem);
    files.write("server.key", &other.key_pem);
    let err = runtime
        .block_on(async {
            let mut config = Config::for_tests(files.path("data"));
            config.tls_cert = Some(files.path("server.crt"));
            config.tls_key = Some(files.path("server.key"));
            tally_server::start(config, Arc::new(SystemClock)).await
        })
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("server.crt") && text.contains("server.key"),
        "{text}"
    );
}
