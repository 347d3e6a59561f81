//! Postpaid accounts' monthly invoices (issue 17).
//!
//! An account in [`BillingMode::Postpaid`] runs below zero down to its credit limit, and on the
//! 1st (UTC) it is invoiced for the month before. An invoice covers exactly the ledger entries
//! posted from the month's first instant to the next month's (`[start, end)`, the activity
//! export's own range): its lines sum them by billing item, and its closing balance is the
//! ledger's balance after the month's last entry, so it reconciles to the cent with the export.
//!
//! An invoice is one document per account and month ([`DocKind::Invoice`], id `YYYY-MM`),
//! written once as a draft and then numbered. Its content never changes after that: only the
//! payments applied to it are added (and a void mark, should an operator ever void one).
//!
//! **Numbers without gaps.** One counter per issuer, a document of the pseudo-account
//! [`NUMBERS_ACCOUNT`], holds the next number and the assignment in progress (`pending`: the
//! number and the invoice it goes to). Assigning is three version-checked writes:
//! 1. the counter moves to `next + 1` with `pending` naming this invoice;
//! 2. the invoice gets its number;
//! 3. the counter's `pending` is cleared.
//!
//! Anyone who finds `pending` set finishes that assignment first. So a number is taken only
//! together with the invoice that receives it, and a crash between the steps is finished by
//! whoever assigns next. Numbers are consecutive with no gap, and an invoice never gets two.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use ledger::docs::{DocError, DocKind, DocStore};
use ledger::statement::StatementLine;
use ledger::{AccountId, BillingItem, EntryKind, Month};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::DocumentError;

/// Prepaid (the balance is topped up in advance; service stops at the floor) or postpaid
/// (usage runs below zero down to the credit limit and is invoiced monthly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingMode {
    #[default]
    Prepaid,
    Postpaid,
}

impl BillingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BillingMode::Prepaid => "prepaid",
            BillingMode::Postpaid => "postpaid",
        }
    }
}

/// The pseudo-account whose documents are the invoice-number counters (no such ledger
/// account; account ids cannot start with `_`).
pub const NUMBERS_ACCOUNT: &str = "_invoice-numbers";

/// The issuer whose numbers a deployment's invoices take (one sequence per issuer).
pub const DEFAULT_ISSUER: &str = "RL";

/// Days from issue to due date; an open invoice past it is overdue.
pub const DAYS_TO_PAY: i64 = 15;

/// One line of an invoice: the month's entries of one billing item and direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub item: BillingItem,
    pub kind: EntryKind,
    /// How many entries.
    pub count: u64,
    /// Their sum (positive; `kind` says which way).
    pub amount_usd: Decimal,
}

/// A payment applied to an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPayment {
    /// The ledger source id of the payment's credit (unique: applying twice is a no-op).
    pub source_id: String,
    pub amount_usd: Decimal,
    pub applied_at: DateTime<Utc>,
}

/// An invoice's status as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Open,
    Paid,
    Overdue,
    Void,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Overdue => "overdue",
            InvoiceStatus::Void => "void",
        }
    }
}

/// One account's invoice for one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub account_id: AccountId,
    pub month: Month,
    /// `<issuer>-<number>`, six digits at least; `None` only on a draft being numbered.
    pub number: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub due_on: NaiveDate,
    /// The ledger balance when the month began and after its last entry.
    pub opening_balance_usd: Decimal,
    pub closing_balance_usd: Decimal,
    /// Debits of the month (charges, taxes, fees).
    pub charges_usd: Decimal,
    /// Credits of the month (payments received, included minutes, refunds, adjustments).
    pub credits_usd: Decimal,
    /// What this invoice asks for: the closing balance below zero, to the cent (half up; the
    /// balance keeps the exact figure, so a sub-cent remainder carries into the next month),
    /// less what earlier invoices still asked for when the month ended
    /// (`previous_unpaid_usd`, billed there, not again here); nothing when that is not above
    /// zero.
    pub amount_due_usd: Decimal,
    /// What earlier invoices still owed when this month ended ([`Invoice::unpaid_at`]): part
    /// of the closing balance, and of what the customer owes, but asked for by them.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub previous_unpaid_usd: Decimal,
    pub lines: Vec<InvoiceLine>,
    /// The seq range of the month's entries (none when the month had none).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    #[serde(default)]
    pub payments: Vec<AppliedPayment>,
    #[serde(default)]
    pub void: bool,
    /// The pre-authorized card charge's failed attempts (`payment_flow::invoice`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autopay: Option<AutopayAttempts>,
    /// Corrections issued against it, oldest first (the invoice itself never changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credit_notes: Vec<CreditNote>,
}

