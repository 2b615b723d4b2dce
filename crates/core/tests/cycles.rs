//! SPEC §4 invariant 7 (time): resets and expiries happen exactly at their
//! boundaries, once, whether time is noticed often or rarely. Random clocks
//! are driven across month ends, DST changes and leap days in several zones.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use proptest::prelude::*;
use tally_core::calendar::local;
use tally_core::{
    Account, ActionKey, BillingAnchor, BucketKind, Command, Context, Event, MemberId, Millicredits,
    OpenAccount, Plan, PlanCatalogue, PlanName, RateCards, Rollover, TimeZoneName, Timestamp,
    advance, execute,
};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
];

fn mc(credits: i64) -> Millicredits {
    Millicredits::from_credits(credits)
}

fn catalogue(plan: Plan) -> PlanCatalogue {
    let mut catalogue = PlanCatalogue {
        version: 1,
        ..Default::default()
    };
    catalogue.plans.insert(PlanName::parse("p").unwrap(), plan);
    catalogue
}

#[derive(Debug)]
struct Setup {
    zone: TimeZoneName,
    anchor: BillingAnchor,
    plan: Plan,
    opened_at: Timestamp,
}

/// Opens an account and returns it with the events so far.
fn open(setup: &Setup, plans: &PlanCatalogue) -> (Account, Vec<Event>) {
    let mut account = Account::default();
    let cards = RateCards::default();
    let ctx = Context {
        now: setup.opened_at,
        rate_cards: &cards,
        plans,
    };
    let decision = execute(
        &mut account,
        &Command::OpenAccount(OpenAccount {
            plan: Some(PlanName::parse("p").unwrap()),
            time_zone: Some(setup.zone.clone()),
            anchor: Some(setup.anchor),
            ..Default::default()
        }),
        &ctx,
    )
    .expect("opens");
    (account, decision.events)
}

fn spend(account: &mut Account, now: Timestamp, plans: &PlanCatalogue, credits: i64) -> Vec<Event> {
    let cards = RateCards::default();
    let ctx = Context {
        now,
        rate_cards: &cards,
        plans,
    };
    let mut events = advance(account, now);
    let debit = Command::Debit {
        occurred_at: None,
        member: MemberId::parse("m").unwrap(),
        action: ActionKey::parse("a").unwrap(),
        model: None,
        amount: Some(mc(credits)),
        dimensions: None,
    };
    if let Ok(decision) = execute(account, &debit, &ctx) {
        events.extend(decision.events);
    }
    events
}

/// The anchor's moments computed independently of the core: each month's
/// day clamped to the month, at the anchor's local time.
fn anchors_between(setup: &Setup, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
    let tz = TimeZone::get(setup.zone.as_str()).unwrap();
    let start = local(&setup.zone, from);
    let mut out = Vec::new();
    let (mut year, mut month) = (start.year(), start.month());
    loop {
        let days = jiff::civil::date(year, month, 1).days_in_month();
        let day = (setup.anchor.day() as i8).min(days);
        let at = DateTime::new(
            year,
            month,
            day,
            setup.anchor.hour() as i8,
            setup.anchor.minute() as i8,
            0,
            0,
        )
        .unwrap()
        .to_zoned(tz.clone())
        .unwrap();
        let at = Timestamp::from_millis(at.timestamp().as_millisecond());
        if at > to {
            return out;
        }
        if at > from {
            out.push(at);
        }
        (year, month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
    }
}

fn cycle_starts(events: &[Event]) -> Vec<Timestamp> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CycleStarted { at, .. } => Some(*at),
            _ => None,
        })
        .collect()
}

