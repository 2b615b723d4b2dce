//! API keys over gRPC: without a key, with a bad one, with the wrong scope
//! or for another tenant's account a call is refused (UNAUTHENTICATED or
//! PERMISSION_DENIED, with its reason) and writes nothing; a key removed
//! from the key file stops working without a restart, and a new one
//! starts working.

use std::time::Duration;

use tally_e2e::*;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Sends `authorization` with every call.
#[derive(Clone)]
struct Authorization(Option<AsciiMetadataValue>);

impl Interceptor for Authorization {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn header(value: &str) -> Authorization {
    Authorization(Some(MetadataValue::try_from(value).expect("ascii")))
}

fn bearer(secret: &str) -> Authorization {
    header(&format!("Bearer {secret}"))
}

type Metering = MeteringServiceClient<InterceptedService<Channel, Authorization>>;
type Accounts = AccountServiceClient<InterceptedService<Channel, Authorization>>;

struct Key {
    secret: String,
    entry: String,
}

fn key(id: &str, scopes: &[&str], accounts: &[&str]) -> Key {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (secret, entry) =
        tally_auth::new_key_entry(id, &owned(scopes), &owned(accounts)).expect("key entry");
    Key { secret, entry }
}

fn debit(account: &str, key: &str) -> DebitRequest {
    DebitRequest {
        idempotency_key: key.into(),
        account_id: account.into(),
        member_id: "ann".into(),
        action: "article.draft".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn only_keys_with_the_scope_and_the_account_get_in() {
    let admin = key("ops", &["admin", "read"], &[]);
    let acme_meter = key("acme-app", &["meter"], &["acme"]);
    let tenant_reader = key("t1-dashboard", &["read"], &["t1/*"]);
    let server = TestServer::start_with(Options {
        api_keys: Some(format!(
            "{}{}{}",
            admin.entry, acme_meter.entry, tenant_reader.entry
        )),
        ..Default::default()
    })
    .await;
    let channel = server.channel().await;
    let metering = |auth: Authorization| -> Metering {
        MeteringServiceClient::with_interceptor(channel.clone(), auth)
    };
    let accounts = |auth: Authorization| -> Accounts {
        AccountServiceClient::with_interceptor(channel.clone(), auth)
    };

    // Health stays open: orchestrators probe without keys.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no key");

    // The admin sets up two tenants' accounts.
    let mut ops = accounts(bearer(&admin.secret));
    for account in ["acme", "other", "t1/ws"] {
        ops.open_account(OpenAccountRequest {
            idempotency_key: format!("open-{account}"),
            account_id: account.into(),
            ..Default::default()
        })
        .await
        .expect("admin opens");
        ops.grant(GrantRequest {
            idempotency_key: format!("grant-{account}"),
            account_id: account.into(),
            kind: BucketKind::TopUp.into(),
            amount_millicredits: 10_000,
            ..Default::default()
        })
        .await
        .expect("admin grants");
    }
    let available = |balance: GetBalanceResponse| balance.balance.unwrap().available_millicredits;
    let balance_of = |account: &str| GetBalanceRequest {
        account_id: account.into(),
        consistency: fully_consistent(),
    };

    // No key, a malformed header, an unknown key: UNAUTHENTICATED.
    for (auth, expected) in [
        (Authorization(None), "API_KEY_MISSING"),
        (
            header(&format!("Basic {}", acme_meter.secret)),
            "API_KEY_MALFORMED",
        ),
        (bearer("tly_not-a-key"), "API_KEY_INVALID"),
    ] {
        let refused = metering(auth).debit(debit("acme", "d")).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        assert_eq!(reason(&refused), expected);
        assert!(
            !refused.message().contains(&acme_meter.secret),
            "no secret echoed"
        );
    }

    // The meter key charges its own account, and nothing else.
    let mut app = metering(bearer(&acme_meter.secret));
    app.debit(debit("acme", "d1"))
        .await
        .expect("its own account");
    let foreign = app.debit(debit("other", "d2")).await.unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&foreign), "ACCOUNT_NOT_ALLOWED");
    assert_eq!(metadata(&foreign, "key_id").as_deref(), Some("acme-app"));
    let scope = AccountServiceClient::with_interceptor(channel.clone(), bearer(&acme_meter.secret))
        .grant(GrantRequest {
            idempotency_key: "steal".into(),
            account_id: "acme".into(),
            kind: BucketKind::TopUp.into(),
            amount_millicredits: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(scope.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&scope), "SCOPE_MISSING");
    // In a batch, only the foreign record is refused.
    let report = app
        .report_usage(ReportUsageRequest {
            records: vec![
                UsageRecord {
                    idempotency_key: "u1".into(),
                    account_id: "acme".into(),
                    member_id: "ann".into(),
                    action: "article.draft".into(),
                    ..Default::default()
                },
                UsageRecord {
                    idempotency_key: "u2".into(),
                    account_id: "other".into(),
                    member_id: "ann".into(),
                    action: "article.draft".into(),
                    ..Default::default()
                },
            ],
        })
        .await
        .expect("report")
        .into_inner();
    let outcomes: Vec<String> = report
        .results
        .iter()
        .map(|r| match &r.outcome {
            Some(usage_record_result::Outcome::Charged(_)) => "charged".to_owned(),
            Some(usage_record_result::Outcome::Refused(e)) => e.reason.clone(),
            None => "none".to_owned(),
        })
        .collect();
    assert_eq!(outcomes, vec!["charged", "ACCOUNT_NOT_ALLOWED"]);
    // Nothing the refusals asked for was written.
    assert_eq!(
        available(
            ops.get_balance(balance_of("acme"))
                .await
                .unwrap()
                .into_inner()
        ),
        6_000
    );
    assert_eq!(
        available(
            ops.get_balance(balance_of("other"))
                .await
                .unwrap()
                .into_inner()
        ),
        10_000
    );

    // A reader limited to a tenant's prefix reads its accounts only.
    let mut dashboard = accounts(bearer(&tenant_reader.secret));
    assert_eq!(
        available(
            dashboard
                .get_balance(balance_of("t1/ws"))
                .await
                .expect("its tenant")
                .into_inner()
        ),
        10_000
    );
    let outside = dashboard.get_balance(balance_of("acme")).await.unwrap_err();
    assert_eq!(reason(&outside), "ACCOUNT_NOT_ALLOWED");

    // Rotation: the meter key is revoked and a new one issued by
    // rewriting the file; no restart.
    let rotated = key("acme-app-2", &["meter"], &["acme"]);
    std::fs::write(
        server.data_dir().join(API_KEYS_FILE),
        format!("{}{}{}", admin.entry, rotated.entry, tenant_reader.entry),
    )
    .expect("rewrite the key file");
    let mut revoked = None;
    for attempt in 0..100 {
        let mut tiny = debit("acme", &format!("after-{attempt}"));
        tiny.amount_millicredits = Some(1);
        match app.debit(tiny).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(status) => {
                revoked = Some(status);
                break;
            }
        }
    }
    let revoked = revoked.expect("the revoked key stops working");
    assert_eq!(reason(&revoked), "API_KEY_INVALID");
    metering(bearer(&rotated.secret))
        .debit(debit("acme", "with-the-new-key"))
        .await
        .expect("the new key works at once");

    // A key file that does not load leaves the keys in use.
    std::fs::write(server.data_dir().join(API_KEYS_FILE), "not toml [").expect("write");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    metering(bearer(&rotated.secret))
        .debit(debit("acme", "after-a-bad-file"))
        .await
        .expect("keys stay when the new file is bad");
}

/// A test clock advances every account on it, so a tenant's admin key may
/// advance only a clock whose accounts are all the tenant's, may not put an
/// account on another tenant's clock, and sees only its own accounts on a
/// clock.
#[tokio::test]
async fn a_tenant_key_advances_only_clocks_of_its_own_accounts() {
    let acme = key("acme-admin", &["admin", "read"], &["acme/*"]);
    let globex = key("globex-admin", &["admin", "read"], &["globex/*"]);
    let ops = key("ops", &["admin"], &[]);
    let server = TestServer::start_with(Options {
        api_keys: Some(format!("{}{}{}", acme.entry, globex.entry, ops.entry)),
        ..Default::default()
    })
    .await;
    let channel = server.channel().await;
    let clocks =
        |secret: &str| TestClockServiceClient::with_interceptor(channel.clone(), bearer(secret));
    let accounts =
        |secret: &str| AccountServiceClient::with_interceptor(channel.clone(), bearer(secret));
    let start = prost_types::Timestamp {
        seconds: 1_900_000_000,
        nanos: 0,
    };
    let mut acme_clocks = clocks(&acme.secret);
    for (name, secret) in [("shared", &acme.secret), ("own", &acme.secret)] {
        clocks(secret)
            .create_test_clock(CreateTestClockRequest {
                test_clock_id: name.into(),
                frozen_time: Some(start),
            })
            .await
            .expect("clock");
    }
    // An operator's key, limited to no tenant, may mix tenants on a clock.
    for (account, clock, secret) in [
        ("acme/sim", "shared", &acme.secret),
        ("globex/sim", "shared", &ops.secret),
        ("acme/solo", "own", &acme.secret),
    ] {
        accounts(secret)
            .open_account(OpenAccountRequest {
                idempotency_key: format!("open-{account}"),
                account_id: account.into(),
                test_clock_id: clock.into(),
                ..Default::default()
            })
            .await
            .expect("opens");
    }
    // Globex's key cannot put its account on a clock of acme's accounts.
    let foreign = accounts(&globex.secret)
        .open_account(OpenAccountRequest {
            idempotency_key: "open-globex/intruder".into(),
            account_id: "globex/intruder".into(),
            test_clock_id: "own".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::PermissionDenied, "{foreign:?}");
    let later = prost_types::Timestamp {
        seconds: 1_900_000_000 + 86_400,
        nanos: 0,
    };
    let refused = acme_clocks
        .advance_test_clock(AdvanceTestClockRequest {
            test_clock_id: "shared".into(),
            frozen_time: Some(later),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(reason(&refused), "ACCOUNT_NOT_ALLOWED");
    let shared = acme_clocks
        .get_test_clock(GetTestClockRequest {
            test_clock_id: "shared".into(),
        })
        .await
        .expect("clock")
        .into_inner()
        .test_clock
        .unwrap();
    assert_eq!(shared.frozen_time, Some(start), "the clock did not move");
    assert_eq!(
        shared.account_ids,
        vec!["acme/sim"],
        "globex's is not shown"
    );
    let own = acme_clocks
        .advance_test_clock(AdvanceTestClockRequest {
            test_clock_id: "own".into(),
            frozen_time: Some(later),
        })
        .await
        .expect("a clock of acme's accounts only")
        .into_inner();
    let own = own.test_clock.unwrap();
    assert_eq!(own.frozen_time, Some(later));
    assert_eq!(
        own.account_ids,
        vec!["acme/solo"],
        "the intruder was not attached"
    );
}
