//! Postpaid accounts' monthly invoices (issue 17): on the 1st (UTC), the monthly statement
//! run issues each postpaid account's invoice for the month before and emails it, once.
//!
//! An invoice is the month's statement made a document: the same entries (posted in
//! `[1st 00:00, next 1st 00:00)`, the activity export's range), the same opening balance,
//! numbered without gaps per issuer (`documents::invoice`). Issuing again (a re-run, a
//! redelivered job, the operator's route) returns the invoice already issued and changes
//! nothing; the email goes once per invoice (`invoice:<YYYY-MM>`).
//!
//! Tax: the monthly tax job posts a month's sales tax on the 1st of the next month, so a
//! postpaid invoice shows, among its debits, the tax of the month before it. Each tax entry is
//! on exactly one invoice, and an account that changes mode mid-month is taxed once for that
//! month by the same job (prepaid or postpaid), whichever mode it ends the month in.

use chrono::{DateTime, Utc};
use documents::invoice::{self, BillingMode, Invoice};
use ledger::docs::DocStore;
use ledger::{AccountId, LedgerStore, Month};
use notifications::worker::Outcome;

use crate::statements::StatementJob;
use crate::tax::{load_profile, JobError};

/// What issuing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceOutcome {
    /// The account is prepaid: it gets statements, not invoices.
    NotPostpaid,
    /// Issued now or before (the stored invoice), and what its email did.
    Issued { invoice: Box<Invoice>, email: Outcome },
}

impl InvoiceOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            InvoiceOutcome::NotPostpaid => "not_postpaid",
            InvoiceOutcome::Issued { .. } => "invoice_issued",
        }
    }
}

/// The invoice of `month` for `account`, from the ledger and the account's earlier invoices
/// (not stored). `month` must be over.
///
/// Invoices carry the balance forward: the closing balance below zero is everything owed, so
/// what earlier invoices still asked for when the month ended is taken off (they ask for it;
/// a customer who skips a month is not billed twice for it). It is read from their records as
/// of the month's end, so it is the same whenever the draft is made.
pub async fn draft(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
    now: DateTime<Utc>,
) -> Result<Invoice, JobError> {
    let invoices = invoice::list(docs, account).await.map_err(document_error)?;
    draft_from(ledger, &invoices, account, month, now).await
}

/// [`draft`], with the account's invoices already read.
async fn draft_from(
    ledger: &dyn LedgerStore,
    invoices: &[Invoice],
    account: &AccountId,
    month: Month,
    now: DateTime<Utc>,
) -> Result<Invoice, JobError> {
    if now < month.end() {
        return Err(JobError::MonthNotOver { month });
    }
    let last_day = month.next().first_day().pred_opt().expect("a month has a last day");
    let statement = ledger::statement::statement_for(ledger, account, month.first_day(), last_day)
        .await
        .map_err(|source| {
            JobError::Delivery(notifications::error::DeliveryError::Statement { source })
        })?;
    let previous: rust_decimal::Decimal = invoices
        .iter()
        .filter(|i| i.month < month && i.number.is_some())
        .map(|i| i.unpaid_at(month.end()))
        .sum();
    Ok(Invoice::compute(
        account,
        month,
        statement.opening_balance_usd,
        &statement.lines,
        previous,
        now,
    ))
}

/// Issue (idempotently) the invoice of `month` if the account is postpaid.
pub async fn issue(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
    now: DateTime<Utc>,
) -> Result<Option<Invoice>, JobError> {
    let profile = load_profile(docs, account).await?;
    if let Some((stored, _)) = invoice::load(docs, account, month).await.map_err(document_error)? {
        if stored.number.is_some() {
            // Issued before: raised again in case the first run stopped before it was.
            request_autopay(ledger, &profile, &stored).await?;
            return Ok(Some(stored));
        }
    }
    if profile.billing_mode != BillingMode::Postpaid {
        return Ok(None);
    }
    // Each invoice takes off what the ones before it ask for: one issued after a later month's
    // would bill again what that one did.
    let invoices = invoice::list(docs, account).await.map_err(document_error)?;
    if let Some(later) = invoices.iter().find(|i| i.month > month && i.number.is_some()) {
        return Err(JobError::LaterMonthInvoiced { month, later: later.month });
    }
    let draft = draft_from(ledger, &invoices, account, month, now).await?;
    let issued =
        invoice::issue(docs, invoice::DEFAULT_ISSUER, draft).await.map_err(document_error)?;
    request_autopay(ledger, &profile, &issued).await?;
    Ok(Some(issued))
}

/// List the invoice's pre-authorized charge as a pending payment (raising the event the
/// payments worker charges it on), when the customer pre-authorized it and something is owed.
async fn request_autopay(
    ledger: &dyn LedgerStore,
    profile: &documents::profile::Profile,
    issued: &Invoice,
) -> Result<(), JobError> {
    let failed = issued.autopay.as_ref().map_or(0, |a| a.failed);
    if !profile.pre_authorized_payment
        || issued.outstanding_usd().is_zero()
        || failed >= invoice::MAX_AUTOPAY_ATTEMPTS
    {
        return Ok(());
    }
    let key = invoice::autopay_key(issued.month);
    crate::plans::request_direct_charge(ledger, &issued.account_id, &key, false).await
}