/// A correction of an issued invoice: it lowers what the invoice asks for and credits the
/// balance by the same amount (`adjustment`, source id `cn:<number>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// `<invoice number>-CN-01`, `-CN-02`…: numbered without gaps per invoice.
    pub number: String,
    /// The operator's Idempotency-Key: the same key answers the same note.
    pub key: String,
    pub amount_usd: Decimal,
    pub reason: String,
    pub issued_by: String,
    pub issued_at: DateTime<Utc>,
    /// Its credit is posted to the ledger (the daily sweep posts one a failure left behind).
    #[serde(default)]
    pub credited: bool,
}

impl CreditNote {
    /// The ledger source id of its credit.
    pub fn source_id(&self) -> String {
        format!("{CREDIT_NOTE_SOURCE_PREFIX}{}", self.number)
    }
}

/// Credit notes' ledger credits start so (`ledger::Entry::pays_what_is_owed` counts them).
pub const CREDIT_NOTE_SOURCE_PREFIX: &str = ledger::CREDIT_NOTE_SOURCE_PREFIX;

/// Failed attempts at charging an invoice to the pre-authorized cards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopayAttempts {
    /// Attempts in which every card declined (after [`MAX_AUTOPAY_ATTEMPTS`], none more).
    pub failed: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_failure: String,
}

/// Attempts at charging an invoice to the pre-authorized cards before it waits for a payment
/// by hand (as auto-recharge stops after three).
pub const MAX_AUTOPAY_ATTEMPTS: u32 = 3;

/// How long after a failed attempt the next one is made: 6 hours, then a day.
pub fn autopay_backoff_after(attempt: u32) -> chrono::Duration {
    match attempt {
        1 => chrono::Duration::hours(6),
        _ => chrono::Duration::hours(24),
    }
}

/// The pending-payment key of an invoice's pre-authorized charge (`inv:YYYY-MM`); each card of
/// each attempt claims `inv:YYYY-MM/<attempt>/<card>`.
pub fn autopay_key(month: Month) -> String {
    format!("{AUTOPAY_KEY_PREFIX}{month}")
}

pub const AUTOPAY_KEY_PREFIX: &str = "inv:";

/// The month of an invoice's pending-payment key ([`autopay_key`]), `None` for any other key.
pub fn month_of_autopay_key(key: &str) -> Option<Month> {
    key.strip_prefix(AUTOPAY_KEY_PREFIX)?.parse().ok()
}

/// Change the stored invoice's autopay attempts (version-checked; `change` may run again).
pub async fn update_autopay(
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
    change: impl Fn(&mut Invoice),
) -> Result<(), DocumentError> {
    update(docs, account, month, |invoice| {
        change(invoice);
        true
    })
    .await
}

/// Read-modify-write the stored invoice of `month` with optimistic concurrency (bounded
/// retries); `change` says whether it changed anything (nothing is written when not), and may
/// run more than once. Nothing happens when there is no such invoice.
async fn update(
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
    change: impl Fn(&mut Invoice) -> bool,
) -> Result<(), DocumentError> {
    update_to(docs, account, month, change).await.map(|_| ())
}

/// [`update`], answering the invoice as stored afterwards (`None`: there is no such invoice).
async fn update_to(
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
    change: impl Fn(&mut Invoice) -> bool,
) -> Result<Option<Invoice>, DocumentError> {
    for _ in 0..16 {
        let Some((mut invoice, version)) = load(docs, account, month).await? else {
            return Ok(None);
        };
        if !change(&mut invoice) {
            return Ok(Some(invoice));
        }
        match docs
            .put_doc(account, DocKind::Invoice, &doc_id(month), &to_body(&invoice)?, Some(version))
            .await
        {
            Ok(_) => return Ok(Some(invoice)),
            Err(DocError::Conflict) => continue,
            Err(error) => return put_error(error).map(|()| None),
        }
    }
    Err(DocumentError::Busy("invoice"))
}

