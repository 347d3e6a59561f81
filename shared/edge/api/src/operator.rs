//! Operator routes (operator role only): create accounts, set rate cards, credit limits and tax
//! exemption, and post manual adjustments or refunds with a reason.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use ledger::{
    AccountId, Amount, BillingItem, Entry, EntryKind, EntryQuery, NewAccount, Posting,
    PostingResult, PostingRule, SourceId, StoreError,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::{
    account_or_404, idempotency_key, overview_view, AutoRechargeView, OverviewView,
    RechargeStopView,
};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::openapi::{self as doc, SignedUsd, Usd};
use crate::state::AppState;
use crate::{audit, body, profile};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default()
        .routes(routes!(create_account))
        .routes(routes!(show_account))
        .routes(routes!(set_rate_card))
        .routes(routes!(set_credit_limit))
        .routes(routes!(set_tax_exemption))
        .routes(routes!(set_recharge_caps))
        .routes(routes!(set_service_policy))
        .routes(routes!(adjust))
        .routes(routes!(rearm))
        .routes(routes!(attention))
}

/// Query parameters of the attention list.
pub const ATTENTION_PARAMS: &[&str] = &["cursor", "limit"];

/// Accounts whose auto-recharge needs a look: stopped (out of attempts, cap reached) or holding
/// a request. Walks the account registry `limit` accounts at a time (default 100, at most
/// 1,000); a page may list none and still have a `next_cursor`.
/// An account whose auto-recharge needs a look.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttentionAccount {
    pub account_id: String,
    #[schema(value_type = SignedUsd)]
    pub balance_usd: String,
    /// Auto-recharge is on.
    pub enabled: bool,
    /// Stopped for this month: why, and until when.
    pub stopped: Option<RechargeStopView>,
    /// The id of the recharge request raised and not settled yet.
    pub request_in_flight: Option<String>,
}

/// A page of the account registry's accounts that need a look; `next_cursor` continues.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttentionPage {
    pub accounts: Vec<AttentionAccount>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/operator/auto-recharge/attention",
    summary = "Accounts whose auto-recharge needs a look (operator): stopped, or holding a request; walks the account registry a page at a time",
    params(
        ("cursor" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "The previous page's next_cursor"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Accounts walked per page (default 100)"),
    ),
    responses(
        (status = 200, description = "A page of accounts", body = AttentionPage),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn attention(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    axum::extract::Query(raw): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<AttentionPage>, ApiError> {
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
        accounts.push(AttentionAccount {
            account_id: account.id.to_string(),
            balance_usd: account.balance_usd.normalize().to_string(),
            enabled: account.recharge.as_ref().is_some_and(|r| r.enabled()),
            stopped: account.recharge_stopped.as_ref().map(RechargeStopView::from),
            request_in_flight: account.recharge_in_flight.clone(),
        });
    }
    let next_cursor = (ids.len() == limit as usize).then(|| ids.last().map(|id| id.to_string()));
    Ok(Json(AttentionPage { accounts, next_cursor: next_cursor.flatten() }))
}

/// What a re-arm did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rearmed {
    /// A stop was lifted or a waiting request dropped.
    pub rearmed: bool,
    pub message: String,
    pub auto_recharge: Option<AutoRechargeView>,
}

/// Re-arm an account's auto-recharge: lift a stop and drop a request that never started
/// charging, so the ledger raises a fresh one when the balance is below the threshold.
#[utoipa::path(
    post, path = "/v1/operator/accounts/{account_id}/auto-recharge/rearm",
    summary = "Re-arm an account's auto-recharge (operator): lift a stop (out of attempts, cap reached) and drop a request that never started charging; the ledger raises a fresh request when the balance is below the threshold",
    params(AccountPath),
    responses(
        (status = 200, description = "What was done", body = Rearmed),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 409, description = "An attempt may have reached the card processor: it settles itself and is not dropped", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn rearm(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
) -> Result<Json<Rearmed>, ApiError> {
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
    Ok(Json(Rearmed {
        rearmed: outcome == payment_flow::Rearm::Rearmed,
        message: message.to_string(),
        auto_recharge: AutoRechargeView::of(&account, None),
    }))
}

/// The account in an operator route's path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the path; handlers parse it with `path_account`.
pub(crate) struct AccountPath {
    /// The account's id.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    account_id: String,
}

pub(crate) fn path_account(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()).on_field("account_id"))
}

