//! The proptest strategies that draw scripts for the property tests. The
//! byte form of a script ([`super::script`]) covers the same ranges, so
//! what proptest draws can be written as a fuzz input (the seed corpus
//! is), and a test checks both ways.

use proptest::prelude::*;

use super::run::{ACTIONS, HOUR, Op, PLANS};
use super::script::Script;
use crate::{BucketKind, OpenAccount, PlanName};

/// A list index picked at random; a script says it in one byte.
fn pick() -> impl Strategy<Value = usize> {
    any::<u8>().prop_map(usize::from)
}

pub fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(BucketKind::Daily),
        Just(BucketKind::Monthly),
        Just(BucketKind::TopUp),
        Just(BucketKind::Promotional),
        Just(BucketKind::Trial),
    ];
    let action = 0..ACTIONS.len();
    prop_oneof![
        3 => (0i64..4_000).prop_map(Op::Wait),
        // Hours to weeks: days and cycles turn, allowances renew.
        1 => (1i64..=40 * 24).prop_map(|hours| Op::Wait(hours * HOUR)),
        3 => (kind, 1i64..5_000, proptest::option::of(0i64..3_000), proptest::option::of(1i64..8_000))
            .prop_map(|(kind, amount, effective_in, expires_in)| Op::Grant { kind, amount, effective_in, expires_in }),
        1 => pick().prop_map(Op::Void),
        4 => (action.clone(), proptest::option::weighted(0.6, 1i64..3_000), 1i64..6_000)
            .prop_map(|(action, amount, ttl)| Op::Reserve { action, amount, ttl }),
        4 => (pick(), proptest::option::weighted(0.7, 0i64..8_000)).prop_map(|(pick, amount)| Op::Commit { pick, amount }),
        1 => pick().prop_map(Op::Release),
        1 => (pick(), 1i64..6_000).prop_map(|(pick, ttl)| Op::Extend { pick, ttl }),
        3 => (action, proptest::option::weighted(0.6, 1i64..2_000)).prop_map(|(action, amount)| Op::Debit { action, amount }),
        1 => prop_oneof![-4_000i64..-1, 1i64..4_000].prop_map(Op::Adjust),
        2 => (pick(), proptest::option::weighted(0.6, 1i64..3_000)).prop_map(|(pick, amount)| Op::Refund { pick, amount }),
        1 => proptest::option::weighted(0.7, 1i64..25_000).prop_map(Op::SetCap),
        1 => (0..PLANS.len()).prop_map(Op::ChangePlan),
        1 => (1u8..=31, 0u8..24, 0u8..60).prop_map(|(day, hour, minute)| Op::SetAnchor { day, hour, minute }),
        1 => proptest::option::weighted(0.8, (1i64..20_000, 1u8..=100)).prop_map(Op::SetAlerts),
    ]
}

/// How the account opens: a plan of the catalogue or none, with its trial
/// when it has one and the coin says so.
pub fn opening() -> impl Strategy<Value = OpenAccount> {
    (
        proptest::option::weighted(0.7, 0..PLANS.len()),
        any::<bool>(),
    )
        .prop_map(|(plan, trial)| OpenAccount {
            plan: plan.map(|i| PlanName::parse(PLANS[i].0).unwrap()),
            trial: trial && plan.is_some_and(|i| PLANS[i].4.is_some()),
            ..OpenAccount::default()
        })
}

/// An opening and `ops` operations.
pub fn script(ops: std::ops::Range<usize>) -> impl Strategy<Value = Script> {
    (opening(), prop::collection::vec(op(), ops)).prop_map(|(open, ops)| Script { open, ops })
}
