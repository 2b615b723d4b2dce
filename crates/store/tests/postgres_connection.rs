//! How the store connects: TLS as the URL's `sslmode` says, against a
//! cluster made here with `ssl=on` and a certificate from a CA made here
//! (the shared test server may have no TLS); and the statement timeout on
//! every pooled session, which migrations lift.

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tally_store::StoreError;
use tally_store::postgres::{PostgresHarness, PostgresOptions, PostgresStore, TempCluster};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// A CA and its key.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
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

    /// A server certificate for `names` (host names or IP addresses) and
    /// its key, in PEM.
    fn server(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "postgres");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A cluster with TLS on, its certificate (for 127.0.0.1 only) from `ca`.
fn tls_cluster(ca: &Ca) -> TempCluster {
    let (cert, key) = ca.server(&["127.0.0.1"]);
    TempCluster::start_with(
        &[
            ("server.crt", cert.as_bytes()),
            ("server.key", key.as_bytes()),
        ],
        &[
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
        ],
    )
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Whether the store's session is encrypted, as the server sees it.
async fn encrypted(store: &PostgresStore) -> bool {
    store
        .pooled_client()
        .await
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn connect(url: &str, options: PostgresOptions) -> Result<PostgresStore, StoreError> {
    PostgresStore::connect(url, options).await
}

#[tokio::test]
async fn each_sslmode_encrypts_and_checks_as_libpq_does() {
    let ca = Ca::new("tally test CA");
    let other_ca = Ca::new("someone else's CA");
    let cluster = tls_cluster(&ca);
    let files = tempfile::tempdir().unwrap();
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let other_ca_file = write(files.path(), "other.pem", &other_ca.pem);
    let port = cluster.port();
    let at =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");
    let defaults = PostgresOptions::default;

    // disable: plaintext, although the server offers TLS.
    let store = connect(&at("127.0.0.1", "sslmode=disable"), defaults())
        .await
        .unwrap();
    assert!(!encrypted(&store).await, "sslmode=disable encrypted");

    // prefer (the default) and require: encrypted, any certificate, as a
    // managed database's is to a client without its CA.
    for query in ["", "sslmode=prefer", "sslmode=require"] {
        let store = connect(&at("127.0.0.1", query), defaults()).await.unwrap();
        assert!(encrypted(&store).await, "{query:?} did not encrypt");
    }

    // verify-full: the chain and the name (the certificate is for the IP).
    let full = format!("sslmode=verify-full&sslrootcert={ca_file}");
    let store = connect(&at("127.0.0.1", &full), defaults()).await.unwrap();
    assert!(encrypted(&store).await);
    // The same with the CA from the options (--pg-ca-file).
    let store = connect(
        &at("127.0.0.1", "sslmode=verify-full"),
        PostgresOptions {
            ca_file: Some(ca_file.clone().into()),
            ..defaults()
        },
    )
    .await
    .unwrap();
    assert!(encrypted(&store).await);
    // Another name for the same server: refused by verify-full, accepted
    // by verify-ca, which checks the chain only.
    let refused = connect(&at("localhost", &full), defaults())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("not valid for name"),
        "verify-full to a name the certificate lacks: {refused}"
    );
    let chain_only = format!("sslmode=verify-ca&sslrootcert={ca_file}");
    let store = connect(&at("localhost", &chain_only), defaults())
        .await
        .unwrap();
    assert!(encrypted(&store).await);

    // A certificate from a CA other than the one given: refused by both
    // verifying modes, and by require, which checks the chain when given
    // a CA (as libpq does).
    for mode in ["verify-full", "verify-ca", "require"] {
        let query = format!("sslmode={mode}&sslrootcert={other_ca_file}");
        let refused = connect(&at("127.0.0.1", &query), defaults())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::Unavailable(_))
                && refused.to_string().contains("UnknownIssuer"),
            "{mode} with another CA: {refused}"
        );
    }

    // Verifying needs a CA.
    let refused = connect(&at("127.0.0.1", "sslmode=verify-full"), defaults())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("CA file"), "{refused}");
}

