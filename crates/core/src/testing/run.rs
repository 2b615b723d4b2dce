//! One account driven by a script of operations, with every SPEC §4
//! invariant the pure core owns checked after each step: conservation
//! (1), no oversell against the reference model (2), in-flight completion
//! (4), and a log that folds back into the same account. The property
//! tests (`tests/invariants.rs`) draw the scripts with proptest; the fuzz
//! target `core_commands` reads them from bytes ([`super::script`]).

use crate::{
    Account, ActionKey, ActionPrice, AlertThresholds, BillingAnchor, BucketKind, Charge, Command,
    Context, Debit, Event, GrantCommand, GrantId, IdempotencyKey, MemberId, Millicredits,
    OpenAccount, Outcome, Plan, PlanCatalogue, PlanName, RateCard, RateCards, Rejection,
    ReservationId, Rollover, Timestamp, Trial, advance, execute,
};

use super::model::{HoldState, Model, ModelPlan};

pub const HOUR: i64 = 3_600_000;

/// The rate card's actions: (key, price, default hold when not the price).
pub const ACTIONS: [(&str, i64, Option<i64>); 4] = [
    ("article.draft", 1_500, None),
    ("image.render", 4_000, Some(6_000)),
    ("web.search", 250, None),
    // Free: costs nothing, still recorded, never stopped by the cap.
    ("topic.research", 0, None),
];

