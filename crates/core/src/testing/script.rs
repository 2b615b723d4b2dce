//! A script in bytes, for the fuzz target `core_commands`: any bytes are
//! a script (the fuzzer mutates bytes, not values), and every script the
//! property tests draw can be written as bytes (the seed corpus is made
//! so; a test checks the round trip).
//!
//! The first byte says how the account opens: its low seven bits, modulo
//! 5, pick a plan of [`PLANS`] or (4) none, and its high bit asks for the
//! plan's trial. Then each operation is a tag byte (modulo 15, below) and
//! its arguments: an index in one byte, a number in two (little-endian,
//! modulo its range), an optional number as a byte whose low bit says
//! whether the number follows. The ranges are those of the proptest
//! strategies (`super::strategy`). Bytes that run out read as zeros, and
//! at most [`MAX_OPS`] operations are read.

use super::run::{ACTIONS, HOUR, Op, PLANS};
use crate::{BucketKind, OpenAccount, PlanName};

/// How the account opens, then what happens to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub open: OpenAccount,
    pub ops: Vec<Op>,
}

/// Operations read from one input at most: a fuzz input stays quick to
/// run, whatever its length.
pub const MAX_OPS: usize = 256;

const KINDS: [BucketKind; 5] = [
    BucketKind::Daily,
    BucketKind::Monthly,
    BucketKind::TopUp,
    BucketKind::Promotional,
    BucketKind::Trial,
];

/// The numeric arguments, inclusive, as the strategies draw them.
const SHORT_WAIT: (i64, i64) = (0, 3_999);
const LONG_WAIT_HOURS: (i64, i64) = (1, 40 * 24);
const GRANT: (i64, i64) = (1, 4_999);
const EFFECTIVE_IN: (i64, i64) = (0, 2_999);
const EXPIRES_IN: (i64, i64) = (1, 7_999);
const RESERVE: (i64, i64) = (1, 2_999);
const TTL: (i64, i64) = (1, 5_999);
const COMMIT: (i64, i64) = (0, 7_999);
const DEBIT: (i64, i64) = (1, 1_999);
const ADD: (i64, i64) = (1, 3_999);
const REMOVE: (i64, i64) = (2, 4_000);
const REFUND: (i64, i64) = (1, 2_999);
const CAP: (i64, i64) = (1, 24_999);
const LOW_BALANCE: (i64, i64) = (1, 19_999);

