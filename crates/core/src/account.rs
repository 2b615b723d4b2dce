//! The account aggregate: the fold of an account's events. Applying an
//! event is plain arithmetic; every decision was taken before the event was
//! written.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::alert::rearm_after_grant;
use crate::{
    AccountTerms, ActionKey, AlertKey, Bucket, BucketKind, Charge, Debit, Draw, Event, GrantId,
    GrantSource, IdempotencyKey, MemberId, Millicredits, ModelName, Period, PlanTerms, Reservation,
    ReservationId, Resolution, ResolvedReservation, Timestamp,
};

/// Lifetime totals. Conservation ties them to the buckets:
/// `granted - consumed - expired - voided = remaining + held - overage`,
/// where `remaining` counts every bucket, spendable or not yet effective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub granted: Millicredits,
    /// What actions cost, overage included: "lifetime used".
    pub consumed: Millicredits,
    pub expired: Millicredits,
    pub voided: Millicredits,
}

impl Totals {
    /// Lifetime totals of an account that takes commands stay below this
    /// (half of what an `i64` holds: 4.6 quadrillion credits). One command
    /// moves at most a few [`Millicredits::MAX_INPUT`], so while the totals
    /// are below it no sum of milli-credits can overflow.
    pub const CEILING: Millicredits = Millicredits::new(i64::MAX / 2);
}

/// An event that does not fit the state it is applied to: the log and the
/// code disagree, which is a bug or a damaged log, never a user error.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("event {event_type} at version {version} does not fit the account: {problem}")]
pub struct CorruptEvent {
    pub event_type: &'static str,
    pub version: u64,
    pub problem: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub opened_at: Option<Timestamp>,
    /// How many events have been applied: the stream version.
    pub version: u64,
    pub last_event_at: Option<Timestamp>,
    /// Buckets with credits remaining or held, in grant order. Exhausted
    /// buckets are dropped: nothing can refer to them again.
    pub buckets: Vec<Bucket>,
    pub reservations: BTreeMap<ReservationId, Reservation>,
    /// Holds that ended, as far as this copy of the account knows them: the
    /// ones applied since the caller last drained them, and the ones it
    /// looked up because a command names them. Never part of a snapshot:
    /// the engine keeps resolved holds in the store (looked up on a miss),
    /// so the account's size does not grow with its history. Read at the
    /// decision through [`Account::resolved_hold`], which applies the
    /// retention.
    #[serde(default, skip_serializing)]
    pub resolved: BTreeMap<ReservationId, ResolvedReservation>,
    /// Charges a refund names, by idempotency key: like `resolved`, looked
    /// up in the store when a command needs them, written back with the
    /// refund, never part of a snapshot.
    #[serde(default, skip_serializing)]
    pub charges: BTreeMap<IdempotencyKey, Charge>,
    pub overage: Millicredits,
    pub totals: Totals,
    pub terms: AccountTerms,
    /// A downgrade waiting for the current cycle to end. Boxed, like the
    /// other rare fields: a cached account's size is paid once per account.
    pub pending_plan: Option<Box<PlanTerms>>,
    /// When the first cycle starts: at opening, or when a trial ends.
    pub allowances_from: Option<Timestamp>,
    /// The current billing cycle; `None` before the first one.
    pub cycle: Option<Period>,
    /// The current local day of a plan with a daily allowance.
    pub day: Option<Period>,
    /// What actions cost since the current cycle began (overage included):
    /// what the spending cap limits.
    pub used_in_cycle: Millicredits,
    /// The alerts that fired and may not fire again until re-armed: by the
    /// next cycle, or (level alerts) by a grant that lifts the balance back
    /// to their level. See [`crate::Alert`].
    #[serde(default)]
    pub alerts_fired: BTreeSet<AlertKey>,
    /// The last action charged: a credits page's "last transaction".
    /// States saved before it existed lack it until their next debit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_debit: Option<LastDebit>,
}

/// An action charged, as a balance shows the last one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDebit {
    /// When it was charged.
    pub at: Timestamp,
    pub member: MemberId,
    pub action: ActionKey,
    pub model: Option<ModelName>,
    /// What it cost, overage included.
    pub charged: Millicredits,
}

