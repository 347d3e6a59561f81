//! Postpaid billing (issue 17): the operator puts an account in postpaid mode (it needs a
//! credit limit), invoices are issued on the 1st for the month before (the monthly statement
//! run) or at once by an operator, the customer lists and reads them, and an operator records
//! payments received by e-transfer, EFT or cheque, which pay the oldest open invoice first.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use documents::invoice::{self as doc_invoice, BillingMode, Invoice};
use ledger::{
    AccountId, Amount, BillingItem, EntryKind, Month, Posting, PostingResult, PostingRule, SourceId,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::{account_or_404, idempotency_key};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::openapi::{SignedUsd, Usd};
use crate::operator::{path_account, AccountPath};
use crate::state::AppState;
use crate::{audit, body};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default()
        .routes(routes!(list_invoices))
        .routes(routes!(show_invoice))
        .routes(routes!(set_billing_mode))
        .routes(routes!(issue_invoice))
        .routes(routes!(record_manual_payment))
        .routes(routes!(issue_credit_note))
}

/// `prepaid` or `postpaid`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BillingModeName {
    Prepaid,
    Postpaid,
}

impl From<BillingModeName> for BillingMode {
    fn from(value: BillingModeName) -> Self {
        match value {
            BillingModeName::Prepaid => BillingMode::Prepaid,
            BillingModeName::Postpaid => BillingMode::Postpaid,
        }
    }
}

impl From<BillingMode> for BillingModeName {
    fn from(value: BillingMode) -> Self {
        match value {
            BillingMode::Prepaid => BillingModeName::Prepaid,
            BillingMode::Postpaid => BillingModeName::Postpaid,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingModeBody {
    pub mode: BillingModeName,
    /// The customer pre-authorized charging its invoices to its cards on the issue date (left
    /// out: unchanged).
    #[serde(default)]
    pub pre_authorized_payment: Option<bool>,
}

/// How the account is billed.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingModeView {
    pub mode: BillingModeName,
    pub pre_authorized_payment: bool,
}

/// One line of an invoice: the month's entries of one billing item and direction.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceLineView {
    pub item: String,
    /// `debit` or `credit`.
    pub kind: String,
    pub count: u64,
    #[schema(value_type = Usd)]
    pub amount_usd: String,
}

/// A payment applied to an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedPaymentView {
    pub source_id: String,
    #[schema(value_type = Usd)]
    pub amount_usd: String,
    pub applied_at: DateTime<Utc>,
}

/// An issued invoice.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Invoice)]
pub struct InvoiceView {
    pub number: String,
    /// `YYYY-MM` (UTC): the entries posted from its 1st 00:00 to the next 1st 00:00.
    pub month: String,
    /// `open`, `paid`, `overdue` or `void`.
    pub status: String,
    pub issued_at: DateTime<Utc>,
    pub due_on: NaiveDate,
    #[schema(value_type = SignedUsd)]
    pub opening_balance_usd: String,
    #[schema(value_type = SignedUsd)]
    pub closing_balance_usd: String,
    #[schema(value_type = Usd)]
    pub charges_usd: String,
    #[schema(value_type = Usd)]
    pub credits_usd: String,
    #[schema(value_type = Usd)]
    pub amount_due_usd: String,
    #[schema(value_type = Usd)]
    pub paid_usd: String,
    #[schema(value_type = Usd)]
    pub outstanding_usd: String,
    pub lines: Vec<InvoiceLineView>,
    pub payments: Vec<AppliedPaymentView>,
    /// The seq range of the month's entries (absent: the month had none).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Failed attempts at charging the pre-authorized cards, if any.
    pub autopay: Option<AutopayView>,
    /// What earlier invoices still asked for when this month ended: part of the closing
    /// balance, asked for by them and not again by this one.
    #[schema(value_type = Usd)]
    pub previous_unpaid_usd: String,
    /// Corrections issued against it (it never changes itself), oldest first.
    pub credit_notes: Vec<CreditNoteView>,
    #[schema(value_type = Usd)]
    pub credited_usd: String,
}

