use crate::{LogPosition, StoreError};

/// An event as the engine hands it to the store, before it has a version or
/// a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    /// Opaque to the store (JSON in practice): the store never looks inside,
    /// so the domain can evolve its events without a schema migration here.
    pub payload: Vec<u8>,
    /// Wall-clock time chosen by the caller, so replays and tests with an
    /// injected clock see the same timestamps the engine decided with.
    pub recorded_at_ms: i64,
}

/// An event as stored: where it sits in its stream and in the global log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream_id: String,
    /// 1-based and contiguous within the stream.
    pub version: u64,
    pub position: LogPosition,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub recorded_at_ms: i64,
}

/// The remembered outcome of an idempotent mutation. It is written in the
/// same transaction as the events it caused, so a retry can never find the
/// effects without the record or the record without the effects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: String,
    /// Identifies the request that used `key`, so a retry with a different
    /// request can be refused instead of answered with someone else's result.
    pub fingerprint: Vec<u8>,
    /// The first answer, replayed verbatim to retries.
    pub response: Vec<u8>,
}

/// A hold (reservation) that has ended, remembered in the store rather than
/// in the account's state, so that state does not grow with traffic while a
/// second commit of the same hold still gets a precise answer. Opaque to the
/// store, like events; keyed by `(stream_id, hold_id)` and overwritten by a
/// later record for the same hold (an expired hold that a late commit
/// settles).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    pub hold_id: String,
    pub payload: Vec<u8>,
}

/// A charge (a debit or commit, named by the idempotency key it was made
/// with) that refunds have drawn on: what the refunds need of it, kept in
/// the store rather than the account's state for the same reason as
/// [`HoldRecord`]. Opaque to the store; keyed by `(stream_id, charge_key)`
/// and overwritten by each later refund of the same charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRecord {
    pub charge_key: String,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    pub stream_id: String,
    /// Version the stream must be at now: 0 means the stream must not exist
    /// yet.
    pub expected_version: u64,
    /// Must be non-empty: an append without events would have no position to
    /// return as a consistency token.
    pub events: Vec<NewEvent>,
    /// Written in the same transaction as `events`; unique per
    /// `(stream_id, key)`.
    pub idempotency: Vec<IdempotencyRecord>,
    /// Holds that ended, written (or overwritten) in the same transaction.
    pub holds: Vec<HoldRecord>,
    /// Charges refunded, written (or overwritten) in the same transaction.
    pub charges: Vec<ChargeRecord>,
    /// The stream's wakeup once these events are in (see [`Wakeup`]):
    /// `Some(at_ms)` replaces it, `None` clears it. Written in the same
    /// transaction, so the wakeup always belongs to the version the caller
    /// decided at, and a scheduler never acts on one the append superseded.
    pub next_wakeup_ms: Option<i64>,
}

impl AppendRequest {
    /// An append of `events` alone: no idempotency records, holds or
    /// charges, and no wakeup.
    pub fn new(stream_id: impl Into<String>, expected_version: u64, events: Vec<NewEvent>) -> Self {
        Self {
            stream_id: stream_id.into(),
            expected_version,
            events,
            idempotency: Vec::new(),
            holds: Vec::new(),
            charges: Vec::new(),
            next_wakeup_ms: None,
        }
    }

    /// Checks what every backend must refuse with
    /// [`StoreError::InvalidAppend`] before touching storage, so that the
    /// backends cannot drift apart on what a valid request is.
    ///
    /// Versions are capped at `i64::MAX` because both SQLite and PostgreSQL
    /// store them as signed 64-bit integers.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.stream_id.is_empty() {
            return Err(StoreError::InvalidAppend("stream_id is empty".into()));
        }
        if self.events.is_empty() {
            return Err(StoreError::InvalidAppend(format!(
                "append to stream {:?} has no events",
                self.stream_id
            )));
        }
        let fits = u64::try_from(self.events.len())
            .ok()
            .and_then(|n| self.expected_version.checked_add(n))
            .is_some_and(|last| last <= i64::MAX as u64);
        if !fits {
            return Err(StoreError::InvalidAppend(format!(
                "appending {} events at version {} to stream {:?} overflows the version range",
                self.events.len(),
                self.expected_version,
                self.stream_id
            )));
        }
        Ok(())
    }
}

/// What a successful append wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// `expected_version + 1`.
    pub first_version: u64,
    /// `expected_version + events.len()`: the stream's new version.
    pub last_version: u64,
    /// One per event, in request order and strictly increasing; the last one
    /// is the caller's read-your-writes token.
    pub positions: Vec<LogPosition>,
}

/// A stream with time-due work: the next instant (milliseconds since the
/// Unix epoch, on the caller's clock) at which its state changes without a
/// command, such as a cycle reset or an expiry.
///
/// It lets a scheduler find such streams while they are idle and nobody holds
/// them in memory. The store never interprets `at_ms`; it only keeps it with
/// the stream version it was set at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wakeup {
    pub stream_id: String,
    pub at_ms: i64,
    /// The stream version at which `at_ms` was set: computed from that
    /// version's state, and at most confirmed unchanged by appends since.
    /// The stream may have moved on; a scheduler that loads a later version
    /// should compute the wakeup again rather than trust this one.
    pub version: u64,
}

/// A cached fold of a stream up to and including `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(stream_id: &str, expected_version: u64, events: usize) -> AppendRequest {
        let event = NewEvent {
            event_type: "t".into(),
            payload: vec![],
            recorded_at_ms: 0,
        };
        AppendRequest::new(stream_id, expected_version, vec![event; events])
    }

    #[test]
    fn accepts_a_plain_append() {
        assert!(request("a", 0, 1).validate().is_ok());
        assert!(request("a", i64::MAX as u64 - 1, 1).validate().is_ok());
    }

    #[test]
    fn refuses_empty_stream_id_empty_events_and_version_overflow() {
        for bad in [
            request("", 0, 1),
            request("a", 0, 0),
            request("a", i64::MAX as u64, 1),
            request("a", u64::MAX, 1),
        ] {
            assert!(
                matches!(bad.validate(), Err(StoreError::InvalidAppend(_))),
                "{bad:?} accepted"
            );
        }
    }
}
