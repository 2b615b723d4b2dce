//! The seed corpus (`fuzz/corpus/<target>/`), generated: `cargo run -p
//! tally-fuzz-targets --bin seed-corpus` writes it, and a test checks that
//! the committed files are what this module makes.
//!
//! For `decode_request`: for every method, a well-formed request encoded
//! with prost, one with a bad field, and malformed ones (a bad wire type,
//! the body as sent with a compressed flag, a frame cut short, a length
//! past the limit, no message at all), each with the answer it must get.
//! For `core_commands`: scripts drawn by the property tests' strategies,
//! in their byte form.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use prost::Message;
use tally_api::v1 as pb;
use tally_core::testing::strategy::script;

use crate::requests::{RAW, Verdict, frame, method_index};

/// A seed input of `decode_request` and the verdict it must get.
pub struct RequestSeed {
    /// The file's name: the method's and what the seed is.
    pub name: String,
    pub data: Vec<u8>,
    pub expect: Verdict,
}

/// A seed input of `core_commands`.
pub struct ScriptSeed {
    pub name: String,
    pub data: Vec<u8>,
}

fn timestamp(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// 2026-01-01T00:00:00Z, the time the fuzzed services' clock says.
const NOW_SECONDS: i64 = 1_767_225_600;

fn consistency() -> Option<pb::ReadConsistency> {
    Some(pb::ReadConsistency {
        requirement: Some(pb::read_consistency::Requirement::FullyConsistent(true)),
    })
}

fn dimensions() -> Option<pb::Dimensions> {
    Some(pb::Dimensions {
        input_tokens: 1_200,
        output_tokens: 800,
        units: [("seconds".to_owned(), 30)].into(),
        ..Default::default()
    })
}

fn record(key: &str) -> pb::UsageRecord {
    pb::UsageRecord {
        idempotency_key: key.into(),
        account_id: "acme/alice".into(),
        member_id: "alice".into(),
        action: "content.generate".into(),
        model: "large".into(),
        amount_millicredits: None,
        dimensions: dimensions(),
        occurred_at: timestamp(NOW_SECONDS - 60),
    }
}

fn thresholds() -> pb::AlertThresholds {
    pb::AlertThresholds {
        low_balance_millicredits: vec![10_000, 2_000],
        usage_percent: vec![50, 90],
        auto_top_up: Some(pb::AutoTopUp {
            below_millicredits: 1_000,
            pack: "boost".into(),
        }),
        critical_level_millicredits: 500,
    }
}

/// A well-formed request of each method, and the same request with one
/// bad field (its name, as the server reports it).
fn requests() -> Vec<(&'static str, Vec<u8>, Vec<u8>, &'static str)> {
    fn pair<T: Message + Clone>(
        path: &'static str,
        good: T,
        bad: impl FnOnce(&mut T),
        field: &'static str,
    ) -> (&'static str, Vec<u8>, Vec<u8>, &'static str) {
        let mut worse = good.clone();
        bad(&mut worse);
        (path, good.encode_to_vec(), worse.encode_to_vec(), field)
    }
    let key = || "req-1".to_owned();
    let account = || "acme/alice".to_owned();
    vec![
        pair(
            "/tally.v1.AccountService/OpenAccount",
            pb::OpenAccountRequest {
                idempotency_key: key(),
                account_id: account(),
                plan: "pro".into(),
                time_zone: "Europe/Paris".into(),
                billing_anchor: Some(pb::BillingAnchor {
                    day: 15,
                    hour: 9,
                    minute: 30,
                }),
                trial: true,
                spending_cap_millicredits: Some(50_000),
                test_clock_id: String::new(),
            },
            |r| r.time_zone = "Mars/Olympus".into(),
            "time_zone",
        ),
        pair(
            "/tally.v1.AccountService/Grant",
            pb::GrantRequest {
                idempotency_key: key(),
                account_id: account(),
                kind: pb::BucketKind::TopUp.into(),
                amount_millicredits: 100_000,
                source: pb::GrantSource::Purchase.into(),
                priority: Some(2),
                effective_at: timestamp(NOW_SECONDS),
                expires_at: timestamp(NOW_SECONDS + 86_400 * 90),
                cost_basis: Some(pb::CostBasis {
                    currency_code: "USD".into(),
                    micros_per_credit: 10_000,
                }),
                reference: "invoice 42".into(),
                pack: String::new(),
            },
            |r| r.amount_millicredits = -5,
            "amount_millicredits",
        ),
        pair(
            "/tally.v1.AccountService/VoidGrant",
            pb::VoidGrantRequest {
                idempotency_key: key(),
                account_id: account(),
                grant_id: "grant-1".into(),
                reason: "charged back".into(),
            },
            |r| r.grant_id = String::new(),
            "grant_id",
        ),
        pair(
            "/tally.v1.AccountService/Adjust",
            pb::AdjustRequest {
                idempotency_key: key(),
                account_id: account(),
                amount_millicredits: -2_500,
                reason: "duplicate charge".into(),
                operator: "ops@example.com".into(),
            },
            |r| r.amount_millicredits = 0,
            "amount_millicredits",
        ),
        pair(
            "/tally.v1.AccountService/GetBalance",
            pb::GetBalanceRequest {
                account_id: account(),
                consistency: consistency(),
            },
            |r| {
                r.consistency = Some(pb::ReadConsistency {
                    requirement: Some(pb::read_consistency::Requirement::AtLeastAsFresh(
                        "not a token".into(),
                    )),
                })
            },
            "consistency.at_least_as_fresh",
        ),
        pair(
            "/tally.v1.AccountService/ListLedger",
            pb::ListLedgerRequest {
                account_id: account(),
                page_size: 50,
                page_token: String::new(),
                member_id: "alice".into(),
                action: "content.generate".into(),
                kinds: vec![
                    pb::LedgerEntryKind::Debit.into(),
                    pb::LedgerEntryKind::Hold.into(),
                ],
                start_time: timestamp(NOW_SECONDS - 86_400),
                end_time: timestamp(NOW_SECONDS),
                consistency: consistency(),
            },
            |r| r.page_size = 5_000,
            "page_size",
        ),
        pair(
            "/tally.v1.AccountService/GetUsage",
            pb::GetUsageRequest {
                account_id: account(),
                group_by: pb::UsageGrouping::Model.into(),
                period: Some(pb::get_usage_request::Period::Days(pb::DayRange {
                    first_day: "2025-12-01".into(),
                    last_day: "2025-12-31".into(),
                })),
                runway_days: 14,
                consistency: consistency(),
            },
            |r| r.runway_days = -1,
            "runway_days",
        ),
        pair(
            "/tally.v1.AccountService/WatchAccount",
            pb::WatchAccountRequest {
                account_id: account(),
                after_sequence: Some(12),
            },
            |r| r.after_sequence = Some(-1),
            "after_sequence",
        ),
        pair(
            "/tally.v1.AccountService/ChangePlan",
            pb::ChangePlanRequest {
                idempotency_key: key(),
                account_id: account(),
                plan: "starter".into(),
            },
            |r| r.plan = String::new(),
            "plan",
        ),
        pair(
            "/tally.v1.AccountService/SetSpendingCap",
            pb::SetSpendingCapRequest {
                idempotency_key: key(),
                account_id: account(),
                spending_cap_millicredits: Some(20_000),
            },
            |r| r.spending_cap_millicredits = Some(-1),
            "spending_cap_millicredits",
        ),
        pair(
            "/tally.v1.AccountService/SetBillingAnchor",
            pb::SetBillingAnchorRequest {
                idempotency_key: key(),
                account_id: account(),
                billing_anchor: Some(pb::BillingAnchor {
                    day: 1,
                    hour: 0,
                    minute: 0,
                }),
            },
            |r| {
                r.billing_anchor = Some(pb::BillingAnchor {
                    day: 32,
                    hour: 0,
                    minute: 0,
                })
            },
            "billing_anchor",
        ),
        pair(
            "/tally.v1.AccountService/SetAlertThresholds",
            pb::SetAlertThresholdsRequest {
                idempotency_key: key(),
                account_id: account(),
                thresholds: Some(thresholds()),
            },
            |r| {
                r.thresholds = Some(pb::AlertThresholds {
                    usage_percent: vec![150],
                    ..thresholds()
                })
            },
            "thresholds.usage_percent",
        ),
        pair(
            "/tally.v1.MeteringService/Quote",
            pb::QuoteRequest {
                account_id: account(),
                items: vec![
                    pb::QuoteItem {
                        action: "article.draft".into(),
                        model: String::new(),
                        count: 3,
                        dimensions: None,
                    },
                    pb::QuoteItem {
                        action: "content.generate".into(),
                        model: "large".into(),
                        count: 0,
                        dimensions: dimensions(),
                    },
                ],
            },
            |r| r.items.clear(),
            "items",
        ),
        pair(
            "/tally.v1.MeteringService/Reserve",
            pb::ReserveRequest {
                idempotency_key: key(),
                account_id: account(),
                member_id: "alice".into(),
                action: "content.generate".into(),
                model: "large".into(),
                amount_millicredits: None,
                ttl: Some(prost_types::Duration {
                    seconds: 120,
                    nanos: 0,
                }),
                dimensions: dimensions(),
            },
            |r| {
                r.ttl = Some(prost_types::Duration {
                    seconds: 86_400 * 30,
                    nanos: 0,
                })
            },
            "ttl",
        ),
        pair(
            "/tally.v1.MeteringService/Commit",
            pb::CommitRequest {
                idempotency_key: key(),
                account_id: account(),
                reservation_id: "rsv_1".into(),
                amount_millicredits: Some(1_500),
                dimensions: None,
            },
            |r| r.dimensions = dimensions(),
            "dimensions",
        ),
        pair(
            "/tally.v1.MeteringService/Release",
            pb::ReleaseRequest {
                idempotency_key: key(),
                account_id: account(),
                reservation_id: "rsv_1".into(),
            },
            |r| r.reservation_id = String::new(),
            "reservation_id",
        ),
        pair(
            "/tally.v1.MeteringService/Extend",
            pb::ExtendRequest {
                idempotency_key: key(),
                account_id: account(),
                reservation_id: "rsv_1".into(),
                ttl: Some(prost_types::Duration {
                    seconds: 600,
                    nanos: 0,
                }),
            },
            |r| r.ttl = None,
            "ttl",
        ),
        pair(
            "/tally.v1.MeteringService/Debit",
            pb::DebitRequest {
                idempotency_key: key(),
                account_id: account(),
                member_id: "alice".into(),
                action: "article.draft".into(),
                model: String::new(),
                amount_millicredits: Some(2_000),
                dimensions: None,
            },
            |r| r.member_id = String::new(),
            "member_id",
        ),
        pair(
            "/tally.v1.MeteringService/ReportUsage",
            pb::ReportUsageRequest {
                records: vec![record("use-1"), record("use-2")],
            },
            // Not a timestamp (how far it may be from now is the engine's
            // to judge, against the account's clock).
            |r| {
                r.records[1].occurred_at = Some(prost_types::Timestamp {
                    seconds: NOW_SECONDS,
                    nanos: 2_000_000_000,
                })
            },
            "occurred_at",
        ),
        pair(
            "/tally.v1.MeteringService/ReportUsageStream",
            pb::ReportUsageStreamRequest {
                records: vec![record("use-1"), record("use-2")],
            },
            |r| r.records[0].amount_millicredits = Some(0),
            "amount_millicredits",
        ),
        pair(
            "/tally.v1.MeteringService/Refund",
            pb::RefundRequest {
                idempotency_key: key(),
                account_id: account(),
                charge_idempotency_key: "charge-9".into(),
                amount_millicredits: Some(500),
                reason: "the render failed".into(),
            },
            |r| r.reason = "  ".into(),
            "reason",
        ),
        pair(
            "/tally.v1.CatalogService/PublishRateCard",
            pb::PublishRateCardRequest {
                toml: include_str!("../../../examples/rate-card.toml").into(),
            },
            |r| r.toml = "version = = 4".into(),
            "toml",
        ),
        pair(
            "/tally.v1.CatalogService/GetRateCard",
            pb::GetRateCardRequest { version: Some(3) },
            |r| r.version = Some(-3),
            "version",
        ),
        pair(
            "/tally.v1.CatalogService/PublishPlanCatalogue",
            pb::PublishPlanCatalogueRequest {
                toml: include_str!("../../../examples/agencypro/plans.toml").into(),
            },
            |r| r.toml = "version = 2\n[plans.pro]\nmonthly_allowance_millicredits = -5\n".into(),
            "toml",
        ),
        pair(
            "/tally.v1.CatalogService/GetPlanCatalogue",
            pb::GetPlanCatalogueRequest { version: None },
            |r| r.version = Some(-1),
            "version",
        ),
        pair(
            "/tally.v1.TestClockService/CreateTestClock",
            pb::CreateTestClockRequest {
                test_clock_id: "q3-trial".into(),
                frozen_time: timestamp(NOW_SECONDS),
            },
            |r| r.frozen_time = None,
            "frozen_time",
        ),
        pair(
            "/tally.v1.TestClockService/GetTestClock",
            pb::GetTestClockRequest {
                test_clock_id: "q3-trial".into(),
            },
            |r| r.test_clock_id = "q3 trial".into(),
            "test_clock_id",
        ),
        pair(
            "/tally.v1.TestClockService/AdvanceTestClock",
            pb::AdvanceTestClockRequest {
                test_clock_id: "q3-trial".into(),
                frozen_time: timestamp(NOW_SECONDS + 86_400 * 31),
            },
            |r| r.test_clock_id = String::new(),
            "test_clock_id",
        ),
    ]
}

/// The seeds of `decode_request`.
pub fn request_seeds() -> Vec<RequestSeed> {
    let mut seeds = Vec::new();
    for (path, good, bad, field) in requests() {
        let index = method_index(path);
        let name = path.rsplit('/').next().expect("a method name");
        let batch = name.starts_with("ReportUsage");
        let streams = name == "ReportUsageStream";
        let mut seed = |what: &str, first: u8, rest: Vec<u8>, expect: Verdict| {
            let mut data = vec![first];
            data.extend(rest);
            seeds.push(RequestSeed {
                name: format!("{name}.{what}"),
                data,
                expect,
            });
        };
        let (accepted, invalid) = if batch {
            (
                Verdict::Records {
                    invalid: 0,
                    accepted: 2,
                },
                Verdict::Records {
                    invalid: 1,
                    accepted: 1,
                },
            )
        } else {
            (Verdict::Accepted, Verdict::Invalid(vec![field.to_owned()]))
        };
        // A stream may hold no message; any other call needs one.
        let empty = if streams {
            Verdict::Records {
                invalid: 0,
                accepted: 0,
            }
        } else {
            Verdict::Malformed
        };
        seed("ok", index, good.clone(), accepted.clone());
        seed("bad-field", index, bad, invalid);
        // Field 15, wire type 7: no such wire type.
        let mut bad_wire = good.clone();
        bad_wire.push(0x7f);
        seed("bad-wire-type", index, bad_wire, Verdict::Malformed);
        seed("sent-ok", index | RAW, frame(&good), accepted);
        let mut compressed = frame(&good);
        compressed[0] = 1;
        seed(
            "sent-compressed",
            index | RAW,
            compressed,
            Verdict::Malformed,
        );
        let mut cut = frame(&good);
        cut.truncate(cut.len() - 1);
        seed("sent-cut-short", index | RAW, cut, Verdict::Malformed);
        let mut too_large = frame(&good);
        too_large[1..5].copy_from_slice(&(5u32 << 20).to_be_bytes());
        seed("sent-too-large", index | RAW, too_large, Verdict::TooLarge);
        seed("sent-nothing", index | RAW, Vec::new(), empty);
    }
    // A string that is not UTF-8 (account_id, field 2).
    let debit = method_index("/tally.v1.MeteringService/Debit");
    seeds.push(RequestSeed {
        name: "Debit.not-utf8".into(),
        data: [vec![debit], vec![0x12, 2, 0xff, 0xfe]].concat(),
        expect: Verdict::Malformed,
    });
    seeds
}

/// The seeds of `core_commands`: scripts the property tests' strategies
/// draw, the same ones every time.
pub fn script_seeds() -> Vec<ScriptSeed> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = script(1..80);
    (0..32)
        .map(|i| ScriptSeed {
            name: format!("script-{i:02}"),
            data: strategy
                .new_tree(&mut runner)
                .expect("a script")
                .current()
                .to_bytes(),
        })
        .collect()
}
