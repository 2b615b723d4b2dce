//! The rate card: fixed and metered prices, model entries, rounding, bounds,
//! validation and serialisation, plus properties checked against an
//! independent rational computation.

use proptest::prelude::*;
use tally_core::{
    Account, ActionKey, ActionPrice, BucketKind, Command, Context, Dimensions, Event, GrantCommand,
    GrantId, MemberId, Millicredits, ModelName, ModelPrice, Multiplier, OpenAccount, Outcome,
    PlanCatalogue, RateCard, RateCards, Rates, Rejection, ReservationId, Rounding, Timestamp,
    UnitName, execute,
};

const CARD: &str = r#"
version = 4

[actions."article.draft"]
price_millicredits = 2000
capability = "writing"

[actions."topic.research"]
price_millicredits = 0

[actions."x.engage"]
price_millicredits = 1000
models = { "premium" = 2000, "turbo" = { multiplier = "1.5" } }

[actions."content.generate"]
capability = "content"
rounding = "up_to_credit"
min_millicredits = 1000
max_millicredits = 50000
hold_millicredits = 8000

[actions."content.generate".rates]
per_1k_input_tokens = 300
per_1k_output_tokens = 1500
per_1k_context_tokens = 100
per_image = 4000
per_tool_call = 250

[actions."content.generate".models."large"]
multiplier = "2.5"
hold_millicredits = 20000

[actions."content.generate".models."mini"]
rates = { per_1k_output_tokens = 600 }
"#;

fn card() -> RateCard {
    RateCard::from_toml_str(CARD).expect("the test card is valid")
}

fn key(action: &str) -> ActionKey {
    ActionKey::parse(action).unwrap()
}

fn model(name: &str) -> ModelName {
    ModelName::parse(name).unwrap()
}

fn unit(name: &str) -> UnitName {
    UnitName::parse(name).unwrap()
}

fn mc(v: i64) -> Millicredits {
    Millicredits::new(v)
}

fn tokens(input_tokens: u64, output_tokens: u64) -> Dimensions {
    Dimensions {
        input_tokens,
        output_tokens,
        ..Dimensions::default()
    }
}

/// One action whose only rate is 1 mc per 1000 input tokens, so
/// `input_tokens` is the exact price in thousandths of a millicredit.
fn per_token_card(rounding: Rounding) -> RateCard {
    let mut price = ActionPrice::metered(Rates {
        per_1k_input_tokens: mc(1),
        ..Rates::default()
    });
    price.rounding = rounding;
    single("metered.action", price)
}

fn single(action: &str, price: ActionPrice) -> RateCard {
    let mut card = RateCard {
        version: 1,
        ..RateCard::default()
    };
    card.actions.insert(key(action), price);
    card.validate().expect("the test card is valid");
    card
}

fn priced(card: &RateCard, input_tokens: u64) -> i64 {
    card.price_of(&key("metered.action"), None, &tokens(input_tokens, 0))
        .unwrap()
        .get()
}

#[test]
fn a_fixed_price_is_charged_whatever_was_used() {
    let card = card();
    let lots = Dimensions {
        units: Default::default(),
        input_tokens: 50_000,
        output_tokens: 9_000,
        context_tokens: 1,
        images: 3,
        tool_calls: 7,
    };
    let draft = key("article.draft");
    assert_eq!(card.price_of(&draft, None, &lots), Ok(mc(2000)));
    assert_eq!(
        card.price_of(&draft, None, &Dimensions::default()),
        Ok(mc(2000))
    );
    assert_eq!(card.is_metered(&draft, None), Some(false));
}

#[test]
fn a_models_fixed_price_overrides_the_actions_and_other_models_pay_the_actions() {
    let card = card();
    let engage = key("x.engage");
    let none = Dimensions::default();
    assert_eq!(
        card.price_of(&engage, Some(&model("premium")), &none),
        Ok(mc(2000))
    );
    assert_eq!(
        card.price_of(&engage, Some(&model("unlisted")), &none),
        Ok(mc(1000))
    );
    assert_eq!(card.price_of(&engage, None, &none), Ok(mc(1000)));
}

#[test]
fn a_model_fixed_price_makes_a_metered_action_fixed_for_that_model() {
    let mut price = ActionPrice::metered(Rates {
        per_image: mc(4000),
        ..Rates::default()
    });
    price
        .models
        .insert(model("flat"), ModelPrice::fixed(mc(1234)));
    let card = single("image.generate", price);
    let images = Dimensions {
        images: 5,
        ..Dimensions::default()
    };
    let action = key("image.generate");
    assert_eq!(
        card.price_of(&action, Some(&model("flat")), &images),
        Ok(mc(1234))
    );
    assert_eq!(card.price_of(&action, None, &images), Ok(mc(20_000)));
    assert_eq!(card.is_metered(&action, Some(&model("flat"))), Some(false));
    assert_eq!(card.is_metered(&action, None), Some(true));
}

