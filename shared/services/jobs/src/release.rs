//! The daily number-release sweep: a suspended account's numbers move towards release (notices
//! 7 days and 1 day before, then `numbers_release_due`), each step once.
//!
//! The sweep only records the stage the account has reached ([`ledger::Account::release_stage`]);
//! the account change raises the step's ledger event in the same write (`ledger::posting::
//! crossings`), so a re-run, an overlapping run or a redelivered job raises nothing twice, and
//! a top-up (reactivation) in between resets the stage and cancels the release.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger::{AccountId, LedgerError, LedgerStore, ReleaseStage, StoreError};

/// What one account's sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepOutcome {
    /// The release moved on to this stage (its event was raised).
    Advanced(ReleaseStage),
    /// Nothing was due (active, not long enough suspended, or this stage already reached).
    NothingDue,
}

impl SweepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepOutcome::Advanced(ReleaseStage::WeekBefore) => "release notice (7 days)",
            SweepOutcome::Advanced(ReleaseStage::DayBefore) => "release notice (1 day)",
            SweepOutcome::Advanced(_) => "numbers release due",
            SweepOutcome::NothingDue => "nothing due",
        }
    }
}

/// Remove what is left of `id`'s credit grants expired by `now` (see `ledger::grant`): one write
/// of the account with no postings, which posts each removal ahead of anything else. Whether
/// anything was removed; a re-run finds nothing left.
pub async fn expire_grants(
    ledger: &dyn LedgerStore,
    id: &AccountId,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let account =
        ledger.account(id).await?.ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
    if !account.grants_due_to_expire(now) {
        return Ok(false);
    }
    let outcome = ledger.post(id, Vec::new(), now).await?;
    Ok(outcome.account.last_seq > account.last_seq)
}

/// Move `id`'s number release to the stage due at `now`, if it is behind.
pub async fn sweep(
    ledger: &dyn LedgerStore,
    id: &AccountId,
    now: DateTime<Utc>,
) -> Result<SweepOutcome, StoreError> {
    let account =
        ledger.account(id).await?.ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
    let due = account.release_stage_due(now);
    if due as u8 <= account.release_stage {
        return Ok(SweepOutcome::NothingDue);
    }
    let result = ledger
        .modify_account(
            id,
            Arc::new(move |account| {
                let due = account.release_stage_due(now) as u8;
                if due <= account.release_stage {
                    return Err(LedgerError::Unchanged);
                }
                account.release_stage = due;
                Ok(())
            }),
            now,
        )
        .await;
    match result {
        Ok(after) => Ok(SweepOutcome::Advanced(ReleaseStage::from_u8(after.release_stage))),
        Err(StoreError::Rejected(LedgerError::Unchanged)) => Ok(SweepOutcome::NothingDue),
        Err(error) => Err(error),
    }
}
