//! The target `decode_request`: bytes as the body of a call to one of
//! tally.v1's methods, answered by the services as tallyd serves them
//! over a store that is not open yet ([`tally_server::fuzzing`]), and the
//! answer judged by [`verdict`], the one place that says what a caller's
//! bytes may get.
//!
//! The first byte picks the method ([`METHODS`], its low seven bits
//! modulo their number) and how the rest is sent: with the high bit clear
//! the rest is one message, framed as a client frames it; with it set the
//! rest is the whole request body as sent, frames and all, so the fuzzer
//! also tries the framing (a compressed flag, a length that lies, a body
//! that ends inside a frame, two messages to a unary method).

use std::cell::RefCell;

use prost::Message;
use tally_api::v1 as pb;
use tally_api::{ERROR_DOMAIN, MALFORMED_REQUEST};
use tally_server::fuzzing::{Answer, STORE_NOT_OPEN, Services};
use tonic::Code;
use tonic_types::StatusExt;

/// A method of tally.v1, and what the fuzz target needs to know of it.
pub struct Method {
    /// `/tally.v1.MeteringService/Debit`.
    pub path: &'static str,
    /// Whether `bytes` decode as the method's request message.
    pub decodes: fn(&[u8]) -> bool,
    /// What an accepted request's answer holds: records answered one by
    /// one (`ReportUsage`, `ReportUsageStream`), or nothing to look at.
    pub answers: Answers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answers {
    /// The call's status says it all.
    Status,
    /// OK, with a result per record of the request.
    Records,
}

fn decodes<T: Message + Default>(bytes: &[u8]) -> bool {
    T::decode(bytes).is_ok()
}

macro_rules! methods {
    ($($service:literal, $method:literal, $request:ty, $answers:ident;)*) => {
        /// Every method of tally.v1, in a fixed order: a corpus file's
        /// first byte names one by its place here, so new methods go at
        /// the end (a test checks that the list is the API's).
        pub const METHODS: &[Method] = &[$(Method {
            path: concat!("/tally.v1.", $service, "/", $method),
            decodes: decodes::<$request>,
            answers: Answers::$answers,
        }),*];
    };
}

methods! {
    "AccountService", "OpenAccount", pb::OpenAccountRequest, Status;
    "AccountService", "Grant", pb::GrantRequest, Status;
    "AccountService", "VoidGrant", pb::VoidGrantRequest, Status;
    "AccountService", "Adjust", pb::AdjustRequest, Status;
    "AccountService", "GetBalance", pb::GetBalanceRequest, Status;
    "AccountService", "ListLedger", pb::ListLedgerRequest, Status;
    "AccountService", "GetUsage", pb::GetUsageRequest, Status;
    "AccountService", "WatchAccount", pb::WatchAccountRequest, Status;
    "AccountService", "ChangePlan", pb::ChangePlanRequest, Status;
    "AccountService", "SetSpendingCap", pb::SetSpendingCapRequest, Status;
    "AccountService", "SetBillingAnchor", pb::SetBillingAnchorRequest, Status;
    "AccountService", "SetAlertThresholds", pb::SetAlertThresholdsRequest, Status;
    "MeteringService", "Quote", pb::QuoteRequest, Status;
    "MeteringService", "Reserve", pb::ReserveRequest, Status;
    "MeteringService", "Commit", pb::CommitRequest, Status;
    "MeteringService", "Release", pb::ReleaseRequest, Status;
    "MeteringService", "Extend", pb::ExtendRequest, Status;
    "MeteringService", "Debit", pb::DebitRequest, Status;
    "MeteringService", "ReportUsage", pb::ReportUsageRequest, Records;
    "MeteringService", "ReportUsageStream", pb::ReportUsageStreamRequest, Records;
    "MeteringService", "Refund", pb::RefundRequest, Status;
    "CatalogService", "PublishRateCard", pb::PublishRateCardRequest, Status;
    "CatalogService", "GetRateCard", pb::GetRateCardRequest, Status;
    "CatalogService", "PublishPlanCatalogue", pb::PublishPlanCatalogueRequest, Status;
    "CatalogService", "GetPlanCatalogue", pb::GetPlanCatalogueRequest, Status;
    "TestClockService", "CreateTestClock", pb::CreateTestClockRequest, Status;
    "TestClockService", "GetTestClock", pb::GetTestClockRequest, Status;
    "TestClockService", "AdvanceTestClock", pb::AdvanceTestClockRequest, Status;
}

/// The high bit of the first byte: the rest is the body as sent.
pub const RAW: u8 = 0x80;

/// The index of the method at `path` in [`METHODS`].
pub fn method_index(path: &str) -> u8 {
    let index = METHODS
        .iter()
        .position(|m| m.path == path)
        .unwrap_or_else(|| panic!("{path} is not a method of tally.v1"));
    u8::try_from(index).expect("fewer than 128 methods")
}

/// A message in a gRPC frame: not compressed, its length, itself.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("fits").to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// What the server made of a request: each kind of answer a caller's
/// bytes may get. Anything else fails the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Passed every check: it would now be decided (UNAVAILABLE, the
    /// store not being open).
    Accepted,
    /// INVALID_ARGUMENT `MALFORMED_REQUEST`: not a message of the type.
    Malformed,
    /// INVALID_ARGUMENT `INVALID_ARGUMENT`, naming these fields.
    Invalid(Vec<String>),
    /// RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE`: a frame claimed more than
    /// a message may hold.
    TooLarge,
    /// OK with a result per record: how many were refused as invalid,
    /// and how many passed (and would be charged).
    Records { invalid: usize, accepted: usize },
}

