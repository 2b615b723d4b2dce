//! Conversions between the wire (tally.v1) and the domain. Input is
//! validated here, every violation collected, so a bad request is refused
//! whole and names each bad field.

use std::collections::BTreeMap;
use std::time::Duration;

use tally_api::v1 as pb;
use tally_core::{
    AccountId, ActionKey, Alert, AlertThresholds, AutoTopUp, BalanceView, BillingAnchor, Bucket,
    BucketKind, CostBasis, Debit, Dimensions, Draw, EventKind, GrantId, GrantSource, IdError,
    IdempotencyKey, MAX_UNITS_PER_CALL, MemberId, Millicredits, ModelName, PackName, PlanName,
    Reservation, ReservationId, Severity, TimeZoneName, Timestamp, UnitName,
};

use crate::status::InvalidArgument;

/// Collects field violations while reading a request.
#[derive(Debug, Default)]
pub struct Validator {
    invalid: InvalidArgument,
}

impl Validator {
    pub fn violation(&mut self, field: &str, description: impl Into<String>) {
        self.invalid
            .violations
            .push((field.to_owned(), description.into()));
    }

    /// Ok when nothing was wrong.
    pub fn finish(self) -> Result<(), InvalidArgument> {
        if self.invalid.violations.is_empty() {
            Ok(())
        } else {
            Err(self.invalid)
        }
    }

    /// The collected violations, for when a required value is missing.
    pub fn into_error(self) -> InvalidArgument {
        self.invalid
    }

    fn id<T>(
        &mut self,
        field: &str,
        value: &str,
        parse: fn(String) -> Result<T, IdError>,
    ) -> Option<T> {
        parse(value.to_owned())
            .map_err(|e| self.violation(field, e.to_string()))
            .ok()
    }

    pub fn account(&mut self, field: &str, value: &str) -> Option<AccountId> {
        self.id(field, value, AccountId::parse)
    }

    pub fn idempotency_key(&mut self, field: &str, value: &str) -> Option<IdempotencyKey> {
        self.id(field, value, IdempotencyKey::parse)
    }

    pub fn member(&mut self, field: &str, value: &str) -> Option<MemberId> {
        self.id(field, value, MemberId::parse)
    }

    pub fn action(&mut self, field: &str, value: &str) -> Option<ActionKey> {
        self.id(field, value, ActionKey::parse)
    }

    pub fn reservation(&mut self, field: &str, value: &str) -> Option<ReservationId> {
        self.id(field, value, ReservationId::parse)
    }

    pub fn grant(&mut self, field: &str, value: &str) -> Option<GrantId> {
        self.id(field, value, GrantId::parse)
    }

    /// Empty means "no model".
    pub fn model(&mut self, field: &str, value: &str) -> Option<ModelName> {
        if value.is_empty() {
            return None;
        }
        self.id(field, value, ModelName::parse)
    }

    /// Empty means "no plan".
    pub fn plan(&mut self, field: &str, value: &str) -> Option<PlanName> {
        if value.is_empty() {
            return None;
        }
        self.id(field, value, PlanName::parse)
    }

    /// Empty means "no pack".
    pub fn pack(&mut self, field: &str, value: &str) -> Option<PackName> {
        if value.is_empty() {
            return None;
        }
        self.id(field, value, PackName::parse)
    }

    /// Empty means "the default" (UTC).
    pub fn time_zone(&mut self, field: &str, value: &str) -> Option<TimeZoneName> {
        if value.is_empty() {
            return None;
        }
        TimeZoneName::parse(value)
            .map_err(|e| self.violation(field, e.to_string()))
            .ok()
    }

    pub fn billing_anchor(
        &mut self,
        field: &str,
        value: Option<pb::BillingAnchor>,
    ) -> Option<BillingAnchor> {
        let value = value?;
        let part = |v: i32| u8::try_from(v).unwrap_or(u8::MAX);
        BillingAnchor::new(part(value.day), part(value.hour), part(value.minute))
            .map_err(|e| self.violation(field, e.to_string()))
            .ok()
    }

