//! What auto-recharge spent in a calendar month (UTC), and on which days: the record the monthly
//! and daily caps are checked against. One document per account and month
//! (`recharge-spend-YYYY-MM`, [`DocKind::Monthly`]), written with version checks, each payment
//! counted once by its id, so a redelivered settlement never counts twice.
//!
//! Manual payments (Pay Now) are counted only when the operator says so
//! ([`crate::profile::Profile::caps_count_manual_payments`]).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use ledger::docs::{DocError, DocKind, DocStore};
use ledger::{AccountId, Amount, Month, StoreError};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Payments a month's record counts; a month with more is treated as past any cap (the record
/// stays small; see decision 29).
pub const MAX_COUNTED_PER_MONTH: usize = 2_000;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    pub total_usd: Decimal,
    /// The ids of the payments counted (recharge request ids, Pay Now keys).
    pub requests: Vec<String>,
    /// The same spend by UTC day (records written before the daily cap have none: their days
    /// count as nothing spent, which can only under-count a day that is already over).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_day: BTreeMap<NaiveDate, Decimal>,
}

impl Spend {
    pub fn on(&self, day: NaiveDate) -> Decimal {
        self.by_day.get(&day).copied().unwrap_or(Decimal::ZERO)
    }

    /// Counted as many payments as a record may hold: treat every cap as reached.
    pub fn full(&self) -> bool {
        self.requests.len() >= MAX_COUNTED_PER_MONTH
    }
}

fn doc_id(month: Month) -> String {
    format!("recharge-spend-{month}")
}

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("recharge spend: {error}"))
}

/// The spend of `month` (nothing yet: an empty record).
pub async fn load(store: &dyn DocStore, id: &AccountId, month: Month) -> Result<Spend, StoreError> {
    match store.get_doc(id, DocKind::Monthly, &doc_id(month)).await? {
        None => Ok(Spend::default()),
        Some(doc) => serde_json::from_str(&doc.body).map_err(corrupt),
    }
}

/// Why a payment could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum SpendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the spend record kept changing under concurrent writers; retry")]
    Busy,
}

/// Count `amount` paid on `day` under `payment` (once: a repeat changes nothing).
pub async fn add(
    store: &dyn DocStore,
    id: &AccountId,
    day: NaiveDate,
    payment: &str,
    amount: Amount,
) -> Result<(), SpendError> {
    let doc = doc_id(Month::of_date(day));
    for _ in 0..16 {
        let current = store.get_doc(id, DocKind::Monthly, &doc).await?;
        let (mut spend, version) = match &current {
            None => (Spend::default(), None),
            Some(found) => {
                (serde_json::from_str::<Spend>(&found.body).map_err(corrupt)?, Some(found.version))
            }
        };
        if spend.requests.iter().any(|r| r == payment) {
            return Ok(());
        }
        spend.total_usd += amount.value();
        *spend.by_day.entry(day).or_insert(Decimal::ZERO) += amount.value();
        spend.requests.push(payment.to_string());
        let body = serde_json::to_string(&spend).map_err(corrupt)?;
        match store.put_doc(id, DocKind::Monthly, &doc, &body, version).await {
            Ok(_) => return Ok(()),
            Err(DocError::Conflict) => continue,
            Err(DocError::TooLarge(size)) => {
                return Err(StoreError::Corrupt(format!("spend record of {size} bytes")).into())
            }
            Err(DocError::Store(error)) => return Err(error.into()),
        }
    }
    Err(SpendError::Busy)
}
