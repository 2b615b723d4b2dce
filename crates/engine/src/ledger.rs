//! The activity ledger: one entry per event of the account, with the
//! available balance before and after it.
//!
//! Read straight from the account's stream, replaying it to compute the
//! balances. That is exact but linear in the account's history; the
//! ledger projection (a materialised view tailing the global log) replaces
//! it for long-lived accounts.

use tally_core::{
    Account, AccountId, ActionKey, Event, MemberId, Millicredits, Rejection, Timestamp,
};
use tally_store::EventStore;

use crate::{Engine, EngineError, codec};

#[derive(Clone, Debug, Default)]
pub struct LedgerQuery {
    pub member: Option<MemberId>,
    pub action: Option<ActionKey>,
    /// Event type names (see `Event::type_name`); empty means all.
    pub types: Vec<&'static str>,
    /// At or after.
    pub start: Option<Timestamp>,
    /// Before.
    pub end: Option<Timestamp>,
    /// Continue after this stream version (0 for the first page).
    pub after_version: u64,
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub version: u64,
    pub event: Event,
    pub idempotency_key: Option<String>,
    pub available_before: Millicredits,
    pub available_after: Millicredits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntry>,
    /// The version to continue after, when more entries match.
    pub next_after_version: Option<u64>,
}

const READ_PAGE: usize = 1_000;

impl<S: EventStore> Engine<S> {
    #[tracing::instrument(skip(self, query))]
    pub async fn ledger(
        &self,
        account: &AccountId,
        query: LedgerQuery,
    ) -> Result<LedgerPage, EngineError> {
        let mut state = Account::default();
        let mut entries = Vec::new();
        let mut next_after_version = None;
        'pages: loop {
            let page = self
                .store()
                .read_stream(account.as_str(), state.version + 1, READ_PAGE)
                .await?;
            for recorded in &page {
                let decoded = codec::decode_event(recorded)?;
                let at = decoded.event.at();
                let available_before = state.available_at(at);
                state.apply(&decoded.event)?;
                if decoded.version <= query.after_version || !matches(&query, &decoded.event) {
                    continue;
                }
                if entries.len() == query.limit {
                    next_after_version = entries.last().map(|e: &LedgerEntry| e.version);
                    break 'pages;
                }
                entries.push(LedgerEntry {
                    version: decoded.version,
                    available_after: state.available_at(at),
                    available_before,
                    event: decoded.event,
                    idempotency_key: decoded.idempotency_key,
                });
            }
            if page.len() < READ_PAGE {
                break;
            }
        }
        if !state.is_open() {
            return Err(Rejection::UnknownAccount.into());
        }
        Ok(LedgerPage {
            entries,
            next_after_version,
        })
    }
}

fn matches(query: &LedgerQuery, event: &Event) -> bool {
    let at = event.at();
    if query.start.is_some_and(|start| at < start) || query.end.is_some_and(|end| at >= end) {
        return false;
    }
    if !query.types.is_empty() && !query.types.contains(&event.type_name()) {
        return false;
    }
    if query.member.is_none() && query.action.is_none() {
        return true;
    }
    let (member, action) = match event {
        Event::CreditsHeld { reservation, .. } => (&reservation.member, &reservation.action),
        Event::CreditsDebited { debit, .. } => (&debit.member, &debit.action),
        _ => return false,
    };
    query.member.as_ref().is_none_or(|m| m == member)
        && query.action.as_ref().is_none_or(|a| a == action)
}