impl Invoice {
    /// The invoice of `month` from that month's entries (a statement's lines, oldest first,
    /// every one posted in `[month.start(), month.end())`) and the balance when it began.
    pub fn compute(
        account_id: &AccountId,
        month: Month,
        opening_balance_usd: Decimal,
        entries: &[StatementLine],
        previous_unpaid_usd: Decimal,
        issued_at: DateTime<Utc>,
    ) -> Invoice {
        let mut lines: Vec<InvoiceLine> = Vec::new();
        let (mut charges, mut credits) = (Decimal::ZERO, Decimal::ZERO);
        for entry in entries {
            let amount = entry.amount_usd.abs();
            match entry.kind {
                EntryKind::Debit => charges += amount,
                EntryKind::Credit => credits += amount,
            }
            match lines.iter_mut().find(|l| l.item == entry.item && l.kind == entry.kind) {
                Some(line) => {
                    line.count += 1;
                    line.amount_usd += amount;
                }
                None => lines.push(InvoiceLine {
                    item: entry.item,
                    kind: entry.kind,
                    count: 1,
                    amount_usd: amount,
                }),
            }
        }
        lines.sort_by_key(|l| (l.kind != EntryKind::Debit, l.item.as_str()));
        let closing = entries.last().map_or(opening_balance_usd, |e| e.balance_after_usd);
        Invoice {
            account_id: account_id.clone(),
            month,
            number: None,
            issued_at,
            due_on: issued_at.date_naive() + Duration::days(DAYS_TO_PAY),
            opening_balance_usd,
            closing_balance_usd: closing,
            charges_usd: charges,
            credits_usd: credits,
            amount_due_usd: ((-closing)
                .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
                - previous_unpaid_usd)
                .max(Decimal::ZERO),
            previous_unpaid_usd,
            lines,
            first_seq: entries.first().map(|e| e.seq),
            last_seq: entries.last().map(|e| e.seq),
            payments: Vec::new(),
            void: false,
            autopay: None,
            credit_notes: Vec::new(),
        }
    }

    pub fn paid_usd(&self) -> Decimal {
        self.payments.iter().map(|p| p.amount_usd).sum()
    }

    /// What it still asked for at `at`, from what it records (credit notes issued and
    /// payments applied before then): fixed once `at` is past, so a later invoice's amount due
    /// can be recomputed from the stored invoices at any time.
    pub fn unpaid_at(&self, at: DateTime<Utc>) -> Decimal {
        if self.void {
            return Decimal::ZERO;
        }
        let notes: Decimal =
            self.credit_notes.iter().filter(|n| n.issued_at < at).map(|n| n.amount_usd).sum();
        let paid: Decimal =
            self.payments.iter().filter(|p| p.applied_at < at).map(|p| p.amount_usd).sum();
        (self.amount_due_usd - notes - paid).max(Decimal::ZERO)
    }

    /// What its credit notes took off it.
    pub fn credited_usd(&self) -> Decimal {
        self.credit_notes.iter().map(|n| n.amount_usd).sum()
    }

    /// What is still owed on it.
    pub fn outstanding_usd(&self) -> Decimal {
        if self.void {
            return Decimal::ZERO;
        }
        (self.amount_due_usd - self.credited_usd() - self.paid_usd()).max(Decimal::ZERO)
    }

    pub fn status(&self, today: NaiveDate) -> InvoiceStatus {
        if self.void {
            InvoiceStatus::Void
        } else if self.outstanding_usd().is_zero() {
            InvoiceStatus::Paid
        } else if today > self.due_on {
            InvoiceStatus::Overdue
        } else {
            InvoiceStatus::Open
        }
    }
}

/// The document id of `month`'s invoice.
pub fn doc_id(month: Month) -> String {
    month.to_string()
}

fn unreadable(source: serde_json::Error) -> DocumentError {
    DocumentError::Unreadable { what: "invoice", source }
}

fn to_body<T: Serialize>(value: &T) -> Result<String, DocumentError> {
    serde_json::to_string(value).map_err(unreadable)
}

fn put_error(error: DocError) -> Result<(), DocumentError> {
    match error {
        DocError::Conflict => Ok(()),
        DocError::TooLarge(_) => Err(DocumentError::TooLarge("invoice")),
        DocError::Store(error) => Err(DocumentError::Store(error)),
    }
}

