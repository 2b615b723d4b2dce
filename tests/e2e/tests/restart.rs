//! Acknowledged operations and idempotency keys survive a restart of the
//! server on the same data dir (SPEC §4 invariants 3 and 5, the part that
//! a graceful restart covers).

use tally_e2e::*;

#[tokio::test]
async fn acknowledged_operations_and_idempotency_keys_survive_a_restart() {
    let mut server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "durable").await;
    grant(&mut accounts, "durable", "g-1", BucketKind::Monthly, 5_000).await;
    let reserve = reserve_request("durable", "r-1", 3_000);
    let reserved = metering
        .reserve(reserve.clone())
        .await
        .unwrap()
        .into_inner();
    let debit = DebitRequest {
        idempotency_key: "d-1".into(),
        account_id: "durable".into(),
        member_id: "carol".into(),
        action: "x.engage".into(),
        ..Default::default()
    };
    let debited = metering.debit(debit.clone()).await.unwrap().into_inner();
    // Refused: only effects are remembered, so this key stays free.
    let too_big = reserve_request("durable", "r-big", 4_000);
    assert_eq!(
        reason(&metering.reserve(too_big.clone()).await.unwrap_err()),
        "INSUFFICIENT_CREDITS"
    );
    let before = balance(&mut accounts, "durable").await;

    server.restart().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;

    let after = balance(&mut accounts, "durable").await;
    assert_eq!(after, before, "every acknowledged operation is there");

    // Retries return the first answer and write nothing.
    let again = metering
        .reserve(reserve.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again, reserved,
        "same reservation id, same consistency token"
    );
    let again = metering.debit(debit.clone()).await.unwrap().into_inner();
    assert_eq!(again, debited);
    assert_eq!(
        balance(&mut accounts, "durable").await.version,
        before.version
    );

    // The same key with a different request is refused.
    let reused = metering
        .reserve(ReserveRequest {
            amount_millicredits: Some(1),
            ..reserve.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");

    // The refused reservation's retry is evaluated afresh once topped up.
    grant(&mut accounts, "durable", "g-2", BucketKind::TopUp, 10_000).await;
    let retried = metering
        .reserve(too_big)
        .await
        .expect("succeeds after the top-up");
    assert_eq!(
        retried.into_inner().reservation.unwrap().held_millicredits,
        4_000
    );

    let entries = ledger(&mut accounts, "durable").await;
    // Opening also starts the first billing cycle, and r-big's hold takes
    // the balance below 10 credits: both written under the same key.
    let keys: Vec<&str> = entries
        .iter()
        .filter(|e| {
            e.kind != LedgerEntryKind::CycleStarted as i32
                && e.kind != LedgerEntryKind::Alert as i32
        })
        .map(|e| e.idempotency_key.as_str())
        .collect();
    assert_eq!(
        keys,
        vec!["open-durable", "g-1", "r-1", "d-1", "g-2", "r-big"],
        "each effect exactly once"
    );
}
