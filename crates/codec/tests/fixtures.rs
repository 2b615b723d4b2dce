//! Logs written in each schema generation stay readable: every committed
//! fixture is decoded and folded, and must give the accounts it gave when
//! it was written. Also the envelope's versioning and upcasting.
//!
//! The newest generation's fixture is written by this test with
//! `TALLY_WRITE_FIXTURES=1`, from a scenario that produces every kind of
//! event. When an event's schema version changes, add a generation to
//! `GENERATIONS` (next to the old fixtures, never over them) and write it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use tally_codec::{CodecError, Upcaster, decode_event, decode_with, encode_event};
use tally_core::{
    Account, ActionKey, ActionPrice, AlertThresholds, BillingAnchor, BucketKind, Charge, Command,
    Context, Event, EventKind, GrantCommand, GrantId, IdempotencyKey, MemberId, Millicredits,
    OpenAccount, Outcome, Plan, PlanCatalogue, PlanName, RateCard, RateCards, ReservationId,
    Timestamp, advance, execute,
};
use tally_store::{LogPosition, RecordedEvent};

/// Every generation of the log format, oldest first: each was written by
/// the build of its time and is never rewritten. The last is this build's.
const GENERATIONS: [&str; 2] = ["log-schema-1", "log-schema-2"];
const CURRENT: &str = GENERATIONS[GENERATIONS.len() - 1];

fn fixture_path(generation: &str, extension: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{generation}.{extension}"))
}

fn credits(n: i64) -> Millicredits {
    Millicredits::from_credits(n)
}

/// An event as a command wrote it, with the command's idempotency key.
type Written = (Event, Option<String>);

