//! What happened to an account. Events are facts: never edited, never
//! deleted. Each one carries every number its effect needs, so applying it
//! is plain arithmetic and needs no rate card, clock or configuration.

use serde::{Deserialize, Serialize};

use crate::{
    AccountTerms, ActionKey, Alert, AlertThresholds, BillingAnchor, BucketKind, CostBasis,
    Dimensions, Draw, GrantId, GrantSource, IdempotencyKey, MemberId, Millicredits, ModelName,
    PlanTerms, Reservation, ReservationId, Timestamp,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    AccountOpened {
        at: Timestamp,
        #[serde(default)]
        terms: AccountTerms,
        /// When the plan's allowances begin: now, or the end of a trial.
        /// `None` (events from before plans existed) means `at`.
        #[serde(default)]
        allowances_from: Option<Timestamp>,
    },
    /// A billing cycle begins at `at` and ends at `end`. A plan change
    /// waiting for this cycle takes effect.
    CycleStarted {
        at: Timestamp,
        end: Timestamp,
    },
    /// A local day begins at `at` (its daily allowance follows).
    DayStarted {
        at: Timestamp,
        end: Timestamp,
    },
    /// The account moves to `terms`, at once or (a downgrade) when the
    /// current cycle ends at `effective_at`.
    PlanChanged {
        at: Timestamp,
        terms: PlanTerms,
        effective_at: Timestamp,
    },
    /// `None` removes the cap.
    SpendingCapSet {
        at: Timestamp,
        cap: Option<Millicredits>,
    },
    /// Cycles renew on `anchor` from the end of the current one.
    BillingAnchorSet {
        at: Timestamp,
        anchor: BillingAnchor,
    },
    CreditsGranted {
        at: Timestamp,
        grant_id: GrantId,
        kind: BucketKind,
        source: GrantSource,
        priority: i32,
        amount: Millicredits,
        effective_at: Timestamp,
        expires_at: Option<Timestamp>,
        cost_basis: Option<CostBasis>,
        reference: String,
        /// The bucket takes effect later, and a [`Event::GrantTookEffect`]
        /// will say when: until then it is not spendable. `false` for
        /// grants effective at once, and for grants written before schema
        /// version 2 of this event, whose buckets took effect silently at
        /// `effective_at`.
        #[serde(default)]
        upcoming: bool,
    },
    /// An upcoming bucket's credits became spendable, at its
    /// `effective_at`: the ledger's line for a balance that rose with no
    /// command.
    GrantTookEffect {
        at: Timestamp,
        grant_id: GrantId,
        amount: Millicredits,
    },
    /// What was spendable in a bucket is withdrawn (at the void, or later
    /// when held credits come back to a voided bucket).
    GrantVoided {
        at: Timestamp,
        grant_id: GrantId,
        amount: Millicredits,
        reason: String,
    },
    /// An operator's signed correction (`Adjust`): a positive `amount`
    /// is a new promotional bucket `grant_id` (counted as granted); a
    /// negative one is taken from `draws` (counted as voided). Its own
    /// ledger kind, so a correction never reads as a purchase or a void.
    CreditsAdjusted {
        at: Timestamp,
        amount: Millicredits,
        grant_id: Option<GrantId>,
        draws: Vec<Draw>,
        reason: String,
        operator: String,
    },
    CreditsHeld {
        at: Timestamp,
        reservation: Reservation,
    },
    HoldExtended {
        at: Timestamp,
        reservation_id: ReservationId,
        expires_at: Timestamp,
    },
    HoldReleased {
        at: Timestamp,
        reservation_id: ReservationId,
        amount: Millicredits,
        returned: Vec<Draw>,
    },
    /// `at` is the hold's expiry, whenever it was noticed.
    HoldExpired {
        at: Timestamp,
        reservation_id: ReservationId,
        amount: Millicredits,
        returned: Vec<Draw>,
    },
    CreditsDebited {
        at: Timestamp,
        debit: Debit,
    },
    /// Credits of an earlier charge given back (`Refund`): `returned` to
    /// the buckets that paid and are still live, `overage_cancelled` off
    /// the debt the charge ran up, the rest into a new refund bucket
    /// `refund_grant`. `cycle_returned` is what comes off this cycle's
    /// spending (the charge was this cycle's). Usage reports count it as
    /// negative usage of the charge's action on the refund's day.
    CreditsRefunded {
        at: Timestamp,
        refund: Refund,
    },
    /// Overage paid from credits that became available.
    OverageRepaid {
        at: Timestamp,
        amount: Millicredits,
        draws: Vec<Draw>,
    },
    /// `at` is the bucket's expiry, or the moment held credits came back to
    /// an already expired bucket.
    BucketExpired {
        at: Timestamp,
        grant_id: GrantId,
        amount: Millicredits,
    },
    /// The account's own alert thresholds; `None` goes back to the plan's.
    AlertThresholdsSet {
        at: Timestamp,
        thresholds: Option<AlertThresholds>,
    },
    /// A level was crossed by the events just before this one (see
    /// [`Alert`] for the rules). `at` is when the crossing happened.
    AlertRaised {
        at: Timestamp,
        alert: Alert,
    },
}