#[tokio::test]
async fn require_refuses_a_server_without_tls() {
    let cluster = TempCluster::start();
    let url = format!("{}?sslmode=require", cluster.url("postgres"));
    let refused = PostgresStore::connect(&url, PostgresOptions::default())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("server does not support TLS"),
        "{refused}"
    );
    // prefer falls back to plaintext there.
    let url = format!("{}?sslmode=prefer", cluster.url("postgres"));
    let store = PostgresStore::connect(&url, PostgresOptions::default())
        .await
        .unwrap();
    assert!(!encrypted(&store).await);
}

#[tokio::test]
async fn the_change_listener_connects_over_tls_too() {
    let ca = Ca::new("tally test CA");
    let cluster = tls_cluster(&ca);
    let files = tempfile::tempdir().unwrap();
    let ca_file = write(files.path(), "ca.pem", &ca.pem);
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={ca_file}&application_name=tls-listener",
        cluster.url("postgres")
    );
    let store = PostgresStore::connect(&url, PostgresOptions::default())
        .await
        .unwrap();
    let _changes = tally_store::EventStore::changes(&store);
    // The listener opens its own connection; the server says whether
    // each of the store's sessions is encrypted.
    let (admin, connection) = tokio_postgres::connect(&cluster.url("postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions: Vec<bool> = admin
            .query(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.application_name = 'tls-listener'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        // The pool's first connection, and the listener's.
        if sessions.len() >= 2 {
            assert!(
                sessions.iter().all(|ssl| *ssl),
                "a plaintext session: {sessions:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the listener never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pooled_sessions_have_the_statement_timeout() {
    let harness = PostgresHarness::new();
    let (_store, location) = harness.create_unmigrated().await;
    let options = PostgresOptions {
        statement_timeout: Some(Duration::from_millis(1500)),
        max_connections: 2,
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect_with_config(location.config.clone(), options)
        .await
        .unwrap();
    // Every session the pool opens, not only the first.
    let first = store.pooled_client().await.unwrap();
    let second = store.pooled_client().await.unwrap();
    for client in [&first, &second] {
        let shown: String = client
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(shown, "1500ms");
    }
    // And it cancels.
    let cancelled = first
        .batch_execute("SELECT pg_sleep(5)")
        .await
        .expect_err("a statement past the timeout is cancelled");
    assert_eq!(cancelled.code(), Some(&SqlState::QUERY_CANCELED));

    // The URL's own `-c statement_timeout` wins over the option.
    let mut with_own = location.config.clone();
    with_own.options("-c statement_timeout=7s");
    let store = PostgresStore::connect_with_config(
        with_own,
        PostgresOptions {
            statement_timeout: Some(Duration::from_millis(1500)),
            ..PostgresOptions::default()
        },
    )
    .await
    .unwrap();
    let shown: String = store
        .pooled_client()
        .await
        .unwrap()
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "7s");
}

/// `tallyd migrate` waits for another migrator's lock for as long as it
/// takes: the statement timeout is for the service's queries.
#[tokio::test]
async fn migrations_wait_past_the_statement_timeout() {
    let harness = PostgresHarness::new();
    let (_, location) = harness.create_unmigrated().await;
    let timeout = Duration::from_millis(200);
    let store = PostgresStore::connect_with_config(
        location.config.clone(),
        PostgresOptions {
            statement_timeout: Some(timeout),
            ..PostgresOptions::default()
        },
    )
    .await
    .unwrap();
    // Another migrator holds the lock ("tally" in ASCII).
    let (other, connection) = location.config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    other
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(499850701945)")
        .await
        .unwrap();
    let migrating = tokio::spawn({
        let store = store.clone();
        async move { store.migrate().await }
    });
    // Seen waiting on the lock, then still waiting well past the timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = other
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'tallyd'
                   AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the migration never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited_from = Instant::now();
    while waited_from.elapsed() < timeout * 3 {
        assert!(
            !migrating.is_finished(),
            "the migration ended while the lock was held: {:?}",
            migrating.await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.batch_execute("COMMIT").await.unwrap();
    let report = migrating.await.unwrap().expect("the migration succeeds");
    assert!(!report.applied.is_empty());
}
