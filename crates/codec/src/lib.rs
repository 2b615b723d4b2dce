//! How events are stored: JSON, so an operator can read the log with
//! nothing but a SQL client, in an envelope that says who asked for the
//! event and which schema version of its type it was written in:
//!
//! ```json
//! {"idempotency_key": "k-1", "v": 2, "event": {"type": "credits_debited", ...}}
//! ```
//!
//! `v` is left out at version 1. A type's version goes up when a change to
//! it is not additive (a field renamed, reshaped or given a new meaning);
//! reading an older version runs the type's upcasters one version at a
//! time before decoding, so a log written by any earlier build stays
//! readable. Additive changes need no new version: a new field carries a
//! serde default, which is what an old event reads as.
//!
//! `tests/fixtures/` holds a log in the format of each schema generation,
//! replayed by the tests: a change that strands an old log fails them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::{Event, EventKind};
use tally_store::{NewEvent, RecordedEvent};
use thiserror::Error;

/// Why an event could not be stored or read.
#[derive(Debug, Error)]
pub enum CodecError {
    #[error("cannot encode event: {0}")]
    Encode(String),
    #[error("event {version} of {stream_id} does not decode: {reason}")]
    Decode {
        stream_id: String,
        version: u64,
        reason: String,
    },
    /// Written by a newer build: this one cannot know what it means.
    #[error(
        "event {version} of {stream_id}: {event_type} is at schema version {found}, \
         newer than this build reads ({current}); upgrade tallyd"
    )]
    TooNew {
        stream_id: String,
        version: u64,
        event_type: String,
        found: u32,
        current: u32,
    },
}

/// The schema version this build writes for each kind of event.
pub fn schema_version(kind: EventKind) -> u32 {
    match kind {
        EventKind::AccountOpened
        | EventKind::CycleStarted
        | EventKind::DayStarted
        | EventKind::PlanChanged
        | EventKind::SpendingCapSet
        | EventKind::BillingAnchorSet
        | EventKind::GrantTookEffect
        | EventKind::GrantVoided
        | EventKind::CreditsAdjusted
        | EventKind::CreditsHeld
        | EventKind::HoldExtended
        | EventKind::HoldReleased
        | EventKind::HoldExpired
        | EventKind::CreditsDebited
        | EventKind::CreditsRefunded
        | EventKind::OverageRepaid
        | EventKind::BucketExpired
        | EventKind::AlertThresholdsSet
        | EventKind::AlertRaised => 1,
        // 2: `upcoming`, a grant that announces when it takes effect.
        EventKind::CreditsGranted => 2,
    }
}

/// Rewrites an event's JSON from one schema version of its type to the
/// next.
pub type Upcaster = fn(Value) -> Result<Value, String>;

/// The upcaster from `from` to `from + 1` for the type named `event_type`.
/// When a type moves to a new version, its upcaster from the previous one
/// goes here and `schema_version` says the new one.
fn upcaster(event_type: &str, from: u32) -> Option<Upcaster> {
    match (EventKind::from_name(event_type)?, from) {
        (EventKind::CreditsGranted, 1) => Some(grant_took_effect_silently),
        _ => None,
    }
}

/// A grant of version 1 never announced when it took effect: its bucket
/// became spendable at `effective_at` by the clock alone. Said explicitly,
/// so version 2's reading (upcoming until announced) never strands it.
fn grant_took_effect_silently(mut event: Value) -> Result<Value, String> {
    let fields = event
        .as_object_mut()
        .ok_or("a credits_granted event is not an object")?;
    fields.insert("upcoming".into(), Value::Bool(false));
    Ok(event)
}

/// The current version of the type named `event_type`; unknown types are
/// at 1 (their decoding then says what is wrong).
fn current_version(event_type: &str) -> u32 {
    EventKind::from_name(event_type).map_or(1, schema_version)
}

/// An event as stored: the domain event, who asked for it, and its type's
/// schema version when above 1.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "is_first")]
    v: u32,
    event: &'a Event,
}

fn is_first(v: &u32) -> bool {
    *v == 1
}

/// Encodes `event` for the store, with the idempotency key of the request
/// that wrote it (none for events time made due).
pub fn encode_event(event: &Event, idempotency_key: Option<&str>) -> Result<NewEvent, CodecError> {
    let payload = serde_json::to_vec(&Envelope {
        idempotency_key,
        v: schema_version(event.kind()),
        event,
    })
    .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(NewEvent {
        event_type: event.type_name().to_owned(),
        payload,
        recorded_at_ms: event.at().as_millis(),
    })
}

/// A stored event decoded: the event and the idempotency key of the
/// request that wrote it (none for events time made due).
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedEvent {
    pub version: u64,
    pub event: Event,
    pub idempotency_key: Option<String>,
}

/// Decodes a stored event, upcasting it first if an older build wrote it.
pub fn decode_event(recorded: &RecordedEvent) -> Result<DecodedEvent, CodecError> {
    decode_with(recorded, &current_version, &upcaster)
}

/// [`decode_event`] with the version table and upcasters given, so tests
/// can exercise an upcast before any real type needs one.
pub fn decode_with(
    recorded: &RecordedEvent,
    current: &dyn Fn(&str) -> u32,
    upcaster: &dyn Fn(&str, u32) -> Option<Upcaster>,
) -> Result<DecodedEvent, CodecError> {
    let failed = |reason: String| CodecError::Decode {
        stream_id: recorded.stream_id.clone(),
        version: recorded.version,
        reason,
    };
    #[derive(Deserialize)]
    struct Typed {
        #[serde(default)]
        idempotency_key: Option<String>,
        #[serde(default = "first")]
        v: u32,
        event: Event,
    }
    let latest = current(&recorded.event_type);
    if latest == 1 {
        // Nothing to upcast: decode straight into the event, no
        // intermediate tree.
        let typed: Typed =
            serde_json::from_slice(&recorded.payload).map_err(|e| failed(e.to_string()))?;
        if typed.v != 1 {
            return Err(too_new(recorded, typed.v, latest));
        }
        return Ok(DecodedEvent {
            version: recorded.version,
            event: typed.event,
            idempotency_key: typed.idempotency_key,
        });
    }
    #[derive(Deserialize)]
    struct Untyped {
        #[serde(default)]
        idempotency_key: Option<String>,
        #[serde(default = "first")]
        v: u32,
        event: Value,
    }
    let untyped: Untyped =
        serde_json::from_slice(&recorded.payload).map_err(|e| failed(e.to_string()))?;
    if untyped.v > latest {
        return Err(too_new(recorded, untyped.v, latest));
    }
    let mut event = untyped.event;
    for from in untyped.v..latest {
        let step = upcaster(&recorded.event_type, from).ok_or_else(|| {
            failed(format!(
                "no upcaster from version {from} of {}",
                recorded.event_type
            ))
        })?;
        event = step(event).map_err(|e| failed(format!("upcasting from version {from}: {e}")))?;
    }
    Ok(DecodedEvent {
        version: recorded.version,
        event: serde_json::from_value(event).map_err(|e| failed(e.to_string()))?,
        idempotency_key: untyped.idempotency_key,
    })
}

fn first() -> u32 {
    1
}

fn too_new(recorded: &RecordedEvent, found: u32, current: u32) -> CodecError {
    CodecError::TooNew {
        stream_id: recorded.stream_id.clone(),
        version: recorded.version,
        event_type: recorded.event_type.clone(),
        found,
        current,
    }
}
