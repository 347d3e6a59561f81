//! The monthly sales-tax job for one account and month.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger::docs::DocStore;
use ledger::{AccountId, LedgerError, LedgerStore, Month, PostingResult, StoreError};
use rust_decimal::Decimal;
use serde::Serialize;
use tax::{TaxTable, Taxability};

/// The account's profile (a default one if it has none): the billing documents' own type, so
/// a field renamed there is renamed here. One read.
pub async fn load_profile(
    docs: &dyn DocStore,
    id: &AccountId,
) -> Result<documents::profile::Profile, JobError> {
    match documents::profile::load(docs, id).await {
        Ok((profile, _)) => Ok(profile),
        Err(documents::DocumentError::Store(error)) => Err(JobError::Store(error)),
        Err(source) => Err(JobError::UnreadableProfile { account_id: id.clone(), source }),
    }
}

/// Why a job did not run. [`JobError::is_permanent`] says what the worker does with the message:
/// a permanent failure is dropped and logged, retrying cannot help and nothing is wrong with the
/// data (a month not over yet, a job this worker does not run). Anything else that fails, a
/// store error or unreadable data included, goes back to the queue and, after five tries, to
/// the DLQ and its alarm, so no account's tax is silently skipped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Permanent: a month is taxed once it has ended.
    #[error("{month} is not over yet; a month is taxed once it has ended (UTC)")]
    MonthNotOver { month: Month },
    /// Permanent: the assessment does not make a valid posting (a bug; retrying builds the
    /// same one).
    #[error("the tax posting is invalid: {0}")]
    InvalidTaxPosting(#[source] LedgerError),
    /// Permanent: an invoice is asked for a month older than one already invoiced.
    #[error("{later} is already invoiced: {month}, before it, can no longer be")]
    LaterMonthInvoiced { month: Month, later: Month },
    /// Permanent: a job's posting is invalid (a bug; retrying builds the same one).
    #[error("the posting is invalid: {0}")]
    InvalidPosting(String),
    /// Permanent: the message is for the other job function's worker.
    #[error("this worker does not run {kind} jobs")]
    NotThisWorker { kind: &'static str },
    /// Retried: the profile cannot be read.
    #[error("the profile of {account_id} is unreadable: {source}")]
    UnreadableProfile {
        account_id: AccountId,
        #[source]
        source: documents::DocumentError,
    },
    /// Retried: the ledger answered the tax posting with neither an entry nor a duplicate.
    #[error("the tax posting was not applied: {result:?}")]
    TaxNotApplied { result: Option<PostingResult> },
    /// Retried: the statement could not be sent now (a mail service outage, a claim held by
    /// another delivery).
    #[error(transparent)]
    Delivery(#[from] notifications::error::DeliveryError),
    /// Retried: the job panicked (a bug; the message reaches the DLQ if it keeps panicking).
    #[error("the job panicked: {0}")]
    Panicked(#[source] tokio::task::JoinError),
    /// Retried: the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl JobError {
    pub fn is_permanent(&self) -> bool {
        match self {
            JobError::MonthNotOver { .. }
            | JobError::LaterMonthInvoiced { .. }
            | JobError::InvalidTaxPosting(_)
            | JobError::InvalidPosting(_)
            | JobError::NotThisWorker { .. } => true,
            JobError::UnreadableProfile { .. }
            | JobError::TaxNotApplied { .. }
            | JobError::Delivery(_)
            | JobError::Panicked(_)
            | JobError::Store(_) => false,
        }
    }
}

/// What the tax job did for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TaxOutcome {
    Posted {
        seq: u64,
        tax_usd: Decimal,
        taxable_usd: Decimal,
        rate_percent: Decimal,
        jurisdiction: String,
    },
    /// The month was taxed before (a re-run or a redelivery): nothing changed.
    AlreadyTaxed {
        seq: u64,
    },
    Exempt,
    /// Nothing taxable that month, or tax that rounds to zero: no entry.
    NoTaxableUsage,
    /// The account has no service address, so no jurisdiction: no entry (reported, so an
    /// operator can follow up).
    NoServiceAddress,
    /// The jurisdiction table has no rate for the address: no entry.
    NoJurisdiction {
        country: String,
        region: Option<String>,
    },
}

impl TaxOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            TaxOutcome::Posted { .. } => "posted",
            TaxOutcome::AlreadyTaxed { .. } => "already_taxed",
            TaxOutcome::Exempt => "exempt",
            TaxOutcome::NoTaxableUsage => "no_taxable_usage",
            TaxOutcome::NoServiceAddress => "no_service_address",
            TaxOutcome::NoJurisdiction { .. } => "no_jurisdiction",
        }
    }
}

