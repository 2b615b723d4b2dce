//! The reads of AccountService: answered from the projections, after
//! waiting for them to be as fresh as the caller asked.

use std::pin::Pin;
use std::time::Duration;

use tally_api::v1 as pb;
use tally_core::calendar::{Day, day_of, day_start, parse_day};
use tally_core::{Account, AccountId, Event, Millicredits, Rejection, Timestamp, advance};
use tally_engine::{EngineError, decode_event};
use tally_projections::reads::{self, LedgerQuery, UsageGrouping, UsagePeriod, UsageQuery};
use tally_projections::{Freshness, LedgerEntry, Projection};
use tally_store::{EventStore, LogPosition, StoreChange};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Api;
use crate::convert::{self, Validator};
use crate::{ServiceError, Store};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1_000;
/// How long a read waits for freshness when the call names no deadline.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
const DEFAULT_RUNWAY_DAYS: i32 = 7;
const MAX_RUNWAY_DAYS: i32 = 90;
const MAX_DAY_RANGE: i32 = 366;
const MAX_CYCLES_AGO: i32 = 1_000;
/// How often a watch looks for writes even when no signal came: the
/// store's change signals wake it at once, this poll is the backstop for
/// a signal lost between replicas.
const WATCH_POLL: Duration = Duration::from_secs(2);
/// Events a watch reads from the stream at a time.
const WATCH_PAGE: usize = 256;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchAccountResponse, Status>> + Send>>;

impl Validator {
    /// The freshness a read asked for (unset: as the projection stands).
    fn consistency(&mut self, field: &str, consistency: Option<&pb::ReadConsistency>) -> Freshness {
        use pb::read_consistency::Requirement;
        match consistency.and_then(|c| c.requirement.as_ref()) {
            None | Some(Requirement::MinimizeLatency(_)) => Freshness::Any,
            Some(Requirement::FullyConsistent(true)) => Freshness::Full,
            Some(Requirement::FullyConsistent(false)) => Freshness::Any,
            Some(Requirement::AtLeastAsFresh(token)) => match token.parse::<LogPosition>() {
                Ok(position) => Freshness::AtLeast(position),
                Err(_) => {
                    self.violation(
                        &format!("{field}.at_least_as_fresh"),
                        "is not a consistency token this service issued",
                    );
                    Freshness::Any
                }
            },
        }
    }
}

/// How long a read may wait to be fresh: the call's own deadline (the
/// `grpc-timeout` header) or a default, less a margin so that the caller
/// hears DEADLINE_EXCEEDED from us, with the reason, rather than its own
/// timer's CANCELLED.
fn deadline_of<T>(request: &Request<T>) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(DEFAULT_WAIT);
    let margin = (timeout / 10).min(Duration::from_millis(50));
    Instant::now() + timeout - margin
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3_600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn unknown_account() -> Status {
    ServiceError::from(EngineError::from(Rejection::UnknownAccount)).into()
}

impl<S: Store> Api<S> {
    async fn fresh(
        &self,
        projection: Projection,
        freshness: Freshness,
        deadline: Instant,
    ) -> Result<(), Status> {
        self.projections()?
            .wait_for(projection, freshness, deadline)
            .await
            .map_err(|e| ServiceError::from(e).into())
    }

    /// The account as the balances projection holds it, advanced to now:
    /// holds and buckets expired, cycles renewed, up to the moment of the
    /// read, exactly as the next command would see it.
    async fn account_now(&self, account: &AccountId) -> Result<(Account, Timestamp), Status> {
        let projections = self.projections()?;
        let cached = projections.cached_state(account.as_str());
        let state = match cached {
            Some(state) => Some(state),
            None => reads::balance_state(projections.store(), account.as_str())
                .await
                .map_err(ServiceError::from)?,
        };
        let Some(mut state) = state else {
            return Err(unknown_account());
        };
        let now = self
            .engine()?
            .now()
            .max(state.last_event_at.unwrap_or_default());
        advance(&mut state, now);
        Ok((state, now))
    }

