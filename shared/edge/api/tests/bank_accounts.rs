//! US bank accounts (ACH) through the API (issue 15), in process, over HTTP and as API Gateway
//! events: registered with the holder's mandate, verified by microdeposits when the processor
//! needs it, and debited like a card except that a payment is pending for days and credited
//! only when it succeeds (or marked failed, with an email).

mod common;

use axum::http::StatusCode;
use common::{Mode, TestApp};

fn bank(token: &str, role: &str, mandate: bool) -> String {
    format!(
        r#"{{"payment_method_token": "{token}", "manager_email": "ap@acme.example", "role": "{role}", "mandate_accepted": {mandate}}}"#
    )
}

/// The payments worker's step for a pending Pay Now, days later.
async fn settle(app: &TestApp, key: &str, after: chrono::Duration) -> payment_flow::Reconciled {
    let ports = payment_flow::PaymentPorts {
        store: &*app.store,
        processor: &*app.processor,
        notices: Some(&*app.notices),
    };
    let later = chrono::Utc::now() + after;
    app.processor.set_now(later);
    let id = ledger::AccountId::parse("acme").unwrap();
    payment_flow::reconcile_pending_payment(&ports, &id, key, later).await.unwrap()
}

async fn a_bank_account_pays_days_later_and_is_credited_once(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    // No mandate, or a card sent as a bank account (and the other way round): refused.
    let refused = app
        .send("POST", "/v1/bank-accounts", &admin, &bank("pm_usBankAccount", "primary", false))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert_eq!(refused.json["field"], "mandate_accepted");
    let card =
        app.send("POST", "/v1/bank-accounts", &admin, &bank("pm_card_visa", "primary", true)).await;
    assert_eq!(card.status, StatusCode::BAD_REQUEST, "{}", card.text);
    let body = r#"{"payment_method_token": "pm_usBankAccount", "card_manager_email": "a@acme.example", "role": "primary"}"#;
    let as_card = app.send("POST", "/v1/cards", &admin, body).await;
    assert_eq!(as_card.status, StatusCode::BAD_REQUEST, "{}", as_card.text);
    assert_eq!(app.get("/v1/cards", &admin).await.json["cards"].as_array().unwrap().len(), 1);

    let added = app
        .send("POST", "/v1/bank-accounts", &admin, &bank("pm_usBankAccount", "primary", true))
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert_eq!(added.json["card"]["kind"], "us_bank_account");
    assert_eq!(added.json["card"]["verified"], true);
    assert_eq!(added.json["card"]["expired"], false);
    // Pay Now from the account: pending (ACH takes days), nothing credited yet.
    let paid = app.pay(&admin, "ach-1", "40").await;
    assert_eq!(paid.status, StatusCode::ACCEPTED, "{}", paid.text);
    assert_eq!(app.get("/v1/overview", &admin).await.json["balance_usd"], "0");
    assert!(matches!(
        settle(&app, "ach-1", chrono::Duration::days(1)).await,
        payment_flow::Reconciled::NotYet(_)
    ));
    assert_eq!(
        settle(&app, "ach-1", chrono::Duration::days(4)).await,
        payment_flow::Reconciled::Final
    );
    assert_eq!(
        settle(&app, "ach-1", chrono::Duration::days(5)).await,
        payment_flow::Reconciled::Final
    );
    assert_eq!(app.get("/v1/overview", &admin).await.json["balance_usd"], "40");
    let history = app.get("/v1/payments", &admin).await;
    assert_eq!(history.json["payments"][0]["status"], "succeeded", "{}", history.text);
    // The same key again answers the same payment, credited once.
    let again = app.pay(&admin, "ach-1", "40").await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(app.get("/v1/overview", &admin).await.json["balance_usd"], "40");
}

