//! Operator routes (operator role only): create accounts, set rate cards, credit limits and tax
//! exemption, and post manual adjustments or refunds with a reason.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use ledger::{
    AccountId, Amount, BillingItem, Entry, EntryKind, EntryQuery, NewAccount, Posting,
    PostingResult, PostingRule, SourceId, StoreError,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::account::{account_or_404, idempotency_key, overview_json};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{audit, body, profile};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/operator/accounts", post(create_account))
        .route("/v1/operator/accounts/{account_id}", get(show_account))
        .route("/v1/operator/accounts/{account_id}/rate-card", put(set_rate_card))
        .route("/v1/operator/accounts/{account_id}/credit-limit", put(set_credit_limit))
        .route("/v1/operator/accounts/{account_id}/tax-exemption", put(set_tax_exemption))
        .route("/v1/operator/accounts/{account_id}/adjustments", post(adjust))
        .route("/v1/operator/accounts/{account_id}/auto-recharge/rearm", post(rearm))
        .route("/v1/operator/auto-recharge/attention", get(attention))
}

/// Query parameters of the attention list.
pub const ATTENTION_PARAMS: &[&str] = &["cursor", "limit"];

/// Accounts whose auto-recharge needs a look: stopped (out of attempts, cap reached) or holding
/// a request. Walks the account registry `limit` accounts at a time (default 100, at most
/// 1,000); a page may list none and still have a `next_cursor`.
async fn attention(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    axum::extract::Query(raw): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    identity.operator()?;
    let params = crate::account::Params::new(raw, ATTENTION_PARAMS)?;
    let limit = params.limit(100, 1_000)?;
    let after = params.get("cursor").map(path_account).transpose()?;
    let ids =
        state.ledger().account_ids(after.as_ref(), limit).await.map_err(ApiError::from_store)?;
    let mut accounts = Vec::new();
    for id in &ids {
        let Some(account) = state.ledger().account(id).await.map_err(ApiError::from_store)? else {
            continue;
        };
        if account.recharge_stopped.is_none() && account.recharge_in_flight.is_none() {
            continue;
        }
        accounts.push(json!({
            "account_id": account.id,
            "balance_usd": account.balance_usd.normalize().to_string(),
            "enabled": account.recharge.as_ref().is_some_and(|r| r.enabled()),
            "stopped": account.recharge_stopped,
            "request_in_flight": account.recharge_in_flight,
        }));
    }
    let next_cursor = (ids.len() == limit as usize).then(|| ids.last().map(|id| id.to_string()));
    Ok(Json(json!({ "accounts": accounts, "next_cursor": next_cursor.flatten() })))
}

/// Re-arm an account's auto-recharge: lift a stop and drop a request that never started
/// charging, so the ledger raises a fresh one when the balance is below the threshold.
async fn rearm(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    account_or_404(&state, &id).await?;
    let outcome =
        payment_flow::operator_rearm(&*state.store, &id).await.map_err(ApiError::from_store)?;
    let message = match outcome {
        payment_flow::Rearm::Rearmed => "auto-recharge re-armed",
        payment_flow::Rearm::NothingToDo => "auto-recharge was neither stopped nor waiting",
        payment_flow::Rearm::ChargeInProgress => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "charge_in_progress",
                "an auto-recharge attempt may have reached the card processor; it is settled \
                 automatically and cannot be dropped",
            ))
        }
    };
    audit::record(
        state.docs(),
        &id,
        &identity.user,
        "auto_recharge_rearmed",
        Value::Null,
        json!({ "outcome": message }),
    )
    .await?;
    let account = account_or_404(&state, &id).await?;
    let view = overview_json(&state, &account).await?;
    Ok(Json(json!({
        "rearmed": outcome == payment_flow::Rearm::Rearmed,
        "message": message,
        "auto_recharge": view["auto_recharge"],
    })))
}

fn path_account(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()).on_field("account_id"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    account_id: String,
    #[serde(default)]
    credit_limit_usd: Option<Amount>,
}

async fn create_account(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    identity.operator()?;
    let request: CreateAccount = body::json(&raw)?;
    let id = path_account(&request.account_id)?;
    let new = NewAccount { id: id.clone(), credit_limit_usd: request.credit_limit_usd };
    let account = match state.ledger().create_account(new, Utc::now()).await {
        Ok(account) => account,
        Err(StoreError::AccountExists(_)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "the account exists"))
        }
        Err(error) => return Err(ApiError::from_store(error)),
    };
    audit::record(
        state.docs(),
        &id,
        &identity.user,
        "account_created",
        Value::Null,
        json!({
            "credit_limit_usd": account.credit_limit_usd
        }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(overview_json(&state, &account).await?)))
}

