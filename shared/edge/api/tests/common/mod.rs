//! Shared by the API tests: an in-process app over the memory store and the simulated
//! processor, and a small client.
#![allow(dead_code)]

pub mod contract;

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

/// How requests reach the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Router::oneshot`.
    InProcess,
    /// A real TCP server on loopback and an HTTP client.
    Http,
    /// API Gateway HTTP API v2 events (JWT authorizer claims in the request context) through
    /// `lambda_http`'s event parsing and the Lambda routers.
    ApiGateway,
}

/// Notices the API published (payment receipts).
#[derive(Default)]
pub struct RecordedNotices(pub std::sync::Mutex<Vec<notifications::notice::Notice>>);

#[async_trait::async_trait]
impl notifications::notice::NoticeSink for RecordedNotices {
    async fn publish(
        &self,
        notice: &notifications::notice::Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(notice.clone());
        Ok(())
    }
}

pub struct TestApp {
    pub notices: Arc<RecordedNotices>,
    /// Statement emails the API queued.
    pub statement_jobs: Arc<jobs::job::MemorySink>,
    pub mode: Mode,
    pub router: axum::Router,
    pub lambda_router: axum::Router,
    pub base_url: String,
    pub http: reqwest::Client,
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
    pub async fn new(mode: Mode) -> Self {
        let store = Arc::new(MemoryStore::new());
        let processor = Arc::new(SimulatedProcessor::new());
        let notices = Arc::new(RecordedNotices::default());
        let statement_jobs = Arc::new(jobs::job::MemorySink::default());
        let state = Arc::new(AppState {
            store: store.clone(),
            cards: RateCards::standard_only(),
            processor: processor.clone(),
            notices: Some(notices.clone()),
            statements: Some(statement_jobs.clone()),
            portal: Some(Arc::new(api::portal::PortalKeys::new(
                b"api-tests-portal-secret-0123456789".to_vec(),
                "http://billing.test",
            ))),
        });
        let jwt = LocalJwt::new(b"test-secret".to_vec());
        let router = api::app::local(state.clone(), jwt.clone());
        let lambda_router = api::app::lambda_all(state);
        let mut base_url = String::new();
        if mode == Mode::Http {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            base_url = format!("http://{}", listener.local_addr().unwrap());
            let served = router.clone();
            tokio::spawn(async move { axum::serve(listener, served).await });
        }
        TestApp {
            notices,
            statement_jobs,
            mode,
            router,
            lambda_router,
            base_url,
            http: reqwest::Client::new(),
            jwt,
            store,
            processor,
        }
    }

    /// The API Gateway v2 event a request becomes behind the JWT authorizer: a valid token's
    /// claims in `requestContext.authorizer.jwt.claims`, none for an invalid one.
    pub fn apigw_event(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Value {
        let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut header_map = serde_json::Map::new();
        header_map.insert("content-type".into(), "application/json".into());
        for (name, value) in headers {
            header_map.insert(name.to_lowercase(), Value::String(value.to_string()));
        }
        let authorizer = token.and_then(|t| self.jwt.verify(t).ok()).map(|identity| {
            let mut claims = serde_json::json!({
                "sub": identity.user,
                "role": match (identity.role, identity.agency.is_some()) {
                    (Role::Admin, true) => "agency_admin",
                    (Role::Viewer, true) => "agency_viewer",
                    (Role::Viewer, false) => "viewer",
                    (Role::Admin, false) => "admin",
                    _ => "operator",
                },
                "iss": "https://issuer.example", "aud": "ringledger",
            });
            if let Some(account) = identity.account {
                claims["account_id"] = Value::String(account.to_string());
            }
            serde_json::json!({ "jwt": { "claims": claims, "scopes": null } })
        });
        let mut context = serde_json::json!({
            "accountId": "123456789012", "apiId": "api1234", "domainName": "api.example.com",
            "domainPrefix": "api", "requestId": "req-1", "routeKey": "$default",
            "stage": "$default", "time": "22/Nov/2026:04:00:00 +0000", "timeEpoch": 1795320000000u64,
            "http": { "method": method, "path": raw_path, "protocol": "HTTP/1.1",
                      "sourceIp": "192.0.2.1", "userAgent": "ringledger-tests" },
        });
        if let Some(authorizer) = authorizer {
            context["authorizer"] = authorizer;
        }
        serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": raw_path,
            "rawQueryString": query, "headers": header_map, "requestContext": context,
            "body": body, "isBase64Encoded": false,
        })
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

    pub fn agency_admin(&self, agency: &str) -> String {
        self.token(Some(agency), Role::AgencyAdmin)
    }

    pub fn agency_viewer(&self, agency: &str) -> String {
        self.token(Some(agency), Role::AgencyViewer)
    }

    /// One request; the reply is held to the OpenAPI document (its status documented for the
    /// route, its body valid against the documented schema) before the test sees it.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        let reply = self.call_unchecked(method, path, token, headers, body).await;
        let document = DOCUMENT.get_or_init(contract::document);
        let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok());
        let status = reply.status.as_u16();
        if let Err(mismatch) =
            contract::check_reply(document, method, path, status, content_type, &reply.text)
        {
            panic!("the reply breaks the OpenAPI document ({:?}): {mismatch}", self.mode);
        }
        reply
    }

    /// One request, the reply as it came.
    pub async fn call_unchecked(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        if self.mode == Mode::Http {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = self.http.request(method, format!("{}{path}", self.base_url));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.body(body.to_string());
            }
            let response = request.send().await.unwrap();
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
            let mut header_map = axum::http::HeaderMap::new();
            for (name, value) in response.headers() {
                header_map.insert(
                    axum::http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
                    axum::http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                );
            }
            let text = response.text().await.unwrap();
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Reply { status, headers: header_map, text, json };
        }
        let (request, router) = if self.mode == Mode::ApiGateway {
            let event = self.apigw_event(method, path, token, headers, body).to_string();
            let request =
                lambda_http::request::from_str(&event).expect("a valid API Gateway event");
            let request = request.map(|body| match body {
                lambda_http::Body::Empty => Body::empty(),
                lambda_http::Body::Text(text) => Body::from(text),
                lambda_http::Body::Binary(bytes) => Body::from(bytes),
                _ => Body::empty(),
            });
            (request, self.lambda_router.clone())
        } else {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
            (request.body(body).unwrap(), self.router.clone())
        };
        let response = router.oneshot(request).await.unwrap();
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

/// One `#[tokio::test]` per named case and per mode (in process, over HTTP, as API Gateway
/// events); each case is an `async fn(TestApp)` of the calling test file.
#[allow(unused_macros)]
macro_rules! in_every_mode {
    ($($name:ident),+ $(,)?) => {
        mod in_process {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(TestApp::new(Mode::InProcess).await).await })+
        }
        mod over_http {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(TestApp::new(Mode::Http).await).await })+
        }
        mod through_api_gateway_events {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(TestApp::new(Mode::ApiGateway).await).await })+
        }
    };
}

#[allow(unused_imports)]
pub(crate) use in_every_mode;
