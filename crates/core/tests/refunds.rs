//! Refunds over random histories, against a model the test keeps itself:
//! a refund never gives back more than its charge cost (in total, and per
//! bucket that paid), is refused exactly when it would, keeps conservation,
//! moves the available balance by what it says it returned, and leaves
//! lifetime consumption at what was charged less what was refunded.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_core::{
    Account, ActionKey, ActionPrice, BucketKind, Charge, Command, Context, Event, GrantCommand,
    GrantId, IdempotencyKey, MemberId, Millicredits, Outcome, PlanCatalogue, RateCard, RateCards,
    Rejection, ReservationId, Timestamp, advance, execute,
};

#[derive(Clone, Debug)]
enum Op {
    Wait(i64),
    Grant {
        kind: BucketKind,
        amount: i64,
        expires_in: Option<i64>,
    },
    Debit(i64),
    /// Reserve `held`, then commit `actual` (overage when it is more than
    /// what is spendable).
    Settle {
        held: i64,
        actual: i64,
    },
    Refund {
        pick: usize,
        amount: Option<i64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(BucketKind::Daily),
        Just(BucketKind::Monthly),
        Just(BucketKind::TopUp),
        Just(BucketKind::Promotional),
    ];
    prop_oneof![
        2 => (0i64..5_000).prop_map(Op::Wait),
        3 => (kind, 1i64..5_000, proptest::option::of(1i64..8_000))
            .prop_map(|(kind, amount, expires_in)| Op::Grant { kind, amount, expires_in }),
        3 => (1i64..3_000).prop_map(Op::Debit),
        2 => (1i64..2_000, 0i64..6_000).prop_map(|(held, actual)| Op::Settle { held, actual }),
        4 => (any::<usize>(), proptest::option::weighted(0.6, 1i64..4_000))
            .prop_map(|(pick, amount)| Op::Refund { pick, amount }),
    ]
}

/// What the test knows of one charge, from the answers it got.
#[derive(Debug)]
struct Known {
    charged: i64,
    refunded: i64,
    /// Per bucket: paid by it, and returned to it by refunds so far.
    paid: BTreeMap<GrantId, i64>,
    returned: BTreeMap<GrantId, i64>,
}

struct Run {
    account: Account,
    now: Timestamp,
    cards: RateCards,
    plans: PlanCatalogue,
    charges: Vec<(IdempotencyKey, Known)>,
    consumed: i64,
    next: u64,
}

impl Run {
    fn new() -> Self {
        let mut card = RateCard {
            version: 1,
            ..RateCard::default()
        };
        card.actions.insert(
            ActionKey::parse("article.draft").unwrap(),
            ActionPrice::fixed(Millicredits::new(1_000)),
        );
        let mut run = Run {
            account: Account::default(),
            now: Timestamp::from_millis(1_000_000),
            cards: RateCards::new([card]),
            plans: PlanCatalogue::default(),
            charges: Vec::new(),
            consumed: 0,
            next: 0,
        };
        run.execute(Command::OpenAccount(Default::default()))
            .expect("open");
        run
    }

    fn mint(&mut self) -> String {
        self.next += 1;
        format!("id-{}", self.next)
    }

    fn execute(&mut self, command: Command) -> Result<(Outcome, Vec<Event>), Rejection> {
        let ctx = Context {
            now: self.now,
            rate_cards: &self.cards,
            plans: &self.plans,
        };
        let decision = execute(&mut self.account, &command, &ctx)?;
        Ok((decision.outcome, decision.events))
    }