#[test]
fn a_metered_price_is_the_exact_sum_of_every_dimension_times_its_rate() {
    let price = ActionPrice::metered(Rates {
        per_unit: Default::default(),
        per_1k_input_tokens: mc(300),
        per_1k_output_tokens: mc(1500),
        per_1k_context_tokens: mc(100),
        per_image: mc(4000),
        per_tool_call: mc(250),
    });
    let card = single("content.generate", price);
    let used = Dimensions {
        units: Default::default(),
        input_tokens: 2000,
        output_tokens: 1000,
        context_tokens: 10_000,
        images: 2,
        tool_calls: 3,
    };
    // 600 + 1500 + 1000 + 8000 + 750
    assert_eq!(
        card.price_of(&key("content.generate"), None, &used),
        Ok(mc(11_850))
    );
}

#[test]
fn fractions_of_a_millicredit_are_kept_across_dimensions_and_rounded_up_once() {
    let price = ActionPrice::metered(Rates {
        per_1k_input_tokens: mc(3),
        per_1k_output_tokens: mc(7),
        ..Rates::default()
    });
    let card = single("chat.reply", price);
    let action = key("chat.reply");
    // 0.003 + 0.007 = 0.010 mc: rounding each term first would give 2.
    assert_eq!(card.price_of(&action, None, &tokens(1, 1)), Ok(mc(1)));
    // 1500 × 3 / 1000 = 4.5 mc, rounded up.
    assert_eq!(card.price_of(&action, None, &tokens(1500, 0)), Ok(mc(5)));
    // 500 × 3 + 500 × 7 = 5000 thousandths: exactly 5, no rounding.
    assert_eq!(card.price_of(&action, None, &tokens(500, 500)), Ok(mc(5)));
}

#[test]
fn a_multiplier_of_one_and_a_half_scales_the_exact_amount() {
    let card = card();
    let engage = key("x.engage");
    assert_eq!(
        card.price_of(&engage, Some(&model("turbo")), &Dimensions::default()),
        Ok(mc(1500))
    );

    let mut price = ActionPrice::metered(Rates {
        per_1k_input_tokens: mc(1),
        ..Rates::default()
    });
    price.models.insert(
        model("turbo"),
        ModelPrice::multiplied("1.5".parse().unwrap()),
    );
    let card = single("metered.action", price);
    let action = key("metered.action");
    let turbo = Some(&model("turbo"));
    // 1 token: 0.001 × 1.5 = 0.0015 mc, which still rounds up to 1.
    assert_eq!(card.price_of(&action, turbo, &tokens(1, 0)), Ok(mc(1)));
    // 2000 tokens: 2 × 1.5 = 3 mc exactly.
    assert_eq!(card.price_of(&action, turbo, &tokens(2000, 0)), Ok(mc(3)));
    // 3333 tokens: 3.333 × 1.5 = 4.9995 mc, rounded up once (not 3.334 × 1.5).
    assert_eq!(card.price_of(&action, turbo, &tokens(3333, 0)), Ok(mc(5)));
}

#[test]
fn model_rates_replace_only_the_rates_they_name_and_a_multiplier_applies_before_rounding() {
    let card = card();
    let action = key("content.generate");
    let used = tokens(2000, 1000);
    // 600 + 1500 = 2100 → up to 3000.
    assert_eq!(card.price_of(&action, None, &used), Ok(mc(3000)));
    // × 2.5 = 5250 → up to 6000 (rounding first would give 7500).
    assert_eq!(
        card.price_of(&action, Some(&model("large")), &used),
        Ok(mc(6000))
    );
    // 600 + 600 = 1200 → up to 2000.
    assert_eq!(
        card.price_of(&action, Some(&model("mini")), &used),
        Ok(mc(2000))
    );
}

#[test]
fn millicredit_rounding_rounds_any_fraction_up_and_leaves_whole_amounts() {
    let card = per_token_card(Rounding::Millicredit);
    assert_eq!(priced(&card, 0), 0);
    assert_eq!(priced(&card, 1), 1);
    assert_eq!(priced(&card, 1000), 1);
    assert_eq!(priced(&card, 1001), 2);
    assert_eq!(priced(&card, 1_000_999), 1001);
}

#[test]
fn up_to_credit_rounds_any_fraction_of_a_credit_up() {
    let card = per_token_card(Rounding::UpToCredit);
    assert_eq!(priced(&card, 0), 0);
    // 0.001 mc is a fraction of a credit.
    assert_eq!(priced(&card, 1), 1000);
    assert_eq!(priced(&card, 1_000_000), 1000);
    assert_eq!(priced(&card, 1_000_001), 2000);
    assert_eq!(priced(&card, 1_999_999), 2000);
}

#[test]
fn nearest_credit_rounds_half_up_at_the_exact_boundary() {
    let card = per_token_card(Rounding::NearestCredit);
    assert_eq!(priced(&card, 0), 0);
    assert_eq!(priced(&card, 499_999), 0);
    assert_eq!(priced(&card, 500_000), 1000);
    assert_eq!(priced(&card, 1_499_999), 1000);
    assert_eq!(priced(&card, 1_500_000), 2000);
    assert_eq!(priced(&card, 2_000_000), 2000);
}

#[test]
fn down_to_credit_drops_any_fraction_of_a_credit() {
    let card = per_token_card(Rounding::DownToCredit);
    assert_eq!(priced(&card, 999_999), 0);
    assert_eq!(priced(&card, 1_000_000), 1000);
    // 1999.999 mc: flooring the exact amount, not the amount rounded up
    // to a millicredit first (which would be 2000).
    assert_eq!(priced(&card, 1_999_999), 1000);
    assert_eq!(priced(&card, 2_000_000), 2000);
}

