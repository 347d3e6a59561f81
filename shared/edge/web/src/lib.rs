//! The billing settings page (issue 14): "Settings → Billing" for a customer, served as plain
//! server-rendered HTML (no script needed), reached through a one-time portal link
//! (`api::portal`).
//!
//! Every read and every change goes through the account API's own routes
//! (`api::app::routes`), called in process with the session's identity: the page has no rules
//! of its own, so it validates, charges, audits and refuses exactly as the JSON API does, and
//! shows the API's messages next to the field they name.
//!
//! Security: the session is a signed token in a `Secure; HttpOnly; SameSite=Strict` cookie
//! scoped to `/billing`, for one account and role; every form carries the session's CSRF token
//! and is refused without it; a viewer's page has no forms and its posts are refused; pages
//! are sent `no-store` with a strict content security policy.

mod page;

use std::collections::HashMap;
use std::sync::Arc;

use api::portal::{PortalRefusal, PortalSession};
use api::state::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::Utc;
use serde_json::Value;
use tower::ServiceExt;

pub use page::{escape, Flash};

/// The page's routes as API Gateway deploys them (the web function's, without an authorizer).
pub const ROUTES: &[(&str, &str)] =
    &[("GET", "/billing"), ("GET", "/billing/{proxy+}"), ("POST", "/billing/{proxy+}")];

/// The session cookie's name.
pub const COOKIE: &str = "rl_portal";

#[derive(Clone)]
struct Web {
    state: Arc<AppState>,
    api: Router,
}

/// The page's routes: `/billing` and what it links to.
pub fn router(state: Arc<AppState>) -> Router {
    let web = Web { api: api::app::routes(state.clone()), state };
    Router::new()
        .route("/billing", get(show))
        .route("/billing/session/{token}", get(open_link))
        .route("/billing/receipts/{payment_id}", get(receipt))
        .route("/billing/activity.csv", get(activity_csv))
        .route("/billing/actions/{action}", post(act))
        .route("/billing/static/card.js", get(card_script))
        .with_state(web)
}

/// The answer of one of the API's routes, called in process.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub json: Value,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's message for a refusal, and the field it names.
    pub fn message(&self) -> (String, Option<String>) {
        let message = self.json["message"].as_str().unwrap_or("something went wrong").to_string();
        (message, self.json["field"].as_str().map(str::to_string))
    }
}

impl Web {
    pub(crate) async fn call(
        &self,
        session: &PortalSession,
        method: Method,
        uri: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).expect("a request");
        request.extensions_mut().insert(session.identity());
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, json, bytes }
    }

    async fn get(&self, session: &PortalSession, uri: &str) -> Answer {
        self.call(session, Method::GET, uri, None, None).await
    }
}

/// An HTML answer, never cached, framed by nobody. It runs no script, unless the processor's
/// hosted card fields are configured: then their script and the page's own `card.js` only.
fn html_for(
    portal: Option<&api::portal::PortalKeys>,
    status: StatusCode,
    body: String,
) -> Response {
    let policy = match portal.and_then(|p| p.card_form.as_ref()) {
        Some(form) => {
            let origin = origin_of(&form.script_url);
            format!(
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
                 script-src 'self' {origin}; frame-src {origin}; connect-src 'self' {origin}; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            )
        }
        None => "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
                 form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            .to_string(),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::X_FRAME_OPTIONS, "DENY".to_string()),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    html_for(None, status, body)
}

/// `https://js.stripe.com/v3/` → `https://js.stripe.com`; a path on this server → `'self'`.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            format!("{scheme}://{}", rest.split('/').next().unwrap_or_default())
        }
        None => "'self'".into(),
    }
}

/// The hosted card fields' glue: mount the processor's card field, and on submit exchange it
/// for a payment-method token (the only thing our server receives).
const CARD_JS: &str = r##"(function () {
  var form = document.querySelector("form[data-card-form]");
  if (!form || typeof window.Stripe !== "function") { return; }
  var stripe = window.Stripe(form.getAttribute("data-key"));
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  var token = form.querySelector("input[name=token]");
  var error = document.getElementById("card-error");
  var busy = false;
  form.addEventListener("submit", function (event) {
    if (token.value) { return; }
    event.preventDefault();
    if (busy) { return; }
    busy = true;
    stripe.createPaymentMethod({ type: "card", card: card }).then(function (result) {
      busy = false;
      if (result.error) { error.textContent = result.error.message; return; }
      token.value = result.paymentMethod.id;
      form.submit();
    });
  });
})();
"##;

