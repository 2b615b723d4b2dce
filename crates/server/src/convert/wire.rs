//! The domain on the wire: balances, buckets, draws, receipts and
//! reservations as tally.v1 messages.

use tally_api::v1 as pb;
use tally_core::{
    AccountId, BalanceView, Bucket, BucketKind, Debit, Dimensions, Draw, GrantSource, Millicredits,
    ModelName, Refund, Reservation, TestClockId, Timestamp,
};

use super::alerts::alert_thresholds;

pub(super) fn rfc3339(at: Timestamp) -> String {
    let t = timestamp(at);
    prost_types::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
    .to_string()
}

pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let millis = at.as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn bucket_kind(kind: BucketKind) -> pb::BucketKind {
    match kind {
        BucketKind::Daily => pb::BucketKind::Daily,
        BucketKind::Monthly => pb::BucketKind::Monthly,
        BucketKind::TopUp => pb::BucketKind::TopUp,
        BucketKind::Promotional => pb::BucketKind::Promotional,
        BucketKind::Trial => pb::BucketKind::Trial,
    }
}

fn grant_source(source: GrantSource) -> pb::GrantSource {
    match source {
        GrantSource::Plan => pb::GrantSource::Plan,
        GrantSource::Purchase => pb::GrantSource::Purchase,
        GrantSource::Promo => pb::GrantSource::Promo,
        GrantSource::Referral => pb::GrantSource::Referral,
        GrantSource::Adjustment => pb::GrantSource::Adjustment,
        GrantSource::Refund => pb::GrantSource::Refund,
    }
}

pub fn bucket(bucket: &Bucket) -> pb::Bucket {
    pb::Bucket {
        grant_id: bucket.grant_id.to_string(),
        kind: bucket_kind(bucket.kind).into(),
        source: grant_source(bucket.source).into(),
        priority: bucket.priority,
        amount_millicredits: bucket.amount.get(),
        remaining_millicredits: bucket.remaining.get(),
        held_millicredits: bucket.held.get(),
        effective_at: Some(timestamp(bucket.effective_at)),
        expires_at: bucket.expires_at.map(timestamp),
        cost_basis: bucket.cost_basis.as_ref().map(|c| pb::CostBasis {
            currency_code: c.currency_code.clone(),
            micros_per_credit: c.micros_per_credit,
        }),
        reference: bucket.reference.clone(),
    }
}

pub fn draws(draws: &[Draw]) -> Vec<pb::Draw> {
    draws.iter().map(draw).collect()
}

fn draw(d: &Draw) -> pb::Draw {
    pb::Draw {
        grant_id: d.grant_id.to_string(),
        kind: bucket_kind(d.kind).into(),
        amount_millicredits: d.amount.get(),
    }
}

pub fn dimensions(d: &Dimensions) -> pb::Dimensions {
    let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::Dimensions {
        input_tokens: count(d.input_tokens),
        output_tokens: count(d.output_tokens),
        context_tokens: count(d.context_tokens),
        images: count(d.images),
        tool_calls: count(d.tool_calls),
        units: d
            .units
            .iter()
            .map(|(unit, n)| (unit.to_string(), count(*n)))
            .collect(),
    }
}

pub(super) fn model(model: &Option<ModelName>) -> String {
    model.as_ref().map(ToString::to_string).unwrap_or_default()
}

pub fn receipt(debit: &Debit) -> pb::Receipt {
    pb::Receipt {
        reservation_id: debit
            .reservation_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        member_id: debit.member.to_string(),
        action: debit.action.to_string(),
        model: model(&debit.model),
        charged_millicredits: debit.charged.get(),
        draws: draws(&debit.paid_by()),
        overage_millicredits: debit.overage.get(),
        released_millicredits: debit.released().get(),
        late: debit.late,
        rate_card_version: version(debit.rate_card_version),
        dimensions: debit.dimensions.as_ref().map(dimensions),
        capability: debit.capability.clone().unwrap_or_default(),
    }
}

pub fn refund_receipt(refund: &Refund) -> pb::RefundReceipt {
    pb::RefundReceipt {
        charge_idempotency_key: refund.charge_key.to_string(),
        amount_millicredits: refund.amount.get(),
        returned: draws(&refund.returned),
        overage_cancelled_millicredits: refund.overage_cancelled.get(),
        refund_bucket: refund.refund_grant.as_ref().map(draw),
        refunded_millicredits: refund.refunded.get(),
        refundable_millicredits: refund.refundable().get(),
        cycle_returned_millicredits: refund.cycle_returned.get(),
        member_id: refund.member.to_string(),
        action: refund.action.to_string(),
        model: model(&refund.model),
        reason: refund.reason.clone(),
    }
}

pub fn reservation(reservation: &Reservation) -> pb::Reservation {
    pb::Reservation {
        reservation_id: reservation.id.to_string(),
        member_id: reservation.member.to_string(),
        action: reservation.action.to_string(),
        model: model(&reservation.model),
        held_millicredits: reservation.amount.get(),
        draws: draws(&reservation.draws),
        expires_at: Some(timestamp(reservation.expires_at)),
        rate_card_version: version(reservation.rate_card_version),
        dimensions: reservation.dimensions.as_ref().map(dimensions),
    }
}

fn plan_name(terms: Option<&tally_core::PlanTerms>) -> String {
    terms.map(|t| t.name.to_string()).unwrap_or_default()
}

pub fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn balance(account: &AccountId, view: &BalanceView) -> pb::Balance {
    pb::Balance {
        account_id: account.to_string(),
        available_millicredits: view.available.get(),
        held_millicredits: view.held.get(),
        overage_millicredits: view.overage.get(),
        buckets: view.buckets.iter().map(bucket).collect(),
        granted_millicredits: view.totals.granted.get(),
        consumed_millicredits: view.totals.consumed.get(),
        expired_millicredits: view.totals.expired.get(),
        voided_millicredits: view.totals.voided.get(),
        open_reservations: i32::try_from(view.open_reservations).unwrap_or(i32::MAX),
        last_activity_at: view.last_event_at.map(timestamp),
        version: version(view.version),
        upcoming_millicredits: view.upcoming.get(),
        plan: plan_name(view.terms.plan.as_ref()),
        pending_plan: plan_name(view.pending_plan.as_ref()),
        time_zone: view.terms.time_zone.to_string(),
        billing_anchor: Some(pb::BillingAnchor {
            day: i32::from(view.terms.anchor.day()),
            hour: i32::from(view.terms.anchor.hour()),
            minute: i32::from(view.terms.anchor.minute()),
        }),
        cycle_start: view.cycle.map(|c| timestamp(c.start)),
        cycle_end: view.cycle.map(|c| timestamp(c.end)),
        used_this_cycle_millicredits: view.used_in_cycle.get(),
        monthly_allowance_millicredits: view.terms.monthly_allowance().get(),
        daily_allowance_millicredits: view.terms.daily_allowance().get(),
        spending_cap_millicredits: view.terms.spending_cap.map(Millicredits::get),
        alert_thresholds: Some(alert_thresholds(view.terms.alert_thresholds())),
        test_clock_id: test_clock_id(view.terms.test_clock.as_deref()),
        last_debit: view.last_debit.as_ref().map(|last| pb::LastDebit {
            charged_at: Some(timestamp(last.at)),
            member_id: last.member.to_string(),
            action: last.action.to_string(),
            model: last
                .model
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            amount_millicredits: last.charged.get(),
        }),
    }
}

/// A response's `test_clock_id`: empty for a real account.
pub fn test_clock_id(clock: Option<&TestClockId>) -> String {
    clock.map(ToString::to_string).unwrap_or_default()
}
