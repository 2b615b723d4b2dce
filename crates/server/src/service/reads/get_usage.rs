//! `GetUsage`: usage in a cycle or a range of days, grouped, with the
//! runway at the recent pace.

use tally_api::v1 as pb;
use tally_core::calendar::{Day, day_of, day_start, parse_day};
use tally_core::{Account, AccountId, Millicredits, Timestamp};
use tally_projections::Projection;
use tally_projections::reads::{self, UsageGrouping, UsagePeriod, UsageQuery};
use tonic::{Request, Response, Status};

use super::deadline_of;
use crate::convert::{self, Validator};
use crate::service::Api;
use crate::{ServiceError, Store};

const DEFAULT_RUNWAY_DAYS: i32 = 7;
const MAX_RUNWAY_DAYS: i32 = 90;
const MAX_DAY_RANGE: i32 = 366;
const MAX_CYCLES_AGO: i32 = 1_000;

impl<S: Store> Api<S> {
    pub(in crate::service) async fn get_usage(
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
            test_clock_id: convert::test_clock_id(state.terms.test_clock.as_deref()),
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