/// The tags, in order.
const TAGS: u8 = 15;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn index(&mut self, len: usize) -> usize {
        usize::from(self.byte()) % len
    }

    fn number(&mut self, (lo, hi): (i64, i64)) -> i64 {
        let raw = u16::from_le_bytes([self.byte(), self.byte()]);
        lo + i64::from(raw) % (hi - lo + 1)
    }

    fn maybe(&mut self, range: (i64, i64)) -> Option<i64> {
        (self.byte() & 1 == 1).then(|| self.number(range))
    }

    fn op(&mut self) -> Op {
        match self.byte() % TAGS {
            0 => Op::Wait(self.number(SHORT_WAIT)),
            1 => Op::Wait(self.number(LONG_WAIT_HOURS) * HOUR),
            2 => Op::Grant {
                kind: KINDS[self.index(KINDS.len())],
                amount: self.number(GRANT),
                effective_in: self.maybe(EFFECTIVE_IN),
                expires_in: self.maybe(EXPIRES_IN),
            },
            3 => Op::Void(usize::from(self.byte())),
            4 => Op::Reserve {
                action: self.index(ACTIONS.len()),
                amount: self.maybe(RESERVE),
                ttl: self.number(TTL),
            },
            5 => Op::Commit {
                pick: usize::from(self.byte()),
                amount: self.maybe(COMMIT),
            },
            6 => Op::Release(usize::from(self.byte())),
            7 => Op::Extend {
                pick: usize::from(self.byte()),
                ttl: self.number(TTL),
            },
            8 => Op::Debit {
                action: self.index(ACTIONS.len()),
                amount: self.maybe(DEBIT),
            },
            9 => match self.byte() & 1 {
                0 => Op::Adjust(self.number(ADD)),
                _ => Op::Adjust(-self.number(REMOVE)),
            },
            10 => Op::Refund {
                pick: usize::from(self.byte()),
                amount: self.maybe(REFUND),
            },
            11 => Op::SetCap(self.maybe(CAP)),
            12 => Op::ChangePlan(self.index(PLANS.len())),
            13 => Op::SetAnchor {
                day: 1 + self.byte() % 31,
                hour: self.byte() % 24,
                minute: self.byte() % 60,
            },
            _ => match self.byte() & 1 {
                0 => Op::SetAlerts(None),
                _ => Op::SetAlerts(Some((self.number(LOW_BALANCE), 1 + self.byte() % 100))),
            },
        }
    }
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn byte(&mut self, byte: u8) {
        self.0.push(byte);
    }

    fn pick(&mut self, pick: usize) {
        self.byte(u8::try_from(pick).expect("a script picks with one byte"));
    }

    fn number(&mut self, value: i64, (lo, hi): (i64, i64)) {
        assert!((lo..=hi).contains(&value), "{value} is not in {lo}..={hi}");
        let raw = u16::try_from(value - lo).expect("ranges fit in two bytes");
        self.0.extend_from_slice(&raw.to_le_bytes());
    }

    fn maybe(&mut self, value: Option<i64>, range: (i64, i64)) {
        match value {
            None => self.byte(0),
            Some(value) => {
                self.byte(1);
                self.number(value, range);
            }
        }
    }

    fn op(&mut self, op: &Op) {
        let tag = |w: &mut Self, tag: u8| w.byte(tag);
        match *op {
            Op::Wait(ms) if (SHORT_WAIT.0..=SHORT_WAIT.1).contains(&ms) => {
                tag(self, 0);
                self.number(ms, SHORT_WAIT);
            }
            Op::Wait(ms) => {
                assert_eq!(ms % HOUR, 0, "a wait of {ms} ms has no byte form");
                tag(self, 1);
                self.number(ms / HOUR, LONG_WAIT_HOURS);
            }
            Op::Grant {
                kind,
                amount,
                effective_in,
                expires_in,
            } => {
                tag(self, 2);
                let kind = KINDS.iter().position(|k| *k == kind).expect("a kind");
                self.pick(kind);
                self.number(amount, GRANT);
                self.maybe(effective_in, EFFECTIVE_IN);
                self.maybe(expires_in, EXPIRES_IN);
            }
            Op::Void(pick) => {
                tag(self, 3);
                self.pick(pick);
            }
            Op::Reserve {
                action,
                amount,
                ttl,
            } => {
                tag(self, 4);
                self.pick(action);
                self.maybe(amount, RESERVE);
                self.number(ttl, TTL);
            }
            Op::Commit { pick, amount } => {
                tag(self, 5);
                self.pick(pick);
                self.maybe(amount, COMMIT);
            }
            Op::Release(pick) => {
                tag(self, 6);
                self.pick(pick);
            }
            Op::Extend { pick, ttl } => {
                tag(self, 7);
                self.pick(pick);
                self.number(ttl, TTL);
            }
            Op::Debit { action, amount } => {
                tag(self, 8);
                self.pick(action);
                self.maybe(amount, DEBIT);
            }
            Op::Adjust(amount) => {
                tag(self, 9);
                if amount > 0 {
                    self.byte(0);
                    self.number(amount, ADD);
                } else {
                    self.byte(1);
                    self.number(-amount, REMOVE);
                }
            }
            Op::Refund { pick, amount } => {
                tag(self, 10);
                self.pick(pick);
                self.maybe(amount, REFUND);
            }
            Op::SetCap(cap) => {
                tag(self, 11);
                self.maybe(cap, CAP);
            }
            Op::ChangePlan(plan) => {
                tag(self, 12);
                self.pick(plan);
            }
            Op::SetAnchor { day, hour, minute } => {
                tag(self, 13);
                assert!((1..=31).contains(&day) && hour < 24 && minute < 60);
                self.byte(day - 1);
                self.byte(hour);
                self.byte(minute);
            }
            Op::SetAlerts(None) => {
                tag(self, 14);
                self.byte(0);
            }
            Op::SetAlerts(Some((low, percent))) => {
                tag(self, 14);
                self.byte(1);
                self.number(low, LOW_BALANCE);
                assert!((1..=100).contains(&percent), "{percent}%");
                self.byte(percent - 1);
            }
        }
    }
}

impl Script {
    /// The script `data` says; any bytes say one.
    pub fn from_bytes(data: &[u8]) -> Script {
        let mut reader = Reader(data);
        let opening = reader.byte();
        let plan = match usize::from(opening & 0x7f) % (PLANS.len() + 1) {
            i if i == PLANS.len() => None,
            i => Some(i),
        };
        let open = OpenAccount {
            plan: plan.map(|i| PlanName::parse(PLANS[i].0).expect("a plan name")),
            trial: opening & 0x80 != 0 && plan.is_some_and(|i| PLANS[i].4.is_some()),
            ..OpenAccount::default()
        };
        let mut ops = Vec::new();
        while !reader.0.is_empty() && ops.len() < MAX_OPS {
            ops.push(reader.op());
        }
        Script { open, ops }
    }

    /// The bytes that say this script. Panics on a script the byte form
    /// cannot say: one with values outside the strategies' ranges, or
    /// with an opening other than a plan of [`PLANS`] and its trial.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        let plan = match &self.open.plan {
            None => PLANS.len(),
            Some(name) => PLANS
                .iter()
                .position(|p| p.0 == name.as_str())
                .expect("a plan of PLANS"),
        };
        assert_eq!(
            self.open,
            OpenAccount {
                plan: self.open.plan.clone(),
                trial: self.open.trial,
                ..OpenAccount::default()
            },
            "a script opens with a plan and a trial, nothing else"
        );
        let plan = u8::try_from(plan).expect("few plans");
        writer.byte(plan | if self.open.trial { 0x80 } else { 0 });
        for op in &self.ops {
            writer.op(op);
        }
        writer.0
    }
}
