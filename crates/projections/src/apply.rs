//! Folding a batch of log events into the projections' statements.
//!
//! The fold is pure: the events, the folded account states they continue
//! from, and nothing else (no clock, no catalog), so replaying the same log
//! writes the same rows, live or in a rebuild. Each event is decoded and
//! applied to its account once, whatever the number of projections fed;
//! each projection then writes only what the event changed: a ledger entry,
//! a usage sum, the account's balance row and the bucket rows that differ.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use tally_codec::decode_event;
use tally_core::{Account, Bucket, Debit, Event, Millicredits, Refund, Timestamp};
use tally_store::{LogPosition, ProjectionStore, RecordedEvent, SqlStatement, SqlValue};

use crate::reads::UsageGroup;
use crate::tables::{
    ADD_USAGE, ADD_USAGE_UNIT, DELETE_BUCKET, INSERT_LEDGER, UPSERT_BALANCE, UPSERT_BUCKET,
    UPSERT_STATE,
};
use crate::{Projection, ProjectionError, is_account_stream};

/// At most this many accounts per state query (SQLite's parameter limit
/// is far above; this keeps statements reusable in the statement caches).
const STATES_PER_QUERY: usize = 64;

/// Folded account states by account id. Shared (`Arc`) so that the
/// runner can publish them to reads without copying; the fold copies a
/// state before changing it only while a reader still holds it. The ids
/// are shared with the published copy too: one allocation per account
/// for both maps.
pub(crate) type States = HashMap<Arc<str>, Arc<Account>>;

/// The folded states of `accounts` as last saved under `name` (the shared
/// fold's, or a projection catching up alone); accounts never saved are
/// missing.
pub(crate) async fn load_states<P: ProjectionStore>(
    store: &P,
    name: &str,
    accounts: &BTreeSet<String>,
) -> Result<States, ProjectionError> {
    let accounts: Vec<&String> = accounts.iter().collect();
    let mut states = HashMap::with_capacity(accounts.len());
    for chunk in accounts.chunks(STATES_PER_QUERY) {
        let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        let mut params = vec![SqlValue::text(name)];
        params.extend(chunk.iter().map(|a| SqlValue::text(a.as_str())));
        let query = SqlStatement::new(
            format!(
                "SELECT account_id, state FROM projection_account_states \
                 WHERE projection = $1 AND account_id IN ({})",
                placeholders.join(", ")
            ),
            params,
        );
        for row in store.query_projection(vec![query]).await?.remove(0) {
            let (Some(account), Some(state)) = (row[0].as_text(), row[1].as_text()) else {
                return Err(ProjectionError::Corrupt("a state row has NULLs".into()));
            };
            let state: Account = serde_json::from_str(state)
                .map_err(|e| ProjectionError::Corrupt(format!("folded state of {account}: {e}")))?;
            states.insert(Arc::from(account), Arc::new(state));
        }
    }
    Ok(states)
}

/// The accounts a batch touches.
pub(crate) fn accounts_in(events: &[RecordedEvent]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| is_account_stream(&e.stream_id))
        .map(|e| e.stream_id.clone())
        .collect()
}

/// The statements that save the folded states of `accounts` under `name`.
pub(crate) fn state_rows<'a>(
    states: &States,
    accounts: impl IntoIterator<Item = &'a String>,
    name: &str,
) -> Result<Vec<SqlStatement>, ProjectionError> {
    accounts
        .into_iter()
        .filter_map(|account| states.get(account.as_str()).map(|state| (account, state)))
        .map(|(account, state)| {
            Ok(SqlStatement::new(
                UPSERT_STATE.as_str(),
                vec![
                    SqlValue::text(account.as_str()),
                    SqlValue::text(name),
                    int(state.version),
                    SqlValue::text(json(&**state)?),
                ],
            ))
        })
        .collect()
}

/// One batch's fold: the states advance in place, and each projection that
/// has not yet applied an event writes its rows for it.
pub(crate) struct Fold<'a> {
    states: &'a mut States,
    /// The projections fed, and the last position each has applied: an
    /// event at or before it is folded into the state but writes no rows.
    applied: Vec<(Projection, Option<LogPosition>)>,
    /// Accounts whose state this batch changed.
    pub(crate) changed: BTreeSet<String>,
    /// Accounts the balances projection rewrites: their last event, and the
    /// bucket rows as the table holds them before this batch.
    balances: BTreeMap<String, (LogPosition, BTreeMap<String, Vec<SqlValue>>)>,
    /// By account and version: inserted in key order, each index's inserts
    /// land next to the previous one (twice as fast as in log order, which
    /// interleaves accounts).
    ledger: BTreeMap<(String, u64), SqlStatement>,
    usage: BTreeMap<UsageKey, UsageGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct UsageKey {
    account: String,
    day: String,
    cycle_start_ms: i64,
    action: String,
    capability: String,
    member: String,
    model: String,
}

