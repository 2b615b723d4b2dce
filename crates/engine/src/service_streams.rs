//! The engine's own streams beside the accounts': the catalog and the test
//! clocks. Each is named with a leading `$` (no account id starts with
//! one), holds JSON events, and is folded into a value every replica keeps
//! in memory and brings up to date by reading what follows the version it
//! has.

use serde::de::DeserializeOwned;
use tally_store::EventStore;

use crate::EngineError;

/// Applies the events of `stream` after `version`, in order, with `apply`,
/// and returns the version of the last one (`version` if there are none).
/// `what` names the stream's events in errors.
pub(crate) async fn fold_after<S: EventStore, E: DeserializeOwned>(
    store: &S,
    stream: &str,
    mut version: u64,
    what: &str,
    mut apply: impl FnMut(E),
) -> Result<u64, EngineError> {
    loop {
        let events = store.read_stream(stream, version + 1, 256).await?;
        if events.is_empty() {
            return Ok(version);
        }
        for recorded in events {
            let event: E = serde_json::from_slice(&recorded.payload).map_err(|e| {
                EngineError::Corrupt(format!(
                    "{what} event {} does not decode: {e}",
                    recorded.version
                ))
            })?;
            apply(event);
            version = recorded.version;
        }
    }
}
