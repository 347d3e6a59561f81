//! `POST /v1/authorizations`: the telephony platform asks whether an account may place a call,
//! send an SMS or buy a number. Authorized as the platform (IAM on API Gateway in AWS, a bearer
//! token locally), never as an account user.
//!
//! With an `authorization_id` the answer also places a **hold** for what it grants (a call's
//! first slice, a message's price, a number's price: `usage::holds`), which the usage event
//! carrying the same id settles; `/extend` grants a call another slice and `/release` gives a
//! hold back unused. Without one the answer is advisory, as before: nothing is reserved.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use ledger::{AccountId, LedgerStore};
use serde::{Deserialize, Serialize};
use usage::authorize::{authorize, Action, Decision};
use usage::holds::{HoldAnswer, HoldError};
use usage::worker::RateCards;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::mirror_enum;

pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// The platform's routes, `(METHOD, path)`, documented in the OpenAPI document beside the
/// account API's [`crate::app::ROUTES`].
pub const ROUTES: [(&str, &str); 3] = [
    ("POST", "/v1/authorizations"),
    ("POST", "/v1/authorizations/{authorization_id}/extend"),
    ("POST", "/v1/authorizations/{authorization_id}/release"),
];

/// How the platform proves who it is.
#[derive(Clone)]
pub enum PlatformAuth {
    /// API Gateway's IAM authorizer already checked the caller.
    Iam,
    /// `Authorization: Bearer <token>` (the local runner, tests).
    Token(String),
}

pub struct AuthorizationState {
    pub store: Arc<dyn LedgerStore>,
    pub cards: RateCards,
    pub platform: PlatformAuth,
    pub max_call_seconds: u32,
}

mirror_enum! {
    /// Why a billable action is refused.
    Denial = usage::authorize::Denial {
        TermsNotAccepted, Suspended, InsufficientBalance, InsufficientAvailableBalance,
        GraceExhausted, DisputeOpen, InvoiceOverdue
    }
}

mirror_enum! {
    /// Which way a call or message goes.
    Direction = rating::Direction { Inbound, Outbound }
}

mirror_enum! {
    /// The kind of number bought.
    NumberType = rating::NumberType { Local, TollFree }
}

/// What the platform is about to do for an account. The body is parsed as the account id plus
/// a `usage::authorize::Action`; this type is what the document says of it (a test holds the
/// two to the same fields).
#[derive(Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)]
pub enum AuthorizationRequest {
    /// Place a call.
    Call {
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "acme")]
        account_id: String,
        /// The platform's id for this call: places a hold for the first slice.
        #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$", example = "call-7f3a")]
        authorization_id: Option<String>,
        direction: Direction,
        /// E.164 number.
        #[schema(pattern = r"^\+?[0-9]{3,15}$")]
        to: String,
    },
    /// Send an SMS.
    Sms {
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "acme")]
        account_id: String,
        /// The platform's id for this message: places a hold for its price.
        #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
        authorization_id: Option<String>,
        direction: Direction,
        #[schema(minimum = 1, maximum = 100)]
        segments: u32,
    },
    /// Buy a phone number.
    NumberPurchase {
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "acme")]
        account_id: String,
        /// The platform's id for this purchase: places a hold for the price.
        #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
        authorization_id: Option<String>,
        number_type: NumberType,
    },
}

/// The decision.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuthorizationDecision)]
pub struct AuthorizationResponse {
    pub account_id: String,
    pub allowed: bool,
    /// Refused: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Denial>,
    /// Calls only: the longest duration the available balance covers (capped at 4 h); with a
    /// hold, the seconds granted so far (extend before they run out).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub max_duration_seconds: Option<u32>,
    /// Refused: why, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub message: Option<&'static str>,
    /// The hold this answer placed, extended or released (requests with an authorization id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldView>,
    /// Balance less active holds less the floor, after this request (requests with an
    /// authorization id).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "12.5")]
    pub available_usd: Option<String>,
    /// The request had been applied before (a retry): nothing changed now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

mirror_enum! {
    /// What a hold reserves money for.
    HoldPurpose = ledger::HoldPurpose { Call, Sms, NumberPurchase }
}

/// A hold as the platform and the account's overview see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Hold)]
pub struct HoldView {
    pub authorization_id: String,
    pub purpose: HoldPurpose,
    /// Reserved (not debited): the cost of what was granted.
    #[schema(value_type = String, example = "0.0725")]
    pub amount_usd: String,
    /// Calls: seconds granted so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granted_seconds: Option<u32>,
    pub extensions: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// It releases itself then if no usage event reports it.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// `active`, `settled` (reported or released) or `expired`.
    #[schema(example = "active")]
    pub state: &'static str,
}

impl HoldView {
    pub fn of(hold: &ledger::Hold, now: chrono::DateTime<chrono::Utc>) -> Self {
        HoldView {
            authorization_id: hold.id.clone(),
            purpose: hold.purpose.into(),
            amount_usd: hold.amount_usd.normalize().to_string(),
            granted_seconds: hold.granted_seconds,
            extensions: hold.extensions,
            created_at: hold.created_at,
            expires_at: hold.expires_at,
            state: if hold.settled {
                "settled"
            } else if hold.is_active(now) {
                "active"
            } else {
                "expired"
            },
        }
    }
}

impl AuthorizationResponse {
    fn new(account_id: &AccountId, decision: Decision) -> Self {
        // Every field named: a new one does not compile until the API decides to show it.
        let Decision { allowed, reason, max_duration_seconds } = decision;
        AuthorizationResponse {
            account_id: account_id.to_string(),
            allowed,
            reason: reason.map(Denial::from),
            max_duration_seconds,
            message: reason.map(|r| r.message()),
            hold: None,
            available_usd: None,
            replayed: false,
        }
    }

