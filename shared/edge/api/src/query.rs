//! Query parameters: which ones each route takes, and the route layer that refuses the others.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Query, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

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
