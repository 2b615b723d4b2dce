//! Plans at work: allowances, trials, rollover, plan changes, anchors,
//! packs and the spending cap, each policy pinned by an example.

use tally_core::{
    Account, ActionKey, BillingAnchor, BucketKind, Command, Context, Event, GrantCommand, GrantId,
    MemberId, Millicredits, OpenAccount, Outcome, Pack, PackName, Plan, PlanCatalogue, PlanName,
    RateCards, Rejection, ReservationId, Rollover, TimeZoneName, Timestamp, Trial, advance,
    execute,
};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn mc(credits: i64) -> Millicredits {
    Millicredits::from_credits(credits)
}

fn utc(s: &str) -> Timestamp {
    let ts: jiff::Timestamp = s.parse().unwrap();
    Timestamp::from_millis(ts.as_millisecond())
}

fn catalogue() -> PlanCatalogue {
    let mut c = PlanCatalogue {
        version: 3,
        ..Default::default()
    };
    let mut add = |name: &str, plan: Plan| {
        c.plans.insert(PlanName::parse(name).unwrap(), plan);
    };
    add(
        "basic",
        Plan {
            monthly_allowance_millicredits: mc(500),
            trial: Some(Trial {
                allowance_millicredits: mc(100),
                days: 14,
            }),
            ..Plan::default()
        },
    );
    add(
        "pro",
        Plan {
            monthly_allowance_millicredits: mc(2_000),
            spending_cap_millicredits: Some(mc(1_500)),
            ..Plan::default()
        },
    );
    add(
        "daily",
        Plan {
            daily_allowance_millicredits: mc(100),
            monthly_allowance_millicredits: mc(3_000),
            ..Plan::default()
        },
    );
    add(
        "rolling",
        Plan {
            monthly_allowance_millicredits: mc(1_000),
            rollover: Some(Rollover {
                max_millicredits: mc(300),
                min_millicredits: Millicredits::ZERO,
            }),
            ..Plan::default()
        },
    );
    c.packs.insert(
        PackName::parse("thousand").unwrap(),
        Pack {
            credits_millicredits: mc(1_000),
            expires_after_months: Some(12),
            cost_basis: None,
        },
    );
    c
}

struct Ws {
    account: Account,
    now: Timestamp,
    plans: PlanCatalogue,
    log: Vec<Event>,
}

impl Ws {
    fn open(at: &str, open: OpenAccount) -> Ws {
        let mut ws = Ws {
            account: Account::default(),
            now: utc(at),
            plans: catalogue(),
            log: Vec::new(),
        };
        ws.run(Command::OpenAccount(open)).expect("opens");
        ws
    }

    fn on(plan: &str, at: &str) -> Ws {
        Ws::open(
            at,
            OpenAccount {
                plan: Some(PlanName::parse(plan).unwrap()),
                ..Default::default()
            },
        )
    }

    fn run(&mut self, command: Command) -> Result<Outcome, Rejection> {
        self.log.extend(advance(&mut self.account, self.now));
        let cards = RateCards::default();
        let ctx = Context {
            now: self.now,
            rate_cards: &cards,
            plans: &self.plans,
        };
        let decision = execute(&mut self.account, &command, &ctx)?;
        self.log.extend(decision.events);
        Ok(decision.outcome)
    }

    fn at(&mut self, when: &str) {
        self.now = utc(when);
        self.log.extend(advance(&mut self.account, self.now));
    }

    fn wait(&mut self, millis: i64) {
        self.now = self.now.plus_millis(millis);
        self.log.extend(advance(&mut self.account, self.now));
    }

    fn debit(&mut self, credits: i64) -> Result<Outcome, Rejection> {
        self.run(Command::Debit {
            occurred_at: None,
            member: MemberId::parse("ann").unwrap(),
            action: ActionKey::parse("agent.task").unwrap(),
            model: None,
            amount: Some(mc(credits)),
            dimensions: None,
        })
    }

    fn reserve(&mut self, id: &str, credits: i64) -> Result<Outcome, Rejection> {
        self.run(Command::Reserve {
            reservation_id: ReservationId::parse(id).unwrap(),
            member: MemberId::parse("ann").unwrap(),
            action: ActionKey::parse("agent.task").unwrap(),
            model: None,
            amount: Some(mc(credits)),
            dimensions: None,
            ttl_millis: HOUR,
        })
    }

