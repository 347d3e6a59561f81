//! A small document store port for an account's non-ledger data: its billing profile (contacts,
//! address, cards, schedules), payment records, idempotency records and the settings audit log.
//! Typed logic lives above it; stores only keep versioned JSON documents per account and kind.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::AccountId;
use crate::store::StoreError;
use crate::LedgerError;

/// The most documents one list call returns.
pub const MAX_DOCS_PER_LIST: u32 = 500;
/// The largest document body, in bytes (fits a DynamoDB item with room to spare).
pub const MAX_DOC_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// One per account, id `profile`.
    Profile,
    /// One per payment attempt; ids sort newest first (see [`newest_first_id`]).
    Payment,
    /// One per `Idempotency-Key`.
    Idempotency,
    /// One per settings change; ids sort newest first.
    Audit,
    /// One per auto-recharge request: attempts, backoff, per-card outcomes.
    Recharge,
    /// One per notification id: sent or not (a notice is sent once).
    Notice,
    /// Running totals per calendar month (auto-recharge spend).
    Monthly,
    /// One per card-processor event received (webhooks), under the processor's pseudo-account
    /// ([`PROCESSOR_EVENTS_ACCOUNT`]): received once, handed on once.
    ProcessorEvent,
    /// Per-account rate limits (card registrations and declined payments this hour).
    Limits,
    /// One per invoiced month (postpaid accounts), id `YYYY-MM`; under the pseudo-account
    /// `_invoice-numbers`, one counter per issuer.
    Invoice,
    /// One per billing-portal link opened (its id): written create-only, so a link opens once.
    PortalLink,
}

/// The pseudo-account whose documents are the processor's events (no such ledger account).
pub const PROCESSOR_EVENTS_ACCOUNT: &str = "_processor-events";

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Profile => "profile",
            DocKind::Payment => "payment",
            DocKind::Idempotency => "idempotency",
            DocKind::Audit => "audit",
            DocKind::Recharge => "recharge",
            DocKind::Notice => "notice",
            DocKind::Monthly => "monthly",
            DocKind::ProcessorEvent => "processor_event",
            DocKind::Limits => "limits",
            DocKind::Invoice => "invoice",
            DocKind::PortalLink => "portal_link",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub id: String,
    /// 1 after creation, +1 per replacement.
    pub version: u64,
    /// JSON.
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The document exists (create) or is not at the expected version (replace, delete).
    #[error("the document changed or already exists")]
    Conflict,
    #[error("document is {0} bytes; the limit is {MAX_DOC_BYTES}")]
    TooLarge(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait DocStore: Send + Sync {
    async fn get_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
    ) -> Result<Option<Doc>, StoreError>;

    /// Create when `expected_version` is `None` (fails with `Conflict` if it exists), else
    /// replace only if the stored version is `expected_version`. Returns the new version.
    async fn put_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        body: &str,
        expected_version: Option<u64>,
    ) -> Result<u64, DocError>;

    /// Delete only if the stored version is `expected_version`.
    async fn delete_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        expected_version: u64,
    ) -> Result<(), DocError>;

    /// Documents of `kind` with ids greater than `after`, ascending by id, at most `limit`
    /// (1..=[`MAX_DOCS_PER_LIST`]).
    async fn list_docs(
        &self,
        account: &AccountId,
        kind: DocKind,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Doc>, StoreError>;
}

/// An id that sorts newest first: the inverted microsecond timestamp, then a tiebreak.
pub fn newest_first_id(at: chrono::DateTime<chrono::Utc>, tiebreak: &str) -> String {
    let micros = u64::try_from(at.timestamp_micros()).unwrap_or(0);
    format!("{:020}-{tiebreak}", u64::MAX / 2 - micros.min(u64::MAX / 2))
}

/// The longest document id, in bytes.
pub const MAX_DOC_ID_LEN: usize = 200;

/// Ids (and list cursors) are 1 to [`MAX_DOC_ID_LEN`] printable ASCII characters without
/// spaces, so every store orders them the same way (byte order) and keys them safely.
/// Every store checks its arguments with these functions before it touches anything, so all
/// stores refuse exactly the same requests.
pub fn check_doc_id(id: &str) -> Result<(), LedgerError> {
    let valid =
        !id.is_empty() && id.len() <= MAX_DOC_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(LedgerError::BadDocumentId)
    }
}

/// The body's size in bytes (not characters) against [`MAX_DOC_BYTES`].
pub fn check_doc_body(body: &str) -> Result<(), DocError> {
    if body.len() > MAX_DOC_BYTES {
        return Err(DocError::TooLarge(body.len()));
    }
    Ok(())
}

/// Versions stay at or below this so every store keeps them exactly (SQLite integers are i64).
pub const MAX_DOC_VERSION: u64 = i64::MAX as u64;

/// The checks of [`DocStore::put_doc`], in order; returns the version the write will store.
pub fn check_put(id: &str, body: &str, expected_version: Option<u64>) -> Result<u64, DocError> {
    check_doc_id(id).map_err(StoreError::Rejected)?;
    check_doc_body(body)?;
    match expected_version {
        None => Ok(1),
        // No stored document ever reaches a version this high, so it cannot match.
        Some(expected) if expected >= MAX_DOC_VERSION => Err(DocError::Conflict),
        Some(expected) => Ok(expected + 1),
    }
}

/// The checks of [`DocStore::delete_doc`], in order.
pub fn check_delete(id: &str, expected_version: u64) -> Result<(), DocError> {
    check_doc_id(id).map_err(StoreError::Rejected)?;
    if expected_version > MAX_DOC_VERSION {
        return Err(DocError::Conflict);
    }
    Ok(())
}

/// The checks of [`DocStore::list_docs`], in order; returns the limit as a count.
pub fn check_list(after: Option<&str>, limit: u32) -> Result<usize, StoreError> {
    if limit == 0 || limit > MAX_DOCS_PER_LIST {
        return Err(LedgerError::BadPageSize { max: MAX_DOCS_PER_LIST }.into());
    }
    if let Some(after) = after {
        check_doc_id(after)?;
    }
    Ok(limit as usize)
}
