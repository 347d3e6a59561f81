//! The account API assembled: account, payment and operator routes behind an authentication
//! layer, plus `/openapi.json` and `/health` without one. Each route is registered from its
//! handler's `#[utoipa::path]` annotation, so the router and the OpenAPI document
//! ([`crate::openapi`]) are built from one source.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{local_jwt_layer, LocalJwt};
use crate::error::ApiError;
use crate::state::AppState;

/// The OpenAPI 3 document of every route, generated from the handlers' annotations and the
/// request and response types (see [`crate::openapi`]); served at `/openapi.json`.
pub fn openapi_json() -> &'static str {
    document_json()
}

/// The document as served at `/openapi.json` (built once).
pub fn openapi_document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::LazyLock<utoipa::openapi::OpenApi> =
        std::sync::LazyLock::new(build_document);
    &DOCUMENT
}

/// The document as JSON, pretty-printed, exactly as `/openapi.json` serves it.
fn document_json() -> &'static str {
    static JSON: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut json =
            openapi_document().to_pretty_json().expect("the OpenAPI document serializes");
        json.push('\n');
        json
    });
    &JSON
}

fn build_document() -> utoipa::openapi::OpenApi {
    let mut doc = <crate::openapi::ApiDoc as utoipa::OpenApi>::openapi();
    for group in [Group::Settings, Group::Activity, Group::Payments] {
        doc.merge(group_api(group).into_openapi());
    }
    doc.merge(crate::authorization::api().into_openapi());
    doc.merge(crate::webhooks::api().into_openapi());
    // serde's `deny_unknown_fields` on an internally tagged enum holds for each variant; the
    // derive says so only for structs.
    crate::openapi::deny_unknown_variant_fields(&mut doc, "AuthorizationRequest");
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
        ]
        .into_iter()
        .flatten()
        {
            crate::openapi::add_common_responses(operation);
        }
    }
    doc
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
    ("POST", "/v1/bank-accounts"),
    ("POST", "/v1/bank-accounts/{card_id}/verify"),
    ("POST", "/v1/payments"),
    ("GET", "/v1/payments"),
    ("POST", "/v1/operator/accounts"),
    ("GET", "/v1/operator/accounts/{account_id}"),
    ("PUT", "/v1/operator/accounts/{account_id}/rate-card"),
    ("PUT", "/v1/operator/accounts/{account_id}/credit-limit"),
    ("PUT", "/v1/operator/accounts/{account_id}/tax-exemption"),
    ("PUT", "/v1/operator/accounts/{account_id}/recharge-caps"),
    ("PUT", "/v1/operator/accounts/{account_id}/plan"),
    ("DELETE", "/v1/operator/accounts/{account_id}/plan"),
    ("GET", "/v1/plan"),
    ("GET", "/v1/invoices"),
    ("GET", "/v1/invoices/{month}"),
    ("PUT", "/v1/operator/accounts/{account_id}/billing-mode"),
    ("POST", "/v1/operator/accounts/{account_id}/invoices"),
    ("POST", "/v1/operator/accounts/{account_id}/manual-payments"),
    ("POST", "/v1/operator/accounts/{account_id}/invoices/{month}/credit-notes"),
    ("POST", "/v1/operator/portal-sessions"),
    ("PUT", "/v1/plan/direct-charge"),
    ("PUT", "/v1/operator/agencies/{agency_id}/clients/{client_id}"),
    ("DELETE", "/v1/operator/agencies/{agency_id}/clients/{client_id}"),
    ("GET", "/v1/agency/clients"),
    ("PUT", "/v1/operator/accounts/{account_id}/service-policy"),
    ("POST", "/v1/operator/accounts/{account_id}/adjustments"),
    ("POST", "/v1/operator/accounts/{account_id}/credit-grants"),
    ("GET", "/v1/operator/accounts/{account_id}/credit-grants"),
    ("POST", "/v1/operator/accounts/{account_id}/credit-grants/{grant_id}/void"),
    ("POST", "/v1/operator/accounts/{account_id}/payments/{payment_id}/refunds"),
    ("POST", "/v1/operator/accounts/{account_id}/auto-recharge/rearm"),
    ("GET", "/v1/operator/auto-recharge/attention"),
];

pub use crate::query::{query_parameters, refuse_unknown_query, QUERY_PARAMETERS};

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
        Group::Settings => crate::account::settings_router()
            .merge(crate::operator::router())
            .merge(crate::grants::router())
            .merge(crate::plans::router())
            .merge(crate::invoices::router())
            .merge(crate::portal_sessions::router())
            .merge(crate::agency::router()),
        Group::Activity => crate::account::activity_router().merge(crate::statements::router()),
        Group::Payments => crate::payments::router().merge(crate::refunds::router()),
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
