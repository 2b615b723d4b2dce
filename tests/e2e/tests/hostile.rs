//! What bad input gets: requests that do not decode, that are too large,
//! or that are wrong in every field each get the documented status, reason
//! and fields, in an error that fits in 8 KiB, and change nothing.

use tally_e2e::*;
use tonic::Code;
use tonic::transport::Channel;

/// The account every case is checked against.
const ACCOUNT: &str = "hostile";

/// What a bad request must leave as it was.
#[derive(Debug, PartialEq)]
struct Witness {
    ledger: Vec<i64>,
    available: i64,
    version: i64,
}

async fn witness(accounts: &mut AccountServiceClient<Channel>) -> Witness {
    let balance = balance(accounts, ACCOUNT).await;
    Witness {
        ledger: ledger(accounts, ACCOUNT)
            .await
            .iter()
            .map(|entry| entry.sequence)
            .collect(),
        available: balance.available_millicredits,
        version: balance.version,
    }
}

/// A server with [`ACCOUNT`] open and funded.
async fn server(backend: Backend) -> TestServer {
    let server = TestServer::start_with(Options {
        backend,
        ..Default::default()
    })
    .await;
    let mut accounts = server.accounts().await;
    open(&mut accounts, ACCOUNT).await;
    grant(&mut accounts, ACCOUNT, "g-1", BucketKind::TopUp, 50_000).await;
    server
}

