//! The one place where errors become gRPC statuses, each with a
//! machine-readable `google.rpc.ErrorInfo` reason (and field violations
//! for bad input).

use std::collections::HashMap;

use tally_auth::{Denied, Unauthenticated};
use tally_core::Rejection;
use tally_engine::EngineError;
use tally_projections::ProjectionError;
use tally_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Tally error (the API's: its servers'
/// codec uses it too).
pub use tally_api::ERROR_DOMAIN;

/// Bad input: which fields, and what is wrong with each.
#[derive(Debug, Default)]
pub struct InvalidArgument {
    pub violations: Vec<(String, String)>,
}

impl InvalidArgument {
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        InvalidArgument {
            violations: vec![(field.into(), description.into())],
        }
    }
}

/// The most an error may take on the wire: its `grpc-message` and
/// `grpc-status-details-bin` together. Both travel as HTTP/2 headers (or
/// trailers), and 8 KiB is the smallest header list many clients and
/// proxies accept; past it the caller sees a broken stream, not the error.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// Field violations listed in one error; the message says how many more.
const MAX_VIOLATIONS: usize = 20;
/// The longest field name, description or metadata value shown.
const MAX_FIELD_BYTES: usize = 128;
const MAX_TEXT_BYTES: usize = 256;
/// The longest message shown.
const MAX_MESSAGE_BYTES: usize = 1024;

impl From<InvalidArgument> for Status {
    /// Every violation is named, up to [`MAX_VIOLATIONS`] and as many as
    /// fit in [`MAX_ERROR_BYTES`]; the message says how many more there
    /// were (and `ErrorInfo.metadata.violations` how many in all). Text a
    /// caller sent may be echoed in a description (a TOML document's bad
    /// line), so each is cut to a bounded length.
    fn from(invalid: InvalidArgument) -> Status {
        let violations: Vec<(String, String)> = invalid
            .violations
            .iter()
            .map(|(field, description)| {
                (
                    elide(field, MAX_FIELD_BYTES),
                    elide(description, MAX_TEXT_BYTES),
                )
            })
            .collect();
        let mut shown = violations.len().min(MAX_VIOLATIONS);
        loop {
            let status = invalid_status(&violations[..shown], violations.len());
            if shown <= 1 || wire_size(&status) <= MAX_ERROR_BYTES {
                return status;
            }
            shown -= 1;
        }
    }
}

