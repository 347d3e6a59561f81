//! The settings audit log: who changed what, when, before → after.

use chrono::{DateTime, Utc};
use ledger::docs::{newest_first_id, DocError, DocKind, DocStore};
use ledger::AccountId;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The token's subject.
    pub actor: String,
    /// What changed: `auto_recharge`, `contacts`, `address`, `terms`, `credit_limit`, ...
    pub change: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// Append one entry (retries with a fresh id on the rare id collision).
pub async fn record(
    docs: &dyn DocStore,
    account: &AccountId,
    actor: &str,
    change: &str,
    before: serde_json::Value,
    after: serde_json::Value,
) -> Result<(), ApiError> {
    let at = Utc::now();
    let entry = AuditEntry { at, actor: actor.into(), change: change.into(), before, after };
    let body = serde_json::to_string(&entry).map_err(|e| ApiError::internal(&e))?;
    for attempt in 0..8u32 {
        let id = newest_first_id(at, &format!("{}-{attempt}", std::process::id()));
        match docs.put_doc(account, DocKind::Audit, &id, &body, None).await {
            Ok(_) => return Ok(()),
            Err(DocError::Conflict) => continue,
            Err(DocError::TooLarge(_)) => {
                return Err(ApiError::bad_request("invalid_request", "change too large to audit"))
            }
            Err(DocError::Store(error)) => return Err(ApiError::from_store(error)),
        }
    }
    Err(ApiError::internal(&std::io::Error::other("audit id collisions")))
}
