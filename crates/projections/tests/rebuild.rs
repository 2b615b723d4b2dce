//! SPEC §4 invariant 6 on both stores: after a long random run, with the
//! runners restarted half-way as a crash would, every projection matches
//! the log (verify finds no difference), a rebuild reproduces it row for
//! row, and it agrees with the account aggregate the engine decides on.

use std::sync::Arc;
use std::time::Duration;

use tally_core::{
    Account, AccountId, ActionKey, BucketKind, Clock, Command, GrantCommand, GrantId,
    IdempotencyKey, ManualClock, MemberId, Millicredits, ModelName, OpenAccount, Plan,
    PlanCatalogue, PlanName, ReservationId, TimeZoneName, Timestamp,
};
use tally_engine::{Engine, EngineConfig, Mutation, decode_event};
use tally_projections::reads::{self, UsageGrouping, UsagePeriod, UsageQuery};
use tally_projections::rebuild::rebuild;
use tally_projections::verify::{dump, verify};
use tally_projections::{Freshness, Projection, Projections, RunnerConfig};
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;
use tally_store::{EventStore, ProjectionStore};
use tokio::time::Instant;

/// 2026-03-27T12:00:00Z, the weekend Berlin moves to summer time.
const START: i64 = 1_774_612_800_000;
const HOUR: i64 = 3_600_000;
const ACCOUNTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

/// A deterministic generator: the run is random but repeatable by seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn plans() -> PlanCatalogue {
    let mut catalogue = PlanCatalogue {
        version: 1,
        ..Default::default()
    };
    catalogue.plans.insert(
        PlanName::parse("daily").unwrap(),
        Plan {
            daily_allowance_millicredits: Millicredits::from_credits(20),
            monthly_allowance_millicredits: Millicredits::from_credits(300),
            ..Plan::default()
        },
    );
    catalogue.plans.insert(
        PlanName::parse("monthly").unwrap(),
        Plan {
            monthly_allowance_millicredits: Millicredits::from_credits(500),
            spending_cap_millicredits: Some(Millicredits::from_credits(450)),
            ..Plan::default()
        },
    );
    catalogue
}

fn mutation(account: &str, key: String, command: Command) -> Mutation {
    Mutation {
        account: AccountId::parse(account).unwrap(),
        idempotency_key: IdempotencyKey::parse(key.clone()).unwrap(),
        fingerprint: key.into_bytes(),
        command,
    }
}

fn command(
    rng: &mut Lcg,
    step: usize,
    open_holds: &mut Vec<(String, String)>,
    account: &str,
) -> Command {
    let credits = |rng: &mut Lcg, max: u64| Millicredits::new(1 + rng.below(max * 1_000) as i64);
    let member = MemberId::parse(format!("m{}", rng.below(3))).unwrap();
    let action = ActionKey::parse(
        [
            "article.draft",
            "article.edit",
            "image.render",
            "agent.task",
        ][rng.below(4) as usize],
    )
    .unwrap();
    let model = (rng.below(2) == 0)
        .then(|| ModelName::parse(["gpt", "claude"][rng.below(2) as usize]).unwrap());
    match rng.below(10) {
        0 | 1 => Command::Grant(GrantCommand {
            grant_id: GrantId::parse(format!("g{step}")).unwrap(),
            pack: None,
            kind: [BucketKind::TopUp, BucketKind::Promotional][rng.below(2) as usize],
            source: None,
            priority: None,
            amount: credits(rng, 60),
            effective_at: None,
            expires_at: (rng.below(3) == 0).then(|| {
                Timestamp::from_millis(START + (step as i64 + 1 + rng.below(40) as i64) * HOUR)
            }),
            cost_basis: None,
            reference: format!("ref {step}"),
        }),
        2 | 3 => {
            let id = format!("r{step}");
            open_holds.push((account.to_owned(), id.clone()));
            Command::Reserve {
                reservation_id: ReservationId::parse(id).unwrap(),
                member,
                action,
                model,
                amount: Some(credits(rng, 15)),
                dimensions: None,
                ttl_millis: (1 + rng.below(6) as i64) * HOUR,
            }
        }
        4 | 5 => match open_holds.iter().position(|(a, _)| a == account) {
            Some(i) => {
                let (_, id) = open_holds.remove(i);
                let reservation_id = ReservationId::parse(id).unwrap();
                match rng.below(3) {
                    0 => Command::Release { reservation_id },
                    1 => Command::Extend {
                        reservation_id,
                        ttl_millis: 2 * HOUR,
                    },
                    _ => Command::Commit {
                        reservation_id,
                        amount: Some(credits(rng, 25)),
                        dimensions: None,
                    },
                }
            }
            None => Command::SetSpendingCap {
                cap: (rng.below(2) == 0).then(|| Millicredits::from_credits(400)),
            },
        },
        _ => Command::Debit {
            occurred_at: None,
            member,
            action,
            model,
            amount: Some(credits(rng, 12)),
            dimensions: None,
        },
    }
}

