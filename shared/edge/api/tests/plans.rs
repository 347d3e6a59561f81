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

/// The payments worker's step for the period due today (its `PaymentPending` event).
async fn work_the_period(app: &TestApp, account: &str) -> payment_flow::Reconciled {
    let ports = payment_flow::PaymentPorts {
        store: &*app.store,
        processor: &*app.processor,
        notices: Some(&*app.notices),
    };
    let id = ledger::AccountId::parse(account).unwrap();
    let key = format!("plan:{}", chrono::Utc::now().date_naive());
    payment_flow::reconcile_pending_payment(&ports, &id, &key, chrono::Utc::now()).await.unwrap()
}

async fn a_plan_charged_to_the_card_leaves_the_balance_alone(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    assert_eq!(app.pay(&admin, "fund-1", "50").await.status, StatusCode::CREATED);
    let operator = app.operator();
    let body = r#"{"name": "Pro", "price_usd": "29", "period": "monthly", "direct_charge": true}"#;
    let set = app.call("PUT", PLAN, Some(&operator), &[], Some(body)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(set.json["charged_now"], 0, "not from the balance");
    assert_eq!(set.json["direct_charge"], true);
    assert_eq!(set.json["card_charge_pending"], true, "{}", set.text);
    assert_eq!(work_the_period(&app, "acme").await, payment_flow::Reconciled::Final);
    assert_eq!(work_the_period(&app, "acme").await, payment_flow::Reconciled::Final);
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "50", "{}", overview.text);
    assert_eq!(overview.json["status"], "active", "{}", overview.text);
    let shown = app.get("/v1/plan", &admin).await;
    assert_eq!(shown.json["card_charge_pending"], false, "{}", shown.text);
    assert!(
        shown.json["next_renewal"].as_str().unwrap() > set.json["next_renewal"].as_str().unwrap()
    );
    let payments = app.get("/v1/payments", &admin).await;
    let list = payments.json["payments"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", payments.text);
    assert_eq!((&list[0]["trigger"], &list[0]["status"]), (&"plan".into(), &"succeeded".into()));
    assert_eq!(app.charges(&admin).await, 2);
    let activity = app.get("/v1/activity", &admin).await;
    let items: Vec<_> =
        activity.json["entries"].as_array().unwrap().iter().map(|e| e["item"].clone()).collect();
    assert!(items.contains(&"plan_fee".into()) && items.contains(&"funds_added".into()));
    // The customer opts out; a viewer may not; bad bodies change nothing.
    let viewer = app.viewer("acme");
    let off = r#"{"enabled": false}"#;
    let refused = app.call("PUT", "/v1/plan/direct-charge", Some(&viewer), &[], Some(off)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    for bad in [r#"{"enabled": "no"}"#, r#"{"enabled": false, "x": 1}"#, "{}"] {
        let reply = app.call("PUT", "/v1/plan/direct-charge", Some(&admin), &[], Some(bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {}", reply.text);
    }
    assert_eq!(app.get("/v1/plan", &admin).await.json["direct_charge"], true);
    let saved = app.call("PUT", "/v1/plan/direct-charge", Some(&admin), &[], Some(off)).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.text);
    assert_eq!(saved.json["direct_charge"], false);
}

async fn direct_charge_needs_a_plan_and_a_card(app: TestApp) {
    let operator = app.operator();
    let created =
        app.send("POST", "/v1/operator/accounts", &operator, r#"{"account_id": "bare"}"#).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let admin = app.admin("bare");
    let on = r#"{"enabled": true}"#;
    let none = app.call("PUT", "/v1/plan/direct-charge", Some(&admin), &[], Some(on)).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.text);
    let later = (chrono::Utc::now().date_naive() + chrono::Duration::days(3)).to_string();
    let body = format!(
        r#"{{"name": "Pro", "price_usd": "29", "period": "monthly", "starts_on": "{later}"}}"#
    );
    let plan = "/v1/operator/accounts/bare/plan";
    assert_eq!(
        app.call("PUT", plan, Some(&operator), &[], Some(&body)).await.status,
        StatusCode::OK
    );
    let no_card = app.call("PUT", "/v1/plan/direct-charge", Some(&admin), &[], Some(on)).await;
    assert_eq!(no_card.status, StatusCode::CONFLICT, "{}", no_card.text);
    assert_eq!(no_card.json["code"], "no_card", "{}", no_card.text);
    assert_eq!(app.get("/v1/plan", &admin).await.json["direct_charge"], false);
    // A client's Idempotency-Key may not take a plan charge's name.
    let ready = app.ready_account("acme", "pm_card_visa").await;
    let reserved = app.pay(&ready, "plan:2026-12-01", "10").await;
    assert_eq!(reserved.status, StatusCode::BAD_REQUEST, "{}", reserved.text);
    assert_eq!(reserved.json["field"], "Idempotency-Key");
    assert_eq!(app.charges(&ready).await, 0);
}

common::in_every_mode!(
    a_plan_is_charged_once_per_period_and_changes_wait_for_the_renewal,
    bad_plans_are_refused_and_change_nothing,
    a_plan_charged_to_the_card_leaves_the_balance_alone,
    direct_charge_needs_a_plan_and_a_card,
);