/// The invoice of `month` and its version, if one was written.
pub async fn load(
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
) -> Result<Option<(Invoice, u64)>, DocumentError> {
    match docs.get_doc(account, DocKind::Invoice, &doc_id(month)).await? {
        None => Ok(None),
        Some(doc) => Ok(Some((serde_json::from_str(&doc.body).map_err(unreadable)?, doc.version))),
    }
}

/// Every invoice of the account, oldest month first.
pub async fn list(docs: &dyn DocStore, account: &AccountId) -> Result<Vec<Invoice>, DocumentError> {
    let mut invoices = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = docs.list_docs(account, DocKind::Invoice, after.as_deref(), 100).await?;
        let Some(last) = page.last().map(|d| d.id.clone()) else { break };
        for doc in &page {
            invoices.push(serde_json::from_str(&doc.body).map_err(unreadable)?);
        }
        if page.len() < 100 {
            break;
        }
        after = Some(last);
    }
    Ok(invoices)
}

/// Write `draft` unless the month's invoice exists, number it, and return the invoice as
/// stored (the existing one, untouched, when it was issued before: issuing is idempotent).
pub async fn issue(
    docs: &dyn DocStore,
    issuer: &str,
    draft: Invoice,
) -> Result<Invoice, DocumentError> {
    let account = draft.account_id.clone();
    let month = draft.month;
    if load(docs, &account, month).await?.is_none() {
        let body = to_body(&Invoice { number: None, ..draft })?;
        // A conflict is a concurrent issuer's draft: numbered below all the same.
        if let Err(error) =
            docs.put_doc(&account, DocKind::Invoice, &doc_id(month), &body, None).await
        {
            put_error(error)?;
        }
    }
    // Drafts an earlier run wrote and did not number (it stopped between the two) are
    // numbered first, oldest month first: an account's invoices are numbered in month order.
    for earlier in list(docs, &account).await? {
        if earlier.number.is_none() && earlier.month < month {
            assign_number(docs, issuer, &account, earlier.month).await?;
        }
    }
    assign_number(docs, issuer, &account, month).await?;
    let (invoice, _) = load(docs, &account, month).await?.ok_or(DocumentError::Busy("invoice"))?;
    Ok(invoice)
}

/// The counter of one issuer's invoice numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbers {
    /// The number the next invoice gets (the first is 1).
    pub next: u64,
    /// An assignment taken but perhaps not yet written into its invoice.
    pub pending: Option<PendingNumber>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingNumber {
    pub number: u64,
    pub account_id: AccountId,
    pub month: Month,
}

pub fn format_number(issuer: &str, number: u64) -> String {
    format!("{issuer}-{number:06}")
}

fn numbers_account() -> AccountId {
    AccountId::parse(NUMBERS_ACCOUNT).expect("the numbers pseudo-account id is valid")
}

async fn load_numbers(docs: &dyn DocStore, issuer: &str) -> Result<(Numbers, u64), DocumentError> {
    match docs.get_doc(&numbers_account(), DocKind::Invoice, issuer).await? {
        None => Ok((Numbers { next: 1, pending: None }, 0)),
        Some(doc) => Ok((serde_json::from_str(&doc.body).map_err(unreadable)?, doc.version)),
    }
}

/// Write `numbers` over `version` (0: none yet); `false` on a conflict.
async fn put_numbers(
    docs: &dyn DocStore,
    issuer: &str,
    numbers: &Numbers,
    version: u64,
) -> Result<bool, DocumentError> {
    let expected = (version > 0).then_some(version);
    match docs
        .put_doc(&numbers_account(), DocKind::Invoice, issuer, &to_body(numbers)?, expected)
        .await
    {
        Ok(_) => Ok(true),
        Err(DocError::Conflict) => Ok(false),
        Err(error) => put_error(error).map(|()| false),
    }
}

/// Write `number` into the invoice of `account` and `month` unless it has one.
async fn write_number(
    docs: &dyn DocStore,
    issuer: &str,
    account: &AccountId,
    month: Month,
    number: u64,
) -> Result<(), DocumentError> {
    if load(docs, account, month).await?.is_none() {
        // Only an existing draft is ever named by `pending`.
        return Err(DocumentError::Busy("invoice"));
    }
    update(docs, account, month, |invoice| {
        if invoice.number.is_some() {
            return false;
        }
        invoice.number = Some(format_number(issuer, number));
        true
    })
    .await
}

