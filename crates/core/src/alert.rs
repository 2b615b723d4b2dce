//! Alerts: events that say a level was crossed, so someone can act (warn a
//! workspace, buy a pack). They are decided from the log alone, like every
//! other event, so a replay or a second replica raises exactly the same
//! ones. `docs/alerts.md` explains the rules for operators.
//!
//! The rules, each comparing the account's [`Levels`] before and after a
//! *window* of events (one command, or one time boundary):
//!
//! - **Depleted**: available goes from more than 0 to 0, or overage goes
//!   from 0 to more than 0.
//! - **Low balance T**: available goes from `>= T` to `< T`.
//! - **Auto-top-up**: the same, with the auto-top-up's `below` level; the
//!   alert names the pack to buy.
//! - **Usage p %**: `used_in_cycle * 100 >= p * allowance` goes from false
//!   to true, where allowance is the plan's monthly allowance (none when it
//!   is zero).
//! - **Spending cap reached**: `used_in_cycle + held >= cap` goes from false
//!   to true.
//!
//! An alert fires only if its [`AlertKey`] has not fired yet. The keys that
//! fired are remembered in the account: a new cycle forgets them all, and a
//! grant forgets the level alerts (low balance, depleted, auto-top-up) whose
//! level the balance is back at or above. So a hold and a release that
//! oscillate around a level alert once, while a top-up followed by a new
//! drop alerts again.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Account, Event, Millicredits, PackName, Timestamp};

/// How urgent an alert is, for whoever routes it (a banner, an email, a
/// page).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Something to act on by routine: buy the pack named.
    Info,
    /// Worth telling the workspace.
    #[default]
    Warning,
    /// Work is about to stop, or has.
    Critical,
}

/// What was crossed, with the numbers that crossed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// The available balance dropped below `threshold`. Its severity comes
    /// from the thresholds' critical level when it fired (an alert logged
    /// before severities existed reads as a warning).
    LowBalance {
        threshold: Millicredits,
        available: Millicredits,
        #[serde(default)]
        severity: Severity,
    },
    /// Usage in the cycle reached `percent` of the monthly allowance.
    UsageThreshold {
        percent: u8,
        used: Millicredits,
        allowance: Millicredits,
    },
    /// Usage in the cycle plus what is held reached the spending cap: new
    /// holds and debits are refused until the next cycle.
    SpendingCapReached {
        cap: Millicredits,
        used_and_held: Millicredits,
    },
    /// Nothing is left to spend; `overage` is the debt, if any.
    Depleted { overage: Millicredits },
    /// The balance dropped below the auto-top-up level: the billing system
    /// should buy `pack` and grant it.
    AutoTopUpRequested {
        pack: PackName,
        below: Millicredits,
        available: Millicredits,
    },
}

/// Which alert fired, without its numbers: an alert fires at most once per
/// key until it is re-armed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKey {
    Depleted,
    LowBalance(Millicredits),
    AutoTopUp(Millicredits),
    UsageThreshold(u8),
    SpendingCapReached,
}

impl Alert {
    /// Low balance as configured; running dry and hitting the cap stop
    /// work, so they are critical; usage percents warn; an auto-top-up
    /// request is routine for the billing system.
    pub fn severity(&self) -> Severity {
        match self {
            Alert::LowBalance { severity, .. } => *severity,
            Alert::Depleted { .. } | Alert::SpendingCapReached { .. } => Severity::Critical,
            Alert::UsageThreshold { .. } => Severity::Warning,
            Alert::AutoTopUpRequested { .. } => Severity::Info,
        }
    }

    pub fn key(&self) -> AlertKey {
        match self {
            Alert::LowBalance { threshold, .. } => AlertKey::LowBalance(*threshold),
            Alert::UsageThreshold { percent, .. } => AlertKey::UsageThreshold(*percent),
            Alert::SpendingCapReached { .. } => AlertKey::SpendingCapReached,
            Alert::Depleted { .. } => AlertKey::Depleted,
            Alert::AutoTopUpRequested { below, .. } => AlertKey::AutoTopUp(*below),
        }
    }
}

impl AlertKey {
    /// Whether a grant that leaves `available` spendable re-arms this key:
    /// the level alerts whose level the balance is back at or above.
    /// Usage and cap alerts wait for the next cycle, as usage never goes
    /// down within one.
    pub fn rearmed_by_grant(&self, available: Millicredits) -> bool {
        match self {
            AlertKey::Depleted => available.is_positive(),
            AlertKey::LowBalance(level) | AlertKey::AutoTopUp(level) => available >= *level,
            AlertKey::UsageThreshold(_) | AlertKey::SpendingCapReached => false,
        }
    }
}

