//! The client against a real tallyd on its embedded store.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{ACCOUNT, GRANTED, balance, client, config, ledger, server};
use tally_client::v1::{self, LedgerEntryKind};
use tally_client::{
    Action, ActionKeys, ClientConfig, ClientError, Cost, Estimate, Settlement, Unreachable,
};

fn failed(why: &str) -> std::io::Error {
    std::io::Error::other(why.to_owned())
}

#[tokio::test]
async fn metered_commits_the_actual_cost() {
    let (server, proxy) = server().await;
    let tally = client(&proxy, config()).await;
    let keys = ActionKeys::from_base("task-1");
    let settled = tally
        .metered(
            ACCOUNT,
            "alice",
            Action::new("article.draft").keys(keys.clone()),
            Estimate::Amount(3_000),
            |hold| async move {
                assert_eq!(hold.held_millicredits, 3_000);
                assert!(hold.reservation_id.is_some());
                Ok::<_, std::io::Error>(Cost::Amount(1_200))
            },
        )
        .await
        .expect("metered");
    let receipt = settled.receipt().expect("charged");
    assert_eq!(receipt.charged_millicredits, 1_200);
    let after = balance(&server).await;
    assert_eq!(after.available_millicredits, GRANTED - 1_200);
    assert_eq!(after.held_millicredits, 0);
    let debits = ledger(&server, LedgerEntryKind::Debit).await;
    assert_eq!(debits.len(), 1);
    assert_eq!(debits[0].idempotency_key, keys.commit());
}

#[tokio::test]
async fn an_error_in_the_task_releases_the_hold() {
    let (server, proxy) = server().await;
    let tally = client(&proxy, config()).await;
    let keys = ActionKeys::from_base("task-2");
    let result = tally
        .metered(
            ACCOUNT,
            "alice",
            Action::new("article.draft").keys(keys.clone()),
            Estimate::Amount(3_000),
            |_hold| async { Err::<Cost, _>(failed("the model timed out")) },
        )
        .await;
    assert!(matches!(result, Err(ClientError::Task(_))), "{result:?}");
    let after = balance(&server).await;
    assert_eq!(after.available_millicredits, GRANTED);
    assert_eq!(after.held_millicredits, 0);
    let released = ledger(&server, LedgerEntryKind::HoldReleased).await;
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].idempotency_key, keys.release());
    assert!(ledger(&server, LedgerEntryKind::Debit).await.is_empty());
}