async fn an_unverified_account_is_never_debited_and_a_returned_debit_is_told(app: TestApp) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let cards = app.get("/v1/cards", &admin).await.json;
    let visa = cards["cards"][0]["id"].as_str().unwrap().to_string();
    let removed = app.call("DELETE", &format!("/v1/cards/{visa}"), Some(&admin), &[], None).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text);
    let added = app
        .send(
            "POST",
            "/v1/bank-accounts",
            &admin,
            &bank("pm_usBankAccount_microdeposits", "primary", true),
        )
        .await;
    assert_eq!(added.json["card"]["verified"], false, "{}", added.text);
    let account = added.json["card"]["id"].as_str().unwrap().to_string();
    let refused = app.pay(&admin, "ach-2", "40").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.json["code"], "unverified_bank_account");
    assert_eq!(app.charges(&admin).await, 0);
    let verify = format!("/v1/bank-accounts/{account}/verify");
    let wrong = app.send("POST", &verify, &admin, r#"{"amounts_cents": [1, 2]}"#).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.text);
    assert_eq!(wrong.json["field"], "amounts_cents");
    let bad = app.send("POST", &verify, &admin, r#"{"amounts_cents": [32]}"#).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let unknown = app
        .send("POST", "/v1/bank-accounts/pm_nope/verify", &admin, r#"{"amounts_cents": [32, 45]}"#)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let verified = app.send("POST", &verify, &admin, r#"{"amounts_cents": [45, 32]}"#).await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.text);
    assert_eq!(verified.json["card"]["verified"], true);
    assert_eq!(app.pay(&admin, "ach-3", "40").await.status, StatusCode::ACCEPTED);

    // An account whose debits come back: pending, then failed with the reason and an email.
    let poor = app
        .send(
            "POST",
            "/v1/bank-accounts",
            &admin,
            &bank("pm_usBankAccount_insufficientFunds", "primary", true),
        )
        .await;
    assert_eq!(poor.status, StatusCode::CREATED, "{}", poor.text);
    assert_eq!(app.pay(&admin, "ach-4", "25").await.status, StatusCode::ACCEPTED);
    assert_eq!(
        settle(&app, "ach-4", chrono::Duration::days(4)).await,
        payment_flow::Reconciled::Final
    );
    let history = app.get("/v1/payments", &admin).await;
    let failed = history.json["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["status"] == "failed")
        .cloned();
    let failed = failed.unwrap_or_else(|| panic!("{}", history.text));
    assert!(failed["failure_reason"].as_str().is_some_and(|r| !r.is_empty()), "{failed}");
    let emailed = app
        .notices
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n.kind.as_str() == "payment_failed")
        .count();
    assert_eq!(emailed, 1);
    assert_eq!(
        app.get("/v1/overview", &admin).await.json["balance_usd"],
        "0",
        "the returned debit credited nothing"
    );
}

async fn microdeposit_guesses_are_limited_and_an_unverified_account_waits_as_a_backup(
    app: TestApp,
) {
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let added = app
        .send(
            "POST",
            "/v1/bank-accounts",
            &admin,
            &bank("pm_usBankAccount_microdeposits", "primary", true),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert_eq!(added.json["card"]["role"], "backup", "the card that pays stays primary");
    let account = added.json["card"]["id"].as_str().unwrap().to_string();
    let primary = app
        .send("PUT", &format!("/v1/cards/{account}/role"), &admin, r#"{"role": "primary"}"#)
        .await;
    assert_eq!(primary.status, StatusCode::CONFLICT, "{}", primary.text);
    let verify = format!("/v1/bank-accounts/{account}/verify");
    for guess in [[1, 2], [3, 4], [5, 6]] {
        let body = format!(r#"{{"amounts_cents": [{}, {}]}}"#, guess[0], guess[1]);
        assert_eq!(app.send("POST", &verify, &admin, &body).await.status, StatusCode::BAD_REQUEST);
    }
    let limited = app.send("POST", &verify, &admin, r#"{"amounts_cents": [32, 45]}"#).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text);
    let cards = app.get("/v1/cards", &admin).await.json;
    let bank_card = cards["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == account.as_str())
        .cloned()
        .unwrap();
    assert_eq!(bank_card["verified"], false);
}

common::in_every_mode!(
    a_bank_account_pays_days_later_and_is_credited_once,
    an_unverified_account_is_never_debited_and_a_returned_debit_is_told,
    microdeposit_guesses_are_limited_and_an_unverified_account_waits_as_a_backup,
);