    /// A charge went through: remember it as the engine's store would.
    fn charged(&mut self, outcome: &Outcome) {
        let Outcome::Charged { debit } = outcome else {
            panic!("not a charge: {outcome:?}")
        };
        let key = IdempotencyKey::parse(self.mint()).unwrap();
        self.account.charges.insert(
            key.clone(),
            Charge {
                key: key.clone(),
                charged_at: Some(self.now),
                debit: debit.clone(),
                refunded: Millicredits::ZERO,
            },
        );
        self.consumed += debit.charged.get();
        let paid = debit
            .paid_by()
            .into_iter()
            .map(|d| (d.grant_id, d.amount.get()))
            .collect();
        self.charges.push((
            key,
            Known {
                charged: debit.charged.get(),
                refunded: 0,
                paid,
                returned: BTreeMap::new(),
            },
        ));
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Wait(ms) => {
                self.now = self.now.plus_millis(ms);
                advance(&mut self.account, self.now);
            }
            Op::Grant {
                kind,
                amount,
                expires_in,
            } => {
                let grant_id = GrantId::parse(self.mint()).unwrap();
                self.execute(Command::Grant(GrantCommand {
                    grant_id,
                    pack: None,
                    kind,
                    source: None,
                    priority: None,
                    amount: Millicredits::new(amount),
                    effective_at: None,
                    expires_at: expires_in.map(|ms| self.now.plus_millis(ms)),
                    cost_basis: None,
                    reference: String::new(),
                }))
                .expect("grants are accepted");
            }
            Op::Debit(amount) => {
                if let Ok((outcome, _)) = self.execute(Command::Debit {
                    member: MemberId::parse("ann").unwrap(),
                    action: ActionKey::parse("article.draft").unwrap(),
                    model: None,
                    amount: Some(Millicredits::new(amount)),
                    dimensions: None,
                    occurred_at: None,
                }) {
                    self.charged(&outcome);
                }
            }
            Op::Settle { held, actual } => {
                let reservation_id = ReservationId::parse(self.mint()).unwrap();
                let reserved = self.execute(Command::Reserve {
                    reservation_id: reservation_id.clone(),
                    member: MemberId::parse("ann").unwrap(),
                    action: ActionKey::parse("article.draft").unwrap(),
                    model: None,
                    amount: Some(Millicredits::new(held)),
                    dimensions: None,
                    ttl_millis: 60_000,
                });
                if reserved.is_ok() {
                    let (outcome, _) = self
                        .execute(Command::Commit {
                            reservation_id,
                            amount: Some(Millicredits::new(actual)),
                            dimensions: None,
                        })
                        .expect("a live hold commits");
                    self.charged(&outcome);
                }
            }
            Op::Refund { pick, amount } => self.refund(pick, amount),
        }
        assert_conserved(&self.account);
        assert_eq!(
            self.account.totals.consumed.get(),
            self.consumed,
            "consumed is what was charged less what was refunded"
        );
    }

    fn refund(&mut self, pick: usize, amount: Option<i64>) {
        if self.charges.is_empty() {
            return;
        }
        let index = pick % self.charges.len();
        let key = self.charges[index].0.clone();
        let refundable = {
            let known = &self.charges[index].1;
            known.charged - known.refunded
        };
        let asked = amount.unwrap_or(refundable);
        let available_before = self.account.available_at(self.now).get();
        let overage_before = self.account.overage.get();
        let result = self.execute(Command::Refund {
            charge_key: key.clone(),
            amount: amount.map(Millicredits::new),
            reason: "test".into(),
            refund_grant_id: GrantId::parse(format!("refund-{}", self.next + 1)).unwrap(),
        });
        self.next += 1;
        if asked <= 0 || asked > refundable {
            match result {
                Err(Rejection::RefundExceedsCharge {
                    refundable: said, ..
                }) => assert_eq!(said.get(), refundable),
                other => panic!("refund of {asked} with {refundable} left: {other:?}"),
            }
            return;
        }
        let (outcome, events) =
            result.unwrap_or_else(|e| panic!("refund of {asked} with {refundable} left: {e}"));
        let Outcome::Refunded { refund } = outcome else {
            panic!("not a refund: {outcome:?}")
        };
        assert_eq!(refund.amount.get(), asked);
        let known = &mut self.charges[index].1;
        known.refunded += asked;
        self.consumed -= asked;
        assert_eq!(refund.refunded.get(), known.refunded);
        assert!(known.refunded <= known.charged);
        for draw in &refund.returned {
            let returned = known.returned.entry(draw.grant_id.clone()).or_default();
            *returned += draw.amount.get();
            assert!(
                *returned <= known.paid.get(&draw.grant_id).copied().unwrap_or(0),
                "bucket {} got back more than it paid for {key}",
                draw.grant_id
            );
        }
        let cancelled = refund.overage_cancelled.get();
        assert!(cancelled <= overage_before);
        // The refund's own event moves the balance by what it returned,
        // less the debt it cleared; settling may then pay other debt from
        // what came back.
        let repaid: i64 = events
            .iter()
            .map(|e| match e {
                Event::OverageRepaid { amount, .. } => amount.get(),
                _ => 0,
            })
            .sum();
        assert_eq!(
            self.account.available_at(self.now).get(),
            available_before + asked - cancelled - repaid
        );
    }
}

fn assert_conserved(account: &Account) {
    let t = account.totals;
    assert_eq!(
        t.granted - t.consumed - t.expired - t.voided,
        account.remaining() + account.held() - account.overage,
        "conservation broken at version {}",
        account.version
    );
    assert!(account.overage.get() >= 0);
    for bucket in &account.buckets {
        assert!(bucket.remaining.get() >= 0, "{bucket:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn refunds_never_return_more_than_was_charged(ops in prop::collection::vec(op(), 1..60)) {
        let mut run = Run::new();
        for op in ops {
            run.step(op);
        }
    }
}