    pub(super) async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let deadline = deadline_of(&request);
        let pb::GetBalanceRequest {
            account_id,
            consistency,
        } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        let freshness = v.consistency("consistency", consistency.as_ref());
        let Some(account) = account else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        self.fresh(Projection::Balances, freshness, deadline)
            .await?;
        let (state, now) = self.account_now(&account).await?;
        Ok(Response::new(pb::GetBalanceResponse {
            balance: Some(convert::balance(&account, &state.balance_at(now))),
        }))
    }

    pub(super) async fn list_ledger(
        &self,
        request: Request<pb::ListLedgerRequest>,
    ) -> Result<Response<pb::ListLedgerResponse>, Status> {
        let deadline = deadline_of(&request);
        let pb::ListLedgerRequest {
            account_id,
            page_size,
            page_token,
            member_id,
            action,
            kinds,
            start_time,
            end_time,
            consistency,
        } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        let limit = match usize::try_from(page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) if size <= MAX_PAGE_SIZE => size,
            _ => {
                v.violation(
                    "page_size",
                    format!("must be between 0 and {MAX_PAGE_SIZE}"),
                );
                DEFAULT_PAGE_SIZE
            }
        };
        let after_version = if page_token.is_empty() {
            0
        } else {
            parse_page_token(&page_token).unwrap_or_else(|| {
                v.violation("page_token", "is not a token this service issued");
                0
            })
        };
        let member = (!member_id.is_empty())
            .then(|| v.member("member_id", &member_id))
            .flatten();
        let action = (!action.is_empty())
            .then(|| v.action("action", &action))
            .flatten();
        let kinds = v.ledger_kinds("kinds", &kinds);
        let start = v.timestamp("start_time", start_time);
        let end = v.timestamp("end_time", end_time);
        let freshness = v.consistency("consistency", consistency.as_ref());
        let Some(account) = account else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        self.fresh(Projection::Ledger, freshness, deadline).await?;
        let query = LedgerQuery {
            member,
            action,
            kinds,
            start,
            end,
            after_version,
            limit,
        };
        let page = reads::ledger_page(self.projections()?.store(), account.as_str(), &query)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(unknown_account)?;
        Ok(Response::new(pb::ListLedgerResponse {
            entries: page.entries.iter().map(convert::ledger_entry).collect(),
            next_page_token: page
                .next_after_version
                .map(page_token_after)
                .unwrap_or_default(),
        }))
    }

    pub(super) async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        use pb::get_usage_request::Period;
        let deadline = deadline_of(&request);
        let pb::GetUsageRequest {
            account_id,
            group_by,
            period,
            runway_days,
            consistency,
        } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        let group_by = match pb::UsageGrouping::try_from(group_by) {
            Ok(pb::UsageGrouping::Action) => Some(UsageGrouping::Action),
            Ok(pb::UsageGrouping::Capability) => Some(UsageGrouping::Capability),
            Ok(pb::UsageGrouping::Member) => Some(UsageGrouping::Member),
            Ok(pb::UsageGrouping::Model) => Some(UsageGrouping::Model),
            Ok(pb::UsageGrouping::Day) => Some(UsageGrouping::Day),
            Ok(pb::UsageGrouping::Unspecified) | Err(_) => {
                v.violation(
                    "group_by",
                    "must be ACTION, CAPABILITY, MEMBER, MODEL or DAY",
                );
                None
            }
        };
        enum Asked {
            Cycle(i32),
            Days(Day, Day),
        }
        let asked = match period {
            None => Some(Asked::Cycle(0)),
            Some(Period::CyclesAgo(n)) if (0..=MAX_CYCLES_AGO).contains(&n) => {
                Some(Asked::Cycle(n))
            }
            Some(Period::CyclesAgo(_)) => {
                v.violation("cycles_ago", format!("must be 0 to {MAX_CYCLES_AGO}"));
                None
            }
            Some(Period::Days(range)) => {
                let first = parse_day(&range.first_day);
                let last = parse_day(&range.last_day);
                if first.is_none() {
                    v.violation("days.first_day", "must be a date, YYYY-MM-DD");
                }
                if last.is_none() {
                    v.violation("days.last_day", "must be a date, YYYY-MM-DD");
                }
                match (first, last) {
                    (Some(first), Some(last)) if first > last => {
                        v.violation("days.last_day", "must not be before first_day");
                        None
                    }
                    (Some(first), Some(last)) if (last - first).get_days() >= MAX_DAY_RANGE => {
                        v.violation("days", format!("may span at most {MAX_DAY_RANGE} days"));
                        None
                    }
                    (Some(first), Some(last)) => Some(Asked::Days(first, last)),
                    _ => None,
                }
            }
        };
        let window = match runway_days {
            0 => DEFAULT_RUNWAY_DAYS,
            n if (1..=MAX_RUNWAY_DAYS).contains(&n) => n,
            _ => {
                v.violation("runway_days", format!("must be 0 to {MAX_RUNWAY_DAYS}"));
                DEFAULT_RUNWAY_DAYS
            }
        };
        let freshness = v.consistency("consistency", consistency.as_ref());
        let (Some(account), Some(group_by), Some(asked)) = (account, group_by, asked) else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        for projection in [Projection::Balances, Projection::Usage, Projection::Ledger] {
            self.fresh(projection, freshness, deadline).await?;
        }
        let store = self.projections()?.store();
        let (state, now) = self.account_now(&account).await?;
        let zone = &state.terms.time_zone;
        let (period, start, end) = match asked {
            Asked::Days(first, last) => (
                UsagePeriod::Days {
                    first: first.to_string(),
                    last: last.to_string(),
                },
                day_start(zone, first),
                day_start(zone, last.tomorrow().unwrap_or(last)),
            ),
            Asked::Cycle(ago) => {
                let (start, end) = self.cycle(&account, &state, ago).await?;
                (UsagePeriod::Cycle { start }, start, end)
            }
        };
        let report = reads::usage(store, account.as_str(), &UsageQuery { period, group_by })
            .await
            .map_err(ServiceError::from)?;

        let today = day_of(zone, now);
        let first = today.checked_sub(jiff_days(window - 1)).unwrap_or(today);
        let recent = reads::usage(
            store,
            account.as_str(),
            &UsageQuery {
                period: UsagePeriod::Days {
                    first: first.to_string(),
                    last: today.to_string(),
                },
                group_by: UsageGrouping::Day,
            },
        )
        .await
        .map_err(ServiceError::from)?;
        let pace = Millicredits::new(recent.total.charged.get() / i64::from(window));
        let balance = state.balance_at(now);
        let cap_left = state
            .terms
            .spending_cap
            .map(|cap| cap - state.used_in_cycle - balance.held);
        let runway = tally_projections::runway(
            pace,
            now,
            balance.available,
            cap_left,
            state.cycle.map(|c| c.end),
        );
        Ok(Response::new(pb::GetUsageResponse {
            groups: report
                .groups
                .iter()
                .map(|g| pb::UsageGroup {
                    key: g.key.clone(),
                    totals: Some(totals(g)),
                })
                .collect(),
            total: Some(totals(&report.total)),
            period_start: Some(convert::timestamp(start)),
            period_end: Some(convert::timestamp(end)),
            runway: Some(pb::Runway {
                window_days: window,
                pace_millicredits_per_day: pace.get(),
                runs_out_at: runway.runs_out_at.map(convert::timestamp),
                hits_cap_at: runway.hits_cap_at.map(convert::timestamp),
            }),
        }))
    }

    /// The cycle `ago` cycles before the current one: `[start, end)`. The
    /// current one comes from the state advanced to now; earlier ones from
    /// the cycle starts in the ledger. A trial counts as the cycle before
    /// the first.
    async fn cycle(
        &self,
        account: &AccountId,
        state: &Account,
        ago: i32,
    ) -> Result<(Timestamp, Timestamp), Status> {
        let current = match state.cycle {
            Some(cycle) => (cycle.start, cycle.end),
            None => (
                state.opened_at.unwrap_or_default(),
                state.allowances_from.unwrap_or_default(),
            ),
        };
        if ago == 0 {
            return Ok(current);
        }
        let mut starts = reads::cycle_starts(self.projections()?.store(), account.as_str())
            .await
            .map_err(ServiceError::from)?;
        starts.extend(state.opened_at);
        starts.retain(|start| *start < current.0);
        starts.sort_unstable_by(|a, b| b.cmp(a));
        starts.dedup();
        let mut end = current.0;
        for (i, start) in starts.iter().enumerate() {
            if i + 1 == ago as usize {
                return Ok((*start, end));
            }
            end = *start;
        }
        Err(InvalidCycle(starts.len()).into())
    }

    pub(super) async fn watch_account(
        &self,
        request: Request<pb::WatchAccountRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let pb::WatchAccountRequest {
            account_id,
            after_sequence,
        } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        let after = match after_sequence.map(u64::try_from) {
            None => None,
            Some(Ok(after)) => Some(after),
            Some(Err(_)) => {
                v.violation("after_sequence", "must not be negative");
                None
            }
        };
        let Some(account) = account else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        let engine = self.engine()?.clone();
        let store = engine.store().clone();
        // Subscribed before the first read, so no append falls in between.
        let appended = store.changes();
        // The balances projection's state saves replaying the stream from
        // its start, unless it is already past where the watch resumes.
        let folded = reads::balance_state(&store, account.as_str())
            .await
            .map_err(ServiceError::from)?
            .filter(|state| after.is_none_or(|after| state.version <= after))
            .unwrap_or_default();
        let start = catch_up(&store, &account, folded, after, |_| Ok(())).await?;
        if !start.is_open() && after != Some(0) {
            return Err(unknown_account());
        }
        if let Some(after) = after.filter(|after| *after > start.version) {
            let mut v = Validator::default();
            v.violation(
                "after_sequence",
                format!(
                    "{after} is past the account's last entry, {}",
                    start.version
                ),
            );
            return Err(v.into_error().into());
        }
        let (tx, rx) = mpsc::channel(64);
        if after.is_none() {
            let at = state_time(&start);
            let _ = tx
                .send(Ok(pb::WatchAccountResponse {
                    sequence: i64::try_from(start.version).unwrap_or(i64::MAX),
                    balance: Some(convert::balance(&account, &start.balance_at(at))),
                    entry: None,
                    alert: None,
                }))
                .await;
        }
        tokio::spawn(follow(store, account, start, appended, tx));
        Ok(Response::new(
            Box::pin(ReceiverStream::new(rx)) as WatchStream
        ))
    }
}