#[test]
fn the_minimum_and_maximum_clamp_after_rounding() {
    let card = card();
    let action = key("content.generate");
    // Nothing used: the minimum.
    assert_eq!(
        card.price_of(&action, None, &Dimensions::default()),
        Ok(mc(1000))
    );
    // 1 input token: 0.3 mc, up to 1000 — at the minimum.
    assert_eq!(card.price_of(&action, None, &tokens(1, 0)), Ok(mc(1000)));
    // 100k output tokens: 150_000 mc, clamped to the maximum.
    assert_eq!(
        card.price_of(&action, None, &tokens(0, 100_000)),
        Ok(mc(50_000))
    );
    // The maximum holds after the multiplier too.
    assert_eq!(
        card.price_of(&action, Some(&model("large")), &tokens(0, 100_000)),
        Ok(mc(50_000))
    );

    let mut price = ActionPrice::metered(Rates {
        per_1k_input_tokens: mc(1),
        ..Rates::default()
    });
    price.min_millicredits = Some(mc(7));
    let card = single("metered.action", price);
    assert_eq!(priced(&card, 0), 7);
    assert_eq!(priced(&card, 6_001), 7);
    assert_eq!(priced(&card, 7_001), 8);
}

#[test]
fn a_free_action_costs_nothing_and_is_valid() {
    let card = card();
    let research = key("topic.research");
    assert_eq!(card.price(&research, None), Ok(Millicredits::ZERO));
    assert_eq!(
        card.price_of(&research, Some(&model("any")), &tokens(10_000, 10_000)),
        Ok(Millicredits::ZERO)
    );
    assert_eq!(card.hold_of(&research, None), Ok(Millicredits::ZERO));
    assert!(card.validate().is_ok());
}

#[test]
fn an_unknown_action_is_rejected_by_every_lookup() {
    let card = card();
    let unknown = key("no.such.action");
    let expected = Err(Rejection::UnknownAction {
        action: unknown.clone(),
    });
    assert_eq!(
        card.price_of(&unknown, None, &Dimensions::default()),
        expected
    );
    assert_eq!(card.price(&unknown, None), expected);
    assert_eq!(card.hold_of(&unknown, None), expected);
    assert_eq!(card.is_metered(&unknown, None), None);
}

#[test]
fn price_is_price_of_with_nothing_used() {
    let card = card();
    for action in card.actions.keys() {
        for name in [None, Some(model("premium")), Some(model("large"))] {
            assert_eq!(
                card.price(action, name.as_ref()),
                card.price_of(action, name.as_ref(), &Dimensions::default())
            );
        }
    }
}

#[test]
fn the_default_hold_is_the_price_of_nothing_and_an_explicit_hold_wins() {
    let card = card();
    // Fixed: the price, the model's own where it has one.
    assert_eq!(card.hold_of(&key("article.draft"), None), Ok(mc(2000)));
    assert_eq!(
        card.hold_of(&key("x.engage"), Some(&model("premium"))),
        Ok(mc(2000))
    );
    // Metered with explicit holds: the action's, or the model's.
    let generate = key("content.generate");
    assert_eq!(card.hold_of(&generate, None), Ok(mc(8000)));
    assert_eq!(card.hold_of(&generate, Some(&model("mini"))), Ok(mc(8000)));
    assert_eq!(
        card.hold_of(&generate, Some(&model("large"))),
        Ok(mc(20_000))
    );
    // Metered without a hold: the minimum.
    let mut price = ActionPrice::metered(Rates {
        per_image: mc(4000),
        ..Rates::default()
    });
    price.min_millicredits = Some(mc(2500));
    let card = single("image.generate", price);
    assert_eq!(card.hold_of(&key("image.generate"), None), Ok(mc(2500)));
}

