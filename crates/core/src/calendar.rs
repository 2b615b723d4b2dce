//! Local time: where an account's days and billing cycles begin.
//!
//! Boundaries are computed from a time zone database bundled into the
//! binary, never the host's, so two replicas (or a replay next year) always
//! agree on when a day or a cycle starts.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CalendarError {
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin")]
    UnknownTimeZone(String),
    #[error("day must be 1 to 31, hour 0 to 23 and minute 0 to 59")]
    BadAnchor,
}

/// An IANA time zone name, checked against the bundled database.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn utc() -> Self {
        TimeZoneName("UTC".into())
    }

    pub fn parse(name: impl Into<String>) -> Result<Self, CalendarError> {
        let name = name.into();
        jiff::tz::db()
            .get(&name)
            .map_err(|_| CalendarError::UnknownTimeZone(name.clone()))?;
        Ok(TimeZoneName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn zone(&self) -> TimeZone {
        // Checked in `parse`, and the bundled database cannot lose a zone at
        // run time.
        jiff::tz::db()
            .get(&self.0)
            .expect("time zone names are validated when built")
    }
}

impl Default for TimeZoneName {
    fn default() -> Self {
        TimeZoneName::utc()
    }
}

impl TryFrom<String> for TimeZoneName {
    type Error = CalendarError;
    fn try_from(value: String) -> Result<Self, CalendarError> {
        TimeZoneName::parse(value)
    }
}

impl From<TimeZoneName> for String {
    fn from(name: TimeZoneName) -> String {
        name.0
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a monthly cycle renews: a day of the month and a local time. A day
/// the month does not have (the 31st in April, the 29th in a common
/// February) means the month's last day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAnchor", into = "RawAnchor")]
pub struct BillingAnchor {
    day: u8,
    hour: u8,
    minute: u8,
}

#[derive(Serialize, Deserialize)]
struct RawAnchor {
    day: u8,
    hour: u8,
    minute: u8,
}

impl TryFrom<RawAnchor> for BillingAnchor {
    type Error = CalendarError;
    fn try_from(raw: RawAnchor) -> Result<Self, CalendarError> {
        BillingAnchor::new(raw.day, raw.hour, raw.minute)
    }
}

impl From<BillingAnchor> for RawAnchor {
    fn from(anchor: BillingAnchor) -> RawAnchor {
        RawAnchor {
            day: anchor.day,
            hour: anchor.hour,
            minute: anchor.minute,
        }
    }
}

/// The 1st at midnight: what an account gets when nothing better is known.
impl Default for BillingAnchor {
    fn default() -> Self {
        BillingAnchor {
            day: 1,
            hour: 0,
            minute: 0,
        }
    }
}

impl BillingAnchor {
    pub fn new(day: u8, hour: u8, minute: u8) -> Result<Self, CalendarError> {
        if !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return Err(CalendarError::BadAnchor);
        }
        Ok(BillingAnchor { day, hour, minute })
    }

    pub fn day(self) -> u8 {
        self.day
    }

    pub fn hour(self) -> u8 {
        self.hour
    }

    pub fn minute(self) -> u8 {
        self.minute
    }

    /// The anchor that falls at `at` in `zone`: the day and minute a cycle
    /// started then would renew on.
    pub fn at(zone: &TimeZoneName, at: Timestamp) -> Self {
        let local = local(zone, at);
        BillingAnchor {
            day: local.day() as u8,
            hour: local.hour() as u8,
            minute: local.minute() as u8,
        }
    }

    /// This anchor's moment in the month of `date`, in `zone`.
    fn in_month(self, zone: &TimeZone, date: Date) -> Timestamp {
        let day = (self.day as i8).min(date.days_in_month());
        let local = DateTime::new(
            date.year(),
            date.month(),
            day,
            self.hour as i8,
            self.minute as i8,
            0,
            0,
        )
        .expect("the day is clamped to the month");
        to_timestamp(zone, local)
    }
}

/// The first renewal of `anchor` strictly after `after`.
pub fn next_anchor(zone: &TimeZoneName, anchor: BillingAnchor, after: Timestamp) -> Timestamp {
    let tz = zone.zone();
    let mut month = local(zone, after).date().first_of_month();
    // A month's renewal can still be ahead (later this month) or already
    // past; the next month's is always ahead. Looping also covers a local
    // time shifted by a DST gap.
    loop {
        let renewal = anchor.in_month(&tz, month);
        if renewal > after {
            return renewal;
        }
        month = month
            .checked_add(jiff::Span::new().months(1))
            .expect("dates stay within jiff's range");
    }
}

/// The start of the first local day strictly after `after`. A day whose
/// midnight a DST change skips starts at the first moment that exists.
pub fn next_midnight(zone: &TimeZoneName, after: Timestamp) -> Timestamp {
    let tz = zone.zone();
    let tomorrow = local(zone, after)
        .date()
        .tomorrow()
        .expect("dates stay within jiff's range");
    let start = tomorrow.to_zoned(tz).expect("every day has a first moment");
    Timestamp::from_millis(start.timestamp().as_millisecond())
}

/// A local day: `YYYY-MM-DD`.
pub type Day = jiff::civil::Date;

/// Parses `YYYY-MM-DD`; `None` for anything else, or a date that does not
/// exist.
pub fn parse_day(text: &str) -> Option<Day> {
    let valid = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    valid.then(|| text.parse().ok()).flatten()
}

/// The local day `at` falls on.
pub fn day_of(zone: &TimeZoneName, at: Timestamp) -> Day {
    local(zone, at).date()
}

/// The first moment of a local day (a midnight a DST change skips starts
/// at the first moment that exists).
pub fn day_start(zone: &TimeZoneName, day: Day) -> Timestamp {
    let start = day
        .to_zoned(zone.zone())
        .expect("every day has a first moment");
    Timestamp::from_millis(start.timestamp().as_millisecond())
}

/// `at` plus `days` local days at the same local time: a 7-day trial opened
/// at 10:00 ends at 10:00, across DST changes too.
pub fn plus_days(zone: &TimeZoneName, at: Timestamp, days: u32) -> Timestamp {
    let later = local(zone, at)
        .checked_add(jiff::Span::new().days(i64::from(days)))
        .expect("trial lengths are bounded");
    to_timestamp(&zone.zone(), later)
}

/// `at` plus `months` local months, on the same day where the month has
/// it and on its last day where it does not.
pub fn plus_months(zone: &TimeZoneName, at: Timestamp, months: u32) -> Timestamp {
    let later = local(zone, at)
        .checked_add(jiff::Span::new().months(i64::from(months)))
        .expect("pack lifetimes are bounded");
    to_timestamp(&zone.zone(), later)
}

/// `at` as a local date and time, for display and tests.
pub fn local(zone: &TimeZoneName, at: Timestamp) -> DateTime {
    jiff::Timestamp::from_millisecond(at.as_millis())
        .expect("timestamps stay within jiff's range")
        .to_zoned(zone.zone())
        .datetime()
}

/// A local time as an instant: a time a DST gap skips moves forward by the
/// gap, and a time that happens twice means its first occurrence.
fn to_timestamp(zone: &TimeZone, local: DateTime) -> Timestamp {
    let zoned = local
        .to_zoned(zone.clone())
        .expect("local times stay within jiff's range");
    Timestamp::from_millis(zoned.timestamp().as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        let ts: jiff::Timestamp = s.parse().unwrap();
        Timestamp::from_millis(ts.as_millisecond())
    }

    fn zone(name: &str) -> TimeZoneName {
        TimeZoneName::parse(name).unwrap()
    }

    #[test]
    fn the_31st_renews_on_the_last_day_of_shorter_months() {
        let anchor = BillingAnchor::new(31, 0, 0).unwrap();
        let z = zone("UTC");
        let jan = next_anchor(&z, anchor, utc("2026-01-15T00:00:00Z"));
        assert_eq!(jan, utc("2026-01-31T00:00:00Z"));
        let feb = next_anchor(&z, anchor, jan);
        assert_eq!(feb, utc("2026-02-28T00:00:00Z"));
        let mar = next_anchor(&z, anchor, feb);
        assert_eq!(mar, utc("2026-03-31T00:00:00Z"));
        let apr = next_anchor(&z, anchor, mar);
        assert_eq!(apr, utc("2026-04-30T00:00:00Z"));
    }

    #[test]
    fn a_29th_anchor_uses_the_leap_day() {
        let anchor = BillingAnchor::new(29, 12, 0).unwrap();
        let z = zone("UTC");
        let after = utc("2028-02-01T00:00:00Z");
        assert_eq!(next_anchor(&z, anchor, after), utc("2028-02-29T12:00:00Z"));
        assert_eq!(
            next_anchor(&z, anchor, utc("2027-02-01T00:00:00Z")),
            utc("2027-02-28T12:00:00Z")
        );
    }

    #[test]
    fn anchors_follow_local_time_across_dst() {
        // Berlin: UTC+1 in winter, UTC+2 from 29 March 2026.
        let anchor = BillingAnchor::new(15, 9, 30).unwrap();
        let z = zone("Europe/Berlin");
        let march = next_anchor(&z, anchor, utc("2026-03-01T00:00:00Z"));
        assert_eq!(march, utc("2026-03-15T08:30:00Z"));
        let april = next_anchor(&z, anchor, march);
        assert_eq!(april, utc("2026-04-15T07:30:00Z"));
    }

    #[test]
    fn a_skipped_local_time_moves_forward() {
        // New York skips 02:00–03:00 on 8 March 2026.
        let anchor = BillingAnchor::new(8, 2, 30).unwrap();
        let z = zone("America/New_York");
        let renewal = next_anchor(&z, anchor, utc("2026-03-01T00:00:00Z"));
        assert_eq!(renewal, utc("2026-03-08T07:30:00Z"));
        assert_eq!(local(&z, renewal).hour(), 3);
    }

    #[test]
    fn midnight_is_local_and_days_can_be_23_or_25_hours() {
        let z = zone("Europe/Berlin");
        let a = next_midnight(&z, utc("2026-03-28T12:00:00Z"));
        assert_eq!(a, utc("2026-03-28T23:00:00Z"));
        let b = next_midnight(&z, a);
        assert_eq!(b, utc("2026-03-29T22:00:00Z"));
        assert_eq!(b.as_millis() - a.as_millis(), 23 * 3_600_000);
        // A moment exactly at midnight moves to the next one.
        assert_eq!(next_midnight(&z, b), utc("2026-03-30T22:00:00Z"));
    }

    #[test]
    fn a_midnight_that_dst_skips_starts_the_day_at_one() {
        // Santiago moved clocks from 00:00 to 01:00 on 6 September 2026.
        let z = zone("America/Santiago");
        let start = next_midnight(&z, utc("2026-09-05T12:00:00Z"));
        assert_eq!(local(&z, start).hour(), 1);
        assert_eq!(local(&z, start).day(), 6);
    }

    #[test]
    fn bad_names_and_anchors_are_refused() {
        assert!(TimeZoneName::parse("Mars/Olympus").is_err());
        assert!(BillingAnchor::new(0, 0, 0).is_err());
        assert!(BillingAnchor::new(32, 0, 0).is_err());
        assert!(BillingAnchor::new(1, 24, 0).is_err());
        assert!(
            serde_json::from_str::<BillingAnchor>(r#"{"day":40,"hour":0,"minute":0}"#).is_err()
        );
    }
}
