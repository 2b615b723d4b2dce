//! Issue 15, TLS to PostgreSQL from the tallyd process: `tallyd migrate`
//! and `tallyd serve` reach a cluster that has TLS on (made here, its
//! certificate from a CA made here) with `sslmode=verify-full` and the CA
//! from `--pg-ca-file`, and are refused with another CA.

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use support::{Tallyd, open_funded_account, run_tallyd};
use tally_api::v1 as pb;
use tally_store::postgres::TempCluster;

/// A CA named `ca_name` and a server certificate for 127.0.0.1 it issued: (CA PEM, cert
/// PEM, key PEM).
fn ca_and_server(ca_name: &str) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tallyd_migrates_and_serves_over_verified_tls() {
    let (ca, cert, key) = ca_and_server("db CA");
    let (other_ca, _, _) = ca_and_server("someone else's CA");
    // Over TCP only TLS gets in, so a tallyd that did not encrypt could
    // not connect at all.
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n";
    let cluster = TempCluster::start_with(
        &[
            ("server.crt", cert.as_bytes()),
            ("server.key", key.as_bytes()),
            ("pg_hba.conf", hba.as_bytes()),
        ],
        &[
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
        ],
    );
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("db-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let other_ca_file = files.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, &other_ca).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let url = format!("{}?sslmode=verify-full", cluster.url("postgres"));

    // Refused: plaintext, and a certificate from a CA other than the one
    // given.
    let plaintext = format!("{}?sslmode=disable", cluster.url("postgres"));
    let refused = run_tallyd(&["migrate", "--database-url", &plaintext]);
    assert!(!refused.status.success(), "migrated in plaintext");
    let refused = run_tallyd(&[
        "migrate",
        "--database-url",
        &url,
        "--pg-ca-file",
        other_ca_file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "migrated trusting another CA");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");

    let migrated = run_tallyd(&["migrate", "--database-url", &url, "--pg-ca-file", ca_file]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let tallyd = Tallyd::spawn(&["--database-url", &url, "--pg-ca-file", ca_file]);
    let channel = tallyd.connect().await;
    open_funded_account(channel, "tls", pb::BucketKind::TopUp, 1_000).await;
}
