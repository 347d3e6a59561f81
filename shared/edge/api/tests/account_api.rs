//! The account API in process: auth, terms, settings with audit, cards, Pay Now, activity,
//! operator routes and bad input.

mod common;

use axum::http::StatusCode;
use common::{Mode, TestApp};
use serde_json::json;

async fn requests_without_a_valid_token_are_refused(app: TestApp) {
    assert_eq!(
        app.call("GET", "/v1/overview", None, &[], None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged = api::auth::LocalJwt::new(b"another-secret".to_vec()).issue(
        "mallory",
        Some("acme"),
        api::auth::Role::Admin,
        600,
    );
    let reply = app.get("/v1/overview", &forged).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json["code"], "unauthorized");
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = |exp, role, account: Option<&str>, aud: &str| api::auth::Claims {
        sub: "old".into(),
        account_id: account.map(str::to_string),
        role,
        exp,
        iss: Some(app.jwt.issuer.clone()),
        aud: Some(aud.into()),
    };
    let admin = api::auth::Role::Admin;
    let expired = app.jwt.sign(&claims(now - 600, admin, Some("acme"), "ringledger"));
    assert_eq!(app.get("/v1/overview", &expired).await.status, StatusCode::UNAUTHORIZED);
    let wrong_audience = app.jwt.sign(&claims(now + 600, admin, Some("acme"), "someone-else"));
    assert_eq!(app.get("/v1/overview", &wrong_audience).await.status, StatusCode::UNAUTHORIZED);
    let no_account = app.jwt.sign(&claims(now + 600, admin, None, "ringledger"));
    assert_eq!(app.get("/v1/overview", &no_account).await.status, StatusCode::UNAUTHORIZED);
}

async fn billable_actions_answer_403_until_the_terms_are_accepted(app: TestApp) {
    let operator = app.operator();
    app.send("POST", "/v1/operator/accounts", &operator, r#"{"account_id": "acme"}"#).await;
    let admin = app.admin("acme");
    let card = r#"{"payment_method_token": "pm_card_visa", "card_manager_email": "a@acme.example", "role": "primary"}"#;
    for reply in [
        app.send("POST", "/v1/cards", &admin, card).await,
        app.pay(&admin, "k1", "10").await,
        app.send(
            "PUT",
            "/v1/settings/auto-recharge",
            &admin,
            r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "10", "mode": "add"}"#,
        )
        .await,
    ] {
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
        assert!(reply.json["message"].as_str().unwrap().contains("terms of service"));
    }
    let terms = app.send("POST", "/v1/terms", &admin, r#"{"version": "2026-01"}"#).await;
    assert_eq!(terms.status, StatusCode::OK);
    assert_eq!(terms.json["terms"]["accepted_by"], "tester@example.com");
    assert_eq!(app.send("POST", "/v1/cards", &admin, card).await.status, StatusCode::CREATED);
}

async fn viewers_read_and_only_admins_pay_or_change_settings(app: TestApp) {
    app.ready_account("acme", "pm_card_visa").await;
    let viewer = app.viewer("acme");
    assert_eq!(app.get("/v1/overview", &viewer).await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/cards", &viewer).await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/activity", &viewer).await.status, StatusCode::OK);
    let pay = app.pay(&viewer, "k", "10").await;
    assert_eq!(pay.status, StatusCode::FORBIDDEN);
    let contacts = r#"{"billing_emails": ["a@acme.example"], "recharge_failure_email": null, "critical_phone": null}"#;
    assert_eq!(
        app.send("PUT", "/v1/settings/contacts", &viewer, contacts).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.charges(&app.admin("acme")).await, 0);
    // Account users never reach operator routes, and operators have no account of their own.
    let admin = app.admin("acme");
    assert_eq!(app.get("/v1/operator/accounts/acme", &admin).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/v1/overview", &app.operator()).await.status, StatusCode::FORBIDDEN);
}

async fn a_token_of_one_account_learns_nothing_about_another(app: TestApp) {
    let alice = app.ready_account("alice", "pm_card_visa").await;
    let bob = app.ready_account("bob", "pm_card_mastercard").await;
    let bob_card =
        app.get("/v1/cards", &bob).await.json["cards"][0]["id"].as_str().unwrap().to_string();
    // Alice cannot see, re-role or delete Bob's card: it does not exist for her.
    let path = format!("/v1/cards/{bob_card}");
    assert_eq!(
        app.call("DELETE", &path, Some(&alice), &[], None).await.status,
        StatusCode::NOT_FOUND
    );
    let role = app.send("PUT", &format!("{path}/role"), &alice, r#"{"role": "primary"}"#).await;
    assert_eq!(role.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/v1/overview", &alice).await.json["account_id"], "alice");
    assert_eq!(app.get("/v1/cards", &bob).await.json["cards"].as_array().unwrap().len(), 1);
    // A token for an account that does not exist gets 404s, not someone else's data.
    let ghost = app.admin("ghost");
    assert_eq!(app.get("/v1/overview", &ghost).await.status, StatusCode::NOT_FOUND);
}

async fn auto_recharge_settings_are_validated_and_every_change_is_audited(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let put = |body: &'static str| {
        let admin = admin.clone();
        let app = &app;
        async move { app.send("PUT", "/v1/settings/auto-recharge", &admin, body).await }
    };
    let cases = [
        (
            r#"{"enabled": true, "amount_usd": "49.99", "threshold_usd": "10", "mode": "add"}"#,
            "amount_usd",
        ),
        (
            r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "9.99", "mode": "add"}"#,
            "threshold_usd",
        ),
        (
            r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "50", "mode": "add"}"#,
            "amount_usd",
        ),
        (
            r#"{"enabled": true, "amount_usd": 50, "threshold_usd": "10", "mode": "add"}"#,
            "amount_usd",
        ),
        (
            r#"{"enabled": true, "amount_usd": "-50", "threshold_usd": "10", "mode": "add"}"#,
            "amount_usd",
        ),
        (
            r#"{"enabled": true, "amount_usd": "50.001", "threshold_usd": "10", "mode": "add"}"#,
            "amount_usd",
        ),
        (
            r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "10", "mode": "double"}"#,
            "mode",
        ),
    ];
    for (body, field) in cases {
        let reply = put(body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert_eq!(reply.json["field"], field, "{body}: {}", reply.text);
    }
    let unknown = put(
        r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "10", "mode": "add", "x": 1}"#,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        app.get("/v1/settings/audit", &admin).await.json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["change"] != "auto_recharge"),
        "rejected changes leave no trace"
    );

    let saved =
        put(r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "15", "mode": "top_up_to"}"#)
            .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.text);
    let saved =
        put(r#"{"enabled": false, "amount_usd": "75", "threshold_usd": "15", "mode": "add"}"#)
            .await;
    assert_eq!(saved.status, StatusCode::OK);
    let audit = app.get("/v1/settings/audit", &admin).await.json;
    let changes: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["change"] == "auto_recharge")
        .collect();
    assert_eq!(changes.len(), 2);
    // Newest first, with who, before and after.
    assert_eq!(changes[0]["before"]["amount_usd"], "50");
    assert_eq!(changes[0]["after"]["amount_usd"], "75");
    assert_eq!(changes[0]["after"]["enabled"], false);
    assert_eq!(changes[1]["before"], serde_json::Value::Null);
    assert_eq!(changes[0]["actor"], "tester@example.com");
}