/// The payload of [`Event::CreditsDebited`]: a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debit {
    /// Set for commits; `None` for a direct debit.
    pub reservation_id: Option<ReservationId>,
    pub member: MemberId,
    pub action: ActionKey,
    pub model: Option<ModelName>,
    /// The whole cost: from_hold + from_available + overage.
    pub charged: Millicredits,
    /// Held credits consumed.
    pub from_hold: Vec<Draw>,
    /// Spendable credits consumed on top of the hold.
    pub from_available: Vec<Draw>,
    /// Held credits not needed, returned to their buckets.
    pub returned: Vec<Draw>,
    /// What no bucket could pay.
    pub overage: Millicredits,
    /// The hold had already expired when the commit arrived.
    pub late: bool,
    pub rate_card_version: u64,
    /// What the action was priced from, when it was metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Dimensions>,
    /// The product capability the rate card files the action under (e.g.
    /// `writing`), when the price came from a card action that names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// When the action happened, for one reported after the fact; its
    /// usage counts on that local day. `None`: when it was charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Timestamp>,
}

/// The payload of [`Event::CreditsRefunded`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// The idempotency key of the charge refunded.
    pub charge_key: IdempotencyKey,
    /// Everything given back: returned + overage_cancelled + the refund
    /// bucket's amount.
    pub amount: Millicredits,
    pub returned: Vec<Draw>,
    pub overage_cancelled: Millicredits,
    /// The bucket that takes credits whose own bucket is gone (spent,
    /// expired or voided since), with what it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_grant: Option<Draw>,
    pub cycle_returned: Millicredits,
    /// The charge's whole cost, and how much of it refunds have given
    /// back by now, this one included: never more than `charged`.
    pub charged: Millicredits,
    pub refunded: Millicredits,
    /// The charge's action, as usage reports file the refund.
    pub member: MemberId,
    pub action: ActionKey,
    pub model: Option<ModelName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    pub reason: String,
}

impl Refund {
    /// Of the charge, what is left to refund after this refund.
    pub fn refundable(&self) -> Millicredits {
        self.charged - self.refunded
    }
}

impl Debit {
    pub fn released(&self) -> Millicredits {
        self.returned.iter().map(|d| d.amount).sum()
    }

    /// Every bucket that paid, merged, in the order they paid.
    pub fn paid_by(&self) -> Vec<Draw> {
        let mut merged: Vec<Draw> = Vec::new();
        for draw in self.from_hold.iter().chain(&self.from_available) {
            match merged.iter_mut().find(|d| d.grant_id == draw.grant_id) {
                Some(existing) => existing.amount += draw.amount,
                None => merged.push(draw.clone()),
            }
        }
        merged
    }
}

impl Event {
    pub fn at(&self) -> Timestamp {
        match self {
            Event::AccountOpened { at, .. }
            | Event::CycleStarted { at, .. }
            | Event::DayStarted { at, .. }
            | Event::PlanChanged { at, .. }
            | Event::SpendingCapSet { at, .. }
            | Event::BillingAnchorSet { at, .. }
            | Event::CreditsGranted { at, .. }
            | Event::GrantTookEffect { at, .. }
            | Event::GrantVoided { at, .. }
            | Event::CreditsAdjusted { at, .. }
            | Event::CreditsHeld { at, .. }
            | Event::HoldExtended { at, .. }
            | Event::HoldReleased { at, .. }
            | Event::HoldExpired { at, .. }
            | Event::CreditsDebited { at, .. }
            | Event::CreditsRefunded { at, .. }
            | Event::OverageRepaid { at, .. }
            | Event::BucketExpired { at, .. }
            | Event::AlertThresholdsSet { at, .. }
            | Event::AlertRaised { at, .. } => *at,
        }
    }

