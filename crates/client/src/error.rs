//! The one error type of the client.

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What a call through [`crate::TallyClient`] can fail with.
///
/// A refusal (Tally answered no: not enough credits, a bad field, an
/// unknown account) is kept apart from Tally being unreachable: the first
/// is an answer, retrying it changes nothing; the second says nothing about
/// the account, and the [`crate::Unreachable`] policy decides what happens.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Tally answered and refused the call. `reason` is the
    /// `google.rpc.ErrorInfo` reason (e.g. `INSUFFICIENT_CREDITS`,
    /// `SPENDING_CAP_REACHED`, `INVALID_ARGUMENT`); empty when the status
    /// carried none.
    #[error("refused by Tally: {reason} ({})", status.message())]
    Refused {
        /// The machine-readable reason.
        reason: String,
        /// The status as received, details included.
        status: Box<Status>,
    },
    /// Tally could not be reached or did not answer in time, on every
    /// attempt the retry policy allowed. Whether the last attempt had an
    /// effect is unknown; a retry with the same idempotency key is safe.
    #[error("Tally is unavailable after {attempts} attempt(s): {}", last.message())]
    Unavailable {
        /// How many attempts were made.
        attempts: u32,
        /// The last status seen (UNAVAILABLE, DEADLINE_EXCEEDED,
        /// RESOURCE_EXHAUSTED or ABORTED).
        last: Box<Status>,
    },
    /// Tally is unreachable, the policy is fail open, and this action
    /// would take the account's unreported local usage past its allowance.
    #[error(
        "Tally is unreachable and account {account} has used its local allowance: \
         {pending_millicredits} mc unreported + {needed_millicredits} mc needed > \
         {allowance_millicredits} mc"
    )]
    FailOpenExhausted {
        /// The account.
        account: String,
        /// Usage recorded locally and not yet reported.
        pending_millicredits: i64,
        /// What this action needs.
        needed_millicredits: i64,
        /// The allowance per account.
        allowance_millicredits: i64,
    },
    /// Tally is unreachable, the policy is fail open, but the estimate
    /// could not be priced locally (no amount given and no cached quote),
    /// so the allowance cannot be checked.
    #[error("Tally is unreachable and the estimate for {action} cannot be priced locally")]
    Unpriced {
        /// The action.
        action: String,
    },
    /// The caller's task failed; its hold was released.
    #[error("the task failed: {0}")]
    Task(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),
    /// The API key cannot be sent as a header value.
    #[error("the API key is not a valid header value")]
    InvalidApiKey,
    /// The offline journal cannot be read or written.
    #[error("offline journal {0}")]
    Journal(String),
    /// Tally answered with a message missing a field it always sets.
    #[error("malformed answer from Tally: {0} is missing")]
    Malformed(&'static str),
}

impl ClientError {
    /// A final status (after retries) as an error.
    pub(crate) fn from_status(status: Status, attempts: u32) -> ClientError {
        if is_retryable(&status) {
            return ClientError::Unavailable {
                attempts,
                last: Box::new(status),
            };
        }
        ClientError::Refused {
            reason: reason(&status),
            status: Box::new(status),
        }
    }

    /// The `ErrorInfo` reason when Tally refused the call.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// True when Tally could not be reached (the [`crate::Unreachable`]
    /// policy applies).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }
}

/// Whether a call that failed with `status` is retried: nothing was
/// decided (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED), or we do not know
/// (DEADLINE_EXCEEDED, or the connection broke: tonic reports a
/// connection reset mid-call as UNKNOWN "transport error", a connection
/// closed under a call as CANCELLED, each with the transport error as its
/// source); the same
/// idempotency key makes the retry safe either way.
pub(crate) fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    ) || is_transport_failure(status)
}

/// A status tonic made of a failed connection, not one Tally sent: its
/// source is the transport error.
fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(|source| source.is::<tonic::transport::Error>())
}

/// The `ErrorInfo` reason of a status, or "".
pub(crate) fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}