    /// Counts must not be negative; unset means none used.
    pub fn dimensions(&mut self, field: &str, value: Option<pb::Dimensions>) -> Option<Dimensions> {
        let value = value?;
        let mut count = |name: &str, v: i64| {
            u64::try_from(v)
                .map_err(|_| self.violation(&format!("{field}.{name}"), "must not be negative"))
                .unwrap_or(0)
        };
        let mut dimensions = Dimensions {
            input_tokens: count("input_tokens", value.input_tokens),
            output_tokens: count("output_tokens", value.output_tokens),
            context_tokens: count("context_tokens", value.context_tokens),
            images: count("images", value.images),
            tool_calls: count("tool_calls", value.tool_calls),
            units: BTreeMap::new(),
        };
        if value.units.len() > MAX_UNITS_PER_CALL {
            self.violation(
                &format!("{field}.units"),
                format!("at most {MAX_UNITS_PER_CALL} units per call"),
            );
        }
        for (name, n) in value.units {
            let unit = UnitName::parse(name.as_str())
                .map_err(|e| self.violation(&format!("{field}.units"), format!("{name:?}: {e}")));
            let n = u64::try_from(n).map_err(|_| {
                self.violation(&format!("{field}.units.{name}"), "must not be negative")
            });
            if let (Ok(unit), Ok(n)) = (unit, n) {
                dimensions.units.insert(unit, n);
            }
        }
        Some(dimensions)
    }

    /// A request's `dimensions`, which may not come with an amount.
    pub fn dimensions_instead_of(
        &mut self,
        amount: Option<Millicredits>,
        value: Option<pb::Dimensions>,
    ) -> Option<Dimensions> {
        if amount.is_some() && value.is_some() {
            self.violation(
                "dimensions",
                "give amount_millicredits or dimensions, not both",
            );
        }
        self.dimensions("dimensions", value)
    }

    /// An amount that must be more than zero (and at most the input cap).
    pub fn positive_amount(&mut self, field: &str, value: i64) -> Option<Millicredits> {
        if value <= 0 {
            self.violation(field, "must be more than zero");
            return None;
        }
        self.capped(field, value)
    }

    /// An amount that may be zero.
    pub fn non_negative_amount(&mut self, field: &str, value: i64) -> Option<Millicredits> {
        if value < 0 {
            self.violation(field, "must not be negative");
            return None;
        }
        self.capped(field, value)
    }

    fn capped(&mut self, field: &str, value: i64) -> Option<Millicredits> {
        if value > Millicredits::MAX_INPUT.get() {
            self.violation(
                field,
                format!(
                    "must be at most {} (a billion credits)",
                    Millicredits::MAX_INPUT.get()
                ),
            );
            return None;
        }
        Some(Millicredits::new(value))
    }

    /// Free text, bounded.
    /// Text that must be given.
    pub fn required_text(&mut self, field: &str, value: String, max_bytes: usize) -> String {
        if value.trim().is_empty() {
            self.violation(field, "must be set");
        }
        self.text(field, value, max_bytes)
    }

    /// A signed amount: not zero, at most the input cap either way.
    pub fn signed_amount(&mut self, field: &str, value: i64) -> Option<Millicredits> {
        if value == 0 {
            self.violation(
                field,
                "must not be zero: positive adds credits, negative removes them",
            );
            return None;
        }
        if value.unsigned_abs() > Millicredits::MAX_INPUT.get().unsigned_abs() {
            self.violation(
                field,
                format!("must be at most {} either way", Millicredits::MAX_INPUT),
            );
            return None;
        }
        Some(Millicredits::new(value))
    }

    pub fn text(&mut self, field: &str, value: String, max_bytes: usize) -> String {
        if value.len() > max_bytes {
            self.violation(field, format!("must be at most {max_bytes} bytes"));
        }
        value
    }

