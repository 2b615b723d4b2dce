//! SPEC §4 invariants 1, 2 and 4, and the determinism of time, checked over
//! random command sequences against the pure core.

use proptest::prelude::*;
use tally_core::{
    Account, ActionKey, ActionPrice, BucketKind, Command, Context, Event, GrantCommand, GrantId,
    MemberId, Millicredits, PlanCatalogue, RateCard, RateCards, Rejection, ReservationId,
    Timestamp, advance, execute,
};

#[derive(Clone, Debug)]
enum Op {
    Wait(i64),
    Grant {
        kind: BucketKind,
        amount: i64,
        effective_in: Option<i64>,
        expires_in: Option<i64>,
    },
    Void(usize),
    Reserve {
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
    Debit(Option<i64>),
    /// An operator's correction, signed.
    Adjust(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(BucketKind::Daily),
        Just(BucketKind::Monthly),
        Just(BucketKind::TopUp),
        Just(BucketKind::Promotional),
        Just(BucketKind::Trial),
    ];
    prop_oneof![
        2 => (0i64..4_000).prop_map(Op::Wait),
        3 => (kind, 1i64..5_000, proptest::option::of(0i64..3_000), proptest::option::of(1i64..8_000))
            .prop_map(|(kind, amount, effective_in, expires_in)| Op::Grant { kind, amount, effective_in, expires_in }),
        1 => any::<usize>().prop_map(Op::Void),
        4 => (proptest::option::weighted(0.8, 1i64..3_000), 1i64..6_000).prop_map(|(amount, ttl)| Op::Reserve { amount, ttl }),
        4 => (any::<usize>(), proptest::option::weighted(0.8, 0i64..8_000)).prop_map(|(pick, amount)| Op::Commit { pick, amount }),
        1 => any::<usize>().prop_map(Op::Release),
        1 => (any::<usize>(), 1i64..6_000).prop_map(|(pick, ttl)| Op::Extend { pick, ttl }),
        2 => proptest::option::weighted(0.8, 1i64..2_000).prop_map(Op::Debit),
        1 => prop_oneof![-4_000i64..-1, 1i64..4_000].prop_map(Op::Adjust),
    ]
}

fn rate_card() -> RateCard {
    let mut card = RateCard {
        version: 7,
        ..RateCard::default()
    };
    card.actions.insert(
        ActionKey::parse("article.draft").unwrap(),
        ActionPrice::fixed(Millicredits::new(1_500)),
    );
    card
}

fn mc(v: i64) -> Millicredits {
    Millicredits::new(v)
}

/// Conservation (invariant 1): what was granted and not consumed, expired
/// or voided is exactly what sits in buckets (spendable, upcoming or held)
/// less the debt.
fn assert_conserved(account: &Account) {
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

struct Run {
    account: Account,
    now: Timestamp,
    card: RateCards,
    plans: PlanCatalogue,
    log: Vec<Event>,
    reservations: Vec<ReservationId>,
    grants: Vec<GrantId>,
    next_id: u64,
}

impl Run {
    fn new() -> Self {
        let card = RateCards::new([rate_card()]);
        let mut run = Run {
            account: Account::default(),
            now: Timestamp::from_millis(1_000_000),
            card,
            plans: PlanCatalogue::default(),
            log: Vec::new(),
            reservations: Vec::new(),
            grants: Vec::new(),
            next_id: 0,
        };
        run.execute(Command::OpenAccount(Default::default()))
            .expect("opens");
        run
    }

    fn mint(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn execute(&mut self, command: Command) -> Result<(), Rejection> {
        let ticked = advance(&mut self.account, self.now);
        self.log.extend(ticked);
        let before = self.account.clone();
        let ctx = Context {
            now: self.now,
            rate_cards: &self.card,
            plans: &self.plans,
        };
        match execute(&mut self.account, &command, &ctx) {
            Ok(decision) => {
                self.log.extend(decision.events);
                Ok(())
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

    fn step(&mut self, op: Op) {
        let member = MemberId::parse("alice").unwrap();
        let action = ActionKey::parse("article.draft").unwrap();
        match op {
            Op::Wait(ms) => {
                self.now = self.now.plus_millis(ms);
                self.log.extend(advance(&mut self.account, self.now));
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
                    grant_id: grant_id.clone(),
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
                self.grants.push(grant_id);
            }
            Op::Void(pick) => {
                if let Some(grant_id) = Self::pick(&self.grants, pick) {
                    let _ = self.execute(Command::VoidGrant {
                        grant_id,
                        reason: "test".into(),
                    });
                }
            }
            Op::Reserve { amount, ttl } => {
                let reservation_id = ReservationId::parse(self.mint("r")).unwrap();
                let mut probe = self.account.clone();
                advance(&mut probe, self.now);
                let available = probe.available_at(self.now);
                let needed = amount.map(mc).unwrap_or(mc(1_500));
                let result = self.execute(Command::Reserve {
                    reservation_id: reservation_id.clone(),
                    member,
                    action,
                    model: None,
                    amount: amount.map(mc),
                    dimensions: None,
                    ttl_millis: ttl,
                });
                // No oversell (invariant 2): a hold is granted exactly when
                // the available balance covers it.
                match result {
                    Ok(()) => {
                        assert!(needed <= available, "held {needed} of {available}");
                        self.reservations.push(reservation_id);
                    }
                    Err(Rejection::InsufficientCredits {
                        available: a,
                        needed: n,
                    }) => {
                        assert!(needed > available);
                        assert_eq!((a, n), (available, needed));
                    }
                    Err(other) => panic!("unexpected rejection {other:?}"),
                }
            }
            Op::Commit { pick, amount } => {
                if let Some(id) = Self::pick(&self.reservations, pick) {
                    let mut probe = self.account.clone();
                    advance(&mut probe, self.now);
                    let was_open = probe.reservations.contains_key(&id);
                    let was_expired = probe
                        .resolved_hold(&id, self.now)
                        .is_some_and(|r| r.resolution == tally_core::Resolution::Expired);
                    let result = self.execute(Command::Commit {
                        reservation_id: id,
                        amount: amount.map(mc),
                        dimensions: None,
                    });
                    // In-flight completion (invariant 4): a live or expired
                    // reservation's commit always succeeds, whatever it costs.
                    if was_open || was_expired {
                        assert!(result.is_ok(), "commit refused: {result:?}");
                    } else {
                        assert!(matches!(
                            result,
                            Err(Rejection::AlreadyResolved { .. })
                                | Err(Rejection::ReservationNotFound { .. })
                        ));
                    }
                }
            }
            Op::Release(pick) => {
                if let Some(id) = Self::pick(&self.reservations, pick) {
                    let _ = self.execute(Command::Release { reservation_id: id });
                }
            }
            Op::Extend { pick, ttl } => {
                if let Some(id) = Self::pick(&self.reservations, pick) {
                    let _ = self.execute(Command::Extend {
                        reservation_id: id,
                        ttl_millis: ttl,
                    });
                }
            }
            Op::Adjust(amount) => {
                let mut probe = self.account.clone();
                advance(&mut probe, self.now);
                let available = probe.available_at(self.now);
                let grant_id = GrantId::parse(self.mint("adj")).unwrap();
                let result = self.execute(Command::Adjust {
                    amount: mc(amount),
                    grant_id,
                    reason: "correction".into(),
                    operator: "ops".into(),
                });
                // Adding always works; removing never takes more than is
                // available (a correction never makes debt).
                if amount > 0 || mc(-amount) <= available {
                    assert!(result.is_ok(), "adjust {amount} of {available}: {result:?}");
                } else {
                    assert!(
                        matches!(result, Err(Rejection::InsufficientCredits { .. })),
                        "{result:?}"
                    );
                }
            }
            Op::Debit(amount) => {
                let _ = self.execute(Command::Debit {
                    occurred_at: None,
                    member,
                    action,
                    model: None,
                    amount: amount.map(mc),
                    dimensions: None,
                });
            }
        }
        assert_conserved(&self.account);
        // Overage is debt paid from the first credits available: while any
        // is owed, nothing is spendable.
        if self.account.overage.is_positive() {
            assert_eq!(self.account.available_at(self.now), Millicredits::ZERO);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn conservation_no_oversell_and_commits_hold_at_every_event(ops in prop::collection::vec(op(), 1..80)) {
        let mut run = Run::new();
        for op in ops {
            run.step(op);
        }
        // At every event, not only between commands: replay the log one
        // event at a time.
        let mut replayed = Account::default();
        for event in &run.log {
            replayed.apply(event).expect("the log applies");
            assert_conserved(&replayed);
        }
        // The fold of the log is the state: a rebuild reproduces it.
        prop_assert_eq!(&replayed, &run.account);
        // Event times never go backwards within an account.
        prop_assert!(run.log.windows(2).all(|w| w[0].at() <= w[1].at()));
    }

    #[test]
    fn advancing_in_steps_or_at_once_gives_the_same_events(
        ops in prop::collection::vec(op(), 1..40),
        steps in prop::collection::vec(0i64..3_000, 1..6),
    ) {
        let mut run = Run::new();
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

/// Past the ceiling of what its lifetime totals may reach, an account
/// refuses every command with a typed reason, and changes nothing, rather
/// than let a sum overflow.
#[test]
fn totals_past_the_ceiling_refuse_every_command() {
    let mut run = Run::new();
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
