//! Typed refusals and bad input: each gets its reason, and writes nothing.

use std::time::Duration;

use tally_e2e::*;

#[tokio::test]
async fn bad_input_names_every_field_and_writes_nothing() {
    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "strict").await;
    grant(&mut accounts, "strict", "g-1", BucketKind::Monthly, 5_000).await;
    let version = balance(&mut accounts, "strict").await.version;

    let status = accounts
        .grant(GrantRequest {
            idempotency_key: String::new(),
            account_id: "has space".into(),
            kind: 99,
            amount_millicredits: -5,
            source: 42,
            reference: "x".repeat(300),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(reason(&status), "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&status),
        vec![
            "idempotency_key",
            "account_id",
            "kind",
            "amount_millicredits",
            "source",
            "reference"
        ]
    );

    let zero = accounts
        .grant(GrantRequest {
            idempotency_key: "g-zero".into(),
            account_id: "strict".into(),
            kind: BucketKind::TopUp.into(),
            amount_millicredits: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&zero), vec!["amount_millicredits"]);

    let unspecified_kind = accounts
        .grant(GrantRequest {
            idempotency_key: "g-kind".into(),
            account_id: "strict".into(),
            amount_millicredits: 1_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unspecified_kind), vec!["kind"]);

    let past_expiry = accounts
        .grant(GrantRequest {
            idempotency_key: "g-past".into(),
            account_id: "strict".into(),
            kind: BucketKind::TopUp.into(),
            amount_millicredits: 1_000,
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&past_expiry), vec!["expires_at"]);

    let long_id = "a".repeat(129);
    let reserve = metering
        .reserve(ReserveRequest {
            idempotency_key: "r".into(),
            account_id: long_id,
            member_id: String::new(),
            action: "Not.Lowercase".into(),
            amount_millicredits: Some(-1),
            ttl: Some(seconds(10 * 86_400)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&reserve),
        vec![
            "account_id",
            "member_id",
            "action",
            "amount_millicredits",
            "ttl"
        ]
    );

    let commit = metering
        .commit(CommitRequest {
            dimensions: None,
            idempotency_key: "c".into(),
            account_id: "strict".into(),
            reservation_id: String::new(),
            amount_millicredits: Some(-3),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&commit),
        vec!["reservation_id", "amount_millicredits"]
    );

    let extend = metering
        .extend(ExtendRequest {
            idempotency_key: "e".into(),
            account_id: "strict".into(),
            reservation_id: "rsv_x".into(),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&extend), vec!["ttl"]);

    let debit = metering
        .debit(DebitRequest {
            dimensions: None,
            idempotency_key: "d".into(),
            account_id: "strict".into(),
            member_id: "m".into(),
            action: "x.engage".into(),
            model: "has space".into(),
            amount_millicredits: Some(0),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&debit),
        vec!["model", "amount_millicredits"]
    );

    let quote = metering
        .quote(QuoteRequest {
            account_id: "strict".into(),
            items: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&quote), vec!["items"]);

    let ledger_page = accounts
        .list_ledger(ListLedgerRequest {
            account_id: "strict".into(),
            page_size: 5_000,
            page_token: "forged".into(),
            kinds: vec![0],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&ledger_page),
        vec!["page_size", "page_token", "kinds"]
    );

    let after = balance(&mut accounts, "strict").await;
    assert_eq!(after.version, version, "no invalid request wrote anything");
    assert_eq!(after.available_millicredits, 5_000);
}

#[tokio::test]
async fn refusals_carry_typed_reasons() {
    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;

    let unknown = accounts
        .get_balance(GetBalanceRequest {
            account_id: "nobody".into(),
            consistency: fully_consistent(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.code(), reason(&unknown)),
        (tonic::Code::NotFound, "UNKNOWN_ACCOUNT".into())
    );
    let unknown = metering
        .reserve(reserve_request("nobody", "r", 1))
        .await
        .unwrap_err();
    assert_eq!(reason(&unknown), "UNKNOWN_ACCOUNT");

    open(&mut accounts, "acct").await;
    let exists = accounts
        .open_account(OpenAccountRequest {
            idempotency_key: "open-again".into(),
            account_id: "acct".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (exists.code(), reason(&exists)),
        (tonic::Code::AlreadyExists, "ACCOUNT_EXISTS".into())
    );
    let top_up = grant(&mut accounts, "acct", "g-1", BucketKind::TopUp, 10_000).await;
    let top_up_id = top_up.bucket.unwrap().grant_id;

    let unknown_action = metering
        .reserve(ReserveRequest {
            action: "video.render".into(),
            amount_millicredits: None,
            ..reserve_request("acct", "r-u", 0)
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&unknown_action), "UNKNOWN_ACTION");
    assert_eq!(
        metadata(&unknown_action, "action").as_deref(),
        Some("video.render")
    );

    let missing = metering
        .commit(CommitRequest {
            dimensions: None,
            idempotency_key: "c-missing".into(),
            account_id: "acct".into(),
            reservation_id: "rsv_missing".into(),
            amount_millicredits: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&missing), "RESERVATION_NOT_FOUND");

    let held = metering
        .reserve(reserve_request("acct", "r-1", 1_000))
        .await
        .unwrap()
        .into_inner();
    let id = held.reservation.unwrap().reservation_id;
    let commit = |key: &str| CommitRequest {
        dimensions: None,
        idempotency_key: key.into(),
        account_id: "acct".into(),
        reservation_id: id.clone(),
        amount_millicredits: Some(1_000),
    };
    metering.commit(commit("c-1")).await.unwrap();
    let twice = metering.commit(commit("c-2")).await.unwrap_err();
    assert_eq!(reason(&twice), "ALREADY_RESOLVED");
    assert_eq!(metadata(&twice, "resolution").as_deref(), Some("committed"));

    // Voiding withdraws what is left; held credits stay held until the
    // hold ends, then are withdrawn too.
    let held = metering
        .reserve(reserve_request("acct", "r-2", 4_000))
        .await
        .unwrap()
        .into_inner();
    let voided = accounts
        .void_grant(VoidGrantRequest {
            idempotency_key: "v-1".into(),
            account_id: "acct".into(),
            grant_id: top_up_id.clone(),
            reason: "chargeback".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.voided_millicredits, 5_000);
    let again = accounts
        .void_grant(VoidGrantRequest {
            idempotency_key: "v-2".into(),
            account_id: "acct".into(),
            grant_id: top_up_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "GRANT_ALREADY_VOIDED");
    metering
        .release(ReleaseRequest {
            idempotency_key: "rel-1".into(),
            account_id: "acct".into(),
            reservation_id: held.reservation.unwrap().reservation_id,
        })
        .await
        .unwrap();
    let emptied = balance(&mut accounts, "acct").await;
    assert_eq!(
        (emptied.available_millicredits, emptied.voided_millicredits),
        (0, 9_000)
    );
    let gone = accounts
        .void_grant(VoidGrantRequest {
            idempotency_key: "v-3".into(),
            account_id: "acct".into(),
            grant_id: top_up_id,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&gone), "GRANT_NOT_FOUND");
}

#[tokio::test]
async fn holds_expire_at_their_ttl_and_a_late_commit_is_still_recorded() {
    let server = TestServer::start().await;
    let mut accounts = server.accounts().await;
    let mut metering = server.metering().await;
    open(&mut accounts, "slow").await;
    grant(&mut accounts, "slow", "g-1", BucketKind::Monthly, 10_000).await;

    let reserve = |key: &str| ReserveRequest {
        ttl: Some(seconds(60)),
        ..reserve_request("slow", key, 4_000)
    };
    let short = metering
        .reserve(reserve("r-short"))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let long = metering
        .reserve(reserve("r-long"))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let extended = metering
        .extend(ExtendRequest {
            idempotency_key: "e-1".into(),
            account_id: "slow".into(),
            reservation_id: long.reservation_id.clone(),
            ttl: Some(seconds(600)),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(
        extended.expires_at.unwrap().seconds,
        long.expires_at.unwrap().seconds + 540
    );

    server.advance(Duration::from_secs(59));
    assert_eq!(
        balance(&mut accounts, "slow").await.held_millicredits,
        8_000
    );
    server.advance(Duration::from_secs(2));
    let expired = balance(&mut accounts, "slow").await;
    assert_eq!(
        (expired.held_millicredits, expired.available_millicredits),
        (4_000, 6_000)
    );

    let release = metering
        .release(ReleaseRequest {
            idempotency_key: "rel".into(),
            account_id: "slow".into(),
            reservation_id: short.reservation_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&release), "RESERVATION_EXPIRED");

    // The work happened: the commit is recorded, flagged late.
    let late = metering
        .commit(CommitRequest {
            dimensions: None,
            idempotency_key: "c-late".into(),
            account_id: "slow".into(),
            reservation_id: short.reservation_id.clone(),
            amount_millicredits: Some(3_000),
        })
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert!(late.late);
    assert_eq!(
        (late.charged_millicredits, late.overage_millicredits),
        (3_000, 0)
    );

    let entries = ledger(&mut accounts, "slow").await;
    let expiry = entries
        .iter()
        .find(|e| e.kind == LedgerEntryKind::HoldExpired as i32)
        .expect("the expiry is in the ledger");
    assert_eq!(expiry.reservation_id, short.reservation_id);
    assert_eq!(
        expiry.occurred_at, short.expires_at,
        "recorded at its boundary, not when noticed"
    );
    assert_eq!(expiry.idempotency_key, "", "time wrote it, not a request");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind == LedgerEntryKind::HoldExpired as i32)
            .count(),
        1,
        "exactly once"
    );
    let after = balance(&mut accounts, "slow").await;
    assert_eq!(
        (after.available_millicredits, after.held_millicredits),
        (3_000, 4_000)
    );
}
