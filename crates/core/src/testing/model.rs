//! A reference model of one account's credits, for the invariant property
//! test: buckets, holds, overage, the spending cap and usage in the cycle,
//! kept in plain integers by rules written here from `docs/semantics.md`
//! and `docs/plans.md`, never by calling the aggregate.
//!
//! The model folds the events the core decides, and checks each one as it
//! goes: credits are drawn only from buckets its own clock says are
//! spendable, never more than they hold; a hold gives back exactly what it
//! took; overage appears only when a commit has used every spendable
//! credit. What a new hold or debit may take is then read from the model,
//! so the core's decision is judged against numbers it did not produce.

use std::collections::BTreeMap;

use crate::{Draw, Event, GrantId, ReservationId, Resolution, Timestamp};

/// A plan of the test's catalogue, as the model knows it.
pub struct ModelPlan {
    pub name: &'static str,
    pub cap: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Bucket {
    pub remaining: i64,
    pub held: i64,
    pub effective_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub voided: bool,
}

impl Bucket {
    /// Spendable at `at`: effective, not expired, not voided.
    pub fn spendable_at(&self, at: Timestamp) -> bool {
        !self.voided && self.effective_at <= at && self.expires_at.is_none_or(|e| e > at)
    }

    /// Whether the account still shows it: something is left or held.
    pub fn exists(&self) -> bool {
        self.remaining > 0 || self.held > 0
    }
}

#[derive(Clone, Debug)]
pub struct Hold {
    pub amount: i64,
    /// Credits earmarked, per bucket.
    pub draws: BTreeMap<GrantId, i64>,
    pub expires_at: Timestamp,
    /// Priced from the rate card (no amount given by the caller).
    pub card_priced: bool,
    pub action: String,
}

#[derive(Clone, Debug)]
pub struct Ended {
    pub hold: Hold,
    pub resolution: Resolution,
    pub at: Timestamp,
}

impl Ended {
    /// Still remembered at `now`: expired holds for 7 days (a late commit
    /// is still recorded), committed and released ones for an hour.
    pub fn remembered_at(&self, now: Timestamp) -> bool {
        let keep = match self.resolution {
            Resolution::Expired => 7 * 24 * 3_600_000,
            Resolution::Committed | Resolution::Released => 3_600_000,
        };
        self.at.plus_millis(keep) > now
    }
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub buckets: BTreeMap<GrantId, Bucket>,
    pub holds: BTreeMap<ReservationId, Hold>,
    pub ended: BTreeMap<ReservationId, Ended>,
    pub overage: i64,
    pub used_in_cycle: i64,
    pub cap: Option<i64>,
    /// The account chose its cap: a plan change keeps it.
    pub cap_set: bool,
    pub plan: Option<String>,
    /// A downgrade waiting for the next cycle.
    pub pending_plan: Option<String>,
    pub granted: i64,
    pub consumed: i64,
    pub expired: i64,
    pub voided: i64,
}

fn sum(draws: &[Draw]) -> i64 {
    draws.iter().map(|d| d.amount.get()).sum()
}

/// Draws merged per bucket.
fn per_bucket<'a>(draws: impl IntoIterator<Item = &'a Draw>) -> BTreeMap<GrantId, i64> {
    let mut merged = BTreeMap::new();
    for draw in draws {
        *merged.entry(draw.grant_id.clone()).or_insert(0) += draw.amount.get();
    }
    merged
}

impl Model {
    /// Spendable credits at `at`, less the debt they owe: overage is paid
    /// from the first credits available, so while any is owed nothing is.
    pub fn available(&self, at: Timestamp) -> i64 {
        (self.spendable(at) - self.overage).max(0)
    }

    /// What sits in spendable buckets at `at`, before any debt.
    pub fn spendable(&self, at: Timestamp) -> i64 {
        self.buckets
            .values()
            .filter(|b| b.spendable_at(at))
            .map(|b| b.remaining)
            .sum()
    }

    pub fn held(&self) -> i64 {
        self.buckets.values().map(|b| b.held).sum()
    }

    /// Whether spending `needed` more now would pass the cap: usage in the
    /// cycle plus what is held may not exceed it; free actions always pass.
    pub fn over_cap(&self, needed: i64) -> bool {
        needed > 0
            && self
                .cap
                .is_some_and(|cap| self.used_in_cycle + self.held() + needed > cap)
    }

