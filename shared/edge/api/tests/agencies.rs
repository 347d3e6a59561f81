//! Agency accounts through the API (issue 15), in process, over HTTP and as API Gateway
//! events: an agency's cards pay for its clients, which keep their own balances; agency users
//! act on their clients by naming them, and nobody else reaches another tenant.

mod common;

use axum::http::StatusCode;
use common::{Mode, TestApp};

const NAMED: &str = "ringledger-account";

/// An operator-created account whose admin accepted the terms (no card).
async fn bare_account(app: &TestApp, id: &str) -> String {
    let body = format!(r#"{{"account_id": "{id}"}}"#);
    let created = app.send("POST", "/v1/operator/accounts", &app.operator(), &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let admin = app.admin(id);
    let terms = app.send("POST", "/v1/terms", &admin, r#"{"version": "2026-01"}"#).await;
    assert_eq!(terms.status, StatusCode::OK, "{}", terms.text);
    admin
}

async fn link(app: &TestApp, agency: &str, client: &str) -> common::Reply {
    let path = format!("/v1/operator/agencies/{agency}/clients/{client}");
    app.call("PUT", &path, Some(&app.operator()), &[], None).await
}

const RECHARGE: &str =
    r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "10", "mode": "add"}"#;

async fn an_agency_pays_for_its_clients_who_keep_their_own_balances(app: TestApp) {
    let agency_admin_own = app.ready_account("agency", "pm_card_visa").await;
    let client_a = bare_account(&app, "client-a").await;
    bare_account(&app, "client-b").await;
    for client in ["client-a", "client-b"] {
        let linked = link(&app, "agency", client).await;
        assert_eq!(linked.status, StatusCode::OK, "{}", linked.text);
    }
    // Sent again: the same link.
    let again = link(&app, "agency", "client-a").await;
    assert_eq!(again.json["clients"], serde_json::json!(["client-a", "client-b"]));

    let agency = app.agency_admin("agency");
    let on_a = [(NAMED, "client-a")];
    // The agency's user sets client A's auto-recharge and pays for it with the agency's card.
    let saved =
        app.call("PUT", "/v1/settings/auto-recharge", Some(&agency), &on_a, Some(RECHARGE)).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.text);
    let pay = app
        .call(
            "POST",
            "/v1/payments",
            Some(&agency),
            &[(NAMED, "client-a"), ("idempotency-key", "a-1")],
            Some(r#"{"amount_usd": "30"}"#),
        )
        .await;
    assert_eq!(pay.status, StatusCode::CREATED, "{}", pay.text);
    assert_eq!(app.charges(&agency_admin_own).await, 1, "charged to the agency's card");
    let overview_a = app.call("GET", "/v1/overview", Some(&agency), &on_a, None).await;
    assert_eq!(overview_a.json["account_id"], "client-a");
    assert_eq!(overview_a.json["balance_usd"], "30");
    assert_eq!(app.get("/v1/overview", &agency).await.json["balance_usd"], "0");
    assert_eq!(app.get("/v1/overview", &client_a).await.json["balance_usd"], "30");
    // The agency's user sees the agency's cards on a client; the client's own users see none
    // (nor their managers' addresses).
    let cards = app.call("GET", "/v1/cards", Some(&agency), &on_a, None).await;
    assert_eq!(cards.json["cards"].as_array().unwrap().len(), 1, "{}", cards.text);
    let cards = app.get("/v1/cards", &client_a).await;
    assert_eq!(cards.json["cards"], serde_json::json!([]), "{}", cards.text);
    let activity_b =
        app.call("GET", "/v1/activity", Some(&agency), &[(NAMED, "client-b")], None).await;
    assert_eq!(activity_b.json["entries"], serde_json::json!([]), "{}", activity_b.text);
    // The roll-up.
    let rollup = app.get("/v1/agency/clients", &agency).await;
    assert_eq!(rollup.status, StatusCode::OK, "{}", rollup.text);
    let clients = rollup.json["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    assert_eq!(
        (&clients[0]["account_id"], &clients[0]["balance_usd"]),
        (&"client-a".into(), &"30".into())
    );
    assert_eq!(clients[0]["auto_recharge"], true);
    assert_eq!(rollup.json["total_balance_usd"], "30");

    // The client's own admin reads but does not run its billing: the agency does.
    assert_eq!(app.pay(&client_a, "own-1", "20").await.status, StatusCode::FORBIDDEN);
    let own = app.send("PUT", "/v1/settings/auto-recharge", &client_a, RECHARGE).await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.text);
    let card = r#"{"payment_method_token": "pm_card_visa", "card_manager_email": "a@client-a.example", "role": "primary"}"#;
    let added = app.send("POST", "/v1/cards", &client_a, card).await;
    assert_eq!(added.status, StatusCode::CONFLICT, "{}", added.text);
    assert_eq!(added.json["code"], "agency_cards");
    assert_eq!(
        app.get("/v1/overview", &client_a).await.json["balance_usd"],
        "30",
        "nothing changed"
    );
    assert_eq!(app.charges(&agency_admin_own).await, 1);
}

async fn nobody_reaches_another_tenant(app: TestApp) {
    app.ready_account("agency", "pm_card_visa").await;
    let client_a = bare_account(&app, "client-a").await;
    bare_account(&app, "client-b").await;
    app.ready_account("other", "pm_card_mastercard").await;
    bare_account(&app, "client-c").await;
    bare_account(&app, "loner").await;
    for (agency, client) in [("agency", "client-a"), ("agency", "client-b"), ("other", "client-c")]
    {
        assert_eq!(link(&app, agency, client).await.status, StatusCode::OK);
    }
    let agency = app.agency_admin("agency");
    // Another agency's client, an unrelated account, another agency, an unknown id: none exist
    // for this agency's user.
    for named in ["client-c", "loner", "other", "ghost"] {
        let reply = app.call("GET", "/v1/overview", Some(&agency), &[(NAMED, named)], None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{named}: {}", reply.text);
    }
    let bad = app.call("GET", "/v1/overview", Some(&agency), &[(NAMED, "not an id")], None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // A client's user (or any account user) cannot name another account, nor see the roll-up.
    for token in [client_a.clone(), app.admin("loner")] {
        let reply =
            app.call("GET", "/v1/overview", Some(&token), &[(NAMED, "client-b")], None).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
        assert_eq!(app.get("/v1/agency/clients", &token).await.status, StatusCode::FORBIDDEN);
    }
    // The roll-up is asked on the agency's own account.
    let named =
        app.call("GET", "/v1/agency/clients", Some(&agency), &[(NAMED, "client-a")], None).await;
    assert_eq!(named.status, StatusCode::FORBIDDEN);
    let other = app.get("/v1/agency/clients", &app.agency_admin("other")).await;
    let ids: Vec<_> =
        other.json["clients"].as_array().unwrap().iter().map(|c| c["account_id"].clone()).collect();
    assert_eq!(ids, [serde_json::json!("client-c")]);
    // An agency viewer reads its clients and changes nothing.
    let viewer = app.agency_viewer("agency");
    let on_a = [(NAMED, "client-a")];
    assert_eq!(
        app.call("GET", "/v1/overview", Some(&viewer), &on_a, None).await.status,
        StatusCode::OK
    );
    let refused =
        app.call("PUT", "/v1/settings/auto-recharge", Some(&viewer), &on_a, Some(RECHARGE)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Links the operator may not make.
    for (agency_id, client, status) in [
        ("other", "client-a", StatusCode::CONFLICT), // another agency's client
        ("other", "agency", StatusCode::CONFLICT),   // an agency as a client
        ("client-a", "loner", StatusCode::CONFLICT), // a client as an agency
        ("agency", "agency", StatusCode::BAD_REQUEST),
        ("agency", "ghost", StatusCode::NOT_FOUND),
    ] {
        let reply = link(&app, agency_id, client).await;
        assert_eq!(reply.status, status, "{agency_id} <- {client}: {}", reply.text);
    }
    // Unlinked, client A is on its own: the agency loses it, its admin runs its billing.
    let path = "/v1/operator/agencies/agency/clients/client-a";
    let unlinked = app.call("DELETE", path, Some(&app.operator()), &[], None).await;
    assert_eq!(unlinked.json["clients"], serde_json::json!(["client-b"]), "{}", unlinked.text);
    let gone = app.call("GET", "/v1/overview", Some(&agency), &on_a, None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let own = app.send("PUT", "/v1/settings/auto-recharge", &client_a, RECHARGE).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
}

async fn racing_links_never_build_a_chain_of_agencies(app: TestApp) {
    for round in 0..8 {
        let (a, x, y) = (format!("a{round}"), format!("x{round}"), format!("y{round}"));
        for id in [&a, &x, &y] {
            bare_account(&app, id).await;
        }
        // x becomes a's client while y becomes x's: at most one of the two may hold.
        let (first, second) = tokio::join!(link(&app, &a, &x), link(&app, &x, &y));
        let profile = |id: &str| {
            let id = ledger::AccountId::parse(id).unwrap();
            let store = app.store.clone();
            async move { documents::profile::load(&*store, &id).await.unwrap().0 }
        };
        let (px, py) = (profile(&x).await, profile(&y).await);
        let chain =
            px.agency_id.is_some() && py.agency_id.as_ref().is_some_and(|o| o.as_str() == x);
        assert!(!chain, "round {round}: {} / {}", first.text, second.text);
        assert!(first.status == StatusCode::OK || second.status == StatusCode::OK);
        // An agency's list names only clients whose own link names it (after any undo).
        if px.agency_id.is_none() {
            let listed = profile(&a).await.agency_clients;
            assert!(listed.is_empty(), "round {round}: {listed:?}");
        }
    }
}

common::in_every_mode!(
    an_agency_pays_for_its_clients_who_keep_their_own_balances,
    nobody_reaches_another_tenant,
    racing_links_never_build_a_chain_of_agencies,
);
