//! Settled charges as a refund sees them. A charge (a debit, a commit, a
//! usage record) is named by the idempotency key it was made with; what a
//! refund needs of it is its receipt and how much of it was refunded
//! before. The engine looks both up in the store when a refund names the
//! charge, so the account's state never grows with its history.

use serde::{Deserialize, Serialize};

use crate::{Debit, GrantId, IdempotencyKey, Millicredits, Timestamp};

/// A charge that a refund may return credits of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The idempotency key the charge was made with.
    pub key: IdempotencyKey,
    /// When it was charged; `None` for charges recorded before Tally kept
    /// it, which then never count as this cycle's spending.
    pub charged_at: Option<Timestamp>,
    pub debit: Debit,
    /// Returned by refunds so far: never more than `debit.charged`.
    pub refunded: Millicredits,
}

/// Where one slice of a refund comes back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundSource {
    /// The part of the charge no bucket could pay (its overage).
    Overage,
    /// A bucket that paid.
    Bucket(GrantId, crate::BucketKind),
}

impl Charge {
    /// What may still be refunded.
    pub fn refundable(&self) -> Millicredits {
        self.debit.charged - self.refunded
    }

    /// The pieces of the next `amount` refunded, in refund order: the
    /// overage first (the last thing that "paid"), then the buckets in the
    /// reverse of the order they paid. Refunds walk this order from where
    /// the previous ones stopped, so a total refunded is enough to know
    /// which credits went back already, and partial refunds never return
    /// more to a bucket than it gave.
    pub fn next_slice(&self, amount: Millicredits) -> Vec<(RefundSource, Millicredits)> {
        let mut order: Vec<(RefundSource, Millicredits)> = Vec::new();
        if self.debit.overage.is_positive() {
            order.push((RefundSource::Overage, self.debit.overage));
        }
        for draw in self.debit.paid_by().into_iter().rev() {
            order.push((RefundSource::Bucket(draw.grant_id, draw.kind), draw.amount));
        }
        let (start, end) = (self.refunded, self.refunded + amount);
        let mut offset = Millicredits::ZERO;
        let mut pieces = Vec::new();
        for (source, size) in order {
            let (lo, hi) = (offset.max(start), (offset + size).min(end));
            if hi > lo {
                pieces.push((source, hi - lo));
            }
            offset += size;
        }
        pieces
    }
}