/// Everything a balance read shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    pub available: Millicredits,
    /// Granted but not yet effective.
    pub upcoming: Millicredits,
    pub held: Millicredits,
    pub overage: Millicredits,
    /// Buckets in deduction order.
    pub buckets: Vec<Bucket>,
    pub totals: Totals,
    pub open_reservations: usize,
    pub last_event_at: Option<Timestamp>,
    pub version: u64,
    pub terms: AccountTerms,
    pub pending_plan: Option<PlanTerms>,
    pub cycle: Option<Period>,
    pub used_in_cycle: Millicredits,
    pub last_debit: Option<LastDebit>,
}

impl Account {
    /// Gives back what its collections reserved for growth. An account kept
    /// in memory while idle (the engine's cache, the projections' folds)
    /// is worth shrinking: a bucket pushed onto an empty list reserves room
    /// for four, most of an idle account's bytes.
    pub fn shrink_to_fit(&mut self) {
        self.buckets.shrink_to_fit();
    }

    pub fn is_open(&self) -> bool {
        self.opened_at.is_some()
    }

    pub fn bucket(&self, grant_id: &GrantId) -> Option<&Bucket> {
        self.buckets.iter().find(|b| &b.grant_id == grant_id)
    }

    /// Credits that can be spent or held at `at`.
    pub fn available_at(&self, at: Timestamp) -> Millicredits {
        self.buckets
            .iter()
            .filter(|b| b.is_spendable_at(at))
            .map(|b| b.remaining)
            .sum()
    }

    /// Credits available just before an event at `at` applies: as
    /// [`available_at`](Self::available_at), except that a bucket whose
    /// expiry is `at` itself still counts. A ledger entry's "before": an
    /// expiry at `at` then shows the credits it takes away, where
    /// `available_at(at)` would already leave them out.
    pub fn available_before(&self, at: Timestamp) -> Millicredits {
        self.buckets
            .iter()
            .filter(|b| b.is_spendable_just_before(at))
            .map(|b| b.remaining)
            .sum()
    }

    pub fn held(&self) -> Millicredits {
        self.buckets.iter().map(|b| b.held).sum()
    }

    /// Every bucket's remaining credits, whether spendable at any given
    /// moment or not: the left side of conservation.
    pub fn remaining(&self) -> Millicredits {
        self.buckets.iter().map(|b| b.remaining).sum()
    }

    /// The balance at `at`. Call on an account advanced to `at`, so expired
    /// credits are already gone.
    pub fn balance_at(&self, at: Timestamp) -> BalanceView {
        let available = self.available_at(at);
        let mut buckets = self.buckets.clone();
        buckets.sort_by(|a, b| a.deduction_order(b));
        BalanceView {
            available,
            upcoming: self.remaining() - available,
            held: self.held(),
            overage: self.overage,
            buckets,
            totals: self.totals,
            open_reservations: self.reservations.len(),
            last_event_at: self.last_event_at,
            version: self.version,
            terms: self.terms.clone(),
            pending_plan: self.pending_plan.as_deref().cloned(),
            cycle: self.cycle,
            used_in_cycle: self.used_in_cycle,
            last_debit: self.last_debit.clone(),
        }
    }

    /// Folds a sequence of events from an empty account.
    pub fn replay<'a>(
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Account, CorruptEvent> {
        let mut account = Account::default();
        for event in events {
            account.apply(event)?;
        }
        Ok(account)
    }

