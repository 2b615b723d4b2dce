//! Reading the projections: what `GetBalance`, `ListLedger` and `GetUsage`
//! answer from.

use std::collections::{BTreeMap, HashMap};

use tally_codec::decode_event;
use tally_core::{Account, ActionKey, Event, MemberId, Millicredits, Timestamp};
use tally_store::{EventStore, ProjectionStore, RecordedEvent, SqlRow, SqlStatement, SqlValue};

use crate::ProjectionError;
use crate::tables::{USAGE, USAGE_KEY_COLUMNS};

/// The account as the projections' shared fold last saved it (never behind
/// the balances projection); `None` for an account it has not seen. Advance it to now (`tally_core::advance`) to
/// read a balance with expiries and resets up to now.
pub async fn balance_state<P: ProjectionStore>(
    store: &P,
    account: &str,
) -> Result<Option<Account>, ProjectionError> {
    let rows = store
        .query_projection(vec![SqlStatement::new(
            "SELECT state FROM projection_account_states WHERE account_id = $1 AND projection = $2",
            vec![SqlValue::text(account), SqlValue::text(crate::ACCOUNT_FOLD)],
        )])
        .await?
        .remove(0);
    rows.first()
        .map(|row| {
            let state = row[0]
                .as_text()
                .ok_or_else(|| ProjectionError::Corrupt("a state row has NULLs".into()))?;
            serde_json::from_str(state)
                .map_err(|e| ProjectionError::Corrupt(format!("folded state of {account}: {e}")))
        })
        .transpose()
}

/// Reservations open across all accounts, as of each account's last
/// event (a hold past its TTL counts until the sweeper writes its expiry).
pub async fn open_reservations<P: ProjectionStore>(store: &P) -> Result<u64, ProjectionError> {
    let rows = store
        .query_projection(vec![SqlStatement::new(
            // PostgreSQL sums bigints into numeric: cast back.
            "SELECT CAST(coalesce(sum(open_reservations), 0) AS bigint) FROM account_balances",
            vec![],
        )])
        .await?
        .remove(0);
    let open = rows
        .first()
        .and_then(|row| row[0].as_int())
        .ok_or_else(|| ProjectionError::Corrupt("the open reservations sum is NULL".into()))?;
    Ok(u64::try_from(open).unwrap_or(0))
}

#[derive(Clone, Debug, Default)]
pub struct LedgerQuery {
    pub member: Option<MemberId>,
    pub action: Option<ActionKey>,
    /// Event type names (see `Event::type_name`); empty means all.
    pub kinds: Vec<&'static str>,
    /// At or after.
    pub start: Option<Timestamp>,
    /// Before.
    pub end: Option<Timestamp>,
    /// Continue after this stream version (0 for the first page).
    pub after_version: u64,
    pub limit: usize,
}

/// One entry of the activity ledger: one event of the account.
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

