//! The plan catalogue: what each plan gives an account, and the top-up
//! packs a workspace can buy.
//!
//! An account keeps a copy of its plan's terms from the moment it was put
//! on the plan. Publishing a new catalogue version therefore never changes
//! an existing account behind its back; `ChangePlan` moves it to new terms.
//! It also keeps replays deterministic: the events carry the terms.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{CostBasis, Millicredits, PackName, PlanName, Severity};

/// A versioned catalogue. Version 0 is the empty catalogue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCatalogue {
    pub version: u64,
    #[serde(default)]
    pub plans: BTreeMap<PlanName, Plan>,
    #[serde(default)]
    pub packs: BTreeMap<PackName, Pack>,
}

/// What a plan gives an account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Granted at each billing anchor; expires at the next one.
    #[serde(default)]
    pub monthly_allowance_millicredits: Millicredits,
    /// Granted at each local midnight; expires at the next one.
    #[serde(default)]
    pub daily_allowance_millicredits: Millicredits,
    /// Offered when an account opens with a trial.
    #[serde(default)]
    pub trial: Option<Trial>,
    /// The cap an account on this plan gets unless it sets its own.
    #[serde(default)]
    pub spending_cap_millicredits: Option<Millicredits>,
    /// Unused monthly allowance carried into the next cycle; none by default.
    #[serde(default)]
    pub rollover: Option<Rollover>,
    #[serde(default)]
    pub alerts: AlertThresholds,
}

/// A trial: its own allowance for a number of days, after which the plan's
/// allowances begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub allowance_millicredits: Millicredits,
    pub days: u32,
}

/// Bounded rollover: what a new cycle carries over from the monthly
/// allowance left at its end is `min(max, max(left, min))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollover {
    pub max_millicredits: Millicredits,
    #[serde(default)]
    pub min_millicredits: Millicredits,
}

impl Rollover {
    pub fn carried(&self, left: Millicredits) -> Millicredits {
        left.max(self.min_millicredits).min(self.max_millicredits)
    }
}

/// When to tell someone: the levels whose crossing raises an alert (see
/// `docs/alerts.md` and [`crate::Alert`]). A plan carries its own; an
/// account may override them (`SetAlertThresholds`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertThresholds {
    /// Alert when the available balance drops below each of these.
    #[serde(default = "AlertThresholds::default_low_balance")]
    pub low_balance_millicredits: Vec<Millicredits>,
    /// Low-balance levels at or below this one raise critical alerts, the
    /// others warnings ("warns below 100 credits, critical at 10"). Zero:
    /// none is critical.
    #[serde(default = "AlertThresholds::default_critical_level")]
    pub critical_level_millicredits: Millicredits,
    /// Alert when usage in a cycle crosses each share of the allowance.
    #[serde(default = "AlertThresholds::default_usage_percent")]
    pub usage_percent: Vec<u8>,
    /// Ask the billing system to buy a pack when the available balance
    /// drops below a level. None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_top_up: Option<AutoTopUp>,
}

/// An automatic top-up: below `below_millicredits` available, an
/// `AutoTopUpRequested` alert names `pack`; the billing system buys it and
/// grants it (Tally itself never charges money).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoTopUp {
    pub below_millicredits: Millicredits,
    pub pack: PackName,
}

/// Most levels of each kind a set of thresholds may list: each is checked
/// on every command, so the list stays short.
pub const MAX_ALERT_LEVELS: usize = 16;

/// Why a set of alert thresholds is refused. `field` is the path inside
/// the thresholds, e.g. `auto_top_up.pack`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InvalidThresholds {
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("auto_top_up.pack: unknown pack {0}")]
    UnknownPack(PackName),
}

impl AlertThresholds {
    fn default_low_balance() -> Vec<Millicredits> {
        vec![
            Millicredits::from_credits(100),
            Millicredits::from_credits(10),
        ]
    }

    fn default_usage_percent() -> Vec<u8> {
        vec![80]
    }

    fn default_critical_level() -> Millicredits {
        Millicredits::from_credits(10)
    }

