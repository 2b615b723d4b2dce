//! Folding a batch of log events into one projection's statements.
//!
//! The fold is pure: the events, the folded account states they continue
//! from, and nothing else (no clock, no catalog), so replaying the same log
//! writes the same rows, live or in a rebuild.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use tally_core::{Account, Debit, Event, Millicredits, Timestamp};
use tally_engine::decode_event;
use tally_store::{LogPosition, ProjectionStore, RecordedEvent, SqlStatement, SqlValue};

use crate::reads::UsageGroup;
use crate::tables::{
    ADD_USAGE, DELETE_BUCKETS, INSERT_BUCKET, INSERT_LEDGER, UPSERT_BALANCE, UPSERT_STATE,
};
use crate::{Projection, ProjectionError, is_account_stream};

/// At most this many accounts per state query (SQLite's parameter limit
/// is far above; this keeps statements reusable in the statement caches).
const STATES_PER_QUERY: usize = 64;

/// The folded states of `accounts` as `projection` last committed them;
/// accounts it has never seen are missing.
pub(crate) async fn load_states<P: ProjectionStore>(
    store: &P,
    projection: Projection,
    accounts: &BTreeSet<String>,
) -> Result<HashMap<String, Account>, ProjectionError> {
    let accounts: Vec<&String> = accounts.iter().collect();
    let mut states = HashMap::with_capacity(accounts.len());
    for chunk in accounts.chunks(STATES_PER_QUERY) {
        let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        let mut params = vec![SqlValue::text(projection.name())];
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
            let state: Account = serde_json::from_str(state).map_err(|e| {
                ProjectionError::Corrupt(format!("{projection} state of {account}: {e}"))
            })?;
            states.insert(account.to_owned(), state);
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

/// One batch's fold for one projection.
pub(crate) struct Fold {
    projection: Projection,
    states: HashMap<String, Account>,
    /// Each touched account's last event in the log; sorted, so the
    /// statements come out in the same order every time.
    touched: BTreeMap<String, LogPosition>,
    statements: Vec<SqlStatement>,
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

impl Fold {
    pub(crate) fn new(projection: Projection, states: HashMap<String, Account>) -> Self {
        Fold {
            projection,
            states,
            touched: BTreeMap::new(),
            statements: Vec::new(),
            usage: BTreeMap::new(),
        }
    }

    pub(crate) fn event(&mut self, recorded: &RecordedEvent) -> Result<(), ProjectionError> {
        if !is_account_stream(&recorded.stream_id) {
            return Ok(());
        }
        let decoded =
            decode_event(recorded).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
        let state = self.states.entry(recorded.stream_id.clone()).or_default();
        if state.version + 1 != recorded.version {
            return Err(ProjectionError::Corrupt(format!(
                "{} folded {} to version {} but the log's next event is version {}",
                self.projection, recorded.stream_id, state.version, recorded.version
            )));
        }
        let event = &decoded.event;
        let at = event.at();
        match self.projection {
            Projection::Balances => state.apply(event)?,
            Projection::Ledger => {
                let before = state.available_at(at);
                let context = ledger_context(state, event);
                state.apply(event)?;
                let after = state.available_at(at);
                self.statements.push(SqlStatement::new(
                    INSERT_LEDGER.as_str(),
                    vec![
                        SqlValue::text(recorded.stream_id.as_str()),
                        int(recorded.version),
                        int(recorded.position.tx),
                        int(recorded.position.seq),
                        SqlValue::int(at.as_millis()),
                        SqlValue::text(event.type_name()),
                        SqlValue::Text(context.member),
                        SqlValue::Text(context.action),
                        SqlValue::Text(context.model),
                        SqlValue::int(amount_of(event).get()),
                        SqlValue::int(before.get()),
                        SqlValue::int(after.get()),
                        SqlValue::Text(decoded.idempotency_key.clone()),
                        SqlValue::text(json(event)?),
                    ],
                ));
            }
            Projection::Usage => {
                state.apply(event)?;
                if let Event::CreditsDebited { at, debit } = event {
                    let (key, sums) = usage_of(&recorded.stream_id, state, *at, debit);
                    let total = self.usage.entry(key).or_default();
                    total.add(&sums);
                }
            }
        }
        self.touched
            .insert(recorded.stream_id.clone(), recorded.position);
        Ok(())
    }

    /// The batch's statements: what the events wrote, then each touched
    /// account's folded state (and, for balances, its rows).
    pub(crate) fn finish(mut self) -> Result<Vec<SqlStatement>, ProjectionError> {
        for (key, sums) in std::mem::take(&mut self.usage) {
            self.statements.push(SqlStatement::new(
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
        // Grouped by statement, so that a backend can run each group as one
        // set-based statement: every account's bucket rows are deleted
        // before any is inserted, and no group touches a row twice.
        let mut balances = Vec::new();
        let mut deletes = Vec::new();
        let mut buckets = Vec::new();
        let mut states = Vec::new();
        for (account, position) in &self.touched {
            let state = &self.states[account];
            if self.projection == Projection::Balances {
                let rows = balance_rows(account, state, *position)?;
                balances.push(rows.balance);
                deletes.push(rows.delete_buckets);
                buckets.extend(rows.buckets);
            }
            states.push(SqlStatement::new(
                UPSERT_STATE.as_str(),
                vec![
                    SqlValue::text(account.as_str()),
                    SqlValue::text(self.projection.name()),
                    int(state.version),
                    SqlValue::text(json(state)?),
                ],
            ));
        }
        self.statements.extend(balances);
        self.statements.extend(deletes);
        self.statements.extend(buckets);
        self.statements.extend(states);
        Ok(self.statements)
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
    let reservation = match event {
        Event::CreditsHeld { reservation, .. } => Some(reservation),
        Event::HoldExtended { reservation_id, .. }
        | Event::HoldReleased { reservation_id, .. }
        | Event::HoldExpired { reservation_id, .. } => state.reservations.get(reservation_id),
        Event::CreditsDebited { debit, .. } => {
            return LedgerContext {
                member: Some(debit.member.to_string()),
                action: Some(debit.action.to_string()),
                model: debit.model.as_ref().map(ToString::to_string),
            };
        }
        _ => None,
    };
    reservation.map_or_else(LedgerContext::default, |r| LedgerContext {
        member: Some(r.member.to_string()),
        action: Some(r.action.to_string()),
        model: r.model.as_ref().map(ToString::to_string),
    })
}

/// How many milli-credits an entry moved: what the ledger's amount column
/// shows.
pub(crate) fn amount_of(event: &Event) -> Millicredits {
    match event {
        Event::CreditsGranted { amount, .. }
        | Event::GrantVoided { amount, .. }
        | Event::HoldReleased { amount, .. }
        | Event::HoldExpired { amount, .. }
        | Event::OverageRepaid { amount, .. }
        | Event::BucketExpired { amount, .. } => *amount,
        Event::CreditsHeld { reservation, .. } => reservation.amount,
        Event::CreditsDebited { debit, .. } => debit.charged,
        _ => Millicredits::ZERO,
    }
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

fn usage_of(
    account: &str,
    state: &Account,
    at: Timestamp,
    debit: &Debit,
) -> (UsageKey, UsageGroup) {
    // A trial has no cycle yet; its usage counts from the opening, as the
    // cap does.
    let cycle_start = state
        .cycle
        .map(|c| c.start)
        .or(state.opened_at)
        .unwrap_or(at);
    let day = tally_core::calendar::local(&state.terms.time_zone, at)
        .date()
        .to_string();
    let dimensions = debit.dimensions.unwrap_or_default();
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
    };
    (key, sums)
}

/// What the balances projection writes for one account.
struct BalanceRows {
    balance: SqlStatement,
    delete_buckets: SqlStatement,
    buckets: Vec<SqlStatement>,
}

/// The balance row and bucket rows of an account, as of its last event.
fn balance_rows(
    account: &str,
    state: &Account,
    position: LogPosition,
) -> Result<BalanceRows, ProjectionError> {
    let at = state
        .last_event_at
        .or(state.opened_at)
        .unwrap_or(Timestamp::from_millis(0));
    let view = state.balance_at(at);
    let plan =
        |p: &Option<tally_core::PlanTerms>| SqlValue::Text(p.as_ref().map(|p| p.name.to_string()));
    let balance = SqlStatement::new(
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
    );
    let mut buckets = Vec::with_capacity(view.buckets.len());
    for bucket in &view.buckets {
        buckets.push(SqlStatement::new(
            INSERT_BUCKET.as_str(),
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
        ));
    }
    Ok(BalanceRows {
        balance,
        delete_buckets: SqlStatement::new(DELETE_BUCKETS, vec![SqlValue::text(account)]),
        buckets,
    })
}
