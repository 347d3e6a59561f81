//! Portal sessions through the API (issue 14), in process, over HTTP and as API Gateway
//! events: an operator gets a one-time link to an account's billing page; anyone else, an
//! unknown account or bad input gets a 4xx that says what is wrong.

mod common;

use axum::http::StatusCode;
use common::{Mode, TestApp};
use conformance::open;

async fn an_operator_gets_a_one_time_link_and_nobody_else_does(app: TestApp) {
    open(&*app.store, "acme", None).await;
    let operator = app.operator();
    let path = "/v1/operator/portal-sessions";
    let body = r#"{"account_id": "acme", "user": "ann@acme.example", "role": "admin"}"#;
    let created = app.send("POST", path, &operator, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let url = created.json["url"].as_str().unwrap();
    assert!(url.starts_with("http://billing.test/billing/session/"), "{url}");
    assert_eq!(created.json["session_minutes"], 60);
    // The link's token is one the page accepts, for that account and role.
    let keys = api::portal::PortalKeys::new(b"api-tests-portal-secret-0123456789".to_vec(), "");
    let token = url.rsplit('/').next().unwrap();
    let (_, session) = keys
        .open_link(&*app.store, token, chrono::Utc::now())
        .await
        .unwrap()
        .expect("the link opens");
    assert_eq!(session.account.as_str(), "acme");
    assert_eq!(session.role, api::portal::PortalRole::Admin);

    let refused = [
        (app.admin("acme"), body.to_string(), StatusCode::FORBIDDEN),
        (operator.clone(), body.replace("acme\"", "nobody\""), StatusCode::NOT_FOUND),
        (operator.clone(), body.replace("admin\"}", "owner\"}"), StatusCode::BAD_REQUEST),
        (operator.clone(), body.replace("ann@acme.example", " "), StatusCode::BAD_REQUEST),
        (operator.clone(), body.replace("\"role\"", "\"rank\""), StatusCode::BAD_REQUEST),
        (operator.clone(), body.replace("acme\"", "bad id!\""), StatusCode::BAD_REQUEST),
    ];
    for (token, body, status) in refused {
        let reply = app.send("POST", path, &token, &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert!(reply.json["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", reply.text);
    }
}

common::in_every_mode!(an_operator_gets_a_one_time_link_and_nobody_else_does);
