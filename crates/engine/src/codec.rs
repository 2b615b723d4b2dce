//! How answers, snapshots, resolved holds and refunded charges are stored: JSON, so an
//! operator can read them with nothing but a SQL client. Events are
//! `tally-codec`'s.

use serde::{Deserialize, Serialize};
use tally_codec::DecodedEvent;
use tally_core::{
    Account, BalanceView, Charge, Event, IdempotencyKey, Millicredits, Outcome,
    ResolvedReservation, Timestamp,
};
use tally_store::{ChargeRecord, HoldRecord, NewEvent, RecordedEvent};

use crate::EngineError;

/// Encodes an event for the store (see `tally-codec`).
pub(crate) fn encode_event(
    event: &Event,
    idempotency_key: Option<&str>,
) -> Result<NewEvent, EngineError> {
    tally_codec::encode_event(event, idempotency_key)
        .map_err(|e| EngineError::Corrupt(e.to_string()))
}

/// Decodes a stored event, upcasting an older schema version (see
/// `tally-codec`).
pub fn decode_event(recorded: &RecordedEvent) -> Result<DecodedEvent, EngineError> {
    tally_codec::decode_event(recorded).map_err(|e| EngineError::Corrupt(e.to_string()))
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
    /// When a charge was made, for a refund of it to know whether it was
    /// this cycle's spending; `None` for other outcomes (and for charges
    /// answered before Tally kept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged_at: Option<Timestamp>,
}

impl StoredReply {
    /// The charge this answer records, for a refund of it: `None` unless
    /// the command charged credits.
    pub(crate) fn charge(&self, key: &IdempotencyKey) -> Option<Charge> {
        match &self.outcome {
            Outcome::Charged { debit } => Some(Charge {
                key: key.clone(),
                charged_at: self.charged_at,
                debit: debit.clone(),
                refunded: Millicredits::ZERO,
            }),
            _ => None,
        }
    }
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

/// A refunded charge as the store keeps it (`refunded_charges`), in JSON.
pub(crate) fn encode_charge(charge: &Charge) -> Result<ChargeRecord, EngineError> {
    Ok(ChargeRecord {
        charge_key: charge.key.to_string(),
        payload: serde_json::to_vec(charge)
            .map_err(|e| EngineError::Corrupt(format!("cannot encode charge: {e}")))?,
    })
}

pub(crate) fn decode_charge(record: &ChargeRecord) -> Result<Charge, EngineError> {
    serde_json::from_slice(&record.payload).map_err(|e| {
        EngineError::Corrupt(format!(
            "stored charge {} does not decode: {e}",
            record.charge_key
        ))
    })
}