/// `cycles_ago` reaches past the first cycle.
struct InvalidCycle(usize);

impl From<InvalidCycle> for Status {
    fn from(InvalidCycle(known): InvalidCycle) -> Status {
        let mut v = Validator::default();
        v.violation(
            "cycles_ago",
            format!("the account has {known} earlier cycles"),
        );
        v.into_error().into()
    }
}

fn jiff_days(days: i32) -> jiff::Span {
    jiff::Span::new().days(i64::from(days))
}

fn totals(group: &reads::UsageGroup) -> pb::UsageTotals {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    pb::UsageTotals {
        charged_millicredits: group.charged.get(),
        overage_millicredits: group.overage.get(),
        actions: count(group.actions),
        input_tokens: count(group.input_tokens),
        output_tokens: count(group.output_tokens),
        context_tokens: count(group.context_tokens),
        images: count(group.images),
        tool_calls: count(group.tool_calls),
        units: group
            .units
            .iter()
            .map(|(unit, n)| (unit.clone(), count(*n)))
            .collect(),
    }
}

fn state_time(state: &Account) -> Timestamp {
    state.last_event_at.unwrap_or_default()
}

/// Reads the stream after `state`, up to `until` (or its end), folding
/// each event into `state` and handing it to `each`.
async fn catch_up<S: EventStore>(
    store: &S,
    account: &AccountId,
    mut state: Account,
    until: Option<u64>,
    mut each: impl FnMut(LedgerStep<'_>) -> Result<(), ()>,
) -> Result<Account, Status> {
    loop {
        let limit = match until {
            Some(until) if until <= state.version => return Ok(state),
            Some(until) => usize::try_from(until - state.version)
                .unwrap_or(WATCH_PAGE)
                .min(WATCH_PAGE),
            None => WATCH_PAGE,
        };
        let page = store
            .read_stream(account.as_str(), state.version + 1, limit)
            .await
            .map_err(|e| Status::from(ServiceError::from(EngineError::from(e))))?;
        for recorded in &page {
            let decoded =
                decode_event(recorded).map_err(|e| Status::from(ServiceError::from(e)))?;
            let at = decoded.event.at();
            let available_before = state.available_before(at);
            state
                .apply(&decoded.event)
                .map_err(|e| Status::from(ServiceError::from(EngineError::from(e))))?;
            let entry = LedgerEntry {
                version: decoded.version,
                available_before,
                available_after: state.available_before(at),
                event: decoded.event,
                idempotency_key: decoded.idempotency_key,
            };
            if each(LedgerStep {
                entry: &entry,
                state: &state,
            })
            .is_err()
            {
                return Ok(state);
            }
        }
        if page.len() < limit {
            return Ok(state);
        }
    }
}

/// One event folded: the entry and the state right after it.
struct LedgerStep<'a> {
    entry: &'a LedgerEntry,
    state: &'a Account,
}

