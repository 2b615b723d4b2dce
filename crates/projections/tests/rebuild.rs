//! SPEC §4 invariant 6 on both stores: after a random run of commands on
//! four accounts (a proptest strategy), with the runners restarted
//! half-way as a crash would, every projection matches the log (verify
//! finds no difference), a rebuild reproduces it row for row, and it
//! agrees with the account aggregate the engine decides on. The ledger is
//! checked against an oracle of its own: each entry starts where the one
//! before it ended, and moves the available balance by exactly the signed
//! effect worked out from its event.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use support::{caught_up, projection_indexes};
use tally_core::{
    Account, AccountId, ActionKey, BucketKind, Clock, Command, Event, GrantCommand, GrantId,
    IdempotencyKey, ManualClock, MemberId, Millicredits, ModelName, OpenAccount, Plan,
    PlanCatalogue, PlanName, ReservationId, TimeZoneName, Timestamp,
};
use tally_engine::{Engine, EngineConfig, Mutation, decode_event};
use tally_projections::reads::{self, UsageGrouping, UsagePeriod, UsageQuery};
use tally_projections::rebuild::rebuild;
use tally_projections::verify::{dump, verify};
use tally_projections::{Projection, Projections, RunnerConfig};
use tally_store::conformance::Harness;
use tally_store::postgres::PostgresHarness;
use tally_store::sqlite::SqliteHarness;
use tally_store::{EventStore, ProjectionStore};

/// 2026-03-27T12:00:00Z, the weekend Berlin moves to summer time.
const START: i64 = 1_774_612_800_000;
const HOUR: i64 = 3_600_000;
const ACCOUNTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

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

const ACTIONS: [&str; 4] = [
    "article.draft",
    "article.edit",
    "image.render",
    "agent.task",
];
const MODELS: [&str; 2] = ["gpt", "claude"];

/// Who acts and on what: a member, an action and perhaps a model.
#[derive(Clone, Debug)]
struct Actor {
    member: u8,
    action: usize,
    model: Option<usize>,
}

/// What happens to the account's oldest hold the test still knows open.
#[derive(Clone, Debug)]
enum Resolve {
    Release,
    Extend,
    Commit(i64),
}

#[derive(Clone, Debug)]
enum Cmd {
    Grant {
        kind: BucketKind,
        amount: i64,
        expires_in_hours: Option<i64>,
        /// A grant that becomes effective later (upcoming until then).
        effective_in_hours: Option<i64>,
    },
    Reserve {
        by: Actor,
        amount: i64,
        ttl_hours: i64,
    },
    /// Without an open hold: sets the spending cap (true) or removes it
    /// instead.
    Resolve(Resolve, bool),
    Debit {
        by: Actor,
        amount: i64,
    },
    /// Voids one of the account's grants, picked by index.
    Void(usize),
    /// An operator's signed correction.
    Adjust(i64),
    /// Refunds part (or, `None`, the rest) of one of the account's charges,
    /// picked by index.
    Refund(usize, Option<i64>),
}

/// One step of a run: a command on one account, then perhaps some hours
/// pass and the sweep writes what they made due.
#[derive(Clone, Debug)]
struct Step {
    account: usize,
    cmd: Cmd,
    wait_hours: Option<i64>,
}

fn actor() -> impl Strategy<Value = Actor> {
    (
        0u8..3,
        0..ACTIONS.len(),
        proptest::option::of(0..MODELS.len()),
    )
        .prop_map(|(member, action, model)| Actor {
            member,
            action,
            model,
        })
}

/// Credits up to `max`, in milli-credits.
fn credits(max: i64) -> impl Strategy<Value = i64> {
    1..=max * 1_000
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let resolve = prop_oneof![
        Just(Resolve::Release),
        Just(Resolve::Extend),
        credits(25).prop_map(Resolve::Commit),
    ];
    prop_oneof![
        4 => (
            prop_oneof![Just(BucketKind::TopUp), Just(BucketKind::Promotional)],
            credits(60),
            proptest::option::weighted(0.33, 1i64..=40),
            proptest::option::weighted(0.15, 1i64..=48),
        )
            .prop_map(|(kind, amount, expires_in_hours, effective_in_hours)| Cmd::Grant {
                kind,
                amount,
                expires_in_hours,
                effective_in_hours,
            }),
        4 => (actor(), credits(15), 1i64..=6)
            .prop_map(|(by, amount, ttl_hours)| Cmd::Reserve { by, amount, ttl_hours }),
        4 => (resolve, any::<bool>()).prop_map(|(resolve, cap)| Cmd::Resolve(resolve, cap)),
        7 => (actor(), credits(12)).prop_map(|(by, amount)| Cmd::Debit { by, amount }),
        1 => any::<usize>().prop_map(Cmd::Void),
        1 => prop_oneof![-20_000i64..=-1, 1i64..=20_000].prop_map(Cmd::Adjust),
        2 => (any::<usize>(), proptest::option::weighted(0.5, 1i64..=8_000))
            .prop_map(|(pick, amount)| Cmd::Refund(pick, amount)),
    ]
}

