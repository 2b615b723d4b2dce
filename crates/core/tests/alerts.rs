//! Alerts (`docs/alerts.md`): each kind fires exactly at its crossing,
//! once per cycle unless re-armed, in a fixed order, under the account's
//! thresholds, else the plan's, else the defaults. A property test checks
//! random histories against the rules recomputed from the aggregate, and
//! that a sweep at every boundary and a lazy advance write the same events.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tally_core::{
    Account, ActionKey, Alert, AlertKey, AlertThresholds, AutoTopUp, BillingAnchor, BucketKind,
    Command, Context, Event, GrantCommand, GrantId, MemberId, Millicredits, OpenAccount, Pack,
    PackName, Plan, PlanCatalogue, PlanName, RateCards, Rejection, ReservationId, Severity,
    TimeZoneName, Timestamp, advance, execute, next_due,
};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-01-15T00:00:00Z.
const START: Timestamp = Timestamp::from_millis(1_768_435_200_000);

fn credits(c: i64) -> Millicredits {
    Millicredits::from_credits(c)
}

fn mc(v: i64) -> Millicredits {
    Millicredits::new(v)
}

fn pack(name: &str) -> PackName {
    PackName::parse(name).unwrap()
}

/// Plans `free` (no allowance), `pro` (1,000 credits a month, alerts below
/// 500 credits and at 50 % and 90 %) and a pack `popular` of 500 credits.
fn catalogue() -> PlanCatalogue {
    let mut plans = PlanCatalogue {
        version: 1,
        ..Default::default()
    };
    plans
        .plans
        .insert(PlanName::parse("free").unwrap(), Plan::default());
    plans.plans.insert(
        PlanName::parse("pro").unwrap(),
        Plan {
            monthly_allowance_millicredits: credits(1_000),
            alerts: AlertThresholds {
                low_balance_millicredits: vec![credits(500)],
                critical_level_millicredits: credits(10),
                usage_percent: vec![50, 90],
                auto_top_up: None,
            },
            ..Plan::default()
        },
    );
    plans.packs.insert(
        pack("popular"),
        Pack {
            credits_millicredits: credits(500),
            expires_after_months: None,
            cost_basis: None,
        },
    );
    plans
}

struct Run {
    account: Account,
    now: Timestamp,
    plans: PlanCatalogue,
    cards: RateCards,
    log: Vec<Event>,
    next_id: u64,
}

impl Run {
    fn new(plans: PlanCatalogue) -> Run {
        Run {
            account: Account::default(),
            now: START,
            plans,
            cards: RateCards::default(),
            log: Vec::new(),
            next_id: 0,
        }
    }

    /// An account opened on `plan` (UTC, renewing on the 15th at midnight).
    fn opened(plan: Option<&str>, cap: Option<Millicredits>) -> Run {
        let mut run = Run::new(catalogue());
        run.run(Command::OpenAccount(OpenAccount {
            plan: plan.map(|p| PlanName::parse(p).unwrap()),
            time_zone: Some(TimeZoneName::default()),
            anchor: Some(BillingAnchor::new(15, 0, 0).unwrap()),
            trial: false,
            spending_cap: cap,
            test_clock: None,
        }))
        .expect("opens");
        run
    }

    /// Like the engine: advance to now, then execute. Returns the command's
    /// own events (not what time made due first).
    fn run(&mut self, command: Command) -> Result<Vec<Event>, Rejection> {
        let ticked = advance(&mut self.account, self.now);
        self.log.extend(ticked);
        let ctx = Context {
            now: self.now,
            rate_cards: &self.cards,
            plans: &self.plans,
        };
        let decision = execute(&mut self.account, &command, &ctx)?;
        self.log.extend(decision.events.clone());
        Ok(decision.events)
    }

    /// Moves the clock and lets time work, like the sweep.
    fn wait(&mut self, millis: i64) -> Vec<Event> {
        self.now = self.now.plus_millis(millis);
        let due = advance(&mut self.account, self.now);
        self.log.extend(due.clone());
        due
    }

