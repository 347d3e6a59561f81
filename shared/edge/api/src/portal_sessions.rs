//! `POST /v1/operator/portal-sessions`: an operator's one-time link to an account's billing
//! page for one of its users (the tokens: [`crate::portal`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::account_or_404;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::portal::{PortalRole, SESSION_MINUTES};
use crate::state::AppState;
use crate::{audit, body};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(create_portal_session))
}

/// Who the link is for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionBody {
    pub account_id: String,
    /// The platform's user (an email address or id), recorded with every change they make.
    #[schema(min_length = 1, max_length = 200)]
    pub user: String,
    /// `admin` pays and changes settings; `viewer` only sees.
    pub role: PortalRole,
}

/// A one-time link to the billing page.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalSessionCreated {
    /// Open it once, before `expires_at`: it sets the session cookie and shows the page.
    pub url: String,
    pub expires_at: DateTime<Utc>,
    /// How long the session it opens lasts.
    pub session_minutes: i64,
}

#[utoipa::path(
    post, path = "/v1/operator/portal-sessions",
    summary = "A one-time link to an account's billing page for one of its users (operator)",
    description = "The platform hands the link to its signed-in user (like a hosted billing portal). The link is valid for 10 minutes and opens once; opening it sets a secure, HttpOnly, SameSite=Strict session cookie scoped to the account and the role, for 60 minutes. A viewer sees the page but cannot change anything. Every form on the page is CSRF-protected.",
    request_body = PortalSessionBody,
    responses(
        (status = 201, description = "The link", body = PortalSessionCreated),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "The billing portal is not configured (no portal secret)", body = ApiError),
    )
)]
async fn create_portal_session(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<(StatusCode, Json<PortalSessionCreated>), ApiError> {
    identity.operator()?;
    let request: PortalSessionBody = body::json(&raw)?;
    let id = crate::operator::path_account(&request.account_id)
        .map_err(|error| error.on_field("account_id"))?;
    let user = request.user.trim();
    if user.is_empty() || user.chars().count() > 200 || user.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "user must be 1 to 200 printable characters",
        )
        .on_field("user"));
    }
    let Some(keys) = state.portal.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "portal_not_configured",
            "the billing portal is not configured: set RINGLEDGER_PORTAL_SECRET",
        ));
    };
    account_or_404(&state, &id).await?;
    let now = Utc::now();
    let (path, expires_at) = keys.link(&id, user, request.role, now);
    audit::record(
        state.docs(),
        &id,
        &identity.user,
        "portal_session",
        serde_json::Value::Null,
        serde_json::json!({ "user": user, "role": request.role, "expires_at": expires_at }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(PortalSessionCreated {
            url: format!("{}{path}", keys.base_url),
            expires_at,
            session_minutes: SESSION_MINUTES,
        }),
    ))
}