/// A page of the account's ledger, oldest first; `None` when the ledger has
/// no entry of the account at all (an unknown account, or one opened after
/// the projection's checkpoint). The projection keeps what the log does not
/// say (the balance around each event) and the columns the filters walk;
/// the events themselves are read from the log, by version.
pub async fn ledger_page<S: EventStore + ProjectionStore>(
    store: &S,
    account: &str,
    query: &LedgerQuery,
) -> Result<Option<LedgerPage>, ProjectionError> {
    let mut params = vec![
        SqlValue::text(account),
        SqlValue::int(i64::try_from(query.after_version).unwrap_or(i64::MAX)),
    ];
    let mut filters = String::new();
    let mut bind = |filters: &mut String, clause: &str, value: SqlValue| {
        params.push(value);
        filters.push_str(&clause.replace('?', &format!("${}", params.len())));
    };
    if let Some(member) = &query.member {
        bind(
            &mut filters,
            " AND member_id = ?",
            SqlValue::text(member.as_str()),
        );
    }
    if let Some(action) = &query.action {
        bind(
            &mut filters,
            " AND action = ?",
            SqlValue::text(action.as_str()),
        );
    }
    if let Some(start) = query.start {
        bind(
            &mut filters,
            " AND occurred_at_ms >= ?",
            SqlValue::int(start.as_millis()),
        );
    }
    if let Some(end) = query.end {
        bind(
            &mut filters,
            " AND occurred_at_ms < ?",
            SqlValue::int(end.as_millis()),
        );
    }
    if !query.kinds.is_empty() {
        filters.push_str(" AND kind IN (");
        for (i, kind) in query.kinds.iter().enumerate() {
            if i > 0 {
                filters.push_str(", ");
            }
            bind(&mut filters, "?", SqlValue::text(*kind));
        }
        filters.push(')');
    }
    // One more than asked, to know whether another page follows.
    let limit = query.limit.saturating_add(1);
    params.push(SqlValue::int(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT seq, available_before, available_after \
         FROM ledger_entries WHERE account_id = $1 AND seq > $2{filters} \
         ORDER BY seq LIMIT ${}",
        params.len()
    );
    let mut results = store
        .query_projection(vec![
            SqlStatement::new(
                "SELECT seq FROM ledger_entries WHERE account_id = $1 ORDER BY seq LIMIT 1",
                vec![SqlValue::text(account)],
            ),
            SqlStatement::new(sql, params),
        ])
        .await?;
    let rows = results.remove(1);
    if results[0].is_empty() {
        return Ok(None);
    }
    let versions = rows
        .iter()
        .map(|row| {
            let seq = row[0].as_int().ok_or_else(|| corrupt("NULL seq"))?;
            u64::try_from(seq).map_err(|_| corrupt("negative seq"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let events = store.read_versions(account, &versions).await?;
    if events.len() != versions.len() {
        return Err(corrupt(&format!(
            "the log has {} of the {} events the page lists",
            events.len(),
            versions.len()
        )));
    }
    // Both ascend by version, each version once.
    let mut entries = rows
        .iter()
        .zip(&events)
        .map(|(row, recorded)| ledger_entry(row, recorded))
        .collect::<Result<Vec<_>, _>>()?;
    let next_after_version = if entries.len() > query.limit {
        entries.truncate(query.limit);
        entries.last().map(|e| e.version)
    } else {
        None
    };
    Ok(Some(LedgerPage {
        entries,
        next_after_version,
    }))
}

fn corrupt(what: &str) -> ProjectionError {
    ProjectionError::Corrupt(format!("ledger entry: {what}"))
}

fn ledger_entry(row: &SqlRow, recorded: &RecordedEvent) -> Result<LedgerEntry, ProjectionError> {
    let int = |i: usize| row[i].as_int().ok_or_else(|| corrupt("NULL number"));
    let version = u64::try_from(int(0)?).map_err(|_| corrupt("negative seq"))?;
    if recorded.version != version {
        return Err(corrupt(&format!(
            "entry {version} met event {} of the log",
            recorded.version
        )));
    }
    let decoded = decode_event(recorded).map_err(|e| corrupt(&e.to_string()))?;
    Ok(LedgerEntry {
        version,
        event: decoded.event,
        idempotency_key: decoded.idempotency_key,
        available_before: Millicredits::new(int(1)?),
        available_after: Millicredits::new(int(2)?),
    })
}

/// When each billing cycle the ledger holds began, newest first.
pub async fn cycle_starts<P: ProjectionStore>(
    store: &P,
    account: &str,
) -> Result<Vec<Timestamp>, ProjectionError> {
    let rows = store
        .query_projection(vec![SqlStatement::new(
            "SELECT occurred_at_ms FROM ledger_entries \
             WHERE account_id = $1 AND kind = $2 ORDER BY seq DESC",
            vec![SqlValue::text(account), SqlValue::text("cycle_started")],
        )])
        .await?
        .remove(0);
    Ok(rows
        .iter()
        .filter_map(|row| row[0].as_int().map(Timestamp::from_millis))
        .collect())
}

/// What usage totals are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGrouping {
    Action,
    Capability,
    Member,
    Model,
    /// The local day: the daily usage chart.
    Day,
}

impl UsageGrouping {
    fn column(self) -> &'static str {
        match self {
            UsageGrouping::Action => "action",
            UsageGrouping::Capability => "capability",
            UsageGrouping::Member => "member_id",
            UsageGrouping::Model => "model",
            UsageGrouping::Day => "day",
        }
    }
}

/// Which usage to total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsagePeriod {
    /// The billing cycle (or trial) that started at this instant.
    Cycle { start: Timestamp },
    /// Local days `first ..= last`, as `YYYY-MM-DD`.
    Days { first: String, last: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    pub period: UsagePeriod,
    pub group_by: UsageGrouping,
}

/// Totals of one group (one action, one day, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageGroup {
    /// The action, capability, member, model or day; empty for actions
    /// that named no model.
    pub key: String,
    pub charged: Millicredits,
    pub overage: Millicredits,
    pub actions: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub context_tokens: u64,
    pub images: u64,
    pub tool_calls: u64,
    /// The units the rate card declares itself, by name.
    pub units: BTreeMap<String, u64>,
}

impl UsageGroup {
    pub(crate) fn add(&mut self, other: &UsageGroup) {
        for (unit, amount) in &other.units {
            *self.units.entry(unit.clone()).or_default() += amount;
        }
        self.charged += other.charged;
        self.overage += other.overage;
        self.actions += other.actions;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.context_tokens += other.context_tokens;
        self.images += other.images;
        self.tool_calls += other.tool_calls;
    }
}

/// Usage totals by group, in key order, and their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageReport {
    pub groups: Vec<UsageGroup>,
    pub total: UsageGroup,
}

/// Totals the account's usage in a period, grouped.
pub async fn usage<P: ProjectionStore>(
    store: &P,
    account: &str,
    query: &UsageQuery,
) -> Result<UsageReport, ProjectionError> {
    let column = query.group_by.column();
    let (period, params) = match &query.period {
        UsagePeriod::Cycle { start } => (
            "cycle_start_ms = $2",
            vec![SqlValue::text(account), SqlValue::int(start.as_millis())],
        ),
        UsagePeriod::Days { first, last } => (
            "day >= $2 AND day <= $3",
            vec![
                SqlValue::text(account),
                SqlValue::text(first.as_str()),
                SqlValue::text(last.as_str()),
            ],
        ),
    };
    let sums = USAGE.columns[USAGE_KEY_COLUMNS..]
        .iter()
        .map(|c| format!("CAST(SUM({c}) AS BIGINT)"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {column}, {sums} FROM usage_daily WHERE account_id = $1 AND {period} \
         GROUP BY {column} ORDER BY {column}"
    );
    let rows = store
        .query_projection(vec![SqlStatement::new(sql, params.clone())])
        .await?
        .remove(0);
    let mut report = UsageReport::default();
    for row in &rows {
        let int = |i: usize| row[i].as_int().unwrap_or(0);
        let count = |i: usize| u64::try_from(int(i)).unwrap_or(0);
        let group = UsageGroup {
            key: row[0].as_text().unwrap_or_default().to_owned(),
            charged: Millicredits::new(int(1)),
            overage: Millicredits::new(int(2)),
            actions: count(3),
            input_tokens: count(4),
            output_tokens: count(5),
            context_tokens: count(6),
            images: count(7),
            tool_calls: count(8),
            units: BTreeMap::new(),
        };
        report.groups.push(group);
    }
    let sql = format!(
        "SELECT {column}, unit, CAST(SUM(amount) AS BIGINT) FROM usage_daily_units \
         WHERE account_id = $1 AND {period} GROUP BY {column}, unit ORDER BY {column}, unit"
    );
    let units = store
        .query_projection(vec![SqlStatement::new(sql, params)])
        .await?
        .remove(0);
    let by_key: HashMap<String, usize> = report
        .groups
        .iter()
        .enumerate()
        .map(|(at, group)| (group.key.clone(), at))
        .collect();
    for row in &units {
        // Every unit row has its group: the same debit wrote both.
        if let Some(&at) = by_key.get(row[0].as_text().unwrap_or_default()) {
            let amount = u64::try_from(row[2].as_int().unwrap_or(0)).unwrap_or(0);
            report.groups[at]
                .units
                .insert(row[1].as_text().unwrap_or_default().to_owned(), amount);
        }
    }
    for group in &report.groups {
        report.total.add(group);
    }
    Ok(report)
}

/// How long the credits last at the recent pace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runway {
    /// Average usage per day over the window.
    pub pace_per_day: Millicredits,
    /// When the available credits run out at that pace; `None` at no pace
    /// or with nothing available.
    pub runs_out_at: Option<Timestamp>,
    /// When usage reaches the spending cap at that pace, if before the cycle
    /// ends (the cap then starts again); `Some(now)` if already reached.
    pub hits_cap_at: Option<Timestamp>,
}

const DAY_MS: i128 = 86_400_000;

/// The runway at `pace_per_day` from `now`. Pure: the caller totals the
/// window (usage grouped by day) and reads the balance.
pub fn runway(
    pace_per_day: Millicredits,
    now: Timestamp,
    available: Millicredits,
    cap_left: Option<Millicredits>,
    cycle_end: Option<Timestamp>,
) -> Runway {
    let pace = i128::from(pace_per_day.get());
    let after = |amount: Millicredits| -> Option<Timestamp> {
        if pace <= 0 {
            return None;
        }
        let millis = i128::from(amount.get().max(0)) * DAY_MS / pace;
        let at = i128::from(now.as_millis()) + millis;
        Some(Timestamp::from_millis(
            i64::try_from(at).unwrap_or(i64::MAX),
        ))
    };
    let runs_out_at = available.is_positive().then(|| after(available)).flatten();
    let hits_cap_at = match cap_left {
        Some(left) if !left.is_positive() => Some(now),
        Some(left) => after(left).filter(|at| cycle_end.is_none_or(|end| *at < end)),
        None => None,
    };
    Runway {
        pace_per_day,
        runs_out_at,
        hits_cap_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credits(n: i64) -> Millicredits {
        Millicredits::from_credits(n)
    }

    #[test]
    fn runway_divides_what_is_left_by_the_pace() {
        let now = Timestamp::from_millis(1_000);
        let r = runway(credits(10), now, credits(35), Some(credits(20)), None);
        assert_eq!(
            r.runs_out_at,
            Some(Timestamp::from_millis(1_000 + 3 * 86_400_000 + 43_200_000))
        );
        assert_eq!(
            r.hits_cap_at,
            Some(Timestamp::from_millis(1_000 + 2 * 86_400_000))
        );
    }

    #[test]
    fn no_pace_no_estimate_and_a_reached_cap_is_now() {
        let now = Timestamp::from_millis(5);
        let r = runway(
            Millicredits::ZERO,
            now,
            credits(35),
            Some(Millicredits::ZERO),
            None,
        );
        assert_eq!(r.runs_out_at, None);
        assert_eq!(r.hits_cap_at, Some(now));
    }

    #[test]
    fn a_cap_reached_after_the_cycle_ends_is_not_reported() {
        let now = Timestamp::from_millis(0);
        let end = Timestamp::from_millis(86_400_000);
        let r = runway(credits(10), now, credits(5), Some(credits(20)), Some(end));
        assert_eq!(r.hits_cap_at, None);
        assert_eq!(r.runs_out_at, Some(Timestamp::from_millis(43_200_000)));
    }
}