thread_local! {
    static SERVER: RefCell<Option<(tokio::runtime::Runtime, Services)>> = const { RefCell::new(None) };
}

/// The fuzz target: never panics for any `data`, unless the server
/// answers what [`verdict`] says no caller's bytes may get.
pub fn decode_request(data: &[u8]) -> Verdict {
    // No bytes at all: an empty message to the first method.
    let (first, rest) = data.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
    let method = &METHODS[usize::from(first & !RAW) % METHODS.len()];
    let raw = first & RAW != 0;
    let body = if raw { rest.to_vec() } else { frame(rest) };
    let answer = SERVER.with(|server| {
        let mut server = server.borrow_mut();
        let (runtime, services) = server.get_or_insert_with(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            (runtime, Services::new())
        });
        runtime.block_on(services.call(method.path, body))
    });
    let verdict = verdict(method, &answer);
    if !raw && rest.len() <= tally_server::MAX_REQUEST_BYTES {
        // One whole frame: the server decodes the message exactly as
        // prost does, whichever the method.
        assert_eq!(
            verdict == Verdict::Malformed,
            !(method.decodes)(rest),
            "{}: {verdict:?} for a message that {} as its request",
            method.path,
            if (method.decodes)(rest) {
                "decodes"
            } else {
                "does not decode"
            },
        );
    }
    verdict
}

/// What a caller's bytes may get, and nothing else: the mapping that the
/// whole target checks. Panics, naming the method, on any other answer.
pub fn verdict(method: &Method, answer: &Answer) -> Verdict {
    let status = &answer.status;
    let size = wire_size(status);
    assert!(
        size <= MAX_ERROR_BYTES,
        "{}: an error of {size} bytes on the wire: {status:?}",
        method.path
    );
    match status.code() {
        Code::Unavailable if status.message() == STORE_NOT_OPEN => Verdict::Accepted,
        Code::InvalidArgument => match reason(status).as_deref() {
            Some(MALFORMED_REQUEST) => Verdict::Malformed,
            Some("INVALID_ARGUMENT") => {
                let fields = violated_fields(status);
                assert!(
                    !fields.is_empty(),
                    "{}: INVALID_ARGUMENT naming no field: {status:?}",
                    method.path
                );
                Verdict::Invalid(fields)
            }
            other => panic!(
                "{}: INVALID_ARGUMENT with reason {other:?}: {status:?}",
                method.path
            ),
        },
        Code::ResourceExhausted if reason(status).as_deref() == Some("REQUEST_TOO_LARGE") => {
            Verdict::TooLarge
        }
        Code::Ok if method.answers == Answers::Records => records(method, answer),
        _ => panic!("{}: answered {status:?}", method.path),
    }
}