    fn mint(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn grant_expiring(
        &mut self,
        amount: Millicredits,
        expires_at: Option<Timestamp>,
    ) -> Vec<Event> {
        let grant_id = GrantId::parse(self.mint("g")).unwrap();
        self.run(Command::Grant(GrantCommand {
            grant_id,
            pack: None,
            kind: BucketKind::TopUp,
            source: None,
            priority: None,
            amount,
            effective_at: None,
            expires_at,
            cost_basis: None,
            reference: String::new(),
        }))
        .expect("grants")
    }

    fn grant(&mut self, amount: Millicredits) -> Vec<Event> {
        self.grant_expiring(amount, None)
    }

    fn grant_pack(&mut self, name: &str) -> Vec<Event> {
        let grant_id = GrantId::parse(self.mint("g")).unwrap();
        self.run(Command::Grant(GrantCommand {
            grant_id,
            pack: Some(pack(name)),
            kind: BucketKind::TopUp,
            source: None,
            priority: None,
            amount: Millicredits::ZERO,
            effective_at: None,
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
        }))
        .expect("grants the pack")
    }

    fn debit(&mut self, amount: Millicredits) -> Vec<Event> {
        self.run(Command::Debit {
            occurred_at: None,
            member: MemberId::parse("alice").unwrap(),
            action: ActionKey::parse("article.draft").unwrap(),
            model: None,
            amount: Some(amount),
            dimensions: None,
        })
        .expect("debits")
    }

    fn reserve(&mut self, amount: Millicredits) -> (ReservationId, Vec<Event>) {
        let id = ReservationId::parse(self.mint("r")).unwrap();
        let events = self
            .run(Command::Reserve {
                reservation_id: id.clone(),
                member: MemberId::parse("alice").unwrap(),
                action: ActionKey::parse("article.draft").unwrap(),
                model: None,
                amount: Some(amount),
                dimensions: None,
                ttl_millis: HOUR,
            })
            .expect("reserves");
        (id, events)
    }

    fn release(&mut self, id: &ReservationId) -> Vec<Event> {
        self.run(Command::Release {
            reservation_id: id.clone(),
        })
        .expect("releases")
    }

    fn commit(&mut self, id: &ReservationId, amount: Millicredits) -> Vec<Event> {
        self.run(Command::Commit {
            reservation_id: id.clone(),
            amount: Some(amount),
            dimensions: None,
        })
        .expect("commits")
    }

    fn set_thresholds(&mut self, thresholds: Option<AlertThresholds>) -> Vec<Event> {
        self.run(Command::SetAlertThresholds { thresholds })
            .expect("sets thresholds")
    }
}

fn alerts(events: &[Event]) -> Vec<Alert> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AlertRaised { alert, .. } => Some(alert.clone()),
            _ => None,
        })
        .collect()
}

/// A low-balance alert under thresholds whose critical level is the
/// default, 10 credits.
fn low(threshold: i64, available: Millicredits) -> Alert {
    Alert::LowBalance {
        threshold: credits(threshold),
        available,
        severity: if threshold <= 10 {
            Severity::Critical
        } else {
            Severity::Warning
        },
    }
}

#[test]
fn low_balance_fires_once_when_the_balance_drops_below_each_default_level() {
    let mut run = Run::opened(None, None);
    run.grant(credits(150));
    assert_eq!(
        alerts(&run.debit(credits(50))),
        vec![],
        "150 to 100: not below 100"
    );
    assert_eq!(
        alerts(&run.debit(mc(1))),
        vec![low(100, mc(99_999))],
        "100 to 99.999: below 100"
    );
    assert_eq!(alerts(&run.debit(credits(50))), vec![], "already below 100");
    assert_eq!(alerts(&run.debit(credits(40))), vec![low(10, mc(9_999))]);
    assert_eq!(
        alerts(&run.debit(mc(9_999))),
        vec![Alert::Depleted {
            overage: Millicredits::ZERO
        }]
    );
    assert_eq!(alerts(&run.log).len(), 3, "each fired once: {:?}", run.log);
}

#[test]
fn alerts_follow_the_events_that_crossed_in_a_fixed_order() {
    let mut run = Run::opened(None, None);
    run.grant(credits(150));
    let events = run.debit(credits(150));
    assert!(matches!(events[0], Event::CreditsDebited { .. }));
    let at: Vec<Timestamp> = events[1..].iter().map(Event::at).collect();
    assert_eq!(at, vec![run.now; 3], "stamped with the command's time");
    assert_eq!(
        alerts(&events),
        vec![
            Alert::Depleted {
                overage: Millicredits::ZERO
            },
            low(100, Millicredits::ZERO),
            low(10, Millicredits::ZERO),
        ]
    );
    assert_eq!(events.len(), 4);
}

#[test]
fn a_hold_and_release_around_a_level_alert_once() {
    let mut run = Run::opened(None, None);
    run.grant(credits(150));
    let (first, held) = run.reserve(credits(60));
    assert_eq!(
        alerts(&held),
        vec![low(100, credits(90))],
        "a hold counts at once"
    );
    run.release(&first);
    let (_, held_again) = run.reserve(credits(60));
    assert_eq!(
        alerts(&held_again),
        vec![],
        "a release is not a grant: no re-arm"
    );
}