#[test]
fn a_price_above_the_input_limit_is_rejected_and_a_maximum_prevents_it() {
    let huge = Dimensions {
        units: Default::default(),
        input_tokens: u64::MAX,
        output_tokens: u64::MAX,
        context_tokens: u64::MAX,
        images: u64::MAX,
        tool_calls: u64::MAX,
    };
    let rates = Rates {
        per_unit: Default::default(),
        per_1k_input_tokens: Millicredits::MAX_INPUT,
        per_1k_output_tokens: Millicredits::MAX_INPUT,
        per_1k_context_tokens: Millicredits::MAX_INPUT,
        per_image: Millicredits::MAX_INPUT,
        per_tool_call: Millicredits::MAX_INPUT,
    };
    let action = key("runaway");
    let card = single("runaway", ActionPrice::metered(rates.clone()));
    for used in [huge.clone(), tokens(0, u64::MAX)] {
        match card.price_of(&action, None, &used) {
            Err(Rejection::InvalidField { field, .. }) => assert_eq!(field, "dimensions"),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    // Just at the limit is fine, one millicredit more is not.
    let per_image = single(
        "runaway",
        ActionPrice::metered(Rates {
            per_image: mc(1000),
            ..Rates::default()
        }),
    );
    let images = |images| Dimensions {
        images,
        ..Dimensions::default()
    };
    assert_eq!(
        per_image.price_of(&action, None, &images(1_000_000_000)),
        Ok(Millicredits::MAX_INPUT)
    );
    assert!(
        per_image
            .price_of(&action, None, &images(1_000_000_001))
            .is_err()
    );

    // With the largest multiplier the exact amount exceeds even i128; a
    // maximum still caps it, and without one it is still refused.
    let largest = ModelPrice::multiplied("4294967.295".parse().unwrap());
    let mut capped = ActionPrice::metered(rates);
    capped.max_millicredits = Some(mc(50_000));
    capped.models.insert(model("largest"), largest);
    let card = single("runaway", capped.clone());
    assert_eq!(card.price_of(&action, None, &huge), Ok(mc(50_000)));
    let largest = Some(&model("largest"));
    assert_eq!(card.price_of(&action, largest, &huge), Ok(mc(50_000)));
    capped.max_millicredits = None;
    let card = single("runaway", capped);
    assert!(card.price_of(&action, largest, &huge).is_err());
}

#[test]
fn the_smallest_possible_fraction_still_rounds_up() {
    // One token at 1 mc per 1000 tokens, times 0.001: a millionth of a
    // millicredit.
    for (rounding, expected) in [
        (Rounding::Millicredit, 1),
        (Rounding::UpToCredit, 1000),
        (Rounding::NearestCredit, 0),
        (Rounding::DownToCredit, 0),
    ] {
        let mut price = ActionPrice::metered(Rates {
            per_1k_input_tokens: mc(1),
            ..Rates::default()
        });
        price.rounding = rounding;
        price.models.insert(
            model("tiny"),
            ModelPrice::multiplied("0.001".parse().unwrap()),
        );
        let card = single("metered.action", price);
        let tiny = Some(&model("tiny"));
        let action = key("metered.action");
        assert_eq!(
            card.price_of(&action, tiny, &tokens(1, 0)),
            Ok(mc(expected)),
            "{rounding:?}"
        );
    }
}

fn invalid(toml: &str) -> String {
    match RateCard::from_toml_str(toml) {
        Ok(card) => panic!("accepted an invalid card: {card:?}"),
        Err(e) => e,
    }
}

fn action_toml(body: &str) -> String {
    format!("version = 1\n[actions.\"a.b\"]\n{body}\n")
}

#[test]
fn negative_amounts_are_rejected() {
    for body in [
        "price_millicredits = -1",
        "rates = { per_image = -5 }",
        "rates = {}\nmin_millicredits = -1",
        "price_millicredits = 1\nhold_millicredits = -1",
        "price_millicredits = 1\nmodels = { \"m\" = -2000 }",
        "rates = {}\nmodels.m = { rates = { per_tool_call = -1 } }",
    ] {
        let error = invalid(&action_toml(body));
        assert!(error.contains("must not be negative"), "{body}: {error}");
    }
}

#[test]
fn a_minimum_above_the_maximum_is_rejected() {
    let error = invalid(&action_toml(
        "rates = { per_image = 1 }\nmin_millicredits = 2000\nmax_millicredits = 1000",
    ));
    assert!(error.contains("above max_millicredits"), "{error}");
}

#[test]
fn bounds_that_are_not_whole_credits_are_rejected_when_rounding_to_credits() {
    let error = invalid(&action_toml(
        "rates = { per_image = 1 }\nrounding = \"up_to_credit\"\nmax_millicredits = 2500",
    ));
    assert!(error.contains("whole credits"), "{error}");
    // The same bound is fine when rounding to millicredits.
    RateCard::from_toml_str(&action_toml(
        "rates = { per_image = 1 }\nmax_millicredits = 2500",
    ))
    .unwrap();
}

#[test]
fn malformed_multipliers_are_rejected() {
    for multiplier in [
        "\"1.2345\"",
        "\"abc\"",
        "\"-1\"",
        "\"0\"",
        "\"0.000\"",
        "\"\"",
        "\".5\"",
        "\"1.\"",
        "\"+1\"",
        "\"1e3\"",
        "\" 1\"",
        "\"99999999999\"",
        "\"4294967.296\"",
        "-1",
        "0",
        "1.5",
    ] {
        let body = format!("price_millicredits = 1\nmodels.m = {{ multiplier = {multiplier} }}");
        let error = invalid(&action_toml(&body));
        assert!(error.contains("multiplier"), "{multiplier}: {error}");
    }
}

#[test]
fn unknown_rounding_and_unknown_fields_are_rejected() {
    for body in [
        "rates = {}\nrounding = \"up\"",
        "price_millicredits = 1\nprice = 2",
        "rates = { per_video = 1 }",
        "price_millicredits = 1\nmodels.m = { multipler = \"2\" }",
    ] {
        invalid(&action_toml(body));
    }
}

#[test]
fn an_action_needs_exactly_one_of_a_fixed_price_or_rates() {
    for body in [
        "rounding = \"up_to_credit\"",
        "price_millicredits = 1\nrates = { per_image = 1 }",
    ] {
        let error = invalid(&action_toml(body));
        assert!(error.contains("exactly one of"), "{body}: {error}");
    }
}

#[test]
fn model_entries_that_contradict_their_action_are_rejected() {
    let error = invalid(&action_toml(
        "price_millicredits = 1\nmodels.m = { rates = { per_image = 1 } }",
    ));
    assert!(error.contains("only to a metered action"), "{error}");
    let error = invalid(&action_toml(
        "rates = {}\nmodels.m = { price_millicredits = 1, rates = { per_image = 1 } }",
    ));
    assert!(error.contains("not both"), "{error}");
}

#[test]
fn a_card_with_actions_cannot_be_version_zero() {
    let error = invalid("version = 0\n[actions.\"a.b\"]\nprice_millicredits = 1\n");
    assert!(error.contains("version 0"), "{error}");
    assert_eq!(
        RateCard::from_toml_str("version = 0"),
        Ok(RateCard::default())
    );
}

#[test]
fn multipliers_parse_exactly_and_print_canonically() {
    for (text, per_mille, printed) in [
        ("1.5", 1500, "1.5"),
        ("2", 2000, "2"),
        ("0.25", 250, "0.25"),
        ("1.000", 1000, "1"),
        ("0.001", 1, "0.001"),
        ("02.50", 2500, "2.5"),
        ("4294967.295", u32::MAX, "4294967.295"),
    ] {
        let multiplier: Multiplier = text.parse().unwrap();
        assert_eq!(multiplier.per_mille(), per_mille, "{text}");
        assert_eq!(multiplier.to_string(), printed, "{text}");
    }
    assert_eq!(Multiplier::from_per_mille(0), None);
}

#[test]
fn an_action_may_name_the_capability_it_belongs_to() {
    let card = card();
    assert_eq!(card.capability_of(&key("article.draft")), Some("writing"));
    assert_eq!(
        card.capability_of(&key("content.generate")),
        Some("content")
    );
    assert_eq!(card.capability_of(&key("topic.research")), None);
    assert_eq!(card.capability_of(&key("no.such")), None);
    for bad in [
        "\"\"",
        "\"Writing\"",
        "\"two words\"",
        &format!("\"{}\"", "x".repeat(65)),
    ] {
        let error = invalid(&action_toml(&format!(
            "price_millicredits = 1\ncapability = {bad}"
        )));
        assert!(error.contains("capability"), "{bad}: {error}");
    }
}

/// Runs `command` on `account` at a fixed moment with the test card.
fn run(account: &mut Account, command: Command) -> Outcome {
    let cards = RateCards::new([card()]);
    let plans = PlanCatalogue::default();
    let ctx = Context {
        now: Timestamp::from_millis(1_000_000),
        rate_cards: &cards,
        plans: &plans,
    };
    execute(account, &command, &ctx).expect("accepted").outcome
}

#[test]
fn receipts_carry_the_capability_when_the_card_priced_them() {
    let mut account = Account::default();
    run(&mut account, Command::OpenAccount(OpenAccount::default()));
    run(
        &mut account,
        Command::Grant(GrantCommand {
            grant_id: GrantId::parse("g").unwrap(),
            pack: None,
            kind: BucketKind::Promotional,
            source: None,
            priority: None,
            amount: mc(1_000_000),
            effective_at: None,
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
        }),
    );
    let debit = |amount: Option<i64>| Command::Debit {
        occurred_at: None,
        member: MemberId::parse("m").unwrap(),
        action: key("article.draft"),
        model: None,
        amount: amount.map(mc),
        dimensions: None,
    };
    let capability_of = |outcome: Outcome| match outcome {
        Outcome::Charged { debit } => debit.capability,
        Outcome::Reserved { reservation } => reservation.capability,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        capability_of(run(&mut account, debit(None))),
        Some("writing".into())
    );
    assert_eq!(
        capability_of(run(&mut account, debit(Some(5_000)))),
        None,
        "the caller priced it, not the card"
    );
    let reserve = |id: &str, amount: Option<i64>| Command::Reserve {
        reservation_id: ReservationId::parse(id).unwrap(),
        member: MemberId::parse("m").unwrap(),
        action: key("content.generate"),
        model: None,
        amount: amount.map(mc),
        dimensions: None,
        ttl_millis: 60_000,
    };
    let commit = |id: &str, dimensions: Option<Dimensions>| Command::Commit {
        reservation_id: ReservationId::parse(id).unwrap(),
        amount: None,
        dimensions,
    };
    assert_eq!(
        capability_of(run(&mut account, reserve("r1", None))),
        Some("content".into())
    );
    assert_eq!(
        capability_of(run(&mut account, commit("r1", Some(tokens(1_000, 1_000))))),
        Some("content".into())
    );
    // A hold the caller sized settles at the card's price: the card's.
    assert_eq!(
        capability_of(run(&mut account, reserve("r2", Some(9_000)))),
        None
    );
    assert_eq!(
        capability_of(run(&mut account, commit("r2", None))),
        Some("content".into())
    );
    // The receipt in the log carries it, and it survives JSON.
    let json = serde_json::to_string(&Event::CreditsDebited {
        at: Timestamp::from_millis(1),
        debit: match run(&mut account, debit(None)) {
            Outcome::Charged { debit } => debit,
            other => panic!("unexpected {other:?}"),
        },
    })
    .unwrap();
    assert!(json.contains(r#""capability":"writing""#), "{json}");
    let back: Event = serde_json::from_str(&json).unwrap();
    assert!(
        matches!(back, Event::CreditsDebited { debit, .. } if debit.capability.as_deref() == Some("writing"))
    );
}

#[test]
fn a_card_survives_a_toml_round_trip() {
    let card = card();
    let text = toml::to_string(&card).unwrap();
    assert_eq!(RateCard::from_toml_str(&text), Ok(card));
}

#[test]
fn a_card_survives_a_json_round_trip() {
    let card = card();
    let json = serde_json::to_string(&card).unwrap();
    let back: RateCard = serde_json::from_str(&json).unwrap();
    assert_eq!(back, card);
}

#[test]
fn dimensions_survive_json_and_missing_fields_are_zero() {
    let used = Dimensions {
        units: Default::default(),
        input_tokens: 1,
        output_tokens: 2,
        context_tokens: 3,
        images: 4,
        tool_calls: u64::MAX,
    };
    let json = serde_json::to_string(&used).unwrap();
    assert_eq!(serde_json::from_str::<Dimensions>(&json).unwrap(), used);
    let partial: Dimensions = serde_json::from_str(r#"{"images":2}"#).unwrap();
    assert_eq!(
        partial,
        Dimensions {
            images: 2,
            ..Dimensions::default()
        }
    );
    assert!(!partial.is_empty());
    assert!(Dimensions::default().is_empty());
    assert!(serde_json::from_str::<Dimensions>(r#"{"videos":1}"#).is_err());
}

#[test]
fn the_example_card_parses_with_the_entries_other_tests_rely_on() {
    let card = RateCard::from_toml_str(include_str!("../../../examples/rate-card.toml")).unwrap();
    assert_eq!(card.version, 1);
    let none = Dimensions::default();
    for (action, price) in [
        ("article.draft", 2000),
        ("cover.generate", 1000),
        ("topic.research", 0),
        ("x.engage", 1000),
    ] {
        assert_eq!(card.price_of(&key(action), None, &none), Ok(mc(price)));
    }
    assert_eq!(
        card.price_of(&key("x.engage"), Some(&model("premium")), &none),
        Ok(mc(2000))
    );
    assert_eq!(card.is_metered(&key("content.generate"), None), Some(true));
}

/// A metered action in plain numbers, priced below with u128 fractions:
/// its five built-in rates and one unit of its own (`posts`), plus a base.
#[derive(Clone, Debug)]
struct Metered {
    rates: [u64; 6],
    base: u64,
    multiplier_per_mille: u32,
    rounding: Rounding,
    min: Option<u64>,
    max: Option<u64>,
}

impl Metered {
    fn card(&self) -> RateCard {
        let [input, output, context, image, tool_call, post] = self.rates.map(|r| mc(r as i64));
        let mut price = ActionPrice::base_plus_metered(
            mc(self.base as i64),
            Rates {
                per_unit: [(unit("posts"), post)].into(),
                per_1k_input_tokens: input,
                per_1k_output_tokens: output,
                per_1k_context_tokens: context,
                per_image: image,
                per_tool_call: tool_call,
            },
        );
        price.rounding = self.rounding;
        price.min_millicredits = self.min.map(|m| mc(m as i64));
        price.max_millicredits = self.max.map(|m| mc(m as i64));
        // Written as text so the property also covers parsing.
        let pm = self.multiplier_per_mille;
        let multiplier = format!("{}.{:03}", pm / 1000, pm % 1000).parse().unwrap();
        price
            .models
            .insert(model("m"), ModelPrice::multiplied(multiplier));
        single("metered.action", price)
    }

    /// The card's price; `None` when the card refuses it as beyond
    /// `Millicredits::MAX_INPUT` (the only refusal these cards can give).
    fn price(&self, used: [u64; 6]) -> Option<i64> {
        let dims = Dimensions {
            units: [(unit("posts"), used[5])].into(),
            input_tokens: used[0],
            output_tokens: used[1],
            context_tokens: used[2],
            images: used[3],
            tool_calls: used[4],
        };
        match self
            .card()
            .price_of(&key("metered.action"), Some(&model("m")), &dims)
        {
            Ok(price) => Some(price.get()),
            Err(Rejection::InvalidField {
                field: "dimensions",
                ..
            }) => None,
            Err(other) => panic!("{other:?}"),
        }
    }

    /// The price as the fraction `numerator / denominator` millicredits,
    /// rounded and clamped in the plainest way; `None` beyond the most a
    /// price may be.
    fn expected(&self, used: [u64; 6]) -> Option<i64> {
        let r = self.rates.map(u128::from);
        let u = used.map(u128::from);
        let per_thousand = u[0] * r[0] + u[1] * r[1] + u[2] * r[2];
        let per_unit = u128::from(self.base) + u[3] * r[3] + u[4] * r[4] + u[5] * r[5];
        let numerator = (per_thousand + 1000 * per_unit) * u128::from(self.multiplier_per_mille);
        let denominator: u128 = 1000 * 1000;
        let credit = 1000 * denominator;
        let rounded = match self.rounding {
            Rounding::Millicredit => numerator.div_ceil(denominator),
            Rounding::UpToCredit => numerator.div_ceil(credit) * 1000,
            Rounding::NearestCredit => (2 * numerator + credit) / (2 * credit) * 1000,
            Rounding::DownToCredit => numerator / credit * 1000,
        };
        let mut price = rounded;
        if let Some(max) = self.max {
            price = price.min(u128::from(max));
        }
        if let Some(min) = self.min {
            price = price.max(u128::from(min));
        }
        let price = i64::try_from(price).unwrap();
        (price <= Millicredits::MAX_INPUT.get()).then_some(price)
    }
}

/// The case the properties below first met (CI, session 16): usage whose
/// price passes the most a price may be is refused, not wrapped or
/// clamped, and more usage keeps it refused.
#[test]
fn a_price_beyond_the_most_a_price_may_be_is_refused() {
    let action = Metered {
        rates: [0, 0, 0, 15_228, 13_212, 15_508],
        base: 0,
        multiplier_per_mille: 4_866,
        rounding: Rounding::Millicredit,
        min: None,
        max: None,
    };
    let used = [0, 0, 0, 4_654_934, 4_959_590, 2_617_086];
    let price = action.price(used).expect("under the limit");
    assert!(price > Millicredits::MAX_INPUT.get() / 2);
    assert_eq!(action.price(used), action.expected(used));
    let grown = [0, 0, 0, 4_654_934, 4_959_590, 2_617_086 + 1_838_432];
    assert_eq!(action.expected(grown), None);
    assert_eq!(action.price(grown), None);
    // A maximum on the card brings it back under.
    let capped = Metered {
        max: Some(150_000),
        ..action
    };
    assert_eq!(capped.price(grown), Some(150_000));
}

fn metered() -> impl Strategy<Value = Metered> {
    let rounding = prop_oneof![
        Just(Rounding::Millicredit),
        Just(Rounding::UpToCredit),
        Just(Rounding::NearestCredit),
        Just(Rounding::DownToCredit),
    ];
    let bound = proptest::option::weighted(0.5, 0u64..200_000);
    (
        proptest::array::uniform6(0u64..20_000),
        prop_oneof![Just(0u64), 0u64..50_000],
        1u32..5_000,
        rounding,
        bound.clone(),
        bound,
    )
        .prop_map(|(rates, base, multiplier_per_mille, rounding, min, max)| {
            let whole = |b: Option<u64>| {
                b.map(|b| match rounding {
                    Rounding::Millicredit => b,
                    _ => b / 1000 * 1000,
                })
            };
            let (mut min, mut max) = (whole(min), whole(max));
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                (min, max) = (Some(hi), Some(lo));
            }
            Metered {
                rates,
                base,
                multiplier_per_mille,
                rounding,
                min,
                max,
            }
        })
}

fn usage() -> impl Strategy<Value = [u64; 6]> {
    proptest::array::uniform6(prop_oneof![0u64..10, 0u64..5_000_000])
}

proptest! {
    #[test]
    fn the_price_matches_an_independent_rational_computation(
        action in metered(),
        used in usage(),
    ) {
        prop_assert_eq!(action.price(used), action.expected(used));
    }

    #[test]
    fn the_price_never_decreases_when_any_dimension_grows(
        action in metered(),
        used in usage(),
        which in 0usize..6,
        more in 1u64..2_000_000,
    ) {
        let mut grown = used;
        grown[which] += more;
        // Beyond the most a price may be is above every price.
        match (action.price(used), action.price(grown)) {
            (Some(before), Some(after)) => prop_assert!(after >= before),
            (None, Some(after)) => prop_assert!(false, "{after} after a refusal"),
            (_, None) => {}
        }
    }

    #[test]
    fn the_price_stays_within_the_minimum_and_maximum(
        action in metered(),
        used in usage(),
    ) {
        let Some(price) = action.price(used) else {
            return Ok(());
        };
        if let Some(min) = action.min {
            prop_assert!(price >= min as i64);
        }
        if let Some(max) = action.max {
            prop_assert!(price <= max as i64);
        }
        prop_assert!(price >= 0);
    }

    #[test]
    fn rounding_to_credits_always_gives_whole_credits(
        action in metered(),
        used in usage(),
    ) {
        if action.rounding.to_whole_credits()
            && let Some(price) = action.price(used)
        {
            prop_assert_eq!(price % 1000, 0);
        }
    }

    #[test]
    fn up_to_credit_never_charges_less_than_the_exact_amount(
        mut action in metered(),
        used in usage(),
    ) {
        action.rounding = Rounding::UpToCredit;
        action.min = None;
        action.max = None;
        let mut exact = action.clone();
        exact.rounding = Rounding::Millicredit;
        // Rounding up can carry a price past the most a price may be, but
        // never an exact one that was already beyond it back under it.
        match (action.price(used), exact.price(used)) {
            (Some(price), Some(exact)) => {
                prop_assert_eq!(price % 1000, 0);
                prop_assert!(price >= exact);
                prop_assert!(price < exact + 1000);
            }
            (Some(price), None) => prop_assert!(false, "{price} where the exact price is refused"),
            (None, _) => {}
        }
    }
}

/// Seed 000's "interlink pass: 2 + 0.5 per post scanned, rounded up", and
/// seed 001's per-platform and per-item prices, as a card declares them.
const UNITS_CARD: &str = r#"
version = 1

[actions."interlink.pass"]
base_millicredits = 2000
rates = { per_unit = { posts_scanned = 500 } }
rounding = "up_to_credit"

[actions."content.multi_platform"]
rates = { per_unit = { platforms = 1500 } }
min_millicredits = 1000
models = { "large" = { rates = { per_unit = { platforms = 2000 } } } }

[actions."rss.process"]
rates = { per_unit = { rss_items = 1000 } }
"#;

fn posts(n: u64) -> Dimensions {
    Dimensions {
        units: [(unit("posts_scanned"), n)].into(),
        ..Dimensions::default()
    }
}

#[test]
fn a_base_price_plus_a_metered_part_is_charged_and_rounded_once() {
    let card = RateCard::from_toml_str(UNITS_CARD).expect("valid");
    let pass = key("interlink.pass");
    // 2 + 0.5 × 3 = 3.5, rounded up to 4 credits; 2 + 0.5 × 4 = 4 exactly.
    assert_eq!(card.price_of(&pass, None, &posts(3)), Ok(mc(4000)));
    assert_eq!(card.price_of(&pass, None, &posts(4)), Ok(mc(4000)));
    // The base alone when nothing was scanned, which is also the hold.
    assert_eq!(card.price_of(&pass, None, &posts(0)), Ok(mc(2000)));
    assert_eq!(card.hold_of(&pass, None), Ok(mc(2000)));
    assert_eq!(card.is_metered(&pass, None), Some(true));
}

#[test]
fn units_of_the_cards_own_are_priced_per_unit_and_per_model() {
    let card = RateCard::from_toml_str(UNITS_CARD).expect("valid");
    let platforms = |n| Dimensions {
        units: [(unit("platforms"), n)].into(),
        ..Dimensions::default()
    };
    let action = key("content.multi_platform");
    assert_eq!(card.price_of(&action, None, &platforms(3)), Ok(mc(4500)));
    assert_eq!(
        card.price_of(&action, Some(&model("large")), &platforms(3)),
        Ok(mc(6000))
    );
    // The minimum still applies.
    assert_eq!(card.price_of(&action, None, &platforms(0)), Ok(mc(1000)));
}

#[test]
fn a_unit_the_action_does_not_price_is_refused_not_charged_nothing() {
    let card = RateCard::from_toml_str(UNITS_CARD).expect("valid");
    let typo = Dimensions {
        units: [(unit("post_scanned"), 3)].into(),
        ..Dimensions::default()
    };
    let refused = card.price_of(&key("interlink.pass"), None, &typo);
    let Err(Rejection::InvalidField { field, reason }) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(field, "dimensions.units");
    assert!(
        reason.contains("post_scanned") && reason.contains("posts_scanned"),
        "{reason}"
    );
    // A fixed price prices no units at all.
    let fixed = RateCard::from_toml_str(CARD).expect("valid");
    assert!(matches!(
        fixed.price_of(&key("article.draft"), None, &posts(1)),
        Err(Rejection::InvalidField {
            field: "dimensions.units",
            ..
        })
    ));
    // Nor does one call report more than the cap.
    let many = Dimensions {
        units: (0..=tally_core::MAX_UNITS_PER_CALL)
            .map(|i| (unit(&format!("u{i}")), 1))
            .collect(),
        ..Dimensions::default()
    };
    assert!(matches!(
        card.price_of(&key("interlink.pass"), None, &many),
        Err(Rejection::InvalidField {
            field: "dimensions.units",
            ..
        })
    ));
}

#[test]
fn cards_that_misuse_base_prices_or_units_are_refused_with_the_reason() {
    let refused = |toml: &str, needle: &str| {
        let err = RateCard::from_toml_str(toml).expect_err(toml);
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    };
    refused(
        "version = 1\n[actions.a]\nprice_millicredits = 1000\nbase_millicredits = 500\n",
        "base_millicredits",
    );
    refused(
        "version = 1\n[actions.a]\nrates = { per_unit = { images = 10 } }\n",
        "built-in dimension",
    );
    refused(
        "version = 1\n[actions.a]\nrates = { per_unit = { Posts = 10 } }\n",
        "Posts",
    );
    refused(
        "version = 1\n[actions.a]\nrates = { per_unit = { posts = -1 } }\n",
        "must not be negative",
    );
    refused(
        "version = 1\n[actions.a]\nbase_millicredits = -5\nrates = { per_image = 1 }\n",
        "base_millicredits must not be negative",
    );
    refused(
        "version = 1\n[actions.a]\nrates = { per_unit = { posts = 10 } }\nmodels = { m = { rates = { per_unit = { pages = 5 } } } }\n",
        "cannot add one",
    );
}

#[test]
fn a_card_with_a_base_and_units_survives_a_round_trip_through_json() {
    let card = RateCard::from_toml_str(UNITS_CARD).expect("valid");
    let json = serde_json::to_string(&card).unwrap();
    assert!(json.contains("\"base_millicredits\":2000"), "{json}");
    let back: RateCard = serde_json::from_str(&json).unwrap();
    assert_eq!(back, card);
    // Reported units are stored with the charge and read back.
    let used = posts(7);
    let stored = serde_json::to_string(&used).unwrap();
    assert_eq!(serde_json::from_str::<Dimensions>(&stored).unwrap(), used);
    // A charge stored before units existed reads as having none.
    let old: Dimensions = serde_json::from_str(r#"{"images":2}"#).unwrap();
    assert!(old.units.is_empty());
}