/// A new account: prepaid unless it has a credit limit.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub account_id: String,
    /// Postpaid accounts may go down to minus this.
    #[serde(default)]
    #[schema(value_type = Option<Usd>)]
    pub credit_limit_usd: Option<Amount>,
}

#[utoipa::path(
    post, path = "/v1/operator/accounts", summary = "Create an account (operator)",
    request_body = CreateAccount,
    responses(
        (status = 201, description = "Created", body = OverviewView),
        (status = 409, description = "Conflict with the current state (the account exists)", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn create_account(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<(StatusCode, Json<OverviewView>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(overview_view(&state, &account))))
}

#[utoipa::path(
    get, path = "/v1/operator/accounts/{account_id}", summary = "Show an account (operator)",
    params(AccountPath),
    responses(
        (status = 200, description = "Overview, with the tax exemption", body = OverviewView),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn show_account(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
) -> Result<Json<OverviewView>, ApiError> {
    identity.operator()?;
    let account = account_or_404(&state, &path_account(&account_id)?).await?;
    let (profile, _) = profile::load(state.docs(), &account.id).await?;
    let mut view = overview_view(&state, &account);
    view.tax_exempt = Some(profile.tax_exempt);
    Ok(Json(view))
}

/// The account's rate card by id; null for the standard card.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RateCard)]
pub struct RateCardBody {
    #[schema(required = true)]
    pub rate_card: Option<String>,
}

/// The rate card as saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateCardSaved {
    pub rate_card: Option<String>,
}

#[utoipa::path(
    put, path = "/v1/operator/accounts/{account_id}/rate-card", summary = "Set the rate card (operator)",
    params(AccountPath),
    request_body = RateCardBody,
    responses(
        (status = 200, description = "Saved", body = RateCardSaved),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn set_rate_card(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<RateCardSaved>, ApiError> {
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
    Ok(Json(RateCardSaved { rate_card: after.rate_card }))
}

/// What the account keeps at its floor: inbound grace (an amount below the floor, or hours after
/// the suspension) and the days suspended before its numbers are due for release.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ServicePolicy)]
pub struct ServicePolicyBody {
    /// Inbound calls and messages keep working until the balance is this much below the floor
    /// (0: none).
    #[schema(value_type = String, example = "5")]
    pub inbound_grace_usd: Decimal,
    /// Inbound calls and messages keep working this many hours after the suspension (null:
    /// none); at most 168.
    #[schema(minimum = 1, maximum = 168, required = true)]
    pub inbound_grace_hours: Option<u32>,
    /// Days suspended before the numbers are due for release; 7 to 365.
    #[schema(minimum = 7, maximum = 365, example = 30)]
    pub release_after_days: u32,
    /// Stop outbound calls, messages and number purchases while a dispute (chargeback) of one
    /// of the account's payments is open, whatever the balance (default false).
    #[serde(default)]
    pub suspend_while_disputed: bool,
    /// Postpaid accounts: days past an invoice's due date, unpaid, before the account is
    /// blocked as at its floor until it is paid; 1 to 365 (default 21).
    #[schema(minimum = 1, maximum = 365, example = 21)]
    #[serde(default = "default_block_after_days_overdue")]
    pub block_after_days_overdue: u32,
}

fn default_block_after_days_overdue() -> u32 {
    ledger::service::DEFAULT_BLOCK_AFTER_DAYS_OVERDUE
}

/// The policy as saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServicePolicySaved {
    #[schema(value_type = String)]
    pub inbound_grace_usd: Decimal,
    pub inbound_grace_hours: Option<u32>,
    pub release_after_days: u32,
    pub suspend_while_disputed: bool,
    pub block_after_days_overdue: u32,
    /// Disputes of the account's payments open now (by dispute id).
    pub open_disputes: Vec<String>,
    /// While suspended: when the numbers are due for release.
    pub release_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    put, path = "/v1/operator/accounts/{account_id}/service-policy",
    summary = "Set what the account keeps at its floor: inbound grace and number release (operator)",
    params(AccountPath),
    request_body = ServicePolicyBody,
    responses(
        (status = 200, description = "Saved", body = ServicePolicySaved),
        (status = 400, description = "Bad request: the message says what is wrong", body = ApiError),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn set_service_policy(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<ServicePolicySaved>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: ServicePolicyBody = body::json(&raw)?;
    let grace = request.inbound_grace_usd;
    if grace < Decimal::ZERO || grace > Decimal::from(1_000) || grace.normalize().scale() > 2 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "inbound_grace_usd must be whole cents from 0 to 1000",
        )
        .on_field("inbound_grace_usd"));
    }
    if request
        .inbound_grace_hours
        .is_some_and(|h| !(1..=ledger::service::MAX_GRACE_HOURS).contains(&h))
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            "inbound_grace_hours must be 1 to 168, or null for none",
        )
        .on_field("inbound_grace_hours"));
    }
    if !(7..=ledger::service::MAX_RELEASE_AFTER_DAYS).contains(&request.release_after_days) {
        return Err(ApiError::bad_request("invalid_field", "release_after_days must be 7 to 365")
            .on_field("release_after_days"));
    }
    if !(1..=ledger::service::MAX_RELEASE_AFTER_DAYS).contains(&request.block_after_days_overdue) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "block_after_days_overdue must be 1 to 365",
        )
        .on_field("block_after_days_overdue"));
    }
    let policy = ledger::ServicePolicy {
        inbound_grace_usd: grace.normalize(),
        inbound_grace_hours: request.inbound_grace_hours,
        release_after_days: request.release_after_days,
        suspend_while_disputed: request.suspend_while_disputed,
        block_after_days_overdue: request.block_after_days_overdue,
    };
    let after = audit::change_account(
        &state,
        &id,
        &identity.user,
        "service_policy",
        move |a| a.service = Some(policy.clone()),
        |a| {
            let policy = a.service_policy();
            serde_json::json!({
                "inbound_grace_usd": policy.inbound_grace_usd,
                "inbound_grace_hours": policy.inbound_grace_hours,
                "release_after_days": policy.release_after_days,
                "suspend_while_disputed": policy.suspend_while_disputed,
                "block_after_days_overdue": policy.block_after_days_overdue,
            })
        },
    )
    .await?;
    let saved = after.service_policy();
    Ok(Json(ServicePolicySaved {
        inbound_grace_usd: saved.inbound_grace_usd,
        inbound_grace_hours: saved.inbound_grace_hours,
        release_after_days: saved.release_after_days,
        suspend_while_disputed: saved.suspend_while_disputed,
        block_after_days_overdue: saved.block_after_days_overdue,
        open_disputes: after.open_disputes.clone(),
        release_at: after.release_at(),
    }))
}