    fn adopt(&mut self, plan: &str, catalogue: &[ModelPlan]) {
        let terms = catalogue
            .iter()
            .find(|p| p.name == plan)
            .unwrap_or_else(|| panic!("plan {plan} is not in the test's catalogue"));
        if !self.cap_set {
            self.cap = terms.cap;
        }
        self.plan = Some(plan.to_owned());
    }

    /// Takes `draws` from spendable credits at `at`, refusing a draw from a
    /// bucket that is not spendable then or does not hold that much.
    fn take_spendable(&mut self, draws: &[Draw], at: Timestamp, what: &str) {
        for draw in draws {
            let amount = draw.amount.get();
            let bucket = self
                .buckets
                .get_mut(&draw.grant_id)
                .unwrap_or_else(|| panic!("{what} draws from unknown bucket {}", draw.grant_id));
            assert!(
                bucket.spendable_at(at),
                "{what} draws {amount} at {at:?} from bucket {} that is not spendable then: {bucket:?}",
                draw.grant_id
            );
            assert!(
                amount > 0 && amount <= bucket.remaining,
                "{what} draws {amount} from bucket {} with {} spendable: oversold",
                draw.grant_id,
                bucket.remaining
            );
            bucket.remaining -= amount;
        }
    }

    /// Moves held credits back to their buckets (spendable or not).
    fn unhold(&mut self, draws: &BTreeMap<GrantId, i64>, returned: bool) {
        for (grant_id, amount) in draws {
            let bucket = self.buckets.get_mut(grant_id).expect("a held bucket");
            assert!(*amount <= bucket.held, "returns more than {grant_id} holds");
            bucket.held -= amount;
            if returned {
                bucket.remaining += amount;
            }
        }
    }