/// A credit note: it lowers what an invoice asks for and credits the balance by as much
/// (`adjustment`, source id `cn:<number>`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditNoteView {
    /// `<invoice number>-CN-01`, `-CN-02`…
    pub number: String,
    #[schema(value_type = Usd)]
    pub amount_usd: String,
    pub reason: String,
    pub issued_by: String,
    pub issued_at: DateTime<Utc>,
}

/// The pre-authorized charge's failed attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AutopayView {
    /// Attempts in which every card declined (after 3, none more: pay by hand).
    pub failed: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_failure: String,
}

fn usd(value: rust_decimal::Decimal) -> String {
    value.normalize().to_string()
}

impl InvoiceView {
    fn of(invoice: &Invoice, today: NaiveDate) -> Self {
        InvoiceView {
            number: invoice.number.clone().unwrap_or_default(),
            month: invoice.month.to_string(),
            status: invoice.status(today).as_str().into(),
            issued_at: invoice.issued_at,
            due_on: invoice.due_on,
            opening_balance_usd: usd(invoice.opening_balance_usd),
            closing_balance_usd: usd(invoice.closing_balance_usd),
            charges_usd: usd(invoice.charges_usd),
            credits_usd: usd(invoice.credits_usd),
            amount_due_usd: usd(invoice.amount_due_usd),
            paid_usd: usd(invoice.paid_usd()),
            outstanding_usd: usd(invoice.outstanding_usd()),
            lines: invoice
                .lines
                .iter()
                .map(|l| InvoiceLineView {
                    item: l.item.as_str().into(),
                    kind: l.kind.as_str().into(),
                    count: l.count,
                    amount_usd: usd(l.amount_usd),
                })
                .collect(),
            payments: invoice
                .payments
                .iter()
                .map(|p| AppliedPaymentView {
                    source_id: p.source_id.clone(),
                    amount_usd: usd(p.amount_usd),
                    applied_at: p.applied_at,
                })
                .collect(),
            first_seq: invoice.first_seq,
            last_seq: invoice.last_seq,
            autopay: invoice.autopay.as_ref().map(|a| AutopayView {
                failed: a.failed,
                next_attempt_at: a.next_attempt_at,
                last_failure: a.last_failure.clone(),
            }),
            previous_unpaid_usd: usd(invoice.previous_unpaid_usd),
            credit_notes: invoice
                .credit_notes
                .iter()
                .map(|n| CreditNoteView {
                    number: n.number.clone(),
                    amount_usd: usd(n.amount_usd),
                    reason: n.reason.clone(),
                    issued_by: n.issued_by.clone(),
                    issued_at: n.issued_at,
                })
                .collect(),
            credited_usd: usd(invoice.credited_usd()),
        }
    }
}

/// The account's invoices, and why its balance is not what the last invoice said.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceList {
    pub billing_mode: BillingModeName,
    /// Oldest month first.
    pub invoices: Vec<InvoiceView>,
    /// Still owed on issued invoices.
    #[schema(value_type = Usd)]
    pub outstanding_usd: String,
    /// The ledger balance now.
    #[schema(value_type = SignedUsd)]
    pub balance_usd: String,
    /// What moved the balance since the last invoiced month ended (usage since the 1st,
    /// payments): the balance is not zero once an invoice is paid because of it.
    #[schema(value_type = SignedUsd)]
    pub since_last_invoice_usd: String,
    pub explanation: String,
    /// Blocked for an overdue invoice: service stops as at the floor until it is paid.
    pub blocked: Option<OverdueBlockView>,
    /// Days past an invoice's due date, unpaid, before the account is blocked.
    pub block_after_days_overdue: u32,
}

/// Why and since when the account is blocked, and what lifts it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverdueBlockView {
    /// The oldest invoice overdue past the limit, `YYYY-MM`.
    pub month: String,
    pub since: DateTime<Utc>,
    /// Payments still needed to lift it (received by any means; it lifts as they post).
    #[schema(value_type = Usd)]
    pub pay_usd: String,
}

