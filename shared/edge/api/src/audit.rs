//! The settings audit log: who changed what, when, before → after.

use chrono::{DateTime, Utc};
use ledger::docs::{newest_first_id, DocError, DocKind, DocStore};
use ledger::AccountId;
use serde::{Deserialize, Serialize};

use std::sync::{Arc, Mutex};

use ledger::Account;
use serde_json::json;

use crate::error::ApiError;
use crate::profile::{self, Profile};
use crate::state::{account_or_404, AppState};

/// One settings change: who, when, what, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The token's subject.
    pub actor: String,
    /// What changed: `auto_recharge`, `contacts`, `address`, `terms`, `credit_limit`, ...
    pub change: String,
    /// The changed setting before (free-form: the setting's own shape; null when it was unset).
    pub before: serde_json::Value,
    /// The changed setting after.
    pub after: serde_json::Value,
}

/// A view of a setting as the audit log keeps it.
pub fn json<T: Serialize>(view: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(view).map_err(|e| ApiError::internal(&e))
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

/// Change an account's settings and audit it. `change` may run more than once (optimistic
/// concurrency); the audit's "before" is the account the committed run changed, so it is
/// exact under concurrency and costs no extra read. `view` is what the log shows of it.
pub async fn change_account<V: serde::Serialize>(
    state: &AppState,
    id: &AccountId,
    actor: &str,
    change_name: &str,
    change: impl Fn(&mut Account) + Send + Sync + 'static,
    view: impl Fn(&Account) -> V,
) -> Result<Account, ApiError> {
    let seen: Arc<Mutex<Option<Account>>> = Arc::default();
    let last_seen = seen.clone();
    let after = state
        .ledger()
        .modify_account(
            id,
            Arc::new(move |account| {
                *last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(account.clone());
                change(account);
                Ok(())
            }),
            Utc::now(),
        )
        .await
        .map_err(ApiError::from_store)?;
    let before = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
    let before = before.as_ref().map(&view);
    record(state.docs(), id, actor, change_name, json!(before), json!(view(&after))).await?;
    Ok(after)
}

/// Change an account's profile (contacts, address, schedule, tax exemption) and audit it.
pub async fn change_profile<V: serde::Serialize>(
    state: &AppState,
    id: &AccountId,
    actor: &str,
    change_name: &str,
    change: impl FnMut(&mut Profile) -> Result<(), ApiError>,
    view: impl Fn(&Profile) -> V,
) -> Result<Profile, ApiError> {
    // Profiles belong to accounts: no profile for an account that does not exist.
    account_or_404(state, id).await?;
    let (before, after) = profile::update_with(state.docs(), id, change).await?;
    record(state.docs(), id, actor, change_name, json!(view(&before)), json!(view(&after))).await?;
    Ok(after)
}
