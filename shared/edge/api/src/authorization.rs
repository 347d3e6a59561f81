//! `POST /v1/authorizations`: the telephony platform asks whether an account may place a call,
//! send an SMS or buy a number. Authorized as the platform (IAM on API Gateway in AWS, a bearer
//! token locally), never as an account user.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router};
use ledger::{AccountId, LedgerStore};
use serde::{Deserialize, Serialize};
use usage::authorize::{authorize, Action, Decision};
use usage::worker::RateCards;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::mirror_enum;

pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// The platform's route, `(METHOD, path)`, documented in the OpenAPI document beside the
/// account API's [`crate::app::ROUTES`].
pub const ROUTE: (&str, &str) = ("POST", "/v1/authorizations");

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
    Denial = usage::authorize::Denial { TermsNotAccepted, Suspended, InsufficientBalance }
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
        direction: Direction,
        /// E.164 number.
        #[schema(pattern = r"^\+?[0-9]{3,15}$")]
        to: String,
    },
    /// Send an SMS.
    Sms {
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "acme")]
        account_id: String,
        direction: Direction,
        #[schema(minimum = 1, maximum = 100)]
        segments: u32,
    },
    /// Buy a phone number.
    NumberPurchase {
        #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "acme")]
        account_id: String,
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
    /// Calls only: the longest duration the balance above the floor covers (capped at 4 h).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub max_duration_seconds: Option<u32>,
    /// Refused: why, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub message: Option<&'static str>,
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
        }
    }
}

/// The platform's route with its documentation.
pub fn api() -> OpenApiRouter<Arc<AuthorizationState>> {
    OpenApiRouter::default()
        .routes(routes!(authorize_handler))
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

fn parse(body: &[u8]) -> Result<(AccountId, Action), ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("invalid_json", "body must be a JSON object"))?;
    let account_id = match object.remove("account_id") {
        Some(serde_json::Value::String(id)) => AccountId::parse(id).map_err(|e| {
            ApiError::bad_request("invalid_field", e.to_string()).on_field("account_id")
        })?,
        _ => {
            return Err(ApiError::bad_request("invalid_field", "account_id (a string) is required")
                .on_field("account_id"))
        }
    };
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
    Ok((account_id, action))
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
    let (account_id, action) = parse(&body)?;
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
    let decision = authorize(&account, &card, &action, chrono::Utc::now(), state.max_call_seconds);
    Ok(Json(AuthorizationResponse::new(&account_id, decision)))
}