async fn load_invoices(state: &AppState, id: &AccountId) -> Result<Vec<Invoice>, ApiError> {
    let invoices = doc_invoice::list(state.docs(), id).await?;
    Ok(invoices.into_iter().filter(|i| i.number.is_some()).collect())
}

#[utoipa::path(
    get, path = "/v1/invoices",
    summary = "The account's invoices (postpaid accounts), with what is outstanding",
    description = "Invoices are issued on the 1st (UTC) for the month before: every entry posted from its 1st 00:00 to the next 1st 00:00, summed by billing item. `since_last_invoice_usd` is what changed the balance after the last invoiced month ended (usage since the 1st, payments received): that is why the balance is not zero once an invoice is paid.",
    responses(
        (status = 200, description = "The invoices, oldest first", body = InvoiceList),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn list_invoices(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<InvoiceList>, ApiError> {
    let id = identity.account()?.clone();
    let account = account_or_404(&state, &id).await?;
    let (profile, _) = documents::profile::load(state.docs(), &id).await?;
    let invoices = load_invoices(&state, &id).await?;
    let today = Utc::now().date_naive();
    let outstanding: rust_decimal::Decimal = invoices.iter().map(Invoice::outstanding_usd).sum();
    let since = match invoices.last() {
        Some(last) => account.balance_usd - last.closing_balance_usd,
        None => rust_decimal::Decimal::ZERO,
    };
    let explanation = match invoices.last() {
        None => "No invoice has been issued yet.".to_string(),
        Some(last) => format!(
            "Invoice {} closed {} at a balance of {}. Since then the balance moved by {} (usage \
             after {} ended, and payments received), so it is {} now; paying the invoice \
             settles the month it covers, not the usage since.",
            last.number.as_deref().unwrap_or(""),
            last.month,
            usd(last.closing_balance_usd),
            usd(since),
            last.month,
            usd(account.balance_usd)
        ),
    };
    Ok(Json(InvoiceList {
        billing_mode: profile.billing_mode.into(),
        invoices: invoices.iter().map(|i| InvoiceView::of(i, today)).collect(),
        outstanding_usd: usd(outstanding),
        balance_usd: usd(account.balance_usd),
        since_last_invoice_usd: usd(since),
        explanation,
        blocked: account.overdue_block.as_ref().map(|b| OverdueBlockView {
            month: b.month.to_string(),
            since: b.since,
            pay_usd: usd(
                (b.until_paid_in_usd - account.paid_in_usd).max(rust_decimal::Decimal::ZERO)
            ),
        }),
        block_after_days_overdue: account.service_policy().block_after_days_overdue,
    }))
}

/// The path of one month's invoice.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the path; the handler parses it with `parse_month`.
pub(crate) struct MonthPath {
    /// The invoiced month, `YYYY-MM` (UTC).
    #[param(pattern = "^[0-9]{4}-[0-9]{2}$")]
    month: String,
}

fn parse_month(raw: &str) -> Result<Month, ApiError> {
    raw.parse::<Month>().map_err(|e| {
        ApiError::bad_request("invalid_field", format!("month must be YYYY-MM: {e}"))
            .on_field("month")
    })
}

#[utoipa::path(
    get, path = "/v1/invoices/{month}",
    summary = "One invoice, by the month it covers",
    params(MonthPath),
    responses(
        (status = 200, description = "The invoice", body = InvoiceView),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn show_invoice(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(month): Path<String>,
) -> Result<Json<InvoiceView>, ApiError> {
    let id = identity.account()?.clone();
    let month = parse_month(&month)?;
    match doc_invoice::load(state.docs(), &id, month).await? {
        Some((invoice, _)) if invoice.number.is_some() => {
            Ok(Json(InvoiceView::of(&invoice, Utc::now().date_naive())))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no invoice was issued for {month}"),
        )),
    }
}

#[utoipa::path(
    put, path = "/v1/operator/accounts/{account_id}/billing-mode",
    summary = "Make the account prepaid or postpaid (operator)",
    description = "A postpaid account runs below zero down to its credit limit (set one first) and is invoiced on the 1st for the month before; a prepaid one is topped up in advance. With `pre_authorized_payment`, each invoice is charged to the account's cards on its issue date (declines are emailed and retried after 6 hours and a day, three attempts in all). Takes effect at once: the next month's invoice covers the whole month it is postpaid at its end (see the README on switching mid-month). Audited.",
    params(AccountPath),
    request_body = BillingModeBody,
    responses(
        (status = 200, description = "Saved", body = BillingModeView),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 409, description = "Postpaid needs a credit limit first: nothing changed", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn set_billing_mode(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<BillingModeView>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: BillingModeBody = body::json(&raw)?;
    let account = account_or_404(&state, &id).await?;
    let mode: BillingMode = request.mode.into();
    if mode == BillingMode::Postpaid && account.credit_limit_usd.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "credit_limit_required",
            "a postpaid account needs a credit limit (PUT .../credit-limit) before it can run below zero",
        )
        .on_field("mode"));
    }
    let pre_authorized = request.pre_authorized_payment;
    let change = move |p: &mut documents::profile::Profile| {
        p.billing_mode = mode;
        if let Some(pre_authorized) = pre_authorized {
            p.pre_authorized_payment = pre_authorized;
        }
        Ok(())
    };
    let view = |p: &documents::profile::Profile| BillingModeView {
        mode: p.billing_mode.into(),
        pre_authorized_payment: p.pre_authorized_payment,
    };
    let after =
        audit::change_profile(&state, &id, &identity.user, "billing_mode", change, view).await?;
    Ok(Json(view(&after)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueInvoiceBody {
    /// The month to invoice, `YYYY-MM` (UTC); it must be over.
    pub month: String,
}

#[utoipa::path(
    post, path = "/v1/operator/accounts/{account_id}/invoices",
    summary = "Issue a postpaid account's invoice for a month that is over, now (operator)",
    description = "What the monthly run does on the 1st, for one account and month: issues the invoice (numbered without gaps) unless it exists, and queues its email (sent once). Issuing again returns the invoice already issued, unchanged.",
    params(AccountPath),
    request_body = IssueInvoiceBody,
    responses(
        (status = 200, description = "Issued before: the same invoice", body = InvoiceView),
        (status = 201, description = "Issued now", body = InvoiceView),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 409, description = "The account is prepaid, the month is not over, or a later month is invoiced already: nothing issued", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn issue_invoice(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<(StatusCode, Json<InvoiceView>), ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: IssueInvoiceBody = body::json(&raw)?;
    let month = parse_month(&request.month)?;
    account_or_404(&state, &id).await?;
    let now = Utc::now();
    if now < month.end() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "month_not_over",
            format!("{month} is not over yet (UTC); a month is invoiced once it has ended"),
        )
        .on_field("month"));
    }
    let existed = matches!(
        doc_invoice::load(state.docs(), &id, month).await?,
        Some((ref invoice, _)) if invoice.number.is_some()
    );
    let issued = match jobs::invoices::issue(state.ledger(), state.docs(), &id, month, now).await {
        Ok(issued) => issued,
        Err(error @ jobs::tax::JobError::LaterMonthInvoiced { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "later_month_invoiced",
                error.to_string(),
            )
            .on_field("month"))
        }
        Err(error) => return Err(ApiError::internal(&error)),
    };
    let Some(invoice) = issued else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_postpaid",
            "the account is prepaid: it gets statements, not invoices",
        ));
    };
    if let Some(sink) = &state.statements {
        sink.publish(&[jobs::Job::Invoice { account_id: id.clone(), month }])
            .await
            .map_err(|e| ApiError::internal(&*e))?;
    }
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(InvoiceView::of(&invoice, now.date_naive()))))
}

