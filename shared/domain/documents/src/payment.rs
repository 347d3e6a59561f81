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
    /// A plan period charged to the card (opt-in direct charge).
    Plan,
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
    /// Refunds of this payment to its card, oldest first. Written only by the refund flow
    /// (`payment_flow::refund`), with version-checked writes: [`save_payment`] keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<RefundLine>,
    /// Disputes (chargebacks) of this payment. Written only by the dispute flow
    /// (`payment_flow::dispute`); [`save_payment`] keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disputes: Vec<DisputeLine>,
}

/// Where a dispute of a payment stands, as far as the ledger has followed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeOutcome {
    Open,
    Won,
    Lost,
}

/// One dispute (chargeback) of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeLine {
    /// The processor's dispute id.
    pub dispute_id: String,
    pub amount_usd: Amount,
    /// The processor's fee (zero when it took none).
    pub fee_usd: rust_decimal::Decimal,
    pub status: DisputeOutcome,
    /// The ledger entries that debited the funds and the fee, once withdrawn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn_seqs: Vec<u64>,
    /// The entries that credited them back, once reinstated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reinstated_seqs: Vec<u64>,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentRecord {
    /// What is left to refund: the amount less every refund not definitely failed and every
    /// dispute not won (a disputed amount goes back to the cardholder through the dispute).
    pub fn refundable_usd(&self) -> rust_decimal::Decimal {
        let refunded: rust_decimal::Decimal = self
            .refunds
            .iter()
            .filter(|r| r.status != RefundStatus::Failed)
            .map(|r| r.amount_usd.value())
            .sum();
        let disputed: rust_decimal::Decimal = self
            .disputes
            .iter()
            .filter(|d| d.status != DisputeOutcome::Won)
            .map(|d| d.amount_usd.value())
            .sum();
        (self.amount_usd.value() - refunded - disputed).max(rust_decimal::Decimal::ZERO)
    }

    pub fn refund(&self, refund_id: &str) -> Option<&RefundLine> {
        self.refunds.iter().find(|r| r.refund_id == refund_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Written down; the debit and the processor call may not have happened yet.
    Requested,
    /// The processor returned it to the card.
    Sent,
    /// The processor took it and it is on its way (counts as returned).
    Pending,
    /// The processor definitely refused it; the debit was reversed.
    Failed,
}

/// One refund of a payment to its card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundLine {
    /// The operator's Idempotency-Key: one refund per id and payment.
    pub refund_id: String,
    pub amount_usd: Amount,
    pub reason: String,
    pub status: RefundStatus,
    pub requested_at: DateTime<Utc>,
    /// Who asked for it (the operator's user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_refund_id: Option<String>,
    /// The ledger entry that debited it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_seq: Option<u64>,
    /// The entry that returned it to the balance when the processor refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// Write a payment record (create or replace), with bounded retries on a concurrent write.
/// The stored record's refunds are kept: only the refund flow writes them
/// ([`save_payment_version`]).
pub async fn save_payment(
    docs: &dyn DocStore,
    id: &AccountId,
    record: &PaymentRecord,
) -> Result<(), DocumentError> {
    for _ in 0..8 {
        let current = docs.get_doc(id, DocKind::Payment, &record.payment_id).await?;
        let mut record = record.clone();
        if let Some(current) = &current {
            let stored: PaymentRecord = serde_json::from_str(&current.body)
                .map_err(|source| DocumentError::Unreadable { what: "payment", source })?;
            record.refunds = stored.refunds;
            record.disputes = stored.disputes;
        }
        let body = serde_json::to_string(&record)
            .map_err(|source| DocumentError::Unreadable { what: "payment", source })?;
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

/// A payment record with the version it was read at.
pub async fn load_payment_version(
    docs: &dyn DocStore,
    id: &AccountId,
    payment_id: &str,
) -> Result<Option<(PaymentRecord, u64)>, DocumentError> {
    let Some(doc) = docs.get_doc(id, DocKind::Payment, payment_id).await? else {
        return Ok(None);
    };
    let record = serde_json::from_str(&doc.body)
        .map_err(|source| DocumentError::Unreadable { what: "payment", source })?;
    Ok(Some((record, doc.version)))
}

/// Replace the payment record read at `version`: `Ok(false)` when someone wrote it since.
pub async fn save_payment_version(
    docs: &dyn DocStore,
    id: &AccountId,
    record: &PaymentRecord,
    version: u64,
) -> Result<bool, DocumentError> {
    let body = serde_json::to_string(record)
        .map_err(|source| DocumentError::Unreadable { what: "payment", source })?;
    match docs.put_doc(id, DocKind::Payment, &record.payment_id, &body, Some(version)).await {
        Ok(_) => Ok(true),
        Err(DocError::Conflict) => Ok(false),
        Err(DocError::TooLarge(_)) => Err(DocumentError::TooLarge("payment")),
        Err(DocError::Store(error)) => Err(DocumentError::Store(error)),
    }
}