/// A store failure or a document kept busy by concurrent writers is retried (the job goes back
/// to its queue); anything else is a document that cannot be written, which retrying cannot
/// fix.
fn document_error(error: documents::DocumentError) -> JobError {
    match error {
        documents::DocumentError::Store(error) => JobError::Store(error),
        documents::DocumentError::Busy(what) => {
            JobError::Store(ledger::StoreError::unavailable(std::io::Error::other(format!(
                "the {what} document kept changing under concurrent writers"
            ))))
        }
        other => JobError::InvalidPosting(other.to_string()),
    }
}

impl StatementJob {
    /// Issue the account's invoice of `month` (postpaid accounts) and email it, once each.
    pub async fn invoice(
        &self,
        id: &AccountId,
        month: Month,
        now: DateTime<Utc>,
    ) -> Result<InvoiceOutcome, JobError> {
        let Some(invoice) = issue(&*self.ledger, &*self.docs, id, month, now).await? else {
            return Ok(InvoiceOutcome::NotPostpaid);
        };
        let email = notifications::invoice::send_invoice(
            &*self.docs,
            &*self.ledger,
            &*self.mailer,
            &self.from_address,
            &invoice,
        )
        .await?;
        Ok(InvoiceOutcome::Issued { invoice: Box::new(invoice), email })
    }
}

/// What the daily dunning did to an account's block (see [`block_or_lift`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Blocked now for the invoice of this month (its event was raised).
    Blocked(Month),
    /// No invoice is overdue that long any more (paid, credited or void): the block is lifted.
    Lifted,
    Unchanged,
}

/// Issue a credit note against `month`'s invoice and credit the balance by it, once per
/// Idempotency-Key (`documents::invoice::add_credit_note`): the note is written first, then its
/// credit (`adjustment`, source id `cn:<number>`, once by that id), then it is marked credited,
/// and a block the invoice caused is lifted if nothing else is overdue that long. A failure
/// after the note is written leaves it uncredited: a retry with the same key, or the daily
/// sweep ([`credit_notes_due`]), posts it. Whether the note is new.
pub async fn credit_note(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    id: &AccountId,
    month: Month,
    request: &invoice::CreditNoteRequest,
    now: DateTime<Utc>,
) -> Result<(invoice::CreditNote, bool), JobError> {
    let (note, new) =
        invoice::add_credit_note(docs, id, month, request, now).await.map_err(document_error)?;
    post_credit_note(ledger, docs, id, month, &note, now).await?;
    lift_if_settled(ledger, docs, id, now).await?;
    Ok((note, new))
}

/// Post a credit note's credit and mark it credited (both idempotent).
async fn post_credit_note(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    id: &AccountId,
    month: Month,
    note: &invoice::CreditNote,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    if note.credited {
        return Ok(());
    }
    let source = ledger::SourceId::parse(note.source_id())
        .map_err(|e| JobError::InvalidPosting(e.to_string()))?;
    let amount = ledger::Amount::new(note.amount_usd)
        .map_err(|e| JobError::InvalidPosting(e.to_string()))?;
    let posting = ledger::Posting::credit(source, ledger::BillingItem::Adjustment, amount, now)
        .and_then(|p| {
            p.with_details(serde_json::json!({
                "credit_note": note.number,
                "invoice_month": month.to_string(),
                "reason": note.reason,
                "by": note.issued_by,
            }))
        })
        .map_err(|e| JobError::InvalidPosting(e.to_string()))?;
    ledger.post(id, vec![posting], now).await?;
    invoice::mark_credited(docs, id, month, &note.number).await.map_err(document_error)
}

/// The daily sweep's repair: post every credit note a failure left uncredited. How many.
pub async fn credit_notes_due(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    id: &AccountId,
    now: DateTime<Utc>,
) -> Result<usize, JobError> {
    let mut posted = 0;
    for invoice in invoice::list(docs, id).await.map_err(document_error)? {
        for note in invoice.credit_notes.iter().filter(|n| !n.credited) {
            post_credit_note(ledger, docs, id, invoice.month, note, now).await?;
            posted += 1;
        }
    }
    Ok(posted)
}

/// The daily sweep's dunning of one account: credit notes left uncredited, reminders
/// ([`remind`]), then the block ([`block_or_lift`]).
pub async fn dun(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    mailer: &dyn messaging::mail::Mailer,
    from_address: &str,
    account: &AccountId,
    now: DateTime<Utc>,
) -> Result<(usize, BlockOutcome), JobError> {
    credit_notes_due(ledger, docs, account, now).await?;
    let reminded = remind(docs, mailer, from_address, account, now.date_naive()).await?;
    let block = block_or_lift(ledger, docs, account, now).await?;
    Ok((reminded, block))
}

