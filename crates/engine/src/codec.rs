//! How events and answers are stored: JSON, so an operator can read the
//! log with nothing but a SQL client.

use serde::{Deserialize, Serialize};
use tally_core::{Account, BalanceView, Event, Millicredits, Outcome, ResolvedReservation};
use tally_store::{HoldRecord, NewEvent, RecordedEvent};

use crate::EngineError;

/// An event as stored: the domain event plus who asked for it.
#[derive(Serialize, Deserialize)]
struct StoredEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    idempotency_key: Option<&'a str>,
    event: std::borrow::Cow<'a, Event>,
}

pub(crate) fn encode_event(
    event: &Event,
    idempotency_key: Option<&str>,
) -> Result<NewEvent, EngineError> {
    let payload = serde_json::to_vec(&StoredEvent {
        idempotency_key,
        event: std::borrow::Cow::Borrowed(event),
    })
    .map_err(|e| EngineError::Corrupt(format!("cannot encode event: {e}")))?;
    Ok(NewEvent {
        event_type: event.type_name().to_owned(),
        payload,
        recorded_at_ms: event.at().as_millis(),
    })
}

/// A stored event decoded: the event and the idempotency key of the
/// request that wrote it (none for events time made due).
pub struct DecodedEvent {
    pub version: u64,
    pub event: Event,
    pub idempotency_key: Option<String>,
}

pub fn decode_event(recorded: &RecordedEvent) -> Result<DecodedEvent, EngineError> {
    #[derive(Deserialize)]
    struct Owned {
        #[serde(default)]
        idempotency_key: Option<String>,
        event: Event,
    }
    let owned: Owned = serde_json::from_slice(&recorded.payload).map_err(|e| {
        EngineError::Corrupt(format!(
            "event {} of {} does not decode: {e}",
            recorded.version, recorded.stream_id
        ))
    })?;
    Ok(DecodedEvent {
        version: recorded.version,
        event: owned.event,
        idempotency_key: owned.idempotency_key,
    })
}

/// The answer to a mutation, stored with its idempotency key so a retry
/// gets exactly the first answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReply {
    pub outcome: Outcome,
    /// Credits available right after the command.
    pub available: Millicredits,
    /// The full balance, for the commands whose answer shows it.
    pub balance: Option<BalanceView>,
    /// Stream version of the command's last event; the global position is
    /// looked up from it, since it is only known once the append commits.
    pub last_version: u64,
}

pub(crate) fn encode_reply(reply: &StoredReply) -> Result<Vec<u8>, EngineError> {
    serde_json::to_vec(reply).map_err(|e| EngineError::Corrupt(format!("cannot encode reply: {e}")))
}

pub(crate) fn decode_reply(bytes: &[u8]) -> Result<StoredReply, EngineError> {
    serde_json::from_slice(bytes)
        .map_err(|e| EngineError::Corrupt(format!("stored reply does not decode: {e}")))
}

/// Snapshots carry a format number: one that no longer decodes is ignored
/// and the account is replayed from its log instead.
const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SnapshotPayload<'a> {
    format: u32,
    account: std::borrow::Cow<'a, Account>,
}

pub(crate) fn encode_snapshot(account: &Account) -> Result<Vec<u8>, EngineError> {
    serde_json::to_vec(&SnapshotPayload {
        format: SNAPSHOT_FORMAT,
        account: std::borrow::Cow::Borrowed(account),
    })
    .map_err(|e| EngineError::Corrupt(format!("cannot encode snapshot: {e}")))
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Option<Account> {
    let payload: SnapshotPayload<'static> = serde_json::from_slice(bytes).ok()?;
    (payload.format == SNAPSHOT_FORMAT).then(|| payload.account.into_owned())
}

/// A resolved hold as the store keeps it (`resolved_holds`), in JSON like
/// events, so it can be read with nothing but a SQL client.
pub(crate) fn encode_hold(hold: &ResolvedReservation) -> Result<HoldRecord, EngineError> {
    Ok(HoldRecord {
        hold_id: hold.reservation.id.to_string(),
        payload: serde_json::to_vec(hold)
            .map_err(|e| EngineError::Corrupt(format!("cannot encode hold: {e}")))?,
    })
}

pub(crate) fn decode_hold(record: &HoldRecord) -> Result<ResolvedReservation, EngineError> {
    serde_json::from_slice(&record.payload).map_err(|e| {
        EngineError::Corrupt(format!(
            "stored hold {} does not decode: {e}",
            record.hold_id
        ))
    })
}
