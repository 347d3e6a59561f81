//! The demo's client of the in-process HTTP API: typed request bodies (serialized as a client
//! would send them) and the parts of the answers the story reads.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use documents::payment::PaymentRecord;
use documents::profile::CardRole;
use ledger::{Amount, RechargeMode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

pub type DemoError = Box<dyn std::error::Error>;

/// `POST /v1/operator/accounts`.
#[derive(Serialize)]
pub struct CreateAccount<'a> {
    pub account_id: &'a str,
}

/// `POST /v1/terms`.
#[derive(Serialize)]
pub struct AcceptTerms<'a> {
    pub version: &'a str,
}

/// `PUT /v1/settings/contacts`.
#[derive(Serialize)]
pub struct Contacts {
    pub billing_emails: Vec<String>,
    pub recharge_failure_email: String,
    pub critical_phone: String,
}

/// `POST /v1/cards`.
#[derive(Serialize)]
pub struct AddCard<'a> {
    pub payment_method_token: &'a str,
    pub card_manager_email: &'a str,
    pub role: CardRole,
}

/// `PUT /v1/settings/low-balance`.
#[derive(Serialize)]
pub struct LowBalance {
    pub level_usd: Amount,
}

/// `PUT /v1/settings/auto-recharge`.
#[derive(Serialize)]
pub struct AutoRecharge {
    pub enabled: bool,
    pub amount_usd: Amount,
    pub threshold_usd: Amount,
    pub mode: RechargeMode,
}

/// `POST /v1/payments` (Pay Now).
#[derive(Serialize)]
pub struct PayNow {
    pub amount_usd: Amount,
}

/// The answer of `POST /v1/cards`.
#[derive(Deserialize)]
pub struct CardAdded {
    pub card: Card,
}

#[derive(Deserialize)]
pub struct Card {
    pub brand: String,
    pub last4: String,
}

/// The answer of `POST /v1/payments`.
#[derive(Deserialize)]
pub struct PaymentAnswer {
    pub payment: PaymentRecord,
}

/// One page of `GET /v1/payments`.
#[derive(Deserialize)]
pub struct PaymentsPage {
    pub payments: Vec<PaymentRecord>,
    pub next_cursor: Option<String>,
}

/// The parts of `GET /v1/overview` the summary prints.
#[derive(Deserialize)]
pub struct Overview {
    pub balance_usd: String,
    pub balance_display: String,
    pub status: String,
}

/// An answer: its status and its body (JSON, or nothing).
pub struct Answer {
    pub status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    /// The body as `T`, or an error that names the route and shows the body.
    pub fn json<T: DeserializeOwned>(&self, route: &str) -> Result<T, DemoError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            format!("{route} answered {}: {error}: {}", self.status, self.text()).into()
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The in-process API, called as a client would call it (via `tower::ServiceExt::oneshot`).
pub struct Api {
    pub app: axum::Router,
}

impl Api {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&impl Serialize>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, DemoError> {
        self.call_on(None, method, path, token, body, idempotency_key).await
    }

    /// A call that names the account to act on (an agency user on one of its clients).
    pub async fn call_on(
        &self,
        named: Option<&str>,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&impl Serialize>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, DemoError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if let Some(account) = named {
            request = request.header(api::auth::ACCOUNT_HEADER, account);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let body = match body {
            Some(body) => Body::from(serde_json::to_vec(body)?),
            None => Body::empty(),
        };
        let response = self.app.clone().oneshot(request.body(body)?).await?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?.to_vec();
        Ok(Answer { status, body })
    }

    /// A `GET` whose answer must be `200 OK`, as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, token: &str) -> Result<T, DemoError> {
        let answer = self.call(Method::GET, path, token, None::<&()>, None).await?;
        if answer.status != StatusCode::OK {
            return Err(format!("GET {path} answered {}: {}", answer.status, answer.text()).into());
        }
        answer.json(path)
    }

    /// Call, insist on the expected status, and print one line of the story.
    pub async fn step(
        &self,
        (method, path): (Method, &str),
        token: &str,
        body: &impl Serialize,
        idempotency_key: Option<&str>,
        expected: StatusCode,
        what: impl FnOnce(&Answer) -> Result<String, DemoError>,
    ) -> Result<Answer, DemoError> {
        self.step_on(None, (method, path), token, body, idempotency_key, expected, what).await
    }

    /// [`Api::step`] on the account `named` (`Ringledger-Account`).
    #[allow(clippy::too_many_arguments)]
    pub async fn step_on(
        &self,
        named: Option<&str>,
        (method, path): (Method, &str),
        token: &str,
        body: &impl Serialize,
        idempotency_key: Option<&str>,
        expected: StatusCode,
        what: impl FnOnce(&Answer) -> Result<String, DemoError>,
    ) -> Result<Answer, DemoError> {
        let answer =
            self.call_on(named, method.clone(), path, token, Some(body), idempotency_key).await?;
        if answer.status != expected {
            return Err(
                format!("{method} {path} answered {}: {}", answer.status, answer.text()).into()
            );
        }
        say(method.as_str(), path, answer.status, &what(&answer)?);
        Ok(answer)
    }
}

/// One line of the story: the call and what it did.
pub fn say(method: &str, path: &str, status: StatusCode, what: &str) {
    println!("  {method:<4} {path:<28} {:>3}  {what}", status.as_u16());
}
