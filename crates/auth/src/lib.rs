//! Who may call Tally, and for what.
//!
//! Callers present an API key as `authorization: Bearer <secret>`. The key
//! file holds, per key, an id (what logs and metrics show), the SHA-256 of
//! the secret (never the secret: a leaked key file lets nobody in), the
//! scopes it grants, and optionally the accounts it may touch:
//!
//! ```toml
//! [[key]]
//! id = "billing-service"
//! sha256 = "…64 hex digits…"
//! scopes = ["meter", "read"]
//! accounts = ["acme", "tenant-7/*"]   # optional: every account if absent
//! ```
//!
//! A plain SHA-256 is enough because secrets are 256 random bits minted by
//! [`mint_secret`] (`tallyd keygen`): there is nothing to guess, so a slow
//! password hash would only cost time on every call. No I/O here besides
//! reading the key file; the server decides when to (re)load it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// What a key may do. Each RPC needs exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Charge actions: quote, reserve, commit, release, extend, debit,
    /// report usage.
    Meter,
    /// Read balances, the ledger, usage, catalogues; watch accounts.
    Read,
    /// Change what accounts hold and how they are priced: open accounts,
    /// grants, voids, adjustments, refunds, plans, caps, anchors, alert
    /// thresholds, rate cards and plan catalogues.
    Admin,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Meter => "meter",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accounts a key may touch: some exact ids, and id prefixes (a
/// tenant's), written with a trailing `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accounts {
    All,
    Some {
        exact: BTreeSet<String>,
        prefixes: Vec<String>,
    },
}

impl Accounts {
    pub fn covers(&self, account: &str) -> bool {
        match self {
            Accounts::All => true,
            Accounts::Some { exact, prefixes } => {
                exact.contains(account) || prefixes.iter().any(|p| account.starts_with(p.as_str()))
            }
        }
    }
}

/// One API key as the key file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    pub scopes: BTreeSet<Scope>,
    pub accounts: Accounts,
}

impl Key {
    /// Whether the key may call an RPC that needs `scope`.
    pub fn allows(&self, scope: Scope) -> Result<(), Denied> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Denied::Scope {
                key: self.id.clone(),
                scope,
            })
        }
    }

    /// Whether the key may touch `account`.
    pub fn covers(&self, account: &str) -> Result<(), Denied> {
        if self.accounts.covers(account) {
            Ok(())
        } else {
            Err(Denied::Account {
                key: self.id.clone(),
                account: account.to_owned(),
            })
        }
    }
}

/// Why a call is not let in at all (`UNAUTHENTICATED`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Unauthenticated {
    #[error("this call needs an API key: send `authorization: Bearer <key>`")]
    Missing,
    #[error("the authorization header is not `Bearer <key>`")]
    Malformed,
    #[error("the API key is not valid (unknown or revoked)")]
    Unknown,
}

impl Unauthenticated {
    /// The reason callers and metrics see.
    pub fn reason(&self) -> &'static str {
        match self {
            Unauthenticated::Missing => "API_KEY_MISSING",
            Unauthenticated::Malformed => "API_KEY_MALFORMED",
            Unauthenticated::Unknown => "API_KEY_INVALID",
        }
    }
}

/// Why a key that got in may not do this (`PERMISSION_DENIED`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Denied {
    #[error("API key {key} lacks the {scope} scope this call needs")]
    Scope { key: String, scope: Scope },
    #[error("API key {key} may not touch account {account}")]
    Account { key: String, account: String },
}

impl Denied {
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Scope { .. } => "SCOPE_MISSING",
            Denied::Account { .. } => "ACCOUNT_NOT_ALLOWED",
        }
    }
}

/// A key file that cannot be used: tallyd refuses to start with it, and a
/// reload keeps the keys it had.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the key file is not valid TOML: {0}")]
    Toml(String),
    #[error("key {index} of the key file: {problem}")]
    Key { index: usize, problem: String },
}

/// The keys of one key file, by the digest of their secret.
#[derive(Debug, Default)]
pub struct Keys {
    by_digest: HashMap<[u8; 32], Arc<Key>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    sha256: String,
    scopes: Vec<Scope>,
    accounts: Option<Vec<String>>,
}

