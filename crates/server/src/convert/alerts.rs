//! Alerts and alert thresholds: thresholds read from a request and shown
//! on the wire, alerts on the wire, and the ledger's one-line notes for
//! both.

use tally_api::v1 as pb;
use tally_core::{Alert, AlertThresholds, AutoTopUp, Millicredits, Severity, Timestamp};

use super::Validator;
use super::wire::{timestamp, version};

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
pub(super) fn describe_alert(alert: &Alert) -> String {
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

pub(super) fn describe_thresholds(thresholds: &Option<AlertThresholds>) -> String {
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
