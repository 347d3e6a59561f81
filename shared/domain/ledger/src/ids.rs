//! Identifiers, parsed at the edge so an invalid one cannot exist inside.

use std::fmt;

use serde::{Deserialize, Serialize};

pub const MAX_ACCOUNT_ID_LEN: usize = 64;
pub const MAX_SOURCE_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "account id must be 1 to {MAX_ACCOUNT_ID_LEN} characters of A-Z, a-z, 0-9, '-' or '_'"
    )]
    BadAccountId,
    #[error(
        "source id must be 1 to {MAX_SOURCE_ID_LEN} printable ASCII characters without spaces"
    )]
    BadSourceId,
}

/// An account id: `[A-Za-z0-9_-]{1,64}`. The character set keeps it safe inside store keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let valid = !value.is_empty()
            && value.len() <= MAX_ACCOUNT_ID_LEN
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(AccountId(value))
        } else {
            Err(IdError::BadAccountId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AccountId::parse(value)
    }
}

impl From<AccountId> for String {
    fn from(value: AccountId) -> Self {
        value.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The stable id that makes a posting idempotent, per account, in its writer's namespace:
/// `use:<telephony event id>`, `pay:<Idempotency-Key>`, `adj:<Idempotency-Key>`, a recharge
/// request id `rch:...`, `tax:<YYYY-MM>` (decision 31). Printable ASCII, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

impl SourceId {
    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let valid = !value.is_empty()
            && value.len() <= MAX_SOURCE_ID_LEN
            && value.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(SourceId(value))
        } else {
            Err(IdError::BadSourceId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SourceId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        SourceId::parse(value)
    }
}

impl From<SourceId> for String {
    fn from(value: SourceId) -> Self {
        value.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_keep_to_a_key_safe_alphabet() {
        assert!(AccountId::parse("acct_01-X").is_ok());
        assert_eq!(AccountId::parse(""), Err(IdError::BadAccountId));
        assert_eq!(AccountId::parse("a#b"), Err(IdError::BadAccountId));
        assert_eq!(AccountId::parse("a".repeat(65)), Err(IdError::BadAccountId));
    }

    #[test]
    fn source_ids_are_printable_and_bounded() {
        assert!(SourceId::parse("evt:2026-11-01#42").is_ok());
        assert_eq!(SourceId::parse("has space"), Err(IdError::BadSourceId));
        assert_eq!(SourceId::parse("x".repeat(129)), Err(IdError::BadSourceId));
        assert_eq!(SourceId::parse("é"), Err(IdError::BadSourceId));
    }
}
