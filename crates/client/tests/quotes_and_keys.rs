//! The quote cache, the API key, and a Commit that cannot reach Tally,
//! against a real tallyd on its embedded store.

mod support;

use std::time::Duration;

use support::{ACCOUNT, GRANTED, balance, client, config, ledger, server};
use tally_client::v1::{self, LedgerEntryKind};
use tally_client::{
    Action, ActionKeys, ClientConfig, ClientError, Cost, Estimate, Settlement, TallyClient,
};
use tally_e2e::{Options, RATE_CARD, TestServer};

#[tokio::test]
async fn a_cached_price_holds_until_the_client_sees_a_new_rate_card_version() {
    let (server, proxy) = server().await;
    let tally = client(&proxy, config()).await;
    let first = tally
        .price(ACCOUNT, "article.draft", "", None)
        .await
        .expect("price");
    assert_eq!(
        (
            first.unit_price_millicredits,
            first.rate_card_version,
            first.cached
        ),
        (2_000, 3, false)
    );
    let second = tally
        .price(ACCOUNT, "article.draft", "", None)
        .await
        .expect("price");
    assert_eq!(
        (second.unit_price_millicredits, second.cached),
        (2_000, true)
    );
    // Another model is another key.
    let premium = tally
        .price(ACCOUNT, "x.engage", "premium", None)
        .await
        .expect("price");
    assert_eq!(
        (premium.unit_price_millicredits, premium.cached),
        (2_000, false)
    );

    // Version 4 raises the draft's price.
    let card = RATE_CARD
        .replace("version = 3", "version = 4")
        .replace("price_millicredits = 2000", "price_millicredits = 3000");
    server
        .catalog()
        .await
        .publish_rate_card(v1::PublishRateCardRequest { toml: card })
        .await
        .expect("published");
    // Nothing this client did has seen version 4 yet: still cached
    // (stale for at most quote_max_age).
    let stale = tally
        .price(ACCOUNT, "article.draft", "", None)
        .await
        .expect("price");
    assert_eq!((stale.rate_card_version, stale.cached), (3, true));

    // A hold priced on the card carries version 4: the cache drops its
    // prices, and the next lookup asks Tally.
    tally
        .metered(
            ACCOUNT,
            "alice",
            "article.draft",
            Estimate::RateCard,
            |hold| async move {
                assert_eq!(hold.held_millicredits, 3_000);
                Ok::<_, std::io::Error>(Cost::Amount(3_000))
            },
        )
        .await
        .expect("metered");
    let fresh = tally
        .price(ACCOUNT, "article.draft", "", None)
        .await
        .expect("price");
    assert_eq!(
        (
            fresh.unit_price_millicredits,
            fresh.rate_card_version,
            fresh.cached
        ),
        (3_000, 4, false)
    );
}

#[tokio::test]
async fn a_price_older_than_quote_max_age_is_asked_again() {
    let (_server, proxy) = server().await;
    let tally = client(
        &proxy,
        ClientConfig {
            quote_max_age: Duration::ZERO,
            ..config()
        },
    )
    .await;
    for _ in 0..2 {
        let price = tally
            .price(ACCOUNT, "article.draft", "", None)
            .await
            .expect("price");
        assert!(!price.cached);
    }
}

#[tokio::test]
async fn a_commit_that_cannot_reach_tally_is_recorded_and_reported_once() {
    let (server, proxy) = server().await;
    let tally = client(&proxy, config()).await;
    let keys = ActionKeys::from_base("task-c");
    let settled = tally
        .metered(
            ACCOUNT,
            "alice",
            Action::new("article.draft").keys(keys.clone()),
            Estimate::Amount(3_000),
            |_hold| async {
                // Tally goes away while the task runs.
                proxy.set_upstream(None);
                Ok::<_, std::io::Error>(Cost::Amount(1_500))
            },
        )
        .await
        .expect("the work is done and recorded");
    let Settlement::Deferred(record) = settled else {
        panic!("{settled:?}")
    };
    assert_eq!(record.idempotency_key, keys.commit());
    assert_eq!(tally.pending_usage(), 1);
    proxy.set_upstream(Some(server.addr));
    let report = tally.flush().await.expect("flush");
    assert_eq!(report.charged.len(), 1);
    assert_eq!(tally.pending_usage(), 0);
    // Charged once; the hold stays until its TTL.
    let after = balance(&server).await;
    assert_eq!(after.held_millicredits, 3_000);
    assert_eq!(after.available_millicredits, GRANTED - 3_000 - 1_500);
    assert_eq!(ledger(&server, LedgerEntryKind::Debit).await.len(), 1);
    assert!(tally.flush().await.expect("flush").charged.is_empty());
    assert_eq!(ledger(&server, LedgerEntryKind::Debit).await.len(), 1);
}

