//! Reading a request into the domain: every violation collected, each
//! naming its field.

use std::collections::BTreeMap;
use std::time::Duration;

use tally_api::v1 as pb;
use tally_core::{
    AccountId, ActionKey, BillingAnchor, BucketKind, CostBasis, Dimensions, GrantId, GrantSource,
    IdError, IdempotencyKey, MAX_UNITS_PER_CALL, MemberId, Millicredits, ModelName, PackName,
    PlanName, ReservationId, TestClockId, TimeZoneName, Timestamp, UnitName,
};

use tally_auth::Denied;

use crate::ServiceError;
use crate::status::InvalidArgument;

/// Collects field violations while reading a request, and checks that the
/// caller's API key covers every account the request names.
#[derive(Debug, Default)]
pub struct Validator {
    invalid: InvalidArgument,
    denied: Option<Denied>,
}

impl Validator {
    pub fn violation(&mut self, field: &str, description: impl Into<String>) {
        self.invalid
            .violations
            .push((field.to_owned(), description.into()));
    }

    /// Ok when nothing was wrong. An account the caller may not touch is
    /// reported before bad fields: it says nothing about the account.
    pub fn finish(self) -> Result<(), ServiceError> {
        match self.denied {
            Some(denied) => Err(denied.into()),
            None if self.invalid.violations.is_empty() => Ok(()),
            None => Err(self.invalid.into()),
        }
    }

    /// What was wrong, for when a required value is missing.
    pub fn into_error(self) -> ServiceError {
        match self.denied {
            Some(denied) => denied.into(),
            None => self.invalid.into(),
        }
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

    /// Every account id a request names is read here, so this is where the
    /// caller's key is checked against it (see `crate::auth`).
    pub fn account(&mut self, field: &str, value: &str) -> Option<AccountId> {
        let account = self.id(field, value, AccountId::parse)?;
        if let Err(denied) = crate::auth::may_touch(account.as_str()) {
            tally_telemetry::Metrics::global().auth_refused(denied.reason());
            self.denied.get_or_insert(denied);
        }
        Some(account)
    }

    pub fn test_clock(&mut self, field: &str, value: &str) -> Option<TestClockId> {
        self.id(field, value, TestClockId::parse)
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
            Ok(pb::GrantSource::Refund) => {
                self.violation(
                    field,
                    "GRANT_SOURCE_REFUND is set by the server on the buckets Refund creates",
                );
                None
            }
            Err(_) => {
                self.violation(field, format!("unknown value {value}"));
                None
            }
        }
    }

    /// A timestamp that must be given.
    pub fn required_timestamp(
        &mut self,
        field: &str,
        value: Option<prost_types::Timestamp>,
    ) -> Option<Timestamp> {
        if value.is_none() {
            self.violation(field, "must be set");
        }
        self.timestamp(field, value)
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