impl Keys {
    pub fn load(path: &Path) -> Result<Keys, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Keys::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Keys, KeyFileError> {
        let file: KeyFile = toml::from_str(text).map_err(|e| KeyFileError::Toml(e.to_string()))?;
        let mut keys = Keys::default();
        let mut ids = BTreeSet::new();
        for (index, entry) in file.key.into_iter().enumerate() {
            let problem = |problem: String| KeyFileError::Key {
                index: index + 1,
                problem,
            };
            if entry.id.trim().is_empty() || entry.id.len() > 128 {
                return Err(problem("id must be 1 to 128 bytes".into()));
            }
            if !ids.insert(entry.id.clone()) {
                return Err(problem(format!("id {:?} is used twice", entry.id)));
            }
            let digest: [u8; 32] = hex::decode(&entry.sha256)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| problem("sha256 must be 64 hex digits".into()))?;
            if entry.scopes.is_empty() {
                return Err(problem(
                    "scopes must name at least one of meter, read, admin".into(),
                ));
            }
            let accounts = match entry.accounts {
                None => Accounts::All,
                Some(list) => accounts(list).map_err(problem)?,
            };
            let key = Key {
                id: entry.id,
                scopes: entry.scopes.into_iter().collect(),
                accounts,
            };
            if keys.by_digest.insert(digest, Arc::new(key)).is_some() {
                return Err(problem("its sha256 is another key's".into()));
            }
        }
        Ok(keys)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The key an `authorization` header value presents.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Arc<Key>, Unauthenticated> {
        let header = header.ok_or(Unauthenticated::Missing)?;
        let (scheme, secret) = header.split_once(' ').ok_or(Unauthenticated::Malformed)?;
        let secret = secret.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
            return Err(Unauthenticated::Malformed);
        }
        self.by_digest
            .get(&digest(secret))
            .cloned()
            .ok_or(Unauthenticated::Unknown)
    }
}

fn accounts(list: Vec<String>) -> Result<Accounts, String> {
    let mut exact = BTreeSet::new();
    let mut prefixes = Vec::new();
    for pattern in list {
        match pattern.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => {
                return Err(format!("account pattern {pattern:?}: `*` only at the end"));
            }
            Some(prefix) => prefixes.push(prefix.to_owned()),
            None if pattern.contains('*') => {
                return Err(format!("account pattern {pattern:?}: `*` only at the end"));
            }
            None if pattern.is_empty() => return Err("an account pattern is empty".into()),
            None => {
                exact.insert(pattern);
            }
        }
    }
    Ok(Accounts::Some { exact, prefixes })
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new secret (`tly_` and 64 hex digits: 256 random bits) and the
/// SHA-256 the key file stores for it.
pub fn mint_secret() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let secret = format!("tly_{}", hex::encode(bytes));
    let sha256 = hex::encode(digest(&secret));
    Ok((secret, sha256))
}