async fn contacts_address_and_schedule_validate_and_read_back(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let bad = [
        (
            "/v1/settings/contacts",
            r#"{"billing_emails": ["not-an-email"], "recharge_failure_email": null, "critical_phone": null}"#,
            "billing_emails[0]",
        ),
        (
            "/v1/settings/contacts",
            r#"{"billing_emails": [], "recharge_failure_email": null, "critical_phone": null}"#,
            "billing_emails",
        ),
        (
            "/v1/settings/contacts",
            r#"{"billing_emails": ["a@b.co"], "recharge_failure_email": "x@", "critical_phone": null}"#,
            "recharge_failure_email",
        ),
        (
            "/v1/settings/contacts",
            r#"{"billing_emails": ["a@b.co"], "recharge_failure_email": null, "critical_phone": "555-0100"}"#,
            "critical_phone",
        ),
        (
            "/v1/settings/address",
            r#"{"line1": "1 Main St", "city": "Springfield", "postal_code": "01101", "country": "usa"}"#,
            "country",
        ),
        (
            "/v1/settings/address",
            r#"{"line1": "", "city": "Springfield", "postal_code": "01101", "country": "US"}"#,
            "line1",
        ),
        ("/v1/settings/statement-schedule", r#"{"schedule": "daily"}"#, "schedule"),
    ];
    for (path, body, field) in bad {
        let reply = app.send("PUT", path, &admin, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert_eq!(reply.json["field"], field, "{body}: {}", reply.text);
    }
    let ok = [
        (
            "/v1/settings/contacts",
            r#"{"billing_emails": ["billing@acme.example", "cfo@acme.example"], "recharge_failure_email": "ops@acme.example", "critical_phone": "+14155550100"}"#,
        ),
        (
            "/v1/settings/address",
            r#"{"line1": "1 Main St", "city": "Springfield", "region": "IL", "postal_code": "62701", "country": "US"}"#,
        ),
        ("/v1/settings/statement-schedule", r#"{"schedule": "monthly"}"#),
        ("/v1/settings/low-balance", r#"{"level_usd": "20"}"#),
    ];
    for (path, body) in ok {
        let reply = app.send("PUT", path, &admin, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{body}: {}", reply.text);
    }
    let settings = app.get("/v1/settings", &admin).await.json;
    assert_eq!(settings["billing_emails"], json!(["billing@acme.example", "cfo@acme.example"]));
    assert_eq!(settings["critical_phone"], "+14155550100");
    assert_eq!(settings["service_address"]["region"], "IL");
    assert_eq!(settings["statement_schedule"], "monthly");
    assert_eq!(settings["low_balance_usd"], "20");
    let audit = app.get("/v1/settings/audit?limit=2", &admin).await.json;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
    let next = audit["next_cursor"].as_str().expect("more audit entries");
    let older = app.get(&format!("/v1/settings/audit?limit=50&cursor={next}"), &admin).await.json;
    assert!(older["entries"].as_array().unwrap().iter().any(|e| e["change"] == "contacts"));
    assert_eq!(settings["critical_sms_opt_out"], false);
    assert_eq!(settings["undeliverable_emails"], json!([]));
    // The mail service reports a bounce (notifications::feedback): settings and overview show
    // it; saving the contacts again clears the address saved, and STOP is kept as a setting.
    let id = ledger::AccountId::parse("acme").unwrap();
    documents::profile::update(&*app.store, &id, |p| {
        p.mark_undeliverable(documents::profile::Undeliverable {
            address: "cfo@acme.example".into(),
            kind: "bounce".into(),
            reason: "smtp; 550 user unknown".into(),
            at: chrono::Utc::now(),
        });
        Ok(())
    })
    .await
    .unwrap();
    let overview = app.get("/v1/overview", &admin).await.json;
    assert_eq!(overview["undeliverable_emails"][0]["address"], "cfo@acme.example");
    let settings = app.get("/v1/settings", &admin).await.json;
    assert_eq!(settings["undeliverable_emails"][0]["kind"], "bounce");
    let resaved = r#"{"billing_emails": ["billing@acme.example", "cfo@acme.example"], "recharge_failure_email": null, "critical_phone": "+14155550100", "critical_sms_opt_out": true}"#;
    let reply = app.send("PUT", "/v1/settings/contacts", &admin, resaved).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["critical_sms_opt_out"], true);
    let settings = app.get("/v1/settings", &admin).await.json;
    assert_eq!(
        (&settings["undeliverable_emails"], &settings["critical_sms_opt_out"]),
        (&json!([]), &json!(true))
    );
    let bad_stop = r#"{"billing_emails": ["a@b.co"], "recharge_failure_email": null, "critical_phone": null, "critical_sms_opt_out": "yes"}"#;
    assert_eq!(
        app.send("PUT", "/v1/settings/contacts", &admin, bad_stop).await.status,
        StatusCode::BAD_REQUEST
    );
}

async fn cards_register_list_change_role_and_delete_without_storing_numbers(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let add = |token: &'static str, role: &'static str| {
        let admin = admin.clone();
        let app = &app;
        async move {
            let body = format!(
                r#"{{"payment_method_token": "{token}", "card_manager_email": "m@acme.example", "role": "{role}"}}"#
            );
            app.send("POST", "/v1/cards", &admin, &body).await
        }
    };
    let backup = add("pm_card_mastercard", "backup").await;
    assert_eq!(backup.status, StatusCode::CREATED, "{}", backup.text);
    assert_eq!(backup.json["card"]["role"], "backup");
    // A card number pasted where a token belongs (built here so no card number sits in the
    // repository): refused, never stored.
    let pasted: &'static str = Box::leak("4242 ".repeat(4).trim_end().to_string().into_boxed_str());
    let raw_number = add(pasted, "backup").await;
    assert_eq!(raw_number.status, StatusCode::BAD_REQUEST);
    assert_eq!(raw_number.json["field"], "payment_method_token");
    let unknown = add("pm_card_unknown", "backup").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);

    let cards = app.get("/v1/cards", &admin).await.json["cards"].as_array().unwrap().clone();
    assert_eq!(cards.len(), 2);
    assert!(cards.iter().all(|c| c["last4"].as_str().unwrap().len() == 4 && c["expired"] == false));
    let primary =
        cards.iter().find(|c| c["role"] == "primary").unwrap()["id"].as_str().unwrap().to_string();
    let second =
        cards.iter().find(|c| c["role"] == "backup").unwrap()["id"].as_str().unwrap().to_string();
    let demote = app
        .send("PUT", &format!("/v1/cards/{primary}/role"), &admin, r#"{"role": "backup"}"#)
        .await;
    assert_eq!(demote.status, StatusCode::CONFLICT, "one primary stays");
    let promote = app
        .send("PUT", &format!("/v1/cards/{second}/role"), &admin, r#"{"role": "primary"}"#)
        .await;
    assert_eq!(promote.status, StatusCode::OK);
    let roles: Vec<_> = promote.json["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].clone(), c["role"].clone()))
        .collect();
    assert!(
        roles.contains(&(json!(second), json!("primary")))
            && roles.contains(&(json!(primary), json!("backup")))
    );

    let deleted = app.call("DELETE", &format!("/v1/cards/{second}"), Some(&admin), &[], None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let left = app.get("/v1/cards", &admin).await.json["cards"].clone();
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["role"], "primary", "the remaining card was promoted");

    for _ in 0..4 {
        assert_eq!(add("pm_card_visa", "backup").await.status, StatusCode::CREATED);
    }
    let sixth = add("pm_card_visa", "backup").await;
    assert_eq!(sixth.status, StatusCode::CONFLICT);
    assert_eq!(sixth.json["code"], "too_many_cards");
}

async fn pay_now_credits_once_per_idempotency_key_even_when_sent_concurrently(app: TestApp) {
    let app = std::sync::Arc::new(app);
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let first = app.pay(&admin, "order-1", "25.50").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json["payment"]["status"], "succeeded");
    assert_eq!(first.json["payment"]["balance_after_usd"], "25.5");
    let again = app.pay(&admin, "order-1", "25.50").await;
    assert_eq!((again.status, again.json.clone()), (first.status, first.json.clone()));
    let mismatch = app.pay(&admin, "order-1", "30").await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let app = app.clone();
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move { app.pay(&admin, "order-2", "10").await }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(
            reply.status == StatusCode::CREATED || reply.status == StatusCode::CONFLICT,
            "{}",
            reply.text
        );
        if reply.status == StatusCode::CREATED {
            ids.insert(reply.json["payment"]["payment_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ids.len(), 1, "every answer names the same payment");
    assert_eq!(app.charges(&admin).await, 2, "two keys, two charges");
    let overview = app.get("/v1/overview", &admin).await.json;
    assert_eq!(overview["balance_usd"], "35.5");
    let history = app.get("/v1/payments", &admin).await.json;
    let payments = history["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2);
    assert_eq!(payments[0]["amount_usd"], "10", "newest first");
    assert_eq!(payments[0]["trigger"], "manual");
    assert_eq!(payments[0]["card_last4"], "4242");
    let receipts = app.notices.0.lock().unwrap().clone();
    assert_eq!(receipts.len(), 2, "one receipt per payment, not per request");
    assert!(receipts.iter().all(|n| n.kind.as_str() == "payment_receipt"));
}

async fn a_declined_pay_now_records_the_reason_and_credits_nothing(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_chargeDeclinedInsufficientFunds").await;
    let declined = app.pay(&admin, "k1", "40").await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{}", declined.text);
    assert_eq!(declined.json["code"], "card_declined");
    assert!(declined.json["message"].as_str().unwrap().to_lowercase().contains("insufficient"));
    assert_eq!(app.get("/v1/overview", &admin).await.json["balance_usd"], "0");
    let history = app.get("/v1/payments", &admin).await.json;
    assert_eq!(history["payments"][0]["status"], "failed");
    assert_eq!(history["payments"][0]["failure_code"], "insufficient_funds");
    assert!(app.get("/v1/activity", &admin).await.json["entries"].as_array().unwrap().is_empty());
}

async fn pay_now_rejects_bad_amounts_and_missing_keys_and_changes_nothing(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    for amount in ["0", "-5", "10.001", "0.99", "10000.01", "1e3", "ten", ""] {
        let reply = app.pay(&admin, &format!("k-{amount}"), amount).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{amount}: {}", reply.text);
        assert_eq!(reply.json["field"], "amount_usd", "{amount}");
    }
    let no_key =
        app.call("POST", "/v1/payments", Some(&admin), &[], Some(r#"{"amount_usd": "10"}"#)).await;
    assert_eq!(no_key.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_key.json["code"], "missing_idempotency_key");
    let number = app
        .call(
            "POST",
            "/v1/payments",
            Some(&admin),
            &[("idempotency-key", "n")],
            Some(r#"{"amount_usd": 10}"#),
        )
        .await;
    assert_eq!(number.status, StatusCode::BAD_REQUEST);
    for body in ["{", "[]", "null", r#"{"amount_usd": "10", "tip": "1"}"#] {
        let reply = app
            .call("POST", "/v1/payments", Some(&admin), &[("idempotency-key", "b")], Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.json["message"].is_string());
    }
    assert_eq!(app.charges(&admin).await, 0);
    assert_eq!(app.get("/v1/overview", &admin).await.json["balance_usd"], "0");
}

async fn activity_filters_paginates_and_exports_stable_csv(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    app.pay(&admin, "p1", "20").await;
    let operator = app.operator();
    for (i, kind) in ["debit", "credit", "debit"].iter().enumerate() {
        let body = format!(r#"{{"kind": "{kind}", "amount_usd": "1.5", "reason": "test {i}"}}"#);
        let reply = app
            .call(
                "POST",
                "/v1/operator/accounts/acme/adjustments",
                Some(&operator),
                &[("idempotency-key", &format!("adj-{i}"))],
                Some(&body),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let debits = app.get("/v1/activity?show=debits", &admin).await.json;
    assert_eq!(debits["entries"].as_array().unwrap().len(), 2);
    let page = app.get("/v1/activity?limit=2", &admin).await.json;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app.get(&format!("/v1/activity?limit=10&cursor={cursor}"), &admin).await.json;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 2);
    assert_eq!(rest["entries"][1]["balance_after_usd"], "18.5");

    let future = app.get("/v1/activity?from=2099-01-01T00:00:00Z", &admin).await.json;
    assert!(future["entries"].as_array().unwrap().is_empty());
    for (query, field) in [
        ("from=yesterday", "from"),
        ("show=some", "show"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("page=2", "page"),
    ] {
        let reply = app.get(&format!("/v1/activity?{query}"), &admin).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.json["field"], field, "{query}");
    }
    let bad_cursor = app.get("/v1/activity?cursor=zzz", &admin).await;
    assert_eq!(bad_cursor.status, StatusCode::BAD_REQUEST);

    let csv = app.get("/v1/activity.csv", &admin).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "seq,posted_at,occurred_at,kind,item,amount_usd,balance_after_usd,source_id,details"
    );
    assert_eq!(lines.len(), 5);
    assert!(lines[1].starts_with("1,") && lines[1].contains(",credit,funds_added,20,20,pay:p1,"));
    assert!(lines[2].contains(",debit,adjustment,1.5,18.5,adj:adj-0,"));
}

async fn operator_routes_create_accounts_and_adjust_with_a_reason_exactly_once(app: TestApp) {
    let operator = app.operator();
    let created = app
        .send(
            "POST",
            "/v1/operator/accounts",
            &operator,
            r#"{"account_id": "big", "credit_limit_usd": "500"}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json["floor_usd"], "-500");
    assert_eq!(created.json["status"], "active");
    let again =
        app.send("POST", "/v1/operator/accounts", &operator, r#"{"account_id": "big"}"#).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let bad_id =
        app.send("POST", "/v1/operator/accounts", &operator, r#"{"account_id": "a b"}"#).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);

    let limit = app
        .send(
            "PUT",
            "/v1/operator/accounts/big/credit-limit",
            &operator,
            r#"{"credit_limit_usd": null}"#,
        )
        .await;
    assert_eq!(limit.json["status"], "suspended", "prepaid at 0 is suspended");
    let tax = app
        .send(
            "PUT",
            "/v1/operator/accounts/big/tax-exemption",
            &operator,
            r#"{"tax_exempt": true}"#,
        )
        .await;
    assert_eq!(tax.json["tax_exempt"], true);
    let policy = app
        .send(
            "PUT",
            "/v1/operator/accounts/big/service-policy",
            &operator,
            r#"{"inbound_grace_usd": "2.50", "inbound_grace_hours": 12, "release_after_days": 14}"#,
        )
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.text);
    assert_eq!(policy.json["inbound_grace_usd"], "2.5");
    assert_eq!(policy.json["release_after_days"], 14);
    // Suspended when its credit limit went (above): its numbers are due 14 days after that.
    assert!(policy.json["release_at"].is_string(), "{}", policy.text);
    for (bad, field) in [
        (
            r#"{"inbound_grace_usd": "-1", "inbound_grace_hours": null, "release_after_days": 30}"#,
            "inbound_grace_usd",
        ),
        (
            r#"{"inbound_grace_usd": "0.001", "inbound_grace_hours": null, "release_after_days": 30}"#,
            "inbound_grace_usd",
        ),
        (
            r#"{"inbound_grace_usd": "0", "inbound_grace_hours": 0, "release_after_days": 30}"#,
            "inbound_grace_hours",
        ),
        (
            r#"{"inbound_grace_usd": "0", "inbound_grace_hours": null, "release_after_days": 3}"#,
            "release_after_days",
        ),
    ] {
        let reply =
            app.send("PUT", "/v1/operator/accounts/big/service-policy", &operator, bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.json["field"], field, "{bad}");
    }
    let saved =
        ledger::LedgerStore::account(&*app.store, &ledger::AccountId::parse("big").unwrap())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(saved.service_policy().release_after_days, 14, "a refused change changes nothing");
    let card = app
        .send(
            "PUT",
            "/v1/operator/accounts/big/rate-card",
            &operator,
            r#"{"rate_card": "no-such-card"}"#,
        )
        .await;
    assert_eq!(card.status, StatusCode::BAD_REQUEST);
    assert_eq!(card.json["field"], "rate_card");

    let refund =
        r#"{"kind": "refund", "amount_usd": "12.34", "reason": "dropped calls on 2026-11-02"}"#;
    let key = [("idempotency-key", "ticket-881")];
    let first = app
        .call("POST", "/v1/operator/accounts/big/adjustments", Some(&operator), &key, Some(refund))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let second = app
        .call("POST", "/v1/operator/accounts/big/adjustments", Some(&operator), &key, Some(refund))
        .await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.json["entry_seq"], first.json["entry_seq"]);
    assert_eq!(second.json["balance_usd"], "12.34");
    let no_reason = app
        .call(
            "POST",
            "/v1/operator/accounts/big/adjustments",
            Some(&operator),
            &[("idempotency-key", "t2")],
            Some(r#"{"kind": "credit", "amount_usd": "1", "reason": " "}"#),
        )
        .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_reason.json["field"], "reason");
    let shown = app.get("/v1/operator/accounts/big", &operator).await.json;
    assert_eq!(shown["tax_exempt"], true);
    assert_eq!(shown["balance_usd"], "12.34");
    let missing = app.get("/v1/operator/accounts/nobody", &operator).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn an_adjustment_key_reused_for_another_adjustment_answers_422_and_changes_nothing(
    app: TestApp,
) {
    let operator = app.operator();
    app.send("POST", "/v1/operator/accounts", &operator, r#"{"account_id": "acme"}"#).await;
    let path = "/v1/operator/accounts/acme/adjustments";
    let adjust = |key: &'static str, body: &'static str| {
        let operator = operator.clone();
        let app = &app;
        async move {
            app.call("POST", path, Some(&operator), &[("idempotency-key", key)], Some(body)).await
        }
    };
    let goodwill = r#"{"kind": "credit", "amount_usd": "10", "reason": "goodwill"}"#;
    let first = adjust("ticket-9", goodwill).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    // The same adjustment again (an equal amount written otherwise is the same amount).
    for body in [goodwill, r#"{"kind": "credit", "amount_usd": "10.00", "reason": "goodwill"}"#] {
        let again = adjust("ticket-9", body).await;
        assert_eq!(again.status, StatusCode::OK, "{body}: {}", again.text);
        assert_eq!(again.json["entry_seq"], first.json["entry_seq"]);
    }
    for body in [
        r#"{"kind": "credit", "amount_usd": "20", "reason": "goodwill"}"#,
        r#"{"kind": "debit", "amount_usd": "10", "reason": "goodwill"}"#,
        r#"{"kind": "refund", "amount_usd": "10", "reason": "goodwill"}"#,
        r#"{"kind": "credit", "amount_usd": "10", "reason": "ticket 10"}"#,
    ] {
        let reused = adjust("ticket-9", body).await;
        assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", reused.text);
        assert_eq!(reused.json["code"], "idempotency_key_reused", "{body}");
        assert_eq!(reused.json["field"], "Idempotency-Key", "{body}");
        let message = reused.json["message"].as_str().unwrap();
        assert!(message.contains("adjustment credit of 10"), "{message}");
    }
    let shown = app.get("/v1/operator/accounts/acme", &operator).await.json;
    assert_eq!(shown["balance_usd"], "10");
    let entries = app.get("/v1/activity", &app.admin("acme")).await.json;
    assert_eq!(entries["entries"].as_array().unwrap().len(), 1, "{entries}");
    // A new key is a new adjustment.
    let next =
        adjust("ticket-10", r#"{"kind": "debit", "amount_usd": "4", "reason": "fix"}"#).await;
    assert_eq!(next.status, StatusCode::CREATED, "{}", next.text);
    assert_eq!(next.json["balance_usd"], "6");
}

async fn every_route_refuses_a_query_parameter_it_does_not_take_and_changes_nothing(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let operator = app.operator();
    let before = app.get("/v1/operator/accounts/acme", &operator).await.json;
    for (method, path) in api::app::ROUTES {
        let concrete = path.replace("{card_id}", "pm_x").replace("{account_id}", "acme");
        let token = if path.starts_with("/v1/operator") { &operator } else { &admin };
        let key = [("idempotency-key", "query-1")];
        for query in ["sort=desc", "from=2026-01-01T00:00:00Z&form=x"] {
            let uri = format!("{concrete}?{query}");
            let reply = app.call(method, &uri, Some(token), &key, Some("{}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {uri}: {}", reply.text);
            let field = reply.json["field"].as_str().unwrap_or_default();
            let taken = api::app::query_parameters(method, path);
            // `from` is refused where it is not taken; where it is, the misspelt `form` is.
            let expected = match query {
                "sort=desc" => "sort",
                _ if taken.contains(&"from") => "form",
                _ => field,
            };
            assert!(["sort", "from", "form"].contains(&field), "{method} {uri}: {field}");
            assert_eq!(field, expected, "{method} {uri}");
            assert_eq!(reply.json["code"], "invalid_field", "{method} {uri}");
        }
    }
    let overview = app.get("/v1/overview?verbose=1", &admin).await;
    assert_eq!(overview.status, StatusCode::BAD_REQUEST);
    assert!(overview.json["message"].as_str().unwrap().contains("takes none"), "{}", overview.text);
    // The parameters a route takes are still taken, and nothing changed.
    assert_eq!(app.get("/v1/activity?limit=5&show=all", &admin).await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/payments?limit=5", &admin).await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/operator/accounts/acme", &operator).await.json, before);
    assert_eq!(app.charges(&admin).await, 0);
}

/// Every case runs three ways: in process, over real HTTP on loopback, and as API Gateway (HTTP
/// API, JWT authorizer) v2 events through the Lambda routers.
async fn statements_read_download_and_queue_emails(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    app.pay(&admin, "p1", "20").await;
    let operator = app.operator();
    let body = r#"{"kind": "debit", "amount_usd": "1.25", "reason": "test"}"#;
    let reply = app
        .call(
            "POST",
            "/v1/operator/accounts/acme/adjustments",
            Some(&operator),
            &[("idempotency-key", "adj-1")],
            Some(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let today = chrono::Utc::now().date_naive();
    let range = format!("from={}&to={}", today - chrono::Duration::days(1), today);
    let viewer = app.viewer("acme");
    let statement = app.get(&format!("/v1/statement?{range}"), &viewer).await;
    assert_eq!(statement.status, StatusCode::OK, "{}", statement.text);
    let parsed: ledger::statement::Statement = serde_json::from_value(statement.json).unwrap();
    assert!(parsed.reconciles());
    assert_eq!(parsed.opening_balance_usd, rust_decimal::Decimal::ZERO);
    assert_eq!(parsed.card_payments_usd, rust_decimal::Decimal::from(20));
    assert_eq!(parsed.other_debits_usd, "1.25".parse::<rust_decimal::Decimal>().unwrap());
    let overview = app.get("/v1/overview", &viewer).await.json;
    assert_eq!(parsed.closing_balance_usd.normalize().to_string(), overview["balance_usd"]);
    assert_eq!(parsed.lines.len(), 2);

    let csv = app.get(&format!("/v1/statement.csv?{range}"), &viewer).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(csv.text, notifications::statement::statement_csv(&parsed));

    for (query, field) in [
        (format!("from={today}"), "to"),
        (format!("from=yesterday&to={today}"), "from"),
        (format!("from={today}&to={}", today - chrono::Duration::days(3)), "from"),
        (format!("from={}&to={today}", today - chrono::Duration::days(400)), "from"),
        (format!("{range}&show=all"), "show"),
    ] {
        let reply = app.get(&format!("/v1/statement?{query}"), &viewer).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}: {}", reply.text);
        assert_eq!(reply.json["field"], field, "{query}");
    }

    // Emailing one: admins only, with an Idempotency-Key; queued, not sent in the request.
    let send =
        format!(r#"{{"from": "{today}", "to": "{today}", "recipients": ["cfo@example.com"]}}"#);
    let no_key = app.call("POST", "/v1/statements", Some(&admin), &[], Some(&send)).await;
    assert_eq!(no_key.status, StatusCode::BAD_REQUEST);
    let as_viewer = app
        .call("POST", "/v1/statements", Some(&viewer), &[("idempotency-key", "s1")], Some(&send))
        .await;
    assert_eq!(as_viewer.status, StatusCode::FORBIDDEN);
    let bad = r#"{"from": "2026-10-31", "to": "2026-10-01"}"#;
    let reversed = app
        .call("POST", "/v1/statements", Some(&admin), &[("idempotency-key", "s0")], Some(bad))
        .await;
    assert_eq!(reversed.status, StatusCode::BAD_REQUEST, "{}", reversed.text);
    let bad_email = r#"{"from": "2026-10-01", "to": "2026-10-31", "recipients": ["nope"]}"#;
    let reply = app
        .call("POST", "/v1/statements", Some(&admin), &[("idempotency-key", "s0")], Some(bad_email))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(app.statement_jobs.take().is_empty(), "nothing queued for refused requests");

    let first = app
        .call("POST", "/v1/statements", Some(&admin), &[("idempotency-key", "s1")], Some(&send))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let again = app
        .call("POST", "/v1/statements", Some(&admin), &[("idempotency-key", "s1")], Some(&send))
        .await;
    assert_eq!(again.json["statement_id"], first.json["statement_id"], "same key, same statement");
    let queued = app.statement_jobs.take();
    assert_eq!(queued.len(), 2);
    match &queued[0] {
        jobs::Job::Statement(request) => {
            assert_eq!(request.account_id.as_str(), "acme");
            assert_eq!(request.recipients.as_deref(), Some(&["cfo@example.com".to_string()][..]));
            assert_eq!(request.id, first.json["statement_id"]);
        }
        other => panic!("expected a statement job, got {other:?}"),
    }
}

async fn overview_and_activity_show_the_holds_in_progress(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    app.pay(&admin, "p1", "20").await;
    let id = ledger::AccountId::parse("acme").unwrap();
    let cards = rating::RateCards::standard_only();
    let call = usage::authorize::Action::Call {
        direction: rating::Direction::Outbound,
        to: "+447700900123".into(),
    };
    let placed =
        usage::holds::place(&*app.store, &cards, &id, "call-9", &call, chrono::Utc::now(), 14_400)
            .await
            .unwrap();
    assert!(placed.decision.allowed);
    let overview = app.get("/v1/overview", &admin).await.json;
    assert_eq!(overview["balance_usd"], "20");
    assert_eq!(overview["held_usd"], "0.2025");
    assert_eq!(overview["available_usd"], "19.7975");
    assert_eq!(overview["holds"][0]["authorization_id"], "call-9");
    let activity = app.get("/v1/activity", &admin).await.json;
    assert_eq!(activity["active_holds"][0]["authorization_id"], "call-9");
    assert_eq!(activity["active_holds"][0]["state"], "active");
    usage::holds::release(&*app.store, &id, "call-9", chrono::Utc::now()).await.unwrap();
    let after = app.get("/v1/activity", &admin).await.json;
    assert_eq!(after["active_holds"], serde_json::json!([]), "a released hold is not in progress");
    assert_eq!(app.get("/v1/overview", &admin).await.json["available_usd"], "20");
}

async fn an_operator_refunds_a_payment_to_its_card_once_and_never_beyond_it(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let paid = app.pay(&admin, "order-1", "40").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    let payment_id = paid.json["payment"]["payment_id"].as_str().unwrap().to_string();
    let path = format!("/v1/operator/accounts/acme/payments/{payment_id}/refunds");
    let operator = app.operator();
    let body = r#"{"amount_usd": "15", "reason": "duplicate order"}"#;
    let refund = |key: &'static str, body: &'static str| {
        let (app, path, operator) = (&app, path.clone(), operator.clone());
        async move {
            app.call("POST", &path, Some(&operator), &[("Idempotency-Key", key)], Some(body)).await
        }
    };
    // Only operators refund.
    let refused =
        app.call("POST", &path, Some(&admin), &[("Idempotency-Key", "r-1")], Some(body)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);

    let first = refund("r-1", body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json["refund"]["status"], "sent");
    assert_eq!(first.json["balance_usd"], "25");
    assert_eq!(first.json["payment"]["refundable_usd"], "25");
    let again = refund("r-1", body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json["refund"]["entry_seq"], first.json["refund"]["entry_seq"]);
    let reused = refund("r-1", r#"{"amount_usd": "16", "reason": "duplicate order"}"#).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reused.text);
    let too_much = refund("r-2", r#"{"amount_usd": "25.01", "reason": "too much"}"#).await;
    assert_eq!(too_much.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", too_much.text);
    assert_eq!(too_much.json["code"], "refund_exceeds_payment");
    for (key, bad) in [
        ("r-3", r#"{"amount_usd": "0", "reason": "zero"}"#),
        ("r-3", r#"{"amount_usd": "1.001", "reason": "sub-cent"}"#),
        ("r-3", r#"{"amount_usd": "1", "reason": " "}"#),
        ("bad/key", body),
    ] {
        let reply = refund(key, bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {}", reply.text);
    }
    let missing = app
        .call(
            "POST",
            "/v1/operator/accounts/acme/payments/no-such-payment/refunds",
            Some(&operator),
            &[("Idempotency-Key", "r-4")],
            Some(body),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    // The rest of it, then nothing is left.
    let rest = refund("r-5", r#"{"amount_usd": "25", "reason": "cancelled"}"#).await;
    assert_eq!(rest.status, StatusCode::CREATED, "{}", rest.text);
    assert_eq!(rest.json["payment"]["refundable_usd"], "0");
    let overview = app.get("/v1/overview", &admin).await.json;
    assert_eq!(overview["balance_usd"], "0");
    let history = app.get("/v1/payments", &admin).await.json;
    let refunds = history["payments"][0]["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 2, "{history}");
    let activity = app.get("/v1/activity", &admin).await.json;
    let card_refunds = activity["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["item"] == "card_refund")
        .count();
    assert_eq!(card_refunds, 2, "{activity}");
    let receipts = app.notices.0.lock().unwrap().clone();
    assert_eq!(receipts.iter().filter(|n| n.kind.as_str() == "refund_receipt").count(), 2);
}

async fn card_testing_limits_hold_for_the_hour_and_then_reset(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_chargeDeclined").await;
    for n in 0..api::limits::MAX_DECLINES_PER_HOUR {
        let declined = app.pay(&admin, &format!("try-{n}"), "10").await;
        assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{}", declined.text);
    }
    let charges = app.charges(&admin).await;
    let limited = app.pay(&admin, "try-next", "10").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text);
    assert_eq!(limited.json["code"], "rate_limited");
    let wait: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    assert_eq!(app.charges(&admin).await, charges, "nothing reached the processor");
    // Registrations: the one `ready_account` made, the rest of the hour's refused by the
    // processor, then 429.
    let card = |token: &str| {
        format!(
            r#"{{"payment_method_token": "{token}", "role": "backup", "card_manager_email": "cards@acme.example"}}"#
        )
    };
    for _ in 1..api::limits::MAX_CARD_REGISTRATIONS_PER_HOUR {
        let refused = app.send("POST", "/v1/cards", &admin, &card("pm_card_unknown")).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    }
    let limited = app.send("POST", "/v1/cards", &admin, &card("pm_card_visa")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text);
    assert!(limited.headers.contains_key("retry-after"));
    // An hour later (the count's hour moved back) both work again.
    let id = ledger::AccountId::parse("acme").unwrap();
    let store: &dyn ledger::docs::DocStore = &*app.store;
    let doc = store.get_doc(&id, ledger::docs::DocKind::Limits, "card-attempts").await.unwrap();
    let doc = doc.expect("the count");
    let mut counts: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    counts["hour"] = serde_json::json!(counts["hour"].as_i64().unwrap() - 3600);
    let body = counts.to_string();
    store
        .put_doc(&id, ledger::docs::DocKind::Limits, "card-attempts", &body, Some(doc.version))
        .await
        .unwrap();
    let added = app.send("POST", "/v1/cards", &admin, &card("pm_card_visa")).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    let declined = app.pay(&admin, "try-again", "10").await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{}", declined.text);
}

async fn an_operator_lists_a_stopped_auto_recharge_and_rearms_it(app: TestApp) {
    use ledger::LedgerStore;
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let operator = app.operator();
    let set = app
        .send(
            "PUT",
            "/v1/settings/auto-recharge",
            &admin,
            r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "10", "mode": "add"}"#,
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    // As the worker leaves it after running out of attempts: nothing in flight, stopped.
    let id = ledger::AccountId::parse("acme").unwrap();
    app.store
        .modify_account(
            &id,
            std::sync::Arc::new(|a: &mut ledger::Account| {
                a.recharge_in_flight = None;
                a.recharge_stopped = Some(ledger::RechargeStop {
                    month: ledger::Month::of(chrono::Utc::now()),
                    reason: "out of attempts".into(),
                    until_lifted: true,
                    day: None,
                });
                Ok(())
            }),
            chrono::Utc::now(),
        )
        .await
        .unwrap();

    let listed = app.get("/v1/operator/auto-recharge/attention", &operator).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.json["accounts"][0]["account_id"], "acme", "{}", listed.text);
    assert_eq!(listed.json["accounts"][0]["stopped"]["reason"], "out of attempts");
    assert_eq!(listed.json["accounts"][0]["stopped"]["until_lifted"], true);
    let forbidden =
        app.send("POST", "/v1/operator/accounts/acme/auto-recharge/rearm", &admin, "").await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    let rearmed =
        app.send("POST", "/v1/operator/accounts/acme/auto-recharge/rearm", &operator, "").await;
    assert_eq!(rearmed.status, StatusCode::OK, "{}", rearmed.text);
    assert_eq!(rearmed.json["rearmed"], true);
    assert_eq!(rearmed.json["auto_recharge"]["stopped"], serde_json::Value::Null);
    assert_eq!(
        rearmed.json["auto_recharge"]["in_flight"], true,
        "below the threshold, a fresh request was raised at once"
    );
    let again =
        app.send("POST", "/v1/operator/accounts/acme/auto-recharge/rearm", &operator, "").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(
        again.json["rearmed"], true,
        "a request never picked up can be dropped and raised again"
    );
    let unknown =
        app.send("POST", "/v1/operator/accounts/ghost/auto-recharge/rearm", &operator, "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

async fn pay_now_with_an_unknown_outcome_answers_202_pending_and_announces_it(app: TestApp) {
    use ledger::LedgerStore;
    let admin = app.ready_account("acme", "pm_card_visa").await;
    app.processor.push_fault(payments::ChargeFault::AnswerLost);
    let paid = app.pay(&admin, "unknown-1", "25.00").await;
    assert_eq!(paid.status, StatusCode::ACCEPTED, "{}", paid.text);
    assert_eq!(paid.json["payment"]["status"], "pending");
    assert!(paid.json["payment"]["pending_reason"].is_string(), "{}", paid.text);
    let history = app.get("/v1/payments", &admin).await;
    assert_eq!(history.json["payments"][0]["status"], "pending", "{}", history.text);
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "0", "nothing credited while unknown");
    let id = ledger::AccountId::parse("acme").unwrap();
    let account = app.store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.pending_payments, vec!["unknown-1".to_string()]);
    let events = app.store.pending_events(50).await.unwrap();
    assert!(
        events.iter().any(|e| matches!(&e.kind, ledger::LedgerEventKind::PaymentPending { key } if key == "unknown-1")),
        "the reconciler is told: {events:?}"
    );
    // The same key with another amount is refused, never a new charge.
    let other = app.pay(&admin, "unknown-1", "26.00").await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", other.text);
    // A payment still processing that then fails is told by email once the reconciler learns
    // it (the customer who was told "pending" is gone by then).
    app.processor.push_fault(payments::ChargeFault::Processing { succeeds: false, minutes: 1 });
    let processing = app.pay(&admin, "unknown-2", "30.00").await;
    assert_eq!(processing.status, StatusCode::ACCEPTED, "{}", processing.text);
    let ports = payment_flow::PaymentPorts {
        store: &*app.store,
        processor: &*app.processor,
        notices: Some(&*app.notices),
    };
    let later = chrono::Utc::now() + chrono::Duration::minutes(5);
    app.processor.set_now(later);
    let settled = payment_flow::reconcile_pending_payment(&ports, &id, "unknown-2", later).await;
    assert_eq!(settled.unwrap(), payment_flow::Reconciled::Final);
    let failed: Vec<_> = app
        .notices
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n.kind.as_str() == "payment_failed")
        .map(|n| n.id.clone())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(app.get("/v1/overview", &admin).await.json["balance_usd"], "0");
}

async fn the_daily_cap_is_validated_shown_and_audited(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let path = "/v1/settings/auto-recharge";
    let body = |daily: &str, monthly: &str| {
        format!(
            r#"{{"enabled": true, "amount_usd": "50", "threshold_usd": "10", "mode": "add", "daily_cap_usd": {daily}, "monthly_cap_usd": {monthly}}}"#
        )
    };
    for (daily, monthly, why) in [
        (r#""49.99""#, "null", "at least one recharge"),
        (r#""300""#, r#""200""#, "above the monthly cap"),
    ] {
        let refused = app.send("PUT", path, &admin, &body(daily, monthly)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
        assert_eq!(refused.json["field"], "daily_cap_usd");
        assert!(refused.text.contains(why), "{}", refused.text);
    }
    let settings = app.get("/v1/settings", &admin).await;
    assert_eq!(settings.json["auto_recharge"], serde_json::Value::Null, "nothing changed");
    let saved = app.send("PUT", path, &admin, &body(r#""100""#, r#""500""#)).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.text);
    assert_eq!(saved.json["auto_recharge"]["daily_cap_usd"], "100");
    assert!(saved.json["auto_recharge"].get("caps_count_manual_payments").is_none());
    let switch = app
        .call(
            "PUT",
            "/v1/operator/accounts/acme/recharge-caps",
            Some(&app.operator()),
            &[],
            Some(r#"{"count_manual_payments": true}"#),
        )
        .await;
    assert_eq!(switch.status, StatusCode::OK, "{}", switch.text);
    let settings = app.get("/v1/settings", &admin).await;
    assert_eq!(settings.json["auto_recharge"]["caps_count_manual_payments"], true);
    let audit = app.get("/v1/settings/audit", &admin).await;
    assert!(audit.text.contains("recharge_caps"), "{}", audit.text);
    let forbidden = app
        .call(
            "PUT",
            "/v1/operator/accounts/acme/recharge-caps",
            Some(&admin),
            &[],
            Some(r#"{"count_manual_payments": false}"#),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
}

/// Set the expiry of `which` cards (all: `None`) to January 2020.
async fn expire(app: &TestApp, which: Option<documents::profile::CardRole>) {
    let id = ledger::AccountId::parse("acme").unwrap();
    documents::profile::update(&*app.store, &id, |p| {
        for card in p.cards.iter_mut().filter(|c| which.is_none_or(|role| c.role == role)) {
            card.exp_month = 1;
            card.exp_year = 2020;
        }
        Ok(())
    })
    .await
    .unwrap();
}

async fn pay_now_skips_an_expired_primary_for_a_backup_without_asking_the_processor(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let backup = r#"{"payment_method_token": "pm_card_mastercard", "card_manager_email": "c@acme.example", "role": "backup"}"#;
    assert_eq!(app.send("POST", "/v1/cards", &admin, backup).await.status, StatusCode::CREATED);
    expire(&app, Some(documents::profile::CardRole::Primary)).await;
    let primary =
        app.get("/v1/cards", &admin).await.json["cards"][0]["id"].as_str().unwrap().to_string();
    let paid = app.pay(&admin, "after-expiry", "25").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    assert_eq!(paid.json["payment"]["card_last4"], "4444", "the backup paid");
    assert_eq!(app.processor.charge_attempts(&primary), 0, "the expired card was never sent");
    expire(&app, None).await;
    let refused = app.pay(&admin, "all-expired", "25").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.json["code"], "cards_expired");
}

async fn a_pay_now_that_needs_3d_secure_answers_202_with_the_next_action(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_authenticationRequired").await;
    let reply = app.pay(&admin, "needs-3ds", "30").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json["next_action"]["type"], "use_stripe_sdk");
    let secret = reply.json["next_action"]["client_secret"].as_str().unwrap();
    let intent = reply.json["payment"]["processor_payment_id"].as_str();
    assert!(intent.is_none_or(|intent| secret.starts_with(intent)), "{}", reply.text);
    assert!(reply.json["message"].as_str().unwrap().contains("3-D Secure"));
    assert_eq!(reply.json["payment"]["status"], "pending");
    let overview = app.get("/v1/overview", &admin).await;
    assert_eq!(overview.json["balance_usd"], "0", "nothing credited before the holder acts");
}

common::in_every_mode!(
    a_pay_now_that_needs_3d_secure_answers_202_with_the_next_action,
    pay_now_skips_an_expired_primary_for_a_backup_without_asking_the_processor,
    the_daily_cap_is_validated_shown_and_audited,
    requests_without_a_valid_token_are_refused,
    billable_actions_answer_403_until_the_terms_are_accepted,
    viewers_read_and_only_admins_pay_or_change_settings,
    a_token_of_one_account_learns_nothing_about_another,
    auto_recharge_settings_are_validated_and_every_change_is_audited,
    contacts_address_and_schedule_validate_and_read_back,
    cards_register_list_change_role_and_delete_without_storing_numbers,
    pay_now_credits_once_per_idempotency_key_even_when_sent_concurrently,
    a_declined_pay_now_records_the_reason_and_credits_nothing,
    pay_now_rejects_bad_amounts_and_missing_keys_and_changes_nothing,
    activity_filters_paginates_and_exports_stable_csv,
    statements_read_download_and_queue_emails,
    operator_routes_create_accounts_and_adjust_with_a_reason_exactly_once,
    an_adjustment_key_reused_for_another_adjustment_answers_422_and_changes_nothing,
    every_route_refuses_a_query_parameter_it_does_not_take_and_changes_nothing,
    an_operator_lists_a_stopped_auto_recharge_and_rearms_it,
    pay_now_with_an_unknown_outcome_answers_202_pending_and_announces_it,
    overview_and_activity_show_the_holds_in_progress,
    an_operator_refunds_a_payment_to_its_card_once_and_never_beyond_it,
    card_testing_limits_hold_for_the_hour_and_then_reset
);