#[test]
fn a_grant_rearms_the_level_alerts_it_lifts_the_balance_back_to() {
    let mut run = Run::opened(None, None);
    run.grant(credits(150));
    run.debit(credits(145)); // 5 left: depleted no, below 100 and 10 yes
    assert_eq!(
        run.account.alerts_fired,
        BTreeSet::from([
            AlertKey::LowBalance(credits(100)),
            AlertKey::LowBalance(credits(10))
        ])
    );
    run.grant(credits(20)); // 25: back above 10, not above 100
    assert_eq!(
        run.account.alerts_fired,
        BTreeSet::from([AlertKey::LowBalance(credits(100))])
    );
    assert_eq!(alerts(&run.debit(credits(20))), vec![low(10, credits(5))]);
    assert_eq!(
        alerts(&run.grant(credits(200))),
        vec![],
        "a rise never alerts"
    );
    assert_eq!(
        alerts(&run.debit(credits(150))),
        vec![low(100, credits(55))],
        "a top-up followed by a new drop alerts again"
    );
}

#[test]
fn depleted_fires_when_overage_begins_and_a_partial_repayment_does_not_rearm_it_for_nothing() {
    let mut run = Run::opened(None, None);
    run.set_thresholds(Some(AlertThresholds {
        low_balance_millicredits: vec![],
        critical_level_millicredits: credits(10),
        usage_percent: vec![],
        auto_top_up: None,
    }));
    run.grant(credits(10));
    let (id, held) = run.reserve(credits(5));
    assert_eq!(alerts(&held), vec![]);
    let committed = run.commit(&id, credits(20));
    assert_eq!(
        alerts(&committed),
        vec![Alert::Depleted {
            overage: credits(10)
        }],
        "5 held + 5 available paid, 10 became overage"
    );
    // 4 credits pay part of the debt: still depleted, no new alert.
    assert_eq!(alerts(&run.grant(credits(4))), vec![]);
    assert_eq!(run.account.overage, credits(6));
    // Enough to clear the debt and leave credits: re-armed, and the next
    // time the balance runs out it alerts again.
    assert_eq!(alerts(&run.grant(credits(10))), vec![]);
    assert_eq!(
        alerts(&run.debit(credits(4))),
        vec![Alert::Depleted {
            overage: Millicredits::ZERO
        }]
    );
}

#[test]
fn usage_percent_fires_at_its_share_of_the_allowance_once_per_cycle() {
    let mut run = Run::opened(Some("pro"), None);
    assert_eq!(run.account.used_in_cycle, Millicredits::ZERO);
    assert_eq!(alerts(&run.debit(mc(499_999))), vec![]);
    assert_eq!(
        alerts(&run.debit(mc(1))),
        vec![Alert::UsageThreshold {
            percent: 50,
            used: credits(500),
            allowance: credits(1_000)
        }],
        "500 of 1,000 used is 50 %; 500 left is not below 500"
    );
    assert_eq!(
        alerts(&run.debit(credits(400))),
        vec![
            Alert::LowBalance {
                threshold: credits(500),
                available: credits(100),
                severity: Severity::Warning,
            },
            Alert::UsageThreshold {
                percent: 90,
                used: credits(900),
                allowance: credits(1_000)
            }
        ]
    );
    // A new cycle re-arms everything: the 15th of next month.
    let renewed = run.wait(31 * DAY);
    assert!(
        renewed
            .iter()
            .any(|e| matches!(e, Event::CycleStarted { .. }))
    );
    assert!(run.account.alerts_fired.is_empty());
    assert_eq!(
        alerts(&run.debit(credits(500))),
        vec![Alert::UsageThreshold {
            percent: 50,
            used: credits(500),
            allowance: credits(1_000)
        }]
    );
}

#[test]
fn no_usage_alerts_without_an_allowance() {
    let mut run = Run::opened(Some("free"), None);
    run.grant(credits(1_000));
    let events = run.debit(credits(950));
    assert!(
        alerts(&events)
            .iter()
            .all(|a| !matches!(a, Alert::UsageThreshold { .. })),
        "{events:?}"
    );
}

#[test]
fn spending_cap_reached_fires_when_usage_and_holds_reach_the_cap() {
    let mut run = Run::opened(None, Some(credits(100)));
    run.set_thresholds(Some(AlertThresholds {
        low_balance_millicredits: vec![],
        critical_level_millicredits: credits(10),
        usage_percent: vec![],
        auto_top_up: None,
    }));
    run.grant(credits(1_000));
    run.debit(credits(30));
    let (_, held) = run.reserve(credits(60));
    assert_eq!(alerts(&held), vec![], "90 of 100");
    let (second, held) = run.reserve(credits(10));
    assert_eq!(
        alerts(&held),
        vec![Alert::SpendingCapReached {
            cap: credits(100),
            used_and_held: credits(100)
        }]
    );
    run.release(&second);
    let (_, held) = run.reserve(credits(10));
    assert_eq!(alerts(&held), vec![], "once per cycle, however holds move");
    // Lowering the cap below what is used is a crossing too, in the next
    // cycle; in this one the cap alert has fired already.
    assert_eq!(
        alerts(
            &run.run(Command::SetSpendingCap {
                cap: Some(credits(50))
            })
            .unwrap()
        ),
        vec![]
    );
}

