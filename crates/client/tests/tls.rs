//! The client over TLS to a real tallyd (embedded store) started with a
//! certificate and a client CA made here by rcgen: with the CA and a
//! client certificate it meters; without the certificate, or trusting
//! another CA, it gets nothing through.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tally_client::v1;
use tally_client::{ClientConfig, ClientTls, RetryPolicy, TallyClient};
use tally_core::SystemClock;
use tally_server::Config;

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

    /// A certificate for `localhost` and its key, PEM.
    fn issue(&self, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn config(tls: ClientTls) -> ClientConfig {
    ClientConfig {
        tls: Some(tls),
        deadline: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        retry: RetryPolicy::none(),
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn the_client_meters_over_mutual_tls_and_nothing_gets_through_without_it() {
    let ca = Ca::new("tally test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.path().join("server.crt"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    std::fs::write(dir.path().join("clients.pem"), &ca.pem).unwrap();
    let mut server = Config::for_tests(dir.path().join("data"));
    server.tls_cert = Some(dir.path().join("server.crt"));
    server.tls_key = Some(dir.path().join("server.key"));
    server.tls_client_ca = Some(dir.path().join("clients.pem"));
    let running = tally_server::start(server, Arc::new(SystemClock))
        .await
        .expect("server starts");
    let endpoint = format!("https://localhost:{}", running.addr.port());

    let trusted = TallyClient::connect_with(
        endpoint.clone(),
        config(ClientTls {
            ca_pem: Some(ca.pem.clone()),
            identity: Some(ca.issue(ExtendedKeyUsagePurpose::ClientAuth)),
            domain_name: None,
        }),
    )
    .await
    .expect("client");
    let mut accounts = trusted.accounts();
    let mut opened = None;
    // The store opens in the background: wait for the first answer.
    for _ in 0..100 {
        match accounts
            .open_account(v1::OpenAccountRequest {
                idempotency_key: "open".into(),
                account_id: "acme".into(),
                ..Default::default()
            })
            .await
        {
            Ok(answer) => {
                opened = Some(answer);
                break;
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    assert!(opened.is_some(), "the account opened over TLS");
    accounts
        .grant(v1::GrantRequest {
            idempotency_key: "grant".into(),
            account_id: "acme".into(),
            kind: v1::BucketKind::Monthly.into(),
            amount_millicredits: 10_000,
            ..Default::default()
        })
        .await
        .expect("grant");
    let charged = trusted
        .debit(v1::DebitRequest {
            account_id: "acme".into(),
            member_id: "alice".into(),
            action: "agent.step".into(),
            amount_millicredits: Some(2_500),
            ..Default::default()
        })
        .await
        .expect("debit over mutual TLS");
    assert_eq!(charged.available_millicredits, 7_500);

    // No client certificate, or another CA's view of the server: refused
    // before any call reaches tallyd.
    let other = Ca::new("another CA");
    for (what, tls) in [
        (
            "no client certificate",
            ClientTls {
                ca_pem: Some(ca.pem.clone()),
                ..ClientTls::default()
            },
        ),
        (
            "trusting another CA",
            ClientTls {
                ca_pem: Some(other.pem.clone()),
                identity: Some(other.issue(ExtendedKeyUsagePurpose::ClientAuth)),
                domain_name: None,
            },
        ),
    ] {
        let refused = TallyClient::connect_with(endpoint.clone(), config(tls))
            .await
            .expect("client")
            .debit(v1::DebitRequest {
                account_id: "acme".into(),
                member_id: "alice".into(),
                action: "agent.step".into(),
                amount_millicredits: Some(2_500),
                ..Default::default()
            })
            .await;
        assert!(refused.is_err(), "{what}: {refused:?}");
    }
    let balance = trusted
        .balance(v1::GetBalanceRequest {
            account_id: "acme".into(),
            consistency: Some(v1::ReadConsistency {
                requirement: Some(v1::read_consistency::Requirement::FullyConsistent(true)),
            }),
        })
        .await
        .expect("balance")
        .balance
        .unwrap();
    assert_eq!(
        balance.available_millicredits, 7_500,
        "nothing else charged"
    );
}