/// A scenario that writes every kind of event, deterministically: the log
/// of each stream.
fn scenario() -> Vec<(String, Vec<Written>)> {
    let mut card = RateCard {
        version: 1,
        ..RateCard::default()
    };
    card.actions.insert(
        ActionKey::parse("article.draft").unwrap(),
        ActionPrice::fixed(credits(2)),
    );
    let cards = RateCards::new([card]);
    let mut plans = PlanCatalogue {
        version: 1,
        ..PlanCatalogue::default()
    };
    for (name, monthly) in [("pro", 100), ("max", 300)] {
        plans.plans.insert(
            PlanName::parse(name).unwrap(),
            Plan {
                monthly_allowance_millicredits: credits(monthly),
                daily_allowance_millicredits: credits(5),
                ..Plan::default()
            },
        );
    }
    let mut account = Account::default();
    let mut log: Vec<Written> = Vec::new();
    let mut now = Timestamp::from_millis(1_768_435_200_000);
    let mut run = |command: Command, key: &str, now: Timestamp, log: &mut Vec<_>| {
        for event in advance(&mut account, now) {
            log.push((event, None));
        }
        let ctx = Context {
            now,
            rate_cards: &cards,
            plans: &plans,
        };
        let decision =
            execute(&mut account, &command, &ctx).unwrap_or_else(|e| panic!("{key}: {e:?}"));
        // What the engine would find in the store when a refund names
        // this charge.
        if let Outcome::Charged { debit } = &decision.outcome {
            let key = IdempotencyKey::parse(key).unwrap();
            account.charges.insert(
                key.clone(),
                Charge {
                    key,
                    charged_at: Some(now),
                    debit: debit.clone(),
                    refunded: Millicredits::ZERO,
                },
            );
        }
        for event in decision.events {
            log.push((event, Some(key.to_owned())));
        }
    };
    let member = MemberId::parse("ann").unwrap();
    let action = ActionKey::parse("article.draft").unwrap();
    let hold = |n: &str| ReservationId::parse(n).unwrap();
    run(
        Command::OpenAccount(OpenAccount {
            plan: Some(PlanName::parse("pro").unwrap()),
            ..OpenAccount::default()
        }),
        "open",
        now,
        &mut log,
    );
    run(
        Command::SetSpendingCap {
            cap: Some(credits(90)),
        },
        "cap",
        now,
        &mut log,
    );
    run(
        Command::SetBillingAnchor {
            anchor: BillingAnchor::new(1, 0, 0).unwrap(),
        },
        "anchor",
        now,
        &mut log,
    );
    run(
        Command::SetAlertThresholds {
            thresholds: Some(AlertThresholds {
                low_balance_millicredits: vec![credits(50)],
                ..AlertThresholds::default()
            }),
        },
        "alerts",
        now,
        &mut log,
    );
    run(
        Command::Grant(GrantCommand {
            grant_id: GrantId::parse("pack-1").unwrap(),
            pack: None,
            kind: BucketKind::TopUp,
            source: None,
            priority: None,
            amount: credits(20),
            effective_at: None,
            expires_at: Some(now.plus_millis(3 * 86_400_000)),
            cost_basis: None,
            reference: "invoice 7".into(),
        }),
        "grant",
        now,
        &mut log,
    );
    run(
        Command::Reserve {
            reservation_id: hold("r-1"),
            member: member.clone(),
            action: action.clone(),
            model: None,
            amount: Some(credits(4)),
            dimensions: None,
            ttl_millis: 60_000,
        },
        "reserve-1",
        now,
        &mut log,
    );
    run(
        Command::Extend {
            reservation_id: hold("r-1"),
            ttl_millis: 120_000,
        },
        "extend-1",
        now,
        &mut log,
    );
    run(
        Command::Release {
            reservation_id: hold("r-1"),
        },
        "release-1",
        now,
        &mut log,
    );
    run(
        Command::Reserve {
            reservation_id: hold("r-2"),
            member: member.clone(),
            action: action.clone(),
            model: None,
            amount: None,
            dimensions: None,
            ttl_millis: 1_000,
        },
        "reserve-2",
        now,
        &mut log,
    );
    now = now.plus_millis(5_000);
    run(
        Command::Debit {
            member: member.clone(),
            action: action.clone(),
            model: None,
            amount: None,
            dimensions: None,
            occurred_at: None,
        },
        "debit-1",
        now,
        &mut log,
    );
    run(
        Command::Adjust {
            amount: credits(3),
            grant_id: GrantId::parse("adj-1").unwrap(),
            reason: "goodwill".into(),
            operator: "ops".into(),
        },
        "adjust-1",
        now,
        &mut log,
    );
    run(
        Command::VoidGrant {
            grant_id: GrantId::parse("adj-1").unwrap(),
            reason: "granted twice".into(),
        },
        "void-1",
        now,
        &mut log,
    );
    // Past the cap's reach: a commit finishes whatever it costs, and the
    // rest is overage, repaid by the next grant.
    run(
        Command::Reserve {
            reservation_id: hold("r-3"),
            member: member.clone(),
            action: action.clone(),
            model: None,
            amount: Some(credits(10)),
            dimensions: None,
            ttl_millis: 60_000,
        },
        "reserve-3",
        now,
        &mut log,
    );
    run(
        Command::Commit {
            reservation_id: hold("r-3"),
            amount: Some(credits(200)),
            dimensions: None,
        },
        "commit-3",
        now,
        &mut log,
    );
    run(
        Command::Grant(GrantCommand {
            grant_id: GrantId::parse("pack-2").unwrap(),
            pack: None,
            kind: BucketKind::Promotional,
            source: None,
            priority: None,
            amount: credits(150),
            effective_at: None,
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
        }),
        "grant-2",
        now,
        &mut log,
    );
    run(
        Command::ChangePlan {
            plan: PlanName::parse("max").unwrap(),
        },
        "upgrade",
        now,
        &mut log,
    );
    // A pack bought today that counts from tomorrow: upcoming until then,
    // when it takes effect with an event of its own.
    run(
        Command::Grant(GrantCommand {
            grant_id: GrantId::parse("pack-later").unwrap(),
            pack: None,
            kind: BucketKind::TopUp,
            source: None,
            priority: None,
            amount: credits(40),
            effective_at: Some(now.plus_millis(86_400_000)),
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
        }),
        "grant-later",
        now,
        &mut log,
    );
    // Days pass: daily allowances renew, the first pack expires.
    now = now.plus_millis(4 * 86_400_000);
    run(
        Command::Adjust {
            amount: credits(-1),
            grant_id: GrantId::parse("adj-2").unwrap(),
            reason: "correction".into(),
            operator: "ops".into(),
        },
        "adjust-2",
        now,
        &mut log,
    );
    // Refunds: part of the debit (its bucket, today's daily allowance, is
    // gone), then the rest of the commit that ran into overage.
    run(
        Command::Refund {
            charge_key: IdempotencyKey::parse("debit-1").unwrap(),
            amount: Some(credits(1)),
            reason: "failed generation".into(),
            refund_grant_id: GrantId::parse("refund-1").unwrap(),
        },
        "refund-1",
        now,
        &mut log,
    );
    run(
        Command::Refund {
            charge_key: IdempotencyKey::parse("commit-3").unwrap(),
            amount: None,
            reason: "outage".into(),
            refund_grant_id: GrantId::parse("refund-2").unwrap(),
        },
        "refund-2",
        now,
        &mut log,
    );
    vec![("acme".to_owned(), log)]
}

