//! Credit grants through the API, in process, over HTTP and as API Gateway events: grant, draw,
//! see which grant paid (activity, statement, overview), void, and every bad request refused
//! with nothing changed.

mod common;

use axum::http::StatusCode;
use common::{Mode, TestApp};

const GRANTS: &str = "/v1/operator/accounts/acme/credit-grants";

fn key(value: &str) -> [(&'static str, &str); 1] {
    [("Idempotency-Key", value)]
}

async fn grant(app: &TestApp, key_value: &str, body: &str) -> common::Reply {
    app.call("POST", GRANTS, Some(&app.operator()), &key(key_value), Some(body)).await
}

async fn adjust(app: &TestApp, key_value: &str, kind: &str, amount: &str) -> common::Reply {
    let body = format!(r#"{{"kind": "{kind}", "amount_usd": "{amount}", "reason": "test"}}"#);
    let path = "/v1/operator/accounts/acme/adjustments";
    app.call("POST", path, Some(&app.operator()), &key(key_value), Some(&body)).await
}

async fn a_grant_pays_first_says_so_everywhere_and_a_void_removes_what_is_left(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    assert_eq!(adjust(&app, "paid-1", "credit", "10").await.status, StatusCode::CREATED);
    let body = r#"{"amount_usd": "5", "category": "goodwill", "reason": "outage on 3 Nov", "priority": 10}"#;
    let opened = grant(&app, "outage-1", body).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.text);
    assert_eq!(opened.json["grant"]["grant_id"], "cg:outage-1");
    assert_eq!(opened.json["account"]["paid_usd"], "10");
    assert_eq!(opened.json["account"]["granted_usd"], "5");
    // The same key and grant: 200, nothing twice. Another grant under it: 422.
    let again = grant(&app, "outage-1", body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let other = r#"{"amount_usd": "6", "category": "goodwill", "reason": "outage on 3 Nov"}"#;
    let reused = grant(&app, "outage-1", other).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reused.text);
    assert_eq!(reused.json["code"], "idempotency_key_reused");

    // A $7 debit: $5 from the grant, $2 from paid funds.
    assert_eq!(adjust(&app, "usage-1", "debit", "7").await.status, StatusCode::CREATED);
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "8");
    assert_eq!(overview.json["paid_usd"], "8");
    assert_eq!(overview.json["granted_usd"], "0");
    let activity = app.get("/v1/activity?show=debits", &admin).await;
    let debit = &activity.json["entries"][0];
    assert_eq!(debit["grants"][0]["grant_id"], "cg:outage-1");
    assert_eq!(debit["grants"][0]["amount_usd"], "5");
    let today = chrono::Utc::now().date_naive();
    let statement = app.get(&format!("/v1/statement?from={today}&to={today}"), &admin).await;
    assert_eq!(statement.status, StatusCode::OK, "{}", statement.text);
    assert_eq!(statement.json["grants_used_usd"], "5");
    let line = statement.json["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["grants_usd"] == "5" && l["kind"] == "debit")
        .expect("the debit's line says what the grant paid");
    assert!(line["description"].as_str().unwrap().ends_with("$5.00 from credits"), "{line}");

    // A second grant, voided: what is left is removed once; paid funds stay.
    let expires = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let body = format!(
        r#"{{"amount_usd": "3", "category": "promotional", "reason": "welcome", "expires_at": "{expires}"}}"#
    );
    assert_eq!(grant(&app, "welcome", &body).await.status, StatusCode::CREATED);
    let listed = app.call("GET", GRANTS, Some(&app.operator()), &[], None).await;
    assert_eq!(listed.json["grants"][0]["grant_id"], "cg:welcome");
    assert_eq!(listed.json["grants"][0]["expired"], false);
    let void = format!("{GRANTS}/cg:welcome/void");
    let voided = app.call("POST", &void, Some(&app.operator()), &[], None).await;
    assert_eq!(voided.status, StatusCode::OK, "{}", voided.text);
    assert_eq!(voided.json["granted_usd"], "0");
    assert_eq!(voided.json["paid_usd"], "8");
    assert_eq!(voided.json["balance_usd"], "8");
    let gone = app.call("POST", &void, Some(&app.operator()), &[], None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let credits = app.get("/v1/activity?show=debits", &admin).await;
    let removals = credits.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source_id"] == "gx:cg:welcome")
        .count();
    assert_eq!(removals, 1);
    let audit = app.get("/v1/settings/audit", &admin).await;
    assert!(audit.text.contains("credit_grant_voided"), "{}", audit.text);
}

async fn bad_grants_are_refused_and_change_nothing(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let cases = [
        (
            "k1",
            r#"{"amount_usd": "5", "category": "goodwill", "reason": "x", "expires_at": "2020-01-01T00:00:00Z"}"#,
            "expires_at",
        ),
        (
            "k2",
            r#"{"amount_usd": "5", "category": "goodwill", "reason": "x", "priority": 101}"#,
            "priority",
        ),
        ("k3", r#"{"amount_usd": "5", "category": "goodwill", "reason": " "}"#, "reason"),
        ("k4", r#"{"amount_usd": "5", "category": "bonus", "reason": "x"}"#, ""),
        ("k5", r#"{"amount_usd": "0", "category": "goodwill", "reason": "x"}"#, ""),
        ("k/6", r#"{"amount_usd": "5", "category": "goodwill", "reason": "x"}"#, "Idempotency-Key"),
        (
            "k7",
            r#"{"amount_usd": "5", "category": "goodwill", "reason": "x", "expires_at": "2999-01-01T00:00:00Z"}"#,
            "expires_at",
        ),
    ];
    for (key_value, body, field) in cases {
        let reply = grant(&app, key_value, body).await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.text);
        if !field.is_empty() {
            assert_eq!(reply.json["field"], field, "{body}: {}", reply.text);
        }
    }
    // A customer cannot grant themselves credit.
    let own = app
        .call(
            "POST",
            GRANTS,
            Some(&admin),
            &key("self"),
            Some(r#"{"amount_usd": "5", "category": "goodwill", "reason": "x"}"#),
        )
        .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN);
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "0");
    assert_eq!(overview.json["grants"], serde_json::json!([]));
    // At most 32 grants with something left.
    for n in 0..ledger::MAX_GRANTS {
        let body = r#"{"amount_usd": "1", "category": "promotional", "reason": "many"}"#;
        assert_eq!(grant(&app, &format!("many-{n}"), body).await.status, StatusCode::CREATED);
    }
    let body = r#"{"amount_usd": "1", "category": "promotional", "reason": "many"}"#;
    let full = grant(&app, "one-too-many", body).await;
    assert_eq!(full.status, StatusCode::CONFLICT, "{}", full.text);
    assert_eq!(full.json["code"], "too_many_grants");
}

common::in_every_mode!(
    a_grant_pays_first_says_so_everywhere_and_a_void_removes_what_is_left,
    bad_grants_are_refused_and_change_nothing,
);
