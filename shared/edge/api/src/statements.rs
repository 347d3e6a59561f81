//! Statements: read one for a date range (JSON or a CSV download), or have it emailed (HTML
//! with the CSV attached) through the statements queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use jobs::Job;
use ledger::statement::{statement_for, Statement, StatementError, StatementLine};
use ledger::AccountId;
use notifications::statement::{statement_csv, StatementRequest, MAX_STATEMENT_RECIPIENTS};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::{account_or_404, idempotency_key, Params};
use crate::auth::Identity;
use crate::body;
use crate::error::ApiError;
use crate::openapi::{self as doc, EmailAddress, SignedUsd, Usd};
use crate::profile::Email;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default()
        .routes(routes!(statement_json))
        .routes(routes!(statement_download))
        .routes(routes!(send_statement))
}

/// A statement for a UTC date range.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Statement)]
pub struct StatementView {
    pub account_id: String,
    /// The first day (UTC), included.
    pub from: NaiveDate,
    /// The last day (UTC), included.
    pub to: NaiveDate,
    /// The balance at `from` 00:00 UTC.
    #[schema(value_type = SignedUsd)]
    pub opening_balance_usd: Decimal,
    /// `funds_added` credits: manual payments and auto-recharges.
    #[schema(value_type = SignedUsd)]
    pub card_payments_usd: Decimal,
    /// Refunds and credit adjustments.
    #[schema(value_type = SignedUsd)]
    pub other_credits_usd: Decimal,
    /// Usage debits per billing item (keys are billing items); included plan minutes are a
    /// negative `included_minutes` line, so calls show at their full price.
    #[schema(value_type = HashMap<doc::BillingItem, SignedUsd>)]
    pub usage_by_item: BTreeMap<ledger::BillingItem, Decimal>,
    /// The sum of `usage_by_item`.
    #[schema(value_type = SignedUsd)]
    pub usage_usd: Decimal,
    /// `sales_tax` debits.
    #[schema(value_type = SignedUsd)]
    pub taxes_usd: Decimal,
    /// Debit adjustments.
    #[schema(value_type = SignedUsd)]
    pub other_debits_usd: Decimal,
    /// The balance at `to + 1 day` 00:00 UTC.
    #[schema(value_type = SignedUsd)]
    pub closing_balance_usd: Decimal,
    /// What credit grants paid for in the period (the rest was paid funds).
    #[schema(value_type = SignedUsd)]
    pub grants_used_usd: Decimal,
    /// Every entry of the period, oldest first.
    pub lines: Vec<StatementLineView>,
}

/// One entry as a statement shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StatementLine)]
pub struct StatementLineView {
    pub seq: u64,
    pub posted_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    pub kind: doc::EntryKind,
    pub item: doc::BillingItem,
    /// Signed: credits positive, debits negative.
    #[schema(value_type = SignedUsd)]
    pub amount_usd: Decimal,
    #[schema(value_type = SignedUsd)]
    pub balance_after_usd: Decimal,
    pub source_id: String,
    /// For people: "Outbound call, 3 min", "Auto-recharge, visa 4242", or the item's label.
    pub description: String,
    /// The part of the amount credit grants bore (absent when none did).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Usd>)]
    pub grants_usd: Option<Decimal>,
}

impl From<Statement> for StatementView {
    fn from(statement: Statement) -> Self {
        // Every field named: a new one does not compile until the API decides to show it.
        let Statement {
            account_id,
            from,
            to,
            opening_balance_usd,
            card_payments_usd,
            other_credits_usd,
            usage_by_item,
            usage_usd,
            taxes_usd,
            other_debits_usd,
            closing_balance_usd,
            grants_used_usd,
            lines,
        } = statement;
        StatementView {
            account_id: account_id.to_string(),
            from,
            to,
            opening_balance_usd,
            card_payments_usd,
            other_credits_usd,
            usage_by_item,
            usage_usd,
            taxes_usd,
            other_debits_usd,
            closing_balance_usd,
            grants_used_usd,
            lines: lines.into_iter().map(StatementLineView::from).collect(),
        }
    }
}

impl From<StatementLine> for StatementLineView {
    fn from(line: StatementLine) -> Self {
        let StatementLine {
            seq,
            posted_at,
            occurred_at,
            kind,
            item,
            amount_usd,
            balance_after_usd,
            source_id,
            description,
            grants_usd,
        } = line;
        StatementLineView {
            seq,
            posted_at,
            occurred_at,
            kind: kind.into(),
            item: item.into(),
            amount_usd,
            balance_after_usd,
            source_id,
            description,
            grants_usd: (!grants_usd.is_zero()).then_some(grants_usd),
        }
    }
}

