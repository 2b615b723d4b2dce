//! Exact money-like amounts. One credit is 1000 milli-credits; there are no
//! floats anywhere in a balance.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Mul, Neg, Sub, SubAssign};

use serde::{Deserialize, Serialize};

/// An amount of milli-credits. Signed because overage and adjustments make
/// differences negative; amounts that cross the API are bounded by
/// [`Millicredits::MAX_INPUT`] so sums of them cannot overflow in practice
/// (and overflow panics instead of wrapping: see the release profile).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millicredits(i64);

impl Millicredits {
    pub const ZERO: Millicredits = Millicredits(0);
    /// The largest amount one request may carry: a billion credits.
    pub const MAX_INPUT: Millicredits = Millicredits(1_000_000_000_000);

    pub const fn new(millicredits: i64) -> Self {
        Millicredits(millicredits)
    }

    pub const fn from_credits(credits: i64) -> Self {
        Millicredits(credits * 1000)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl fmt::Display for Millicredits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} mc", self.0)
    }
}

impl Add for Millicredits {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Millicredits(self.0 + rhs.0)
    }
}

impl Sub for Millicredits {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Millicredits(self.0 - rhs.0)
    }
}

impl Neg for Millicredits {
    type Output = Self;
    fn neg(self) -> Self {
        Millicredits(-self.0)
    }
}

impl Mul<i64> for Millicredits {
    type Output = Self;
    fn mul(self, rhs: i64) -> Self {
        Millicredits(self.0 * rhs)
    }
}

impl AddAssign for Millicredits {
    fn add_assign(&mut self, rhs: Self) {
        self.0 += rhs.0;
    }
}

impl SubAssign for Millicredits {
    fn sub_assign(&mut self, rhs: Self) {
        self.0 -= rhs.0;
    }
}

impl Sum for Millicredits {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Millicredits::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Millicredits> for Millicredits {
    fn sum<I: Iterator<Item = &'a Self>>(iter: I) -> Self {
        iter.copied().sum()
    }
}