    fn commit(&mut self, id: &str, credits: i64) -> Result<Outcome, Rejection> {
        self.run(Command::Commit {
            reservation_id: ReservationId::parse(id).unwrap(),
            amount: Some(mc(credits)),
            dimensions: None,
        })
    }

    fn available(&self) -> Millicredits {
        self.account.available_at(self.now)
    }

    fn by_kind(&self, kind: BucketKind) -> Millicredits {
        self.account
            .buckets
            .iter()
            .filter(|b| b.kind == kind && b.is_spendable_at(self.now))
            .map(|b| b.remaining)
            .sum()
    }
}

#[test]
fn a_new_account_gets_its_allowance_and_renews_on_its_anchor() {
    let mut ws = Ws::on("basic", "2026-01-15T10:00:00Z");
    assert_eq!(ws.available(), mc(500));
    assert_eq!(
        ws.account.terms.anchor,
        BillingAnchor::new(15, 10, 0).unwrap()
    );
    ws.debit(200).unwrap();
    ws.at("2026-02-15T09:59:59Z");
    assert_eq!(ws.available(), mc(300));
    ws.at("2026-02-15T10:00:00Z");
    // No rollover: last cycle's 300 expired, a fresh 500 arrived.
    assert_eq!(ws.available(), mc(500));
    assert_eq!(ws.account.totals.expired, mc(300));
    assert_eq!(ws.account.used_in_cycle, Millicredits::ZERO);
}

#[test]
fn daily_credits_go_first_and_do_not_roll_over() {
    let mut ws = Ws::on("daily", "2026-03-01T00:00:00Z");
    assert_eq!(ws.by_kind(BucketKind::Daily), mc(100));
    ws.debit(150).unwrap();
    assert_eq!(ws.by_kind(BucketKind::Daily), Millicredits::ZERO);
    assert_eq!(ws.by_kind(BucketKind::Monthly), mc(2_950));
    ws.debit(30).unwrap();
    ws.wait(DAY);
    // Yesterday's daily credits were used up; today's are fresh.
    assert_eq!(ws.by_kind(BucketKind::Daily), mc(100));
    ws.debit(40).unwrap();
    ws.wait(DAY);
    // The 60 left yesterday are gone, not added to today's 100.
    assert_eq!(ws.by_kind(BucketKind::Daily), mc(100));
    assert_eq!(ws.account.totals.expired, mc(60));
}

#[test]
fn a_trial_ends_and_the_plan_begins() {
    let mut ws = Ws::open(
        "2026-04-01T08:00:00Z",
        OpenAccount {
            plan: Some(PlanName::parse("basic").unwrap()),
            trial: true,
            ..Default::default()
        },
    );
    assert_eq!(ws.available(), mc(100));
    assert_eq!(ws.by_kind(BucketKind::Trial), mc(100));
    assert!(ws.account.cycle.is_none());
    ws.debit(40).unwrap();
    ws.at("2026-04-15T08:00:00Z");
    assert_eq!(ws.by_kind(BucketKind::Trial), Millicredits::ZERO);
    assert_eq!(ws.available(), mc(500));
    // The anchor defaults to when the paid plan began.
    assert_eq!(
        ws.account.terms.anchor,
        BillingAnchor::new(15, 8, 0).unwrap()
    );
    assert_eq!(ws.account.totals.expired, mc(60));
}

#[test]
fn a_trial_needs_a_plan_that_offers_one() {
    let mut ws = Ws::on("pro", "2026-04-01T08:00:00Z");
    let refused = ws.run(Command::OpenAccount(OpenAccount::default()));
    assert_eq!(refused, Err(Rejection::AccountExists));
    let mut fresh = Account::default();
    let cards = RateCards::default();
    let plans = catalogue();
    let ctx = Context {
        now: utc("2026-04-01T08:00:00Z"),
        rate_cards: &cards,
        plans: &plans,
    };
    let open = |plan: &str| {
        Command::OpenAccount(OpenAccount {
            plan: Some(PlanName::parse(plan).unwrap()),
            trial: true,
            ..Default::default()
        })
    };
    assert!(matches!(
        execute(&mut fresh, &open("pro"), &ctx),
        Err(Rejection::InvalidField { field: "trial", .. })
    ));
    assert!(matches!(
        execute(&mut fresh, &open("gold"), &ctx),
        Err(Rejection::UnknownPlan { .. })
    ));
    assert_eq!(fresh, Account::default());
}

