//! Idempotency keys.
//!
//! Every mutation sent to Tally carries an idempotency key; a retry with
//! the same key and the same request gets the first answer back and
//! charges nothing more. Keys must be unique per account; a UUID v7 is
//! unique and sorts by the time it was minted, which keeps keys of one
//! period together in logs and the ledger.

/// A fresh idempotency key: a UUID v7 in its hyphenated form.
///
/// ```
/// let a = tally_client::new_key();
/// let b = tally_client::new_key();
/// assert_ne!(a, b);
/// assert_eq!(a.len(), 36);
/// ```
pub fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The keys of one metered action, derived from one base key, so each
/// step of the action has a key of its own and every retry of a step
/// resends that step's key. (A commit and a usage record are different
/// requests to Tally: reusing the commit's key for the usage record
/// reported after a lost commit is refused with IDEMPOTENCY_KEY_REUSED
/// if the commit did land, so the action is never charged twice.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionKeys {
    base: String,
}

impl ActionKeys {
    /// Keys derived from a fresh base key.
    pub fn new() -> Self {
        ActionKeys::from_base(new_key())
    }

    /// Keys derived from `base`, e.g. the id of the caller's task, so a
    /// task re-run after a crash of the caller finds its earlier hold and
    /// charge.
    pub fn from_base(base: impl Into<String>) -> Self {
        ActionKeys { base: base.into() }
    }

    /// The base key.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The Reserve's key.
    pub fn reserve(&self) -> String {
        format!("{}:reserve", self.base)
    }

    /// The Commit's key (also the key of the usage record reported for
    /// the action when it ran while Tally was unreachable).
    pub fn commit(&self) -> String {
        format!("{}:commit", self.base)
    }

    /// The Release's key.
    pub fn release(&self) -> String {
        format!("{}:release", self.base)
    }

    /// The key of the `n`th Extend (from 1).
    pub fn extend(&self, n: u32) -> String {
        format!("{}:extend:{n}", self.base)
    }
}

impl Default for ActionKeys {
    fn default() -> Self {
        ActionKeys::new()
    }
}