#[test]
fn lowering_the_cap_under_usage_reaches_it() {
    let mut run = Run::opened(None, Some(credits(100)));
    run.grant(credits(1_000));
    run.debit(credits(60));
    let events = run
        .run(Command::SetSpendingCap {
            cap: Some(credits(50)),
        })
        .unwrap();
    assert_eq!(
        alerts(&events),
        vec![Alert::SpendingCapReached {
            cap: credits(50),
            used_and_held: credits(60)
        }]
    );
    let removed = run.run(Command::SetSpendingCap { cap: None }).unwrap();
    assert_eq!(alerts(&removed), vec![]);
}

#[test]
fn auto_top_up_names_the_pack_and_a_bought_pack_rearms_it() {
    let mut run = Run::opened(None, None);
    run.set_thresholds(Some(AlertThresholds {
        low_balance_millicredits: vec![],
        critical_level_millicredits: credits(10),
        usage_percent: vec![],
        auto_top_up: Some(AutoTopUp {
            below_millicredits: credits(50),
            pack: pack("popular"),
        }),
    }));
    run.grant(credits(100));
    assert_eq!(
        alerts(&run.debit(credits(50))),
        vec![],
        "50 is not below 50"
    );
    let request = Alert::AutoTopUpRequested {
        pack: pack("popular"),
        below: credits(50),
        available: credits(40),
    };
    assert_eq!(alerts(&run.debit(credits(10))), vec![request.clone()]);
    assert_eq!(alerts(&run.debit(credits(10))), vec![], "once per crossing");
    // The billing system buys the pack: 530 available, re-armed.
    assert_eq!(alerts(&run.grant_pack("popular")), vec![]);
    assert_eq!(
        alerts(&run.debit(credits(490))),
        vec![request],
        "the next drop asks again"
    );
}

#[test]
fn account_thresholds_beat_the_plans_which_beat_the_defaults() {
    let no_plan = Run::opened(None, None);
    assert_eq!(
        no_plan.account.terms.alert_thresholds(),
        &AlertThresholds::default()
    );
    assert_eq!(
        AlertThresholds::default().low_balance_millicredits,
        vec![credits(100), credits(10)]
    );
    assert_eq!(AlertThresholds::default().usage_percent, vec![80]);

    let mut run = Run::opened(Some("pro"), None);
    assert_eq!(
        run.account
            .terms
            .alert_thresholds()
            .low_balance_millicredits,
        vec![credits(500)]
    );
    // The plan's 500, not the default 100.
    let events = run.debit(credits(520));
    assert_eq!(
        alerts(&events),
        vec![
            low(500, credits(480)),
            Alert::UsageThreshold {
                percent: 50,
                used: credits(520),
                allowance: credits(1_000)
            }
        ]
    );
    let own = AlertThresholds {
        low_balance_millicredits: vec![credits(300)],
        critical_level_millicredits: credits(10),
        usage_percent: vec![],
        auto_top_up: None,
    };
    run.set_thresholds(Some(own.clone()));
    assert_eq!(run.account.terms.alert_thresholds(), &own);
    assert_eq!(
        alerts(&run.debit(credits(200))),
        vec![low(300, credits(280))]
    );
    // Back to the plan's: 90 % is armed again and fires.
    run.set_thresholds(None);
    assert_eq!(
        alerts(&run.debit(credits(200))),
        vec![Alert::UsageThreshold {
            percent: 90,
            used: credits(920),
            allowance: credits(1_000)
        }]
    );
}

#[test]
fn setting_thresholds_never_alerts_by_itself() {
    let mut run = Run::opened(None, None);
    run.grant(credits(50));
    let events = run.set_thresholds(Some(AlertThresholds {
        low_balance_millicredits: vec![credits(1_000)],
        critical_level_millicredits: credits(10),
        usage_percent: vec![1],
        auto_top_up: None,
    }));
    assert_eq!(alerts(&events), vec![], "no level moved");
    assert!(matches!(
        events.as_slice(),
        [Event::AlertThresholdsSet {
            thresholds: Some(_),
            ..
        }]
    ));
}