    /// How urgent the low-balance alert for `level` is.
    pub fn severity_of_low_balance(&self, level: Millicredits) -> Severity {
        if self.critical_level_millicredits.is_positive()
            && level <= self.critical_level_millicredits
        {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }

    /// Checks the levels (see [`AlertThresholds::validate_levels`]) and
    /// that the auto-top-up pack is one of `packs`.
    pub fn validate(&self, packs: &BTreeMap<PackName, Pack>) -> Result<(), InvalidThresholds> {
        self.validate_levels()?;
        match &self.auto_top_up {
            Some(auto) if !packs.contains_key(&auto.pack) => {
                Err(InvalidThresholds::UnknownPack(auto.pack.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Checks what needs no catalogue: each level more than zero and at
    /// most [`Millicredits::MAX_INPUT`], percents 1 to 100, no repeats, at
    /// most [`MAX_ALERT_LEVELS`] of each.
    pub fn validate_levels(&self) -> Result<(), InvalidThresholds> {
        let invalid = |field, reason: &str| {
            Err(InvalidThresholds::Field {
                field,
                reason: reason.to_owned(),
            })
        };
        let level_ok =
            |level: &Millicredits| level.is_positive() && *level <= Millicredits::MAX_INPUT;
        const LEVEL: &str = "each must be more than zero and at most a billion credits";
        if !self.low_balance_millicredits.iter().all(level_ok) {
            return invalid("low_balance_millicredits", LEVEL);
        }
        if !self.usage_percent.iter().all(|p| (1..=100).contains(p)) {
            return invalid("usage_percent", "each must be 1 to 100");
        }
        if has_repeats(&self.low_balance_millicredits) {
            return invalid("low_balance_millicredits", "must not repeat a level");
        }
        if has_repeats(&self.usage_percent) {
            return invalid("usage_percent", "must not repeat a percent");
        }
        if self.low_balance_millicredits.len() > MAX_ALERT_LEVELS {
            return invalid("low_balance_millicredits", "at most 16 levels");
        }
        if self.usage_percent.len() > MAX_ALERT_LEVELS {
            return invalid("usage_percent", "at most 16 percents");
        }
        if self.critical_level_millicredits.get() < 0
            || self.critical_level_millicredits > Millicredits::MAX_INPUT
        {
            return invalid(
                "critical_level_millicredits",
                "must be zero (no critical level) to a billion credits",
            );
        }
        if let Some(auto) = &self.auto_top_up
            && !level_ok(&auto.below_millicredits)
        {
            return invalid("auto_top_up.below_millicredits", LEVEL);
        }
        Ok(())
    }

    /// The low-balance levels, highest first: the order their alerts are
    /// raised in.
    pub fn low_balance_descending(&self) -> Vec<Millicredits> {
        let mut levels = self.low_balance_millicredits.clone();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        levels.dedup();
        levels
    }

    /// The usage percents, lowest first.
    pub fn usage_percent_ascending(&self) -> Vec<u8> {
        let mut percents = self.usage_percent.clone();
        percents.sort_unstable();
        percents.dedup();
        percents
    }
}

fn has_repeats<T: Ord>(values: &[T]) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    !values.iter().all(|v| seen.insert(v))
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            low_balance_millicredits: Self::default_low_balance(),
            critical_level_millicredits: Self::default_critical_level(),
            usage_percent: Self::default_usage_percent(),
            auto_top_up: None,
        }
    }
}

/// A top-up pack: bought credits, optionally expiring some months after
/// the purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    pub credits_millicredits: Millicredits,
    #[serde(default)]
    pub expires_after_months: Option<u32>,
    #[serde(default)]
    pub cost_basis: Option<CostBasis>,
}

/// The terms an account is on: a copy of the plan as it was published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTerms {
    pub name: PlanName,
    pub catalogue_version: u64,
    /// Boxed: every cached account carries its terms (and may carry a
    /// pending plan too), and most of a plan's bytes are read only at a
    /// cycle's boundary; inline they would triple an account's size.
    pub plan: Box<Plan>,
}

impl PlanCatalogue {
    pub fn terms(&self, name: &PlanName) -> Option<PlanTerms> {
        self.plans.get(name).map(|plan| PlanTerms {
            name: name.clone(),
            catalogue_version: self.version,
            plan: Box::new(plan.clone()),
        })
    }

    pub fn from_toml_str(text: &str) -> Result<PlanCatalogue, String> {
        let catalogue: PlanCatalogue = toml::from_str(text).map_err(|e| e.to_string())?;
        catalogue.validate()?;
        Ok(catalogue)
    }