#[tokio::test]
async fn a_dropped_future_releases_the_hold() {
    let (server, proxy) = server().await;
    let tally = client(&proxy, config()).await;
    let keys = ActionKeys::from_base("task-3");
    let (started, running) = tokio::sync::oneshot::channel();
    let task = tokio::spawn({
        let tally = tally.clone();
        let keys = keys.clone();
        async move {
            tally
                .metered(
                    ACCOUNT,
                    "alice",
                    Action::new("article.draft").keys(keys),
                    Estimate::Amount(3_000),
                    |_hold| async move {
                        let _ = started.send(());
                        std::future::pending::<Result<Cost, std::io::Error>>().await
                    },
                )
                .await
        }
    });
    running.await.expect("the task started");
    assert_eq!(balance(&server).await.held_millicredits, 3_000);
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    // The release runs in a task of its own: wait for it to land.
    let mut released = Vec::new();
    for _ in 0..200 {
        released = ledger(&server, LedgerEntryKind::HoldReleased).await;
        if !released.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(released.len(), 1, "the hold was released");
    assert_eq!(released[0].idempotency_key, keys.release());
    let after = balance(&server).await;
    assert_eq!(after.held_millicredits, 0);
    assert_eq!(after.available_millicredits, GRANTED);
}

#[tokio::test]
async fn a_task_running_past_half_its_ttl_extends_its_hold() {
    let (server, proxy) = server().await;
    let tally = client(
        &proxy,
        ClientConfig {
            hold_ttl: Duration::from_secs(2),
            ..config()
        },
    )
    .await;
    let settled = tally
        .metered(
            ACCOUNT,
            "alice",
            "article.draft",
            Estimate::Amount(3_000),
            |_hold| async {
                tokio::time::sleep(Duration::from_millis(1_600)).await;
                Ok::<_, std::io::Error>(Cost::Amount(2_000))
            },
        )
        .await
        .expect("metered");
    // Extended once, at 1 s (half the TTL) into the task; the next would
    // be at 2 s. (0.6 s of slack either side for a busy machine.)
    let extended = ledger(&server, LedgerEntryKind::HoldExtended).await;
    assert_eq!(extended.len(), 1, "{extended:?}");
    let receipt = settled.receipt().expect("charged");
    assert!(!receipt.late);
    assert_eq!(receipt.charged_millicredits, 2_000);
}

#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_retried_with_its_key_and_charged_once() {
    let (server, proxy) = server().await;
    let proxy = Arc::new(proxy);
    let tally = client(&proxy, config()).await;
    let keys = ActionKeys::from_base("task-5");
    let metered = tokio::spawn({
        let (tally, proxy, keys) = (tally.clone(), proxy.clone(), keys.clone());
        async move {
            tally
                .metered(
                    ACCOUNT,
                    "alice",
                    Action::new("article.draft").keys(keys),
                    Estimate::Amount(3_000),
                    |_hold| async move {
                        // The Commit reaches Tally; its answer does not
                        // come back.
                        proxy.lose_next_answer_and_hold();
                        Ok::<_, std::io::Error>(Cost::Amount(1_500))
                    },
                )
                .await
        }
    });
    proxy.answer_lost().await;
    // Tally has committed; the client has heard nothing.
    assert_eq!(ledger(&server, LedgerEntryKind::Debit).await.len(), 1);
    proxy.cut();
    let settled = metered.await.expect("joins").expect("metered");
    assert_eq!(proxy.answers_lost(), 1);
    assert_eq!(
        settled.receipt().expect("charged").charged_millicredits,
        1_500
    );
    assert_eq!(
        balance(&server).await.available_millicredits,
        GRANTED - 1_500
    );
    let debits = ledger(&server, LedgerEntryKind::Debit).await;
    assert_eq!(debits.len(), 1, "charged once");
    assert_eq!(debits[0].idempotency_key, keys.commit());
}

#[tokio::test]
async fn a_debit_whose_answer_is_lost_is_retried_with_its_key_and_charged_once() {
    let (server, proxy) = server().await;
    let tally = client(&proxy, config()).await;
    proxy.lose_next_answer_and_hold();
    let debit = tokio::spawn({
        let tally = tally.clone();
        async move {
            tally
                .debit(v1::DebitRequest {
                    idempotency_key: "debit-6".into(),
                    account_id: ACCOUNT.into(),
                    member_id: "alice".into(),
                    action: "article.draft".into(),
                    amount_millicredits: Some(700),
                    ..Default::default()
                })
                .await
        }
    });
    proxy.answer_lost().await;
    // Tally has charged; the client has heard nothing.
    assert_eq!(balance(&server).await.available_millicredits, GRANTED - 700);
    proxy.cut();
    let answer = debit.await.expect("joins").expect("debit");
    assert_eq!(proxy.answers_lost(), 1);
    assert_eq!(answer.receipt.expect("receipt").charged_millicredits, 700);
    assert_eq!(balance(&server).await.available_millicredits, GRANTED - 700);
    let debits = ledger(&server, LedgerEntryKind::Debit).await;
    assert_eq!(debits.len(), 1, "charged once");
    assert_eq!(debits[0].idempotency_key, "debit-6");
}

#[tokio::test]
async fn fail_closed_refuses_while_tally_is_down() {
    let (mut server, proxy) = server().await;
    let tally = client(&proxy, config()).await;
    server.stop().await;
    let ran = AtomicUsize::new(0);
    let result = tally
        .metered(
            ACCOUNT,
            "alice",
            "article.draft",
            Estimate::Amount(1_000),
            |_hold| async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Cost::Amount(1_000))
            },
        )
        .await;
    assert!(
        matches!(result, Err(ClientError::Unavailable { attempts: 4, .. })),
        "{result:?}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the task did not run");
    assert_eq!(tally.pending_usage(), 0);
    server.restart().await;
    proxy.set_upstream(Some(server.addr));
    assert_eq!(balance(&server).await.available_millicredits, GRANTED);
    assert!(ledger(&server, LedgerEntryKind::Debit).await.is_empty());
}

