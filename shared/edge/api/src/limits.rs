//! Card-testing defence: fraudsters run stolen cards through payment forms to see which work.
//! Per account and per clock hour (UTC), at most [`MAX_CARD_REGISTRATIONS_PER_HOUR`] card
//! registrations (attempts, whatever the processor said) and [`MAX_DECLINES_PER_HOUR`] declined
//! or refused Pay Now payments; past either, the route answers 429 with `Retry-After` (the
//! seconds to the next hour) and charges nothing, logs a warning and counts
//! `CardTestingLimited` (alarmed). The count lives in one document per account, written with
//! version checks; a count that cannot be written is logged and never fails the request.

use chrono::{DateTime, Timelike, Utc};
use ledger::docs::{DocError, DocKind, DocStore};
use ledger::AccountId;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub const MAX_CARD_REGISTRATIONS_PER_HOUR: u32 = 10;
pub const MAX_DECLINES_PER_HOUR: u32 = 5;
/// Wrong microdeposit amounts an account may send per hour (there are under 5,000 pairs).
pub const MAX_FAILED_BANK_VERIFICATIONS_PER_HOUR: u32 = 3;
const DOC_ID: &str = "card-attempts";

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    CardRegistration,
    DeclinedPayment,
    /// A wrong pair of microdeposit amounts for a bank account (guessing them would verify
    /// someone else's account).
    BankVerification,
}

/// This hour's counts.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Attempts {
    /// The clock hour counted: Unix seconds of its start.
    pub hour: i64,
    pub card_registrations: u32,
    pub declined_payments: u32,
    #[serde(default)]
    pub failed_bank_verifications: u32,
}

fn hour_of(now: DateTime<Utc>) -> i64 {
    now.timestamp() - i64::from(now.minute() * 60 + now.second())
}

async fn load(
    docs: &dyn DocStore,
    id: &AccountId,
    now: DateTime<Utc>,
) -> Result<(Attempts, Option<u64>), ApiError> {
    let doc = docs.get_doc(id, DocKind::Limits, DOC_ID).await.map_err(ApiError::from_store)?;
    let hour = hour_of(now);
    Ok(match doc {
        Some(doc) => {
            let attempts: Attempts =
                serde_json::from_str(&doc.body).map_err(|e| ApiError::internal(&e))?;
            let attempts = if attempts.hour == hour {
                attempts
            } else {
                Attempts { hour, ..Attempts::default() }
            };
            (attempts, Some(doc.version))
        }
        None => (Attempts { hour, ..Attempts::default() }, None),
    })
}

/// 429 with `Retry-After` when this hour's `what` is used up.
pub async fn check(
    docs: &dyn DocStore,
    id: &AccountId,
    what: Limited,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let (attempts, _) = load(docs, id, now).await?;
    let (used, max, noun) = match what {
        Limited::CardRegistration => {
            (attempts.card_registrations, MAX_CARD_REGISTRATIONS_PER_HOUR, "card registrations")
        }
        Limited::DeclinedPayment => {
            (attempts.declined_payments, MAX_DECLINES_PER_HOUR, "declined payments")
        }
        Limited::BankVerification => (
            attempts.failed_bank_verifications,
            MAX_FAILED_BANK_VERIFICATIONS_PER_HOUR,
            "wrong microdeposit amounts",
        ),
    };
    if used < max {
        return Ok(());
    }
    let wait = (attempts.hour + 3600 - now.timestamp()).max(1) as u64;
    tracing::warn!(account = %id, ?what, used, "card-testing limit reached");
    messaging::metrics::count(messaging::metrics::CARD_TESTING_LIMITED, 1);
    Err(ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "{used} {noun} this hour: the limit is {max} per hour; nothing was charged, retry in \
             {wait} s"
        ),
    )
    .retry_after(wait))
}

/// Count one `what` against this hour (best effort: a count that cannot be written is logged).
pub async fn record(docs: &dyn DocStore, id: &AccountId, what: Limited, now: DateTime<Utc>) {
    for _ in 0..8 {
        let Ok((mut attempts, version)) = load(docs, id, now).await else { break };
        match what {
            Limited::CardRegistration => attempts.card_registrations += 1,
            Limited::DeclinedPayment => attempts.declined_payments += 1,
            Limited::BankVerification => attempts.failed_bank_verifications += 1,
        }
        let Ok(body) = serde_json::to_string(&attempts) else { break };
        match docs.put_doc(id, DocKind::Limits, DOC_ID, &body, version).await {
            Ok(_) => return,
            Err(DocError::Conflict) => continue,
            Err(error) => {
                tracing::warn!(account = %id, %error, "card-testing count not written");
                return;
            }
        }
    }
    tracing::warn!(account = %id, "card-testing count not written after retries");
}