#[tokio::test]
async fn the_api_key_is_sent_as_a_bearer_token() {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (admin, admin_entry) =
        tally_auth::new_key_entry("ops", &owned(&["admin"]), &[]).expect("key");
    let (meter, meter_entry) =
        tally_auth::new_key_entry("app", &owned(&["meter"]), &owned(&[ACCOUNT])).expect("key");
    let server = TestServer::start_with(Options {
        api_keys: Some(format!("{admin_entry}\n{meter_entry}")),
        ..Options::default()
    })
    .await;
    let endpoint = format!("http://{}", server.addr);
    let with_key = |key: Option<String>| {
        TallyClient::connect_with(
            endpoint.clone(),
            ClientConfig {
                api_key: key,
                ..config()
            },
        )
    };
    let ops = with_key(Some(admin)).await.expect("client");
    ops.accounts()
        .open_account(v1::OpenAccountRequest {
            idempotency_key: "open".into(),
            account_id: ACCOUNT.into(),
            ..Default::default()
        })
        .await
        .expect("an admin key opens accounts");
    ops.accounts()
        .grant(v1::GrantRequest {
            idempotency_key: "grant".into(),
            account_id: ACCOUNT.into(),
            kind: v1::BucketKind::Monthly.into(),
            amount_millicredits: GRANTED,
            ..Default::default()
        })
        .await
        .expect("grant");

    let app = with_key(Some(meter)).await.expect("client");
    let settled = app
        .metered(
            ACCOUNT,
            "alice",
            "article.draft",
            Estimate::Amount(1_000),
            |_hold| async { Ok::<_, std::io::Error>(Cost::Amount(900)) },
        )
        .await
        .expect("a meter key meters");
    assert_eq!(
        settled.receipt().expect("charged").charged_millicredits,
        900
    );

    let anonymous = with_key(None).await.expect("client");
    let refused = anonymous
        .metered(
            ACCOUNT,
            "alice",
            "article.draft",
            Estimate::Amount(1_000),
            |_hold| async { Ok::<_, std::io::Error>(Cost::Amount(900)) },
        )
        .await;
    match refused {
        Err(ClientError::Refused { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::Unauthenticated)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_future_dropped_while_its_commit_is_retried_still_commits() {
    let (server, proxy) = server().await;
    // Retries that outlast the outage below (about 50 ms apart).
    let patient = ClientConfig {
        retry: tally_client::RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(20),
            multiplier: 2,
            max_backoff: Duration::from_millis(50),
            jitter: false,
        },
        ..config()
    };
    let tally = client(&proxy, patient).await;
    let keys = ActionKeys::from_base("task-d");
    let (finished, done) = tokio::sync::oneshot::channel();
    let metered = tokio::spawn({
        let tally = tally.clone();
        let keys = keys.clone();
        let proxy_cut = proxy.cutter();
        async move {
            tally
                .metered(
                    ACCOUNT,
                    "alice",
                    Action::new("article.draft").keys(keys),
                    Estimate::Amount(3_000),
                    |_hold| async move {
                        // Tally goes away as the task ends: the Commit
                        // is retried until the future is dropped.
                        proxy_cut.set_upstream(None);
                        let _ = finished.send(());
                        Ok::<_, std::io::Error>(Cost::Amount(1_000))
                    },
                )
                .await
        }
    });
    done.await.expect("the task finished");
    tokio::time::sleep(Duration::from_millis(150)).await;
    metered.abort();
    assert!(metered.await.expect_err("aborted").is_cancelled());
    assert!(ledger(&server, LedgerEntryKind::Debit).await.is_empty());
    proxy.set_upstream(Some(server.addr));
    let mut debits = Vec::new();
    for _ in 0..200 {
        debits = ledger(&server, LedgerEntryKind::Debit).await;
        if !debits.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(debits.len(), 1, "the work was charged");
    assert_eq!(debits[0].idempotency_key, keys.commit());
    assert_eq!(debits[0].amount_millicredits, 1_000);
    assert!(
        ledger(&server, LedgerEntryKind::HoldReleased)
            .await
            .is_empty()
    );
    let after = balance(&server).await;
    assert_eq!(after.held_millicredits, 0);
    assert_eq!(after.available_millicredits, GRANTED - 1_000);
}
