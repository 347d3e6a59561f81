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

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything of its account.
    Viewer,
    /// Also pays and changes settings.
    Admin,
    /// Staff: the operator routes, on any account.
    Operator,
}

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

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub account: Option<AccountId>,
    pub role: Role,
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
        Ok(Identity { user: claims.sub.clone(), account, role: claims.role })
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

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Identity>().cloned().ok_or_else(unauthorized)
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