#[tokio::test]
async fn fail_open_allows_up_to_the_allowance_then_reports_each_action_once() {
    let (mut server, proxy) = server().await;
    let tally = client(
        &proxy,
        ClientConfig {
            unreachable: Unreachable::FailOpen {
                allowance_millicredits: 5_000,
            },
            ..config()
        },
    )
    .await;
    server.stop().await;
    let ran = Arc::new(AtomicUsize::new(0));
    let mut keys = Vec::new();
    let mut results = Vec::new();
    for n in 0..4 {
        let action_keys = ActionKeys::from_base(format!("offline-{n}"));
        keys.push(action_keys.commit());
        let ran = ran.clone();
        results.push(
            tally
                .metered(
                    ACCOUNT,
                    "alice",
                    Action::new("article.draft").keys(action_keys),
                    Estimate::Amount(2_000),
                    |hold| async move {
                        assert!(hold.reservation_id.is_none());
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(Cost::Amount(1_500))
                    },
                )
                .await,
        );
    }
    // 1,500 + 1,500 + 1,500 recorded; the fourth's 2,000 estimate would
    // take 4,500 past 5,000.
    for settled in &results[..3] {
        assert!(
            matches!(settled, Ok(Settlement::Deferred(record)) if record.amount_millicredits == Some(1_500)),
            "{settled:?}"
        );
    }
    assert!(
        matches!(
            results[3],
            Err(ClientError::FailOpenExhausted {
                pending_millicredits: 4_500,
                needed_millicredits: 2_000,
                allowance_millicredits: 5_000,
                ..
            })
        ),
        "{:?}",
        results[3]
    );
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert_eq!(tally.pending_usage(), 3);
    // While Tally is down, a flush keeps everything.
    assert!(tally.flush().await.expect_err("down").is_unavailable());
    assert_eq!(tally.pending_usage(), 3);

    server.restart().await;
    proxy.set_upstream(Some(server.addr));
    let report = tally.flush().await.expect("flush");
    assert_eq!(report.charged.len(), 3);
    assert!(report.refused.is_empty());
    assert_eq!(tally.pending_usage(), 0);
    assert_eq!(
        balance(&server).await.available_millicredits,
        GRANTED - 4_500
    );
    let debits = ledger(&server, LedgerEntryKind::Debit).await;
    let mut charged: Vec<_> = debits.iter().map(|d| d.idempotency_key.clone()).collect();
    charged.sort();
    assert_eq!(charged, keys[..3]);

    // A second flush adds nothing.
    let again = tally.flush().await.expect("flush");
    assert!(again.charged.is_empty());
    assert_eq!(
        balance(&server).await.available_millicredits,
        GRANTED - 4_500
    );
    assert_eq!(ledger(&server, LedgerEntryKind::Debit).await.len(), 3);
}