/// The plan catalogue: (name, monthly, daily, cap, trial, rollover).
pub type PlanRow = (
    &'static str,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);
pub const PLANS: [PlanRow; 4] = [
    ("starter", 5_000, 0, None, Some(3_000), None),
    ("pro", 20_000, 0, Some(15_000), None, Some(4_000)),
    ("daily", 8_000, 2_000, None, None, None),
    ("capped", 3_000, 0, Some(2_500), None, None),
];

pub fn model_plans() -> Vec<ModelPlan> {
    PLANS
        .iter()
        .map(|&(name, _, _, cap, _, _)| ModelPlan { name, cap })
        .collect()
}

pub fn catalogue() -> PlanCatalogue {
    let mut catalogue = PlanCatalogue {
        version: 2,
        ..PlanCatalogue::default()
    };
    for (name, monthly, daily, cap, trial, rollover) in PLANS {
        catalogue.plans.insert(
            PlanName::parse(name).unwrap(),
            Plan {
                monthly_allowance_millicredits: mc(monthly),
                daily_allowance_millicredits: mc(daily),
                spending_cap_millicredits: cap.map(mc),
                trial: trial.map(|allowance| Trial {
                    allowance_millicredits: mc(allowance),
                    days: 1,
                }),
                rollover: rollover.map(|max| Rollover {
                    max_millicredits: mc(max),
                    min_millicredits: Millicredits::ZERO,
                }),
                ..Plan::default()
            },
        );
    }
    catalogue
}

pub fn rate_card() -> RateCard {
    let mut card = RateCard {
        version: 7,
        ..RateCard::default()
    };
    for (key, price, hold) in ACTIONS {
        let mut action = ActionPrice::fixed(mc(price));
        action.hold_millicredits = hold.map(mc);
        card.actions.insert(ActionKey::parse(key).unwrap(), action);
    }
    card
}

/// What the card charges for `action`, and what it holds by default.
pub fn price_of(action: &str) -> (i64, i64) {
    let (_, price, hold) = ACTIONS.iter().find(|(k, ..)| *k == action).unwrap();
    (*price, hold.unwrap_or(*price))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Wait(i64),
    Grant {
        kind: BucketKind,
        amount: i64,
        effective_in: Option<i64>,
        expires_in: Option<i64>,
    },
    Void(usize),
    Reserve {
        action: usize,
        amount: Option<i64>,
        ttl: i64,
    },
    Commit {
        pick: usize,
        amount: Option<i64>,
    },
    Release(usize),
    Extend {
        pick: usize,
        ttl: i64,
    },
    Debit {
        action: usize,
        amount: Option<i64>,
    },
    /// An operator's correction, signed.
    Adjust(i64),
    /// Part (or, `None`, all that is left) of an earlier charge.
    Refund {
        pick: usize,
        amount: Option<i64>,
    },
    /// `None` removes the cap.
    SetCap(Option<i64>),
    ChangePlan(usize),
    /// Cycles turn on another day and time from now on.
    SetAnchor {
        day: u8,
        hour: u8,
        minute: u8,
    },
    /// One low-balance level and one usage percent of the allowance;
    /// `None` goes back to the plan's.
    SetAlerts(Option<(i64, u8)>),
}

pub fn mc(v: i64) -> Millicredits {
    Millicredits::new(v)
}

/// Conservation (invariant 1): what was granted and not consumed, expired
/// or voided is exactly what sits in buckets (spendable, upcoming or held)
/// less the debt.
pub fn assert_conserved(account: &Account) {
    let t = account.totals;
    assert_eq!(
        t.granted - t.consumed - t.expired - t.voided,
        account.remaining() + account.held() - account.overage,
        "conservation broken at version {}",
        account.version
    );
    let held_by_reservations: Millicredits = account.reservations.values().map(|r| r.amount).sum();
    assert_eq!(
        account.held(),
        held_by_reservations,
        "held credits belong to open reservations"
    );
    for bucket in &account.buckets {
        assert!(
            bucket.remaining.get() >= 0 && bucket.held.get() >= 0,
            "{bucket:?}"
        );
    }
    assert!(account.overage.get() >= 0);
}

/// The aggregate and the reference model tell the same story: every
/// bucket, hold, total, the debt, the cap and the cycle's usage.
pub fn assert_agrees(account: &Account, model: &Model, now: Timestamp) {
    let shown: Vec<_> = model.buckets.iter().filter(|(_, b)| b.exists()).collect();
    assert_eq!(
        account.buckets.len(),
        shown.len(),
        "buckets: {:?}",
        account.buckets
    );
    for (grant_id, bucket) in shown {
        let actual = account
            .bucket(grant_id)
            .unwrap_or_else(|| panic!("the account lost bucket {grant_id}"));
        assert_eq!(
            (actual.remaining.get(), actual.held.get(), actual.voided),
            (bucket.remaining, bucket.held, bucket.voided),
            "bucket {grant_id}"
        );
    }
    assert!(
        account.reservations.keys().eq(model.holds.keys()),
        "open holds"
    );
    assert_eq!(account.overage.get(), model.overage, "overage");
    assert_eq!(
        account.used_in_cycle.get(),
        model.used_in_cycle,
        "used in cycle"
    );
    assert_eq!(
        account.terms.spending_cap.map(|c| c.get()),
        model.cap,
        "cap"
    );
    let t = account.totals;
    assert_eq!(
        (
            t.granted.get(),
            t.consumed.get(),
            t.expired.get(),
            t.voided.get()
        ),
        (model.granted, model.consumed, model.expired, model.voided),
        "totals"
    );
    assert_eq!(
        account.available_at(now).get(),
        model.available(now),
        "available"
    );
    // Overage is debt paid from the first credits available: while any is
    // owed, nothing is spendable.
    if model.overage > 0 {
        assert_eq!(
            model.spendable(now),
            0,
            "credits spendable while overage is owed"
        );
    }
    // Nothing is left due: advancing ended every hold past its expiry and
    // emptied every bucket past its own, and nothing stays in a voided one.
    assert!(
        model.holds.values().all(|h| h.expires_at > now),
        "a hold outlived its expiry"
    );
    for (grant_id, bucket) in &model.buckets {
        let due = bucket.voided || bucket.expires_at.is_some_and(|e| e <= now);
        assert!(
            !due || bucket.remaining == 0,
            "{grant_id} kept credits past its end: {bucket:?}"
        );
    }
}

pub struct Run {
    pub account: Account,
    pub model: Model,
    pub plans_known: Vec<ModelPlan>,
    pub now: Timestamp,
    pub card: RateCards,
    pub plans: PlanCatalogue,
    pub log: Vec<Event>,
    pub reservations: Vec<ReservationId>,
    /// Charges made so far: their key, cost and what refunds gave back,
    /// as the test counted it.
    pub charges: Vec<(IdempotencyKey, i64, i64)>,
    pub next_id: u64,
    /// How often each situation came up, so a test can show the runs reach
    /// them: `accepted`, a refusal's reason, `overage`, `late`.
    pub seen: std::collections::BTreeMap<&'static str, usize>,
}

impl Run {
    pub fn new(open: OpenAccount) -> Self {
        let mut run = Run {
            account: Account::default(),
            model: Model::default(),
            plans_known: model_plans(),
            now: Timestamp::from_millis(1_000_000),
            card: RateCards::new([rate_card()]),
            plans: catalogue(),
            log: Vec::new(),
            reservations: Vec::new(),
            charges: Vec::new(),
            next_id: 0,
            seen: Default::default(),
        };
        run.execute(Command::OpenAccount(open)).expect("opens");
        run
    }

    /// Runs every operation of `script` on a new account.
    pub fn script(script: super::Script) -> Self {
        let mut run = Run::new(script.open);
        for op in script.ops {
            run.step(op);
        }
        run
    }

    /// At every event, not only between commands: the log folds back one
    /// event at a time, conserved after each, into the account the steps
    /// left (less the charges the run keeps where the engine's store
    /// would: a rebuild), and event times never go backwards.
    pub fn check_log(&self) {
        let mut replayed = Account::default();
        for event in &self.log {
            replayed.apply(event).expect("the log applies");
            assert_conserved(&replayed);
        }
        let mut live = self.account.clone();
        live.charges.clear();
        assert_eq!(replayed, live, "the log folds into another account");
        assert!(
            self.log.windows(2).all(|w| w[0].at() <= w[1].at()),
            "event times go backwards"
        );
    }

    pub fn mint(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// A charge went through: kept where the engine's store would keep
    /// it, for a refund to name.
    fn charged(&mut self, debit: &Debit) {
        let key = IdempotencyKey::parse(self.mint("charge")).unwrap();
        self.account.charges.insert(
            key.clone(),
            Charge {
                key: key.clone(),
                charged_at: Some(self.now),
                debit: debit.clone(),
                refunded: Millicredits::ZERO,
            },
        );
        self.charges.push((key, debit.charged.get(), 0));
    }

    fn record(&mut self, events: Vec<Event>) {
        for event in &events {
            self.model.apply(event, &self.plans_known);
        }
        self.log.extend(events);
    }

    /// Applies what time made due up to now: to the account, the log and
    /// the model. The model is then as the command will find the account.
    pub fn tick(&mut self) {
        let ticked = advance(&mut self.account, self.now);
        self.record(ticked);
    }

    pub fn execute(&mut self, command: Command) -> Result<Outcome, Rejection> {
        self.tick();
        self.decide(command)
    }

    /// Executes on an account already advanced to now.
    pub fn decide(&mut self, command: Command) -> Result<Outcome, Rejection> {
        let before = self.account.clone();
        let ctx = Context {
            now: self.now,
            rate_cards: &self.card,
            plans: &self.plans,
        };
        match execute(&mut self.account, &command, &ctx) {
            Ok(decision) => {
                self.record(decision.events);
                Ok(decision.outcome)
            }
            Err(rejection) => {
                assert_eq!(
                    self.account, before,
                    "a rejection must not change the account"
                );
                Err(rejection)
            }
        }
    }

    fn pick<T: Clone>(list: &[T], pick: usize) -> Option<T> {
        (!list.is_empty()).then(|| list[pick % list.len()].clone())
    }

    /// A new hold or debit of `needed`: the core must accept it exactly
    /// when the model can afford it within the cap (no oversell, invariant
    /// 2), refuse it with the model's numbers otherwise, and an accepted
    /// one takes exactly `needed` from what is available.
    fn spend(&mut self, command: Command, needed: i64) -> Result<Outcome, Rejection> {
        self.tick();
        let available = self.model.available(self.now);
        let over_cap = self.model.over_cap(needed);
        let short = needed > available;
        let (used, held, cap) = (self.model.used_in_cycle, self.model.held(), self.model.cap);
        let result = self.decide(command);
        let label = result.as_ref().map_or_else(|r| r.reason(), |_| "accepted");
        *self.seen.entry(label).or_default() += 1;
        match &result {
            Ok(_) => {
                assert!(
                    !short && !over_cap,
                    "accepted {needed} with {available} available (cap {cap:?}, used {used}, held {held})"
                );
                assert_eq!(
                    self.model.available(self.now),
                    available - needed,
                    "took other than {needed} from what was available"
                );
            }
            Err(Rejection::InsufficientCredits {
                available: a,
                needed: n,
            }) => {
                assert!(short, "refused {needed} with {available} available");
                assert_eq!((a.get(), n.get()), (available, needed));
            }
            Err(Rejection::SpendingCapReached {
                cap: c,
                used: u,
                held: h,
                needed: n,
            }) => {
                assert!(
                    over_cap,
                    "refused {needed} for a cap of {cap:?} (used {used}, held {held})"
                );
                assert_eq!(
                    (Some(c.get()), u.get(), h.get(), n.get()),
                    (cap, used, held, needed)
                );
            }
            Err(other) => panic!("unexpected rejection {other:?}"),
        }
        result
    }

    pub fn step(&mut self, op: Op) {
        let member = MemberId::parse("alice").unwrap();
        match op {
            Op::Wait(ms) => {
                self.now = self.now.plus_millis(ms);
                self.tick();
            }
            Op::Grant {
                kind,
                amount,
                effective_in,
                expires_in,
            } => {
                let grant_id = GrantId::parse(self.mint("g")).unwrap();
                let effective_at = effective_in.map(|ms| self.now.plus_millis(ms));
                let expires_at =
                    expires_in.map(|ms| effective_at.unwrap_or(self.now).plus_millis(ms));
                let granted = self.execute(Command::Grant(GrantCommand {
                    grant_id,
                    pack: None,
                    kind,
                    source: None,
                    priority: None,
                    amount: mc(amount),
                    effective_at,
                    expires_at,
                    cost_basis: None,
                    reference: String::new(),
                }));
                assert!(granted.is_ok(), "{granted:?}");
            }
            Op::Void(pick) => {
                let grants: Vec<GrantId> = self.model.buckets.keys().cloned().collect();
                let Some(grant_id) = Self::pick(&grants, pick) else {
                    return;
                };
                self.tick();
                let bucket = self.model.buckets[&grant_id].clone();
                let result = self.decide(Command::VoidGrant {
                    grant_id: grant_id.clone(),
                    reason: "test".into(),
                });
                match result {
                    Ok(Outcome::Voided { amount }) => {
                        assert!(bucket.exists() && !bucket.voided);
                        assert_eq!(amount.get(), bucket.remaining);
                    }
                    Err(Rejection::GrantAlreadyVoided { .. }) => {
                        assert!(bucket.exists() && bucket.voided)
                    }
                    Err(Rejection::GrantNotFound { .. }) => assert!(!bucket.exists()),
                    other => panic!("void of {bucket:?}: {other:?}"),
                }
            }
            Op::Reserve {
                action: pick,
                amount,
                ttl,
            } => {
                let action = ACTIONS[pick].0;
                let needed = amount.unwrap_or(price_of(action).1);
                let reservation_id = ReservationId::parse(self.mint("r")).unwrap();
                let result = self.spend(
                    Command::Reserve {
                        reservation_id: reservation_id.clone(),
                        member,
                        action: ActionKey::parse(action).unwrap(),
                        model: None,
                        amount: amount.map(mc),
                        dimensions: None,
                        ttl_millis: ttl,
                    },
                    needed,
                );
                if let Ok(outcome) = result {
                    let Outcome::Reserved { reservation } = outcome else {
                        panic!("a reserve answered {outcome:?}");
                    };
                    assert_eq!(reservation.amount.get(), needed);
                    assert_eq!(reservation.rate_card_version != 0, amount.is_none());
                    self.reservations.push(reservation_id);
                }
            }
            Op::Debit {
                action: pick,
                amount,
            } => {
                let action = ACTIONS[pick].0;
                let needed = amount.unwrap_or(price_of(action).0);
                let result = self.spend(
                    Command::Debit {
                        occurred_at: None,
                        member,
                        action: ActionKey::parse(action).unwrap(),
                        model: None,
                        amount: amount.map(mc),
                        dimensions: None,
                    },
                    needed,
                );
                if let Ok(outcome) = result {
                    let Outcome::Charged { debit } = outcome else {
                        panic!("a debit answered {outcome:?}");
                    };
                    assert_eq!(debit.charged.get(), needed);
                    self.charged(&debit);
                }
            }
            Op::Commit { pick, amount } => {
                let Some(id) = Self::pick(&self.reservations, pick) else {
                    return;
                };
                self.tick();
                let state = self.model.hold_state(&id, self.now);
                let hold = match state {
                    HoldState::Open => Some(self.model.holds[&id].clone()),
                    HoldState::Expired => Some(self.model.ended[&id].hold.clone()),
                    _ => None,
                };
                let result = self.decide(Command::Commit {
                    reservation_id: id,
                    amount: amount.map(mc),
                    dimensions: None,
                });
                // In-flight completion (invariant 4): a live or expired
                // reservation's commit always succeeds, whatever it costs,
                // past the balance and the cap.
                match (state, hold, result) {
                    (HoldState::Open | HoldState::Expired, Some(hold), Ok(outcome)) => {
                        let Outcome::Charged { debit } = outcome else {
                            panic!("a commit answered {outcome:?}");
                        };
                        // The caller's amount, else what the card charges
                        // for a hold sized by the caller, else what was held.
                        let expected = match amount {
                            Some(amount) => amount,
                            None if hold.card_priced => hold.amount,
                            None => price_of(&hold.action).0,
                        };
                        assert_eq!(debit.charged.get(), expected);
                        assert_eq!(debit.late, state == HoldState::Expired);
                        if debit.overage.is_positive() {
                            *self.seen.entry("overage").or_default() += 1;
                        }
                        if debit.late {
                            *self.seen.entry("late").or_default() += 1;
                        }
                        self.charged(&debit);
                    }
                    (HoldState::Resolved(resolution), None, Err(rejection)) => assert_eq!(
                        rejection.reason(),
                        "ALREADY_RESOLVED",
                        "{resolution:?}: {rejection:?}"
                    ),
                    (HoldState::Unknown, None, Err(Rejection::ReservationNotFound { .. })) => {}
                    (state, _, result) => panic!("commit of a hold {state:?}: {result:?}"),
                }
            }
            Op::Release(pick) | Op::Extend { pick, .. } => {
                let Some(id) = Self::pick(&self.reservations, pick) else {
                    return;
                };
                self.tick();
                let state = self.model.hold_state(&id, self.now);
                let command = match op {
                    Op::Extend { ttl, .. } => Command::Extend {
                        reservation_id: id,
                        ttl_millis: ttl,
                    },
                    _ => Command::Release { reservation_id: id },
                };
                match (state, self.decide(command)) {
                    (HoldState::Open, Ok(_)) => {}
                    (HoldState::Expired, Err(Rejection::ReservationExpired { .. })) => {}
                    (
                        HoldState::Resolved(expected),
                        Err(Rejection::AlreadyResolved { resolution, .. }),
                    ) => assert_eq!(resolution, expected),
                    (HoldState::Unknown, Err(Rejection::ReservationNotFound { .. })) => {}
                    (state, result) => panic!("release or extend of a hold {state:?}: {result:?}"),
                }
            }
            Op::Adjust(amount) => {
                let grant_id = GrantId::parse(self.mint("adj")).unwrap();
                self.tick();
                let available = self.model.available(self.now);
                // An addition pays outstanding overage first.
                let expected =
                    (self.model.spendable(self.now) - self.model.overage + amount).max(0);
                let result = self.decide(Command::Adjust {
                    amount: mc(amount),
                    grant_id,
                    reason: "correction".into(),
                    operator: "ops".into(),
                });
                // Adding always works; removing never takes more than is
                // available (a correction never makes debt).
                if amount > 0 || -amount <= available {
                    assert!(result.is_ok(), "adjust {amount} of {available}: {result:?}");
                    assert_eq!(self.model.available(self.now), expected);
                } else {
                    assert_eq!(
                        result,
                        Err(Rejection::InsufficientCredits {
                            available: mc(available),
                            needed: mc(-amount)
                        })
                    );
                }
            }
            Op::Refund { pick, amount } => {
                if self.charges.is_empty() {
                    return;
                }
                let index = pick % self.charges.len();
                let (key, charged, refunded) = self.charges[index].clone();
                let refundable = charged - refunded;
                let asked = amount.unwrap_or(refundable);
                let grant_id = GrantId::parse(self.mint("refund")).unwrap();
                self.tick();
                let result = self.decide(Command::Refund {
                    charge_key: key,
                    amount: amount.map(mc),
                    reason: "refund".into(),
                    refund_grant_id: grant_id,
                });
                // Never more than the charge cost, in all.
                if asked <= 0 || asked > refundable {
                    let label = result.as_ref().map_or_else(|r| r.reason(), |_| "accepted");
                    assert_eq!(label, "REFUND_EXCEEDS_CHARGE", "{asked} of {refundable}");
                } else {
                    let Ok(Outcome::Refunded { refund }) = result else {
                        panic!("a refund of {asked} of {refundable} answered {result:?}");
                    };
                    assert_eq!(refund.amount.get(), asked);
                    assert_eq!(refund.refunded.get(), refunded + asked);
                    self.charges[index].2 += asked;
                    *self.seen.entry("refunded").or_default() += 1;
                }
            }
            Op::SetCap(cap) => {
                let result = self.execute(Command::SetSpendingCap { cap: cap.map(mc) });
                assert_eq!(result, Ok(Outcome::SpendingCapSet));
            }
            Op::ChangePlan(pick) => {
                let plan = PLANS[pick].0;
                self.tick();
                let current = self.model.plan.clone();
                let result = self.decide(Command::ChangePlan {
                    plan: PlanName::parse(plan).unwrap(),
                });
                match result {
                    Ok(Outcome::PlanChanged { .. }) => {
                        assert_ne!(current.as_deref(), Some(plan));
                    }
                    Err(Rejection::InvalidField { field: "plan", .. }) => {
                        assert_eq!(current.as_deref(), Some(plan))
                    }
                    other => panic!("change to {plan}: {other:?}"),
                }
            }
            Op::SetAnchor { day, hour, minute } => {
                let anchor = BillingAnchor::new(day, hour, minute).expect("an anchor");
                let result = self.execute(Command::SetBillingAnchor { anchor });
                assert_eq!(result, Ok(Outcome::BillingAnchorSet));
            }
            Op::SetAlerts(levels) => {
                let thresholds = levels.map(|(low, percent)| AlertThresholds {
                    low_balance_millicredits: vec![mc(low)],
                    critical_level_millicredits: Millicredits::ZERO,
                    usage_percent: vec![percent],
                    auto_top_up: None,
                });
                let result = self.execute(Command::SetAlertThresholds { thresholds });
                assert_eq!(result, Ok(Outcome::AlertThresholdsSet));
            }
        }
        assert_conserved(&self.account);
        assert_agrees(&self.account, &self.model, self.now);
    }
}
