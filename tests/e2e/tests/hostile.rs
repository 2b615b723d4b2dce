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