/// An OK answer to a batch: each record refused as invalid or accepted,
/// none charged (there is no store to charge).
fn records(method: &Method, answer: &Answer) -> Verdict {
    let [message] = &answer.messages[..] else {
        panic!(
            "{}: OK with {} messages",
            method.path,
            answer.messages.len()
        );
    };
    // ReportUsageStreamResponse is the same message under another name.
    let response = pb::ReportUsageResponse::decode(message.clone())
        .unwrap_or_else(|e| panic!("{}: an answer that does not decode: {e}", method.path));
    assert_eq!(
        response.charged, 0,
        "{}: charged without a store",
        method.path
    );
    assert_eq!(
        usize::try_from(response.refused).ok(),
        Some(response.results.len()),
        "{}: refused counts other than the results",
        method.path
    );
    let (mut invalid, mut accepted) = (0, 0);
    for result in &response.results {
        use pb::usage_record_result::Outcome;
        let Some(Outcome::Refused(error)) = &result.outcome else {
            panic!("{}: a record answered {result:?}", method.path);
        };
        match (Code::from(error.code), error.reason.as_str()) {
            (Code::InvalidArgument, "INVALID_ARGUMENT") if !error.fields.is_empty() => invalid += 1,
            (Code::Unavailable, _) if error.message == STORE_NOT_OPEN => accepted += 1,
            _ => panic!("{}: a record refused with {error:?}", method.path),
        }
    }
    Verdict::Records { invalid, accepted }
}

fn reason(status: &tonic::Status) -> Option<String> {
    let info = status.get_details_error_info()?;
    assert_eq!(info.domain, ERROR_DOMAIN, "{status:?}");
    Some(info.reason)
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The most an error may take on the wire (`tally_server`'s
/// `MAX_ERROR_BYTES`, docs/security.md: 8 KiB).
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// How many bytes `status` takes on the wire: its `grpc-message` and
/// `grpc-status-details-bin` values, as tonic sends them.
fn wire_size(status: &tonic::Status) -> usize {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        return usize::MAX;
    }
    ["grpc-message", "grpc-status-details-bin"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .map(http::HeaderValue::len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debit() -> &'static Method {
        &METHODS[usize::from(method_index("/tally.v1.MeteringService/Debit"))]
    }

    fn answer(status: tonic::Status) -> Answer {
        Answer {
            status,
            messages: Vec::new(),
        }
    }

    #[test]
    #[should_panic(expected = "Debit: answered")]
    fn internal_fails_the_target() {
        verdict(debit(), &answer(tonic::Status::internal("a bug")));
    }

    #[test]
    #[should_panic(expected = "naming no field")]
    fn invalid_argument_without_fields_fails_the_target() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "bad",
            tonic_types::ErrorDetails::with_error_info(
                "INVALID_ARGUMENT",
                ERROR_DOMAIN,
                std::collections::HashMap::new(),
            ),
        );
        verdict(debit(), &answer(status));
    }

    #[test]
    #[should_panic(expected = "bytes on the wire")]
    fn an_error_past_8_kib_fails_the_target() {
        let status = tally_api::codec::malformed_request("x".repeat(MAX_ERROR_BYTES));
        verdict(debit(), &answer(status));
    }

    #[test]
    #[should_panic(expected = "Debit: answered Status { code: Ok")]
    fn ok_to_a_call_that_is_not_a_batch_fails_the_target() {
        verdict(debit(), &answer(tonic::Status::ok("")));
    }

    #[test]
    fn what_a_caller_may_get_passes() {
        assert_eq!(
            verdict(debit(), &answer(tonic::Status::unavailable(STORE_NOT_OPEN))),
            Verdict::Accepted
        );
        assert_eq!(
            verdict(
                debit(),
                &answer(tally_api::codec::malformed_request("bad wire type"))
            ),
            Verdict::Malformed
        );
        // UNAVAILABLE for any other reason is not "accepted".
        let other = std::panic::catch_unwind(|| {
            verdict(
                debit(),
                &answer(tonic::Status::unavailable("shutting down")),
            )
        });
        assert!(other.is_err());
    }
}