/// Taxes accounts: the rules plus the stores.
#[derive(Clone)]
pub struct TaxJob {
    pub ledger: Arc<dyn LedgerStore>,
    pub docs: Arc<dyn DocStore>,
    pub table: Arc<TaxTable>,
    pub taxability: Arc<Taxability>,
}

impl TaxJob {
    /// Tax `id`'s usage in `month`. Reads: the profile, the account and (when the account has
    /// posted since) the month's closed totals; then one posting whose source id
    /// (`tax:<month>`) makes it happen once per account and month whatever happens.
    #[tracing::instrument(skip(self, now), fields(account_id = %id), err)]
    pub async fn run(
        &self,
        id: &AccountId,
        month: Month,
        now: DateTime<Utc>,
    ) -> Result<TaxOutcome, JobError> {
        if month >= Month::of(now) {
            return Err(JobError::MonthNotOver { month });
        }
        let profile = load_profile(&*self.docs, id).await?;
        if profile.tax_exempt {
            return Ok(TaxOutcome::Exempt);
        }
        let Some(address) = profile.service_address else {
            return Ok(TaxOutcome::NoServiceAddress);
        };
        let Some(jurisdiction) = self.table.jurisdiction(
            &address.country,
            address.region.as_deref(),
            &address.city,
            month,
        ) else {
            return Ok(TaxOutcome::NoJurisdiction {
                country: address.country,
                region: address.region,
            });
        };
        let totals = self.ledger.month_totals(id, month).await?;
        let Some(assessment) = tax::assess(&totals, &self.taxability, &jurisdiction) else {
            return Ok(TaxOutcome::NoTaxableUsage);
        };
        let posting = tax::tax_posting(&assessment).map_err(JobError::InvalidTaxPosting)?;
        let outcome = self.ledger.post(id, vec![posting], now).await?;
        match outcome.results.first() {
            Some(PostingResult::Applied { seq, .. }) => Ok(TaxOutcome::Posted {
                seq: *seq,
                tax_usd: assessment.tax_usd,
                taxable_usd: assessment.taxable_usd,
                rate_percent: assessment.rate_percent,
                jurisdiction: assessment.jurisdiction.name.clone(),
            }),
            Some(PostingResult::Duplicate { seq }) => Ok(TaxOutcome::AlreadyTaxed { seq: *seq }),
            // Taxed before at another amount (the tables changed since): the month's entry
            // stands, as before the ledger compared amounts; said loudly, for an operator.
            Some(PostingResult::SourceIdReused { seq, amount_usd, .. }) => {
                tracing::error!(
                    account_id = %id,
                    seq,
                    taxed_usd = %amount_usd.value(),
                    computed_usd = %assessment.tax_usd,
                    "month already taxed at another amount; the earlier entry stands"
                );
                Ok(TaxOutcome::AlreadyTaxed { seq: *seq })
            }
            other => Err(JobError::TaxNotApplied { result: other.cloned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_retrying_cannot_fix_is_permanent() {
        let month: Month = "2026-10".parse().unwrap();
        let permanent = [
            JobError::MonthNotOver { month },
            JobError::InvalidTaxPosting(LedgerError::CreditsAlwaysPost),
            JobError::NotThisWorker { kind: "tax" },
        ];
        for error in &permanent {
            assert!(error.is_permanent(), "{error}");
        }
        let retried = [
            JobError::UnreadableProfile {
                account_id: AccountId::parse("acme").unwrap(),
                source: documents::DocumentError::Busy("profile"),
            },
            JobError::TaxNotApplied { result: None },
            JobError::Store(StoreError::Throttled),
        ];
        for error in &retried {
            assert!(!error.is_permanent(), "{error}");
        }
        assert_eq!(
            JobError::MonthNotOver { month }.to_string(),
            "2026-10 is not over yet; a month is taxed once it has ended (UTC)"
        );
    }
}
