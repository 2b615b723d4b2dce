//! The ledger on the wire: each event as a ledger entry, and the ledger
//! kinds both ways (an event's kind, and the kinds a listing filters on).

use tally_api::v1 as pb;
use tally_core::{BucketKind, EventKind, Millicredits};

use super::Validator;
use super::alerts::{alert, describe_alert, describe_thresholds};
use super::wire::{
    bucket_kind, draws, model, receipt, refund_receipt, rfc3339, timestamp, version,
};

/// The ledger kind an event shows as.
fn ledger_kind(kind: EventKind) -> pb::LedgerEntryKind {
    use pb::LedgerEntryKind as Ledger;
    match kind {
        EventKind::AccountOpened => Ledger::AccountOpened,
        EventKind::CreditsGranted => Ledger::Grant,
        EventKind::GrantTookEffect => Ledger::GrantEffective,
        EventKind::GrantVoided => Ledger::GrantVoided,
        EventKind::CreditsAdjusted => Ledger::Adjustment,
        EventKind::CreditsHeld => Ledger::Hold,
        EventKind::HoldExtended => Ledger::HoldExtended,
        EventKind::HoldReleased => Ledger::HoldReleased,
        EventKind::HoldExpired => Ledger::HoldExpired,
        EventKind::CreditsDebited => Ledger::Debit,
        EventKind::CreditsRefunded => Ledger::Refund,
        EventKind::OverageRepaid => Ledger::OverageRepaid,
        EventKind::BucketExpired => Ledger::BucketExpired,
        EventKind::CycleStarted => Ledger::CycleStarted,
        EventKind::DayStarted => Ledger::DayStarted,
        EventKind::PlanChanged => Ledger::PlanChanged,
        EventKind::SpendingCapSet => Ledger::SpendingCapSet,
        EventKind::BillingAnchorSet => Ledger::BillingAnchorSet,
        EventKind::AlertRaised => Ledger::Alert,
        EventKind::AlertThresholdsSet => Ledger::AlertThresholdsSet,
    }
}

/// The event a ledger kind filters on; `None` for unspecified.
fn event_kind(kind: pb::LedgerEntryKind) -> Option<EventKind> {
    use pb::LedgerEntryKind as Ledger;
    Some(match kind {
        Ledger::Unspecified => return None,
        Ledger::AccountOpened => EventKind::AccountOpened,
        Ledger::Grant => EventKind::CreditsGranted,
        Ledger::GrantEffective => EventKind::GrantTookEffect,
        Ledger::GrantVoided => EventKind::GrantVoided,
        Ledger::Adjustment => EventKind::CreditsAdjusted,
        Ledger::Hold => EventKind::CreditsHeld,
        Ledger::HoldExtended => EventKind::HoldExtended,
        Ledger::HoldReleased => EventKind::HoldReleased,
        Ledger::HoldExpired => EventKind::HoldExpired,
        Ledger::Debit => EventKind::CreditsDebited,
        Ledger::Refund => EventKind::CreditsRefunded,
        Ledger::OverageRepaid => EventKind::OverageRepaid,
        Ledger::BucketExpired => EventKind::BucketExpired,
        Ledger::CycleStarted => EventKind::CycleStarted,
        Ledger::DayStarted => EventKind::DayStarted,
        Ledger::PlanChanged => EventKind::PlanChanged,
        Ledger::SpendingCapSet => EventKind::SpendingCapSet,
        Ledger::BillingAnchorSet => EventKind::BillingAnchorSet,
        Ledger::Alert => EventKind::AlertRaised,
        Ledger::AlertThresholdsSet => EventKind::AlertThresholdsSet,
    })
}

impl Validator {
    pub fn ledger_kinds(&mut self, field: &str, kinds: &[i32]) -> Vec<&'static str> {
        kinds
            .iter()
            .filter_map(|value| {
                let found = pb::LedgerEntryKind::try_from(*value)
                    .ok()
                    .and_then(event_kind);
                if found.is_none() {
                    self.violation(field, format!("unknown or unspecified kind {value}"));
                }
                found.map(EventKind::name)
            })
            .collect()
    }
}