/// Block the account once an invoice is `block_after_days_overdue` days past its due date with
/// something outstanding (service stops as at the floor: `ledger::OverdueBlock`), or lift the
/// block once none is.
///
/// The block lifts itself in the ledger write of the payments that cover what was overdue
/// (`paid_in_usd` reaching its target), so a payment restores service at once whatever path it
/// came by; a credit note or a void is seen here, or by [`lift_if_settled`] right after it.
///
/// Failure model: the account is read before the invoices, and the block's target is what was
/// paid in by then plus what the invoices leave outstanding; the write is refused when the
/// account is already blocked or paid in enough meanwhile. A payment credited but not yet
/// applied to its invoice when this runs (a crash between the two steps) counts twice against
/// the customer until its flow applies it and the next sweep lifts the block; a payment that
/// lands between the reads counts for the customer. Re-runs change nothing.
pub async fn block_or_lift(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    id: &AccountId,
    now: DateTime<Utc>,
) -> Result<BlockOutcome, JobError> {
    let Some(account) = ledger.account(id).await? else { return Ok(BlockOutcome::Unchanged) };
    let limit = i64::from(account.service_policy().block_after_days_overdue);
    let today = now.date_naive();
    let invoices = invoice::list(docs, id).await.map_err(document_error)?;
    let overdue = overdue_past(&invoices, today, limit);
    // Never more than the balance owes: credits that are not payments (a goodwill grant, a
    // dispute won) lower what is owed without paying an invoice, and an account whose balance
    // owes nothing is not blocked.
    let owed = (-account.balance_usd).max(rust_decimal::Decimal::ZERO);
    let overdue_usd =
        overdue.iter().map(|i| i.outstanding_usd()).sum::<rust_decimal::Decimal>().min(owed);
    let oldest = overdue.first().filter(|_| overdue_usd > rust_decimal::Decimal::ZERO);
    let change: ledger::AccountChange = match (oldest, &account.overdue_block) {
        (Some(oldest), None) => {
            let target = account.paid_in_usd + overdue_usd;
            let month = oldest.month;
            std::sync::Arc::new(move |a: &mut ledger::Account| {
                if a.overdue_block.is_some() || a.paid_in_usd >= target {
                    return Err(ledger::LedgerError::Unchanged);
                }
                a.overdue_block =
                    Some(ledger::OverdueBlock { month, since: now, until_paid_in_usd: target });
                Ok(())
            })
        }
        (None, Some(_)) => std::sync::Arc::new(|a: &mut ledger::Account| {
            a.overdue_block.take().map(|_| ()).ok_or(ledger::LedgerError::Unchanged)
        }),
        _ => return Ok(BlockOutcome::Unchanged),
    };
    match ledger.modify_account(id, change, now).await {
        Ok(after) => Ok(match after.overdue_block {
            Some(block) => BlockOutcome::Blocked(block.month),
            None => BlockOutcome::Lifted,
        }),
        Err(ledger::StoreError::Rejected(ledger::LedgerError::Unchanged)) => {
            Ok(BlockOutcome::Unchanged)
        }
        Err(error) => Err(error.into()),
    }
}

/// The issued invoices with something outstanding `limit` days or more past their due date on
/// `today`, oldest first: what blocks an account (the one rule the sweep and its checks use).
pub fn overdue_past(invoices: &[Invoice], today: chrono::NaiveDate, limit: i64) -> Vec<&Invoice> {
    invoices
        .iter()
        .filter(|i| i.number.is_some() && i.outstanding_usd() > rust_decimal::Decimal::ZERO)
        .filter(|i| (today - i.due_on).num_days() >= limit)
        .collect()
}

/// Lift the account's block now if no invoice is overdue past the limit any more (after a
/// credit note or a void; a payment lifts it in its own write). Blocks nothing.
pub async fn lift_if_settled(
    ledger: &dyn LedgerStore,
    docs: &dyn DocStore,
    id: &AccountId,
    now: DateTime<Utc>,
) -> Result<bool, JobError> {
    match ledger.account(id).await? {
        Some(account) if account.overdue_block.is_some() => {
            Ok(block_or_lift(ledger, docs, id, now).await? == BlockOutcome::Lifted)
        }
        _ => Ok(false),
    }
}

/// The daily sweep's reminders of one account: each open invoice past its due date is reminded
/// of at 1, 7 and 14 days overdue, once per step (a sweep that missed days sends the latest
/// step reached, not the ones before it). How many reminders this run sent.
pub async fn remind(
    docs: &dyn DocStore,
    mailer: &dyn messaging::mail::Mailer,
    from_address: &str,
    account: &AccountId,
    today: chrono::NaiveDate,
) -> Result<usize, JobError> {
    let mut sent = 0;
    for invoice in invoice::list(docs, account).await.map_err(document_error)? {
        let outcome =
            notifications::invoice::remind(docs, mailer, from_address, &invoice, today).await?;
        if matches!(outcome, Some(Outcome::Sent { .. })) {
            sent += 1;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_counter_is_retried_and_an_unwritable_invoice_is_not() {
        let busy = document_error(documents::DocumentError::Busy("invoice numbers"));
        assert!(!busy.is_permanent(), "{busy}");
        let too_large = document_error(documents::DocumentError::TooLarge("invoice"));
        assert!(too_large.is_permanent(), "{too_large}");
    }
}
