//! The account API assembled: account, payment and operator routes behind an authentication
//! layer, plus `/openapi.json` and `/health` without one. Each route is registered from its
//! handler's `#[utoipa::path]` annotation, so the router and the OpenAPI document
//! ([`crate::openapi`]) are built from one source.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Query, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{local_jwt_layer, LocalJwt};
use crate::error::ApiError;
use crate::state::AppState;

/// The OpenAPI 3 document of every route, generated from the handlers' annotations and the
/// request and response types (see [`crate::openapi`]); served at `/openapi.json`.
pub fn openapi_json() -> &'static str {
    crate::openapi::document_json()
}

/// Every route of the account API, as `(METHOD, path)`, for what is deployed beside the code
/// (the SAM template's routes are held to it by a test): the OpenAPI document lists exactly
/// these (a test checks both directions and that each is really routed).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/terms"),
    ("GET", "/v1/overview"),
    ("GET", "/v1/settings"),
    ("PUT", "/v1/settings/auto-recharge"),
    ("PUT", "/v1/settings/low-balance"),
    ("PUT", "/v1/settings/contacts"),
    ("PUT", "/v1/settings/address"),
    ("PUT", "/v1/settings/statement-schedule"),
    ("GET", "/v1/settings/audit"),
    ("GET", "/v1/activity"),
    ("GET", "/v1/activity.csv"),
    ("GET", "/v1/statement"),
    ("GET", "/v1/statement.csv"),
    ("POST", "/v1/statements"),
    ("GET", "/v1/cards"),
    ("POST", "/v1/cards"),
    ("PUT", "/v1/cards/{card_id}/role"),
    ("DELETE", "/v1/cards/{card_id}"),
    ("POST", "/v1/payments"),
    ("GET", "/v1/payments"),
    ("POST", "/v1/operator/accounts"),
    ("GET", "/v1/operator/accounts/{account_id}"),
    ("PUT", "/v1/operator/accounts/{account_id}/rate-card"),
    ("PUT", "/v1/operator/accounts/{account_id}/credit-limit"),
    ("PUT", "/v1/operator/accounts/{account_id}/tax-exemption"),
    ("POST", "/v1/operator/accounts/{account_id}/adjustments"),
    ("POST", "/v1/operator/accounts/{account_id}/auto-recharge/rearm"),
    ("GET", "/v1/operator/auto-recharge/attention"),
];

/// The query parameters each route takes, as `(METHOD, path, names)`; every other route takes
/// none. The OpenAPI document lists exactly these (a test checks), and every router refuses any
/// other parameter with a 400 naming it ([`refuse_unknown_query`]), so a misspelt `form=` is
/// never silently ignored.
pub const QUERY_PARAMETERS: &[(&str, &str, &[&str])] = &[
    ("GET", "/v1/settings/audit", crate::account::PAGE_PARAMS),
    ("GET", "/v1/activity", crate::account::ACTIVITY_PARAMS),
    ("GET", "/v1/activity.csv", crate::account::ACTIVITY_PARAMS),
    ("GET", "/v1/statement", crate::statements::STATEMENT_PARAMS),
    ("GET", "/v1/statement.csv", crate::statements::STATEMENT_PARAMS),
    ("GET", "/v1/payments", crate::account::PAGE_PARAMS),
    ("GET", "/v1/operator/auto-recharge/attention", crate::operator::ATTENTION_PARAMS),
];

/// The query parameters `method path` takes (`path` as routed, with `{placeholders}`).
pub fn query_parameters(method: &str, path: &str) -> &'static [&'static str] {
    QUERY_PARAMETERS
        .iter()
        .find(|(m, p, _)| m.eq_ignore_ascii_case(method) && *p == path)
        .map_or(&[], |(_, _, names)| names)
}

/// A route layer: 400 for a query parameter the matched route does not take, before the
/// handler runs (handlers still check the values of the ones they take).
pub async fn refuse_unknown_query(request: Request, next: Next) -> Response {
    if let Some(path) = request.extensions().get::<MatchedPath>() {
        let allowed = query_parameters(request.method().as_str(), path.as_str());
        let parsed = Query::<HashMap<String, String>>::try_from_uri(request.uri());
        let checked = match parsed {
            Ok(Query(raw)) => crate::account::Params::new(raw, allowed).map(|_| ()),
            Err(_) => Err(ApiError::bad_request(
                "invalid_query",
                "the query string is not valid form encoding",
            )),
        };
        if let Err(error) = checked {
            return error.into_response();
        }
    }
    next.run(request).await
}

/// Routes that need an [`crate::auth::Identity`] in the request extensions (put there by the
/// caller's layer: the local JWT check, or API Gateway's claims in Lambda).
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(group(Group::Settings))
        .merge(group(Group::Activity))
        .merge(group(Group::Payments))
        .with_state(state)
}

/// The route groups, one Lambda function each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Terms, overview, settings, audit log, operator routes.
    Settings,
    /// Activity, its CSV export, statements.
    Activity,
    /// Cards, Pay Now, payment history.
    Payments,
}

pub fn group(group: Group) -> Router<Arc<AppState>> {
    group_api(group).into()
}

/// A group's routes with their documentation.
pub fn group_api(group: Group) -> OpenApiRouter<Arc<AppState>> {
    let routes = match group {
        Group::Settings => crate::account::settings_router().merge(crate::operator::router()),
        Group::Activity => crate::account::activity_router().merge(crate::statements::router()),
        Group::Payments => crate::payments::router(),
    };
    routes.route_layer(middleware::from_fn(refuse_unknown_query))
}

/// Terms, overview, settings, audit log, operator routes.
pub fn settings_group() -> Router<Arc<AppState>> {
    group(Group::Settings)
}

/// Activity, its CSV export, statements.
pub fn activity_group() -> Router<Arc<AppState>> {
    group(Group::Activity)
}

/// Cards, Pay Now, payment history.
pub fn payments_group() -> Router<Arc<AppState>> {
    group(Group::Payments)
}

/// A group's router for its Lambda: identity from API Gateway's JWT authorizer claims.
pub fn lambda_router(router: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    behind_api_gateway(router.with_state(state))
}

/// One group for its Lambda: identity from API Gateway's JWT authorizer claims.
pub fn lambda(group_name: Group, state: Arc<AppState>) -> Router {
    behind_api_gateway(group(group_name).with_state(state))
}

/// Every group behind API Gateway at once (tests of the Lambda path).
pub fn lambda_all(state: Arc<AppState>) -> Router {
    behind_api_gateway(routes(state))
}

fn behind_api_gateway(router: Router) -> Router {
    router.layer(middleware::from_fn(crate::apigw::identity_from_authorizer)).fallback(no_route)
}

/// The public part: the contract and a health check.
pub fn public() -> Router {
    Router::new()
        .route(
            "/openapi.json",
            get(|| async { ([("content-type", "application/json")], openapi_json()) }),
        )
        .route("/health", get(|| async { "ok" }))
}

async fn no_route() -> impl IntoResponse {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
}

/// The whole API for the local runner: JWT-checked routes, public routes, JSON 404s.
pub fn local(state: Arc<AppState>, jwt: LocalJwt) -> Router {
    let authenticated = routes(state).layer(middleware::from_fn_with_state(jwt, local_jwt_layer));
    Router::new().merge(authenticated).merge(public()).fallback(no_route)
}
