//! API Gateway (HTTP API) with a JWT authorizer: the gateway validated the token (issuer,
//! audience, signature, expiry); the Lambda reads its claims from the request context.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;

use crate::auth::{unauthorized, Claims, Identity, Role};

fn role(value: &str) -> Option<Role> {
    match value {
        "viewer" => Some(Role::Viewer),
        "admin" => Some(Role::Admin),
        "operator" => Some(Role::Operator),
        "agency_admin" => Some(Role::AgencyAdmin),
        "agency_viewer" => Some(Role::AgencyViewer),
        _ => None,
    }
}

/// The identity API Gateway's authorizer vouched for, or `None`.
pub fn identity(request: &Request) -> Option<Identity> {
    let Some(RequestContext::ApiGatewayV2(context)) = request.extensions().get::<RequestContext>()
    else {
        return None;
    };
    let claims = &context.authorizer.as_ref()?.jwt.as_ref()?.claims;
    let claims = Claims {
        sub: claims.get("sub")?.clone(),
        account_id: claims.get("account_id").cloned(),
        role: role(claims.get("role")?)?,
        exp: 0,
        iss: None,
        aud: None,
    };
    Identity::from_claims(&claims).ok()
}

/// Middleware: put the authorizer's [`Identity`] in the request, or answer 401.
pub async fn identity_from_authorizer(mut request: Request, next: Next) -> Response {
    match identity(&request) {
        Some(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        None => unauthorized().into_response(),
    }
}