#[test]
fn rollover_carries_what_is_left_up_to_the_maximum() {
    let mut ws = Ws::on("rolling", "2026-01-31T00:00:00Z");
    ws.debit(900).unwrap();
    // The 31st renews on the last day of February.
    ws.at("2026-02-28T00:00:00Z");
    assert_eq!(ws.available(), mc(1_100));
    ws.at("2026-03-31T00:00:00Z");
    // 1,100 left, at most 300 carried.
    assert_eq!(ws.available(), mc(1_300));
}

#[test]
fn overage_is_paid_first_from_the_next_allowance() {
    let mut ws = Ws::on("basic", "2026-01-10T00:00:00Z");
    ws.reserve("task", 400).unwrap();
    // The task ran long: it costs more than is left.
    ws.commit("task", 650).unwrap();
    assert_eq!(ws.account.overage, mc(150));
    assert_eq!(ws.available(), Millicredits::ZERO);
    ws.at("2026-02-10T00:00:00Z");
    assert_eq!(ws.account.overage, Millicredits::ZERO);
    assert_eq!(ws.available(), mc(350));
}

#[test]
fn the_cap_stops_new_work_but_not_work_in_flight() {
    let mut ws = Ws::on("pro", "2026-05-01T00:00:00Z");
    assert_eq!(ws.account.terms.spending_cap, Some(mc(1_500)));
    ws.debit(1_000).unwrap();
    ws.reserve("long", 400).unwrap();
    // 1,000 used + 400 held + 200 asked > 1,500.
    assert_eq!(
        ws.debit(200),
        Err(Rejection::SpendingCapReached {
            cap: mc(1_500),
            used: mc(1_000),
            held: mc(400),
            needed: mc(200),
        })
    );
    assert!(ws.reserve("another", 101).is_err());
    // Free actions pass at the cap.
    ws.debit(0).unwrap();
    // The task in flight finishes past the cap.
    ws.commit("long", 700).unwrap();
    assert_eq!(ws.account.used_in_cycle, mc(1_700));
    assert!(matches!(
        ws.debit(1),
        Err(Rejection::SpendingCapReached { .. })
    ));
    // Raising the cap lets work start again; a new cycle resets usage.
    ws.run(Command::SetSpendingCap {
        cap: Some(mc(1_800)),
    })
    .unwrap();
    ws.debit(100).unwrap();
    ws.at("2026-06-01T00:00:00Z");
    ws.debit(1_700).unwrap();
}

#[test]
fn upgrades_apply_now_with_the_difference_and_downgrades_wait() {
    let mut ws = Ws::on("basic", "2026-01-15T00:00:00Z");
    ws.debit(450).unwrap();
    ws.at("2026-01-20T00:00:00Z");
    let upgraded = ws
        .run(Command::ChangePlan {
            plan: PlanName::parse("pro").unwrap(),
        })
        .unwrap();
    assert_eq!(
        upgraded,
        Outcome::PlanChanged {
            effective_at: ws.now
        }
    );
    // 50 left of basic plus the 1,500 difference for the rest of the cycle.
    assert_eq!(ws.available(), mc(1_550));
    // The new plan's default cap applies to an account that set none.
    assert_eq!(ws.account.terms.spending_cap, Some(mc(1_500)));
    ws.at("2026-02-15T00:00:00Z");
    assert_eq!(ws.available(), mc(2_000));

    let downgraded = ws
        .run(Command::ChangePlan {
            plan: PlanName::parse("basic").unwrap(),
        })
        .unwrap();
    let next_anchor = utc("2026-03-15T00:00:00Z");
    assert_eq!(
        downgraded,
        Outcome::PlanChanged {
            effective_at: next_anchor
        }
    );
    // Nothing is taken back mid-cycle.
    assert_eq!(ws.available(), mc(2_000));
    assert_eq!(ws.account.terms.plan.as_ref().unwrap().name.as_str(), "pro");
    ws.at("2026-03-15T00:00:00Z");
    assert_eq!(
        ws.account.terms.plan.as_ref().unwrap().name.as_str(),
        "basic"
    );
    assert_eq!(ws.available(), mc(500));
    assert_eq!(ws.account.terms.spending_cap, None);
    assert!(matches!(
        ws.run(Command::ChangePlan {
            plan: PlanName::parse("basic").unwrap()
        }),
        Err(Rejection::InvalidField { field: "plan", .. })
    ));
}

