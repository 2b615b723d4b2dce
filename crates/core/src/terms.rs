//! How an account is billed: its plan, its calendar and its cap.

use serde::{Deserialize, Serialize};

use std::sync::LazyLock;

use crate::{
    AlertThresholds, BillingAnchor, Millicredits, PlanTerms, TestClockId, TimeZoneName, Timestamp,
};

static DEFAULT_THRESHOLDS: LazyLock<AlertThresholds> = LazyLock::new(AlertThresholds::default);

/// Set when the account opens; changed only by events (`PlanChanged`,
/// `SpendingCapSet`, `BillingAnchorSet`, `AlertThresholdsSet`), so a replay sees the terms each
/// decision was taken under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTerms {
    /// `None` for pay-as-you-go accounts that live on grants alone.
    #[serde(default)]
    pub plan: Option<PlanTerms>,
    #[serde(default)]
    pub time_zone: TimeZoneName,
    #[serde(default)]
    pub anchor: BillingAnchor,
    /// Usage in a cycle (plus what is held) may not pass this.
    #[serde(default)]
    pub spending_cap: Option<Millicredits>,
    /// The account chose its cap, so a plan change keeps it rather than
    /// taking the new plan's default.
    #[serde(default)]
    pub cap_set_by_account: bool,
    /// The account's own alert thresholds; `None` follows the plan's. Kept
    /// across plan changes, like a cap the account chose. Boxed: few
    /// accounts set their own, and every cached account carries the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Box<AlertThresholds>>,
    /// The test clock the account lives on, fixed at opening; `None` (every
    /// real account) follows the wall clock. See `docs/test-clocks.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_clock: Option<Box<TestClockId>>,
}

impl AccountTerms {
    pub fn monthly_allowance(&self) -> Millicredits {
        self.plan.as_ref().map_or(Millicredits::ZERO, |p| {
            p.plan.monthly_allowance_millicredits
        })
    }

    pub fn daily_allowance(&self) -> Millicredits {
        self.plan
            .as_ref()
            .map_or(Millicredits::ZERO, |p| p.plan.daily_allowance_millicredits)
    }

    /// The thresholds alerts are raised at: the account's own, else its
    /// plan's, else the defaults (below 100 and 10 credits, 80 % used).
    pub fn alert_thresholds(&self) -> &AlertThresholds {
        self.alerts
            .as_deref()
            .or_else(|| self.plan.as_ref().map(|p| &p.plan.alerts))
            .unwrap_or(&DEFAULT_THRESHOLDS)
    }

    /// Moves to `plan`, taking its default cap unless the account set one.
    pub(crate) fn adopt(&mut self, plan: PlanTerms) {
        if !self.cap_set_by_account {
            self.spending_cap = plan.plan.spending_cap_millicredits;
        }
        self.plan = Some(plan);
    }
}

/// A stretch of time `[start, end)`: a billing cycle or a local day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub start: Timestamp,
    pub end: Timestamp,
}