    /// The name stored beside the payload, so the log can be filtered
    /// without decoding it.
    pub fn type_name(&self) -> &'static str {
        self.kind().name()
    }

    /// Which kind of event this is, without its data.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::AccountOpened { .. } => EventKind::AccountOpened,
            Event::CycleStarted { .. } => EventKind::CycleStarted,
            Event::DayStarted { .. } => EventKind::DayStarted,
            Event::PlanChanged { .. } => EventKind::PlanChanged,
            Event::SpendingCapSet { .. } => EventKind::SpendingCapSet,
            Event::BillingAnchorSet { .. } => EventKind::BillingAnchorSet,
            Event::CreditsGranted { .. } => EventKind::CreditsGranted,
            Event::GrantTookEffect { .. } => EventKind::GrantTookEffect,
            Event::GrantVoided { .. } => EventKind::GrantVoided,
            Event::CreditsAdjusted { .. } => EventKind::CreditsAdjusted,
            Event::CreditsHeld { .. } => EventKind::CreditsHeld,
            Event::HoldExtended { .. } => EventKind::HoldExtended,
            Event::HoldReleased { .. } => EventKind::HoldReleased,
            Event::HoldExpired { .. } => EventKind::HoldExpired,
            Event::CreditsDebited { .. } => EventKind::CreditsDebited,
            Event::CreditsRefunded { .. } => EventKind::CreditsRefunded,
            Event::OverageRepaid { .. } => EventKind::OverageRepaid,
            Event::BucketExpired { .. } => EventKind::BucketExpired,
            Event::AlertThresholdsSet { .. } => EventKind::AlertThresholdsSet,
            Event::AlertRaised { .. } => EventKind::AlertRaised,
        }
    }

    /// How many milli-credits the event moved, as the ledger's amount
    /// column shows it; zero for events that move none.
    pub fn amount_moved(&self) -> Millicredits {
        match self {
            Event::CreditsGranted { amount, .. }
            | Event::GrantTookEffect { amount, .. }
            | Event::GrantVoided { amount, .. }
            | Event::HoldReleased { amount, .. }
            | Event::HoldExpired { amount, .. }
            | Event::OverageRepaid { amount, .. }
            | Event::BucketExpired { amount, .. } => *amount,
            Event::CreditsHeld { reservation, .. } => reservation.amount,
            Event::CreditsDebited { debit, .. } => debit.charged,
            Event::CreditsRefunded { refund, .. } => refund.amount,
            // Signed: what was added or (negative) removed.
            Event::CreditsAdjusted { amount, .. } => *amount,
            Event::AccountOpened { .. }
            | Event::CycleStarted { .. }
            | Event::DayStarted { .. }
            | Event::PlanChanged { .. }
            | Event::SpendingCapSet { .. }
            | Event::BillingAnchorSet { .. }
            | Event::HoldExtended { .. }
            | Event::AlertThresholdsSet { .. }
            | Event::AlertRaised { .. } => Millicredits::ZERO,
        }
    }

    /// The hold an event is about, when it names one by id; a new hold
    /// carries its whole reservation instead.
    pub fn reservation_id(&self) -> Option<&ReservationId> {
        match self {
            Event::HoldExtended { reservation_id, .. }
            | Event::HoldReleased { reservation_id, .. }
            | Event::HoldExpired { reservation_id, .. } => Some(reservation_id),
            Event::CreditsHeld { reservation, .. } => Some(&reservation.id),
            Event::AccountOpened { .. }
            | Event::CycleStarted { .. }
            | Event::DayStarted { .. }
            | Event::PlanChanged { .. }
            | Event::SpendingCapSet { .. }
            | Event::BillingAnchorSet { .. }
            | Event::CreditsGranted { .. }
            | Event::GrantTookEffect { .. }
            | Event::GrantVoided { .. }
            | Event::CreditsAdjusted { .. }
            | Event::CreditsDebited { .. }
            | Event::CreditsRefunded { .. }
            | Event::OverageRepaid { .. }
            | Event::BucketExpired { .. }
            | Event::AlertThresholdsSet { .. }
            | Event::AlertRaised { .. } => None,
        }
    }
}

/// Declares [`EventKind`] from one list, so its variants, their stored
/// names and [`EventKind::ALL`] can never disagree.
macro_rules! event_kinds {
    ($($kind:ident => $name:literal),* $(,)?) => {
        /// The kinds of [`Event`], without their data: what a match must
        /// name when a new event is added, wherever events are shown or
        /// filtered.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($kind),*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$kind),*];

            /// The name stored beside the event in the log and the ledger.
            pub fn name(self) -> &'static str {
                match self {
                    $(EventKind::$kind => $name),*
                }
            }

            /// The kind stored under `name`, if any.
            pub fn from_name(name: &str) -> Option<EventKind> {
                match name {
                    $($name => Some(EventKind::$kind),)*
                    _ => None,
                }
            }
        }
    };
}

event_kinds! {
    AccountOpened => "account_opened",
    CycleStarted => "cycle_started",
    DayStarted => "day_started",
    PlanChanged => "plan_changed",
    SpendingCapSet => "spending_cap_set",
    BillingAnchorSet => "billing_anchor_set",
    CreditsGranted => "credits_granted",
    GrantTookEffect => "grant_took_effect",
    GrantVoided => "grant_voided",
    CreditsAdjusted => "credits_adjusted",
    CreditsHeld => "credits_held",
    HoldExtended => "hold_extended",
    HoldReleased => "hold_released",
    HoldExpired => "hold_expired",
    CreditsDebited => "credits_debited",
    CreditsRefunded => "credits_refunded",
    OverageRepaid => "overage_repaid",
    BucketExpired => "bucket_expired",
    AlertThresholdsSet => "alert_thresholds_set",
    AlertRaised => "alert_raised",
}