/// With a journal, usage recorded while Tally was down survives the
/// process: a new client on the same journal reports it, once, and leaves
/// the journal empty.
#[tokio::test]
async fn fail_open_usage_in_a_journal_survives_the_client() {
    let (mut server, proxy) = server().await;
    let folder = tempfile::tempdir().unwrap();
    let journaled = || ClientConfig {
        unreachable: Unreachable::FailOpen {
            allowance_millicredits: 5_000,
        },
        offline_journal: Some(folder.path().join("usage.journal")),
        ..config()
    };
    let first = client(&proxy, journaled()).await;
    server.stop().await;
    let mut keys = Vec::new();
    for n in 0..2 {
        let action_keys = ActionKeys::from_base(format!("journaled-{n}"));
        keys.push(action_keys.commit());
        let settled = first
            .metered(
                ACCOUNT,
                "alice",
                Action::new("article.draft").keys(action_keys),
                Estimate::Amount(2_000),
                |_| async { Ok::<_, std::io::Error>(Cost::Amount(1_200)) },
            )
            .await;
        assert!(
            matches!(settled, Ok(Settlement::Deferred(_))),
            "{settled:?}"
        );
    }
    assert_eq!(first.pending_usage(), 2);
    // The process goes away with the usage unreported.
    drop(first);

    // A new process, Tally still down: it holds the usage, and counts it
    // against the allowance (2,400 + a 2,000 estimate fits; 3,000 more
    // would not).
    let second = client(&proxy, journaled()).await;
    assert_eq!(second.pending_usage(), 2);
    let over = second
        .metered(
            ACCOUNT,
            "alice",
            Action::new("article.draft"),
            Estimate::Amount(3_000),
            |_| async { Ok::<_, std::io::Error>(Cost::Amount(3_000)) },
        )
        .await;
    assert!(
        matches!(
            over,
            Err(ClientError::FailOpenExhausted {
                pending_millicredits: 2_400,
                ..
            })
        ),
        "{over:?}"
    );
    drop(second);

    // Tally is back: the next client reports it once, on its own.
    server.restart().await;
    proxy.set_upstream(Some(server.addr));
    let third = client(&proxy, journaled()).await;
    for _ in 0..200 {
        if third.pending_usage() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(third.pending_usage(), 0);
    assert_eq!(
        balance(&server).await.available_millicredits,
        GRANTED - 2_400
    );
    let mut charged: Vec<_> = ledger(&server, LedgerEntryKind::Debit)
        .await
        .iter()
        .map(|d| d.idempotency_key.clone())
        .collect();
    charged.sort();
    assert_eq!(charged, keys);
    drop(third);
    let fourth = client(&proxy, journaled()).await;
    assert_eq!(fourth.pending_usage(), 0, "the journal was emptied");
    assert_eq!(ledger(&server, LedgerEntryKind::Debit).await.len(), 2);
}

#[tokio::test]
async fn a_report_whose_answer_is_lost_is_charged_once() {
    let (mut server, proxy) = server().await;
    let tally = client(
        &proxy,
        ClientConfig {
            unreachable: Unreachable::FailOpen {
                allowance_millicredits: 5_000,
            },
            ..config()
        },
    )
    .await;
    server.stop().await;
    tally
        .metered(
            ACCOUNT,
            "alice",
            "article.draft",
            Estimate::Amount(1_000),
            |_hold| async { Ok::<_, std::io::Error>(Cost::Amount(800)) },
        )
        .await
        .expect("fail open");
    server.restart().await;
    proxy.set_upstream(Some(server.addr));
    // The ReportUsage lands; its answer does not come back; the retry
    // sends the same record and key.
    proxy.lose_next_answer_and_hold();
    let flush = tokio::spawn({
        let tally = tally.clone();
        async move { tally.flush().await }
    });
    proxy.answer_lost().await;
    assert_eq!(balance(&server).await.available_millicredits, GRANTED - 800);
    proxy.cut();
    let report = flush.await.expect("joins").expect("flush");
    assert_eq!(proxy.answers_lost(), 1);
    assert_eq!(report.charged.len(), 1);
    assert_eq!(balance(&server).await.available_millicredits, GRANTED - 800);
    assert_eq!(ledger(&server, LedgerEntryKind::Debit).await.len(), 1);
}

#[tokio::test]
async fn a_refused_reserve_is_typed_with_its_reason_and_runs_nothing() {
    let (_server, proxy) = server().await;
    let tally = client(&proxy, config()).await;
    let result = tally
        .metered(
            ACCOUNT,
            "alice",
            "article.draft",
            Estimate::Amount(GRANTED + 1),
            |_hold| async { panic!("the task must not run") as Result<Cost, std::io::Error> },
        )
        .await;
    match result {
        Err(ClientError::Refused { reason, status }) => {
            assert_eq!(reason, "INSUFFICIENT_CREDITS");
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        }
        other => panic!("{other:?}"),
    }
}