async fn events_of<S: EventStore>(store: &S, account: &str) -> Vec<tally_core::Event> {
    store
        .read_stream(account, 0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .map(|r| decode_event(r).unwrap().event)
        .collect()
}

fn runner_config() -> RunnerConfig {
    RunnerConfig {
        // Small batches: many commits, many checkpoints.
        batch: 37,
        standby_poll: Duration::from_millis(50),
        ..RunnerConfig::default()
    }
}

async fn caught_up<S: EventStore + ProjectionStore + Clone>(projections: &Projections<S>) {
    for projection in Projection::ALL {
        projections
            .wait_for(
                projection,
                Freshness::Full,
                Instant::now() + Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("{projection} did not catch up: {e}"));
    }
}

async fn rebuild_equals_live<H: Harness>(harness: H, steps: usize, seed: u64)
where
    H::Store: Clone,
{
    let (store, _location) = harness.create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(store.clone(), clock.clone(), EngineConfig::default());
    engine.publish_plans(plans()).await.unwrap();
    let mut projections = Projections::new(store.clone(), clock.clone(), runner_config());
    projections.start();

    let mut rng = Lcg(seed);
    for (i, account) in ACCOUNTS.iter().enumerate() {
        let open = Command::OpenAccount(OpenAccount {
            plan: [None, Some("daily"), Some("monthly"), Some("daily")][i]
                .map(|p| PlanName::parse(p).unwrap()),
            time_zone: Some(
                TimeZoneName::parse(
                    ["UTC", "Europe/Berlin", "America/Santiago", "Asia/Kolkata"][i],
                )
                .unwrap(),
            ),
            ..Default::default()
        });
        engine
            .execute(mutation(account, "open".into(), open))
            .await
            .unwrap();
    }
    let mut open_holds = Vec::new();
    for step in 0..steps {
        let account = ACCOUNTS[rng.below(ACCOUNTS.len() as u64) as usize];
        let command = command(&mut rng, step, &mut open_holds, account);
        // Refusals (no credits, cap, expired hold) are part of the run.
        let _ = engine
            .execute(mutation(account, format!("k{step}"), command))
            .await;
        if rng.below(8) == 0 {
            clock.advance_millis((1 + rng.below(10) as i64) * HOUR);
            engine.sweep_once().await.unwrap();
        }
        if step == steps / 2 {
            // A crash of the read side: runners stop wherever they are and
            // new ones resume from the committed checkpoints.
            projections.shutdown().await;
            projections = Projections::new(store.clone(), clock.clone(), runner_config());
            projections.start();
        }
    }
    // Many days later, so cycles renew, with a sweep to write the resets.
    clock.advance_millis(40 * 24 * HOUR);
    engine.sweep_once().await.unwrap();
    caught_up(&projections).await;
    // Reads served from the runner's memory see what the store holds.
    for account in ACCOUNTS {
        let stored = reads::balance_state(&store, account).await.unwrap();
        let cached = projections.cached_state(account);
        assert!(cached.is_some(), "{account} was not published");
        assert_eq!(cached, stored, "{account}: memory and store differ");
    }
    projections.shutdown().await;
    assert_eq!(
        projections.cached_state(ACCOUNTS[0]),
        None,
        "served after shutdown"
    );

    let now = clock.now().as_millis();
    for projection in Projection::ALL {
        let report = verify(&store, projection, 101, now).await.unwrap();
        assert!(report.is_clean(), "{projection}: {report:?}");
        assert!(report.rows_compared > 0, "{projection} compared nothing");
        let live = dump(&store, projection).await.unwrap();
        let rebuilt = rebuild(&store, &[projection], 53, || now, |_| {})
            .await
            .unwrap();
        assert!(
            rebuilt.events > steps as u64,
            "{projection} folded {} events",
            rebuilt.events
        );
        assert_eq!(
            dump(&store, projection).await.unwrap(),
            live,
            "{projection} rebuilt differently"
        );
        // The rebuilt projection caught up on a fold of its own, then
        // joined the shared one: one saved state per account remains.
        let saved = store
            .query_projection(vec![tally_store::SqlStatement::new(
                "SELECT DISTINCT projection FROM projection_account_states",
                vec![],
            )])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            saved,
            vec![vec![tally_store::SqlValue::text(
                tally_projections::ACCOUNT_FOLD
            )]],
            "states saved after rebuilding {projection}"
        );
    }

    // And each agrees with the aggregate the engine decides on.
    for account in ACCOUNTS {
        let events = events_of(&store, account).await;
        let mut expected = Account::replay(&events).unwrap();
        // Holds that ended are never part of a stored state (the engine
        // keeps them in the store): only the fold in memory has them.
        expected.resolved.clear();
        let folded = reads::balance_state(&store, account)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(folded, expected, "{account} balances state");

        let page = reads::ledger_page(
            &store,
            account,
            &reads::LedgerQuery {
                limit: 1_000_000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(page.entries.len(), events.len(), "{account} ledger length");
        // The entries chain: each starts where the one before it ended.
        for pair in page.entries.windows(2) {
            assert_eq!(
                pair[1].available_before,
                pair[0].available_after,
                "{account}: entry {} ({}) does not start where {} ({}) ended",
                pair[1].version,
                pair[1].event.type_name(),
                pair[0].version,
                pair[0].event.type_name(),
            );
        }
        let last = page.entries.last().unwrap();
        assert_eq!(last.available_after, expected.available_at(last.event.at()));
        assert!(page.entries.iter().map(|e| &e.event).eq(events.iter()));

        // Usage over every cycle adds up to what the account consumed.
        let mut cycles: Vec<Timestamp> = events
            .iter()
            .filter_map(|e| match e {
                tally_core::Event::CycleStarted { at, .. } => Some(*at),
                _ => None,
            })
            .collect();
        cycles.extend(expected.opened_at);
        cycles.sort();
        cycles.dedup();
        let mut used = Millicredits::ZERO;
        for start in cycles {
            let report = reads::usage(
                &store,
                account,
                &UsageQuery {
                    period: UsagePeriod::Cycle { start },
                    group_by: UsageGrouping::Member,
                },
            )
            .await
            .unwrap();
            used += report.total.charged;
        }
        assert_eq!(used, expected.totals.consumed, "{account} usage");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_equals_live_on_sqlite() {
    tokio::time::timeout(
        Duration::from_secs(300),
        rebuild_equals_live(SqliteHarness::default(), 1_500, 7),
    )
    .await
    .expect("finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_equals_live_on_postgres() {
    tokio::time::timeout(
        Duration::from_secs(300),
        rebuild_equals_live(PostgresHarness::new(), 1_000, 11),
    )
    .await
    .expect("finished in time");
}

/// Verify is not vacuous: a live row changed behind the projection's back
/// is reported, and a rebuild repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_tampered_row_and_rebuild_repairs_it() {
    let (store, _location) = SqliteHarness::default().create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(store.clone(), clock.clone(), EngineConfig::default());
    engine
        .execute(mutation(
            "acme",
            "open".into(),
            Command::OpenAccount(OpenAccount::default()),
        ))
        .await
        .unwrap();
    let mut rng = Lcg(3);
    let mut holds = Vec::new();
    for step in 0..40 {
        let _ = engine
            .execute(mutation(
                "acme",
                format!("k{step}"),
                command(&mut rng, step, &mut holds, "acme"),
            ))
            .await;
    }
    let projections = Projections::new(store.clone(), clock.clone(), runner_config());
    projections.start();
    caught_up(&projections).await;
    projections.shutdown().await;

    let checkpoint = store.projection_checkpoint("balances").await.unwrap();
    let tampered = store
        .commit_projection(tally_store::ProjectionCommit::single(
            "balances",
            checkpoint.generation,
            checkpoint.position,
            checkpoint.schema_version,
            0,
            vec![tally_store::SqlStatement::new(
                "UPDATE account_balances SET available = available + 1",
                vec![],
            )],
        ))
        .await
        .unwrap();
    assert!(matches!(
        tampered,
        tally_store::CommitOutcome::Committed { .. }
    ));
    let report = verify(&store, Projection::Balances, 100, 0).await.unwrap();
    assert_eq!(report.differences, 1, "{report:?}");
    assert!(report.examples[0].contains("available"), "{report:?}");

    rebuild(&store, &[Projection::Balances], 100, || 0, |_| {})
        .await
        .unwrap();
    assert!(
        verify(&store, Projection::Balances, 100, 0)
            .await
            .unwrap()
            .is_clean()
    );
    engine.shutdown().await;
}
