//! Plans through the API (issue 15), in process, over HTTP and as API Gateway events: a new
//! plan's first period is charged at once, a change waits for the renewal, an end stops the
//! renewals, and bad input changes nothing.

mod common;

use axum::http::StatusCode;
use common::{Mode, TestApp};

const PLAN: &str = "/v1/operator/accounts/acme/plan";

async fn a_plan_is_charged_once_per_period_and_changes_wait_for_the_renewal(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let operator = app.operator();
    assert_eq!(app.get("/v1/plan", &admin).await.json, serde_json::Value::Null);
    let body = r#"{"name": "Pro", "price_usd": "29", "period": "monthly"}"#;
    let set = app.call("PUT", PLAN, Some(&operator), &[], Some(body)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(set.json["charged_now"], 1);
    assert_eq!(set.json["terms"]["price_usd"], "29");
    // Sent again: the same plan, nothing charged twice.
    let again = app.call("PUT", PLAN, Some(&operator), &[], Some(body)).await;
    assert_eq!(again.json["charged_now"], 0);
    assert_eq!(again.json["change"], serde_json::Value::Null);
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "-29", "{}", overview.text);
    assert_eq!(overview.json["status"], "suspended", "a fee suspends like any debit");
    // A change waits for the renewal.
    let team = r#"{"name": "Team", "price_usd": "99", "period": "annual"}"#;
    let changed = app.call("PUT", PLAN, Some(&operator), &[], Some(team)).await;
    assert_eq!(changed.json["terms"]["name"], "Pro");
    assert_eq!(changed.json["change"]["name"], "Team");
    assert_eq!(changed.json["charged_now"], 0);
    let shown = app.get("/v1/plan", &admin).await;
    assert_eq!(shown.json["change"]["price_usd"], "99");
    let activity = app.get("/v1/activity?show=debits", &admin).await;
    let fees: Vec<_> = activity.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["item"] == "plan_fee")
        .collect();
    assert_eq!(fees.len(), 1);
    assert!(fees[0]["source_id"].as_str().unwrap().starts_with("plan:"));
    let ended = app.call("DELETE", PLAN, Some(&operator), &[], None).await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text);
    assert_eq!(ended.json["cancel_at_renewal"], true);
    let audit = app.get("/v1/settings/audit", &admin).await;
    assert!(audit.text.contains("\"plan\""), "{}", audit.text);
}

async fn bad_plans_are_refused_and_change_nothing(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let operator = app.operator();
    for (body, field) in [
        (r#"{"name": " ", "price_usd": "29", "period": "monthly"}"#, "name"),
        (r#"{"name": "Pro", "price_usd": "29.001", "period": "monthly"}"#, "price_usd"),
        (
            r#"{"name": "Pro", "price_usd": "29", "period": "monthly", "starts_on": "2020-01-01"}"#,
            "starts_on",
        ),
    ] {
        let refused = app.call("PUT", PLAN, Some(&operator), &[], Some(body)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}: {}", refused.text);
        assert_eq!(refused.json["field"], field, "{}", refused.text);
    }
    let weekly = r#"{"name": "Pro", "price_usd": "29", "period": "weekly"}"#;
    assert!(app
        .call("PUT", PLAN, Some(&operator), &[], Some(weekly))
        .await
        .status
        .is_client_error());
    let mine = r#"{"name": "Free", "price_usd": "1", "period": "monthly"}"#;
    assert_eq!(
        app.call("PUT", PLAN, Some(&admin), &[], Some(mine)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call("DELETE", PLAN, Some(&operator), &[], None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/v1/plan", &admin).await.json, serde_json::Value::Null);
    assert_eq!(app.get("/v1/overview", &admin).await.json["balance_usd"], "0");
}

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

in_every_mode!(
    a_plan_is_charged_once_per_period_and_changes_wait_for_the_renewal,
    bad_plans_are_refused_and_change_nothing,
);