/// What a fold of the log leaves, in numbers a change of meaning would
/// move.
fn summary(account: &Account) -> Value {
    let at = account.last_event_at.unwrap_or_default();
    json!({
        "version": account.version,
        "available": account.available_at(at).get(),
        "held": account.held().get(),
        "overage": account.overage.get(),
        "granted": account.totals.granted.get(),
        "consumed": account.totals.consumed.get(),
        "expired": account.totals.expired.get(),
        "voided": account.totals.voided.get(),
        "buckets": account.buckets.len(),
        "open_reservations": account.reservations.len(),
    })
}

fn recorded(stream_id: &str, version: u64, event_type: &str, payload: Vec<u8>) -> RecordedEvent {
    RecordedEvent {
        stream_id: stream_id.to_owned(),
        version,
        position: LogPosition::default(),
        event_type: event_type.to_owned(),
        payload,
        recorded_at_ms: 0,
    }
}

fn write_fixture() {
    let mut lines = String::new();
    let mut expected = BTreeMap::new();
    for (stream, events) in scenario() {
        let mut account = Account::default();
        for (version, (event, key)) in events.iter().enumerate() {
            let stored = encode_event(event, key.as_deref()).unwrap();
            let payload: Value = serde_json::from_slice(&stored.payload).unwrap();
            lines.push_str(
                &json!({
                    "stream_id": stream,
                    "version": version + 1,
                    "event_type": stored.event_type,
                    "payload": payload,
                })
                .to_string(),
            );
            lines.push('\n');
            account.apply(event).unwrap();
        }
        expected.insert(stream, summary(&account));
    }
    std::fs::write(fixture_path(CURRENT, "jsonl"), lines).unwrap();
    std::fs::write(
        fixture_path(CURRENT, "expected.json"),
        serde_json::to_string_pretty(&expected).unwrap() + "\n",
    )
    .unwrap();
}

#[test]
fn logs_of_every_generation_decode_and_fold_as_they_did() {
    if std::env::var_os("TALLY_WRITE_FIXTURES").is_some() {
        write_fixture();
    }
    for generation in GENERATIONS {
        let kinds = replay_fixture(generation);
        // The newest covers every kind of event this build knows, so a kind
        // added later is in the next generation's fixture.
        if generation == CURRENT {
            let missing: Vec<&EventKind> = EventKind::ALL
                .iter()
                .filter(|kind| !kinds.contains(kind))
                .collect();
            assert!(
                missing.is_empty(),
                "{generation} lacks {missing:?}: extend the scenario and write a new generation"
            );
        }
    }
}

/// Version 1 grants (no `upcoming`) took effect by the clock alone: read
/// through the upcaster, they still do, so an old log's upcoming buckets
/// are never stranded waiting for an event it does not have.
#[test]
fn generation_1_grants_are_upcast_to_take_effect_by_the_clock() {
    let text = std::fs::read_to_string(fixture_path("log-schema-1", "jsonl")).unwrap();
    let grants: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["event_type"] == "credits_granted")
        .collect();
    assert!(!grants.is_empty());
    for line in grants {
        assert!(line["payload"].get("v").is_none(), "written at version 1");
        let stored = recorded(
            "acme",
            1,
            "credits_granted",
            serde_json::to_vec(&line["payload"]).unwrap(),
        );
        match decode_event(&stored).unwrap().event {
            Event::CreditsGranted { upcoming, .. } => assert!(!upcoming),
            other => panic!("{other:?}"),
        }
    }
}

