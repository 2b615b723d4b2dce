//! The rate card: what an action costs.
//!
//! Prices are exact integers from the file to the receipt: no floats, not
//! even when a card is read (multipliers are decimal strings). Every action,
//! fixed or metered, is priced by one pipeline:
//!
//! 1. the raw amount: the fixed price, or a metered action's base plus the
//!    sum of each dimension times its rate; token rates are per 1000 tokens
//!    and the fraction is kept; the units a card declares (posts scanned,
//!    platforms, seconds of audio) are priced per unit;
//! 2. times the model's multiplier, exactly;
//! 3. rounded once by the action's [`Rounding`], so no fraction is ever
//!    rounded twice;
//! 4. clamped to the action's minimum and maximum.
//!
//! A price above [`Millicredits::MAX_INPUT`] is refused, never saturated:
//! charging a capped amount would hide a runaway request.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ActionKey, Millicredits, ModelName, Rejection, UnitName};

/// Until the one rounding step, amounts are carried in millionths of a
/// millicredit: per-1000-token rates contribute thousandths and the
/// per-mille multiplier another factor of 1000, so this is exact.
const UNITS_PER_MILLICREDIT: i128 = 1_000_000;
const MILLICREDITS_PER_CREDIT: i128 = 1_000;
const UNITS_PER_CREDIT: i128 = UNITS_PER_MILLICREDIT * MILLICREDITS_PER_CREDIT;

/// Longest capability name on a rate card action.
pub const MAX_CAPABILITY_LEN: usize = 64;

/// A versioned price book. Version 0 is the empty card: every action is
/// unknown, so callers must give amounts themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCard {
    pub version: u64,
    #[serde(default)]
    pub actions: BTreeMap<ActionKey, ActionPrice>,
}

/// The dimensions every card knows; a card's own units may not take these
/// names.
pub const BUILT_IN_DIMENSIONS: [&str; 5] = [
    "input_tokens",
    "output_tokens",
    "context_tokens",
    "images",
    "tool_calls",
];

/// Most units of its own one call may report: they are stored with every
/// charge.
pub const MAX_UNITS_PER_CALL: usize = 16;

/// What one action used, as the caller measured it. A missing field is 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dimensions {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub context_tokens: u64,
    pub images: u64,
    pub tool_calls: u64,
    /// Units of the product's own, each priced by the action's
    /// `rates.per_unit`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<UnitName, u64>,
}

impl Dimensions {
    pub fn is_empty(&self) -> bool {
        self.input_tokens == 0
            && self.output_tokens == 0
            && self.context_tokens == 0
            && self.images == 0
            && self.tool_calls == 0
            && self.units.values().all(|&n| n == 0)
    }
}

/// A metered action's rates, in millicredits. A rate left out is 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rates {
    pub per_1k_input_tokens: Millicredits,
    pub per_1k_output_tokens: Millicredits,
    pub per_1k_context_tokens: Millicredits,
    pub per_image: Millicredits,
    pub per_tool_call: Millicredits,
    /// The card's own units and the price of one of each. Listing a unit
    /// is what lets a call report it: a unit the action does not price is
    /// refused, so a typo never prices at 0.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_unit: BTreeMap<UnitName, Millicredits>,
}

impl Rates {
    fn named(&self) -> [(&'static str, Millicredits); 5] {
        [
            ("per_1k_input_tokens", self.per_1k_input_tokens),
            ("per_1k_output_tokens", self.per_1k_output_tokens),
            ("per_1k_context_tokens", self.per_1k_context_tokens),
            ("per_image", self.per_image),
            ("per_tool_call", self.per_tool_call),
        ]
    }
}

/// The rates a model changes; the rates it leaves out stay the action's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_1k_input_tokens: Option<Millicredits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_1k_output_tokens: Option<Millicredits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_1k_context_tokens: Option<Millicredits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_image: Option<Millicredits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_tool_call: Option<Millicredits>,
    /// Prices of the action's own units for this model; a model cannot
    /// add a unit the action does not price.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub per_unit: BTreeMap<UnitName, Millicredits>,
}

