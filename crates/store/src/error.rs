/// Why a store call failed.
///
/// The variants separate what a caller can act on: a conflict means "re-read
/// and decide again", a duplicate key means "someone already did this",
/// `Unavailable` means "retry later", and `Corrupt`/`Internal` mean "page
/// someone". Backends map their native errors into these in one place.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id:?} is at version {actual}, not the expected {expected}")]
    VersionConflict {
        stream_id: String,
        expected: u64,
        actual: u64,
    },
    #[error("idempotency key {key:?} already exists in stream {stream_id:?}")]
    DuplicateIdempotencyKey { stream_id: String, key: String },
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    #[error("event store data is corrupt: {0}")]
    Corrupt(String),
    #[error("event store internal error: {0}")]
    Internal(String),
}
