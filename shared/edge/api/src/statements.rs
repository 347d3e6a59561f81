//! Statements: read one for a date range (JSON or a CSV download), or have it emailed (HTML
//! with the CSV attached) through the statements queue.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use jobs::Job;
use ledger::statement::{statement_for, Statement, StatementError};
use ledger::AccountId;
use notifications::statement::{statement_csv, StatementRequest, MAX_STATEMENT_RECIPIENTS};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::account::{account_or_404, idempotency_key, Params};
use crate::auth::Identity;
use crate::body;
use crate::error::ApiError;
use crate::profile::Email;
use crate::state::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/statement", get(statement_json))
        .route("/v1/statement.csv", get(statement_download))
        .route("/v1/statements", post(send_statement))
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

async fn statement_json(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Statement>, ApiError> {
    let id = identity.account()?;
    Ok(Json(build(&state, id, raw).await?))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    from: NaiveDate,
    to: NaiveDate,
    /// Default: the account's billing contacts.
    #[serde(default)]
    recipients: Option<Vec<Email>>,
}

/// Queue a statement email. Admins only; `Idempotency-Key` makes a resend send nothing twice.
async fn send_statement(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({
            "statement_id": statement_id,
            "from": job.from,
            "to": job.to,
            "recipients": job.recipients,
        })),
    ))
}