/// Folds one generation's fixture and checks it against what it folded to
/// when it was written; returns the kinds of event it holds.
fn replay_fixture(generation: &str) -> std::collections::BTreeSet<EventKind> {
    let text = std::fs::read_to_string(fixture_path(generation, "jsonl")).expect("the fixture log");
    let mut accounts: BTreeMap<String, Account> = BTreeMap::new();
    let mut kinds = std::collections::BTreeSet::new();
    for line in text.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let stream = line["stream_id"].as_str().unwrap();
        let stored = recorded(
            stream,
            line["version"].as_u64().unwrap(),
            line["event_type"].as_str().unwrap(),
            serde_json::to_vec(&line["payload"]).unwrap(),
        );
        let decoded = decode_event(&stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.event.type_name(), stored.event_type);
        kinds.insert(decoded.event.kind());
        let account = accounts.entry(stream.to_owned()).or_default();
        account.apply(&decoded.event).unwrap();
        // Conservation holds at every event of the old log.
        let t = account.totals;
        assert_eq!(
            t.granted - t.consumed - t.expired - t.voided,
            account.remaining() + account.held() - account.overage
        );
    }
    let expected: BTreeMap<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture_path(generation, "expected.json")).unwrap(),
    )
    .unwrap();
    let folded: BTreeMap<String, Value> = accounts
        .iter()
        .map(|(stream, account)| (stream.clone(), summary(account)))
        .collect();
    assert_eq!(folded, expected, "{generation}");
    kinds
}

#[test]
fn version_1_is_written_without_a_version_and_a_newer_one_is_refused() {
    let event = Event::SpendingCapSet {
        at: Timestamp::from_millis(1),
        cap: None,
    };
    let stored = encode_event(&event, Some("k")).unwrap();
    let payload: Value = serde_json::from_slice(&stored.payload).unwrap();
    assert_eq!(payload.get("v"), None, "{payload}");
    assert_eq!(payload["idempotency_key"], "k");
    let decoded = decode_event(&recorded("a", 1, &stored.event_type, stored.payload)).unwrap();
    assert_eq!(decoded.event, event);
    assert_eq!(decoded.idempotency_key.as_deref(), Some("k"));

    let from_the_future =
        json!({"v": 2, "event": {"type": "spending_cap_set", "at": 1, "cap": null}});
    let refused = decode_event(&recorded(
        "a",
        7,
        "spending_cap_set",
        serde_json::to_vec(&from_the_future).unwrap(),
    ));
    assert!(
        matches!(
            refused,
            Err(CodecError::TooNew {
                found: 2,
                current: 1,
                version: 7,
                ..
            })
        ),
        "{refused:?}"
    );
}

/// As if `hold_extended` had been at version 2 since its `expires_at` was
/// called `until`: a version-1 event is upcast, a version-2 one is read as
/// it is.
#[test]
fn an_older_schema_version_is_upcast_before_it_is_decoded() {
    fn rename_until(mut event: Value) -> Result<Value, String> {
        let object = event.as_object_mut().ok_or("not an object")?;
        let until = object.remove("until").ok_or("no until")?;
        object.insert("expires_at".into(), until);
        Ok(event)
    }
    let current = |event_type: &str| if event_type == "hold_extended" { 2 } else { 1 };
    let upcasters = |event_type: &str, from: u32| -> Option<Upcaster> {
        (event_type == "hold_extended" && from == 1).then_some(rename_until as Upcaster)
    };
    let expected = Event::HoldExtended {
        at: Timestamp::from_millis(10),
        reservation_id: ReservationId::parse("r-1").unwrap(),
        expires_at: Timestamp::from_millis(99),
    };
    let old =
        json!({"event": {"type": "hold_extended", "at": 10, "reservation_id": "r-1", "until": 99}});
    let decoded = decode_with(
        &recorded("a", 3, "hold_extended", serde_json::to_vec(&old).unwrap()),
        &current,
        &upcasters,
    )
    .unwrap();
    assert_eq!(decoded.event, expected);
    let new = json!({"v": 2, "event": {"type": "hold_extended", "at": 10, "reservation_id": "r-1", "expires_at": 99}});
    let decoded = decode_with(
        &recorded("a", 3, "hold_extended", serde_json::to_vec(&new).unwrap()),
        &current,
        &upcasters,
    )
    .unwrap();
    assert_eq!(decoded.event, expected);
    // Without the upcaster, the old event is a clear error, not a guess.
    let stranded = decode_with(
        &recorded("a", 3, "hold_extended", serde_json::to_vec(&old).unwrap()),
        &current,
        &|_, _| None,
    );
    assert!(
        matches!(&stranded, Err(CodecError::Decode { reason, .. }) if reason.contains("no upcaster")),
        "{stranded:?}"
    );
}