impl RateOverrides {
    pub fn is_empty(&self) -> bool {
        *self == RateOverrides::default()
    }

    fn named(&self) -> [(&'static str, Option<Millicredits>); 5] {
        [
            ("per_1k_input_tokens", self.per_1k_input_tokens),
            ("per_1k_output_tokens", self.per_1k_output_tokens),
            ("per_1k_context_tokens", self.per_1k_context_tokens),
            ("per_image", self.per_image),
            ("per_tool_call", self.per_tool_call),
        ]
    }

    pub fn apply_to(&self, rates: &Rates) -> Rates {
        Rates {
            per_1k_input_tokens: self
                .per_1k_input_tokens
                .unwrap_or(rates.per_1k_input_tokens),
            per_1k_output_tokens: self
                .per_1k_output_tokens
                .unwrap_or(rates.per_1k_output_tokens),
            per_1k_context_tokens: self
                .per_1k_context_tokens
                .unwrap_or(rates.per_1k_context_tokens),
            per_image: self.per_image.unwrap_or(rates.per_image),
            per_tool_call: self.per_tool_call.unwrap_or(rates.per_tool_call),
            per_unit: rates
                .per_unit
                .iter()
                .map(|(unit, rate)| (unit.clone(), *self.per_unit.get(unit).unwrap_or(rate)))
                .collect(),
        }
    }
}

/// Where the raw amount of a call comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BasePrice {
    /// The same price whatever was used.
    Fixed(Millicredits),
    /// `base` on every call plus the sum of each dimension times its rate
    /// ("2 credits + 0.5 per post scanned").
    Metered { base: Millicredits, rates: Rates },
}

/// How the exact amount, which may hold fractions of a millicredit, becomes
/// whole millicredits. Applied once, after the multiplier and before the
/// minimum and maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Up to the next millicredit: a fraction is never given away.
    #[default]
    Millicredit,
    /// Up to the next whole credit.
    UpToCredit,
    /// To the nearest whole credit; exactly half a credit rounds up.
    NearestCredit,
    /// Down to a whole credit.
    DownToCredit,
}

impl Rounding {
    fn is_default(&self) -> bool {
        *self == Rounding::default()
    }

    /// Whether every price this rule makes is a multiple of 1000.
    pub fn to_whole_credits(self) -> bool {
        self != Rounding::Millicredit
    }

    /// `units` are millionths of a millicredit; the answer is millicredits.
    fn apply(self, units: i128) -> i128 {
        let (unit, per) = match self {
            Rounding::Millicredit => (UNITS_PER_MILLICREDIT, 1),
            _ => (UNITS_PER_CREDIT, MILLICREDITS_PER_CREDIT),
        };
        let (whole, rest) = (units.div_euclid(unit), units.rem_euclid(unit));
        let up = match self {
            Rounding::Millicredit | Rounding::UpToCredit => rest > 0,
            // `rest * 2 >= unit` could overflow; this cannot.
            Rounding::NearestCredit => rest >= unit - rest,
            Rounding::DownToCredit => false,
        };
        (whole + i128::from(up)) * per
    }
}

/// An exact, positive price multiplier with at most three decimal places,
/// written as a string (`"1.5"`, `"2"`) so no float ever touches a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Multiplier(u32);

impl Multiplier {
    pub const ONE: Multiplier = Multiplier(1000);

    /// `None` for 0: a model that makes everything free is a typo more
    /// often than a price; a free action says `price_millicredits = 0`.
    pub const fn from_per_mille(per_mille: u32) -> Option<Multiplier> {
        if per_mille == 0 {
            None
        } else {
            Some(Multiplier(per_mille))
        }
    }

    pub const fn per_mille(self) -> u32 {
        self.0
    }

    pub fn is_one(&self) -> bool {
        *self == Multiplier::ONE
    }
}

impl Default for Multiplier {
    fn default() -> Self {
        Multiplier::ONE
    }
}

impl FromStr for Multiplier {
    type Err = String;