#[test]
fn bad_thresholds_and_unknown_packs_are_refused_and_write_nothing() {
    let mut run = Run::opened(None, None);
    let before = run.account.clone();
    let bad =
        |low: Vec<i64>, usage: Vec<u8>, auto: Option<(i64, &str)>| Command::SetAlertThresholds {
            thresholds: Some(AlertThresholds {
                low_balance_millicredits: low.into_iter().map(mc).collect(),
                critical_level_millicredits: credits(10),
                usage_percent: usage,
                auto_top_up: auto.map(|(below, p)| AutoTopUp {
                    below_millicredits: mc(below),
                    pack: pack(p),
                }),
            }),
        };
    let field = |r: Result<Vec<Event>, Rejection>| match r {
        Err(Rejection::InvalidField { field, .. }) => field,
        other => panic!("expected InvalidField, got {other:?}"),
    };
    assert_eq!(
        field(run.run(bad(vec![0], vec![], None))),
        "thresholds.low_balance_millicredits"
    );
    assert_eq!(
        field(run.run(bad(vec![5, 5], vec![], None))),
        "thresholds.low_balance_millicredits"
    );
    assert_eq!(
        field(run.run(bad(vec![], vec![0], None))),
        "thresholds.usage_percent"
    );
    assert_eq!(
        field(run.run(bad(vec![], vec![101], None))),
        "thresholds.usage_percent"
    );
    assert_eq!(
        field(run.run(bad(vec![], vec![], Some((0, "popular"))))),
        "thresholds.auto_top_up.below_millicredits"
    );
    assert_eq!(
        run.run(bad(vec![], vec![], Some((1_000, "mystery")))),
        Err(Rejection::UnknownPack {
            pack: pack("mystery")
        })
    );
    assert_eq!(run.account, before);
}

#[test]
fn a_boundary_alerts_at_its_own_time() {
    let mut run = Run::opened(None, None);
    let expiry = START.plus_millis(HOUR);
    run.grant_expiring(credits(100), Some(expiry));
    run.grant(credits(50));
    assert!(run.account.alerts_fired.is_empty());
    // Noticed much later, by a lazy advance: stamped with the expiry.
    let due = run.wait(5 * HOUR);
    assert_eq!(
        due.iter()
            .filter(|e| matches!(e, Event::AlertRaised { .. }))
            .map(Event::at)
            .collect::<Vec<_>>(),
        vec![expiry]
    );
    assert_eq!(alerts(&due), vec![low(100, credits(50))]);
    assert!(matches!(due[0], Event::BucketExpired { .. }));
}

#[test]
fn fired_alerts_survive_a_snapshot_and_older_snapshots_decode() {
    let mut run = Run::opened(None, None);
    run.grant(credits(50));
    run.debit(credits(45));
    assert!(!run.account.alerts_fired.is_empty());
    let json = serde_json::to_value(&run.account).unwrap();
    let back: Account = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, run.account);
    assert_eq!(Account::replay(&run.log).unwrap(), run.account);
    // A snapshot written before alerts existed has no such field.
    let mut old = json;
    old.as_object_mut().unwrap().remove("alerts_fired");
    let decoded: Account = serde_json::from_value(old).unwrap();
    assert!(decoded.alerts_fired.is_empty());
}

// ---------------------------------------------------------------------------
// Random histories.

#[derive(Clone, Debug)]
enum Op {
    Wait(i64),
    Grant {
        amount: i64,
        effective_in: Option<i64>,
        expires_in: Option<i64>,
    },
    Debit(i64),
    Reserve {
        amount: i64,
        ttl: i64,
    },
    Release(usize),
    Commit {
        pick: usize,
        amount: i64,
    },
    SetCap(Option<i64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1i64..12 * DAY).prop_map(Op::Wait),
        2 => (1i64..400, proptest::option::weighted(0.2, 1i64..3 * DAY), proptest::option::weighted(0.4, 1i64..20 * DAY))
            .prop_map(|(amount, effective_in, expires_in)| Op::Grant { amount, effective_in, expires_in }),
        4 => (1i64..200).prop_map(Op::Debit),
        3 => (1i64..200, 1i64..2 * DAY).prop_map(|(amount, ttl)| Op::Reserve { amount, ttl }),
        1 => any::<usize>().prop_map(Op::Release),
        2 => (any::<usize>(), 0i64..300).prop_map(|(pick, amount)| Op::Commit { pick, amount }),
        1 => proptest::option::of(50i64..1_500).prop_map(Op::SetCap),
    ]
}

