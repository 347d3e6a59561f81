//! The authorization route, in process, over the memory store, on the standard rate card:
//! outbound 0.014/min (UK `44` 0.04), 60/6 increments, 0.0025 surcharge per call,
//! SMS 0.0079/segment + 0.003, local number 1.15.

use std::sync::Arc;

use api::authorization::{router, AuthorizationState, PlatformAuth};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use conformance::{at, credit, open, usage as usage_posting};
use http_body_util::BodyExt;
use ledger::memory::MemoryStore;
use ledger::{AccountId, LedgerStore, NewAccount};
use serde_json::{json, Value};
use tower::ServiceExt;
use usage::worker::RateCards;

const TOKEN: &str = "platform-test-token";

async fn app_with(store: Arc<dyn LedgerStore>) -> axum::Router {
    router(Arc::new(AuthorizationState {
        store,
        cards: RateCards::standard_only(),
        platform: PlatformAuth::Token(TOKEN.into()),
        max_call_seconds: 14_400,
    }))
}

async fn funded(name: &str, balance: &str) -> (Arc<dyn LedgerStore>, AccountId) {
    let store: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new());
    let id = open(&*store, name, None).await;
    store.post(&id, vec![credit("pay", balance)], at(1)).await.unwrap();
    (store, id)
}

async fn call(app: axum::Router, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut request =
        Request::post("/v1/authorizations").header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app.oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn ask(app: axum::Router, body: Value) -> (StatusCode, Value) {
    call(app, Some(TOKEN), &body.to_string()).await
}

#[tokio::test]
async fn an_unknown_query_parameter_is_refused_with_its_name() {
    let (store, _) = funded("acme", "1").await;
    let body =
        json!({"account_id": "acme", "action": "sms", "direction": "outbound", "segments": 1});
    let request = Request::post("/v1/authorizations?dry_run=true")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app_with(store.clone()).await.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["field"], "dry_run", "{error}");
    assert!(error["message"].as_str().unwrap().contains("takes none"), "{error}");
    let (status, _) = ask(app_with(store).await, body).await;
    assert_eq!(status, StatusCode::OK, "without it the same request is answered");
}

#[tokio::test]
async fn a_call_is_allowed_for_the_longest_duration_the_balance_covers() {
    let (store, _) = funded("acme", "1").await;
    // budget 1 - 0.0025 = 0.9975 buys 0.9975 x 60 / 0.014 = 4275 s; billed durations are
    // 60 + 6k, so the longest is 60 + 702 x 6 = 4272 s (cost 0.9968 + 0.0025 = 0.9993).
    let (status, body) = ask(
        app_with(store.clone()).await,
        json!({"account_id": "acme", "action": "call", "direction": "outbound", "to": "+14155550123"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"account_id": "acme", "allowed": true, "max_duration_seconds": 4272}));

    // UK at 0.04: 0.9975 x 60 / 0.04 = 1496.25 -> 1496 s -> 60 + 239 x 6 = 1494 s.
    let (_, body) = ask(
        app_with(store).await,
        json!({"account_id": "acme", "action": "call", "direction": "outbound", "to": "+447700900123"}),
    )
    .await;
    assert_eq!(body["max_duration_seconds"], 1494);
}