fn day_starts(events: &[Event]) -> Vec<Timestamp> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::DayStarted { at, .. } => Some(*at),
            _ => None,
        })
        .collect()
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        0..ZONES.len(),
        (1u8..=31, 0u8..24, 0u8..60),
        // 2026-01-01 to 2030-12-31, so leap day 2028 is in range.
        1_767_225_600_000i64..1_924_992_000_000,
        (
            0i64..50,
            0i64..5_000,
            proptest::option::of((0i64..3_000, 0i64..500)),
        ),
    )
        .prop_map(
            |(zone, (day, hour, minute), opened, (daily, monthly, rollover))| Setup {
                zone: TimeZoneName::parse(ZONES[zone]).unwrap(),
                anchor: BillingAnchor::new(day, hour, minute).unwrap(),
                opened_at: Timestamp::from_millis(opened),
                plan: Plan {
                    daily_allowance_millicredits: mc(daily),
                    monthly_allowance_millicredits: mc(monthly),
                    rollover: rollover.map(|(max, min)| Rollover {
                        max_millicredits: mc(max.max(min)),
                        min_millicredits: mc(min),
                    }),
                    ..Plan::default()
                },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Advancing at every step or only now and then writes the same events
    /// at the same moments, and every cycle and day starts exactly at its
    /// boundary, once.
    #[test]
    fn boundaries_happen_once_whoever_notices_them(
        setup in setup_strategy(),
        steps in prop::collection::vec((1i64..45 * DAY, 0i64..40, any::<bool>()), 1..12),
        noticed in prop::collection::vec(any::<bool>(), 12),
    ) {
        let plans = catalogue(setup.plan.clone());
        let (mut eager, mut eager_log) = open(&setup, &plans);
        let (mut lazy, mut lazy_log) = (eager.clone(), eager_log.clone());
        let mut now = setup.opened_at;
        for (i, (wait, credits, act)) in steps.iter().enumerate() {
            // Time passes in small steps for the eager account, which
            // notices every boundary as it comes.
            let target = now.plus_millis(*wait);
            while now < target {
                now = now.plus_millis((7 * HOUR).min(target.as_millis() - now.as_millis()));
                eager_log.extend(advance(&mut eager, now));
            }
            if *act {
                eager_log.extend(spend(&mut eager, now, &plans, *credits));
                lazy_log.extend(spend(&mut lazy, now, &plans, *credits));
            } else if noticed[i] {
                lazy_log.extend(advance(&mut lazy, now));
            }
        }
        lazy_log.extend(advance(&mut lazy, now));
        prop_assert_eq!(&eager_log, &lazy_log);
        prop_assert_eq!(&eager, &lazy);

        // Cycles: exactly the anchors in (opened, now], after the first
        // cycle which starts at opening; each ends where the next starts.
        let starts = cycle_starts(&eager_log);
        let mut expected = vec![setup.opened_at];
        expected.extend(anchors_between(&setup, setup.opened_at, now));
        prop_assert_eq!(&starts, &expected);
        let ends: Vec<Timestamp> = eager_log.iter().filter_map(|e| match e {
            Event::CycleStarted { end, .. } => Some(*end),
            _ => None,
        }).collect();
        for pair in starts.windows(2).zip(&ends) {
            prop_assert_eq!(pair.0[1], *pair.1);
        }

        // Days: the first starts with the first cycle, the rest at local
        // midnight (or the first moment of a day whose midnight is skipped).
        let days = day_starts(&eager_log);
        if setup.plan.daily_allowance_millicredits.is_positive() {
            prop_assert_eq!(days.first(), Some(&setup.opened_at));
            for (before, after) in days.iter().zip(days.iter().skip(1)) {
                let l = local(&setup.zone, *after);
                let prev = local(&setup.zone, *before);
                prop_assert!(l.date() > prev.date());
                prop_assert_eq!(l.date(), prev.date().tomorrow().unwrap());
                prop_assert!(l.hour() <= 1, "day started at {l}");
            }
            let last = local(&setup.zone, *days.last().unwrap());
            prop_assert_eq!(last.date(), local(&setup.zone, now).date());
        } else {
            prop_assert!(days.is_empty());
        }
        // Every allowance grant is unique: apply would refuse a duplicate,
        // and exactly one monthly allowance per cycle was given.
        let monthly = eager_log.iter().filter(|e| matches!(e,
            Event::CreditsGranted { kind: BucketKind::Monthly, grant_id, .. }
                if grant_id.as_str().starts_with("plan:monthly:"))).count();
        let expected_monthly = if setup.plan.monthly_allowance_millicredits.is_positive() {
            starts.len()
        } else {
            0
        };
        prop_assert_eq!(monthly, expected_monthly);
        let t = eager.totals;
        prop_assert_eq!(
            t.granted - t.consumed - t.expired - t.voided,
            eager.remaining() + eager.held() - eager.overage
        );
    }
}
