//! Credit grants (operator role): give an account promotional or goodwill credit, list what is
//! left of its grants, and void one. The ledger's rules are in `ledger::grant`; this module only
//! checks the request and posts.
//!
//! - A grant is a `credit_grant` credit whose source id is `cg:<Idempotency-Key>`; the grant's
//!   id is that source id. A resend with the same key and the same grant answers 200 with it;
//!   the same key for another grant answers 422 and posts nothing.
//! - Voiding sets the grant's expiry to now (an audited settings change, which can only bring an
//!   expiry forward) and then writes the account once, which posts the removal of what is left.
//!   A crash between the two leaves an expired grant that pays for nothing; the next write of
//!   the account or the daily sweep removes it, once.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use ledger::{
    Account, Amount, Entry, GrantTerms, Posting, PostingResult, SourceId, DEFAULT_GRANT_PRIORITY,
    MAX_GRANTS, MAX_GRANT_PRIORITY,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::{account_or_404, grant_views, idempotency_key, GrantCategoryName, GrantView};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::openapi::{SignedUsd, Usd};
use crate::operator::{entry, path_account, AccountPath};
use crate::state::AppState;
use crate::{audit, body};

/// The longest a grant may run: ten years.
pub const MAX_GRANT_DAYS: i64 = 3_653;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default().routes(routes!(create_grant, list_grants)).routes(routes!(void_grant))
}

/// A credit grant to open.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreditGrantRequest)]
pub struct GrantBody {
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    pub category: GrantCategoryName,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// When what is left of it is removed (UTC, in the future, at most ten years ahead);
    /// absent: it never expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// 0 to 100 (default 50): among grants that expire together, the lower is drawn first.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub priority: Option<u8>,
}

/// What the account's balance is made of.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantsView {
    #[schema(value_type = SignedUsd)]
    pub balance_usd: String,
    /// The customer's own money (balance − granted): never expires, refundable to a card.
    #[schema(value_type = SignedUsd)]
    pub paid_usd: String,
    /// What is left of the grants.
    #[schema(value_type = Usd)]
    pub granted_usd: String,
    /// The grants with something left, in the order debits draw on them.
    pub grants: Vec<GrantView>,
}

impl GrantsView {
    pub fn of(account: &Account, now: DateTime<Utc>) -> Self {
        GrantsView {
            balance_usd: account.balance_usd.normalize().to_string(),
            paid_usd: account.paid_usd().normalize().to_string(),
            granted_usd: account.granted_usd().normalize().to_string(),
            grants: grant_views(account, now),
        }
    }
}

/// The grant as opened, and the account after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantPosted {
    pub entry_seq: u64,
    /// Absent when the grant was used up or removed since (a resend long after).
    pub grant: Option<GrantView>,
    pub account: GrantsView,
}

/// The grant id in a void route's path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the path.
pub(crate) struct GrantPath {
    account_id: String,
    /// `cg:<key>`, as the grant was answered with.
    #[param(pattern = "^cg:[A-Za-z0-9._-]{1,64}$")]
    grant_id: String,
}

fn grant_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = idempotency_key(headers)?;
    let valid = key.len() <= 64
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_field",
            "a grant's Idempotency-Key is its id: 1 to 64 of A-Z, a-z, 0-9, '.', '_' or '-'",
        )
        .on_field("Idempotency-Key"));
    }
    Ok(key)
}

/// The terms asked for, checked.
fn terms_of(request: &GrantBody, now: DateTime<Utc>) -> Result<GrantTerms, ApiError> {
    if request.reason.trim().is_empty() || request.reason.len() > 500 {
        return Err(ApiError::bad_request("invalid_field", "reason must be 1 to 500 characters")
            .on_field("reason"));
    }
    let priority = request.priority.unwrap_or(DEFAULT_GRANT_PRIORITY);
    if priority > MAX_GRANT_PRIORITY {
        return Err(ApiError::bad_request("invalid_field", "priority must be 0 to 100")
            .on_field("priority"));
    }
    if let Some(expires_at) = request.expires_at {
        if expires_at <= now {
            return Err(ApiError::bad_request("invalid_field", "expires_at must be in the future")
                .on_field("expires_at"));
        }
        if expires_at > now + Duration::days(MAX_GRANT_DAYS) {
            return Err(ApiError::bad_request(
                "invalid_field",
                "expires_at must be at most ten years ahead",
            )
            .on_field("expires_at"));
        }
    }
    Ok(GrantTerms {
        category: request.category.into(),
        expires_at: request.expires_at.map(ledger::truncate_to_micros),
        priority,
    })
}

/// Whether the entry a key already posted is this grant: amount, category, reason, expiry
/// and priority (the entry's details keep the terms).
fn same_grant(posted: &Entry, amount: Amount, terms: &GrantTerms, reason: &str) -> bool {
    posted.item == ledger::BillingItem::CreditGrant
        && posted.amount_usd == amount
        && posted.details.get("reason").and_then(|r| r.as_str()) == Some(reason)
        && posted.details.get("terms") == Some(&json!(terms))
}

fn key_reused(seq: u64) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        format!(
            "this Idempotency-Key opened another grant or posted something else (entry {seq}); \
             nothing changed: use a new key for a new grant"
        ),
    )
    .on_field("Idempotency-Key")
}

