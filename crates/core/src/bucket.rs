//! Credit buckets and the order credits are drawn from them.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::{GrantId, Millicredits, Timestamp};

/// What kind of credits a bucket holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketKind {
    Daily,
    Monthly,
    TopUp,
    Promotional,
    Trial,
}

impl BucketKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            BucketKind::Daily => "daily",
            BucketKind::Monthly => "monthly",
            BucketKind::TopUp => "top_up",
            BucketKind::Promotional => "promotional",
            BucketKind::Trial => "trial",
        }
    }

    /// SPEC §1's default deduction order: daily, then monthly (and trial,
    /// which stands in for a plan allowance), then top-up, then promotional.
    /// Gaps leave room for custom priorities in between.
    pub const fn default_priority(self) -> i32 {
        match self {
            BucketKind::Daily => 10,
            BucketKind::Monthly | BucketKind::Trial => 20,
            BucketKind::TopUp => 30,
            BucketKind::Promotional => 40,
        }
    }

    pub const fn default_source(self) -> GrantSource {
        match self {
            BucketKind::Daily | BucketKind::Monthly | BucketKind::Trial => GrantSource::Plan,
            BucketKind::TopUp => GrantSource::Purchase,
            BucketKind::Promotional => GrantSource::Promo,
        }
    }
}

/// Where a bucket's credits came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    Plan,
    Purchase,
    Promo,
    Referral,
    Adjustment,
    /// Credits of a refunded charge whose own bucket was gone.
    Refund,
}

/// Money paid per credit, for finance. Never used in balance arithmetic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostBasis {
    pub currency_code: String,
    pub micros_per_credit: i64,
}

/// A bucket of credits as it stands after the events so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub grant_id: GrantId,
    pub kind: BucketKind,
    pub source: GrantSource,
    pub priority: i32,
    pub amount: Millicredits,
    /// Spendable: not held, consumed, expired or voided.
    pub remaining: Millicredits,
    /// Earmarked by open reservations.
    pub held: Millicredits,
    pub effective_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub cost_basis: Option<CostBasis>,
    pub reference: String,
    /// The stream version of its grant: "oldest first" among equals.
    pub granted_version: u64,
    /// Set once the grant is voided: credits that come back to it from a
    /// hold are withdrawn too.
    pub voided: bool,
    /// Granted to take effect later and not yet announced by
    /// [`crate::Event::GrantTookEffect`]: not spendable until then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upcoming: bool,
}

impl Bucket {
    /// Whether its credits were spendable just before an event at `at`:
    /// as [`is_spendable_at`](Self::is_spendable_at), but a bucket expiring
    /// at `at` itself still counts.
    pub fn is_spendable_just_before(&self, at: Timestamp) -> bool {
        !self.voided
            && !self.upcoming
            && self.effective_at <= at
            && self.expires_at.is_none_or(|e| e >= at)
    }

    /// Whether its credits may be spent or held at `at`.
    pub fn is_spendable_at(&self, at: Timestamp) -> bool {
        !self.voided && !self.upcoming && self.effective_at <= at && !self.is_expired_at(at)
    }

    pub fn is_expired_at(&self, at: Timestamp) -> bool {
        self.expires_at.is_some_and(|expiry| expiry <= at)
    }

    /// Lowest priority number first; within a priority the bucket that
    /// expires soonest (never-expiring last), then the oldest grant.
    pub fn deduction_order(&self, other: &Bucket) -> Ordering {
        let expiry = |b: &Bucket| (b.expires_at.is_none(), b.expires_at);
        self.priority
            .cmp(&other.priority)
            .then_with(|| expiry(self).cmp(&expiry(other)))
            .then_with(|| self.granted_version.cmp(&other.granted_version))
    }
}

/// Credits moved from or to one bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draw {
    pub grant_id: GrantId,
    pub kind: BucketKind,
    pub amount: Millicredits,
}

/// Plans draws of up to `wanted` from buckets, in deduction order, taking
/// from each what `spendable` says it can give. Returns the draws and what
/// could not be covered.
pub(crate) fn plan_draws<'a>(
    buckets: impl Iterator<Item = &'a Bucket>,
    wanted: Millicredits,
    spendable: impl Fn(&Bucket) -> Millicredits,
) -> (Vec<Draw>, Millicredits) {
    let mut ordered: Vec<&Bucket> = buckets.collect();
    ordered.sort_by(|a, b| a.deduction_order(b));
    let mut left = wanted;
    let mut draws = Vec::new();
    for bucket in ordered {
        if !left.is_positive() {
            break;
        }
        let take = spendable(bucket).min(left);
        if take.is_positive() {
            draws.push(Draw {
                grant_id: bucket.grant_id.clone(),
                kind: bucket.kind,
                amount: take,
            });
            left -= take;
        }
    }
    (draws, left)
}