#[derive(Clone, Debug)]
struct Setup {
    allowance: i64,
    cap: Option<i64>,
    thresholds: AlertThresholds,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![Just(0i64), 100i64..1_500],
        proptest::option::of(100i64..2_000),
        prop::collection::vec(1i64..600, 0..4),
        prop::collection::vec(1u8..=100, 0..4),
        proptest::option::of(1i64..300),
    )
        .prop_map(|(allowance, cap, mut low, mut usage, auto)| {
            low.sort_unstable();
            low.dedup();
            usage.sort_unstable();
            usage.dedup();
            Setup {
                allowance,
                cap,
                thresholds: AlertThresholds {
                    low_balance_millicredits: low.into_iter().map(credits).collect(),
                    critical_level_millicredits: credits(10),
                    usage_percent: usage,
                    auto_top_up: auto.map(|below| AutoTopUp {
                        below_millicredits: credits(below),
                        pack: pack("popular"),
                    }),
                },
            }
        })
}

/// One account driven the way the engine drives it; `eager` advances at
/// each boundary on its own, as a sweep that never misses one would.
struct Driven {
    run: Run,
    eager: bool,
    /// For each command or boundary: the account before, after, and what it
    /// wrote, with the moment the "before" levels are read at.
    windows: Vec<Window>,
    reservations: Vec<ReservationId>,
}

struct Window {
    before: Account,
    before_at: Timestamp,
    after: Account,
    events: Vec<Event>,
}

impl Driven {
    fn new(setup: &Setup, eager: bool) -> Driven {
        let mut plans = catalogue();
        plans.plans.insert(
            PlanName::parse("p").unwrap(),
            Plan {
                monthly_allowance_millicredits: credits(setup.allowance),
                alerts: setup.thresholds.clone(),
                ..Plan::default()
            },
        );
        let mut run = Run::new(plans);
        let before = run.account.clone();
        let opened = run
            .run(Command::OpenAccount(OpenAccount {
                plan: Some(PlanName::parse("p").unwrap()),
                time_zone: None,
                anchor: Some(BillingAnchor::new(31, 12, 0).unwrap()),
                trial: false,
                spending_cap: setup.cap.map(credits),
                test_clock: None,
            }))
            .expect("opens");
        let windows = vec![Window {
            before,
            before_at: run.now,
            after: run.account.clone(),
            events: opened,
        }];
        Driven {
            run,
            eager,
            windows,
            reservations: Vec::new(),
        }
    }

    /// The eager account walks every boundary up to now, one at a time.
    fn catch_up(&mut self) {
        if !self.eager {
            return;
        }
        while let Some(due) = next_due(&self.run.account).filter(|due| *due <= self.run.now) {
            let before = self.run.account.clone();
            let events = advance(&mut self.run.account, due);
            self.run.log.extend(events.clone());
            if events.is_empty() {
                break;
            }
            self.windows.push(Window {
                before_at: before.last_event_at.unwrap(),
                before,
                after: self.run.account.clone(),
                events,
            });
        }
    }

    fn command(&mut self, command: Command) -> Result<(), Rejection> {
        self.catch_up();
        let ticked = advance(&mut self.run.account, self.run.now);
        assert!(
            !self.eager || ticked.is_empty(),
            "the eager account is always caught up"
        );
        self.run.log.extend(ticked);
        let before = self.run.account.clone();
        let ctx = Context {
            now: self.run.now,
            rate_cards: &self.run.cards,
            plans: &self.run.plans,
        };
        let decision = execute(&mut self.run.account, &command, &ctx)?;
        self.run.log.extend(decision.events.clone());
        self.windows.push(Window {
            before,
            before_at: self.run.now,
            after: self.run.account.clone(),
            events: decision.events,
        });
        Ok(())
    }

    fn step(&mut self, op: &Op) {
        let member = MemberId::parse("m").unwrap();
        let action = ActionKey::parse("a").unwrap();
        let _ = match op {
            Op::Wait(ms) => {
                self.run.now = self.run.now.plus_millis(*ms);
                self.catch_up();
                Ok(())
            }
            Op::Grant {
                amount,
                effective_in,
                expires_in,
            } => {
                let grant_id = GrantId::parse(self.run.mint("g")).unwrap();
                let effective_at = effective_in.map(|ms| self.run.now.plus_millis(ms));
                let expires_at =
                    expires_in.map(|ms| effective_at.unwrap_or(self.run.now).plus_millis(ms));
                self.command(Command::Grant(GrantCommand {
                    grant_id,
                    pack: None,
                    kind: BucketKind::TopUp,
                    source: None,
                    priority: None,
                    amount: credits(*amount),
                    effective_at,
                    expires_at,
                    cost_basis: None,
                    reference: String::new(),
                }))
            }
            Op::Debit(amount) => self.command(Command::Debit {
                occurred_at: None,
                member,
                action,
                model: None,
                amount: Some(credits(*amount)),
                dimensions: None,
            }),
            Op::Reserve { amount, ttl } => {
                let reservation_id = ReservationId::parse(self.run.mint("r")).unwrap();
                self.reservations.push(reservation_id.clone());
                self.command(Command::Reserve {
                    reservation_id,
                    member,
                    action,
                    model: None,
                    amount: Some(credits(*amount)),
                    dimensions: None,
                    ttl_millis: *ttl,
                })
            }
            Op::Release(pick) if !self.reservations.is_empty() => {
                let id = self.reservations[pick % self.reservations.len()].clone();
                self.command(Command::Release { reservation_id: id })
            }
            Op::Commit { pick, amount } if !self.reservations.is_empty() => {
                let id = self.reservations[pick % self.reservations.len()].clone();
                self.command(Command::Commit {
                    reservation_id: id,
                    amount: Some(credits(*amount)),
                    dimensions: None,
                })
            }
            Op::Release(_) | Op::Commit { .. } => Ok(()),
            Op::SetCap(cap) => self.command(Command::SetSpendingCap {
                cap: cap.map(credits),
            }),
        };
    }
}

