//! Shared by the API tests: an in-process app over the memory store and the simulated
//! processor, and a small client.
#![allow(dead_code)]

use std::sync::Arc;

use api::auth::{LocalJwt, Role};
use api::state::AppState;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ledger::memory::MemoryStore;
use payments::SimulatedProcessor;
use serde_json::Value;
use tower::ServiceExt;
use usage::worker::RateCards;

pub struct TestApp {
    pub router: axum::Router,
    pub jwt: LocalJwt,
    pub store: Arc<MemoryStore>,
    pub processor: Arc<SimulatedProcessor>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl TestApp {
    pub fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let processor = Arc::new(SimulatedProcessor::new());
        let state = Arc::new(AppState {
            store: store.clone(),
            cards: RateCards::standard_only(),
            processor: processor.clone(),
        });
        let jwt = LocalJwt::new(b"test-secret".to_vec());
        TestApp { router: api::app::local(state, jwt.clone()), jwt, store, processor }
    }

    pub fn token(&self, account: Option<&str>, role: Role) -> String {
        self.jwt.issue("tester@example.com", account, role, 600)
    }

    pub fn admin(&self, account: &str) -> String {
        self.token(Some(account), Role::Admin)
    }

    pub fn viewer(&self, account: &str) -> String {
        self.token(Some(account), Role::Viewer)
    }

    pub fn operator(&self) -> String {
        self.token(None, Role::Operator)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let response = self.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, json }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), &[], None).await
    }

    pub async fn send(&self, method: &str, path: &str, token: &str, body: &str) -> Reply {
        self.call(method, path, Some(token), &[], Some(body)).await
    }

    pub async fn pay(&self, token: &str, key: &str, amount: &str) -> Reply {
        let body = format!(r#"{{"amount_usd": "{amount}"}}"#);
        self.call("POST", "/v1/payments", Some(token), &[("idempotency-key", key)], Some(&body))
            .await
    }

    /// Charge attempts the processor saw on the account's current cards.
    pub async fn charges(&self, token: &str) -> u64 {
        let cards = self.get("/v1/cards", token).await.json;
        cards["cards"]
            .as_array()
            .map(|cards| {
                cards
                    .iter()
                    .map(|c| self.processor.charge_attempts(c["id"].as_str().unwrap()))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// An account created by an operator, terms accepted, a primary card registered.
    pub async fn ready_account(&self, id: &str, card_token: &str) -> String {
        let operator = self.operator();
        let created = self
            .send(
                "POST",
                "/v1/operator/accounts",
                &operator,
                &format!(r#"{{"account_id": "{id}"}}"#),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let admin = self.admin(id);
        let terms = self.send("POST", "/v1/terms", &admin, r#"{"version": "2026-01"}"#).await;
        assert_eq!(terms.status, StatusCode::OK, "{}", terms.text);
        let card = self
            .send(
                "POST",
                "/v1/cards",
                &admin,
                &format!(
                    r#"{{"payment_method_token": "{card_token}", "card_manager_email": "cards@{id}.example", "role": "primary"}}"#
                ),
            )
            .await;
        assert_eq!(card.status, StatusCode::CREATED, "{}", card.text);
        admin
    }
}