/// Turns of [`assign_number`]'s loop before it gives up (`Busy`).
pub const MAX_NUMBERING_TURNS: usize = 512;

/// Give the (drafted) invoice of `account` and `month` the issuer's next number, unless it has
/// one; finishes any assignment left half done first.
pub async fn assign_number(
    docs: &dyn DocStore,
    issuer: &str,
    account: &AccountId,
    month: Month,
) -> Result<(), DocumentError> {
    // Every issuer of a month contends on the one counter: each turn of the loop is a read and
    // a version-checked write, and someone wins each turn, so a few hundred turns cover the
    // statements function's concurrency (a `Busy` after that is retried by the job's queue).
    for _ in 0..MAX_NUMBERING_TURNS {
        let (numbers, version) = load_numbers(docs, issuer).await?;
        if let Some(pending) = &numbers.pending {
            write_number(docs, issuer, &pending.account_id, pending.month, pending.number).await?;
            let cleared = Numbers { next: numbers.next, pending: None };
            put_numbers(docs, issuer, &cleared, version).await?;
            continue;
        }
        match load(docs, account, month).await? {
            None => return Err(DocumentError::Busy("invoice")),
            Some((invoice, _)) if invoice.number.is_some() => return Ok(()),
            Some(_) => {}
        }
        let taken = Numbers {
            next: numbers.next + 1,
            pending: Some(PendingNumber {
                number: numbers.next,
                account_id: account.clone(),
                month,
            }),
        };
        if !put_numbers(docs, issuer, &taken, version).await? {
            continue;
        }
        write_number(docs, issuer, account, month, numbers.next).await?;
        // Best effort: whoever assigns next clears it otherwise.
        let cleared = Numbers { next: taken.next, pending: None };
        put_numbers(docs, issuer, &cleared, version + 1).await?;
        return Ok(());
    }
    Err(DocumentError::Busy("invoice numbers"))
}

/// What an operator asks of a credit note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditNoteRequest {
    pub key: String,
    pub amount_usd: Decimal,
    pub reason: String,
    pub issued_by: String,
}

/// Issue a credit note against `month`'s invoice (step one of two: the caller then posts its
/// credit, `CreditNote::source_id`, and marks it credited). Idempotent by the request's key:
/// the same key answers the note it issued (`false`: not new), and another amount or reason
/// under it is refused. A note may not take more off the invoice than its amount due less the
/// notes before it, nor be issued against a void invoice or a draft.
pub async fn add_credit_note(
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
    request: &CreditNoteRequest,
    now: DateTime<Utc>,
) -> Result<(CreditNote, bool), DocumentError> {
    let refusal = std::sync::Mutex::new(None);
    let pushed = std::sync::atomic::AtomicBool::new(false);
    let stored = update_to(docs, account, month, |invoice| {
        *refusal.lock().expect("refusal") = None;
        pushed.store(false, std::sync::atomic::Ordering::Relaxed);
        if invoice.credit_notes.iter().any(|n| n.key == request.key) {
            return false;
        }
        let refuse = |field, message: String| {
            *refusal.lock().expect("refusal") = Some(DocumentError::invalid(field, message));
            false
        };
        let Some(number) = invoice.number.clone() else {
            return refuse("month", format!("the invoice of {month} is not issued yet"));
        };
        if invoice.void {
            return refuse("month", format!("invoice {number} is void"));
        }
        let creditable = invoice.amount_due_usd - invoice.credited_usd();
        if request.amount_usd > creditable {
            return refuse(
                "amount_usd",
                format!(
                    "a credit note may take at most {creditable} off invoice {number} (its amount \
                     due less the credit notes before it)"
                ),
            );
        }
        invoice.credit_notes.push(CreditNote {
            number: format!("{number}-CN-{:02}", invoice.credit_notes.len() + 1),
            key: request.key.clone(),
            amount_usd: request.amount_usd,
            reason: request.reason.clone(),
            issued_by: request.issued_by.clone(),
            issued_at: now,
            credited: false,
        });
        pushed.store(true, std::sync::atomic::Ordering::Relaxed);
        true
    })
    .await?;
    if let Some(refusal) = refusal.into_inner().expect("refusal") {
        return Err(refusal);
    }
    let Some(stored) = stored else {
        return Err(DocumentError::invalid("month", format!("no invoice for {month}")));
    };
    let note = stored
        .credit_notes
        .iter()
        .find(|n| n.key == request.key)
        .cloned()
        .ok_or(DocumentError::Busy("invoice"))?;
    if note.amount_usd != request.amount_usd || note.reason != request.reason {
        return Err(DocumentError::invalid(
            "Idempotency-Key",
            format!(
                "this Idempotency-Key already issued credit note {} for another amount or reason",
                note.number
            ),
        ));
    }
    Ok((note, pushed.into_inner()))
}