fn steps(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Step>> {
    let step = (
        0..ACCOUNTS.len(),
        cmd(),
        proptest::option::weighted(0.125, 1i64..=10),
    )
        .prop_map(|(account, cmd, wait_hours)| Step {
            account,
            cmd,
            wait_hours,
        });
    prop::collection::vec(step, len)
}

/// What the test knows of each account while it runs: the holds it asked
/// for (answered or refused) and the grants it made.
#[derive(Default)]
struct Known {
    open_holds: Vec<(usize, String)>,
    grants: Vec<Vec<String>>,
    /// The keys of debits and commits asked for, per account (a refused
    /// one makes a refund of it refused too).
    charges: Vec<Vec<String>>,
}

fn command(step: &Step, index: usize, known: &mut Known, now: Timestamp) -> Command {
    let actor = |by: &Actor| {
        (
            MemberId::parse(format!("m{}", by.member)).unwrap(),
            ActionKey::parse(ACTIONS[by.action]).unwrap(),
            by.model.map(|m| ModelName::parse(MODELS[m]).unwrap()),
        )
    };
    let account = step.account;
    match &step.cmd {
        Cmd::Grant {
            kind,
            amount,
            expires_in_hours,
            effective_in_hours,
        } => {
            let id = format!("g{index}");
            known.grants[account].push(id.clone());
            let effective_at = effective_in_hours.map(|h| now.plus_millis(h * HOUR));
            Command::Grant(GrantCommand {
                grant_id: GrantId::parse(id).unwrap(),
                pack: None,
                kind: *kind,
                source: None,
                priority: None,
                amount: Millicredits::new(*amount),
                effective_at,
                expires_at: expires_in_hours
                    .map(|h| effective_at.unwrap_or(now).plus_millis(h * HOUR)),
                cost_basis: None,
                reference: format!("ref {index}"),
            })
        }
        Cmd::Reserve {
            by,
            amount,
            ttl_hours,
        } => {
            let id = format!("r{index}");
            known.open_holds.push((account, id.clone()));
            let (member, action, model) = actor(by);
            Command::Reserve {
                reservation_id: ReservationId::parse(id).unwrap(),
                member,
                action,
                model,
                amount: Some(Millicredits::new(*amount)),
                dimensions: None,
                ttl_millis: ttl_hours * HOUR,
            }
        }
        Cmd::Resolve(resolve, cap) => {
            match known.open_holds.iter().position(|(a, _)| *a == account) {
                Some(i) => {
                    let (_, id) = known.open_holds.remove(i);
                    let reservation_id = ReservationId::parse(id).unwrap();
                    match resolve {
                        Resolve::Release => Command::Release { reservation_id },
                        Resolve::Extend => Command::Extend {
                            reservation_id,
                            ttl_millis: 2 * HOUR,
                        },
                        Resolve::Commit(amount) => {
                            known.charges[account].push(format!("k{index}"));
                            Command::Commit {
                                reservation_id,
                                amount: Some(Millicredits::new(*amount)),
                                dimensions: None,
                            }
                        }
                    }
                }
                None => Command::SetSpendingCap {
                    cap: cap.then(|| Millicredits::from_credits(400)),
                },
            }
        }
        Cmd::Debit { by, amount } => {
            known.charges[account].push(format!("k{index}"));
            let (member, action, model) = actor(by);
            Command::Debit {
                occurred_at: None,
                member,
                action,
                model,
                amount: Some(Millicredits::new(*amount)),
                dimensions: None,
            }
        }
        Cmd::Void(pick) => {
            let grants = &known.grants[account];
            let id = match grants.len() {
                0 => "g-none".to_owned(),
                n => grants[pick % n].clone(),
            };
            Command::VoidGrant {
                grant_id: GrantId::parse(id).unwrap(),
                reason: "test".into(),
            }
        }
        Cmd::Adjust(amount) => Command::Adjust {
            amount: Millicredits::new(*amount),
            grant_id: GrantId::parse(format!("adj{index}")).unwrap(),
            reason: "correction".into(),
            operator: "ops".into(),
        },
        Cmd::Refund(pick, amount) => {
            let charges = &known.charges[account];
            let key = match charges.len() {
                0 => "k-none".to_owned(),
                n => charges[pick % n].clone(),
            };
            Command::Refund {
                charge_key: IdempotencyKey::parse(key).unwrap(),
                amount: amount.map(Millicredits::new),
                reason: "refund".into(),
                refund_grant_id: GrantId::parse(format!("rf{index}")).unwrap(),
            }
        }
    }
}

/// The window in which a bucket's credits count as available, as the
/// ledger sees it: from its effective time to its expiry, both included
/// (an expiry at the event's instant still shows on both sides), unless
/// voided.
#[derive(Clone, Copy)]
struct Window {
    effective_at: Timestamp,
    expires_at: Option<Timestamp>,
    voided: bool,
}

impl Window {
    fn counts_at(&self, at: Timestamp) -> bool {
        !self.voided && self.effective_at <= at && self.expires_at.is_none_or(|e| e >= at)
    }
}

/// What an event does to the available balance, worked out from the event
/// alone and the windows of the buckets it names (learnt from the grants
/// before it): credits moved into a bucket that counts add, credits moved
/// out of one subtract, everything else (held credits, upcoming, expired
/// or voided buckets) does not show. The ledger's `available_after −
/// available_before` must be exactly this.
fn signed_effect(windows: &mut HashMap<GrantId, Window>, event: &Event) -> i64 {
    let at = event.at();
    let counted = |windows: &HashMap<GrantId, Window>, draws: &[tally_core::Draw]| -> i64 {
        draws
            .iter()
            .filter(|d| windows[&d.grant_id].counts_at(at))
            .map(|d| d.amount.get())
            .sum()
    };
    match event {
        Event::CreditsGranted {
            grant_id,
            amount,
            effective_at,
            expires_at,
            ..
        } => {
            let window = Window {
                effective_at: *effective_at,
                expires_at: *expires_at,
                voided: false,
            };
            windows.insert(grant_id.clone(), window);
            if window.counts_at(at) {
                amount.get()
            } else {
                0
            }
        }
        Event::CreditsAdjusted {
            amount,
            grant_id,
            draws,
            ..
        } => match grant_id {
            Some(grant_id) => {
                windows.insert(
                    grant_id.clone(),
                    Window {
                        effective_at: at,
                        expires_at: None,
                        voided: false,
                    },
                );
                amount.get()
            }
            None => -counted(windows, draws),
        },
        Event::GrantTookEffect {
            grant_id, amount, ..
        } => {
            let window = windows.get_mut(grant_id).expect("a granted bucket");
            assert_eq!(
                window.effective_at, at,
                "takes effect at its effective time"
            );
            amount.get()
        }
        Event::GrantVoided {
            grant_id, amount, ..
        } => {
            let window = windows.get_mut(grant_id).expect("a granted bucket");
            let effect = if window.counts_at(at) {
                -amount.get()
            } else {
                0
            };
            window.voided = true;
            effect
        }
        Event::CreditsHeld { reservation, .. } => -counted(windows, &reservation.draws),
        Event::HoldReleased { returned, .. } | Event::HoldExpired { returned, .. } => {
            counted(windows, returned)
        }
        Event::CreditsDebited { debit, .. } => {
            counted(windows, &debit.returned) - counted(windows, &debit.from_available)
        }
        Event::CreditsRefunded { refund, .. } => {
            let new_bucket = refund.refund_grant.as_ref().map_or(0, |draw| {
                windows.insert(
                    draw.grant_id.clone(),
                    Window {
                        effective_at: at,
                        expires_at: None,
                        voided: false,
                    },
                );
                draw.amount.get()
            });
            counted(windows, &refund.returned) + new_bucket
        }
        Event::OverageRepaid { draws, .. } => -counted(windows, draws),
        Event::BucketExpired {
            grant_id, amount, ..
        } => {
            if windows[grant_id].counts_at(at) {
                -amount.get()
            } else {
                0
            }
        }
        Event::AccountOpened { .. }
        | Event::CycleStarted { .. }
        | Event::DayStarted { .. }
        | Event::PlanChanged { .. }
        | Event::SpendingCapSet { .. }
        | Event::BillingAnchorSet { .. }
        | Event::HoldExtended { .. }
        | Event::AlertThresholdsSet { .. }
        | Event::AlertRaised { .. } => 0,
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
        // Small batches, even when behind: many commits, many checkpoints.
        batch: 37,
        max_batch: 37,
        standby_poll: Duration::from_millis(50),
        ..RunnerConfig::default()
    }
}

async fn rebuild_equals_live<H: Harness>(harness: H, steps: Vec<Step>)
where
    H::Store: Clone,
{
    let (store, _location) = harness.create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(store.clone(), clock.clone(), EngineConfig::default());
    engine.publish_plans(plans()).await.unwrap();
    let mut projections = Projections::new(store.clone(), clock.clone(), runner_config());
    projections.start();

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
    let mut known = Known {
        grants: vec![Vec::new(); ACCOUNTS.len()],
        charges: vec![Vec::new(); ACCOUNTS.len()],
        ..Known::default()
    };
    let half = steps.len() / 2;
    for (index, step) in steps.iter().enumerate() {
        let command = command(step, index, &mut known, clock.now());
        // Refusals (no credits, cap, expired hold) are part of the run.
        let _ = engine
            .execute(mutation(
                ACCOUNTS[step.account],
                format!("k{index}"),
                command,
            ))
            .await;
        if let Some(hours) = step.wait_hours {
            clock.advance_millis(hours * HOUR);
            engine.sweep_once().await.unwrap();
        }
        if index == half {
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
    let logged = store.read_log(None, 1_000_000).await.unwrap().len() as u64;
    for projection in Projection::ALL {
        let report = verify(&store, projection, 101, now).await.unwrap();
        assert!(report.is_clean(), "{projection}: {report:?}");
        assert!(report.rows_compared > 0, "{projection} compared nothing");
        let live = dump(&store, projection).await.unwrap();
        let rebuilt = rebuild(&store, &[projection], 53, || now, |_| {})
            .await
            .unwrap();
        assert_eq!(
            rebuilt.events, logged,
            "{projection} folded other than the whole log"
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

    // All three in one pass: the shared fold, each batch read and folded
    // while the one before it commits.
    let mut live = Vec::new();
    for projection in Projection::ALL {
        live.push(dump(&store, projection).await.unwrap());
    }
    let rebuilt = rebuild(&store, &Projection::ALL, 53, || now, |_| {})
        .await
        .unwrap();
    assert_eq!(rebuilt.events, logged, "the whole log, once");
    for (projection, live) in Projection::ALL.into_iter().zip(live) {
        assert_eq!(
            dump(&store, projection).await.unwrap(),
            live,
            "{projection} rebuilt differently in one pass"
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
        // The entries chain: each starts where the one before it ended,
        // and moves the balance by exactly what its event says (a grant
        // that becomes effective later has an entry of its own when it
        // does).
        let mut windows = HashMap::new();
        for (i, entry) in page.entries.iter().enumerate() {
            if i > 0 {
                let previous = &page.entries[i - 1];
                assert_eq!(
                    entry.available_before,
                    previous.available_after,
                    "{account}: entry {} ({}) does not start where {} ({}) ended",
                    entry.version,
                    entry.event.type_name(),
                    previous.version,
                    previous.event.type_name(),
                );
            }
            let effect = signed_effect(&mut windows, &entry.event);
            assert_eq!(
                (entry.available_after - entry.available_before).get(),
                effect,
                "{account}: entry {} ({}) moved the balance from {} to {}: {:?}",
                entry.version,
                entry.event.type_name(),
                entry.available_before,
                entry.available_after,
                entry.event,
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

/// One case on a runtime of its own, as a test of its own would have.
fn run_case<H: Harness>(harness: H, steps: Vec<Step>)
where
    H::Store: Clone,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(120),
            rebuild_equals_live(harness, steps),
        )
        .await
        .expect("finished in time")
    });
}

proptest! {
    // Each case is a whole store, engine and set of runners; a failure
    // shrinks for a bounded while.
    #![proptest_config(ProptestConfig {
        cases: 12,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn rebuild_equals_live_on_sqlite(steps in steps(100..400)) {
        run_case(SqliteHarness::default(), steps);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    })]

    #[test]
    fn rebuild_equals_live_on_postgres(steps in steps(100..300)) {
        run_case(PostgresHarness::new(), steps);
    }
}

/// Verify is not vacuous: a live row changed behind the projection's back
/// is reported, and a rebuild repairs it.
/// An embedded store holding forty steps on one account, its projections
/// caught up and stopped.
async fn forty_steps_on_sqlite() -> (
    tally_store::sqlite::SqliteStore,
    <SqliteHarness as Harness>::Location,
) {
    let (store, location) = SqliteHarness::default().create().await;
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
    // Forty steps on the one account, the same in every run.
    let mut runner = TestRunner::deterministic();
    let mut known = Known {
        grants: vec![Vec::new(); ACCOUNTS.len()],
        charges: vec![Vec::new(); ACCOUNTS.len()],
        ..Known::default()
    };
    let run = steps(40..41).new_tree(&mut runner).unwrap().current();
    for (index, step) in run.into_iter().enumerate() {
        let step = Step { account: 0, ..step };
        let _ = engine
            .execute(mutation(
                "acme",
                format!("k{index}"),
                command(&step, index, &mut known, clock.now()),
            ))
            .await;
    }
    let projections = Projections::new(store.clone(), clock.clone(), runner_config());
    projections.start();
    caught_up(&projections).await;
    projections.shutdown().await;
    engine.shutdown().await;
    (store, location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_tampered_row_and_rebuild_repairs_it() {
    let (store, _location) = forty_steps_on_sqlite().await;
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
}

/// The embedded store's rebuild loads the tables without the indexes only
/// reads walk, then builds each again as it was, saying so in its
/// progress; the rows are the ones a fold with the indexes wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_builds_again_the_indexes_it_loaded_without() {
    let (store, _location) = forty_steps_on_sqlite().await;
    let before = projection_indexes(&store).await;
    assert!(
        before
            .iter()
            .any(|row| row[0].as_text() == Some("ledger_entries_by_member")),
        "{before:?}"
    );
    let mut live = Vec::new();
    for projection in Projection::ALL {
        live.push(dump(&store, projection).await.unwrap());
    }
    let mut progress = Vec::new();
    let report = rebuild(&store, &Projection::ALL, 7, || 0, |p| progress.push(p))
        .await
        .unwrap();
    assert_eq!(projection_indexes(&store).await, before);
    for (projection, live) in Projection::ALL.into_iter().zip(live) {
        assert_eq!(
            dump(&store, projection).await.unwrap(),
            live,
            "{projection}"
        );
    }
    let last = progress.last().unwrap();
    assert!(last.building_indexes, "{progress:?}");
    assert_eq!(last.events, report.events);
    assert_eq!(
        progress.iter().filter(|p| p.building_indexes).count(),
        1,
        "{progress:?}"
    );
}

/// A grant that becomes effective later lifts the available balance when
/// it does. Found by the ledger oracle: no event marked that moment, so the
/// next entry started from more than the one before it left. Now the
/// moment has its own event (`grant_took_effect`) and ledger entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcoming_grant_taking_effect_keeps_the_ledger_chained() {
    let (store, _location) = SqliteHarness::default().create().await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let engine = Engine::new(store.clone(), clock.clone(), EngineConfig::default());
    let run = |key: &str, command: Command| engine.execute(mutation("acme", key.into(), command));
    run("open", Command::OpenAccount(OpenAccount::default()))
        .await
        .unwrap();
    run(
        "grant",
        Command::Grant(GrantCommand {
            grant_id: GrantId::parse("later").unwrap(),
            pack: None,
            kind: BucketKind::TopUp,
            source: None,
            priority: None,
            amount: Millicredits::from_credits(10),
            effective_at: Some(Timestamp::from_millis(START + HOUR)),
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
        }),
    )
    .await
    .unwrap();
    clock.advance_millis(2 * HOUR);
    run(
        "debit",
        Command::Debit {
            member: MemberId::parse("m").unwrap(),
            action: ActionKey::parse("agent.task").unwrap(),
            model: None,
            amount: Some(Millicredits::from_credits(1)),
            dimensions: None,
            occurred_at: None,
        },
    )
    .await
    .unwrap();
    let projections = Projections::new(store.clone(), clock.clone(), runner_config());
    projections.start();
    caught_up(&projections).await;
    projections.shutdown().await;
    let page = reads::ledger_page(
        &store,
        "acme",
        &reads::LedgerQuery {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .unwrap();
    let shown: Vec<_> = page
        .entries
        .iter()
        .map(|e| {
            (
                e.event.type_name(),
                e.available_before.get(),
                e.available_after.get(),
            )
        })
        .collect();
    for pair in shown.windows(2) {
        assert_eq!(pair[1].1, pair[0].2, "the ledger does not chain: {shown:?}");
    }
    assert!(
        shown.contains(&("grant_took_effect", 0, 10_000)),
        "the moment the grant took effect has its entry: {shown:?}"
    );
    engine.shutdown().await;
}
