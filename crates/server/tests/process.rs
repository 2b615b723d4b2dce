//! The tallyd binary as an operator runs it: a real process, real signals.

mod support;

use std::time::Duration;

use support::Tallyd;
use tally_api::v1 as pb;
use tally_api::v1::account_service_client::AccountServiceClient;

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let mut tallyd = Tallyd::spawn(&["--data-dir", data.path().to_str().unwrap()]);
    let mut accounts = AccountServiceClient::new(tallyd.connect().await);
    accounts
        .open_account(pb::OpenAccountRequest {
            idempotency_key: "k".into(),
            account_id: "a".into(),

            ..Default::default()
        })
        .await
        .unwrap();
    tallyd.signal("TERM");
    let status = tallyd.wait_for_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
}

/// SPEC §4 invariant 5 on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_debit() {
    let data = tempfile::tempdir().unwrap();
    support::kill_9_loses_no_acknowledged_debit(&["--data-dir", data.path().to_str().unwrap()], 3)
        .await;
}