/// The numbers the alert rules compare, at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Levels {
    pub available: Millicredits,
    pub overage: Millicredits,
    pub used_in_cycle: Millicredits,
    pub held: Millicredits,
    pub spending_cap: Option<Millicredits>,
    pub monthly_allowance: Millicredits,
}

impl Levels {
    pub fn of(account: &Account, at: Timestamp) -> Levels {
        Levels {
            available: account.available_at(at),
            overage: account.overage,
            used_in_cycle: account.used_in_cycle,
            held: account.held(),
            spending_cap: account.terms.spending_cap,
            monthly_allowance: account.terms.monthly_allowance(),
        }
    }

    pub fn is_depleted_from(&self, before: &Levels) -> bool {
        (before.available.is_positive() && !self.available.is_positive())
            || (before.overage.is_zero() && self.overage.is_positive())
    }

    pub fn is_below(&self, level: Millicredits) -> bool {
        self.available < level
    }

    /// `used * 100 >= percent * allowance`, in integers; never with no
    /// allowance.
    pub fn has_used(&self, percent: u8) -> bool {
        self.monthly_allowance.is_positive()
            && i128::from(self.used_in_cycle.get()) * 100
                >= i128::from(percent) * i128::from(self.monthly_allowance.get())
    }

    pub fn has_reached_cap(&self) -> bool {
        self.spending_cap
            .is_some_and(|cap| self.used_in_cycle + self.held >= cap)
    }
}

/// The alerts for a window whose levels went from `before` to `after`,
/// under the account's thresholds and what has fired already, in their
/// fixed order: depleted, low balances highest first, auto-top-up, usage
/// percents lowest first, cap.
pub(crate) fn crossed(account: &Account, before: &Levels, after: &Levels) -> Vec<Alert> {
    let thresholds = account.terms.alert_thresholds();
    let mut alerts = Vec::new();
    if after.is_depleted_from(before) {
        alerts.push(Alert::Depleted {
            overage: after.overage,
        });
    }
    for threshold in thresholds.low_balance_descending() {
        if !before.is_below(threshold) && after.is_below(threshold) {
            alerts.push(Alert::LowBalance {
                threshold,
                available: after.available,
                severity: thresholds.severity_of_low_balance(threshold),
            });
        }
    }
    if let Some(auto) = &thresholds.auto_top_up {
        let below = auto.below_millicredits;
        if !before.is_below(below) && after.is_below(below) {
            alerts.push(Alert::AutoTopUpRequested {
                pack: auto.pack.clone(),
                below,
                available: after.available,
            });
        }
    }
    for percent in thresholds.usage_percent_ascending() {
        if !before.has_used(percent) && after.has_used(percent) {
            alerts.push(Alert::UsageThreshold {
                percent,
                used: after.used_in_cycle,
                allowance: after.monthly_allowance,
            });
        }
    }
    if let Some(cap) = after.spending_cap.filter(|_| after.has_reached_cap())
        && !before.has_reached_cap()
    {
        alerts.push(Alert::SpendingCapReached {
            cap,
            used_and_held: after.used_in_cycle + after.held,
        });
    }
    alerts.retain(|alert| !account.alerts_fired.contains(&alert.key()));
    alerts
}

/// Decides the alerts of a window that started at `before`, applies them
/// to `account` (so they count as fired) and returns them, stamped `at`.
pub(crate) fn raise(account: &mut Account, before: &Levels, at: Timestamp) -> Vec<Event> {
    let after = Levels::of(account, at);
    if after == *before {
        return Vec::new();
    }
    let events: Vec<Event> = crossed(account, before, &after)
        .into_iter()
        .map(|alert| Event::AlertRaised { at, alert })
        .collect();
    for event in &events {
        account
            .apply(event)
            .unwrap_or_else(|e| panic!("the core raised an alert apply refuses: {e}"));
    }
    events
}

/// Forgets the fired keys a grant re-arms.
pub(crate) fn rearm_after_grant(fired: &mut BTreeSet<AlertKey>, available: Millicredits) {
    fired.retain(|key| !key.rearmed_by_grant(available));
}
