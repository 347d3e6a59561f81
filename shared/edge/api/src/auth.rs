//! Who is calling. Account routes take the account from the token, never from the path or body.
//!
//! In AWS, API Gateway's JWT authorizer validates the token and the Lambda reads its claims
//! from the request context; locally (and in tests) the runner validates an HS256 token itself.
//! Both end as an [`Identity`] in the request's extensions.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ledger::AccountId;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything of its account.
    Viewer,
    /// Also pays and changes settings.
    Admin,
    /// Staff: the operator routes, on any account.
    Operator,
    /// An agency's user who pays and changes settings: on the agency's own account, and on any
    /// of its client accounts named by the `Ringledger-Account` header.
    AgencyAdmin,
    /// An agency's user who reads: the agency's account and its clients'.
    AgencyViewer,
}

/// The header an agency user names one of the agency's client accounts with.
pub const ACCOUNT_HEADER: &str = "ringledger-account";

/// The claims ringledger reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The account the user belongs to (operators may have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    pub role: Role,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The authenticated caller. An agency user's `role` is `Admin` or `Viewer` on the account it
/// acts on (`account`: the agency's own, or a client's it named), and `agency` is its agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub account: Option<AccountId>,
    pub role: Role,
    pub agency: Option<AccountId>,
}

impl Identity {
    pub fn from_claims(claims: &Claims) -> Result<Self, ApiError> {
        let account = match &claims.account_id {
            Some(id) => Some(AccountId::parse(id.as_str()).map_err(|_| unauthorized())?),
            None => None,
        };
        if claims.sub.is_empty() || (claims.role != Role::Operator && account.is_none()) {
            return Err(unauthorized());
        }
        let (role, agency) = match claims.role {
            Role::AgencyAdmin => (Role::Admin, account.clone()),
            Role::AgencyViewer => (Role::Viewer, account.clone()),
            role => (role, None),
        };
        Ok(Identity { user: claims.sub.clone(), account, role, agency })
    }

    /// The agency of an agency user acting on the agency's own account (the roll-up of its
    /// clients); 403 for anyone else.
    pub fn agency_home(&self) -> Result<&AccountId, ApiError> {
        match (&self.agency, &self.account) {
            (Some(agency), Some(account)) if agency == account => Ok(agency),
            (Some(_), _) => {
                Err(forbidden("ask on the agency's own account (no Ringledger-Account)"))
            }
            _ => Err(forbidden("agency users only")),
        }
    }

    /// The caller's own account (any role but operator).
    pub fn account(&self) -> Result<&AccountId, ApiError> {
        match (&self.account, self.role) {
            (Some(account), Role::Viewer | Role::Admin) => Ok(account),
            _ => Err(forbidden("this route is for account users")),
        }
    }

    /// The caller's account, for a change: admins only.
    pub fn admin_account(&self) -> Result<&AccountId, ApiError> {
        let account = self.account()?;
        if self.role != Role::Admin {
            return Err(forbidden("viewers can read but not pay or change settings"));
        }
        Ok(account)
    }

    pub fn operator(&self) -> Result<(), ApiError> {
        if self.role == Role::Operator {
            Ok(())
        } else {
            Err(forbidden("operators only"))
        }
    }
}

pub fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
}

pub fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The identity the caller's layer put in the request, scoped to the client account an agency
/// user names with [`ACCOUNT_HEADER`] (checked against the client's profile: a client of
/// another agency, or no client at all, is a 404 — it does not exist for this caller).
impl FromRequestParts<Arc<AppState>> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let mut identity = parts.extensions.get::<Identity>().cloned().ok_or_else(unauthorized)?;
        let Some(named) = parts.headers.get(ACCOUNT_HEADER) else { return Ok(identity) };
        let Some(agency) = identity.agency.clone() else {
            return Err(forbidden("only agency users may name an account with Ringledger-Account"));
        };
        let client =
            named.to_str().ok().and_then(|v| AccountId::parse(v.trim()).ok()).ok_or_else(|| {
                ApiError::bad_request("invalid_field", "Ringledger-Account is not an account id")
                    .on_field(ACCOUNT_HEADER)
            })?;
        if client != agency {
            let (profile, _) = documents::profile::load(state.docs(), &client).await?;
            if profile.agency_id.as_ref() != Some(&agency) {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such client account of this agency",
                ));
            }
        }
        identity.account = Some(client);
        Ok(identity)
    }
}

/// The account whose billing (cards, payments, auto-recharge, how the plan is paid) the caller
/// may change: an admin's own account, unless it is a client account, whose billing only its
/// agency's users change.
pub async fn billing_admin(state: &AppState, identity: &Identity) -> Result<AccountId, ApiError> {
    let id = identity.admin_account()?.clone();
    let (profile, _) = documents::profile::load(state.docs(), &id).await?;
    match profile.agency_id {
        Some(agency) if identity.agency.as_ref() != Some(&agency) => Err(forbidden(
            "the billing of this account is managed by its agency: the agency's users pay and \
             change it",
        )),
        _ => Ok(id),
    }
}

/// HS256 tokens signed with a shared secret: the local runner and tests.
#[derive(Clone)]
pub struct LocalJwt {
    secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
}

impl LocalJwt {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        LocalJwt {
            secret: secret.into(),
            issuer: "ringledger-local".into(),
            audience: "ringledger".into(),
        }
    }

    pub fn issue(&self, user: &str, account: Option<&str>, role: Role, ttl_seconds: u64) -> String {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let claims = Claims {
            sub: user.into(),
            account_id: account.map(str::to_string),
            role,
            exp: now + ttl_seconds,
            iss: Some(self.issuer.clone()),
            aud: Some(self.audience.clone()),
        };
        self.sign(&claims)
    }

    pub fn sign(&self, claims: &Claims) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&self.secret))
            .expect("HS256 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Clocks differ a little; not a minute.
        validation.leeway = 5;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &validation)
            .map_err(|_| unauthorized())?;
        Identity::from_claims(&data.claims)
    }
}

/// Middleware: verify `Authorization: Bearer <jwt>` and put the [`Identity`] in the request.
pub async fn local_jwt_layer(
    axum::extract::State(jwt): axum::extract::State<LocalJwt>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.map(|t| jwt.verify(t)) {
        Some(Ok(identity)) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Some(Err(error)) => error.into_response(),
        None => unauthorized().into_response(),
    }
}