    pub fn apply(&mut self, event: &Event) -> Result<(), CorruptEvent> {
        let version = self.version + 1;
        let corrupt = |problem: String| CorruptEvent {
            event_type: event.type_name(),
            version,
            problem,
        };
        match event {
            Event::AccountOpened {
                at,
                terms,
                allowances_from,
            } => {
                self.opened_at = Some(*at);
                self.terms = terms.clone();
                self.allowances_from = Some(allowances_from.unwrap_or(*at));
            }
            Event::CycleStarted { at, end } => {
                if let Some(plan) = self.pending_plan.take() {
                    self.terms.adopt(*plan);
                }
                self.cycle = Some(Period {
                    start: *at,
                    end: *end,
                });
                self.used_in_cycle = Millicredits::ZERO;
                // A new cycle re-arms every alert.
                self.alerts_fired.clear();
            }
            Event::DayStarted { at, end } => {
                self.day = Some(Period {
                    start: *at,
                    end: *end,
                })
            }
            Event::PlanChanged {
                at,
                terms,
                effective_at,
            } => {
                if effective_at <= at {
                    self.pending_plan = None;
                    self.terms.adopt(terms.clone());
                } else {
                    self.pending_plan = Some(Box::new(terms.clone()));
                }
            }
            Event::SpendingCapSet { cap, .. } => {
                self.terms.spending_cap = *cap;
                self.terms.cap_set_by_account = true;
            }
            Event::BillingAnchorSet { anchor, .. } => self.terms.anchor = *anchor,
            Event::AlertThresholdsSet { thresholds, .. } => {
                self.terms.alerts = thresholds.clone().map(Box::new)
            }
            Event::AlertRaised { alert, .. } => {
                self.alerts_fired.insert(alert.key());
            }
            Event::CreditsGranted {
                at,
                grant_id,
                kind,
                source,
                priority,
                amount,
                effective_at,
                expires_at,
                cost_basis,
                reference,
                upcoming,
            } => {
                if self.bucket(grant_id).is_some() {
                    return Err(corrupt(format!("grant {grant_id} exists already")));
                }
                self.buckets.push(Bucket {
                    grant_id: grant_id.clone(),
                    kind: *kind,
                    source: *source,
                    priority: *priority,
                    amount: *amount,
                    remaining: *amount,
                    held: Millicredits::ZERO,
                    effective_at: *effective_at,
                    expires_at: *expires_at,
                    cost_basis: cost_basis.clone(),
                    reference: reference.clone(),
                    granted_version: version,
                    voided: false,
                    upcoming: *upcoming,
                });
                self.totals.granted += *amount;
                // Credits not effective yet still lift the balance the next
                // drop is measured from.
                let upcoming = if effective_at > at {
                    *amount
                } else {
                    Millicredits::ZERO
                };
                let available = self.available_at(*at) + upcoming;
                rearm_after_grant(&mut self.alerts_fired, available);
            }
            Event::CreditsAdjusted {
                at,
                amount,
                grant_id,
                draws,
                reason,
                ..
            } => {
                if amount.is_positive() {
                    let grant_id = grant_id.as_ref().ok_or_else(|| {
                        corrupt("an adjustment that adds credits names no bucket".into())
                    })?;
                    if self.bucket(grant_id).is_some() {
                        return Err(corrupt(format!("grant {grant_id} exists already")));
                    }
                    self.buckets.push(Bucket {
                        grant_id: grant_id.clone(),
                        kind: BucketKind::Promotional,
                        source: GrantSource::Adjustment,
                        priority: BucketKind::Promotional.default_priority(),
                        amount: *amount,
                        remaining: *amount,
                        held: Millicredits::ZERO,
                        effective_at: *at,
                        expires_at: None,
                        cost_basis: None,
                        reference: reason.clone(),
                        granted_version: version,
                        voided: false,
                        upcoming: false,
                    });
                    self.totals.granted += *amount;
                    let available = self.available_at(*at);
                    rearm_after_grant(&mut self.alerts_fired, available);
                } else {
                    let removed: Millicredits = draws.iter().map(|d| d.amount).sum();
                    if removed != -*amount {
                        return Err(corrupt(format!(
                            "an adjustment of {amount} draws {removed}"
                        )));
                    }
                    for draw in draws {
                        let bucket = self.bucket_mut(&draw.grant_id).map_err(corrupt)?;
                        take(&mut bucket.remaining, draw.amount).map_err(corrupt)?;
                    }
                    self.totals.voided += removed;
                }
            }
            Event::GrantTookEffect {
                grant_id, amount, ..
            } => {
                let bucket = self.bucket_mut(grant_id).map_err(corrupt)?;
                if !bucket.upcoming || bucket.remaining != *amount {
                    return Err(corrupt(format!(
                        "{grant_id} takes effect with {amount}, but is {bucket:?}"
                    )));
                }
                bucket.upcoming = false;
            }
            Event::GrantVoided {
                grant_id, amount, ..
            } => {
                let bucket = self.bucket_mut(grant_id).map_err(corrupt)?;
                take(&mut bucket.remaining, *amount).map_err(corrupt)?;
                bucket.voided = true;
                self.totals.voided += *amount;
            }
            Event::CreditsHeld { reservation, .. } => {
                for draw in &reservation.draws {
                    let bucket = self.bucket_mut(&draw.grant_id).map_err(corrupt)?;
                    take(&mut bucket.remaining, draw.amount).map_err(corrupt)?;
                    bucket.held += draw.amount;
                }
                self.reservations
                    .insert(reservation.id.clone(), reservation.clone());
            }
            Event::HoldExtended {
                reservation_id,
                expires_at,
                ..
            } => {
                let reservation = self
                    .reservations
                    .get_mut(reservation_id)
                    .ok_or_else(|| corrupt(format!("no open reservation {reservation_id}")))?;
                reservation.expires_at = *expires_at;
            }
            Event::HoldReleased {
                at,
                reservation_id,
                returned,
                ..
            }
            | Event::HoldExpired {
                at,
                reservation_id,
                returned,
                ..
            } => {
                self.return_held(returned).map_err(corrupt)?;
                let resolution = match event {
                    Event::HoldReleased { .. } => Resolution::Released,
                    _ => Resolution::Expired,
                };
                let reservation = self
                    .reservations
                    .remove(reservation_id)
                    .ok_or_else(|| corrupt(format!("no open reservation {reservation_id}")))?;
                self.remember(reservation, resolution, *at);
            }
            Event::CreditsDebited { at, debit } => self.apply_debit(*at, debit).map_err(corrupt)?,
            Event::CreditsRefunded { at, refund } => {
                self.return_remaining(&refund.returned).map_err(corrupt)?;
                take(&mut self.overage, refund.overage_cancelled).map_err(corrupt)?;
                let mut given = refund.overage_cancelled
                    + refund
                        .returned
                        .iter()
                        .map(|d| d.amount)
                        .sum::<Millicredits>();
                if let Some(draw) = &refund.refund_grant {
                    if self.bucket(&draw.grant_id).is_some() {
                        return Err(corrupt(format!("grant {} exists already", draw.grant_id)));
                    }
                    self.buckets.push(Bucket {
                        grant_id: draw.grant_id.clone(),
                        kind: draw.kind,
                        source: GrantSource::Refund,
                        priority: draw.kind.default_priority(),
                        amount: draw.amount,
                        remaining: draw.amount,
                        held: Millicredits::ZERO,
                        effective_at: *at,
                        expires_at: None,
                        cost_basis: None,
                        reference: format!("refund of {}", refund.charge_key),
                        granted_version: version,
                        voided: false,
                        upcoming: false,
                    });
                    given += draw.amount;
                }
                if given != refund.amount {
                    return Err(corrupt(format!(
                        "a refund of {} gives back {given}",
                        refund.amount
                    )));
                }
                take(&mut self.totals.consumed, refund.amount).map_err(corrupt)?;
                take(&mut self.used_in_cycle, refund.cycle_returned).map_err(corrupt)?;
                if let Some(charge) = self.charges.get_mut(&refund.charge_key) {
                    charge.refunded = refund.refunded;
                }
                let available = self.available_at(*at);
                rearm_after_grant(&mut self.alerts_fired, available);
            }
            Event::OverageRepaid { amount, draws, .. } => {
                self.take_remaining(draws).map_err(corrupt)?;
                take(&mut self.overage, *amount).map_err(corrupt)?;
            }
            Event::BucketExpired {
                grant_id, amount, ..
            } => {
                let bucket = self.bucket_mut(grant_id).map_err(corrupt)?;
                take(&mut bucket.remaining, *amount).map_err(corrupt)?;
                self.totals.expired += *amount;
            }
        }
        let at = event.at();
        self.version = version;
        self.last_event_at = Some(self.last_event_at.map_or(at, |last| last.max(at)));
        self.buckets
            .retain(|b| b.remaining.is_positive() || b.held.is_positive());
        debug_assert_eq!(
            self.totals.granted - self.totals.consumed - self.totals.expired - self.totals.voided,
            self.remaining() + self.held() - self.overage,
            "conservation broken by {} at version {version}",
            event.type_name()
        );
        Ok(())
    }