    fn from_str(text: &str) -> Result<Multiplier, String> {
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !fraction.is_none_or(digits) {
            return Err(format!(
                "multiplier {text:?}: expected a positive decimal such as \"1.5\""
            ));
        }
        let fraction = fraction.unwrap_or("");
        if fraction.len() > 3 {
            return Err(format!(
                "multiplier {text:?}: at most 3 decimal places are allowed"
            ));
        }
        let mut padded = whole
            .bytes()
            .chain(fraction.bytes())
            .chain(std::iter::repeat_n(b'0', 3 - fraction.len()));
        let per_mille = padded
            .try_fold(0u32, |n, b| {
                n.checked_mul(10)?.checked_add(u32::from(b - b'0'))
            })
            .ok_or_else(|| format!("multiplier {text:?} is too large"))?;
        Multiplier::from_per_mille(per_mille)
            .ok_or_else(|| format!("multiplier {text:?}: must be greater than 0"))
    }
}

impl fmt::Display for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / 1000, self.0 % 1000);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let fraction = format!("{fraction:03}");
        write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
    }
}

impl Serialize for Multiplier {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Multiplier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MultiplierVisitor;

        impl Visitor<'_> for MultiplierVisitor {
            type Value = Multiplier;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"1.5\" (floats are not exact)")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Multiplier, E> {
                text.parse().map_err(E::custom)
            }

            // A whole number is exact, so `multiplier = 2` is fine too.
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Multiplier, E> {
                self.visit_str(&n.to_string())
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Multiplier, E> {
                self.visit_str(&n.to_string())
            }
        }

        deserializer.deserialize_any(MultiplierVisitor)
    }
}

/// How one model's price differs from its action's. In TOML either a bare
/// integer, the model's fixed price (`models = { "premium" = 2000 }`), or a
/// table of the fields below.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Prices this model at a fixed amount, whatever was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_millicredits: Option<Millicredits>,
    /// Replaces some of a metered action's rates for this model.
    #[serde(default, skip_serializing_if = "RateOverrides::is_empty")]
    pub rates: RateOverrides,
    #[serde(default, skip_serializing_if = "Multiplier::is_one")]
    pub multiplier: Multiplier,
    /// What a Reserve holds for this model when it is given neither an
    /// amount nor dimensions; overrides the action's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_millicredits: Option<Millicredits>,
}

impl ModelPrice {
    pub fn fixed(price: Millicredits) -> ModelPrice {
        ModelPrice {
            price_millicredits: Some(price),
            ..ModelPrice::default()
        }
    }

    pub fn multiplied(multiplier: Multiplier) -> ModelPrice {
        ModelPrice {
            multiplier,
            ..ModelPrice::default()
        }
    }
}

/// The price of one action. In TOML exactly one of `price_millicredits`
/// (fixed) or a `rates` table (metered, optionally with
/// `base_millicredits` charged on every call), plus the optional fields
/// below.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ActionPriceRepr", into = "ActionPriceRepr")]
pub struct ActionPrice {
    pub base: BasePrice,
    pub rounding: Rounding,
    pub min_millicredits: Option<Millicredits>,
    pub max_millicredits: Option<Millicredits>,
    /// What a Reserve holds when it is given neither an amount nor
    /// dimensions. Without it, the price of a call that used nothing: the
    /// fixed price, or a metered action's minimum.
    pub hold_millicredits: Option<Millicredits>,
    /// Prices for particular models, e.g. a higher-cost model. A model not
    /// listed pays the action's price.
    pub models: BTreeMap<ModelName, ModelPrice>,
    /// The product capability the action belongs to (e.g. `writing`,
    /// `images`), recorded on each receipt priced from this card so usage
    /// can be grouped by it.
    pub capability: Option<String>,
}

impl ActionPrice {
    pub fn fixed(price: Millicredits) -> ActionPrice {
        ActionPrice::with_base(BasePrice::Fixed(price))
    }

    pub fn metered(rates: Rates) -> ActionPrice {
        ActionPrice::with_base(BasePrice::Metered {
            base: Millicredits::ZERO,
            rates,
        })
    }