/// How a manual payment reached us.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ManualMethod {
    ETransfer,
    Eft,
    Cheque,
}

impl ManualMethod {
    fn as_str(self) -> &'static str {
        match self {
            ManualMethod::ETransfer => "e_transfer",
            ManualMethod::Eft => "eft",
            ManualMethod::Cheque => "cheque",
        }
    }
}

/// A payment received outside the card processor.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualPaymentBody {
    pub method: ManualMethod,
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    /// The transfer's or cheque's reference.
    #[schema(min_length = 1, max_length = 100)]
    pub reference: String,
    /// The UTC day the money arrived.
    pub received_on: NaiveDate,
}

/// What an invoice received of the payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedShare {
    pub month: String,
    #[schema(value_type = Usd)]
    pub amount_usd: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ManualPaymentRecorded {
    pub entry_seq: u64,
    /// Oldest open invoice first; what is left over stays on the balance.
    pub applied: Vec<AppliedShare>,
    #[schema(value_type = SignedUsd)]
    pub balance_usd: String,
}

#[utoipa::path(
    post, path = "/v1/operator/accounts/{account_id}/manual-payments",
    summary = "Record a payment received by e-transfer, EFT or cheque (operator; Idempotency-Key required)",
    description = "Credits the balance (`funds_added`, with the method, reference and day received in its details) and applies the amount to the account's open invoices, oldest first. A resend with the same key records nothing twice.",
    params(
        AccountPath,
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 100, pattern = "^[!-~]+$",
            description = "Makes a resend record nothing twice"),
    ),
    request_body = ManualPaymentBody,
    responses(
        (status = 200, description = "Recorded before with this key: the same entry", body = ManualPaymentRecorded),
        (status = 201, description = "Recorded", body = ManualPaymentRecorded),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 422, description = "This Idempotency-Key already recorded another amount: nothing changed", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn record_manual_payment(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<ManualPaymentRecorded>), ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let key = idempotency_key(&headers)?;
    let request: ManualPaymentBody = body::json(&raw)?;
    let reference = request.reference.trim();
    if reference.is_empty() || reference.len() > 100 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "reference must be 1 to 100 characters",
        )
        .on_field("reference"));
    }
    if request.amount_usd.value().scale() > 2 {
        return Err(ApiError::bad_request("invalid_field", "amount_usd is in whole cents")
            .on_field("amount_usd"));
    }
    let today = Utc::now().date_naive();
    if request.received_on > today {
        return Err(ApiError::bad_request("invalid_field", "received_on is in the future")
            .on_field("received_on"));
    }
    let source = SourceId::parse(format!("man:{key}")).map_err(|e| {
        ApiError::bad_request("invalid_field", e.to_string()).on_field("Idempotency-Key")
    })?;
    let posting = Posting::new(
        source.clone(),
        EntryKind::Credit,
        BillingItem::FundsAdded,
        request.amount_usd,
        PostingRule::Always,
        Utc::now(),
    )
    .and_then(|p| {
        p.with_details(json!({
            "method": request.method.as_str(),
            "reference": reference,
            "received_on": request.received_on,
            "by": identity.user,
        }))
    })
    .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    account_or_404(&state, &id).await?;
    let outcome =
        state.ledger().post(&id, vec![posting], Utc::now()).await.map_err(ApiError::from_store)?;
    let (status, seq) = match outcome.results.first() {
        Some(PostingResult::Applied { seq, .. }) => (StatusCode::CREATED, *seq),
        Some(PostingResult::Duplicate { seq }) => (StatusCode::OK, *seq),
        Some(PostingResult::SourceIdReused { seq, .. }) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!("this Idempotency-Key already recorded entry {seq} with another amount"),
            ))
        }
        other => {
            let message = format!("unexpected posting result {other:?}");
            return Err(ApiError::internal(&std::io::Error::other(message)));
        }
    };
    // Applied after the credit, idempotently by its source id: a retry after a failure here
    // finishes it.
    let applied = doc_invoice::apply_payment(
        state.docs(),
        &id,
        source.as_str(),
        request.amount_usd.value(),
        Utc::now(),
    )
    .await?;
    Ok((
        status,
        Json(ManualPaymentRecorded {
            entry_seq: seq,
            applied: applied
                .into_iter()
                .map(|(month, amount)| AppliedShare {
                    month: month.to_string(),
                    amount_usd: usd(amount),
                })
                .collect(),
            balance_usd: usd(outcome.account.balance_usd),
        }),
    ))
}