    /// Which lifetime total, if any, has passed [`Totals::CEILING`]: past
    /// it the account takes no more commands, so no sum can overflow.
    pub fn total_past_ceiling(&self) -> Option<&'static str> {
        let t = &self.totals;
        [
            ("granted", t.granted),
            ("consumed", t.consumed),
            ("expired", t.expired),
            ("voided", t.voided),
        ]
        .into_iter()
        .find(|(_, total)| *total > Totals::CEILING)
        .map(|(name, _)| name)
    }

    fn apply_debit(&mut self, at: Timestamp, debit: &Debit) -> Result<(), String> {
        for draw in &debit.from_hold {
            take(&mut self.bucket_mut(&draw.grant_id)?.held, draw.amount)?;
        }
        self.take_remaining(&debit.from_available)?;
        self.return_held(&debit.returned)?;
        self.overage += debit.overage;
        self.totals.consumed += debit.charged;
        self.used_in_cycle += debit.charged;
        self.last_debit = Some(LastDebit {
            at,
            member: debit.member.clone(),
            action: debit.action.clone(),
            model: debit.model.clone(),
            charged: debit.charged,
        });
        if let Some(id) = &debit.reservation_id {
            let reservation = match self.reservations.remove(id) {
                Some(open) => Some(open),
                // The expired hold is known where the commit was decided;
                // a fold that does not have it (a projection, a replay)
                // needs nothing of it: the debit carries every number.
                None if debit.late => self.resolved.remove(id).map(|expired| expired.reservation),
                None => return Err(format!("no open reservation {id}")),
            };
            if let Some(reservation) = reservation {
                self.remember(reservation, Resolution::Committed, at);
            }
        }
        Ok(())
    }

    fn bucket_mut(&mut self, grant_id: &GrantId) -> Result<&mut Bucket, String> {
        self.buckets
            .iter_mut()
            .find(|b| &b.grant_id == grant_id)
            .ok_or_else(|| format!("no bucket {grant_id}"))
    }

    fn take_remaining(&mut self, draws: &[Draw]) -> Result<(), String> {
        for draw in draws {
            take(&mut self.bucket_mut(&draw.grant_id)?.remaining, draw.amount)?;
        }
        Ok(())
    }

    fn return_remaining(&mut self, draws: &[Draw]) -> Result<(), String> {
        for draw in draws {
            self.bucket_mut(&draw.grant_id)?.remaining += draw.amount;
        }
        Ok(())
    }

    fn return_held(&mut self, draws: &[Draw]) -> Result<(), String> {
        for draw in draws {
            let bucket = self.bucket_mut(&draw.grant_id)?;
            take(&mut bucket.held, draw.amount)?;
            bucket.remaining += draw.amount;
        }
        Ok(())
    }

    fn remember(&mut self, reservation: Reservation, resolution: Resolution, at: Timestamp) {
        let resolved = ResolvedReservation {
            reservation,
            resolution,
            resolved_at: at,
        };
        self.resolved
            .insert(resolved.reservation.id.clone(), resolved);
    }

    /// A hold that ended, if this account knows it and it is still within
    /// its retention at `now` (see [`ResolvedReservation::forget_after`]).
    pub fn resolved_hold(
        &self,
        id: &ReservationId,
        now: Timestamp,
    ) -> Option<&ResolvedReservation> {
        self.resolved
            .get(id)
            .filter(|resolved| resolved.forget_after() > now)
    }
}