#[tokio::test]
async fn long_calls_are_capped_and_tiny_balances_are_refused() {
    let (store, _) = funded("rich", "1000").await;
    let (_, body) = ask(
        app_with(store).await,
        json!({"account_id": "rich", "action": "call", "direction": "inbound", "to": "+14155550123"}),
    )
    .await;
    assert_eq!(body["max_duration_seconds"], 14_400);

    // 0.01 - 0.0025 = 0.0075 buys 32 s, less than the first 60 s increment.
    let (store, _) = funded("poor", "0.01").await;
    let (status, body) = ask(
        app_with(store).await,
        json!({"account_id": "poor", "action": "call", "direction": "outbound", "to": "+14155550123"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["allowed"], false);
    assert_eq!(body["reason"], "insufficient_balance");
    assert!(body.get("max_duration_seconds").is_none());
}

#[tokio::test]
async fn sms_and_number_purchases_need_their_cost_above_the_floor() {
    let (store, _) = funded("texter", "0.0188").await;
    let sms =
        json!({"account_id": "texter", "action": "sms", "direction": "outbound", "segments": 2});
    let (_, body) = ask(app_with(store.clone()).await, sms.clone()).await;
    assert_eq!(body["allowed"], true, "2 x 0.0079 + 0.003 = 0.0188 fits exactly");
    let three =
        json!({"account_id": "texter", "action": "sms", "direction": "outbound", "segments": 3});
    let (_, body) = ask(app_with(store).await, three).await;
    assert_eq!(body["reason"], "insufficient_balance");

    let (store, _) = funded("buyer", "1.15").await;
    let number =
        json!({"account_id": "buyer", "action": "number_purchase", "number_type": "local"});
    let (_, body) = ask(app_with(store.clone()).await, number).await;
    assert_eq!(body["allowed"], true, "landing exactly on the floor is allowed");
    let toll_free =
        json!({"account_id": "buyer", "action": "number_purchase", "number_type": "toll_free"});
    let (_, body) = ask(app_with(store).await, toll_free).await;
    assert_eq!(body["reason"], "insufficient_balance");
}

#[tokio::test]
async fn suspended_accounts_and_accounts_without_terms_are_refused() {
    let (store, id) = funded("broke", "1").await;
    store.post(&id, vec![usage_posting("c", "1")], at(2)).await.unwrap();
    let sms =
        json!({"account_id": "broke", "action": "sms", "direction": "outbound", "segments": 1});
    let (_, body) = ask(app_with(store.clone()).await, sms).await;
    assert_eq!(body["reason"], "suspended");
    assert!(body["message"].as_str().unwrap().contains("suspended"));

    // A postpaid account at its credit limit is suspended too.
    let postpaid = open(&*store, "postpaid", Some("50")).await;
    store.post(&postpaid, vec![usage_posting("big", "50")], at(3)).await.unwrap();
    let call = json!({"account_id": "postpaid", "action": "call", "direction": "outbound", "to": "+14155550123"});
    let (_, body) = ask(app_with(store.clone()).await, call).await;
    assert_eq!(body["reason"], "suspended");

    let fresh = AccountId::parse("fresh").unwrap();
    store.create_account(NewAccount { id: fresh, credit_limit_usd: None }, at(0)).await.unwrap();
    let sms =
        json!({"account_id": "fresh", "action": "sms", "direction": "outbound", "segments": 1});
    let (_, body) = ask(app_with(store).await, sms).await;
    assert_eq!(body["reason"], "terms_not_accepted");
}

#[tokio::test]
async fn only_the_platform_may_ask() {
    let (store, _) = funded("acme", "5").await;
    let body =
        json!({"account_id": "acme", "action": "sms", "direction": "outbound", "segments": 1});
    let (status, error) = call(app_with(store.clone()).await, None, &body.to_string()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["code"], "unauthorized");
    let (status, _) =
        call(app_with(store).await, Some("platform-test-tokeN"), &body.to_string()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_and_unknown_accounts_a_404() {
    let (store, _) = funded("acme", "5").await;
    let cases = [
        ("{not json", StatusCode::BAD_REQUEST, "invalid_json", None),
        ("[]", StatusCode::BAD_REQUEST, "invalid_json", None),
        (
            r#"{"action": "sms", "direction": "outbound", "segments": 1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("account_id"),
        ),
        (
            r#"{"account_id": "a b", "action": "sms", "direction": "outbound", "segments": 1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("account_id"),
        ),
        (
            r#"{"account_id": "acme", "action": "fax"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            None,
        ),
        (
            r#"{"account_id": "acme", "action": "sms", "direction": "outbound", "segments": -1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            None,
        ),
        (
            r#"{"account_id": "acme", "action": "sms", "direction": "outbound", "segments": 0}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("segments"),
        ),
        (
            r#"{"account_id": "acme", "action": "sms", "direction": "outbound", "segments": 1, "extra": true}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            None,
        ),
        (
            r#"{"account_id": "acme", "action": "call", "direction": "outbound", "to": "not-a-number"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("to"),
        ),
        (
            r#"{"account_id": "ghost", "action": "sms", "direction": "outbound", "segments": 1}"#,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, error) = call(app_with(store.clone()).await, Some(TOKEN), body).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(error["code"], code, "{body}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        if let Some(field) = field {
            assert_eq!(error["field"], field, "{body}");
        }
    }
    let huge = format!(r#"{{"account_id": "acme", "pad": "{}"}}"#, "x".repeat(10_000));
    let (status, _) = call(app_with(store).await, Some(TOKEN), &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_answers_over_real_http_too() {
    let (store, _) = funded("acme", "1").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/authorizations", listener.local_addr().unwrap());
    let app = app_with(store).await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let body = json!({"account_id": "acme", "action": "call", "direction": "outbound", "to": "+14155550123"});
    let reply = client.post(&url).bearer_auth(TOKEN).body(body.to_string()).send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let answer: Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
    assert_eq!(answer["max_duration_seconds"], 4272);
    let anonymous = client.post(&url).body(body.to_string()).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

#[tokio::test]
async fn behind_api_gateway_iam_the_route_trusts_the_gateway() {
    let (store, _) = funded("acme", "1").await;
    let app = router(Arc::new(AuthorizationState {
        store,
        cards: RateCards::standard_only(),
        platform: PlatformAuth::Iam,
        max_call_seconds: 14_400,
    }));
    let event = json!({
        "version": "2.0", "routeKey": "POST /v1/authorizations", "rawPath": "/v1/authorizations",
        "rawQueryString": "", "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "r1ng1edgr", "domainName": "api.example.com",
            "domainPrefix": "api", "requestId": "req-9", "routeKey": "POST /v1/authorizations",
            "stage": "$default", "time": "22/Nov/2026:04:00:00 +0000", "timeEpoch": 1795320000000u64,
            "authorizer": {"iam": {"accessKey": "AKIAEXAMPLE", "accountId": "210987654321",
                "callerId": "AROAEXAMPLE:telephony", "principalOrgId": null,
                "userArn": "arn:aws:sts::210987654321:assumed-role/telephony/worker", "userId": "AROAEXAMPLE:telephony"}},
            "http": {"method": "POST", "path": "/v1/authorizations", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.20", "userAgent": "telephony-platform"}
        },
        "body": "{\"account_id\": \"acme\", \"action\": \"sms\", \"direction\": \"outbound\", \"segments\": 1}",
        "isBase64Encoded": false
    });
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let request = request.map(|body| match body {
        lambda_http::Body::Text(text) => Body::from(text),
        lambda_http::Body::Binary(bytes) => Body::from(bytes),
        _ => Body::empty(),
    });
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["allowed"], true);
}

async fn post_to(app: axum::Router, path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn uk_call(authorization_id: &str) -> Value {
    json!({"account_id": "acme", "action": "call", "direction": "outbound",
           "to": "+447700900123", "authorization_id": authorization_id})
}

#[tokio::test]
async fn an_authorization_id_places_a_hold_that_later_answers_see_and_a_replay_does_not_repeat() {
    let (store, id) = funded("acme", "1").await;
    // UK at 0.04: a 300 s slice holds 0.2 + 0.0025.
    let (status, body) = ask(app_with(store.clone()).await, uk_call("call-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["allowed"], true);
    assert_eq!(body["max_duration_seconds"], 300);
    assert_eq!(body["hold"]["amount_usd"], "0.2025");
    assert_eq!(body["hold"]["state"], "active");
    assert_eq!(body["available_usd"], "0.7975");

    let (_, replay) = ask(app_with(store.clone()).await, uk_call("call-1")).await;
    assert_eq!(replay["replayed"], true);
    assert_eq!(replay["available_usd"], "0.7975", "nothing reserved twice");

    // The advisory answer (no id) now counts the hold: 0.7975 - 0.0025 buys 1192.5 s -> 1188.
    let (_, advisory) = ask(
        app_with(store.clone()).await,
        json!({"account_id": "acme", "action": "call", "direction": "outbound", "to": "+447700900123"}),
    )
    .await;
    assert_eq!(advisory["max_duration_seconds"], 1188);
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.holds.len(), 1);
    assert_eq!(account.balance_usd, rust_decimal::Decimal::ONE, "a hold debits nothing");
}

#[tokio::test]
async fn extend_and_release_apply_once_and_refuse_what_does_not_fit_with_the_reason() {
    let (store, _) = funded("acme", "0.5").await;
    let app = || app_with(store.clone());
    ask(app().await, uk_call("call-1")).await;
    let extend = |n: u32| json!({"account_id": "acme", "sequence": n});
    let path = "/v1/authorizations/call-1/extend";

    let (status, body) = post_to(app().await, path, extend(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["max_duration_seconds"], 600);
    assert_eq!(body["hold"]["amount_usd"], "0.4025");
    let (_, again) = post_to(app().await, path, extend(1)).await;
    assert_eq!(again["replayed"], true);
    let (status, gap) = post_to(app().await, path, extend(3)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{gap}");
    assert!(gap["message"].as_str().unwrap().contains("expects extension 2"), "{gap}");
    // 0.0975 is left: 144 s more (0.096), not a whole slice.
    let (_, part) = post_to(app().await, path, extend(2)).await;
    assert_eq!(part["max_duration_seconds"], 744, "{part}");
    // A second call finds nothing available because of the first call's hold.
    let (_, second) = ask(app().await, uk_call("call-2")).await;
    assert_eq!(second["allowed"], false);
    assert_eq!(second["reason"], "insufficient_available_balance");

    let release = "/v1/authorizations/call-1/release";
    let (status, released) = post_to(app().await, release, json!({"account_id": "acme"})).await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["hold"]["state"], "settled");
    assert_eq!(released["available_usd"], "0.5");
    let (_, twice) = post_to(app().await, release, json!({"account_id": "acme"})).await;
    assert_eq!(twice["replayed"], true);
    let (status, _) = post_to(app().await, path, extend(3)).await;
    assert_eq!(status, StatusCode::CONFLICT, "a settled hold cannot be extended");
}

#[tokio::test]
async fn bad_hold_requests_are_refused_with_the_field_and_change_nothing() {
    let (store, id) = funded("acme", "1").await;
    let app = || app_with(store.clone());
    let (status, body) = ask(app().await, uk_call("has space")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "authorization_id", "{body}");
    let (status, body) = post_to(
        app().await,
        "/v1/authorizations/none/extend",
        json!({"account_id": "acme", "sequence": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = post_to(
        app().await,
        "/v1/authorizations/none/extend",
        json!({"account_id": "acme", "sequence": 0}),
    )
    .await;
    assert_eq!((status, body["field"].clone()), (StatusCode::BAD_REQUEST, json!("sequence")));
    let (status, body) = post_to(
        app().await,
        "/v1/authorizations/none/release",
        json!({"account_id": "acme", "extra": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("extra"), "{body}");
    let (status, _) =
        post_to(app().await, "/v1/authorizations/none/release", json!({"account_id": "nobody"}))
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let account = store.account(&id).await.unwrap().unwrap();
    assert!(account.holds.is_empty(), "nothing was reserved");
}
