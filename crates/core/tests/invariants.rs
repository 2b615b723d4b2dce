//! SPEC §4 invariants 1, 2 and 4, and the determinism of time, checked over
//! random command sequences against the pure core: grants, voids and
//! corrections, holds and debits of several actions at different prices,
//! commits, releases and extensions, spending caps set and removed, plan
//! changes across a small catalogue with allowances, billing anchors and
//! alert thresholds set, and waits short and long (so holds expire, days
//! and cycles turn).
//!
//! No oversell is judged against a reference model written in the test
//! (`tally_core::testing::model`), not against the aggregate's own balance: before each
//! hold or debit the model says what is available and whether the cap
//! allows it, and the core must accept exactly what the model can afford.
//!
//! The model, the run and the strategies live in `tally_core::testing`,
//! shared with the fuzz target `core_commands` (crates/fuzz-targets).

use proptest::prelude::*;
use tally_core::testing::run::{assert_conserved, mc};
use tally_core::testing::strategy::{op, opening, script};
use tally_core::testing::{Op, Run, Script};
use tally_core::{
    ActionKey, BucketKind, Command, Event, GrantCommand, GrantId, MemberId, OpenAccount, Rejection,
    advance,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn conservation_no_oversell_and_commits_hold_at_every_event(script in script(1..80)) {
        // Each step checks conservation, the model and in-flight
        // completion; then the log, one event at a time.
        Run::script(script).check_log();
    }

    /// Every script proptest draws has a byte form (the fuzz corpus is
    /// written so), and reads back as the same script.
    #[test]
    fn a_script_reads_back_from_its_bytes(script in script(0..80)) {
        prop_assert_eq!(Script::from_bytes(&script.to_bytes()), script);
    }

    /// Any bytes are a script, and a script read from bytes writes back
    /// to bytes that read as it again (its values are in the ranges).
    #[test]
    fn any_bytes_are_a_script(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let script = Script::from_bytes(&data);
        prop_assert_eq!(Script::from_bytes(&script.to_bytes()), script);
    }

    #[test]
    fn advancing_in_steps_or_at_once_gives_the_same_events(
        open in opening(),
        ops in prop::collection::vec(op(), 1..40),
        steps in prop::collection::vec(0i64..3_000, 1..6),
    ) {
        let mut run = Run::new(open);
        for op in ops {
            if !matches!(op, Op::Wait(_)) {
                run.step(op);
            }
        }
        let start = run.now;
        let end = start.plus_millis(steps.iter().sum());
        let mut at_once = run.account.clone();
        let once = advance(&mut at_once, end);
        let mut stepwise = run.account.clone();
        let mut stepped = Vec::new();
        let mut t = start;
        for step in steps {
            t = t.plus_millis(step);
            stepped.extend(advance(&mut stepwise, t));
        }
        prop_assert_eq!(&once, &stepped);
        prop_assert_eq!(&at_once, &stepwise);
        // Exactly once: advancing again to the same moment does nothing.
        prop_assert!(advance(&mut at_once, end).is_empty());
    }
}

/// The model is not vacuous: across runs (the same ones every time), the
/// generated commands reach every situation the checks above tell apart.
#[test]
fn the_runs_reach_refusals_caps_overage_and_plan_changes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (opening(), prop::collection::vec(op(), 40..80));
    let mut seen = std::collections::BTreeMap::new();
    let (mut cycles, mut days, mut downgrades) = (0, 0, 0);
    let (mut anchors, mut alerts) = (0, 0);
    for _ in 0..64 {
        let (open, ops) = strategy.new_tree(&mut runner).unwrap().current();
        let mut run = Run::new(open);
        for op in ops {
            run.step(op);
        }
        for (label, count) in run.seen {
            *seen.entry(label).or_insert(0) += count;
        }
        for event in &run.log {
            match event {
                Event::CycleStarted { .. } => cycles += 1,
                Event::DayStarted { .. } => days += 1,
                Event::PlanChanged {
                    at, effective_at, ..
                } if effective_at > at => downgrades += 1,
                Event::BillingAnchorSet { .. } => anchors += 1,
                Event::AlertRaised { .. } => alerts += 1,
                _ => {}
            }
        }
    }
    for label in [
        "accepted",
        "INSUFFICIENT_CREDITS",
        "SPENDING_CAP_REACHED",
        "overage",
        "late",
        "refunded",
    ] {
        assert!(
            seen.get(label).is_some_and(|n| *n > 0),
            "never {label}: {seen:?}"
        );
    }
    assert!(
        cycles > 64 && days > 0 && downgrades > 0,
        "{cycles} cycles, {days} days, {downgrades} downgrades"
    );
    assert!(
        anchors > 0 && alerts > 0,
        "{anchors} anchors set, {alerts} alerts raised"
    );
}

/// Past the ceiling of what its lifetime totals may reach, an account
/// refuses every command with a typed reason, and changes nothing, rather
/// than let a sum overflow.
#[test]
fn totals_past_the_ceiling_refuse_every_command() {
    let mut run = Run::new(OpenAccount::default());
    let grant = |run: &mut Run, amount: i64| {
        let grant_id = GrantId::parse(run.mint("g")).unwrap();
        run.execute(Command::Grant(GrantCommand {
            grant_id,
            pack: None,
            kind: BucketKind::TopUp,
            source: None,
            priority: None,
            amount: mc(amount),
            effective_at: None,
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
        }))
    };
    let quarter = i64::MAX / 4;
    grant(&mut run, quarter).expect("below the ceiling");
    grant(&mut run, quarter).expect("still below");
    assert_eq!(run.account.total_past_ceiling(), None);
    grant(&mut run, 2).expect("the total reaches the ceiling with this one");
    assert_eq!(run.account.total_past_ceiling(), Some("granted"));
    assert_conserved(&run.account);

    let refused = grant(&mut run, 1);
    assert_eq!(refused, Err(Rejection::TotalsOverflow { total: "granted" }));
    assert_eq!(refused.unwrap_err().reason(), "TOTALS_OVERFLOW");
    let debit = run.execute(Command::Debit {
        member: MemberId::parse("alice").unwrap(),
        action: ActionKey::parse("article.draft").unwrap(),
        model: None,
        amount: Some(mc(1)),
        dimensions: None,
        occurred_at: None,
    });
    assert!(matches!(debit, Err(Rejection::TotalsOverflow { .. })));
}