    fn held(
        account_id: &AccountId,
        answer: HoldAnswer,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let HoldAnswer { decision, hold, available_usd, replayed } = answer;
        AuthorizationResponse {
            hold: hold.as_ref().map(|h| HoldView::of(h, now)),
            available_usd: Some(available_usd.normalize().to_string()),
            replayed,
            ..Self::new(account_id, decision)
        }
    }
}

/// The platform's route with its documentation.
pub fn api() -> OpenApiRouter<Arc<AuthorizationState>> {
    OpenApiRouter::default()
        .routes(routes!(authorize_handler))
        .routes(routes!(extend_handler))
        .routes(routes!(release_handler))
        .route_layer(axum::middleware::from_fn(crate::query::refuse_unknown_query))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

pub fn router(state: Arc<AuthorizationState>) -> Router {
    Router::from(api()).with_state(state)
}

/// Compares without an early exit, so timing says nothing about the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_platform(platform: &PlatformAuth, headers: &HeaderMap) -> Result<(), ApiError> {
    let PlatformAuth::Token(expected) = platform else { return Ok(()) };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if same_secret(token.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route is for the telephony platform: present its bearer token",
        )),
    }
}

/// An authorization id, from the path or the body: the usage events' rule.
fn checked_authorization_id(id: &str) -> Result<String, ApiError> {
    usage::events::check_authorization_id(id).map_err(|reason| {
        ApiError::bad_request("invalid_field", format!("authorization_id {reason}"))
            .on_field("authorization_id")
    })
}

fn authorization_id(value: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(id)) => checked_authorization_id(&id).map(Some),
        Some(_) => Err(ApiError::bad_request("invalid_field", "authorization_id must be a string")
            .on_field("authorization_id")),
    }
}

fn parse(body: &[u8]) -> Result<(AccountId, Option<String>, Action), ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("invalid_json", "body must be a JSON object"))?;
    let account_id = match object.remove("account_id") {
        Some(serde_json::Value::String(id)) => account_id(id)?,
        _ => {
            return Err(ApiError::bad_request("invalid_field", "account_id (a string) is required")
                .on_field("account_id"))
        }
    };
    let authorization_id = authorization_id(object.remove("authorization_id"))?;
    let action: Action = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_field", format!("invalid action: {e}")))?;
    if let Action::Call { to, .. } = &action {
        let digits = to.strip_prefix('+').unwrap_or(to);
        if !(3..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                ApiError::bad_request("invalid_field", "to must be an E.164 number").on_field("to")
            );
        }
    }
    if let Action::Sms { segments, .. } = &action {
        if !(1..=rating::MAX_SEGMENTS).contains(segments) {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("segments must be between 1 and {}", rating::MAX_SEGMENTS),
            )
            .on_field("segments"));
        }
    }
    Ok((account_id, authorization_id, action))
}