/// INVALID_ARGUMENT naming `shown` of `total` violations.
fn invalid_status(shown: &[(String, String)], total: usize) -> Status {
    let more = match total - shown.len() {
        0 => String::new(),
        n => format!("; and {n} more"),
    };
    let listed = shown
        .iter()
        .map(|(field, description)| format!("{field}: {description}"))
        .collect::<Vec<_>>()
        .join("; ");
    let message = elide(&listed, MAX_MESSAGE_BYTES - more.len()) + &more;
    let mut details = ErrorDetails::with_bad_request(
        shown
            .iter()
            .map(|(field, description)| tonic_types::FieldViolation::new(field, description))
            .collect::<Vec<_>>(),
    );
    details.set_error_info(
        "INVALID_ARGUMENT",
        ERROR_DOMAIN,
        HashMap::from([("violations".to_owned(), total.to_string())]),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// How many bytes `status` takes on the wire (see [`MAX_ERROR_BYTES`]).
pub fn wire_size(status: &Status) -> usize {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        return usize::MAX;
    }
    [Status::GRPC_MESSAGE, Status::GRPC_STATUS_DETAILS]
        .iter()
        .filter_map(|name| headers.get(name))
        .map(http::HeaderValue::len)
        .sum()
}

/// `text` in at most `max` bytes: its start and its end with ` … ` between,
/// so a long echoed document keeps both what came first and the parser's
/// last word (what it expected).
fn elide(text: &str, max: usize) -> String {
    const GAP: &str = " … ";
    if text.len() <= max {
        return text.to_owned();
    }
    let room = max.saturating_sub(GAP.len());
    let tail_bytes = room / 3;
    let mut head = room - tail_bytes;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - tail_bytes;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{GAP}{}", &text[..head], &text[tail..])
}

/// A request whose body is not a valid message: the caller's mistake, so
/// INVALID_ARGUMENT (reason `MALFORMED_REQUEST`), never INTERNAL, which
/// pages an operator. The servers' codec (`tally_api::codec`) answers so
/// when the message does not decode; this is the same answer for what
/// tonic finds wrong around it.
pub fn malformed_request(why: impl std::fmt::Display) -> Status {
    tally_api::codec::malformed_request(why)
}

/// What tonic said about a request it could not read, as Tally says it.
/// tonic answers a unary call's framing errors itself, before any handler
/// (`crate::inbound` rewrites those answers); in a client stream they
/// surface where the handler reads the next message. tonic's framing
/// errors are told apart by its messages (it has no other way to say
/// them); anything else passes unchanged.
pub fn inbound(status: Status) -> Status {
    inbound_rewrite(&status).unwrap_or(status)
}

/// [`inbound`]'s answer when it differs from tonic's.
pub fn inbound_rewrite(status: &Status) -> Option<Status> {
    match (status.code(), status.message()) {
        // The body ended inside a message, or held none, or a message's
        // compressed flag was neither 0 nor 1, or 1 without an encoding.
        (Code::Internal, message)
            if message == "Unexpected EOF decoding stream."
                || message == "Missing request message."
                || message.starts_with("protocol error: received message with") =>
        {
            Some(malformed_request(message))
        }
        // tonic reads the length before the message, so nothing of a
        // message over the limit was buffered.
        (Code::OutOfRange, message)
            if message.starts_with("Error, decoded message length too large") =>
        {
            Some(request_too_large(message))
        }
        _ => None,
    }
}

/// "Error, decoded message length too large: found N bytes, the limit is:
/// M bytes" as RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE`, with both numbers.
fn request_too_large(said: &str) -> Status {
    let numbers: Vec<&str> = said
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .collect();
    let (size, limit) = match numbers[..] {
        [size, limit] => (size.to_owned(), limit.to_owned()),
        _ => (String::new(), String::new()),
    };
    status(
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
        format!("the request message is {size} bytes; a message may be at most {limit}"),
        &[("size_bytes", size), ("limit_bytes", limit)],
    )
}

/// A failed record of a batch call (`ReportUsage`): what the status of a
/// call with it alone would have said.
pub fn record_error(status: &Status) -> tally_api::v1::RecordError {
    let details = status.get_error_details();
    tally_api::v1::RecordError {
        code: status.code() as i32,
        reason: details
            .error_info()
            .map(|info| info.reason.clone())
            .unwrap_or_else(|| format!("{:?}", status.code()).to_uppercase()),
        message: status.message().to_owned(),
        fields: details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| v.field.clone())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// An error with its reason. Messages and metadata may carry what a caller
/// sent (an idempotency key, an action's name), so each is bounded: at
/// most a few metadata values of [`MAX_TEXT_BYTES`] and a message of
/// [`MAX_MESSAGE_BYTES`] fit in [`MAX_ERROR_BYTES`] however they encode.
fn status(code: Code, reason: &str, message: String, metadata: &[(&str, String)]) -> Status {
    let metadata = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), elide(v, MAX_TEXT_BYTES)))
        .collect::<HashMap<_, _>>();
    Status::with_error_details(
        code,
        elide(&message, MAX_MESSAGE_BYTES),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

impl From<super::ServiceError> for Status {
    fn from(error: super::ServiceError) -> Status {
        match error {
            super::ServiceError::Invalid(invalid) => invalid.into(),
            super::ServiceError::Denied(denied) => permission_denied(&denied),
            super::ServiceError::Engine(e) => engine_status(e),
            super::ServiceError::Projection(e) => projection_status(e),
            e @ super::ServiceError::UnknownVersion { document, version } => status(
                Code::NotFound,
                "UNKNOWN_VERSION",
                e.to_string(),
                &[
                    ("document", document.into()),
                    ("version", version.to_string()),
                ],
            ),
            super::ServiceError::Internal(message) => {
                status(Code::Internal, "INTERNAL", message, &[])
            }
        }
    }
}

/// How long an overloaded server asks callers to wait before a retry.
const OVERLOAD_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Refused at once for load, with a retry hint (`google.rpc.RetryInfo`):
/// nothing was decided, so a retry with the same idempotency key is safe.
pub fn overloaded(reason: &str, message: String, metadata: &[(&str, String)]) -> Status {
    let metadata = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect::<HashMap<_, _>>();
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    details.set_retry_info(Some(OVERLOAD_RETRY));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// A call without a valid API key: it reached no handler.
pub fn unauthenticated(why: &Unauthenticated) -> Status {
    status(Code::Unauthenticated, why.reason(), why.to_string(), &[])
}

/// A valid key that may not do this: the wrong scope, or an account
/// outside the key's.
pub fn permission_denied(why: &Denied) -> Status {
    let detail = match why {
        Denied::Scope { key, scope } => [("key_id", key.clone()), ("scope", scope.to_string())],
        Denied::Account { key, account } => {
            [("key_id", key.clone()), ("account_id", account.clone())]
        }
    };
    status(
        Code::PermissionDenied,
        why.reason(),
        why.to_string(),
        &detail,
    )
}

fn projection_status(error: ProjectionError) -> Status {
    let message = error.to_string();
    match error {
        ProjectionError::Store(store) => store_status(store, message),
        ProjectionError::Corrupt(_) => status(Code::DataLoss, "DATA_CORRUPT", message, &[]),
        ProjectionError::Busy(projection) => status(
            Code::FailedPrecondition,
            "PROJECTION_BUSY",
            message,
            &[("projection", projection.into())],
        ),
        ProjectionError::NotFresh { projection } => status(
            Code::DeadlineExceeded,
            "NOT_FRESH_ENOUGH",
            message,
            &[("projection", projection.into())],
        ),
    }
}

fn engine_status(error: EngineError) -> Status {
    let message = error.to_string();
    match error {
        EngineError::Rejected(rejection) => rejection_status(rejection, message),
        EngineError::IdempotencyKeyReused { key } => status(
            Code::AlreadyExists,
            "IDEMPOTENCY_KEY_REUSED",
            message,
            &[("idempotency_key", key)],
        ),
        EngineError::Store(store) => store_status(store, message),
        EngineError::Corrupt(_) => status(Code::DataLoss, "DATA_CORRUPT", message, &[]),
        EngineError::Contention { .. } => status(Code::Aborted, "CONTENTION", message, &[]),
        EngineError::ShuttingDown => status(Code::Unavailable, "SHUTTING_DOWN", message, &[]),
        EngineError::AccountOverloaded { account, queued } => overloaded(
            "ACCOUNT_OVERLOADED",
            message,
            &[("account_id", account), ("queued", queued.to_string())],
        ),
    }
}

fn rejection_status(rejection: Rejection, message: String) -> Status {
    // The reason is the domain's (also what metrics count refusals by).
    let reason = rejection.reason();
    match rejection {
        Rejection::UnknownAccount => status(Code::NotFound, reason, message, &[]),
        Rejection::AccountExists => status(Code::AlreadyExists, reason, message, &[]),
        Rejection::InsufficientCredits { available, needed } => status(
            Code::FailedPrecondition,
            reason,
            message,
            &[
                ("available_millicredits", available.get().to_string()),
                ("needed_millicredits", needed.get().to_string()),
            ],
        ),
        Rejection::SpendingCapReached {
            cap,
            used,
            held,
            needed,
        } => status(
            Code::FailedPrecondition,
            reason,
            message,
            &[
                ("spending_cap_millicredits", cap.get().to_string()),
                ("used_this_cycle_millicredits", used.get().to_string()),
                ("held_millicredits", held.get().to_string()),
                ("needed_millicredits", needed.get().to_string()),
            ],
        ),
        Rejection::UnknownPlan { plan } => status(
            Code::NotFound,
            reason,
            message,
            &[("plan", plan.to_string())],
        ),
        Rejection::UnknownPack { pack } => status(
            Code::NotFound,
            reason,
            message,
            &[("pack", pack.to_string())],
        ),
        Rejection::UnknownAction { action } => status(
            Code::NotFound,
            reason,
            message,
            &[("action", action.to_string())],
        ),
        Rejection::ReservationNotFound { id } => status(
            Code::NotFound,
            reason,
            message,
            &[("reservation_id", id.to_string())],
        ),
        Rejection::ReservationExpired { id } => status(
            Code::FailedPrecondition,
            reason,
            message,
            &[("reservation_id", id.to_string())],
        ),
        Rejection::AlreadyResolved { id, resolution } => status(
            Code::FailedPrecondition,
            reason,
            message,
            &[
                ("reservation_id", id.to_string()),
                ("resolution", resolution.as_str().to_owned()),
            ],
        ),
        Rejection::GrantNotFound { id } => status(
            Code::NotFound,
            reason,
            message,
            &[("grant_id", id.to_string())],
        ),
        Rejection::GrantAlreadyVoided { id } => status(
            Code::FailedPrecondition,
            reason,
            message,
            &[("grant_id", id.to_string())],
        ),
        Rejection::ChargeNotFound { key } => status(
            Code::NotFound,
            reason,
            message,
            &[("charge_idempotency_key", key.to_string())],
        ),
        Rejection::RefundExceedsCharge {
            key,
            asked,
            refundable,
        } => status(
            Code::FailedPrecondition,
            reason,
            message,
            &[
                ("charge_idempotency_key", key.to_string()),
                ("asked_millicredits", asked.get().to_string()),
                ("refundable_millicredits", refundable.get().to_string()),
            ],
        ),
        Rejection::InvalidField { field, reason } => InvalidArgument::field(field, reason).into(),
        Rejection::UnknownTestClock { clock } => status(
            Code::NotFound,
            reason,
            message,
            &[("test_clock_id", clock.to_string())],
        ),
        Rejection::TestClockExists { clock } => status(
            Code::AlreadyExists,
            reason,
            message,
            &[("test_clock_id", clock.to_string())],
        ),
        Rejection::TestClockFull { clock, limit } => status(
            Code::FailedPrecondition,
            reason,
            message,
            &[
                ("test_clock_id", clock.to_string()),
                ("limit", limit.to_string()),
            ],
        ),
        Rejection::TestClocksRefused => status(Code::FailedPrecondition, reason, message, &[]),
        Rejection::TotalsOverflow { total } => status(
            Code::OutOfRange,
            reason,
            message,
            &[("total", total.to_string())],
        ),
    }
}

fn store_status(store: StoreError, message: String) -> Status {
    match store {
        StoreError::Unavailable(_) => status(Code::Unavailable, "STORE_UNAVAILABLE", message, &[]),
        StoreError::VersionConflict { .. } | StoreError::DuplicateIdempotencyKey { .. } => {
            status(Code::Aborted, "CONCURRENT_MODIFICATION", message, &[])
        }
        StoreError::InvalidAppend(_) | StoreError::Internal(_) => {
            status(Code::Internal, "STORE_ERROR", message, &[])
        }
        StoreError::Corrupt(_) => status(Code::DataLoss, "DATA_CORRUPT", message, &[]),
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_thousand_long_violations_fit_in_8_kib() {
        // Spaces and non-ASCII text take three bytes each in grpc-message.
        let long = "é ".repeat(100_000);
        let invalid = InvalidArgument {
            violations: (0..1_000)
                .map(|i| (format!("items[{i}].dimensions.units.{long}"), long.clone()))
                .collect(),
        };
        let status = Status::from(invalid);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            wire_size(&status) <= MAX_ERROR_BYTES,
            "{}",
            wire_size(&status)
        );
        let listed = status.get_details_bad_request().expect("BadRequest");
        let shown = listed.field_violations.len();
        assert!((1..=MAX_VIOLATIONS).contains(&shown), "{shown}");
        assert!(listed.field_violations[0].field.starts_with("items[0]."));
        assert!(
            status
                .message()
                .ends_with(&format!("; and {} more", 1_000 - shown)),
            "{}",
            status.message()
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.metadata["violations"], "1000");
    }

    #[test]
    fn twenty_short_violations_are_all_listed_and_more_are_counted() {
        let invalid = |n: usize| InvalidArgument {
            violations: (0..n)
                .map(|i| (format!("items[{i}].action"), "must not be empty".to_owned()))
                .collect(),
        };
        let twenty = Status::from(invalid(20));
        assert_eq!(
            twenty
                .get_details_bad_request()
                .unwrap()
                .field_violations
                .len(),
            20
        );
        assert!(!twenty.message().contains("more"), "{}", twenty.message());
        let many = Status::from(invalid(1_000));
        assert_eq!(
            many.get_details_bad_request()
                .unwrap()
                .field_violations
                .len(),
            20
        );
        assert!(many.message().ends_with("; and 980 more"));
    }

    #[test]
    fn an_echoed_document_keeps_its_start_and_the_parsers_last_word() {
        let line = "x".repeat(1 << 20);
        let error =
            format!("TOML parse error at line 1, column 3\n  |\n1 | {line}\n  |   ^\nexpected `=`");
        let status = Status::from(InvalidArgument::field("toml", error));
        assert!(wire_size(&status) <= MAX_ERROR_BYTES);
        let description =
            &status.get_details_bad_request().unwrap().field_violations[0].description;
        assert!(description.len() <= MAX_TEXT_BYTES, "{}", description.len());
        assert!(description.starts_with("TOML parse error at line 1, column 3"));
        assert!(description.ends_with("expected `=`"), "{description}");
    }

    #[test]
    fn messages_and_metadata_are_bounded() {
        let huge = "ü ".repeat(1 << 20);
        let status = status(
            Code::AlreadyExists,
            "IDEMPOTENCY_KEY_REUSED",
            huge.clone(),
            &[("a", huge.clone()), ("b", huge.clone()), ("c", huge)],
        );
        assert!(
            wire_size(&status) <= MAX_ERROR_BYTES,
            "{}",
            wire_size(&status)
        );
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        let internal = Status::from(crate::ServiceError::Internal("y".repeat(1 << 20)));
        assert!(wire_size(&internal) <= MAX_ERROR_BYTES);
    }

    #[test]
    fn elision_cuts_on_character_boundaries() {
        assert_eq!(elide("short", 10), "short");
        let cut = elide(&"é".repeat(100), 41);
        assert!(cut.len() <= 41, "{}", cut.len());
        assert!(cut.contains(" … "));
        assert!(cut.starts_with('é') && cut.ends_with('é'));
    }

    #[test]
    fn an_overflowing_account_is_out_of_range_with_its_reason() {
        let rejection = Rejection::TotalsOverflow { total: "granted" };
        let message = rejection.to_string();
        let status = rejection_status(rejection, message);
        assert_eq!(status.code(), Code::OutOfRange);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "TOTALS_OVERFLOW");
        assert_eq!(
            info.metadata.get("total").map(String::as_str),
            Some("granted")
        );
    }

    #[test]
    fn a_full_account_is_resource_exhausted_with_a_retry_hint() {
        let status = engine_status(EngineError::AccountOverloaded {
            account: "acme".into(),
            queued: 4_096,
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "ACCOUNT_OVERLOADED");
        assert_eq!(
            info.metadata.get("account_id").map(String::as_str),
            Some("acme")
        );
        assert!(details.retry_info().and_then(|r| r.retry_delay).is_some());
    }
}
