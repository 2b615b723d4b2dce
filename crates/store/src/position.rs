use std::fmt;
use std::str::FromStr;

/// Position of an event in the global log, ordered lexicographically by
/// `(tx, seq)`.
///
/// Two numbers because PostgreSQL cannot hand out a gap-free, commit-ordered
/// sequence: it will use `tx` = the writing transaction's `xid8` and `seq` = a
/// `bigserial`, and readers fence on the oldest transaction still running.
/// SQLite serialises writers, so its rowid alone is already commit-ordered and
/// it uses `tx = 0`, `seq = rowid`.
///
/// Positions are only comparable within one store. Every recorded event is
/// strictly after `LogPosition::default()`, so `Some(default)` and `None` read
/// the log from the same place.
///
/// The text form `"{tx}.{seq}"` is what leaves the process (consistency
/// tokens, checkpoints), so it is stable and round-trips through [`FromStr`].
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct LogPosition {
    pub tx: u64,
    pub seq: u64,
}

impl LogPosition {
    pub const fn new(tx: u64, seq: u64) -> Self {
        Self { tx, seq }
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx, self.seq)
    }
}

/// A string that is not `"{tx}.{seq}"` with two unsigned decimal integers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid log position {input:?}: expected \"<tx>.<seq>\" with two unsigned decimal integers"
)]
pub struct ParseLogPositionError {
    pub input: String,
}

impl FromStr for LogPosition {
    type Err = ParseLogPositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseLogPositionError {
            input: s.to_owned(),
        };
        let (tx, seq) = s.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            tx: parse_decimal(tx).ok_or_else(invalid)?,
            seq: parse_decimal(seq).ok_or_else(invalid)?,
        })
    }
}

/// `u64::from_str` also accepts a leading `+`; a token has exactly one
/// spelling, so only ASCII digits are allowed.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn displays_as_tx_dot_seq() {
        assert_eq!(LogPosition::new(0, 42).to_string(), "0.42");
        assert_eq!(LogPosition::new(7, 1).to_string(), "7.1");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            ".",
            "1",
            "1.",
            ".1",
            "1.2.3",
            "+1.2",
            "1.-2",
            " 1.2",
            "1.2 ",
            "a.b",
            "18446744073709551616.0",
        ] {
            assert!(bad.parse::<LogPosition>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn orders_by_tx_before_seq() {
        assert!(LogPosition::new(1, 0) > LogPosition::new(0, u64::MAX));
        assert!(LogPosition::new(1, 2) < LogPosition::new(1, 3));
        assert!(LogPosition::default() < LogPosition::new(0, 1));
    }

    proptest! {
        #[test]
        fn text_round_trips(tx: u64, seq: u64) {
            let position = LogPosition::new(tx, seq);
            prop_assert_eq!(position.to_string().parse::<LogPosition>(), Ok(position));
        }

        #[test]
        fn order_is_lexicographic_and_survives_text(a: (u64, u64), b: (u64, u64)) {
            let (pa, pb) = (LogPosition::new(a.0, a.1), LogPosition::new(b.0, b.1));
            let (qa, qb): (LogPosition, LogPosition) =
                (pa.to_string().parse().unwrap(), pb.to_string().parse().unwrap());
            prop_assert_eq!(pa.cmp(&pb), qa.cmp(&qb));
            prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
        }
    }
}