impl<'a> Fold<'a> {
    pub(crate) fn new(
        states: &'a mut States,
        applied: Vec<(Projection, Option<LogPosition>)>,
    ) -> Self {
        Fold {
            states,
            applied,
            changed: BTreeSet::new(),
            balances: BTreeMap::new(),
            ledger: BTreeMap::new(),
            usage: BTreeMap::new(),
        }
    }

    fn writes(&self, projection: Projection, position: LogPosition) -> bool {
        self.applied
            .iter()
            .any(|(p, applied)| *p == projection && *applied < Some(position))
    }

    pub(crate) fn event(&mut self, recorded: &RecordedEvent) -> Result<(), ProjectionError> {
        if !is_account_stream(&recorded.stream_id) {
            return Ok(());
        }
        let position = recorded.position;
        let (balances, ledger, usage) = (
            self.writes(Projection::Balances, position),
            self.writes(Projection::Ledger, position),
            self.writes(Projection::Usage, position),
        );
        let decoded =
            decode_event(recorded).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
        let account = &recorded.stream_id;
        // Copied first only if a reader holds this state (see `States`).
        if !self.states.contains_key(account.as_str()) {
            self.states
                .insert(Arc::from(account.as_str()), Arc::default());
        }
        let state = Arc::make_mut(
            self.states
                .get_mut(account.as_str())
                .expect("inserted above"),
        );
        if state.version + 1 != recorded.version {
            return Err(ProjectionError::Corrupt(format!(
                "the fold has {account} at version {} but the log's next event is version {}",
                state.version, recorded.version
            )));
        }
        let event = &decoded.event;
        let at = event.at();
        if balances {
            match self.balances.get_mut(account) {
                Some((last, _)) => *last = position,
                None => {
                    let before = bucket_rows(account, &state.buckets)?;
                    self.balances.insert(account.clone(), (position, before));
                }
            }
        }
        let before = ledger.then(|| (state.available_before(at), ledger_context(state, event)));
        state.apply(event)?;
        // Ended holds matter to the engine's decisions only (the store
        // keeps them for it); kept here they would grow with traffic and
        // make the cached state differ from the saved one.
        state.resolved.clear();
        self.changed.insert(account.clone());
        if let Some((before, context)) = before {
            let after = state.available_before(at);
            let key = (account.clone(), recorded.version);
            self.ledger.insert(
                key,
                SqlStatement::new(
                    INSERT_LEDGER.as_str(),
                    vec![
                        SqlValue::text(account.as_str()),
                        int(recorded.version),
                        int(position.tx),
                        int(position.seq),
                        SqlValue::int(at.as_millis()),
                        SqlValue::text(event.type_name()),
                        SqlValue::Text(context.member),
                        SqlValue::Text(context.action),
                        SqlValue::Text(context.model),
                        SqlValue::int(event.amount_moved().get()),
                        SqlValue::int(before.get()),
                        SqlValue::int(after.get()),
                    ],
                ),
            );
        }
        if usage {
            match event {
                Event::CreditsDebited { at, debit } => {
                    let (key, sums) = usage_of(account, state, *at, debit);
                    self.usage.entry(key).or_default().add(&sums);
                }
                Event::CreditsRefunded { at, refund } => {
                    let (key, sums) = refund_usage_of(account, state, *at, refund);
                    self.usage.entry(key).or_default().add(&sums);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The projections' statements for the batch, grouped by statement so
    /// that a backend can run each group as one set-based statement; no
    /// group touches a row twice.
    pub(crate) fn finish(self) -> Result<Vec<SqlStatement>, ProjectionError> {
        let mut statements: Vec<SqlStatement> = self.ledger.into_values().collect();
        let mut units = Vec::new();
        for (key, sums) in self.usage {
            for (unit, amount) in &sums.units {
                units.push(SqlStatement::new(
                    ADD_USAGE_UNIT.as_str(),
                    vec![
                        SqlValue::text(key.account.as_str()),
                        SqlValue::text(key.day.as_str()),
                        SqlValue::int(key.cycle_start_ms),
                        SqlValue::text(key.action.as_str()),
                        SqlValue::text(key.capability.as_str()),
                        SqlValue::text(key.member.as_str()),
                        SqlValue::text(key.model.as_str()),
                        SqlValue::text(unit.as_str()),
                        int(*amount),
                    ],
                ));
            }
            statements.push(SqlStatement::new(
                ADD_USAGE.as_str(),
                vec![
                    SqlValue::text(key.account),
                    SqlValue::text(key.day),
                    SqlValue::int(key.cycle_start_ms),
                    SqlValue::text(key.action),
                    SqlValue::text(key.capability),
                    SqlValue::text(key.member),
                    SqlValue::text(key.model),
                    SqlValue::int(sums.charged.get()),
                    SqlValue::int(sums.overage.get()),
                    int(sums.actions),
                    int(sums.input_tokens),
                    int(sums.output_tokens),
                    int(sums.context_tokens),
                    int(sums.images),
                    int(sums.tool_calls),
                ],
            ));
        }
        statements.append(&mut units);
        let mut balances = Vec::new();
        let mut deletes = Vec::new();
        let mut upserts = Vec::new();
        for (account, (position, before)) in self.balances {
            let state = &self.states[account.as_str()];
            balances.push(balance_row(&account, state, position));
            let after = bucket_rows(&account, &state.buckets)?;
            for grant in before.keys().filter(|grant| !after.contains_key(*grant)) {
                deletes.push(SqlStatement::new(
                    DELETE_BUCKET,
                    vec![
                        SqlValue::text(account.as_str()),
                        SqlValue::text(grant.as_str()),
                    ],
                ));
            }
            for (grant, row) in after {
                if before.get(&grant) != Some(&row) {
                    upserts.push(SqlStatement::new(UPSERT_BUCKET.as_str(), row));
                }
            }
        }
        statements.extend(balances);
        statements.extend(deletes);
        statements.extend(upserts);
        Ok(statements)
    }
}

fn int(value: u64) -> SqlValue {
    SqlValue::int(i64::try_from(value).unwrap_or(i64::MAX))
}

fn json(value: &impl Serialize) -> Result<String, ProjectionError> {
    serde_json::to_string(value).map_err(|e| ProjectionError::Corrupt(format!("encode: {e}")))
}

/// A serde enum's name (`"top_up"`), as stored in text columns.
fn name_of(value: &impl Serialize) -> Result<String, ProjectionError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        other => Err(ProjectionError::Corrupt(format!(
            "not a unit enum: {other:?}"
        ))),
    }
}

fn millis(at: Option<Timestamp>) -> SqlValue {
    SqlValue::Int(at.map(Timestamp::as_millis))
}

/// Who and what an entry concerns. Release, expiry and extension events
/// name only the reservation; the open hold in the state before the event
/// says whose it was, so filtering by member finds them too.
#[derive(Default)]
struct LedgerContext {
    member: Option<String>,
    action: Option<String>,
    model: Option<String>,
}

fn ledger_context(state: &Account, event: &Event) -> LedgerContext {
    match event {
        Event::CreditsDebited { debit, .. } => {
            return LedgerContext {
                member: Some(debit.member.to_string()),
                action: Some(debit.action.to_string()),
                model: debit.model.as_ref().map(ToString::to_string),
            };
        }
        Event::CreditsRefunded { refund, .. } => {
            return LedgerContext {
                member: Some(refund.member.to_string()),
                action: Some(refund.action.to_string()),
                model: refund.model.as_ref().map(ToString::to_string),
            };
        }
        _ => {}
    }
    let reservation = match event {
        Event::CreditsHeld { reservation, .. } => Some(reservation),
        // The hold before the event: extended, released or expired.
        _ => event
            .reservation_id()
            .and_then(|id| state.reservations.get(id)),
    };
    reservation.map_or_else(LedgerContext::default, |r| LedgerContext {
        member: Some(r.member.to_string()),
        action: Some(r.action.to_string()),
        model: r.model.as_ref().map(ToString::to_string),
    })
}

/// The group an action's usage counts in: the capability the rate card
/// filed it under, else the action key up to its first dot (`article` for
/// `article.draft`).
pub(crate) fn capability_of(debit: &Debit) -> String {
    debit
        .action
        .capability(debit.capability.as_deref())
        .to_owned()
}

/// The cycle usage counts in: the current one. A trial has no cycle yet;
/// its usage counts from the opening, as the cap does.
fn cycle_start_of(state: &Account, at: Timestamp) -> Timestamp {
    state
        .cycle
        .map(|c| c.start)
        .or(state.opened_at)
        .unwrap_or(at)
}

/// A refund is negative usage of the charge's action, on the refund's day
/// and in the refund's cycle: reports already read for earlier days stay
/// as they were, and the action's total over any period that contains
/// both is what the customer was finally charged. It is not an action of
/// its own (`actions` is unchanged) and moves no dimensions.
fn refund_usage_of(
    account: &str,
    state: &Account,
    at: Timestamp,
    refund: &Refund,
) -> (UsageKey, UsageGroup) {
    let key = UsageKey {
        account: account.to_owned(),
        day: tally_core::calendar::local(&state.terms.time_zone, at)
            .date()
            .to_string(),
        cycle_start_ms: cycle_start_of(state, at).as_millis(),
        action: refund.action.to_string(),
        capability: refund
            .action
            .capability(refund.capability.as_deref())
            .to_owned(),
        member: refund.member.to_string(),
        model: refund
            .model
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    };
    let sums = UsageGroup {
        charged: -refund.amount,
        ..UsageGroup::default()
    };
    (key, sums)
}

fn usage_of(
    account: &str,
    state: &Account,
    at: Timestamp,
    debit: &Debit,
) -> (UsageKey, UsageGroup) {
    let cycle_start = cycle_start_of(state, at);
    // An action reported after the fact counts on the day it happened; its
    // cycle is the one it was charged in, as for the cap.
    let day = tally_core::calendar::local(&state.terms.time_zone, debit.occurred_at.unwrap_or(at))
        .date()
        .to_string();
    let dimensions = debit.dimensions.clone().unwrap_or_default();
    let key = UsageKey {
        account: account.to_owned(),
        day,
        cycle_start_ms: cycle_start.as_millis(),
        action: debit.action.to_string(),
        capability: capability_of(debit),
        member: debit.member.to_string(),
        model: debit
            .model
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    };
    let sums = UsageGroup {
        key: String::new(),
        charged: debit.charged,
        overage: debit.overage,
        actions: 1,
        input_tokens: dimensions.input_tokens,
        output_tokens: dimensions.output_tokens,
        context_tokens: dimensions.context_tokens,
        images: dimensions.images,
        tool_calls: dimensions.tool_calls,
        units: dimensions
            .units
            .into_iter()
            .map(|(unit, amount)| (String::from(unit), amount))
            .collect(),
    };
    (key, sums)
}

/// The balance row of an account, as of its last event.
fn balance_row(account: &str, state: &Account, position: LogPosition) -> SqlStatement {
    let at = state
        .last_event_at
        .or(state.opened_at)
        .unwrap_or(Timestamp::from_millis(0));
    let view = state.balance_at(at);
    let plan =
        |p: &Option<tally_core::PlanTerms>| SqlValue::Text(p.as_ref().map(|p| p.name.to_string()));
    SqlStatement::new(
        UPSERT_BALANCE.as_str(),
        vec![
            SqlValue::text(account),
            int(state.version),
            int(position.tx),
            int(position.seq),
            millis(state.opened_at),
            plan(&view.terms.plan),
            plan(&view.pending_plan),
            SqlValue::text(view.terms.time_zone.as_str()),
            SqlValue::int(view.available.get()),
            SqlValue::int(view.upcoming.get()),
            SqlValue::int(view.held.get()),
            SqlValue::int(view.overage.get()),
            SqlValue::int(view.totals.granted.get()),
            SqlValue::int(view.totals.consumed.get()),
            SqlValue::int(view.totals.expired.get()),
            SqlValue::int(view.totals.voided.get()),
            int(view.open_reservations as u64),
            SqlValue::int(view.used_in_cycle.get()),
            millis(view.cycle.map(|c| c.start)),
            millis(view.cycle.map(|c| c.end)),
            SqlValue::Int(view.terms.spending_cap.map(Millicredits::get)),
            millis(view.last_event_at),
        ],
    )
}

/// An account's bucket rows by grant, each in the bucket table's columns.
fn bucket_rows(
    account: &str,
    buckets: &[Bucket],
) -> Result<BTreeMap<String, Vec<SqlValue>>, ProjectionError> {
    buckets
        .iter()
        .map(|bucket| {
            Ok((
                bucket.grant_id.to_string(),
                vec![
                    SqlValue::text(account),
                    SqlValue::text(bucket.grant_id.as_str()),
                    SqlValue::text(name_of(&bucket.kind)?),
                    SqlValue::text(name_of(&bucket.source)?),
                    SqlValue::int(i64::from(bucket.priority)),
                    SqlValue::int(bucket.amount.get()),
                    SqlValue::int(bucket.remaining.get()),
                    SqlValue::int(bucket.held.get()),
                    SqlValue::int(bucket.effective_at.as_millis()),
                    millis(bucket.expires_at),
                    SqlValue::text(bucket.reference.as_str()),
                ],
            ))
        })
        .collect()
}