/// A Debit of [`ACCOUNT`] that would succeed, encoded.
fn good_debit() -> Vec<u8> {
    use prost::Message as _;
    DebitRequest {
        idempotency_key: "d-raw".into(),
        account_id: ACCOUNT.into(),
        member_id: "alice".into(),
        action: "article.draft".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Field 1 (a string) holding bytes that are not UTF-8.
const NOT_UTF8: [u8; 4] = [0x0a, 0x02, 0xff, 0xfe];

/// A frame whose compressed flag is `flag`.
fn flagged(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut framed = frame(message);
    framed[0] = flag;
    framed
}

fn assert_malformed(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert_eq!(reason(status), "MALFORMED_REQUEST", "{what}: {status:?}");
    assert!(wire_size(status) <= 8 * 1024, "{what}: {status:?}");
}

#[tokio::test]
async fn bodies_that_do_not_decode_are_invalid_argument_and_change_nothing() {
    for backend in BOTH_BACKENDS {
        let server = server(backend).await;
        let mut accounts = server.accounts().await;
        let before = witness(&mut accounts).await;
        let debit = "/tally.v1.MeteringService/Debit";
        let stream = "/tally.v1.MeteringService/ReportUsageStream";
        let garbage = [0xff_u8; 16];
        for (path, body, what) in [
            (debit, frame(&garbage), "16 bytes of 0xff as a Debit"),
            (debit, frame(&NOT_UTF8), "a Debit string that is not UTF-8"),
            (
                "/tally.v1.AccountService/GetBalance",
                frame(&garbage),
                "16 bytes of 0xff as a GetBalance",
            ),
            (
                "/tally.v1.AccountService/WatchAccount",
                frame(&garbage),
                "16 bytes of 0xff as a WatchAccount (server streaming)",
            ),
            (stream, frame(&garbage), "16 bytes of 0xff in a stream"),
            (
                stream,
                frame(&NOT_UTF8),
                "a stream message string that is not UTF-8",
            ),
            (
                stream,
                frame(&garbage)[..10].to_vec(),
                "a stream that ends inside a message",
            ),
            (debit, Vec::new(), "a Debit without a message"),
            (
                debit,
                frame(&good_debit())[..12].to_vec(),
                "a Debit that ends inside its message",
            ),
            (debit, flagged(7, &good_debit()), "a compressed flag of 7"),
            (
                debit,
                flagged(1, &good_debit()),
                "a compressed message without grpc-encoding",
            ),
            (
                stream,
                flagged(7, &good_debit()),
                "a compressed flag of 7 in a stream",
            ),
        ] {
            let status = raw_call(server.channel().await, path, body).await;
            assert_malformed(&status, what);
        }
        // The frame is what was wrong, not the connection or the method.
        let status = raw_call(server.channel().await, debit, frame(&good_debit())).await;
        assert_eq!(status.code(), Code::Ok, "{status:?}");
        let after = witness(&mut accounts).await;
        assert_eq!(after.ledger.len(), before.ledger.len() + 1, "{backend:?}");
        assert_eq!(after.available, before.available - 2_000, "{backend:?}");
    }
}

fn assert_too_large(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
    assert_eq!(reason(status), "REQUEST_TOO_LARGE", "{what}: {status:?}");
    assert_eq!(
        metadata(status, "limit_bytes").as_deref(),
        Some("4194304"),
        "{what}"
    );
    assert!(wire_size(status) <= 8 * 1024, "{what}: {status:?}");
}

#[tokio::test]
async fn requests_over_the_size_limit_are_resource_exhausted_and_change_nothing() {
    for backend in BOTH_BACKENDS {
        let server = server(backend).await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        let mut catalog = server.catalog().await;
        let before = witness(&mut accounts).await;
        let card_before = catalog
            .get_rate_card(GetRateCardRequest::default())
            .await
            .expect("rate card")
            .into_inner()
            .version;
        let huge = "k".repeat(5 << 20);

        let request = DebitRequest {
            idempotency_key: huge.clone(),
            account_id: ACCOUNT.into(),
            member_id: "alice".into(),
            action: "article.draft".into(),
            ..Default::default()
        };
        let size = prost::Message::encoded_len(&request).to_string();
        let status = metering.debit(request).await.unwrap_err();
        assert_too_large(&status, "a 5 MiB Debit");
        assert_eq!(metadata(&status, "size_bytes"), Some(size));

        let status = catalog
            .publish_rate_card(PublishRateCardRequest { toml: huge.clone() })
            .await
            .unwrap_err();
        assert_too_large(&status, "a 5 MiB rate card");

        let status = metering
            .report_usage_stream(futures::stream::iter([ReportUsageStreamRequest {
                records: vec![UsageRecord {
                    idempotency_key: huge.clone(),
                    account_id: ACCOUNT.into(),
                    member_id: "alice".into(),
                    action: "article.draft".into(),
                    ..Default::default()
                }],
            }]))
            .await
            .unwrap_err();
        assert_too_large(&status, "a 5 MiB stream message");

        // The length alone is refused: the server does not wait for the
        // bytes it announced.
        let mut announced = frame(&good_debit());
        announced[1..5].copy_from_slice(&(64_u32 << 20).to_be_bytes());
        let status = raw_call(
            server.channel().await,
            "/tally.v1.MeteringService/Debit",
            announced,
        )
        .await;
        assert_too_large(&status, "a 64 MiB length with a few bytes");
        assert_eq!(metadata(&status, "size_bytes").as_deref(), Some("67108864"));

        // Exactly at the limit is read (and refused for its fields).
        let at_limit = metering
            .debit(DebitRequest {
                idempotency_key: "k".repeat((4 << 20) - 64),
                account_id: ACCOUNT.into(),
                member_id: "alice".into(),
                action: "article.draft".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(at_limit.code(), Code::InvalidArgument, "{at_limit:?}");
        assert_eq!(violated_fields(&at_limit), vec!["idempotency_key"]);

        assert_eq!(witness(&mut accounts).await, before, "{backend:?}");
        let card_after = catalog
            .get_rate_card(GetRateCardRequest::default())
            .await
            .expect("rate card")
            .into_inner()
            .version;
        assert_eq!(card_after, card_before);
    }
}

#[tokio::test]
async fn errors_that_echo_what_was_sent_fit_in_8_kib() {
    for backend in BOTH_BACKENDS {
        let server = server(backend).await;
        let mut accounts = server.accounts().await;
        let mut metering = server.metering().await;
        let mut catalog = server.catalog().await;
        let before = witness(&mut accounts).await;

        // A thousand items, each naming an action of 3 KB with a bad
        // character at its end.
        let bad_action = format!("{}!", "a".repeat(3_000));
        let status = metering
            .quote(QuoteRequest {
                account_id: ACCOUNT.into(),
                items: (0..1_000)
                    .map(|_| QuoteItem {
                        action: bad_action.clone(),
                        ..Default::default()
                    })
                    .collect(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(wire_size(&status) <= 8 * 1024, "{}", wire_size(&status));
        let fields = violated_fields(&status);
        assert!((1..=20).contains(&fields.len()), "{fields:?}");
        assert_eq!(fields[0], "items[0].action");
        assert_eq!(metadata(&status, "violations").as_deref(), Some("1000"));
        assert!(status.message().contains(" more"), "{}", status.message());

        // A rate card of one line of nearly 1 MiB that does not parse: the
        // parser quotes the line.
        let toml = format!(
            "version = 9\n[actions.\"x\"]\nprice_millicredits = {}",
            "9".repeat(1 << 19)
        );
        let status = catalog
            .publish_rate_card(PublishRateCardRequest { toml })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), vec!["toml"]);
        assert!(wire_size(&status) <= 8 * 1024, "{}", wire_size(&status));

        // A unit name of 1 MiB, quoted in its violation and in its field.
        let unit = "u".repeat(1 << 20);
        let status = metering
            .debit(DebitRequest {
                idempotency_key: "d-unit".into(),
                account_id: ACCOUNT.into(),
                member_id: "alice".into(),
                action: "article.draft".into(),
                dimensions: Some(Dimensions {
                    units: [(unit, -1)].into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(wire_size(&status) <= 8 * 1024, "{}", wire_size(&status));
        assert!(
            violated_fields(&status)
                .iter()
                .all(|field| field.starts_with("dimensions.units")),
            "{status:?}"
        );

        assert_eq!(witness(&mut accounts).await, before, "{backend:?}");
    }
}

// The catalogue: bad requests of every RPC, each sent as bytes on the
// wire (so malformed bodies sit beside well-formed bad ones), each with the
// exact status, reason and fields it must get, an error that fits in
// 8 KiB, and a store left as it was.

const ACCOUNTS: &str = "/tally.v1.AccountService/";
const METERING: &str = "/tally.v1.MeteringService/";
const CATALOG: &str = "/tally.v1.CatalogService/";
const TEST_CLOCKS: &str = "/tally.v1.TestClockService/";
/// A test clock no case may create.
const NO_SUCH_CLOCK: &str = "hostile-clock";

/// A request body of one message.
fn one(message: &impl prost::Message) -> Vec<u8> {
    frame(&message.encode_to_vec())
}

/// What a case must get.
enum Expect {
    /// The call fails with this status, reason and fields.
    Call {
        code: Code,
        reason: &'static str,
        fields: &'static [&'static str],
    },
    /// A ReportUsage call answers OK and refuses its only record so.
    Record {
        code: Code,
        reason: &'static str,
        fields: &'static [&'static str],
    },
}

struct Case {
    name: &'static str,
    path: String,
    body: Vec<u8>,
    expect: Expect,
}

fn case(
    name: &'static str,
    method: &str,
    body: Vec<u8>,
    code: Code,
    reason: &'static str,
    fields: &'static [&'static str],
) -> Case {
    Case {
        name,
        path: method.to_owned(),
        body,
        expect: Expect::Call {
            code,
            reason,
            fields,
        },
    }
}

fn invalid(
    name: &'static str,
    method: &str,
    body: Vec<u8>,
    fields: &'static [&'static str],
) -> Case {
    case(
        name,
        method,
        body,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
        fields,
    )
}

fn malformed(name: &'static str, method: &str, body: Vec<u8>) -> Case {
    case(
        name,
        method,
        body,
        Code::InvalidArgument,
        "MALFORMED_REQUEST",
        &[],
    )
}

fn too_large(name: &'static str, method: &str, body: Vec<u8>) -> Case {
    case(
        name,
        method,
        body,
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
        &[],
    )
}

fn path(service: &str, method: &str) -> String {
    format!("{service}{method}")
}

/// A frame announcing `len` bytes, followed by a few.
fn announcing(len: u32) -> Vec<u8> {
    let mut framed = frame(&good_debit());
    framed[1..5].copy_from_slice(&len.to_be_bytes());
    framed
}

fn debit_with(edit: impl FnOnce(&mut DebitRequest)) -> Vec<u8> {
    let mut request = DebitRequest {
        idempotency_key: "d-case".into(),
        account_id: ACCOUNT.into(),
        member_id: "alice".into(),
        action: "article.draft".into(),
        ..Default::default()
    };
    edit(&mut request);
    one(&request)
}

fn reserve_with(edit: impl FnOnce(&mut ReserveRequest)) -> Vec<u8> {
    let mut request = reserve_request(ACCOUNT, "r-case", 1_000);
    edit(&mut request);
    one(&request)
}

fn record(edit: impl FnOnce(&mut UsageRecord)) -> UsageRecord {
    let mut record = UsageRecord {
        idempotency_key: "u-case".into(),
        account_id: ACCOUNT.into(),
        member_id: "alice".into(),
        action: "article.draft".into(),
        ..Default::default()
    };
    edit(&mut record);
    record
}

fn grant_with(edit: impl FnOnce(&mut GrantRequest)) -> Vec<u8> {
    let mut request = GrantRequest {
        idempotency_key: "g-case".into(),
        account_id: ACCOUNT.into(),
        kind: BucketKind::TopUp.into(),
        amount_millicredits: 1_000,
        ..Default::default()
    };
    edit(&mut request);
    one(&request)
}

fn open_with(edit: impl FnOnce(&mut OpenAccountRequest)) -> Vec<u8> {
    let mut request = OpenAccountRequest {
        idempotency_key: "o-case".into(),
        account_id: NEWCOMER.into(),
        ..Default::default()
    };
    edit(&mut request);
    one(&request)
}

fn timestamp(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

fn anchor(day: i32, hour: i32, minute: i32) -> Option<BillingAnchor> {
    Some(BillingAnchor { day, hour, minute })
}

/// The account the OpenAccount cases would create.
const NEWCOMER: &str = "newcomer";
/// A reservation id in the right form that no hold has.
const NO_SUCH_HOLD: &str = "0190c0de-0000-7000-8000-000000000000";

/// Every bad request, for the reservation `held` of [`ACCOUNT`].
fn catalogue(held: &str) -> Vec<Case> {
    let m = |method: &str| path(METERING, method);
    let a = |method: &str| path(ACCOUNTS, method);
    let c = |method: &str| path(CATALOG, method);
    let t = |method: &str| path(TEST_CLOCKS, method);
    let garbage = frame(&[0xff_u8; 16]);
    let held = held.to_owned();
    let mut cases = vec![
        // Bodies that are not messages.
        malformed("0xff as a Debit", &m("Debit"), garbage.clone()),
        malformed(
            "non-UTF-8 account of OpenAccount",
            &a("OpenAccount"),
            frame(&NOT_UTF8),
        ),
        malformed(
            "a varint where Grant's string is",
            &a("Grant"),
            frame(&[0x08, 0x01]),
        ),
        malformed(
            "a rate card string longer than its message",
            &c("PublishRateCard"),
            frame(&[0x0a, 0x64, b'a', b'b', b'c']),
        ),
        malformed("GetBalance without a message", &a("GetBalance"), Vec::new()),
        malformed(
            "ListLedger ending inside its message",
            &a("ListLedger"),
            frame(&[0x0a, 0x07, b'h', b'o', b's'])[..6].to_vec(),
        ),
        malformed(
            "0xff as a WatchAccount",
            &a("WatchAccount"),
            garbage.clone(),
        ),
        malformed(
            "a stream frame flagged 7",
            &m("ReportUsageStream"),
            flagged(7, &[]),
        ),
        malformed(
            "a compressed Quote without grpc-encoding",
            &m("Quote"),
            flagged(1, &[]),
        ),
        malformed(
            "a runway of a varint that never ends",
            &a("GetUsage"),
            frame(&[
                0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ]),
        ),
        malformed(
            "0xff as a SetSpendingCap",
            &a("SetSpendingCap"),
            garbage.clone(),
        ),
        malformed(
            "a deprecated group wire type in GetPlanCatalogue",
            &c("GetPlanCatalogue"),
            frame(&[0x0b]),
        ),
        // Too large.
        too_large(
            "a Debit of 5 MiB",
            &m("Debit"),
            debit_with(|d| d.idempotency_key = "k".repeat(5 << 20)),
        ),
        too_large(
            "a plan catalogue announcing 64 MiB",
            &c("PublishPlanCatalogue"),
            announcing(64 << 20),
        ),
        too_large(
            "a stream message of 5 MiB",
            &m("ReportUsageStream"),
            one(&ReportUsageStreamRequest {
                records: vec![record(|r| r.member_id = "m".repeat(5 << 20))],
            }),
        ),
        too_large(
            "alert thresholds one byte over the limit",
            &a("SetAlertThresholds"),
            announcing((4 << 20) + 1),
        ),
        // Fields that decode but are wrong.
        invalid(
            "a Quote of no items",
            &m("Quote"),
            one(&QuoteRequest {
                account_id: ACCOUNT.into(),
                items: Vec::new(),
            }),
            &["items"],
        ),
        invalid(
            "a Quote of 1,001 items",
            &m("Quote"),
            one(&QuoteRequest {
                account_id: ACCOUNT.into(),
                items: vec![
                    QuoteItem {
                        action: "article.draft".into(),
                        ..Default::default()
                    };
                    1_001
                ],
            }),
            &["items"],
        ),
        invalid(
            "a Quote item with a spaced model and a negative count",
            &m("Quote"),
            one(&QuoteRequest {
                account_id: ACCOUNT.into(),
                items: vec![QuoteItem {
                    action: "article.draft".into(),
                    model: "has space".into(),
                    count: -1,
                    ..Default::default()
                }],
            }),
            &["items[0].model", "items[0].count"],
        ),
        invalid(
            "a Quote for no account",
            &m("Quote"),
            one(&QuoteRequest {
                account_id: String::new(),
                items: vec![QuoteItem {
                    action: "article.draft".into(),
                    ..Default::default()
                }],
            }),
            &["account_id"],
        ),
        invalid(
            "an empty Reserve",
            &m("Reserve"),
            one(&ReserveRequest::default()),
            &["idempotency_key", "account_id", "member_id", "action"],
        ),
        invalid(
            "a Reserve with an amount and dimensions",
            &m("Reserve"),
            reserve_with(|r| r.dimensions = Some(Dimensions::default())),
            &["dimensions"],
        ),
        invalid(
            "a Reserve of zero seconds",
            &m("Reserve"),
            reserve_with(|r| r.ttl = Some(seconds(0))),
            &["ttl"],
        ),
        invalid(
            "a Reserve of two days",
            &m("Reserve"),
            reserve_with(|r| r.ttl = Some(seconds(2 * 86_400))),
            &["ttl"],
        ),
        invalid(
            "a Reserve of a negative amount",
            &m("Reserve"),
            reserve_with(|r| r.amount_millicredits = Some(-5)),
            &["amount_millicredits"],
        ),
        invalid(
            "a Commit of no reservation",
            &m("Commit"),
            one(&CommitRequest {
                idempotency_key: "c-case".into(),
                account_id: ACCOUNT.into(),
                ..Default::default()
            }),
            &["reservation_id"],
        ),
        invalid(
            "a Commit of a negative amount",
            &m("Commit"),
            one(&CommitRequest {
                idempotency_key: "c-case".into(),
                account_id: ACCOUNT.into(),
                reservation_id: held.clone(),
                amount_millicredits: Some(-1),
                ..Default::default()
            }),
            &["amount_millicredits"],
        ),
        invalid(
            "a Release of a spaced reservation id",
            &m("Release"),
            one(&ReleaseRequest {
                idempotency_key: "x-case".into(),
                account_id: ACCOUNT.into(),
                reservation_id: "has space".into(),
            }),
            &["reservation_id"],
        ),
        invalid(
            "an Extend without a TTL",
            &m("Extend"),
            one(&ExtendRequest {
                idempotency_key: "e-case".into(),
                account_id: ACCOUNT.into(),
                reservation_id: held.clone(),
                ttl: None,
            }),
            &["ttl"],
        ),
        invalid(
            "a Debit over the input cap",
            &m("Debit"),
            debit_with(|d| d.amount_millicredits = Some(2_000_000_000_000)),
            &["amount_millicredits"],
        ),
        invalid(
            "a Debit of negative tokens",
            &m("Debit"),
            debit_with(|d| {
                d.dimensions = Some(Dimensions {
                    input_tokens: -1,
                    ..Default::default()
                })
            }),
            &["dimensions.input_tokens"],
        ),
        invalid(
            "a Debit of 17 units",
            &m("Debit"),
            debit_with(|d| {
                d.dimensions = Some(Dimensions {
                    units: (0..17).map(|i| (format!("unit_{i}"), 1)).collect(),
                    ..Default::default()
                })
            }),
            &["dimensions.units"],
        ),
        invalid(
            "a Debit by a member of 300 bytes",
            &m("Debit"),
            debit_with(|d| d.member_id = "m".repeat(300)),
            &["member_id"],
        ),
        invalid(
            "a Debit of an upper-case action",
            &m("Debit"),
            debit_with(|d| d.action = "Article.Draft".into()),
            &["action"],
        ),
        invalid(
            "a Refund of no charge, without a reason",
            &m("Refund"),
            one(&RefundRequest {
                idempotency_key: "f-case".into(),
                account_id: ACCOUNT.into(),
                ..Default::default()
            }),
            &["charge_idempotency_key", "reason"],
        ),
        invalid(
            "a Refund of zero",
            &m("Refund"),
            one(&RefundRequest {
                idempotency_key: "f-case".into(),
                account_id: ACCOUNT.into(),
                charge_idempotency_key: "d-1".into(),
                amount_millicredits: Some(0),
                reason: "goodwill".into(),
            }),
            &["amount_millicredits"],
        ),
        invalid(
            "a ReportUsage of 1,001 records",
            &m("ReportUsage"),
            one(&ReportUsageRequest {
                records: vec![record(|_| {}); 1_001],
            }),
            &["records"],
        ),
        invalid(
            "a stream message of 1,001 records",
            &m("ReportUsageStream"),
            one(&ReportUsageStreamRequest {
                records: vec![record(|_| {}); 1_001],
            }),
            &["records"],
        ),
        Case {
            name: "a usage record from 8 days ago",
            path: m("ReportUsage"),
            body: one(&ReportUsageRequest {
                records: vec![record(|r| {
                    r.occurred_at = timestamp(START.as_millis() / 1000 - 8 * 86_400, 0)
                })],
            }),
            expect: Expect::Record {
                code: Code::InvalidArgument,
                reason: "INVALID_ARGUMENT",
                fields: &["occurred_at"],
            },
        },
        Case {
            name: "a usage record of an unknown action",
            path: m("ReportUsage"),
            body: one(&ReportUsageRequest {
                records: vec![record(|r| r.action = "no.such.action".into())],
            }),
            expect: Expect::Record {
                code: Code::NotFound,
                reason: "UNKNOWN_ACTION",
                fields: &[],
            },
        },
        invalid(
            "an account in a time zone on Mars",
            &a("OpenAccount"),
            open_with(|o| o.time_zone = "Mars/Olympus_Mons".into()),
            &["time_zone"],
        ),
        invalid(
            "a billing anchor on day 40",
            &a("OpenAccount"),
            open_with(|o| o.billing_anchor = anchor(40, 0, 0)),
            &["billing_anchor"],
        ),
        invalid(
            "a negative spending cap at opening",
            &a("OpenAccount"),
            open_with(|o| o.spending_cap_millicredits = Some(-1)),
            &["spending_cap_millicredits"],
        ),
        invalid(
            "an upper-case plan at opening",
            &a("OpenAccount"),
            open_with(|o| o.plan = "PRO".into()),
            &["plan"],
        ),
        invalid(
            "an account id of 129 bytes",
            &a("OpenAccount"),
            open_with(|o| o.account_id = "a".repeat(129)),
            &["account_id"],
        ),
        invalid(
            "a pack grant with a kind and an amount",
            &a("Grant"),
            grant_with(|g| g.pack = "popular".into()),
            &["kind", "amount_millicredits"],
        ),
        invalid(
            "a grant from the refund source",
            &a("Grant"),
            grant_with(|g| g.source = GrantSource::Refund.into()),
            &["source"],
        ),
        invalid(
            "a grant costed in lower-case dollars below zero",
            &a("Grant"),
            grant_with(|g| {
                g.cost_basis = Some(CostBasis {
                    currency_code: "usd".into(),
                    micros_per_credit: -1,
                })
            }),
            &["cost_basis.currency_code", "cost_basis.micros_per_credit"],
        ),
        invalid(
            "a grant taking effect at a nanosecond out of range",
            &a("Grant"),
            grant_with(|g| g.effective_at = timestamp(0, 1_000_000_000)),
            &["effective_at"],
        ),
        invalid(
            "a grant of an unknown kind",
            &a("Grant"),
            grant_with(|g| g.kind = 99),
            &["kind"],
        ),
        invalid(
            "a void of no grant, with a reason of 300 bytes",
            &a("VoidGrant"),
            one(&VoidGrantRequest {
                idempotency_key: "v-case".into(),
                account_id: ACCOUNT.into(),
                grant_id: String::new(),
                reason: "r".repeat(300),
            }),
            &["grant_id", "reason"],
        ),
        invalid(
            "an adjustment of zero by no one for no reason",
            &a("Adjust"),
            one(&AdjustRequest {
                idempotency_key: "j-case".into(),
                account_id: ACCOUNT.into(),
                ..Default::default()
            }),
            &["amount_millicredits", "reason", "operator"],
        ),
        invalid(
            "a change to no plan",
            &a("ChangePlan"),
            one(&ChangePlanRequest {
                idempotency_key: "p-case".into(),
                account_id: ACCOUNT.into(),
                plan: String::new(),
            }),
            &["plan"],
        ),
        invalid(
            "a negative spending cap",
            &a("SetSpendingCap"),
            one(&SetSpendingCapRequest {
                idempotency_key: "s-case".into(),
                account_id: ACCOUNT.into(),
                spending_cap_millicredits: Some(-5),
            }),
            &["spending_cap_millicredits"],
        ),
        invalid(
            "no billing anchor",
            &a("SetBillingAnchor"),
            one(&SetBillingAnchorRequest {
                idempotency_key: "b-case".into(),
                account_id: ACCOUNT.into(),
                billing_anchor: None,
            }),
            &["billing_anchor"],
        ),
        invalid(
            "a billing anchor at 25 o'clock",
            &a("SetBillingAnchor"),
            one(&SetBillingAnchorRequest {
                idempotency_key: "b-case".into(),
                account_id: ACCOUNT.into(),
                billing_anchor: anchor(1, 25, 0),
            }),
            &["billing_anchor"],
        ),
        invalid(
            "an alert at 150 % of the allowance",
            &a("SetAlertThresholds"),
            one(&SetAlertThresholdsRequest {
                idempotency_key: "t-case".into(),
                account_id: ACCOUNT.into(),
                thresholds: Some(AlertThresholds {
                    usage_percent: vec![150],
                    ..Default::default()
                }),
            }),
            &["thresholds.usage_percent"],
        ),
        invalid(
            "an auto top-up of no pack",
            &a("SetAlertThresholds"),
            one(&SetAlertThresholdsRequest {
                idempotency_key: "t-case".into(),
                account_id: ACCOUNT.into(),
                thresholds: Some(AlertThresholds {
                    auto_top_up: Some(AutoTopUp {
                        below_millicredits: 1_000,
                        pack: String::new(),
                    }),
                    ..Default::default()
                }),
            }),
            &["thresholds.auto_top_up.pack"],
        ),
        invalid(
            "a balance of an account id with a space",
            &a("GetBalance"),
            one(&GetBalanceRequest {
                account_id: "has space".into(),
                consistency: None,
            }),
            &["account_id"],
        ),
        invalid(
            "a balance as fresh as a forged token",
            &a("GetBalance"),
            one(&GetBalanceRequest {
                account_id: ACCOUNT.into(),
                consistency: Some(ReadConsistency {
                    requirement: Some(read_consistency::Requirement::AtLeastAsFresh(
                        "forged".into(),
                    )),
                }),
            }),
            &["consistency.at_least_as_fresh"],
        ),
        invalid(
            "a ledger page of 5,000 after a forged token, of kind 99",
            &a("ListLedger"),
            one(&ListLedgerRequest {
                account_id: ACCOUNT.into(),
                page_size: 5_000,
                page_token: "forged".into(),
                kinds: vec![99],
                ..Default::default()
            }),
            &["page_size", "page_token", "kinds"],
        ),
        invalid(
            "a ledger from before year 1",
            &a("ListLedger"),
            one(&ListLedgerRequest {
                account_id: ACCOUNT.into(),
                start_time: timestamp(-70_000_000_000, 0),
                ..Default::default()
            }),
            &["start_time"],
        ),
        invalid(
            "usage grouped by nothing over days that are not dates",
            &a("GetUsage"),
            one(&GetUsageRequest {
                account_id: ACCOUNT.into(),
                group_by: 0,
                period: Some(get_usage_request::Period::Days(DayRange {
                    first_day: "yesterday".into(),
                    last_day: "2026-02-30".into(),
                })),
                ..Default::default()
            }),
            &["group_by", "days.first_day", "days.last_day"],
        ),
        invalid(
            "usage of a cycle long ago",
            &a("GetUsage"),
            one(&GetUsageRequest {
                account_id: ACCOUNT.into(),
                group_by: UsageGrouping::Action.into(),
                period: Some(get_usage_request::Period::CyclesAgo(-1)),
                ..Default::default()
            }),
            &["cycles_ago"],
        ),
        invalid(
            "a watch from a negative sequence",
            &a("WatchAccount"),
            one(&WatchAccountRequest {
                account_id: ACCOUNT.into(),
                after_sequence: Some(-1),
            }),
            &["after_sequence"],
        ),
        invalid(
            "a watch past the last entry",
            &a("WatchAccount"),
            one(&WatchAccountRequest {
                account_id: ACCOUNT.into(),
                after_sequence: Some(1_000_000),
            }),
            &["after_sequence"],
        ),
        invalid(
            "a rate card that is not TOML",
            &c("PublishRateCard"),
            one(&PublishRateCardRequest {
                toml: "version = = 4".into(),
            }),
            &["toml"],
        ),
        invalid(
            "a rate card of 2 MiB",
            &c("PublishRateCard"),
            one(&PublishRateCardRequest {
                toml: format!("# {}", "x".repeat(2 << 20)),
            }),
            &["toml"],
        ),
        invalid(
            "a plan catalogue with a negative allowance",
            &c("PublishPlanCatalogue"),
            one(&PublishPlanCatalogueRequest {
                toml: "version = 2\n[plans.pro]\nmonthly_allowance_millicredits = -5\n".into(),
            }),
            &["toml"],
        ),
        invalid(
            "a rate card of version -1",
            &c("GetRateCard"),
            one(&GetRateCardRequest { version: Some(-1) }),
            &["version"],
        ),
        invalid(
            "a plan catalogue of version -3",
            &c("GetPlanCatalogue"),
            one(&GetPlanCatalogueRequest { version: Some(-3) }),
            &["version"],
        ),
        malformed(
            "a CreateTestClock body of 0xff",
            &t("CreateTestClock"),
            frame(&[0xff; 16]),
        ),
        invalid(
            "a test clock with no time",
            &t("CreateTestClock"),
            one(&CreateTestClockRequest {
                test_clock_id: NO_SUCH_CLOCK.into(),
                frozen_time: None,
            }),
            &["frozen_time"],
        ),
        invalid(
            "a test clock id with a space, at year 10000",
            &t("CreateTestClock"),
            one(&CreateTestClockRequest {
                test_clock_id: "a clock".into(),
                frozen_time: Some(prost_types::Timestamp {
                    seconds: 253_402_300_800,
                    nanos: 0,
                }),
            }),
            &["test_clock_id", "frozen_time"],
        ),
        invalid(
            "an advance of no clock to no time",
            &t("AdvanceTestClock"),
            one(&AdvanceTestClockRequest::default()),
            &["test_clock_id", "frozen_time"],
        ),
        invalid(
            "a test clock id of 129 bytes",
            &t("GetTestClock"),
            one(&GetTestClockRequest {
                test_clock_id: "c".repeat(129),
            }),
            &["test_clock_id"],
        ),
        invalid(
            "an account opened on a clock id that is not one",
            &a("OpenAccount"),
            one(&OpenAccountRequest {
                idempotency_key: "o-clock".into(),
                account_id: NEWCOMER.into(),
                test_clock_id: "no\nclock".into(),
                ..Default::default()
            }),
            &["test_clock_id"],
        ),
        // Well formed, and refused for what they name.
        case(
            "a test clock no one created",
            &t("GetTestClock"),
            one(&GetTestClockRequest {
                test_clock_id: NO_SUCH_CLOCK.into(),
            }),
            Code::NotFound,
            "UNKNOWN_TEST_CLOCK",
            &[],
        ),
        case(
            "an advance of a test clock no one created",
            &t("AdvanceTestClock"),
            one(&AdvanceTestClockRequest {
                test_clock_id: NO_SUCH_CLOCK.into(),
                frozen_time: Some(prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 0,
                }),
            }),
            Code::NotFound,
            "UNKNOWN_TEST_CLOCK",
            &[],
        ),
        case(
            "an account opened on a test clock no one created",
            &a("OpenAccount"),
            one(&OpenAccountRequest {
                idempotency_key: "o-clock".into(),
                account_id: NEWCOMER.into(),
                test_clock_id: NO_SUCH_CLOCK.into(),
                ..Default::default()
            }),
            Code::NotFound,
            "UNKNOWN_TEST_CLOCK",
            &[],
        ),
        case(
            "a rate card never published",
            &c("GetRateCard"),
            one(&GetRateCardRequest { version: Some(999) }),
            Code::NotFound,
            "UNKNOWN_VERSION",
            &[],
        ),
        case(
            "a Debit of an unknown action",
            &m("Debit"),
            debit_with(|d| d.action = "no.such.action".into()),
            Code::NotFound,
            "UNKNOWN_ACTION",
            &[],
        ),
        case(
            "a change to an unknown plan",
            &a("ChangePlan"),
            one(&ChangePlanRequest {
                idempotency_key: "p-case".into(),
                account_id: ACCOUNT.into(),
                plan: "no-such-plan".into(),
            }),
            Code::NotFound,
            "UNKNOWN_PLAN",
            &[],
        ),
        case(
            "a Commit of a hold that does not exist",
            &m("Commit"),
            one(&CommitRequest {
                idempotency_key: "c-case".into(),
                account_id: ACCOUNT.into(),
                reservation_id: NO_SUCH_HOLD.into(),
                ..Default::default()
            }),
            Code::NotFound,
            "RESERVATION_NOT_FOUND",
            &[],
        ),
        case(
            "a Refund of a charge that does not exist",
            &m("Refund"),
            one(&RefundRequest {
                idempotency_key: "f-case".into(),
                account_id: ACCOUNT.into(),
                charge_idempotency_key: "never-charged".into(),
                reason: "goodwill".into(),
                ..Default::default()
            }),
            Code::NotFound,
            "CHARGE_NOT_FOUND",
            &[],
        ),
        case(
            "a Debit of a million credits",
            &m("Debit"),
            debit_with(|d| d.amount_millicredits = Some(1_000_000_000)),
            Code::FailedPrecondition,
            "INSUFFICIENT_CREDITS",
            &[],
        ),
        case(
            "a Debit reusing a key for another amount",
            &m("Debit"),
            debit_with(|d| {
                d.idempotency_key = "d-1".into();
                d.amount_millicredits = Some(1);
            }),
            Code::AlreadyExists,
            "IDEMPOTENCY_KEY_REUSED",
            &[],
        ),
        case(
            "an account opened twice",
            &a("OpenAccount"),
            one(&OpenAccountRequest {
                idempotency_key: "o-again".into(),
                account_id: ACCOUNT.into(),
                ..Default::default()
            }),
            Code::AlreadyExists,
            "ACCOUNT_EXISTS",
            &[],
        ),
        case(
            "a void of a grant that does not exist",
            &a("VoidGrant"),
            one(&VoidGrantRequest {
                idempotency_key: "v-case".into(),
                account_id: ACCOUNT.into(),
                grant_id: "no-such-grant".into(),
                reason: "mistake".into(),
            }),
            Code::NotFound,
            "GRANT_NOT_FOUND",
            &[],
        ),
        case(
            "the balance of an account never opened",
            &a("GetBalance"),
            one(&GetBalanceRequest {
                account_id: NEWCOMER.into(),
                consistency: None,
            }),
            Code::NotFound,
            "UNKNOWN_ACCOUNT",
            &[],
        ),
    ];
    // Every message of the stream is read: a bad second message fails the
    // call as a first one would (the first names no record).
    let mut two = one(&ReportUsageStreamRequest::default());
    two.extend(garbage);
    cases.push(malformed(
        "a stream whose second message is 0xff",
        &m("ReportUsageStream"),
        two,
    ));
    cases
}

/// The store as the catalogue must leave it.
#[derive(Debug, PartialEq)]
struct Store {
    account: Witness,
    newcomer: Code,
    rate_card: i64,
    plans: i64,
    clock: Code,
}

async fn store(server: &TestServer) -> Store {
    let mut accounts = server.accounts().await;
    let mut catalog = server.catalog().await;
    Store {
        account: witness(&mut accounts).await,
        newcomer: accounts
            .get_balance(GetBalanceRequest {
                account_id: NEWCOMER.into(),
                consistency: fully_consistent(),
            })
            .await
            .map_or_else(|status| status.code(), |_| Code::Ok),
        rate_card: catalog
            .get_rate_card(GetRateCardRequest::default())
            .await
            .expect("rate card")
            .into_inner()
            .version,
        plans: catalog
            .get_plan_catalogue(GetPlanCatalogueRequest::default())
            .await
            .expect("plans")
            .into_inner()
            .version,
        clock: server
            .test_clocks()
            .await
            .get_test_clock(GetTestClockRequest {
                test_clock_id: NO_SUCH_CLOCK.into(),
            })
            .await
            .map_or_else(|status| status.code(), |_| Code::Ok),
    }
}

#[tokio::test]
async fn a_catalogue_of_bad_requests_gets_exact_answers_and_changes_nothing() {
    use prost::Message as _;
    for backend in BOTH_BACKENDS {
        let server = server(backend).await;
        let mut metering = server.metering().await;
        metering
            .debit(DebitRequest {
                idempotency_key: "d-1".into(),
                account_id: ACCOUNT.into(),
                member_id: "alice".into(),
                action: "article.draft".into(),
                ..Default::default()
            })
            .await
            .expect("a charge to refund");
        let held = metering
            .reserve(reserve_request(ACCOUNT, "r-1", 1_000))
            .await
            .expect("a hold")
            .into_inner()
            .reservation
            .expect("reservation")
            .reservation_id;
        let before = store(&server).await;
        assert_eq!(before.newcomer, Code::NotFound);
        assert_eq!(before.clock, Code::NotFound);

        let cases = catalogue(&held);
        assert!(cases.len() >= 50, "{} cases", cases.len());
        let mut methods = std::collections::BTreeSet::new();
        for case in cases {
            let name = format!("{backend:?}: {}", case.name);
            methods.insert(case.path.clone());
            let (messages, status) =
                raw_exchange(server.channel().await, &case.path, case.body).await;
            match case.expect {
                Expect::Call {
                    code,
                    reason: expected,
                    fields,
                } => {
                    assert_eq!(status.code(), code, "{name}: {status:?}");
                    assert_eq!(reason(&status), expected, "{name}: {status:?}");
                    assert_eq!(violated_fields(&status), fields, "{name}: {status:?}");
                    assert!(wire_size(&status) <= 8 * 1024, "{name}: {status:?}");
                }
                Expect::Record {
                    code,
                    reason: expected,
                    fields,
                } => {
                    assert_eq!(status.code(), Code::Ok, "{name}: {status:?}");
                    let answer = ReportUsageResponse::decode(&messages[0][..])
                        .expect("a ReportUsage answer");
                    let [result] = &answer.results[..] else {
                        panic!("{name}: {answer:?}");
                    };
                    let Some(usage_record_result::Outcome::Refused(refused)) = &result.outcome
                    else {
                        panic!("{name}: {result:?}");
                    };
                    assert_eq!(refused.code, code as i32, "{name}: {refused:?}");
                    assert_eq!(refused.reason, expected, "{name}: {refused:?}");
                    assert_eq!(refused.fields, fields, "{name}: {refused:?}");
                    assert!(refused.encoded_len() <= 8 * 1024, "{name}");
                }
            }
            assert_eq!(store(&server).await, before, "{name}");
        }
        // Every RPC of the API has cases.
        for service in tally_e2e::api_methods() {
            assert!(methods.contains(&service), "no case for {service}");
        }
    }
}