    /// A metered action that also charges `base` on every call.
    pub fn base_plus_metered(base: Millicredits, rates: Rates) -> ActionPrice {
        ActionPrice::with_base(BasePrice::Metered { base, rates })
    }

    fn with_base(base: BasePrice) -> ActionPrice {
        ActionPrice {
            base,
            rounding: Rounding::default(),
            min_millicredits: None,
            max_millicredits: None,
            hold_millicredits: None,
            models: BTreeMap::new(),
            capability: None,
        }
    }

    /// The base and multiplier `model` is priced with. A model's fixed price
    /// wins over the action's rates; its rates only change a metered action.
    fn resolve(&self, model: Option<&ModelName>) -> (BasePrice, Multiplier) {
        let Some(entry) = model.and_then(|m| self.models.get(m)) else {
            return (self.base.clone(), Multiplier::ONE);
        };
        let base = match (entry.price_millicredits, &self.base) {
            (Some(price), _) => BasePrice::Fixed(price),
            (None, BasePrice::Metered { base, rates }) => BasePrice::Metered {
                base: *base,
                rates: entry.rates.apply_to(rates),
            },
            (None, fixed) => fixed.clone(),
        };
        (base, entry.multiplier)
    }

    /// Whether what `model` pays depends on the dimensions.
    pub fn is_metered(&self, model: Option<&ModelName>) -> bool {
        matches!(self.resolve(model).0, BasePrice::Metered { .. })
    }

    /// The price of one call on `model` that used `dimensions`, by the
    /// pipeline in the module documentation: raw amount, multiplier,
    /// rounding, then minimum and maximum.
    pub fn price_of(
        &self,
        model: Option<&ModelName>,
        dimensions: &Dimensions,
    ) -> Result<Millicredits, Rejection> {
        let (base, multiplier) = self.resolve(model);
        check_units(&base, dimensions)?;
        let rounded = exact_units(&base, dimensions, multiplier).map(|u| self.rounding.apply(u));
        let max = self.max_millicredits.map(|m| i128::from(m.get()));
        let min = self.min_millicredits.map(|m| i128::from(m.get()));
        // An amount beyond i128 is beyond any maximum: on a validated card
        // every term is non-negative.
        let capped = match (rounded, max) {
            (Some(price), Some(max)) => Some(price.min(max)),
            (Some(price), None) => Some(price),
            (None, max) => max,
        };
        let price = capped.map(|p| min.map_or(p, |min| p.max(min)));
        let limit = i128::from(Millicredits::MAX_INPUT.get());
        match price {
            Some(price) if (0..=limit).contains(&price) => Ok(Millicredits::new(
                i64::try_from(price).expect("bounded by MAX_INPUT"),
            )),
            _ => Err(Rejection::InvalidField {
                field: "dimensions",
                reason: format!("the price is not between 0 and {}", Millicredits::MAX_INPUT),
            }),
        }
    }