/// Two upgrades decided at the same instant (one engine batch decides all
/// its commands at one `now`) each grant their difference. Found by the
/// invariant property test: both grants were named
/// `plan:upgrade-monthly:<millis>`, so the second collided with the first
/// and the core panicked; a change's grants now carry their stream
/// version too.
#[test]
fn two_upgrades_in_one_millisecond() {
    let mut ws = Ws::on("basic", "2026-01-15T00:00:00Z");
    ws.at("2026-01-20T00:00:00Z");
    for plan in ["pro", "daily"] {
        ws.run(Command::ChangePlan {
            plan: PlanName::parse(plan).unwrap(),
        })
        .unwrap();
    }
    // basic's 500, pro's 1,500 more, daily's 1,000 more and its first 100.
    assert_eq!(ws.available(), mc(3_100));
}

#[test]
fn an_upgrade_to_a_daily_allowance_starts_today() {
    let mut ws = Ws::on("basic", "2026-01-15T00:00:00Z");
    ws.at("2026-01-20T15:00:00Z");
    ws.run(Command::ChangePlan {
        plan: PlanName::parse("daily").unwrap(),
    })
    .unwrap();
    assert_eq!(ws.by_kind(BucketKind::Daily), mc(100));
    assert_eq!(ws.by_kind(BucketKind::Monthly), mc(3_000));
    ws.at("2026-01-21T00:00:00Z");
    assert_eq!(ws.by_kind(BucketKind::Daily), mc(100));
    assert_eq!(
        ws.log
            .iter()
            .filter(|e| matches!(e, Event::DayStarted { .. }))
            .count(),
        2
    );
}

#[test]
fn a_new_anchor_applies_from_the_end_of_the_current_cycle() {
    let mut ws = Ws::on("basic", "2026-01-15T00:00:00Z");
    ws.run(Command::SetBillingAnchor {
        anchor: BillingAnchor::new(1, 0, 0).unwrap(),
    })
    .unwrap();
    ws.debit(100).unwrap();
    ws.at("2026-02-14T23:59:00Z");
    assert_eq!(ws.available(), mc(400));
    ws.at("2026-02-15T00:00:00Z");
    assert_eq!(ws.available(), mc(500));
    assert_eq!(ws.account.cycle.unwrap().end, utc("2026-03-01T00:00:00Z"));
    ws.debit(500).unwrap();
    ws.at("2026-03-01T00:00:00Z");
    assert_eq!(ws.available(), mc(500));
    assert_eq!(ws.account.cycle.unwrap().end, utc("2026-04-01T00:00:00Z"));
}

#[test]
fn packs_expire_after_their_months_in_the_accounts_time_zone() {
    let mut ws = Ws::open(
        "2026-01-31T12:00:00Z",
        OpenAccount {
            time_zone: Some(TimeZoneName::parse("Asia/Tokyo").unwrap()),
            ..Default::default()
        },
    );
    ws.run(Command::Grant(GrantCommand {
        grant_id: GrantId::parse("g1").unwrap(),
        pack: Some(PackName::parse("thousand").unwrap()),
        kind: BucketKind::Promotional,
        source: None,
        priority: None,
        amount: Millicredits::ZERO,
        effective_at: None,
        expires_at: None,
        cost_basis: None,
        reference: String::new(),
    }))
    .unwrap();
    let bucket = &ws.account.buckets[0];
    assert_eq!(bucket.kind, BucketKind::TopUp);
    assert_eq!(bucket.amount, mc(1_000));
    assert_eq!(bucket.expires_at, Some(utc("2027-01-31T12:00:00Z")));
    ws.at("2027-01-31T11:59:59Z");
    assert_eq!(ws.available(), mc(1_000));
    ws.at("2027-01-31T12:00:00Z");
    assert_eq!(ws.available(), Millicredits::ZERO);
}
