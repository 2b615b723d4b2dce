//! SPEC §4 invariant 3: the same idempotency key never produces two
//! effects. Random sequences of mutations drawn from a small pool of keys
//! and requests (so retries and key reuse are frequent), with restarts in
//! between, run against the engine over the real embedded store.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use tally_core::{
    AccountId, ActionKey, BucketKind, Command, GrantCommand, IdempotencyKey, ManualClock, MemberId,
    Millicredits, Rejection, ReservationId, Timestamp,
};
use tally_engine::{Applied, Engine, EngineConfig, EngineError, Mutation, decode_event};
use tally_store::EventStore;
use tally_store::sqlite::SqliteStore;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Request {
    Grant(i64),
    Reserve(i64),
    Commit { reservation: usize, amount: i64 },
    Release { reservation: usize },
    Debit(i64),
}

#[derive(Clone, Debug)]
enum Step {
    Send { key: usize, request: Request },
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let amount = prop_oneof![Just(1_000i64), Just(2_500), Just(6_000)];
    let request = prop_oneof![
        amount.clone().prop_map(Request::Grant),
        amount.clone().prop_map(Request::Reserve),
        (0usize..4, amount.clone()).prop_map(|(reservation, amount)| Request::Commit {
            reservation,
            amount
        }),
        (0usize..4).prop_map(|reservation| Request::Release { reservation }),
        amount.prop_map(Request::Debit),
    ];
    prop_oneof![
        12 => (0usize..6, request).prop_map(|(key, request)| Step::Send { key, request }),
        1 => Just(Step::Restart),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    engine: Engine<SqliteStore>,
}

impl Harness {
    async fn open(dir: tempfile::TempDir, clock: Arc<ManualClock>) -> Harness {
        let store = SqliteStore::open(dir.path().join("tally.sqlite"))
            .await
            .unwrap();
        let engine = Engine::new(store, clock.clone(), EngineConfig::default());
        Harness { dir, clock, engine }
    }

    async fn restart(self) -> Harness {
        self.engine.shutdown().await;
        let Harness { dir, clock, engine } = self;
        drop(engine);
        Harness::open(dir, clock).await
    }