/// What the rules compare, read straight off the aggregate.
#[derive(Debug)]
struct Seen {
    available: Millicredits,
    overage: Millicredits,
    used: Millicredits,
    held: Millicredits,
    cap: Option<Millicredits>,
    allowance: Millicredits,
}

fn seen(account: &Account, at: Timestamp) -> Seen {
    Seen {
        available: account
            .buckets
            .iter()
            .filter(|b| b.is_spendable_at(at))
            .map(|b| b.remaining)
            .sum(),
        overage: account.overage,
        used: account.used_in_cycle,
        held: account.buckets.iter().map(|b| b.held).sum(),
        cap: account.terms.spending_cap,
        allowance: account.terms.monthly_allowance(),
    }
}

/// Whether the window from `b` to `a` crosses `key` under `t`.
fn crosses(key: &AlertKey, b: &Seen, a: &Seen) -> bool {
    let used_share = |s: &Seen, p: u8| {
        s.allowance.get() > 0 && s.used.get() * 100 >= i64::from(p) * s.allowance.get()
    };
    let capped = |s: &Seen| s.cap.is_some_and(|cap| s.used + s.held >= cap);
    match key {
        AlertKey::Depleted => {
            (b.available.get() > 0 && a.available.get() == 0)
                || (b.overage.get() == 0 && a.overage.get() > 0)
        }
        AlertKey::LowBalance(t) | AlertKey::AutoTopUp(t) => b.available >= *t && a.available < *t,
        AlertKey::UsageThreshold(p) => !used_share(b, *p) && used_share(a, *p),
        AlertKey::SpendingCapReached => !capped(b) && capped(a),
    }
}

/// Every key the thresholds can fire.
fn keys(t: &AlertThresholds) -> Vec<AlertKey> {
    let mut keys = vec![AlertKey::Depleted, AlertKey::SpendingCapReached];
    keys.extend(
        t.low_balance_millicredits
            .iter()
            .map(|l| AlertKey::LowBalance(*l)),
    );
    keys.extend(
        t.auto_top_up
            .iter()
            .map(|a| AlertKey::AutoTopUp(a.below_millicredits)),
    );
    keys.extend(t.usage_percent.iter().map(|p| AlertKey::UsageThreshold(*p)));
    keys
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn alerts_fire_exactly_at_armed_crossings_whoever_advances(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut eager = Driven::new(&setup, true);
        let mut lazy = Driven::new(&setup, false);
        for op in &ops {
            eager.step(op);
            lazy.step(op);
        }
        eager.catch_up();
        lazy.run.log.extend(advance(&mut lazy.run.account, lazy.run.now));
        // Eager and lazy advancing write the same events, alerts included.
        prop_assert_eq!(&eager.run.log, &lazy.run.log);
        prop_assert_eq!(&eager.run.account, &lazy.run.account);

        // The rules, recomputed per window from the aggregate, with the
        // armed keys tracked independently of the core's own set.
        let mut fired: BTreeSet<AlertKey> = BTreeSet::new();
        for window in &eager.windows {
            let before = seen(&window.before, window.before_at);
            let raised: Vec<&Event> = window
                .events
                .iter()
                .filter(|e| matches!(e, Event::AlertRaised { .. }))
                .collect();
            // Alerts come last, after the events that caused them.
            let first_alert = window.events.len() - raised.len();
            let alerts_last = window.events[first_alert..]
                .iter()
                .all(|e| matches!(e, Event::AlertRaised { .. }));
            prop_assert!(alerts_last, "alerts come last: {:?}", window.events);
            let mut state = window.before.clone();
            for event in &window.events[..first_alert] {
                state.apply(event).unwrap();
                match event {
                    Event::CycleStarted { .. } => fired.clear(),
                    Event::CreditsGranted { at, amount, effective_at, .. } => {
                        let upcoming = if effective_at > at { *amount } else { Millicredits::ZERO };
                        let available = seen(&state, *at).available + upcoming;
                        fired.retain(|k| !k.rearmed_by_grant(available));
                    }
                    _ => {}
                }
            }
            let at = window.events[..first_alert].last().map(Event::at);
            let after = seen(&window.after, at.unwrap_or(window.before_at));
            let thresholds = window.after.terms.alert_thresholds();
            let raised_keys: Vec<AlertKey> = raised
                .iter()
                .map(|e| match e {
                    Event::AlertRaised { alert, at: raised_at } => {
                        assert_eq!(Some(*raised_at), at, "stamped with the last cause");
                        alert.key()
                    }
                    _ => unreachable!(),
                })
                .collect();
            let possible = keys(thresholds);
            for key in &raised_keys {
                prop_assert!(possible.contains(key), "{:?} is not a threshold", key);
            }
            for key in possible {
                let expected = crosses(&key, &before, &after) && !fired.contains(&key);
                prop_assert_eq!(
                    raised_keys.contains(&key),
                    expected,
                    "{:?}: before {:?} after {:?} fired {:?} window {:?}",
                    key, before, after, fired, window.events
                );
            }
            for key in &raised_keys {
                prop_assert!(fired.insert(key.clone()), "{:?} fired twice before a re-arm", key);
            }
            prop_assert_eq!(&fired, &window.after.alerts_fired);
        }
    }
}

