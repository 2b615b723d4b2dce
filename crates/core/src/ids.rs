//! Identifiers. Each is validated once, when it is built, so the rest of the
//! core can trust it.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a string is not a valid identifier.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} bytes")]
    TooLong { max: usize },
    #[error("must not contain {found:?}; allowed: {allowed}")]
    BadCharacter { found: char, allowed: &'static str },
}

fn check(
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.len() > max {
        return Err(IdError::TooLong { max });
    }
    match value.chars().find(|c| !ok(*c)) {
        Some(found) => Err(IdError::BadCharacter { found, allowed }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, allowed = $allowed:expr, $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check(&value, $max, $allowed, $ok)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                $name::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/')
}

fn free_form_char(c: char) -> bool {
    !c.is_control()
}

string_id!(
    /// A workspace: chosen by the caller.
    AccountId, max = 128, allowed = "A-Z a-z 0-9 . _ - : @ /", id_char
);
string_id!(
    /// A person or agent acting inside an account. Free form, unregistered.
    MemberId, max = 256, allowed = "any printable character", free_form_char
);
string_id!(
    /// An action key such as `article.draft`.
    ActionKey, max = 128, allowed = "a-z 0-9 . _ -",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
);
string_id!(
    /// A model name such as `gpt-4o` or `flux/dev`.
    ModelName, max = 128, allowed = "any printable character except space",
    |c: char| !c.is_control() && c != ' '
);
string_id!(
    /// A unit of the product's own that a rate card prices, such as
    /// `posts_scanned`, `platforms` or `audio_seconds`.
    UnitName, max = 64, allowed = "a-z 0-9 _",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
);
string_id!(
    /// A plan in the catalogue, such as `pro`.
    PlanName, max = 64, allowed = "a-z 0-9 . _ -",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
);
string_id!(
    /// A top-up pack in the catalogue, such as `popular`.
    PackName, max = 64, allowed = "a-z 0-9 . _ -",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
);
string_id!(
    /// A bucket's id, minted by the service when credits are granted.
    GrantId, max = 128, allowed = "A-Z a-z 0-9 . _ - : @ /", id_char
);
string_id!(
    /// A hold's id, minted by the service when credits are reserved.
    ReservationId, max = 128, allowed = "A-Z a-z 0-9 . _ - : @ /", id_char
);
string_id!(
    /// A test clock: chosen by the admin who creates it. Accounts opened on
    /// it live on its time instead of the wall clock's.
    TestClockId, max = 128, allowed = "A-Z a-z 0-9 . _ - : @ /", id_char
);
string_id!(
    /// Makes a mutation safe to retry. Unique per account.
    IdempotencyKey, max = 128, allowed = "any printable character", free_form_char
);

impl ActionKey {
    /// The capability an action counts under when the rate card names
    /// none: its key up to the first dot (`article` for `article.draft`).
    pub fn default_capability(&self) -> &str {
        let key = self.as_str();
        key.split('.').next().unwrap_or(key)
    }

    /// `named` (the rate card's capability) or else the default.
    pub fn capability<'a>(&'a self, named: Option<&'a str>) -> &'a str {
        named.unwrap_or_else(|| self.default_capability())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_without_a_named_capability_counts_under_its_prefix() {
        let action = ActionKey::parse("article.draft").unwrap();
        assert_eq!(action.capability(None), "article");
        assert_eq!(action.capability(Some("writing")), "writing");
        let bare = ActionKey::parse("chat").unwrap();
        assert_eq!(bare.capability(None), "chat");
    }

    #[test]
    fn account_ids_refuse_empty_long_and_odd_characters() {
        assert_eq!(AccountId::parse(""), Err(IdError::Empty));
        assert_eq!(
            AccountId::parse("a".repeat(129)),
            Err(IdError::TooLong { max: 128 })
        );
        assert!(matches!(
            AccountId::parse("ws 1"),
            Err(IdError::BadCharacter { found: ' ', .. })
        ));
        assert_eq!(AccountId::parse("acme:ws-1").unwrap().as_str(), "acme:ws-1");
    }

    #[test]
    fn action_keys_are_lowercase_dotted() {
        assert!(ActionKey::parse("article.draft").is_ok());
        assert!(ActionKey::parse("Article.Draft").is_err());
    }

    #[test]
    fn deserializing_validates() {
        let bad: Result<AccountId, _> = serde_json::from_str("\"\"");
        assert!(bad.is_err());
    }
}
