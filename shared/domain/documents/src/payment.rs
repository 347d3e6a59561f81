//! Payment records: every charge attempt (Pay Now or auto-recharge) as the payment history
//! shows it, one document per payment ([`DocKind::Payment`], ids newest first).

use chrono::{DateTime, Utc};
use ledger::docs::{DocError, DocKind, DocStore};
use ledger::{AccountId, Amount};
use serde::{Deserialize, Serialize};

use crate::DocumentError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Auto,
}

/// One charge attempt, as the payment history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment_id: String,
    pub amount_usd: Amount,
    pub card_id: String,
    pub card_brand: String,
    pub card_last4: String,
    pub status: PaymentStatus,
    pub trigger: Trigger,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub processor_payment_id: Option<String>,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// The ledger entry that credited it.
    #[serde(default)]
    pub entry_seq: Option<u64>,
    #[serde(default)]
    pub balance_after_usd: Option<String>,
    /// While `pending`: why (the processor has not answered yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
}

/// Write a payment record (create or replace), with bounded retries on a concurrent write.
pub async fn save_payment(
    docs: &dyn DocStore,
    id: &AccountId,
    record: &PaymentRecord,
) -> Result<(), DocumentError> {
    let body = serde_json::to_string(record)
        .map_err(|source| DocumentError::Unreadable { what: "payment", source })?;
    for _ in 0..8 {
        let current = docs.get_doc(id, DocKind::Payment, &record.payment_id).await?;
        let expected = current.map(|d| d.version);
        match docs.put_doc(id, DocKind::Payment, &record.payment_id, &body, expected).await {
            Ok(_) => return Ok(()),
            Err(DocError::Conflict) => continue,
            Err(DocError::TooLarge(_)) => return Err(DocumentError::TooLarge("payment")),
            Err(DocError::Store(error)) => return Err(DocumentError::Store(error)),
        }
    }
    Err(DocumentError::Busy("payment"))
}

/// A payment record, if there is one.
pub async fn load_payment(
    docs: &dyn DocStore,
    id: &AccountId,
    payment_id: &str,
) -> Result<Option<PaymentRecord>, DocumentError> {
    let Some(doc) = docs.get_doc(id, DocKind::Payment, payment_id).await? else {
        return Ok(None);
    };
    serde_json::from_str(&doc.body)
        .map(Some)
        .map_err(|source| DocumentError::Unreadable { what: "payment", source })
}