async fn card_script() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CARD_JS,
    )
        .into_response()
}

fn refusal_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, page::message_page(title, message))
}

/// Equal, compared in time that does not depend on where they differ.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given.bytes().zip(expected.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

/// The session the request's cookie carries, or the page saying it has ended.
fn session_of(web: &Web, headers: &HeaderMap) -> Result<PortalSession, Box<Response>> {
    let Some(keys) = web.state.portal.as_ref() else {
        return Err(Box::new(refusal_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Billing is not available",
            "The billing page is not configured on this server.",
        )));
    };
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string());
    let ended = || {
        Box::new(refusal_page(
            StatusCode::UNAUTHORIZED,
            "Your billing session has ended",
            "Open Billing again from your account to continue.",
        ))
    };
    let token = token.ok_or_else(ended)?;
    keys.session(&token, Utc::now()).map_err(|_| ended())
}

async fn open_link(State(web): State<Web>, Path(token): Path<String>) -> Response {
    let Some(keys) = web.state.portal.clone() else {
        return refusal_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Billing is not available",
            "The billing page is not configured on this server.",
        );
    };
    match keys.open_link(web.state.docs(), &token, Utc::now()).await {
        Ok(Ok((cookie, session))) => {
            let max_age = (session.expires_at - Utc::now()).num_seconds().max(0);
            let cookie = format!(
                "{COOKIE}={cookie}; Path=/billing; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
            );
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, "/billing".to_string()),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
            )
                .into_response()
        }
        Ok(Err(refusal)) => {
            let (status, message) = match refusal {
                PortalRefusal::Used => (
                    StatusCode::GONE,
                    "This link was already used. Open Billing again from your account for a new one.",
                ),
                PortalRefusal::Expired => (
                    StatusCode::GONE,
                    "This link has expired. Open Billing again from your account for a new one.",
                ),
                PortalRefusal::Invalid => (StatusCode::FORBIDDEN, "This link is not valid."),
            };
            refusal_page(status, "This billing link cannot be opened", message)
        }
        Err(error) => {
            tracing::warn!(%error, "portal link not recorded");
            refusal_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Billing is busy",
                "Please try the link again in a moment.",
            )
        }
    }
}

async fn show(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let session = match session_of(&web, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let body = page::render(&web, &session, &query, None).await;
    html_for(web.state.portal.as_deref(), StatusCode::OK, body)
}

async fn receipt(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(payment_id): Path<String>,
) -> Response {
    let session = match session_of(&web, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    // The account's own payments only: another account's id is not found.
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let uri = match &cursor {
            Some(c) => format!("/v1/payments?limit=100&cursor={c}"),
            None => "/v1/payments?limit=100".into(),
        };
        let answer = web.get(&session, &uri).await;
        if let Some(payment) = answer.json["payments"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["payment_id"] == payment_id.as_str()))
        {
            return html(StatusCode::OK, page::receipt_page(&session, payment));
        }
        match answer.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    refusal_page(StatusCode::NOT_FOUND, "No such payment", "This account has no such payment.")
}

async fn activity_csv(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let session = match session_of(&web, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let uri = format!("/v1/activity.csv{}", page::activity_query(&query, false));
    let answer = web.get(&session, &uri).await;
    if !answer.ok() {
        let (message, _) = answer.message();
        return refusal_page(answer.status, "The export failed", &message);
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"activity-{}.csv\"", session.account),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        answer.bytes,
    )
        .into_response()
}

async fn act(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match session_of(&web, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    if !same_secret(form.get("csrf").map(String::as_str).unwrap_or(""), &session.csrf) {
        return refusal_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Reload the billing page and try again.",
        );
    }
    if session.role != api::portal::PortalRole::Admin {
        return refusal_page(
            StatusCode::FORBIDDEN,
            "View only",
            "You can see this account's billing but not change it.",
        );
    }
    let flash = page::perform(&web, &session, &action, &form).await;
    let status = flash.status;
    let body = page::render(&web, &session, &HashMap::new(), Some(flash)).await;
    html_for(web.state.portal.as_deref(), status, body)
}
