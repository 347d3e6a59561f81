//! Recorded-shape API Gateway (HTTP API v2, JWT authorizer) events, parsed by `lambda_http`
//! exactly as in Lambda, through each group's Lambda router.

use std::sync::Arc;

use api::app::{lambda, Group};
use api::state::AppState;
use axum::body::Body;
use http_body_util::BodyExt;
use ledger::memory::MemoryStore;
use ledger::{AccountId, LedgerStore, NewAccount};
use serde_json::Value;
use tower::ServiceExt;

async fn invoke(group: Group, state: Arc<AppState>, event: &str) -> (u16, Value) {
    let request = lambda_http::request::from_str(event).expect("a valid API Gateway v2 event");
    let request = request.map(|body| match body {
        lambda_http::Body::Text(text) => Body::from(text),
        lambda_http::Body::Binary(bytes) => Body::from(bytes),
        _ => Body::empty(),
    });
    let response = lambda(group, state).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn state_with_acme() -> Arc<AppState> {
    let store = Arc::new(MemoryStore::new());
    let id = AccountId::parse("acme").unwrap();
    store
        .create_account(NewAccount { id, credit_limit_usd: None }, chrono::Utc::now())
        .await
        .unwrap();
    Arc::new(AppState {
        store,
        cards: usage::worker::RateCards::standard_only(),
        processor: Arc::new(payments::SimulatedProcessor::new()),
        notices: None,
        statements: None,
        portal: None,
    })
}

#[tokio::test]
async fn an_admin_event_reads_the_overview_of_the_account_in_its_claims() {
    let event = include_str!("../../../../tests/fixtures/apigw/get_overview_admin.json");
    let (status, body) = invoke(Group::Settings, state_with_acme().await, event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["account_id"], "acme");
    assert_eq!(body["status"], "suspended");
}

#[tokio::test]
async fn a_viewer_event_cannot_pay_and_nothing_is_charged() {
    let event = include_str!("../../../../tests/fixtures/apigw/post_payment_viewer.json");
    let (status, body) = invoke(Group::Payments, state_with_acme().await, event).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
}

#[tokio::test]
async fn an_event_without_authorizer_claims_is_unauthorized() {
    let event = include_str!("../../../../tests/fixtures/apigw/get_overview_no_authorizer.json");
    let (status, body) = invoke(Group::Settings, state_with_acme().await, event).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
}

#[tokio::test]
async fn a_route_of_another_group_is_not_served_by_this_function() {
    let event = include_str!("../../../../tests/fixtures/apigw/get_overview_admin.json");
    let (status, body) = invoke(Group::Activity, state_with_acme().await, event).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "no_route");
}