fn date(params: &Params, name: &str) -> Result<NaiveDate, ApiError> {
    let value = params.get(name).ok_or_else(|| {
        ApiError::bad_request("invalid_field", format!("{name} is required (YYYY-MM-DD, UTC)"))
            .on_field(name)
    })?;
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request("invalid_field", format!("{name} must be a date such as 2026-10-31"))
            .on_field(name)
    })
}

fn from_statement_error(error: StatementError) -> ApiError {
    if error.is_bad_request() {
        ApiError::bad_request("invalid_range", error.to_string()).on_field("from")
    } else if error.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account")
    } else if error.is_retryable() {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the ledger is busy; retry")
    } else {
        ApiError::internal(&error)
    }
}

/// The query parameters of `/v1/statement` and `/v1/statement.csv`.
pub const STATEMENT_PARAMS: &[&str] = &["from", "to"];

async fn build(
    state: &AppState,
    id: &AccountId,
    raw: HashMap<String, String>,
) -> Result<Statement, ApiError> {
    let params = Params::new(raw, STATEMENT_PARAMS)?;
    let (from, to) = (date(&params, "from")?, date(&params, "to")?);
    statement_for(state.ledger(), id, from, to).await.map_err(from_statement_error)
}

#[utoipa::path(
    get, path = "/v1/statement",
    summary = "A statement for a UTC date range: opening balance, card payments and other credits, usage by billing item, taxes, closing balance, and every line with its running balance",
    params(
        ("from" = NaiveDate, Query, description = "First UTC day of the period (included)"),
        ("to" = NaiveDate, Query, description = "Last UTC day of the period (included)"),
    ),
    responses(
        (status = 200, description = "The statement", body = StatementView),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn statement_json(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<StatementView>, ApiError> {
    let id = identity.account()?;
    Ok(Json(build(&state, id, raw).await?.into()))
}

#[utoipa::path(
    get, path = "/v1/statement.csv",
    summary = "The statement's lines as CSV (the email's attachment)",
    params(
        ("from" = NaiveDate, Query, description = "First UTC day of the period (included)"),
        ("to" = NaiveDate, Query, description = "Last UTC day of the period (included)"),
    ),
    responses(
        (status = 200, description = "CSV", content_type = "text/csv", body = String),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn statement_download(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = identity.account()?;
    let statement = build(&state, id, raw).await?;
    let filename = notifications::statement::csv_filename(&statement);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok((headers, statement_csv(&statement)).into_response())
}

/// Email a statement for a UTC date range.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StatementEmail)]
pub struct SendBody {
    /// The first day (UTC), included.
    pub from: NaiveDate,
    /// The last day (UTC), included.
    pub to: NaiveDate,
    /// Default: the account's billing contacts.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EmailAddress>>, min_items = 1, max_items = 50)]
    pub recipients: Option<Vec<Email>>,
}

/// The statement email as queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementQueued {
    pub statement_id: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// null: the account's billing contacts.
    pub recipients: Option<Vec<String>>,
}

/// Queue a statement email. Admins only; `Idempotency-Key` makes a resend send nothing twice.
#[utoipa::path(
    post, path = "/v1/statements",
    summary = "Email a statement (HTML with the CSV attached) to the billing contacts or the given recipients; sent once per Idempotency-Key. Admins only",
    params(
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 100, pattern = "^[!-~]+$",
            description = "Makes a resend send nothing twice"),
    ),
    request_body = SendBody,
    responses(
        (status = 202, description = "Queued", body = StatementQueued),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Statement emails are not configured, or the queue is unavailable: retry", body = ApiError),
    )
)]
async fn send_statement(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<StatementQueued>), ApiError> {
    let id = identity.admin_account()?.clone();
    let key = idempotency_key(&headers)?;
    let request: SendBody = body::json(&raw)?;
    ledger::statement::period_bounds(request.from, request.to).map_err(from_statement_error)?;
    if let Some(recipients) = &request.recipients {
        if recipients.is_empty() || recipients.len() > MAX_STATEMENT_RECIPIENTS {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("recipients must list 1 to {MAX_STATEMENT_RECIPIENTS} addresses, or be left out"),
            )
            .on_field("recipients"));
        }
    }
    account_or_404(&state, &id).await?;
    let Some(sink) = &state.statements else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "statement emails are not configured on this deployment",
        ));
    };
    let statement_id =
        format!("statement:api:{:016x}", ledger::stable_hash(&format!("{id}\n{key}")));
    let job = StatementRequest {
        id: statement_id.clone(),
        account_id: id,
        from: request.from,
        to: request.to,
        recipients: request
            .recipients
            .map(|list| list.into_iter().map(|e| e.as_str().to_string()).collect()),
        requested_at: chrono::Utc::now(),
    };
    sink.publish(&[Job::Statement(job.clone())]).await.map_err(|error| {
        tracing::error!(%error, "statement request not queued");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the statement could not be queued; retry",
        )
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StatementQueued {
            statement_id,
            from: job.from,
            to: job.to,
            recipients: job.recipients,
        }),
    ))
}