/// Sends every event after `state` as it is appended, until the watcher
/// goes away. Wakes on the store's signal of an append to the account,
/// from this process or another replica.
async fn follow<S: EventStore>(
    store: S,
    account: AccountId,
    mut state: Account,
    mut appended: broadcast::Receiver<StoreChange>,
    tx: mpsc::Sender<Result<pb::WatchAccountResponse, Status>>,
) {
    loop {
        let mut outbox = Vec::new();
        let caught = catch_up(&store, &account, state.clone(), None, |step| {
            outbox.push(pb::WatchAccountResponse {
                sequence: i64::try_from(step.entry.version).unwrap_or(i64::MAX),
                balance: Some(convert::balance(
                    &account,
                    &step.state.balance_at(step.entry.event.at()),
                )),
                entry: Some(convert::ledger_entry(step.entry)),
                alert: watch_alert(step.entry),
            });
            Ok(())
        })
        .await;
        match caught {
            Ok(next) => state = next,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
        for message in outbox {
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
        let wake = async {
            loop {
                match appended.recv().await {
                    Ok(change) if change.touches(account.as_str()) => return,
                    Ok(_) => continue,
                    // Missed some: one of them may be ours.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(WATCH_POLL) => {}
            _ = tx.closed() => return,
        }
    }
}

/// The alert an entry is, for watchers: alerts the log recorded, and each
/// cycle start as a cycle reset.
fn watch_alert(entry: &LedgerEntry) -> Option<pb::Alert> {
    match &entry.event {
        Event::AlertRaised { at, alert } => Some(convert::alert(alert, *at, entry.version)),
        Event::CycleStarted { at, .. } => Some(pb::Alert {
            kind: pb::AlertKind::CycleReset.into(),
            severity: pb::AlertSeverity::Info.into(),
            raised_at: Some(convert::timestamp(*at)),
            sequence: i64::try_from(entry.version).unwrap_or(i64::MAX),
            ..Default::default()
        }),
        _ => None,
    }
}

/// Page tokens are opaque to callers; inside, the stream version to
/// continue after. Stable: entries are only ever appended after it.
fn page_token_after(version: u64) -> String {
    format!("v1.{version}")
}

fn parse_page_token(token: &str) -> Option<u64> {
    token.strip_prefix("v1.")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