/// The credit limit: postpaid accounts may go down to minus it; null makes the account prepaid.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreditLimit)]
pub struct CreditLimitBody {
    #[schema(value_type = Option<Usd>, required = true)]
    pub credit_limit_usd: Option<Amount>,
}

/// The credit limit as saved, and the status it leaves the account in.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditLimitSaved {
    #[schema(value_type = Option<Usd>)]
    pub credit_limit_usd: Option<Amount>,
    pub status: doc::AccountStatus,
}

#[utoipa::path(
    put, path = "/v1/operator/accounts/{account_id}/credit-limit", summary = "Set the credit limit (operator)",
    params(AccountPath),
    request_body = CreditLimitBody,
    responses(
        (status = 200, description = "Saved", body = CreditLimitSaved),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn set_credit_limit(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<CreditLimitSaved>, ApiError> {
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
    Ok(Json(CreditLimitSaved {
        credit_limit_usd: after.credit_limit_usd,
        status: after.status.into(),
    }))
}

/// Whether the account is exempt from sales tax.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxExemption {
    pub tax_exempt: bool,
}

#[utoipa::path(
    put, path = "/v1/operator/accounts/{account_id}/tax-exemption", summary = "Set tax exemption (operator)",
    params(AccountPath),
    request_body = TaxExemption,
    responses(
        (status = 200, description = "Saved", body = TaxExemption),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn set_tax_exemption(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<TaxExemption>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: TaxExemption = body::json(&raw)?;
    let change = |p: &mut profile::Profile| {
        p.tax_exempt = request.tax_exempt;
        Ok(())
    };
    let after =
        audit::change_profile(&state, &id, &identity.user, "tax_exempt", change, |p| p.tax_exempt)
            .await?;
    Ok(Json(TaxExemption { tax_exempt: after.tax_exempt }))
}

/// Whether Pay Now payments count toward the account's auto-recharge caps (monthly and
/// daily). By default they do not: the caps bound runaway automatic charges, not a customer
/// paying by hand.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RechargeCaps {
    pub count_manual_payments: bool,
}

#[utoipa::path(
    put, path = "/v1/operator/accounts/{account_id}/recharge-caps",
    summary = "Whether Pay Now counts toward the auto-recharge caps (operator)",
    params(AccountPath),
    request_body = RechargeCaps,
    responses(
        (status = 200, description = "Saved (applies to payments made from now on)", body = RechargeCaps),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn set_recharge_caps(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<RechargeCaps>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: RechargeCaps = body::json(&raw)?;
    account_or_404(&state, &id).await?;
    let change = |p: &mut profile::Profile| {
        p.caps_count_manual_payments = request.count_manual_payments;
        Ok(())
    };
    let after = audit::change_profile(&state, &id, &identity.user, "recharge_caps", change, |p| {
        p.caps_count_manual_payments
    })
    .await?;
    Ok(Json(RechargeCaps { count_manual_payments: after.caps_count_manual_payments }))
}

/// The entry `seq` of the account (one small read).
pub(crate) async fn entry(state: &AppState, id: &AccountId, seq: u64) -> Result<Entry, ApiError> {
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

/// `credit` and `debit` post an adjustment; `refund` credits a refund.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum AdjustmentKind {
    Credit,
    Debit,
    Refund,
}

/// A manual adjustment or refund, with the reason the ledger keeps.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Adjustment)]
pub struct AdjustmentBody {
    pub kind: AdjustmentKind,
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// The entry the adjustment posted, and the balance after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdjustmentPosted {
    pub entry_seq: u64,
    #[schema(value_type = SignedUsd)]
    pub balance_usd: String,
    pub status: doc::AccountStatus,
}

#[utoipa::path(
    post, path = "/v1/operator/accounts/{account_id}/adjustments",
    summary = "Manual adjustment or refund with a reason (operator; Idempotency-Key required)",
    params(
        AccountPath,
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 100, pattern = "^[!-~]+$",
            description = "Makes a resend post nothing twice"),
    ),
    request_body = AdjustmentBody,
    responses(
        (status = 200, description = "Already posted with this key (the same kind, amount and reason): the same entry, nothing changed", body = AdjustmentPosted),
        (status = 201, description = "Posted", body = AdjustmentPosted),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 422, description = "This Idempotency-Key already posted another adjustment (kind, amount or reason differ): nothing changed", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn adjust(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<AdjustmentPosted>), ApiError> {
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
        Json(AdjustmentPosted {
            entry_seq: seq,
            balance_usd: outcome.account.balance_usd.normalize().to_string(),
            status: outcome.account.status.into(),
        }),
    ))
}