    pub fn bucket_kind(&mut self, field: &str, value: i32) -> Option<BucketKind> {
        let kind = match pb::BucketKind::try_from(value) {
            Ok(pb::BucketKind::Daily) => BucketKind::Daily,
            Ok(pb::BucketKind::Monthly) => BucketKind::Monthly,
            Ok(pb::BucketKind::TopUp) => BucketKind::TopUp,
            Ok(pb::BucketKind::Promotional) => BucketKind::Promotional,
            Ok(pb::BucketKind::Trial) => BucketKind::Trial,
            Ok(pb::BucketKind::Unspecified) => {
                self.violation(field, "must be set");
                return None;
            }
            Err(_) => {
                self.violation(field, format!("unknown value {value}"));
                return None;
            }
        };
        Some(kind)
    }

    /// Unspecified means "the kind's natural source".
    pub fn grant_source(&mut self, field: &str, value: i32) -> Option<GrantSource> {
        match pb::GrantSource::try_from(value) {
            Ok(pb::GrantSource::Unspecified) => None,
            Ok(pb::GrantSource::Plan) => Some(GrantSource::Plan),
            Ok(pb::GrantSource::Purchase) => Some(GrantSource::Purchase),
            Ok(pb::GrantSource::Promo) => Some(GrantSource::Promo),
            Ok(pb::GrantSource::Referral) => Some(GrantSource::Referral),
            Ok(pb::GrantSource::Adjustment) => Some(GrantSource::Adjustment),
            Err(_) => {
                self.violation(field, format!("unknown value {value}"));
                None
            }
        }
    }