/// Mark `month`'s credit note `number` credited (its ledger credit is posted).
pub async fn mark_credited(
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
    number: &str,
) -> Result<(), DocumentError> {
    update(docs, account, month, |invoice| {
        match invoice.credit_notes.iter_mut().find(|n| n.number == number && !n.credited) {
            Some(note) => {
                note.credited = true;
                true
            }
            None => false,
        }
    })
    .await
}

/// Apply `amount` (a payment credited to the ledger as `source_id`) to the account's open
/// invoices, oldest first; idempotent by `source_id`. Returns what was applied to each invoice
/// (what is left over stays on the balance as credit).
pub async fn apply_payment(
    docs: &dyn DocStore,
    account: &AccountId,
    source_id: &str,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<Vec<(Month, Decimal)>, DocumentError> {
    apply_payment_to(docs, account, None, source_id, amount, now).await
}

/// [`apply_payment`], paying the invoice of `first` before the others (a charge made for that
/// invoice pays that invoice, whatever else is open).
pub async fn apply_payment_to(
    docs: &dyn DocStore,
    account: &AccountId,
    first: Option<Month>,
    source_id: &str,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<Vec<(Month, Decimal)>, DocumentError> {
    let mut invoices = list(docs, account).await?;
    // Stable: the rest stay oldest first.
    invoices.sort_by_key(|i| Some(i.month) != first);
    // A retry (after a crash part way) keeps what was applied and goes on with the rest, in
    // the same order: the amount is applied once in all.
    let mine = |i: &Invoice| {
        i.payments.iter().filter(|p| p.source_id == source_id).map(|p| p.amount_usd).sum()
    };
    let mut applied: Vec<(Month, Decimal)> = invoices
        .iter()
        .map(|i| (i.month, mine(i)))
        .filter(|(_, share): &(Month, Decimal)| *share > Decimal::ZERO)
        .collect();
    let mut left = amount - applied.iter().map(|(_, share)| *share).sum::<Decimal>();
    for invoice in invoices.into_iter().filter(|i| i.number.is_some()) {
        if left <= Decimal::ZERO {
            break;
        }
        if mine(&invoice) > Decimal::ZERO {
            continue;
        }
        let share = left.min(invoice.outstanding_usd());
        if share <= Decimal::ZERO {
            continue;
        }
        let share = add_payment(docs, account, invoice.month, source_id, share, now).await?;
        if share > Decimal::ZERO {
            applied.push((invoice.month, share));
            left -= share;
        }
    }
    Ok(applied)
}

/// Apply up to `amount` of `source_id` to `month`'s invoice, capped at what it still owes when
/// written (concurrent payments never pay it beyond its amount due); what is applied for the
/// source, now or before.
async fn add_payment(
    docs: &dyn DocStore,
    account: &AccountId,
    month: Month,
    source_id: &str,
    amount: Decimal,
    now: DateTime<Utc>,
) -> Result<Decimal, DocumentError> {
    let stored = update_to(docs, account, month, |invoice| {
        let share = amount.min(invoice.outstanding_usd());
        if invoice.payments.iter().any(|p| p.source_id == source_id) || share <= Decimal::ZERO {
            return false;
        }
        invoice.payments.push(AppliedPayment {
            source_id: source_id.to_string(),
            amount_usd: share,
            applied_at: now,
        });
        true
    })
    .await?;
    Ok(stored.map_or(Decimal::ZERO, |invoice| {
        invoice.payments.iter().filter(|p| p.source_id == source_id).map(|p| p.amount_usd).sum()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_the_issuer_and_six_digits() {
        assert_eq!(format_number("RL", 7), "RL-000007");
        assert_eq!(format_number("RL", 1_234_567), "RL-1234567");
    }
}