    /// Folds one event, checking it against the model's own rules.
    pub fn apply(&mut self, event: &Event, catalogue: &[ModelPlan]) {
        match event {
            Event::AccountOpened { terms, .. } => {
                self.cap = terms
                    .spending_cap
                    .filter(|_| terms.cap_set_by_account)
                    .map(|c| c.get());
                self.cap_set = terms.cap_set_by_account;
                if let Some(plan) = &terms.plan {
                    self.adopt(plan.name.as_str(), catalogue);
                }
            }
            Event::CycleStarted { .. } => {
                self.used_in_cycle = 0;
                if let Some(plan) = self.pending_plan.take() {
                    self.adopt(&plan, catalogue);
                }
            }
            Event::PlanChanged {
                at,
                terms,
                effective_at,
            } => {
                if effective_at <= at {
                    self.pending_plan = None;
                    self.adopt(terms.name.as_str(), catalogue);
                } else {
                    self.pending_plan = Some(terms.name.as_str().to_owned());
                }
            }
            Event::SpendingCapSet { cap, .. } => {
                self.cap = cap.map(|c| c.get());
                self.cap_set = true;
            }
            Event::CreditsGranted {
                at,
                grant_id,
                amount,
                effective_at,
                expires_at,
                ..
            } => {
                assert!(amount.is_positive(), "a grant of {amount}");
                assert!(
                    expires_at.is_none_or(|e| e > *at && e > *effective_at),
                    "a grant that expires before it starts"
                );
                let fresh = self.buckets.insert(
                    grant_id.clone(),
                    Bucket {
                        remaining: amount.get(),
                        held: 0,
                        effective_at: *effective_at,
                        expires_at: *expires_at,
                        voided: false,
                    },
                );
                assert!(fresh.is_none(), "bucket {grant_id} granted twice");
                self.granted += amount.get();
            }
            Event::GrantTookEffect {
                at,
                grant_id,
                amount,
            } => {
                let bucket = &self.buckets[grant_id];
                assert_eq!(
                    *at, bucket.effective_at,
                    "{grant_id} took effect off its time"
                );
                assert_eq!(
                    amount.get(),
                    bucket.remaining,
                    "{grant_id} took effect with other than it holds"
                );
            }
            Event::GrantVoided {
                grant_id, amount, ..
            } => {
                let bucket = self.buckets.get_mut(grant_id).expect("a voided bucket");
                assert_eq!(
                    amount.get(),
                    bucket.remaining,
                    "a void withdraws what is left of {grant_id}, no more, no less"
                );
                bucket.remaining = 0;
                bucket.voided = true;
                self.voided += amount.get();
            }
            Event::CreditsAdjusted {
                at,
                amount,
                grant_id,
                draws,
                ..
            } => {
                if amount.is_positive() {
                    let grant_id = grant_id
                        .clone()
                        .expect("an added correction names its bucket");
                    assert!(draws.is_empty());
                    let fresh = self.buckets.insert(
                        grant_id,
                        Bucket {
                            remaining: amount.get(),
                            held: 0,
                            effective_at: *at,
                            expires_at: None,
                            voided: false,
                        },
                    );
                    assert!(fresh.is_none(), "an adjustment reused a bucket");
                    self.granted += amount.get();
                } else {
                    assert_eq!(sum(draws), -amount.get(), "a removal draws what it says");
                    self.take_spendable(draws, *at, "a removal");
                    self.voided -= amount.get();
                }
            }
            Event::CreditsHeld { at, reservation } => {
                assert_eq!(
                    sum(&reservation.draws),
                    reservation.amount.get(),
                    "a hold earmarks exactly its amount"
                );
                assert!(reservation.expires_at > *at, "a hold born expired");
                self.take_spendable(&reservation.draws, *at, "a hold");
                let draws = per_bucket(&reservation.draws);
                for (grant_id, amount) in &draws {
                    self.buckets.get_mut(grant_id).unwrap().held += amount;
                }
                let fresh = self.holds.insert(
                    reservation.id.clone(),
                    Hold {
                        amount: reservation.amount.get(),
                        draws,
                        expires_at: reservation.expires_at,
                        card_priced: reservation.rate_card_version != 0,
                        action: reservation.action.as_str().to_owned(),
                    },
                );
                assert!(fresh.is_none(), "hold {} opened twice", reservation.id);
            }
            Event::HoldExtended {
                reservation_id,
                expires_at,
                ..
            } => {
                let hold = self.holds.get_mut(reservation_id).expect("an open hold");
                assert!(
                    *expires_at >= hold.expires_at,
                    "an extension shortened a hold"
                );
                hold.expires_at = *expires_at;
            }
            Event::HoldReleased {
                at,
                reservation_id,
                amount,
                returned,
            }
            | Event::HoldExpired {
                at,
                reservation_id,
                amount,
                returned,
            } => {
                let hold = self
                    .holds
                    .remove(reservation_id)
                    .unwrap_or_else(|| panic!("{reservation_id} ended but was not open"));
                assert_eq!(amount.get(), hold.amount);
                assert_eq!(
                    per_bucket(returned),
                    hold.draws,
                    "a hold gives back what it took"
                );
                let resolution = if matches!(event, Event::HoldExpired { .. }) {
                    assert_eq!(
                        *at, hold.expires_at,
                        "a hold expires at its expiry, no other time"
                    );
                    Resolution::Expired
                } else {
                    Resolution::Released
                };
                self.unhold(&hold.draws, true);
                self.ended.insert(
                    reservation_id.clone(),
                    Ended {
                        hold,
                        resolution,
                        at: *at,
                    },
                );
            }
            Event::CreditsDebited { at, debit } => {
                let (from_hold, from_available, returned) = (
                    sum(&debit.from_hold),
                    sum(&debit.from_available),
                    sum(&debit.returned),
                );
                let overage = debit.overage.get();
                assert!(overage >= 0);
                assert_eq!(
                    debit.charged.get(),
                    from_hold + from_available + overage,
                    "a receipt adds up"
                );
                match &debit.reservation_id {
                    None => {
                        assert!(from_hold == 0 && returned == 0 && !debit.late);
                        assert_eq!(overage, 0, "only a commit may run into overage");
                    }
                    Some(id) if debit.late => {
                        assert!(
                            self.ended
                                .get(id)
                                .is_some_and(|e| e.resolution == Resolution::Expired),
                            "a late commit of {id}, which had not expired"
                        );
                        assert!(
                            from_hold == 0 && returned == 0,
                            "an expired hold holds nothing"
                        );
                        let hold = self.ended.remove(id).unwrap().hold;
                        self.ended.insert(
                            id.clone(),
                            Ended {
                                hold,
                                resolution: Resolution::Committed,
                                at: *at,
                            },
                        );
                    }
                    Some(id) => {
                        let hold = self
                            .holds
                            .remove(id)
                            .unwrap_or_else(|| panic!("a commit of {id}, which is not open"));
                        let used = per_bucket(&debit.from_hold);
                        let back = per_bucket(&debit.returned);
                        let mut accounted = used.clone();
                        for (grant_id, amount) in &back {
                            *accounted.entry(grant_id.clone()).or_insert(0) += amount;
                        }
                        assert_eq!(accounted, hold.draws, "a commit settles every held credit");
                        assert_eq!(
                            from_hold,
                            debit.charged.get().min(hold.amount),
                            "held credits pay first"
                        );
                        self.unhold(&used, false);
                        self.unhold(&back, true);
                        self.ended.insert(
                            id.clone(),
                            Ended {
                                hold,
                                resolution: Resolution::Committed,
                                at: *at,
                            },
                        );
                    }
                }
                self.take_spendable(&debit.from_available, *at, "a debit");
                if overage > 0 {
                    assert_eq!(
                        self.spendable(*at),
                        0,
                        "overage while credits were still spendable"
                    );
                }
                self.overage += overage;
                self.used_in_cycle += debit.charged.get();
                self.consumed += debit.charged.get();
            }
            Event::CreditsRefunded { at, refund } => {
                let (returned, cancelled) = (sum(&refund.returned), refund.overage_cancelled.get());
                let to_new = refund.refund_grant.as_ref().map_or(0, |d| d.amount.get());
                assert_eq!(
                    returned + cancelled + to_new,
                    refund.amount.get(),
                    "a refund gives back what it says"
                );
                assert!(
                    cancelled <= self.overage,
                    "cancelled more debt than was owed"
                );
                self.overage -= cancelled;
                for (grant_id, amount) in per_bucket(&refund.returned) {
                    let bucket = self
                        .buckets
                        .get_mut(&grant_id)
                        .unwrap_or_else(|| panic!("a refund to unknown bucket {grant_id}"));
                    assert!(
                        bucket.exists()
                            && !bucket.voided
                            && bucket.expires_at.is_none_or(|e| e > *at),
                        "a refund to {grant_id}, which is not live: {bucket:?}"
                    );
                    bucket.remaining += amount;
                }
                if let Some(draw) = &refund.refund_grant {
                    assert!(draw.amount.is_positive());
                    let fresh = self.buckets.insert(
                        draw.grant_id.clone(),
                        Bucket {
                            remaining: draw.amount.get(),
                            held: 0,
                            effective_at: *at,
                            expires_at: None,
                            voided: false,
                        },
                    );
                    assert!(fresh.is_none(), "a refund bucket reused a grant id");
                }
                let back = refund.cycle_returned.get();
                assert!(
                    (0..=self.used_in_cycle).contains(&back),
                    "{back} off a cycle that used {}",
                    self.used_in_cycle
                );
                self.used_in_cycle -= back;
                self.consumed -= refund.amount.get();
            }
            Event::OverageRepaid { at, amount, draws } => {
                assert_eq!(sum(draws), amount.get());
                assert!(amount.get() <= self.overage, "repaid more than was owed");
                self.take_spendable(draws, *at, "a repayment");
                self.overage -= amount.get();
            }
            Event::BucketExpired {
                at,
                grant_id,
                amount,
            } => {
                let bucket = self.buckets.get_mut(grant_id).expect("an expiring bucket");
                assert!(
                    bucket.expires_at.is_some_and(|e| e <= *at),
                    "{grant_id} expired at {at:?} before its expiry {:?}",
                    bucket.expires_at
                );
                assert_eq!(
                    amount.get(),
                    bucket.remaining,
                    "an expiry takes what is left"
                );
                bucket.remaining = 0;
                self.expired += amount.get();
            }
            Event::DayStarted { .. }
            | Event::BillingAnchorSet { .. }
            | Event::AlertThresholdsSet { .. }
            | Event::AlertRaised { .. } => {}
        }
        for (grant_id, bucket) in &self.buckets {
            assert!(
                bucket.remaining >= 0 && bucket.held >= 0,
                "{grant_id} went negative: {bucket:?}"
            );
        }
        assert!(self.overage >= 0);
    }

    /// How a hold that a commit, release or extend names stands at `now`.
    pub fn hold_state(&self, id: &ReservationId, now: Timestamp) -> HoldState {
        if self.holds.contains_key(id) {
            return HoldState::Open;
        }
        match self.ended.get(id).filter(|e| e.remembered_at(now)) {
            Some(ended) if ended.resolution == Resolution::Expired => HoldState::Expired,
            Some(ended) => HoldState::Resolved(ended.resolution),
            None => HoldState::Unknown,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldState {
    Open,
    /// Expired and still remembered: a commit is recorded late.
    Expired,
    Resolved(Resolution),
    Unknown,
}