/// Seed 001: "warns when the balance drops below 100 credits" and "critical
/// low (10 credits)". Severity follows the thresholds' critical level; the
/// other kinds have a fixed one.
#[test]
fn low_balance_alerts_warn_above_the_critical_level_and_are_critical_at_or_below_it() {
    let mut run = Run::opened(None, None);
    run.grant(credits(150));
    let severities = |events: &[Event]| -> Vec<Severity> {
        alerts(events).iter().map(Alert::severity).collect()
    };
    // The defaults: 100 warns, 10 is critical.
    assert_eq!(severities(&run.debit(credits(60))), vec![Severity::Warning]);
    assert_eq!(
        severities(&run.debit(credits(85))),
        vec![Severity::Critical],
        "below 10: critical"
    );
    assert_eq!(
        severities(&run.debit(credits(5))),
        vec![Severity::Critical],
        "depleted is always critical"
    );

    // An account's own critical level; 0 makes none critical.
    let mut run = Run::opened(None, None);
    run.set_thresholds(Some(AlertThresholds {
        low_balance_millicredits: vec![credits(500), credits(200), credits(50)],
        critical_level_millicredits: credits(200),
        usage_percent: vec![],
        auto_top_up: None,
    }));
    run.grant(credits(600));
    let crossed: Vec<(Millicredits, Severity)> = alerts(&run.debit(credits(560)))
        .iter()
        .filter_map(|alert| match alert {
            Alert::LowBalance {
                threshold,
                severity,
                ..
            } => Some((*threshold, *severity)),
            _ => None,
        })
        .collect();
    assert_eq!(
        crossed,
        vec![
            (credits(500), Severity::Warning),
            (credits(200), Severity::Critical),
            (credits(50), Severity::Critical),
        ]
    );
    let mut run = Run::opened(None, None);
    run.set_thresholds(Some(AlertThresholds {
        critical_level_millicredits: Millicredits::ZERO,
        ..AlertThresholds::default()
    }));
    run.grant(credits(150));
    assert_eq!(
        severities(&run.debit(credits(145))),
        vec![Severity::Warning, Severity::Warning]
    );
}

#[test]
fn a_negative_critical_level_is_refused_naming_the_field() {
    let mut run = Run::opened(None, None);
    let refused = run.run(Command::SetAlertThresholds {
        thresholds: Some(AlertThresholds {
            critical_level_millicredits: mc(-1),
            ..AlertThresholds::default()
        }),
    });
    assert!(
        matches!(
            refused,
            Err(Rejection::InvalidField {
                field: "thresholds.critical_level_millicredits",
                ..
            })
        ),
        "{refused:?}"
    );
}

#[test]
fn thresholds_and_alerts_saved_before_severities_read_with_the_defaults() {
    // An account's own thresholds as an older build logged them.
    let old: AlertThresholds =
        serde_json::from_str(r#"{"low_balance_millicredits":[100000,10000],"usage_percent":[80]}"#)
            .unwrap();
    assert_eq!(old.critical_level_millicredits, credits(10));
    // A low-balance alert as an older build logged it.
    let alert: Alert =
        serde_json::from_str(r#"{"kind":"low_balance","threshold":10000,"available":5000}"#)
            .unwrap();
    assert_eq!(alert.severity(), Severity::Warning);
}