    /// Checks what serde cannot: amounts in range, trials and rollovers
    /// that make sense.
    pub fn validate(&self) -> Result<(), String> {
        let amount = |what: String, a: Millicredits| {
            if a.get() < 0 || a > Millicredits::MAX_INPUT {
                Err(format!(
                    "{what}: must be between 0 and {}",
                    Millicredits::MAX_INPUT.get()
                ))
            } else {
                Ok(())
            }
        };
        for (name, plan) in &self.plans {
            amount(
                format!("plans.{name}.monthly_allowance_millicredits"),
                plan.monthly_allowance_millicredits,
            )?;
            amount(
                format!("plans.{name}.daily_allowance_millicredits"),
                plan.daily_allowance_millicredits,
            )?;
            if let Some(cap) = plan.spending_cap_millicredits {
                amount(format!("plans.{name}.spending_cap_millicredits"), cap)?;
            }
            if let Some(trial) = &plan.trial {
                amount(
                    format!("plans.{name}.trial.allowance_millicredits"),
                    trial.allowance_millicredits,
                )?;
                if !(1..=366).contains(&trial.days) {
                    return Err(format!("plans.{name}.trial.days: must be 1 to 366"));
                }
            }
            if let Some(rollover) = &plan.rollover {
                amount(
                    format!("plans.{name}.rollover.max_millicredits"),
                    rollover.max_millicredits,
                )?;
                amount(
                    format!("plans.{name}.rollover.min_millicredits"),
                    rollover.min_millicredits,
                )?;
                if rollover.min_millicredits > rollover.max_millicredits {
                    return Err(format!("plans.{name}.rollover: min must not exceed max"));
                }
            }
            plan.alerts
                .validate(&self.packs)
                .map_err(|e| format!("plans.{name}.alerts.{e}"))?;
        }
        for (name, pack) in &self.packs {
            amount(
                format!("packs.{name}.credits_millicredits"),
                pack.credits_millicredits,
            )?;
            if !pack.credits_millicredits.is_positive() {
                return Err(format!(
                    "packs.{name}.credits_millicredits: must be positive"
                ));
            }
            if let Some(basis) = &pack.cost_basis {
                let code = &basis.currency_code;
                if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(format!(
                        "packs.{name}.cost_basis.currency_code: must be an ISO 4217 code such as USD"
                    ));
                }
                if basis.micros_per_credit < 0 {
                    return Err(format!(
                        "packs.{name}.cost_basis.micros_per_credit: must not be negative"
                    ));
                }
            }
            if pack
                .expires_after_months
                .is_some_and(|m| !(1..=120).contains(&m))
            {
                return Err(format!(
                    "packs.{name}.expires_after_months: must be 1 to 120"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollover_is_bounded_both_ways() {
        let r = Rollover {
            max_millicredits: Millicredits::new(500),
            min_millicredits: Millicredits::new(100),
        };
        assert_eq!(r.carried(Millicredits::new(0)), Millicredits::new(100));
        assert_eq!(r.carried(Millicredits::new(300)), Millicredits::new(300));
        assert_eq!(r.carried(Millicredits::new(900)), Millicredits::new(500));
    }

    #[test]
    fn catalogues_parse_and_bad_ones_are_refused() {
        let ok = PlanCatalogue::from_toml_str(
            r#"
            version = 2
            [plans.pro]
            monthly_allowance_millicredits = 2500000
            spending_cap_millicredits = 2000000
            trial = { allowance_millicredits = 100000, days = 7 }
            [packs.small]
            credits_millicredits = 100000
            expires_after_months = 12
            "#,
        )
        .unwrap();
        let pro = ok.terms(&PlanName::parse("pro").unwrap()).unwrap();
        assert_eq!(pro.catalogue_version, 2);
        assert_eq!(pro.plan.alerts, AlertThresholds::default());

        let with_alerts = PlanCatalogue::from_toml_str(
            r#"
            version = 1
            [plans.pro.alerts]
            low_balance_millicredits = [50000]
            auto_top_up = { below_millicredits = 20000, pack = "small" }
            [packs.small]
            credits_millicredits = 100000
            "#,
        )
        .unwrap();
        let alerts = &with_alerts.plans[&PlanName::parse("pro").unwrap()].alerts;
        assert_eq!(
            alerts.low_balance_millicredits,
            vec![Millicredits::new(50_000)]
        );
        assert_eq!(alerts.usage_percent, vec![80], "left out: the default");
        assert_eq!(
            alerts.auto_top_up,
            Some(AutoTopUp {
                below_millicredits: Millicredits::new(20_000),
                pack: PackName::parse("small").unwrap(),
            })
        );

        for bad in [
            "version = 1\n[plans.x]\nmonthly_allowance_millicredits = -1",
            "version = 1\n[plans.x]\ntrial = { allowance_millicredits = 1, days = 0 }",
            "version = 1\n[plans.x]\nrollover = { max_millicredits = 1, min_millicredits = 2 }",
            "version = 1\n[plans.x]\nalerts = { usage_percent = [0] }",
            "version = 1\n[plans.x]\nalerts = { low_balance_millicredits = [0] }",
            "version = 1\n[plans.x]\nalerts = { low_balance_millicredits = [5, 5] }",
            "version = 1\n[plans.x]\nalerts = { auto_top_up = { below_millicredits = 1, pack = \"nope\" } }",
            "version = 1\n[plans.x]\nalerts = { auto_top_up = { below_millicredits = 0, pack = \"p\" } }\n[packs.p]\ncredits_millicredits = 1",
            "version = 1\n[plans.x]\nsurprise = 1",
            "version = 1\n[plans.Bad]\n",
            "version = 1\n[packs.p]\ncredits_millicredits = 0",
            "version = 1\n[packs.p]\ncredits_millicredits = 1\ncost_basis = { currency_code = \"usd\", micros_per_credit = 1 }",
            "version = 1\n[packs.p]\ncredits_millicredits = 1\ncost_basis = { currency_code = \"USD\", micros_per_credit = -5 }",
            "version = 1\n[packs.p]\ncredits_millicredits = 1\ncost_basis = { currency_code = \"USD\", micros_per_credit = 1, typo = 2 }",
        ] {
            assert!(PlanCatalogue::from_toml_str(bad).is_err(), "{bad}");
        }
    }
}