/// A correction of an issued invoice.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditNoteBody {
    /// Whole cents; at most what the invoice asked for less the credit notes before it.
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    /// Why (shown to the customer).
    #[schema(min_length = 1, max_length = 200)]
    pub reason: String,
}

/// The credit note, and the invoice it corrects.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditNoteIssued {
    pub credit_note: CreditNoteView,
    pub invoice: InvoiceView,
}

#[utoipa::path(
    post, path = "/v1/operator/accounts/{account_id}/invoices/{month}/credit-notes",
    summary = "Correct an issued invoice with a credit note (operator; Idempotency-Key required)",
    description = "The invoice never changes; the note, numbered `<invoice number>-CN-01`, `-CN-02`… per invoice, lowers what it asks for and credits the balance by the same amount (`adjustment`, source id `cn:<number>`, with the reason in its details). A block the invoice caused lifts once nothing else is overdue that long. A resend with the same key issues nothing twice.",
    params(
        AccountPath,
        MonthPath,
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 100, pattern = "^[!-~]+$",
            description = "Makes a resend issue nothing twice"),
    ),
    request_body = CreditNoteBody,
    responses(
        (status = 200, description = "Issued before with this key: the same note", body = CreditNoteIssued),
        (status = 201, description = "Issued", body = CreditNoteIssued),
        (status = 400, description = "Bad request (more than the invoice asked for, a void invoice, this key used for another note): the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account or invoice", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn issue_credit_note(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path((account_id, month)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<CreditNoteIssued>), ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let month = parse_month(&month)?;
    let key = idempotency_key(&headers)?;
    let request: CreditNoteBody = body::json(&raw)?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(ApiError::bad_request("invalid_field", "reason must be 1 to 200 characters")
            .on_field("reason"));
    }
    if request.amount_usd.value().scale() > 2 {
        return Err(ApiError::bad_request("invalid_field", "amount_usd is in whole cents")
            .on_field("amount_usd"));
    }
    account_or_404(&state, &id).await?;
    match doc_invoice::load(state.docs(), &id, month).await? {
        Some((invoice, _)) if invoice.number.is_some() => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("account {id} has no invoice for {month}"),
            ))
        }
    }
    let note_request = doc_invoice::CreditNoteRequest {
        key,
        amount_usd: request.amount_usd.value(),
        reason: reason.to_string(),
        issued_by: identity.user.clone(),
    };
    let now = Utc::now();
    let (note, new) =
        jobs::invoices::credit_note(state.ledger(), state.docs(), &id, month, &note_request, now)
            .await
            .map_err(|error| match error {
                jobs::tax::JobError::InvalidPosting(message) => {
                    ApiError::bad_request("invalid_request", message)
                }
                jobs::tax::JobError::Store(error) => ApiError::from_store(error),
                other => ApiError::internal(&other),
            })?;
    let (invoice, _) = doc_invoice::load(state.docs(), &id, month)
        .await?
        .ok_or_else(|| ApiError::internal(&std::io::Error::other("the invoice went away")))?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    let view = InvoiceView::of(&invoice, now.date_naive());
    let credit_note = view
        .credit_notes
        .iter()
        .find(|n| n.number == note.number)
        .map(|n| CreditNoteView {
            number: n.number.clone(),
            amount_usd: n.amount_usd.clone(),
            reason: n.reason.clone(),
            issued_by: n.issued_by.clone(),
            issued_at: n.issued_at,
        })
        .ok_or_else(|| ApiError::internal(&std::io::Error::other("the credit note went away")))?;
    Ok((status, Json(CreditNoteIssued { credit_note, invoice: view })))
}