#[utoipa::path(
    post, path = "/v1/operator/accounts/{account_id}/credit-grants",
    summary = "Grant promotional or goodwill credit (operator; Idempotency-Key is the grant's id)",
    description = "Debits draw on grants before paid funds: earliest expiry first (grants without one last), then the lower priority, then the older grant. What is left at expiry is removed by a `credit_grant` debit; paid funds never expire. A grant is never refundable to a card; its credit is not taxed (taxability.csv), the usage it pays for is taxed as any usage.",
    params(
        AccountPath,
        ("Idempotency-Key" = String, Header, pattern = "^[A-Za-z0-9._-]{1,64}$",
            description = "The grant's id (`cg:<key>`): a resend opens nothing twice"),
    ),
    request_body = GrantBody,
    responses(
        (status = 200, description = "Already opened with this key (the same grant): nothing changed", body = GrantPosted),
        (status = 201, description = "Opened", body = GrantPosted),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 409, description = "The account already holds the most grants it may (32): nothing changed", body = ApiError),
        (status = 422, description = "This Idempotency-Key already posted something else: nothing changed", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn create_grant(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<GrantPosted>), ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let key = grant_key(&headers)?;
    let request: GrantBody = body::json(&raw)?;
    let now = Utc::now();
    let terms = terms_of(&request, now)?;
    let source = SourceId::parse(format!("cg:{key}"))
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let details = json!({
        "category": terms.category.as_str(),
        "reason": request.reason,
        "by": identity.user,
        "terms": terms,
    });
    let posting = Posting::grant(source.clone(), request.amount_usd, terms.clone(), now)
        .and_then(|p| p.with_details(details))
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let account = account_or_404(&state, &id).await?;
    let known = account.grants.iter().any(|g| g.id == source.as_str());
    if !known && account.grants.len() >= MAX_GRANTS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_grants",
            format!(
                "the account already holds {MAX_GRANTS} grants with something left; void one \
                 or wait for them to be used"
            ),
        ));
    }
    let outcome =
        state.ledger().post(&id, vec![posting], Utc::now()).await.map_err(ApiError::from_store)?;
    let (status, seq) = match outcome.results.first() {
        Some(PostingResult::Applied { seq, .. }) => (StatusCode::CREATED, *seq),
        Some(PostingResult::Duplicate { seq }) => {
            let posted = entry(&state, &id, *seq).await?;
            if !same_grant(&posted, request.amount_usd, &terms, &request.reason) {
                return Err(key_reused(*seq));
            }
            (StatusCode::OK, *seq)
        }
        Some(PostingResult::SourceIdReused { seq, .. }) => return Err(key_reused(*seq)),
        other => {
            let message = format!("unexpected posting result {other:?}");
            return Err(ApiError::internal(&std::io::Error::other(message)));
        }
    };
    let now = Utc::now();
    let account = outcome.account;
    let grant =
        account.grants.iter().find(|g| g.id == source.as_str()).map(|g| GrantView::of(g, now));
    Ok((
        status,
        Json(GrantPosted { entry_seq: seq, grant, account: GrantsView::of(&account, now) }),
    ))
}

#[utoipa::path(
    get, path = "/v1/operator/accounts/{account_id}/credit-grants",
    summary = "The account's paid funds, granted credit and grants with something left (operator)",
    params(AccountPath),
    responses(
        (status = 200, description = "The split and the grants, in draw order", body = GrantsView),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn list_grants(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
) -> Result<Json<GrantsView>, ApiError> {
    identity.operator()?;
    let account = account_or_404(&state, &path_account(&account_id)?).await?;
    Ok(Json(GrantsView::of(&account, Utc::now())))
}

#[utoipa::path(
    post, path = "/v1/operator/accounts/{account_id}/credit-grants/{grant_id}/void",
    summary = "Void a credit grant now: what is left of it is removed (operator)",
    params(GrantPath),
    responses(
        (status = 200, description = "Voided (or already gone): the account after it", body = GrantsView),
        (status = 404, description = "No such account, or no grant with something left by that id", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn void_grant(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path((account_id, grant_id)): Path<(String, String)>,
) -> Result<Json<GrantsView>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let account = account_or_404(&state, &id).await?;
    if !account.grants.iter().any(|g| g.id == grant_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the account has no grant {grant_id} with something left"),
        ));
    }
    let now = ledger::truncate_to_micros(Utc::now());
    let target = grant_id.clone();
    let change = move |a: &mut Account| {
        if let Some(grant) = a.grants.iter_mut().find(|g| g.id == target) {
            if grant.expires_at.is_none_or(|at| at > now) {
                grant.expires_at = Some(now);
            }
        }
    };
    let view = {
        let grant_id = grant_id.clone();
        move |a: &Account| a.grants.iter().find(|g| g.id == grant_id).map(|g| g.expires_at)
    };
    audit::change_account(&state, &id, &identity.user, "credit_grant_voided", change, view).await?;
    // One write of the account removes what is left (and anything else expired by now).
    let after =
        state.ledger().post(&id, Vec::new(), Utc::now()).await.map_err(ApiError::from_store)?;
    Ok(Json(GrantsView::of(&after.account, Utc::now())))
}