    async fn version(&self, account: &AccountId) -> u64 {
        self.engine
            .store()
            .stream_version(account.as_str())
            .await
            .unwrap()
    }
}

fn command(request: &Request, reservations: &[ReservationId]) -> Command {
    let member = MemberId::parse("m").unwrap();
    let action = ActionKey::parse("agent.step").unwrap();
    let pick = |i: usize| {
        reservations
            .get(i % reservations.len().max(1))
            .cloned()
            .unwrap_or_else(|| ReservationId::parse("rsv_none").unwrap())
    };
    match request {
        Request::Grant(amount) => Command::Grant(GrantCommand {
            grant_id: Engine::<SqliteStore>::mint_grant_id(),
            pack: None,
            kind: BucketKind::TopUp,
            source: None,
            priority: None,
            amount: Millicredits::new(*amount),
            effective_at: None,
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
        }),
        Request::Reserve(amount) => Command::Reserve {
            dimensions: None,
            reservation_id: Engine::<SqliteStore>::mint_reservation_id(),
            member,
            action,
            model: None,
            amount: Some(Millicredits::new(*amount)),
            ttl_millis: 60_000,
        },
        Request::Commit {
            reservation,
            amount,
        } => Command::Commit {
            dimensions: None,
            reservation_id: pick(*reservation),
            amount: Some(Millicredits::new(*amount)),
        },
        Request::Release { reservation } => Command::Release {
            reservation_id: pick(*reservation),
        },
        Request::Debit(amount) => Command::Debit {
            occurred_at: None,
            dimensions: None,
            member,
            action,
            model: None,
            amount: Some(Millicredits::new(*amount)),
        },
    }
}

async fn run(steps: Vec<Step>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let mut harness = Harness::open(tempfile::tempdir().unwrap(), clock).await;
    let account = AccountId::parse("acct").unwrap();
    harness
        .engine
        .execute(Mutation {
            account: account.clone(),
            idempotency_key: IdempotencyKey::parse("open").unwrap(),
            fingerprint: b"open".to_vec(),
            command: Command::OpenAccount(Default::default()),
        })
        .await
        .unwrap();

    // What each key's first effect answered, and for which request.
    let mut effects: HashMap<usize, (Request, Applied)> = HashMap::new();
    let mut reservations: Vec<ReservationId> = Vec::new();
    for step in steps {
        let (key, request) = match step {
            Step::Restart => {
                harness = harness.restart().await;
                continue;
            }
            Step::Send { key, request } => (key, request),
        };
        harness.clock.advance_millis(10);
        let version_before = harness.version(&account).await;
        // The fingerprint is the request as the caller sent it, never the
        // ids the server minted for it.
        let fingerprint = format!("{request:?}").into_bytes();
        let result = harness
            .engine
            .execute(Mutation {
                account: account.clone(),
                idempotency_key: IdempotencyKey::parse(format!("key-{key}")).unwrap(),
                fingerprint,
                command: command(&request, &reservations),
            })
            .await;
        let version_after = harness.version(&account).await;
        match (effects.get(&key), result) {
            (Some((first, applied)), Ok(again)) => {
                assert_eq!(
                    first, &request,
                    "a different request under a used key must be refused"
                );
                assert!(again.replayed);
                assert_eq!(again.reply, applied.reply, "a retry gets the first answer");
                assert_eq!(again.position, applied.position);
                assert_eq!(version_after, version_before, "a retry writes nothing");
            }
            (Some((first, _)), Err(EngineError::IdempotencyKeyReused { .. })) => {
                assert_ne!(first, &request);
                assert_eq!(version_after, version_before);
            }
            (None, Ok(applied)) => {
                assert!(!applied.replayed);
                assert!(version_after > version_before);
                if let tally_core::Outcome::Reserved { reservation } = &applied.reply.outcome {
                    reservations.push(reservation.id.clone());
                }
                effects.insert(key, (request, applied));
            }
            (None, Err(EngineError::Rejected(rejection))) => {
                assert!(matches!(
                    rejection,
                    Rejection::InsufficientCredits { .. }
                        | Rejection::ReservationNotFound { .. }
                        | Rejection::AlreadyResolved { .. }
                ));
                assert_eq!(
                    version_after, version_before,
                    "a refusal writes nothing and keeps the key free"
                );
            }
            (known, other) => {
                panic!("unexpected {other:?} for key {key} (first effect: {known:?})")
            }
        }
    }

    // In the log, each key's events form one contiguous run: one effect.
    let events = harness
        .engine
        .store()
        .read_stream(account.as_str(), 1, 100_000)
        .await
        .unwrap();
    let keys: Vec<Option<String>> = events
        .iter()
        .map(|e| decode_event(e).unwrap().idempotency_key)
        .collect();
    let mut runs: Vec<&Option<String>> = Vec::new();
    for key in &keys {
        if runs.last() != Some(&key) {
            runs.push(key);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for key in runs.into_iter().flatten() {
        assert!(
            seen.insert(key.clone()),
            "key {key} has two separate effects in the log"
        );
    }
    assert_eq!(
        seen.len(),
        effects.len() + 1,
        "every effect, and only effects, are in the log"
    );
    harness.engine.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_same_key_never_produces_two_effects(steps in prop::collection::vec(step(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(steps));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_key_have_one_effect() {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let harness = Harness::open(tempfile::tempdir().unwrap(), clock).await;
    let account = AccountId::parse("acct").unwrap();
    let mutation = |key: &str, command: Command| Mutation {
        account: account.clone(),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: key.as_bytes().to_vec(),
        command,
    };
    harness
        .engine
        .execute(mutation("open", Command::OpenAccount(Default::default())))
        .await
        .unwrap();
    let before = harness.version(&account).await;

    // 32 copies race; most land in the same group-commit batch.
    let grant = mutation("grant-once", command(&Request::Grant(5_000), &[]));
    let results = futures_join(&harness.engine, grant, 32).await;
    let fresh = results.iter().filter(|r| !r.replayed).count();
    assert_eq!(fresh, 1, "exactly one copy had an effect");
    assert!(
        results
            .iter()
            .all(|r| r.position == results[0].position && r.reply == results[0].reply)
    );
    assert_eq!(
        harness.version(&account).await,
        before + 1,
        "one grant event"
    );
    harness.engine.shutdown().await;
}

async fn futures_join(
    engine: &Engine<SqliteStore>,
    mutation: Mutation,
    copies: usize,
) -> Vec<Applied> {
    let tasks: Vec<_> = (0..copies)
        .map(|_| {
            let engine = engine.clone();
            let mutation = mutation.clone();
            tokio::spawn(async move { engine.execute(mutation).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("every copy succeeds"));
    }
    results
}