    /// What a Reserve for `model` holds when the caller gives neither an
    /// amount nor estimated dimensions.
    pub fn hold_of(&self, model: Option<&ModelName>) -> Result<Millicredits, Rejection> {
        let model_hold = model
            .and_then(|m| self.models.get(m))
            .and_then(|entry| entry.hold_millicredits);
        match model_hold.or(self.hold_millicredits) {
            Some(hold) => Ok(hold),
            None => self.price_of(model, &Dimensions::default()),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(capability) = &self.capability {
            let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
            if capability.is_empty()
                || capability.len() > MAX_CAPABILITY_LEN
                || !capability.chars().all(ok)
            {
                return Err(format!(
                    "capability {capability:?}: 1 to {MAX_CAPABILITY_LEN} of a-z 0-9 . _ -"
                ));
            }
        }
        match &self.base {
            BasePrice::Fixed(price) => check_amount("price_millicredits", *price)?,
            BasePrice::Metered { base, rates } => {
                check_amount("base_millicredits", *base)?;
                for (name, rate) in rates.named() {
                    check_amount(&format!("rates.{name}"), rate)?;
                }
                for (unit, rate) in &rates.per_unit {
                    check_unit_name(unit)?;
                    check_amount(&format!("rates.per_unit.{unit}"), *rate)?;
                }
            }
        }
        let optional = [
            ("min_millicredits", self.min_millicredits),
            ("max_millicredits", self.max_millicredits),
            ("hold_millicredits", self.hold_millicredits),
        ];
        for (name, amount) in optional {
            if let Some(amount) = amount {
                check_amount(name, amount)?;
            }
        }
        if let (Some(min), Some(max)) = (self.min_millicredits, self.max_millicredits)
            && min > max
        {
            return Err(format!(
                "min_millicredits ({min}) is above max_millicredits ({max})"
            ));
        }
        // A bound that is not whole credits would undo the rounding.
        if self.rounding.to_whole_credits() {
            for (name, bound) in [
                ("min_millicredits", self.min_millicredits),
                ("max_millicredits", self.max_millicredits),
            ] {
                if bound.is_some_and(|b| i128::from(b.get()) % MILLICREDITS_PER_CREDIT != 0) {
                    return Err(format!(
                        "{name} must be whole credits (a multiple of 1000) when rounding to credits"
                    ));
                }
            }
        }
        for (model, entry) in &self.models {
            entry
                .validate(&self.base)
                .map_err(|e| format!("model {model}: {e}"))?;
            self.price_of(Some(model), &Dimensions::default())
                .map_err(|e| format!("model {model}: a call that used nothing: {e}"))?;
        }
        self.price_of(None, &Dimensions::default())
            .map_err(|e| format!("a call that used nothing: {e}"))?;
        Ok(())
    }
}

impl ModelPrice {
    fn validate(&self, action_base: &BasePrice) -> Result<(), String> {
        if let Some(price) = self.price_millicredits {
            check_amount("price_millicredits", price)?;
        }
        if let Some(hold) = self.hold_millicredits {
            check_amount("hold_millicredits", hold)?;
        }
        for (name, rate) in self.rates.named() {
            if let Some(rate) = rate {
                check_amount(&format!("rates.{name}"), rate)?;
            }
        }
        for (unit, rate) in &self.rates.per_unit {
            check_amount(&format!("rates.per_unit.{unit}"), *rate)?;
        }
        if self.rates.is_empty() {
            return Ok(());
        }
        if self.price_millicredits.is_some() {
            return Err("give either price_millicredits or rates, not both".into());
        }
        let BasePrice::Metered { rates, .. } = action_base else {
            return Err("rates apply only to a metered action".into());
        };
        if let Some(unit) = self
            .rates
            .per_unit
            .keys()
            .find(|unit| !rates.per_unit.contains_key(*unit))
        {
            return Err(format!(
                "rates.per_unit.{unit}: the action does not price this unit; a model changes the price of the action's units, it cannot add one"
            ));
        }
        Ok(())
    }
}

fn check_amount(name: &str, amount: Millicredits) -> Result<(), String> {
    if amount.get() < 0 {
        return Err(format!("{name} must not be negative"));
    }
    if amount > Millicredits::MAX_INPUT {
        return Err(format!(
            "{name} must be at most {}",
            Millicredits::MAX_INPUT
        ));
    }
    Ok(())
}

fn check_unit_name(unit: &UnitName) -> Result<(), String> {
    if BUILT_IN_DIMENSIONS.contains(&unit.as_str()) {
        return Err(format!(
            "rates.per_unit.{unit}: {unit} is a built-in dimension; price it with its own rate"
        ));
    }
    Ok(())
}

/// Refuses units the price does not list: a misspelt unit would otherwise
/// be charged nothing.
fn check_units(base: &BasePrice, d: &Dimensions) -> Result<(), Rejection> {
    if d.units.len() > MAX_UNITS_PER_CALL {
        return Err(Rejection::InvalidField {
            field: "dimensions.units",
            reason: format!("at most {MAX_UNITS_PER_CALL} units per call"),
        });
    }
    let priced = match base {
        BasePrice::Fixed(_) => None,
        BasePrice::Metered { rates, .. } => Some(&rates.per_unit),
    };
    match d
        .units
        .keys()
        .find(|unit| !priced.is_some_and(|p| p.contains_key(*unit)))
    {
        None => Ok(()),
        Some(unit) => Err(Rejection::InvalidField {
            field: "dimensions.units",
            reason: match priced {
                Some(priced) if !priced.is_empty() => format!(
                    "the action does not price {unit:?}; it prices {}",
                    priced
                        .keys()
                        .map(UnitName::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!("the action does not price {unit:?}; it prices no units"),
            },
        }),
    }
}

/// The exact amount in millionths of a millicredit, or `None` when it does
/// not fit in an i128 (only for dimensions far beyond any real request).
fn exact_units(base: &BasePrice, d: &Dimensions, multiplier: Multiplier) -> Option<i128> {
    let term = |count: u64, rate: Millicredits| i128::from(count).checked_mul(rate.get().into());
    let thousandths = match base {
        BasePrice::Fixed(price) => i128::from(price.get()).checked_mul(1000)?,
        BasePrice::Metered { base, rates: r } => {
            let per_1k = term(d.input_tokens, r.per_1k_input_tokens)?
                .checked_add(term(d.output_tokens, r.per_1k_output_tokens)?)?
                .checked_add(term(d.context_tokens, r.per_1k_context_tokens)?)?;
            let mut per_unit = i128::from(base.get())
                .checked_add(term(d.images, r.per_image)?)?
                .checked_add(term(d.tool_calls, r.per_tool_call)?)?;
            for (unit, count) in &d.units {
                // check_units made sure every unit is priced.
                let rate = r.per_unit.get(unit).copied().unwrap_or(Millicredits::ZERO);
                per_unit = per_unit.checked_add(term(*count, rate)?)?;
            }
            per_1k.checked_add(per_unit.checked_mul(1000)?)?
        }
    };
    thousandths.checked_mul(multiplier.per_mille().into())
}

impl RateCard {
    /// Parses a card from TOML and validates it.
    pub fn from_toml_str(text: &str) -> Result<RateCard, String> {
        let card: RateCard = toml::from_str(text).map_err(|e| e.to_string())?;
        card.validate()?;
        Ok(card)
    }

    fn action(&self, action: &ActionKey) -> Result<&ActionPrice, Rejection> {
        self.actions
            .get(action)
            .ok_or_else(|| Rejection::UnknownAction {
                action: action.clone(),
            })
    }

    /// The price of one `action` on `model` that used `dimensions`. A model
    /// without its own entry pays the action's price.
    pub fn price_of(
        &self,
        action: &ActionKey,
        model: Option<&ModelName>,
        dimensions: &Dimensions,
    ) -> Result<Millicredits, Rejection> {
        self.action(action)?.price_of(model, dimensions)
    }

    /// The price of a call that used nothing: the fixed price, or a metered
    /// action's minimum. Superseded by [`RateCard::price_of`].
    pub fn price(
        &self,
        action: &ActionKey,
        model: Option<&ModelName>,
    ) -> Result<Millicredits, Rejection> {
        self.price_of(action, model, &Dimensions::default())
    }

    /// What a Reserve holds when the caller gives neither an amount nor
    /// estimated dimensions.
    pub fn hold_of(
        &self,
        action: &ActionKey,
        model: Option<&ModelName>,
    ) -> Result<Millicredits, Rejection> {
        self.action(action)?.hold_of(model)
    }

    /// The capability the card files `action` under, if it names one.
    pub fn capability_of(&self, action: &ActionKey) -> Option<&str> {
        self.actions.get(action)?.capability.as_deref()
    }

    /// Whether the price of `action` on `model` depends on dimensions;
    /// `None` for an unknown action.
    pub fn is_metered(&self, action: &ActionKey, model: Option<&ModelName>) -> Option<bool> {
        self.actions.get(action).map(|a| a.is_metered(model))
    }

    /// Checks what serde cannot: amounts are neither negative nor above
    /// [`Millicredits::MAX_INPUT`], a minimum is not above its maximum,
    /// bounds are whole credits when rounding to credits, and model
    /// entries make sense for their action.
    pub fn validate(&self) -> Result<(), String> {
        if self.version == 0 && !self.actions.is_empty() {
            return Err(
                "version 0 is the empty card; a card with actions needs version 1 or later".into(),
            );
        }
        for (action, price) in &self.actions {
            price
                .validate()
                .map_err(|e| format!("action {action}: {e}"))?;
        }
        Ok(())
    }
}

/// The TOML and JSON shape of [`ActionPrice`]: flat, with fixed and metered
/// told apart by which field is present.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionPriceRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    price_millicredits: Option<Millicredits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rates: Option<Rates>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_millicredits: Option<Millicredits>,
    #[serde(default, skip_serializing_if = "Rounding::is_default")]
    rounding: Rounding,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_millicredits: Option<Millicredits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_millicredits: Option<Millicredits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold_millicredits: Option<Millicredits>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    models: BTreeMap<ModelName, ModelEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capability: Option<String>,
}

impl TryFrom<ActionPriceRepr> for ActionPrice {
    type Error = String;

    fn try_from(repr: ActionPriceRepr) -> Result<ActionPrice, String> {
        let base = match (repr.price_millicredits, repr.rates, repr.base_millicredits) {
            (Some(price), None, None) => BasePrice::Fixed(price),
            (None, Some(rates), base) => BasePrice::Metered {
                base: base.unwrap_or(Millicredits::ZERO),
                rates,
            },
            (_, None, Some(_)) => {
                return Err(
                    "base_millicredits is charged on top of a metered action's rates: give it with rates (a fixed action's whole price is price_millicredits)".into(),
                );
            }
            _ => {
                return Err(
                    "give exactly one of price_millicredits (fixed) or rates (metered); for a base price plus a metered part, give rates and base_millicredits".into(),
                );
            }
        };
        Ok(ActionPrice {
            base,
            rounding: repr.rounding,
            min_millicredits: repr.min_millicredits,
            max_millicredits: repr.max_millicredits,
            hold_millicredits: repr.hold_millicredits,
            models: repr.models.into_iter().map(|(m, e)| (m, e.0)).collect(),
            capability: repr.capability,
        })
    }
}

impl From<ActionPrice> for ActionPriceRepr {
    fn from(price: ActionPrice) -> ActionPriceRepr {
        let (price_millicredits, rates, base_millicredits) = match price.base {
            BasePrice::Fixed(price) => (Some(price), None, None),
            BasePrice::Metered { base, rates } => (
                None,
                Some(rates),
                (base != Millicredits::ZERO).then_some(base),
            ),
        };
        ActionPriceRepr {
            price_millicredits,
            rates,
            base_millicredits,
            rounding: price.rounding,
            min_millicredits: price.min_millicredits,
            max_millicredits: price.max_millicredits,
            hold_millicredits: price.hold_millicredits,
            models: price
                .models
                .into_iter()
                .map(|(m, p)| (m, ModelEntry(p)))
                .collect(),
            capability: price.capability,
        }
    }
}

/// A model entry as written: a bare integer is a fixed price (the original
/// card format), a table is a [`ModelPrice`]. Written by hand rather than
/// as an untagged enum so a typo in a table gets serde's precise error.
#[derive(Clone, Serialize)]
#[serde(transparent)]
struct ModelEntry(ModelPrice);

impl<'de> Deserialize<'de> for ModelEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = ModelEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a price in millicredits, or a table of price_millicredits, rates, multiplier, hold_millicredits",
                )
            }

            fn visit_i64<E: de::Error>(self, price: i64) -> Result<ModelEntry, E> {
                Ok(ModelEntry(ModelPrice::fixed(Millicredits::new(price))))
            }

            fn visit_u64<E: de::Error>(self, price: u64) -> Result<ModelEntry, E> {
                let price = i64::try_from(price)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(price), &self))?;
                self.visit_i64(price)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelEntry, A::Error> {
                ModelPrice::deserialize(MapAccessDeserializer::new(map)).map(ModelEntry)
            }
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}