/// Subtracts `amount` from `from`, refusing to go below zero.
fn take(from: &mut Millicredits, amount: Millicredits) -> Result<(), String> {
    if amount.get() < 0 || amount > *from {
        return Err(format!("cannot take {amount} from {from}"));
    }
    *from -= amount;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's cache and the projections' fold each keep every idle
    /// account in memory: the account in one allocation of at most 512
    /// bytes (with the cache's 40 bytes of key and links beside it, the
    /// allocator's size class up to 512) is what keeps a cached account
    /// near 2 KiB of RSS. A field added inline that crosses it costs every
    /// cached account a larger class twice over; box it (see `pending_plan`).
    #[test]
    fn an_account_fits_a_512_byte_allocation_with_its_cache_entry() {
        let cache_entry =
            std::mem::size_of::<(String, Account)>() + 2 * std::mem::size_of::<usize>();
        assert!(
            cache_entry <= 512,
            "an account with its cache entry takes {cache_entry} bytes"
        );
    }

    #[test]
    fn shrinking_gives_back_the_room_a_pushed_bucket_reserved() {
        let mut account = Account::default();
        account.buckets.push(Bucket {
            grant_id: GrantId::parse("g-1").unwrap(),
            kind: BucketKind::TopUp,
            source: GrantSource::Purchase,
            priority: 0,
            amount: Millicredits::new(5),
            remaining: Millicredits::new(5),
            held: Millicredits::ZERO,
            effective_at: Timestamp::from_millis(0),
            expires_at: None,
            cost_basis: None,
            reference: String::new(),
            granted_version: 1,
            voided: false,
            upcoming: false,
        });
        assert!(account.buckets.capacity() > 1);
        let before = account.clone();
        account.shrink_to_fit();
        assert_eq!(account.buckets.capacity(), 1);
        assert_eq!(account, before);
    }
}