pub fn ledger_entry(entry: &tally_projections::LedgerEntry) -> pb::LedgerEntry {
    use tally_core::Event;
    let kind = ledger_kind(entry.event.kind());
    let mut out = pb::LedgerEntry {
        sequence: version(entry.version),
        occurred_at: Some(timestamp(entry.event.at())),
        kind: kind.into(),
        available_before_millicredits: entry.available_before.get(),
        available_after_millicredits: entry.available_after.get(),
        idempotency_key: entry.idempotency_key.clone().unwrap_or_default(),
        ..Default::default()
    };
    match &entry.event {
        Event::AccountOpened { .. } => {}
        Event::CreditsGranted {
            grant_id,
            kind,
            amount,
            reference,
            ..
        } => {
            out.amount_millicredits = amount.get();
            out.grant_id = grant_id.to_string();
            out.bucket_kind = bucket_kind(*kind).into();
            out.note = reference.clone();
        }
        Event::GrantTookEffect {
            grant_id, amount, ..
        } => {
            out.amount_millicredits = amount.get();
            out.grant_id = grant_id.to_string();
            out.note = "granted earlier, spendable from now".into();
        }
        Event::GrantVoided {
            grant_id,
            amount,
            reason,
            ..
        } => {
            out.amount_millicredits = amount.get();
            out.grant_id = grant_id.to_string();
            out.note = reason.clone();
        }
        Event::CreditsAdjusted {
            amount,
            grant_id,
            draws: taken,
            reason,
            operator,
            ..
        } => {
            out.amount_millicredits = amount.get();
            if let Some(grant_id) = grant_id {
                out.grant_id = grant_id.to_string();
                out.bucket_kind = bucket_kind(BucketKind::Promotional).into();
            }
            out.draws = draws(taken);
            out.note = reason.clone();
            out.operator = operator.clone();
        }
        Event::CreditsHeld { reservation, .. } => {
            out.amount_millicredits = reservation.amount.get();
            out.member_id = reservation.member.to_string();
            out.action = reservation.action.to_string();
            out.model = model(&reservation.model);
            out.reservation_id = reservation.id.to_string();
            out.draws = draws(&reservation.draws);
        }
        Event::HoldExtended { reservation_id, .. } => {
            out.reservation_id = reservation_id.to_string();
        }
        Event::HoldReleased {
            reservation_id,
            amount,
            returned,
            ..
        }
        | Event::HoldExpired {
            reservation_id,
            amount,
            returned,
            ..
        } => {
            out.amount_millicredits = amount.get();
            out.reservation_id = reservation_id.to_string();
            out.draws = draws(returned);
        }
        Event::CreditsDebited { debit, .. } => {
            out.amount_millicredits = debit.charged.get();
            out.member_id = debit.member.to_string();
            out.action = debit.action.to_string();
            out.model = model(&debit.model);
            out.reservation_id = debit
                .reservation_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            out.draws = draws(&debit.paid_by());
            out.receipt = Some(receipt(debit));
        }
        Event::CreditsRefunded { refund, .. } => {
            out.amount_millicredits = refund.amount.get();
            out.member_id = refund.member.to_string();
            out.action = refund.action.to_string();
            out.model = model(&refund.model);
            out.draws = draws(&refund.returned);
            if let Some(bucket) = &refund.refund_grant {
                out.grant_id = bucket.grant_id.to_string();
                out.bucket_kind = bucket_kind(bucket.kind).into();
            }
            out.note = refund.reason.clone();
            out.refund = Some(refund_receipt(refund));
        }
        Event::OverageRepaid {
            amount,
            draws: paid,
            ..
        } => {
            out.amount_millicredits = amount.get();
            out.draws = draws(paid);
        }
        Event::BucketExpired {
            grant_id, amount, ..
        } => {
            out.amount_millicredits = amount.get();
            out.grant_id = grant_id.to_string();
        }
        Event::CycleStarted { end, .. } | Event::DayStarted { end, .. } => {
            out.note = format!("until {}", rfc3339(*end));
        }
        Event::PlanChanged {
            terms,
            effective_at,
            ..
        } => {
            out.note = format!(
                "plan {} (catalogue v{}) from {}",
                terms.name,
                terms.catalogue_version,
                rfc3339(*effective_at)
            );
        }
        Event::SpendingCapSet { cap, .. } => {
            out.amount_millicredits = cap.map_or(0, Millicredits::get);
            out.note = match cap {
                Some(_) => "cap set".into(),
                None => "cap removed".into(),
            };
        }
        Event::BillingAnchorSet { anchor, .. } => {
            out.note = format!(
                "renews on day {} at {:02}:{:02}",
                anchor.day(),
                anchor.hour(),
                anchor.minute()
            );
        }
        Event::AlertThresholdsSet { thresholds, .. } => {
            out.note = describe_thresholds(thresholds);
        }
        Event::AlertRaised { at, alert: raised } => {
            out.note = describe_alert(raised);
            out.alert = Some(alert(raised, *at, entry.version));
        }
    }
    out
}
