//! Load shedding at the engine, on PostgreSQL (whose table lock lets the
//! test hold an account's append for as long as it likes): past its
//! mailbox an account refuses single commands at once, and a command whose
//! caller has gone before it was decided is never written.

use std::sync::Arc;
use std::time::Duration;

use tally_core::{
    AccountId, ActionKey, BucketKind, Command, GrantCommand, IdempotencyKey, ManualClock, MemberId,
    Millicredits, Timestamp,
};
use tally_engine::{Engine, EngineConfig, EngineError, Mutation, Submitted};
use tally_store::EventStore;
use tally_store::conformance::Harness;
use tally_store::postgres::{PostgresHarness, PostgresLocation, PostgresStore};
use tokio_postgres::{Client, NoTls};

const MAILBOX: usize = 4;

fn mutation(key: &str, command: Command) -> Mutation {
    Mutation {
        account: AccountId::parse("acme").unwrap(),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: key.as_bytes().to_vec(),
        command,
    }
}

fn debit() -> Command {
    Command::Debit {
        member: MemberId::parse("ann").unwrap(),
        action: ActionKey::parse("agent.step").unwrap(),
        model: None,
        amount: Some(Millicredits::new(1)),
        dimensions: None,
        occurred_at: None,
    }
}

/// An engine on a fresh database with a funded account, a second session
/// on that database for the test to take locks with, and the database
/// (dropped with it at the test's end).
async fn setup() -> (
    Engine<PostgresStore>,
    PostgresStore,
    Client,
    PostgresLocation,
) {
    let (store, location) = PostgresHarness::new().create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let engine = Engine::new(
        store.clone(),
        clock,
        EngineConfig {
            mailbox: MAILBOX,
            ..EngineConfig::default()
        },
    );
    engine
        .execute(mutation("open", Command::OpenAccount(Default::default())))
        .await
        .expect("open");
    engine
        .execute(mutation(
            "fund",
            Command::Grant(GrantCommand {
                grant_id: Engine::<PostgresStore>::mint_grant_id(),
                pack: None,
                kind: BucketKind::TopUp,
                source: None,
                priority: None,
                amount: Millicredits::from_credits(1_000),
                effective_at: None,
                expires_at: None,
                cost_basis: None,
                reference: String::new(),
            }),
        ))
        .await
        .expect("fund");
    let (locker, connection) = location.config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    (engine, store, locker, location)
}

/// Holds every append until the transaction ends.
async fn hold_appends(locker: &Client) {
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE")
        .await
        .expect("lock");
}

/// Waits until an append is seen waiting on the test's lock (up to 30 s:
/// a loaded machine may take a while to get the append that far). Read
/// from `pg_locks` (a lock on `events` not granted), not from the waiting
/// statement's text, which `pg_stat_activity` may show cut short or as
/// another statement of the append's pipeline (a CI run once saw no
/// waiter that way for 30 s).
async fn until_an_append_waits(locker: &Client) {
    for _ in 0..3_000 {
        let waiting: i64 = locker
            .query_one(
                "SELECT count(*) FROM pg_locks
                 WHERE relation = 'events'::regclass AND NOT granted
                   AND database = (SELECT oid FROM pg_database
                                   WHERE datname = current_database())",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no append ever waited on the lock");
}

async fn stored_keys(store: &PostgresStore, keys: &[String]) -> usize {
    store
        .find_idempotency("acme", keys)
        .await
        .expect("find")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_account_refuses_single_commands_at_once() {
    let (engine, store, locker, _database) = setup().await;
    hold_appends(&locker).await;
    let first = engine
        .submit(mutation("d-0", debit()))
        .await
        .expect("queued");
    until_an_append_waits(&locker).await;
    // The actor is stuck on its append: the mailbox fills, then refuses.
    let mut queued: Vec<Submitted> = vec![first];
    let mut refused = Vec::new();
    for i in 1..=3 * MAILBOX {
        let key = format!("d-{i}");
        match engine.submit(mutation(&key, debit())).await {
            Ok(submitted) => queued.push(submitted),
            Err(EngineError::AccountOverloaded { account, queued }) => {
                assert_eq!((account.as_str(), queued), ("acme", MAILBOX));
                refused.push(key);
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        queued.len(),
        1 + MAILBOX,
        "the one in flight and a full mailbox"
    );
    assert_eq!(refused.len(), 2 * MAILBOX);

    locker.batch_execute("COMMIT").await.expect("release");
    for submitted in queued {
        submitted
            .answer()
            .await
            .expect("queued commands are answered");
    }
    assert_eq!(
        stored_keys(&store, &refused).await,
        0,
        "refusals wrote nothing"
    );
    // Room again: the same keys go through now.
    for key in &refused {
        engine
            .execute(mutation(key, debit()))
            .await
            .expect("a retry once there is room");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_caller_left_before_it_was_decided_is_not_written() {
    let (engine, store, locker, _database) = setup().await;
    let before = store.stream_version("acme").await.unwrap();
    hold_appends(&locker).await;
    let first = engine
        .submit(mutation("kept-1", debit()))
        .await
        .expect("queued");
    until_an_append_waits(&locker).await;
    // Queued behind the stuck append; its caller gives up (a deadline)
    // before the actor gets to it.
    let abandoned = engine
        .submit(mutation("abandoned", debit()))
        .await
        .expect("queued");
    drop(abandoned);
    let kept = engine
        .submit(mutation("kept-2", debit()))
        .await
        .expect("queued");

    locker.batch_execute("COMMIT").await.expect("release");
    first.answer().await.expect("answered");
    kept.answer().await.expect("answered");
    assert_eq!(
        stored_keys(&store, &["kept-1".into(), "kept-2".into()]).await,
        2
    );
    assert_eq!(
        stored_keys(&store, &["abandoned".into()]).await,
        0,
        "nothing of the abandoned command was written"
    );
    // The two kept debits, one event each: nothing else in the stream.
    assert_eq!(store.stream_version("acme").await.unwrap(), before + 2);
    // A retry decides it afresh.
    engine
        .execute(mutation("abandoned", debit()))
        .await
        .expect("the retry is decided");
}