#[utoipa::path(
    post, path = "/v1/authorizations",
    summary = "May this account place this call, send this SMS or buy this number (the telephony platform)",
    security(("platformToken" = [])),
    request_body = AuthorizationRequest,
    responses(
        (status = 200, description = "The decision", body = AuthorizationResponse),
        (status = 400, description = "Bad request: the message says what is wrong", body = ApiError),
        (status = 401, description = "Not the platform's token", body = ApiError),
        (status = 404, description = "No such account", body = ApiError),
        (status = 413, description = "Body over 4 KB"),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn authorize_handler(
    State(state): State<Arc<AuthorizationState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AuthorizationResponse>, ApiError> {
    check_platform(&state.platform, &headers)?;
    let (account_id, authorization_id, action) = parse(&body)?;
    let now = chrono::Utc::now();
    if let Some(authorization_id) = authorization_id {
        let answer = usage::holds::place(
            &*state.store,
            &state.cards,
            &account_id,
            &authorization_id,
            &action,
            now,
            state.max_call_seconds,
        )
        .await
        .map_err(hold_error)?;
        return Ok(Json(AuthorizationResponse::held(&account_id, answer, now)));
    }
    let account = state
        .store
        .account(&account_id)
        .await
        .map_err(ApiError::from_store)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account"))?;
    let card = state.cards.card(account.rate_card.as_deref()).ok_or_else(|| {
        ApiError::internal(&std::io::Error::other(format!(
            "account {account_id} has unknown rate card {:?}",
            account.rate_card
        )))
    })?;
    let decision = authorize(&account, &card, &action, now, state.max_call_seconds);
    Ok(Json(AuthorizationResponse::new(&account_id, decision)))
}

fn hold_error(error: HoldError) -> ApiError {
    match error {
        HoldError::UnknownAccount => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such account")
        }
        HoldError::NoSuchHold(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
        }
        HoldError::NotActive(_) | HoldError::OutOfOrder { .. } | HoldError::Mismatch(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
        }
        HoldError::UnknownRateCard(_) => ApiError::internal(&error),
        HoldError::Store(store) => ApiError::from_store(store),
    }
}

/// The body of `/extend`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "acme")]
    pub account_id: String,
    /// This extension's number: 1 for the first, then 2, ... A retry repeats the number and
    /// changes nothing.
    #[schema(minimum = 1, example = 1)]
    pub sequence: u32,
}

/// The body of `/release`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "acme")]
    pub account_id: String,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid body: {e}")))
}

fn account_id(id: String) -> Result<AccountId, ApiError> {
    AccountId::parse(id)
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()).on_field("account_id"))
}

#[utoipa::path(
    post, path = "/v1/authorizations/{authorization_id}/extend",
    summary = "Grant a call another slice against its hold (the telephony platform)",
    security(("platformToken" = [])),
    params(("authorization_id" = String, Path, description = "The call's authorization id")),
    request_body = ExtendRequest,
    responses(
        (status = 200, description = "The decision and the hold after it", body = AuthorizationResponse),
        (status = 400, description = "Bad request: the message says what is wrong", body = ApiError),
        (status = 401, description = "Not the platform's token", body = ApiError),
        (status = 404, description = "No such account or hold", body = ApiError),
        (status = 409, description = "The hold is settled or expired, not a call's, or expects another sequence", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn extend_handler(
    State(state): State<Arc<AuthorizationState>>,
    Path(authorization_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AuthorizationResponse>, ApiError> {
    check_platform(&state.platform, &headers)?;
    let authorization_id = checked_authorization_id(&authorization_id)?;
    let request: ExtendRequest = parse_body(&body)?;
    let account_id = account_id(request.account_id)?;
    if request.sequence == 0 {
        return Err(
            ApiError::bad_request("invalid_field", "sequence starts at 1").on_field("sequence")
        );
    }
    let now = chrono::Utc::now();
    let answer = usage::holds::extend(
        &*state.store,
        &state.cards,
        &account_id,
        &authorization_id,
        request.sequence,
        now,
        state.max_call_seconds,
    )
    .await
    .map_err(hold_error)?;
    Ok(Json(AuthorizationResponse::held(&account_id, answer, now)))
}

#[utoipa::path(
    post, path = "/v1/authorizations/{authorization_id}/release",
    summary = "Give a hold back unused: the call never connected, the message or number was not bought (the telephony platform)",
    security(("platformToken" = [])),
    params(("authorization_id" = String, Path, description = "The authorization id")),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "The hold after it", body = AuthorizationResponse),
        (status = 400, description = "Bad request: the message says what is wrong", body = ApiError),
        (status = 401, description = "Not the platform's token", body = ApiError),
        (status = 404, description = "No such account or hold", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn release_handler(
    State(state): State<Arc<AuthorizationState>>,
    Path(authorization_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<AuthorizationResponse>, ApiError> {
    check_platform(&state.platform, &headers)?;
    let authorization_id = checked_authorization_id(&authorization_id)?;
    let request: ReleaseRequest = parse_body(&body)?;
    let account_id = account_id(request.account_id)?;
    let now = chrono::Utc::now();
    let answer = usage::holds::release(&*state.store, &account_id, &authorization_id, now)
        .await
        .map_err(hold_error)?;
    Ok(Json(AuthorizationResponse::held(&account_id, answer, now)))
}