/// A new key: its secret, and the key file entry for it (checked to load).
pub fn new_key_entry(
    id: &str,
    scopes: &[String],
    accounts: &[String],
) -> Result<(String, String), KeyFileError> {
    let (secret, sha256) = mint_secret().map_err(|e| KeyFileError::Key {
        index: 1,
        problem: format!("no randomness for a secret: {e}"),
    })?;
    let quoted = |values: &[String]| {
        values
            .iter()
            .map(|v| toml::Value::String(v.clone()).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut entry = format!(
        "[[key]]\nid = {}\nsha256 = \"{sha256}\"\nscopes = [{}]\n",
        toml::Value::String(id.to_owned()),
        quoted(scopes)
    );
    if !accounts.is_empty() {
        entry.push_str(&format!("accounts = [{}]\n", quoted(accounts)));
    }
    Keys::parse(&entry)?;
    Ok((secret, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(secret: &str, extra: &str) -> String {
        format!(
            "[[key]]\nid = \"billing\"\nsha256 = \"{}\"\nscopes = [\"meter\", \"read\"]\n{extra}",
            hex::encode(digest(secret))
        )
    }

    #[test]
    fn a_minted_secret_authenticates_as_its_key() {
        let (secret, sha256) = mint_secret().unwrap();
        assert!(secret.starts_with("tly_") && secret.len() == 68);
        let keys = Keys::parse(&format!(
            "[[key]]\nid = \"k\"\nsha256 = \"{sha256}\"\nscopes = [\"admin\"]\n"
        ))
        .unwrap();
        let key = keys
            .authenticate(Some(&format!("Bearer {secret}")))
            .unwrap();
        assert_eq!(key.id, "k");
        assert_eq!(key.allows(Scope::Admin), Ok(()));
        assert!(key.allows(Scope::Meter).is_err());
        assert_ne!(mint_secret().unwrap().0, secret, "secrets are random");
    }

    #[test]
    fn a_new_entry_loads_and_lets_its_secret_in() {
        let (secret, entry) = new_key_entry(
            "svc \"one\"",
            &["meter".into(), "read".into()],
            &["tenant-7/*".into()],
        )
        .unwrap();
        let keys = Keys::parse(&entry).unwrap();
        let key = keys
            .authenticate(Some(&format!("Bearer {secret}")))
            .unwrap();
        assert_eq!(key.id, "svc \"one\"");
        assert!(key.allows(Scope::Read).is_ok() && key.allows(Scope::Admin).is_err());
        assert!(key.covers("tenant-7/a").is_ok() && key.covers("acme").is_err());
        assert!(!entry.contains(&secret), "the entry holds no secret");
        assert!(new_key_entry("x", &["root".into()], &[]).is_err());
    }

    #[test]
    fn headers_that_present_no_valid_key_are_told_apart() {
        let keys = Keys::parse(&file("s3cret", "")).unwrap();
        assert_eq!(keys.authenticate(None), Err(Unauthenticated::Missing));
        for malformed in ["s3cret", "Basic s3cret", "Bearer ", "Bearer"] {
            assert_eq!(
                keys.authenticate(Some(malformed)),
                Err(Unauthenticated::Malformed),
                "{malformed:?}"
            );
        }
        assert_eq!(
            keys.authenticate(Some("Bearer other")),
            Err(Unauthenticated::Unknown)
        );
        assert!(keys.authenticate(Some("bearer s3cret")).is_ok());
    }

    #[test]
    fn accounts_limit_a_key_to_ids_and_prefixes() {
        let keys = Keys::parse(&file("s", "accounts = [\"acme\", \"tenant-7/*\"]\n")).unwrap();
        let key = keys.authenticate(Some("Bearer s")).unwrap();
        assert!(key.covers("acme").is_ok());
        assert!(key.covers("tenant-7/ws-1").is_ok());
        assert_eq!(
            key.covers("acme2"),
            Err(Denied::Account {
                key: "billing".into(),
                account: "acme2".into()
            })
        );
        assert!(key.covers("tenant-70/ws").is_err());
        let all = Keys::parse(&file("s", "")).unwrap();
        assert!(
            all.authenticate(Some("Bearer s"))
                .unwrap()
                .covers("any")
                .is_ok()
        );
    }

    #[test]
    fn a_bad_key_file_names_the_key_and_the_problem() {
        let cases = [
            (
                "[[key]]\nid = \"a\"\nsha256 = \"zz\"\nscopes = [\"read\"]\n",
                "sha256",
            ),
            (&file("s", "accounts = [\"a*b\"]\n")[..], "only at the end"),
            (
                "[[key]]\nid = \"a\"\nsha256 = \"00\"\nscopes = []\n",
                "sha256 must be",
            ),
            (
                &file("s", "")[..].replace("[\"meter\", \"read\"]", "[]"),
                "scopes",
            ),
            (&format!("{}{}", file("s", ""), file("t", "")), "used twice"),
            (
                "[[key]]\nid = \"a\"\nsha256 = \"00\"\nscopes = [\"root\"]\n",
                "TOML",
            ),
        ];
        for (text, expected) in cases {
            let error = Keys::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error} lacks {expected:?}");
        }
    }
}