async fn show_account(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    identity.operator()?;
    let account = account_or_404(&state, &path_account(&account_id)?).await?;
    let (profile, _) = profile::load(state.docs(), &account.id).await?;
    let mut view = overview_json(&state, &account).await?;
    view["tax_exempt"] = json!(profile.tax_exempt);
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateCardBody {
    rate_card: Option<String>,
}

async fn set_rate_card(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: RateCardBody = body::json(&raw)?;
    if state.cards.card(request.rate_card.as_deref()).is_none() {
        return Err(ApiError::bad_request("invalid_field", "no rate card has that id")
            .on_field("rate_card"));
    }
    let card = request.rate_card.clone();
    let after = audit::change_account(
        &state,
        &id,
        &identity.user,
        "rate_card",
        move |a| a.rate_card = card.clone(),
        |a| a.rate_card.clone(),
    )
    .await?;
    Ok(Json(json!({ "rate_card": after.rate_card })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditLimitBody {
    credit_limit_usd: Option<Amount>,
}

async fn set_credit_limit(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: CreditLimitBody = body::json(&raw)?;
    let limit = request.credit_limit_usd;
    let after = audit::change_account(
        &state,
        &id,
        &identity.user,
        "credit_limit",
        move |a| a.credit_limit_usd = limit,
        |a| a.credit_limit_usd,
    )
    .await?;
    Ok(Json(json!({ "credit_limit_usd": after.credit_limit_usd, "status": after.status })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxExemptionBody {
    tax_exempt: bool,
}

async fn set_tax_exemption(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: TaxExemptionBody = body::json(&raw)?;
    let change = |p: &mut profile::Profile| {
        p.tax_exempt = request.tax_exempt;
        Ok(())
    };
    let after =
        audit::change_profile(&state, &id, &identity.user, "tax_exempt", change, |p| p.tax_exempt)
            .await?;
    Ok(Json(json!({ "tax_exempt": after.tax_exempt })))
}

/// The entry `seq` of the account (one small read).
async fn entry(state: &AppState, id: &AccountId, seq: u64) -> Result<Entry, ApiError> {
    let query = EntryQuery {
        cursor: Some(ledger::store::encode_cursor(seq.saturating_sub(1))),
        limit: 1,
        ..EntryQuery::default()
    };
    let page = state.ledger().entries(id, &query).await.map_err(ApiError::from_store)?;
    page.entries.into_iter().find(|e| e.seq == seq).ok_or_else(|| {
        ApiError::internal(&std::io::Error::other(format!("entry {seq} of {id} is missing")))
    })
}

/// Whether the entry an Idempotency-Key already posted is the adjustment asked for again: the
/// same kind, item, amount and reason (the entry is the request's record, as Pay Now's
/// idempotency record keeps its amount).
fn same_adjustment(
    posted: &Entry,
    kind: EntryKind,
    item: BillingItem,
    amount: Amount,
    reason: &str,
) -> bool {
    posted.kind == kind
        && posted.item == item
        && posted.amount_usd == amount
        && posted.details.get("reason").and_then(|r| r.as_str()) == Some(reason)
}

/// A reused Idempotency-Key: 422 naming the adjustment that holds it.
fn key_reused(seq: u64, item: BillingItem, kind: EntryKind, amount_usd: Amount) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        format!(
            "this Idempotency-Key was used for another adjustment (entry {seq}: {} {} of {}); \
             nothing changed: use a new key for a new adjustment",
            item.as_str(),
            kind.as_str(),
            amount_usd.value().normalize(),
        ),
    )
    .on_field("Idempotency-Key")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum AdjustmentKind {
    Credit,
    Debit,
    Refund,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustmentBody {
    kind: AdjustmentKind,
    amount_usd: Amount,
    reason: String,
}

async fn adjust(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let key = idempotency_key(&headers)?;
    let request: AdjustmentBody = body::json(&raw)?;
    if request.reason.trim().is_empty() || request.reason.len() > 500 {
        return Err(ApiError::bad_request("invalid_field", "reason must be 1 to 500 characters")
            .on_field("reason"));
    }
    let (kind, item) = match request.kind {
        AdjustmentKind::Credit => (EntryKind::Credit, BillingItem::Adjustment),
        AdjustmentKind::Debit => (EntryKind::Debit, BillingItem::Adjustment),
        AdjustmentKind::Refund => (EntryKind::Credit, BillingItem::Refund),
    };
    let source = SourceId::parse(format!("adj:{key}")).map_err(|e| {
        ApiError::bad_request("invalid_field", e.to_string()).on_field("Idempotency-Key")
    })?;
    // An operator's debit is a correction of what happened: it always posts.
    let posting =
        Posting::new(source, kind, item, request.amount_usd, PostingRule::Always, Utc::now())
            .and_then(|p| p.with_details(json!({ "reason": request.reason, "by": identity.user })))
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    account_or_404(&state, &id).await?;
    let outcome =
        state.ledger().post(&id, vec![posting], Utc::now()).await.map_err(ApiError::from_store)?;
    let (status, seq) = match outcome.results.first() {
        Some(PostingResult::Applied { seq, .. }) => (StatusCode::CREATED, *seq),
        Some(PostingResult::Duplicate { seq }) => {
            let posted = entry(&state, &id, *seq).await?;
            if !same_adjustment(&posted, kind, item, request.amount_usd, &request.reason) {
                return Err(key_reused(*seq, posted.item, posted.kind, posted.amount_usd));
            }
            (StatusCode::OK, *seq)
        }
        // The ledger itself saw another kind, item or amount under the key.
        Some(PostingResult::SourceIdReused { seq, kind, item, amount_usd }) => {
            return Err(key_reused(*seq, *item, *kind, *amount_usd));
        }
        other => {
            let message = format!("unexpected posting result {other:?}");
            return Err(ApiError::internal(&std::io::Error::other(message)));
        }
    };
    Ok((
        status,
        Json(json!({
            "entry_seq": seq,
            "balance_usd": outcome.account.balance_usd.normalize().to_string(),
            "status": outcome.account.status,
        })),
    ))
}