    pub fn timestamp(
        &mut self,
        field: &str,
        value: Option<prost_types::Timestamp>,
    ) -> Option<Timestamp> {
        let value = value?;
        // Years 1 to 9999, as google.protobuf.Timestamp allows.
        const MIN_SECONDS: i64 = -62_135_596_800;
        const MAX_SECONDS: i64 = 253_402_300_799;
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&value.seconds)
            || !(0..1_000_000_000).contains(&value.nanos)
        {
            self.violation(field, "is not a valid timestamp");
            return None;
        }
        Some(Timestamp::from_millis(
            value.seconds * 1000 + i64::from(value.nanos) / 1_000_000,
        ))
    }

    /// A TTL in milliseconds: `default` when unset, more than zero and at
    /// most `max` when set.
    pub fn ttl(
        &mut self,
        field: &str,
        value: Option<prost_types::Duration>,
        default: Duration,
        max: Duration,
    ) -> Option<i64> {
        let Some(value) = value else {
            return Some(millis(default));
        };
        let Ok(duration) = Duration::try_from(value) else {
            self.violation(field, "must be a positive duration");
            return None;
        };
        if duration.is_zero() || duration > max {
            self.violation(
                field,
                format!("must be more than zero and at most {}s", max.as_secs()),
            );
            return None;
        }
        Some(millis(duration).max(1))
    }

    pub fn cost_basis(&mut self, field: &str, value: Option<pb::CostBasis>) -> Option<CostBasis> {
        let pb::CostBasis {
            currency_code,
            micros_per_credit,
        } = value?;
        let valid_code =
            currency_code.len() == 3 && currency_code.bytes().all(|b| b.is_ascii_uppercase());
        if !valid_code {
            self.violation(
                &format!("{field}.currency_code"),
                "must be an ISO 4217 code such as USD",
            );
        }
        if micros_per_credit < 0 {
            self.violation(
                &format!("{field}.micros_per_credit"),
                "must not be negative",
            );
        }
        Some(CostBasis {
            currency_code,
            micros_per_credit,
        })
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn rfc3339(at: Timestamp) -> String {
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
    draws
        .iter()
        .map(|d| pb::Draw {
            grant_id: d.grant_id.to_string(),
            kind: bucket_kind(d.kind).into(),
            amount_millicredits: d.amount.get(),
        })
        .collect()
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

fn model(model: &Option<ModelName>) -> String {
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

pub fn alert_thresholds(thresholds: &AlertThresholds) -> pb::AlertThresholds {
    pb::AlertThresholds {
        low_balance_millicredits: thresholds
            .low_balance_millicredits
            .iter()
            .map(|level| level.get())
            .collect(),
        critical_level_millicredits: thresholds.critical_level_millicredits.get(),
        usage_percent: thresholds
            .usage_percent
            .iter()
            .map(|p| i32::from(*p))
            .collect(),
        auto_top_up: thresholds.auto_top_up.as_ref().map(|auto| pb::AutoTopUp {
            below_millicredits: auto.below_millicredits.get(),
            pack: auto.pack.to_string(),
        }),
    }
}

/// An alert on the wire; `sequence` is its event's stream version.
pub fn alert(alert: &Alert, raised_at: Timestamp, sequence: u64) -> pb::Alert {
    let mut out = pb::Alert {
        raised_at: Some(timestamp(raised_at)),
        sequence: version(sequence),
        severity: match alert.severity() {
            Severity::Info => pb::AlertSeverity::Info,
            Severity::Warning => pb::AlertSeverity::Warning,
            Severity::Critical => pb::AlertSeverity::Critical,
        }
        .into(),
        ..Default::default()
    };
    match alert {
        Alert::LowBalance {
            threshold,
            available,
            ..
        } => {
            out.kind = pb::AlertKind::LowBalance.into();
            out.threshold_millicredits = threshold.get();
            out.available_millicredits = available.get();
        }
        Alert::UsageThreshold {
            percent,
            used,
            allowance,
        } => {
            out.kind = pb::AlertKind::UsageThreshold.into();
            out.usage_percent = i32::from(*percent);
            out.used_this_cycle_millicredits = used.get();
            out.allowance_millicredits = allowance.get();
        }
        Alert::SpendingCapReached { cap, used_and_held } => {
            out.kind = pb::AlertKind::SpendingCapReached.into();
            out.spending_cap_millicredits = cap.get();
            out.used_this_cycle_millicredits = used_and_held.get();
        }
        Alert::Depleted { overage } => {
            out.kind = pb::AlertKind::Depleted.into();
            out.overage_millicredits = overage.get();
        }
        Alert::AutoTopUpRequested {
            pack,
            below,
            available,
        } => {
            out.kind = pb::AlertKind::AutoTopUpRequested.into();
            out.pack = pack.to_string();
            out.threshold_millicredits = below.get();
            out.available_millicredits = available.get();
        }
    }
    out
}

/// One line for the ledger's note.
fn describe_alert(alert: &Alert) -> String {
    match alert {
        Alert::LowBalance {
            threshold,
            available,
            severity: Severity::Critical,
        } => format!("critical low balance: {available} available, below {threshold}"),
        Alert::LowBalance {
            threshold,
            available,
            ..
        } => format!("low balance: {available} available, below {threshold}"),
        Alert::UsageThreshold {
            percent,
            used,
            allowance,
        } => format!("{percent}% of the allowance used: {used} of {allowance}"),
        Alert::SpendingCapReached { cap, used_and_held } => {
            format!("spending cap reached: {used_and_held} used and held of {cap}")
        }
        Alert::Depleted { overage } if overage.is_positive() => {
            format!("depleted: {overage} overage")
        }
        Alert::Depleted { .. } => "depleted: nothing left to spend".into(),
        Alert::AutoTopUpRequested {
            pack,
            below,
            available,
        } => {
            format!("auto top-up requested: buy pack {pack} ({available} available, below {below})")
        }
    }
}

fn describe_thresholds(thresholds: &Option<AlertThresholds>) -> String {
    let Some(t) = thresholds else {
        return "alert thresholds: the plan's".into();
    };
    let levels: Vec<String> = t
        .low_balance_millicredits
        .iter()
        .map(ToString::to_string)
        .collect();
    let percents: Vec<String> = t.usage_percent.iter().map(|p| format!("{p}%")).collect();
    let mut note = format!(
        "alert thresholds: low balance [{}], usage [{}]",
        levels.join(", "),
        percents.join(", ")
    );
    if t.critical_level_millicredits.is_positive() {
        note.push_str(&format!(
            ", critical at or below {}",
            t.critical_level_millicredits
        ));
    }
    if let Some(auto) = &t.auto_top_up {
        note.push_str(&format!(
            ", auto top-up pack {} below {}",
            auto.pack, auto.below_millicredits
        ));
    }
    note
}

impl Validator {
    /// The account's own thresholds. Whether an auto-top-up pack exists is
    /// the engine's to say: the catalogue may change until it decides.
    pub fn alert_thresholds(
        &mut self,
        field: &str,
        value: pb::AlertThresholds,
    ) -> Option<AlertThresholds> {
        let pb::AlertThresholds {
            low_balance_millicredits,
            usage_percent,
            auto_top_up,
            critical_level_millicredits,
        } = value;
        let mut valid = true;
        let usage_percent = usage_percent
            .into_iter()
            .filter_map(|p| {
                let percent = u8::try_from(p).ok();
                if percent.is_none() {
                    self.violation(&format!("{field}.usage_percent"), "each must be 1 to 100");
                    valid = false;
                }
                percent
            })
            .collect();
        let auto_top_up = match auto_top_up {
            None => None,
            Some(pb::AutoTopUp {
                below_millicredits,
                pack,
            }) => {
                let pack_field = format!("{field}.auto_top_up.pack");
                if pack.is_empty() {
                    self.violation(&pack_field, "must be set");
                }
                match self.pack(&pack_field, &pack) {
                    Some(pack) => Some(AutoTopUp {
                        below_millicredits: Millicredits::new(below_millicredits),
                        pack,
                    }),
                    None => {
                        valid = false;
                        None
                    }
                }
            }
        };
        let thresholds = AlertThresholds {
            low_balance_millicredits: low_balance_millicredits
                .into_iter()
                .map(Millicredits::new)
                .collect(),
            critical_level_millicredits: Millicredits::new(critical_level_millicredits),
            usage_percent,
            auto_top_up,
        };
        // Each part on its own, so every bad field is named at once.
        let parts = [
            AlertThresholds {
                critical_level_millicredits: Millicredits::ZERO,
                usage_percent: Vec::new(),
                auto_top_up: None,
                ..thresholds.clone()
            },
            AlertThresholds {
                low_balance_millicredits: Vec::new(),
                usage_percent: Vec::new(),
                auto_top_up: None,
                ..thresholds.clone()
            },
            AlertThresholds {
                low_balance_millicredits: Vec::new(),
                critical_level_millicredits: Millicredits::ZERO,
                auto_top_up: None,
                ..thresholds.clone()
            },
            AlertThresholds {
                low_balance_millicredits: Vec::new(),
                critical_level_millicredits: Millicredits::ZERO,
                usage_percent: Vec::new(),
                ..thresholds.clone()
            },
        ];
        for part in parts {
            if let Err(tally_core::InvalidThresholds::Field {
                field: inner,
                reason,
            }) = part.validate_levels()
            {
                self.violation(&format!("{field}.{inner}"), reason);
                valid = false;
            }
        }
        valid.then_some(thresholds)
    }
}

/// The ledger kind an event shows as.
fn ledger_kind(kind: EventKind) -> pb::LedgerEntryKind {
    use pb::LedgerEntryKind as Ledger;
    match kind {
        EventKind::AccountOpened => Ledger::AccountOpened,
        EventKind::CreditsGranted => Ledger::Grant,
        EventKind::GrantVoided => Ledger::GrantVoided,
        EventKind::CreditsAdjusted => Ledger::Adjustment,
        EventKind::CreditsHeld => Ledger::Hold,
        EventKind::HoldExtended => Ledger::HoldExtended,
        EventKind::HoldReleased => Ledger::HoldReleased,
        EventKind::HoldExpired => Ledger::HoldExpired,
        EventKind::CreditsDebited => Ledger::Debit,
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
        Ledger::GrantVoided => EventKind::GrantVoided,
        Ledger::Adjustment => EventKind::CreditsAdjusted,
        Ledger::Hold => EventKind::CreditsHeld,
        Ledger::HoldExtended => EventKind::HoldExtended,
        Ledger::HoldReleased => EventKind::HoldReleased,
        Ledger::HoldExpired => EventKind::HoldExpired,
        Ledger::Debit => EventKind::CreditsDebited,
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
