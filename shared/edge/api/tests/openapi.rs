//! The OpenAPI document (generated from the handlers' annotations and the request and response
//! types) and the routers agree: same routes both ways, each really routed, the same query
//! parameters, and every field of every request and response type in its schema.

mod common;

use std::collections::BTreeSet;

use api::app::{openapi_json, query_parameters, ROUTES};
use common::contract::{self, accepted_fields, properties, resolve};
use common::{Mode, TestApp};
use serde_json::{json, Value};

fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(openapi_json()).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

#[test]
fn the_document_lists_exactly_the_routes_the_routers_serve() {
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .chain(api::authorization::ROUTES.iter())
        .chain(api::webhooks::ROUTES.iter())
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "routes missing from openapi.json: {missing:?}");
    assert!(extra.is_empty(), "openapi.json documents routes nobody serves: {extra:?}");
}

#[test]
fn every_documented_operation_has_responses_and_every_body_schema_resolves() {
    let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let text = operation.to_string();
            for reference in text.split("#/components/schemas/").skip(1) {
                let name: String = reference.chars().take_while(|c| c.is_alphanumeric()).collect();
                assert!(schemas.contains_key(&name), "{method} {path} refers to missing {name}");
            }
        }
    }
}

#[test]
fn every_operation_documents_exactly_the_query_parameters_its_route_takes() {
    let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let documented: BTreeSet<&str> = parameters
                .iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let taken: BTreeSet<&str> = query_parameters(method, path).iter().copied().collect();
            assert_eq!(documented, taken, "{method} {path}");
        }
    }
}

#[test]
fn the_document_says_activity_ranges_are_from_included_to_excluded() {
    let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
    for path in ["/v1/activity", "/v1/activity.csv"] {
        let operation = &doc["paths"][path]["get"];
        assert!(operation["description"].as_str().unwrap().contains("[from, to)"), "{path}");
        for parameter in operation["parameters"].as_array().unwrap() {
            let description = parameter["description"].as_str().unwrap_or_default();
            match parameter["name"].as_str() {
                Some("from") => assert!(description.contains("included"), "{path}"),
                Some("to") => assert!(description.contains("excluded"), "{path}"),
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn every_route_in_the_table_is_routed_and_the_document_is_served() {
    let app = TestApp::new(Mode::InProcess).await;
    let admin = app.admin("acme");
    let operator = app.operator();
    for (method, path) in ROUTES {
        let concrete = path.replace("{card_id}", "pm_x").replace("{account_id}", "acme");
        let token = if path.starts_with("/v1/operator") { &operator } else { &admin };
        let reply = app.call(method, &concrete, Some(token), &[], Some("{}")).await;
        assert_ne!(reply.status.as_u16(), 405, "{method} {path}");
        assert_ne!(reply.json["code"], "no_route", "{method} {path} is not routed");
    }
    let unknown = app.call("GET", "/v1/nothing-here", Some(&admin), &[], None).await;
    assert_eq!(unknown.json["code"], "no_route");
    let served = app.call("GET", "/openapi.json", None, &[], None).await;
    assert_eq!(served.status.as_u16(), 200);
    assert_eq!(served.text, openapi_json());
}

/// Request bodies: each route's documented body schema lists exactly the fields its type takes
/// and, as the type refuses unknown fields, says `additionalProperties: false`. (The monthly
/// cap was once accepted by the API and forbidden by a hand-kept document.)
#[test]
fn every_request_body_schema_lists_exactly_the_fields_its_type_accepts() {
    use api::{account, operator, payments, statements};
    let doc = contract::document();
    let empty = || json!({});
    let bodies: Vec<(&str, &str, BTreeSet<String>)> = vec![
        ("post", "/v1/terms", accepted_fields::<account::TermsBody>(empty())),
        (
            "put",
            "/v1/settings/auto-recharge",
            accepted_fields::<account::AutoRechargeBody>(empty()),
        ),
        ("put", "/v1/settings/low-balance", accepted_fields::<account::LowBalanceBody>(empty())),
        ("put", "/v1/settings/contacts", accepted_fields::<account::Contacts>(empty())),
        ("put", "/v1/settings/address", accepted_fields::<account::Address>(empty())),
        (
            "put",
            "/v1/settings/statement-schedule",
            accepted_fields::<account::ScheduleBody>(empty()),
        ),
        ("post", "/v1/cards", accepted_fields::<payments::AddCard>(empty())),
        ("post", "/v1/bank-accounts", accepted_fields::<payments::AddBankAccount>(empty())),
        (
            "post",
            "/v1/bank-accounts/{card_id}/verify",
            accepted_fields::<payments::VerifyBankAccount>(empty()),
        ),
        ("put", "/v1/cards/{card_id}/role", accepted_fields::<payments::RoleBody>(empty())),
        ("post", "/v1/payments", accepted_fields::<payments::PayNowBody>(empty())),
        ("post", "/v1/statements", accepted_fields::<statements::SendBody>(empty())),
        ("post", "/v1/operator/accounts", accepted_fields::<operator::CreateAccount>(empty())),
        (
            "put",
            "/v1/operator/accounts/{account_id}/rate-card",
            accepted_fields::<operator::RateCardBody>(empty()),
        ),
        (
            "put",
            "/v1/operator/accounts/{account_id}/credit-limit",
            accepted_fields::<operator::CreditLimitBody>(empty()),
        ),
        (
            "put",
            "/v1/operator/accounts/{account_id}/tax-exemption",
            accepted_fields::<operator::TaxExemption>(empty()),
        ),
        (
            "put",
            "/v1/operator/accounts/{account_id}/service-policy",
            accepted_fields::<operator::ServicePolicyBody>(empty()),
        ),
        (
            "post",
            "/v1/operator/accounts/{account_id}/adjustments",
            accepted_fields::<operator::AdjustmentBody>(empty()),
        ),
        (
            "post",
            "/v1/operator/accounts/{account_id}/payments/{payment_id}/refunds",
            accepted_fields::<api::refunds::RefundBody>(empty()),
        ),
        (
            "put",
            "/v1/operator/accounts/{account_id}/plan",
            accepted_fields::<api::plans::PlanBody>(empty()),
        ),
        ("put", "/v1/plan/direct-charge", accepted_fields::<api::plans::DirectChargeBody>(empty())),
        (
            "put",
            "/v1/operator/accounts/{account_id}/billing-mode",
            accepted_fields::<api::invoices::BillingModeBody>(empty()),
        ),
        (
            "post",
            "/v1/operator/accounts/{account_id}/invoices",
            accepted_fields::<api::invoices::IssueInvoiceBody>(empty()),
        ),
        (
            "post",
            "/v1/operator/accounts/{account_id}/manual-payments",
            accepted_fields::<api::invoices::ManualPaymentBody>(empty()),
        ),
        (
            "post",
            "/v1/operator/accounts/{account_id}/invoices/{month}/credit-notes",
            accepted_fields::<api::invoices::CreditNoteBody>(empty()),
        ),
        (
            "post",
            "/v1/operator/portal-sessions",
            accepted_fields::<api::portal_sessions::PortalSessionBody>(empty()),
        ),
        (
            "put",
            "/v1/operator/accounts/{account_id}/recharge-caps",
            accepted_fields::<operator::RechargeCaps>(empty()),
        ),
        (
            "post",
            "/v1/operator/accounts/{account_id}/credit-grants",
            accepted_fields::<api::grants::GrantBody>(empty()),
        ),
        (
            "post",
            "/v1/authorizations/{authorization_id}/extend",
            accepted_fields::<api::authorization::ExtendRequest>(empty()),
        ),
        (
            "post",
            "/v1/authorizations/{authorization_id}/release",
            accepted_fields::<api::authorization::ReleaseRequest>(empty()),
        ),
    ];
    let mut with_body = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation.get("requestBody").is_some() && path != "/v1/authorizations" {
                with_body.insert((method.clone(), path.clone()));
            }
        }
    }
    let checked: BTreeSet<(String, String)> =
        bodies.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    assert_eq!(with_body, checked, "every documented request body is checked here");
    for (method, path, accepted) in bodies {
        let body = &doc["paths"][path][method]["requestBody"];
        assert_eq!(body["required"], true, "{method} {path}");
        let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
        let listed: BTreeSet<String> = properties(&doc, schema).keys().cloned().collect();
        assert_eq!(listed, accepted, "{method} {path}: the schema's fields are the type's");
        assert_eq!(schema["additionalProperties"], false, "{method} {path}");
    }
    let cap = &doc["components"]["schemas"]["AutoRecharge"]["properties"]["monthly_cap_usd"];
    assert!(!cap.is_null(), "the auto-recharge body documents the monthly cap");
}

/// The platform's body is an account id plus an action; each documented variant lists exactly
/// the fields the action takes.
#[test]
fn the_authorization_request_schema_lists_each_actions_fields() {
    let doc = contract::document();
    let body = &doc["paths"]["/v1/authorizations"]["post"]["requestBody"];
    let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
    let variants = schema["oneOf"].as_array().expect("one variant per action");
    let mut actions = BTreeSet::new();
    for variant in variants {
        let variant = resolve(&doc, variant);
        let listed: BTreeSet<String> = properties(&doc, variant).keys().cloned().collect();
        let action = variant["properties"]["action"]["enum"][0].as_str().unwrap().to_string();
        let mut accepted =
            accepted_fields::<usage::authorize::Action>(json!({ "action": action.clone() }));
        accepted.extend(["account_id", "action", "authorization_id"].map(String::from));
        assert_eq!(listed, accepted, "{action}");
        assert_eq!(variant["additionalProperties"], false, "{action}");
        actions.insert(action);
    }
    assert_eq!(actions, BTreeSet::from(["call".into(), "sms".into(), "number_purchase".into()]));
}

/// Response types: a sample of each serialized (every optional field present) validates
/// against its documented schema, which fails on a property the schema does not list.
#[test]
fn every_response_field_is_in_its_schema() {
    let doc = contract::document();
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let check = |name: &str, value: Value| {
        let mut errors = Vec::new();
        contract::validate(&doc, &schema(name), &value, "$", &mut errors);
        assert!(errors.is_empty(), "{name}: {errors:?}\n{value:#}");
    };
    let payment = api::payments::PaymentView::from(&api::payments::PaymentRecord {
        payment_id: "pay_1".into(),
        amount_usd: "25.00".parse().unwrap(),
        card_id: "pm_1".into(),
        card_brand: "visa".into(),
        card_last4: "4242".into(),
        status: api::payments::PaymentStatus::Succeeded,
        trigger: api::payments::Trigger::Manual,
        created_at: chrono::Utc::now(),
        processor_payment_id: Some("pi_1".into()),
        failure_code: Some("card_declined".into()),
        failure_reason: Some("declined".into()),
        entry_seq: Some(3),
        balance_after_usd: Some("-1.5".into()),
        pending_reason: Some("timeout".into()),
        refunds: vec![documents::payment::RefundLine {
            refund_id: "r-1".into(),
            amount_usd: "5.25".parse().unwrap(),
            reason: "duplicate".into(),
            status: documents::payment::RefundStatus::Failed,
            requested_at: chrono::Utc::now(),
            by: Some("ops@example.com".into()),
            processor_refund_id: Some("re_1".into()),
            entry_seq: Some(4),
            reversal_seq: Some(5),
            failure_reason: Some("account closed".into()),
        }],
        disputes: vec![documents::payment::DisputeLine {
            dispute_id: "dp_1".into(),
            amount_usd: "5".parse().unwrap(),
            fee_usd: "15".parse().unwrap(),
            status: documents::payment::DisputeOutcome::Won,
            withdrawn_seqs: vec![6, 7],
            reinstated_seqs: vec![8, 9],
            opened_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }],
    });
    assert_eq!(payment.refundable_usd.as_deref(), Some("25"), "a failed refund returns nothing");
    check("Payment", serde_json::to_value(&payment).unwrap());
    let authorization = json!({
        "account_id": "acme", "allowed": false, "reason": "suspended",
        "max_duration_seconds": 60, "message": "no",
    });
    check("AuthorizationDecision", authorization);
    let hold = ledger::Hold {
        id: "call-1".into(),
        purpose: ledger::HoldPurpose::Call,
        amount_usd: rust_decimal::Decimal::new(725, 4),
        granted_seconds: Some(300),
        call: None,
        extensions: 1,
        created_at: chrono::Utc::now(),
        expires_at: chrono::Utc::now(),
        settled: true,
    };
    let held =
        serde_json::to_value(api::authorization::HoldView::of(&hold, chrono::Utc::now())).unwrap();
    check(
        "AuthorizationDecision",
        json!({
            "account_id": "acme", "allowed": true, "reason": "insufficient_available_balance",
            "max_duration_seconds": 300, "message": "no", "hold": held,
            "available_usd": "1.5", "replayed": true,
        }),
    );
}

/// The checker every API test's replies go through catches a field the document does not
/// list, a missing required field and a status the route does not document.
#[test]
fn the_reply_check_catches_undocumented_fields_and_statuses() {
    let doc = contract::document();
    let check = |status: u16, body: Value| {
        let text = body.to_string();
        let json = Some("application/json");
        contract::check_reply(&doc, "PUT", "/v1/settings/low-balance", status, json, &text)
    };
    assert_eq!(check(200, json!({ "low_balance_usd": "10" })), Ok(()));
    assert_eq!(check(200, json!({ "low_balance_usd": null })), Ok(()));
    let extra = check(200, json!({ "low_balance_usd": "10", "surprise": 1 })).unwrap_err();
    assert!(extra.contains("surprise"), "{extra}");
    assert!(check(200, json!({ "low_balance_usd": 10 })).is_err(), "amounts are strings");
    assert!(check(400, json!({ "message": "no code" })).is_err());
    assert!(check(418, json!({})).unwrap_err().contains("does not document"));
}

/// Every route answers its documented success once, each reply checked against the document
/// on the way (see `TestApp::call`): together with the API suites, every response type meets
/// its schema.
#[tokio::test]
async fn every_route_answers_its_documented_success() {
    let app = TestApp::new(Mode::InProcess).await;
    let operator = app.operator();
    let admin = app.ready_account("acme", "pm_card_visa").await;
    let key = |k: &'static str| [("idempotency-key", k)];
    let mut seen = BTreeSet::new();
    let mut expect = |method: &str, path: &str, status: u16, reply: common::Reply| {
        assert_eq!(reply.status.as_u16(), status, "{method} {path}: {}", reply.text);
        seen.insert((method.to_string(), path.to_string()));
    };
    let calls: Vec<(&str, &str, &str, Option<&str>, u16)> = vec![
        ("GET", "/v1/overview", "/v1/overview", None, 200),
        ("GET", "/v1/settings", "/v1/settings", None, 200),
        (
            "PUT",
            "/v1/settings/auto-recharge",
            "/v1/settings/auto-recharge",
            Some(
                r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "10", "mode": "add", "monthly_cap_usd": "200"}"#,
            ),
            200,
        ),
        (
            "PUT",
            "/v1/settings/low-balance",
            "/v1/settings/low-balance",
            Some(r#"{"level_usd": "20"}"#),
            200,
        ),
        (
            "PUT",
            "/v1/settings/contacts",
            "/v1/settings/contacts",
            Some(
                r#"{"billing_emails": ["a@acme.example"], "recharge_failure_email": "b@acme.example", "critical_phone": "+15550001111"}"#,
            ),
            200,
        ),
        (
            "PUT",
            "/v1/settings/address",
            "/v1/settings/address",
            Some(
                r#"{"line1": "1 Main St", "city": "Austin", "region": "TX", "postal_code": "78701", "country": "US"}"#,
            ),
            200,
        ),
        (
            "PUT",
            "/v1/settings/statement-schedule",
            "/v1/settings/statement-schedule",
            Some(r#"{"schedule": "monthly"}"#),
            200,
        ),
        ("GET", "/v1/settings", "/v1/settings", None, 200),
        ("POST", "/v1/payments", "/v1/payments", Some(r#"{"amount_usd": "25.00"}"#), 201),
        ("GET", "/v1/payments", "/v1/payments", None, 200),
        ("GET", "/v1/settings/audit", "/v1/settings/audit", None, 200),
        ("GET", "/v1/plan", "/v1/plan", None, 200),
        ("GET", "/v1/activity", "/v1/activity", None, 200),
        ("GET", "/v1/activity.csv", "/v1/activity.csv?limit=1", None, 200),
        ("GET", "/v1/statement", "/v1/statement?from=2026-01-01&to=2026-01-31", None, 200),
        ("GET", "/v1/statement.csv", "/v1/statement.csv?from=2026-01-01&to=2026-01-31", None, 200),
        (
            "POST",
            "/v1/statements",
            "/v1/statements",
            Some(r#"{"from": "2026-01-01", "to": "2026-01-31"}"#),
            202,
        ),
        ("GET", "/v1/cards", "/v1/cards", None, 200),
        (
            "POST",
            "/v1/cards",
            "/v1/cards",
            Some(
                r#"{"payment_method_token": "pm_card_chargeDeclined", "card_manager_email": "c@acme.example", "role": "backup"}"#,
            ),
            201,
        ),
    ];
    for (method, template, path, body, status) in calls {
        let reply = app.call(method, path, Some(&admin), &key("success-1"), body).await;
        expect(method, template, status, reply);
    }
    let cards = app.get("/v1/cards", &admin).await.json;
    let backup = cards["cards"][1]["id"].as_str().unwrap().to_string();
    let role = format!("/v1/cards/{backup}/role");
    let reply = app.send("PUT", &role, &admin, r#"{"role": "primary"}"#).await;
    expect("PUT", "/v1/cards/{card_id}/role", 200, reply);
    // The declined card is primary now: Pay Now answers 402 with the failed payment.
    let declined = app.pay(&admin, "declined-1", "30.00").await;
    expect("POST", "/v1/payments", 402, declined);
    let reply = app.call("DELETE", &format!("/v1/cards/{backup}"), Some(&admin), &[], None).await;
    expect("DELETE", "/v1/cards/{card_id}", 204, reply);
    let reply = app.send("POST", "/v1/terms", &admin, r#"{"version": "2026-02"}"#).await;
    expect("POST", "/v1/terms", 200, reply);
    // A bank account waiting for its microdeposits, then verified.
    let bank = r#"{"payment_method_token": "pm_usBankAccount_microdeposits", "manager_email": "ap@acme.example", "role": "backup", "mandate_accepted": true}"#;
    let added = app.send("POST", "/v1/bank-accounts", &admin, bank).await;
    let account = added.json["card"]["id"].as_str().unwrap().to_string();
    expect("POST", "/v1/bank-accounts", 201, added);
    let verify = format!("/v1/bank-accounts/{account}/verify");
    let reply = app.send("POST", &verify, &admin, r#"{"amounts_cents": [32, 45]}"#).await;
    expect("POST", "/v1/bank-accounts/{card_id}/verify", 200, reply);

    let operator_calls: Vec<(&str, &str, Option<&str>, u16)> = vec![
        (
            "POST",
            "/v1/operator/accounts",
            Some(r#"{"account_id": "other", "credit_limit_usd": "100"}"#),
            201,
        ),
        ("GET", "/v1/operator/accounts/{account_id}", None, 200),
        (
            "PUT",
            "/v1/operator/accounts/{account_id}/rate-card",
            Some(r#"{"rate_card": null}"#),
            200,
        ),
        (
            "PUT",
            "/v1/operator/accounts/{account_id}/credit-limit",
            Some(r#"{"credit_limit_usd": "50"}"#),
            200,
        ),
        (
            "PUT",
            "/v1/operator/accounts/{account_id}/tax-exemption",
            Some(r#"{"tax_exempt": true}"#),
            200,
        ),
        (
            "PUT",
            "/v1/operator/accounts/{account_id}/service-policy",
            Some(
                r#"{"inbound_grace_usd": "5", "inbound_grace_hours": null, "release_after_days": 30}"#,
            ),
            200,
        ),
        (
            "POST",
            "/v1/operator/accounts/{account_id}/adjustments",
            Some(r#"{"kind": "credit", "amount_usd": "5", "reason": "goodwill"}"#),
            201,
        ),
        (
            "POST",
            "/v1/operator/accounts/{account_id}/adjustments",
            Some(r#"{"kind": "credit", "amount_usd": "5", "reason": "goodwill"}"#),
            200,
        ),
        (
            "PUT",
            "/v1/operator/accounts/{account_id}/recharge-caps",
            Some(r#"{"count_manual_payments": true}"#),
            200,
        ),
        (
            "PUT",
            "/v1/operator/accounts/{account_id}/plan",
            Some(r#"{"name": "Pro", "price_usd": "29", "period": "monthly"}"#),
            200,
        ),
        ("DELETE", "/v1/operator/accounts/{account_id}/plan", None, 200),
        ("POST", "/v1/operator/accounts/{account_id}/auto-recharge/rearm", None, 200),
        ("GET", "/v1/operator/auto-recharge/attention", None, 200),
    ];
    for (method, template, body, status) in operator_calls {
        let path = template.replace("{account_id}", "acme");
        let reply = app.call(method, &path, Some(&operator), &key("adjust-1"), body).await;
        expect(method, template, status, reply);
    }
    let history = app.call("GET", "/v1/payments", Some(&admin), &[], None).await.json;
    let paid = history["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["status"] == "succeeded")
        .expect("a succeeded payment")["payment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let template = "/v1/operator/accounts/{account_id}/payments/{payment_id}/refunds";
    let path = template.replace("{account_id}", "acme").replace("{payment_id}", &paid);
    let body = r#"{"amount_usd": "1", "reason": "test"}"#;
    let reply = app.call("POST", &path, Some(&operator), &key("refund-1"), Some(body)).await;
    expect("POST", template, 201, reply);
    let grants = "/v1/operator/accounts/{account_id}/credit-grants";
    let path = grants.replace("{account_id}", "acme");
    let body = r#"{"amount_usd": "5", "category": "promotional", "reason": "welcome"}"#;
    for status in [201, 200] {
        let reply = app.call("POST", &path, Some(&operator), &key("welcome-1"), Some(body)).await;
        expect("POST", grants, status, reply);
    }
    let reply = app.call("GET", &path, Some(&operator), &[], None).await;
    expect("GET", grants, 200, reply);
    let void = "/v1/operator/accounts/{account_id}/credit-grants/{grant_id}/void";
    let path = void.replace("{account_id}", "acme").replace("{grant_id}", "cg:welcome-1");
    let reply = app.call("POST", &path, Some(&operator), &[], None).await;
    expect("POST", void, 200, reply);
    // The plan (set above, ending at its renewal) paid by card from now on.
    let direct = "/v1/plan/direct-charge";
    let reply = app.call("PUT", direct, Some(&admin), &[], Some(r#"{"enabled": true}"#)).await;
    expect("PUT", direct, 200, reply);
    // acme becomes a client of an agency; the agency's user sees the roll-up; then it leaves.
    let created =
        app.send("POST", "/v1/operator/accounts", &operator, r#"{"account_id": "agency"}"#);
    assert_eq!(created.await.status.as_u16(), 201);
    let link = "/v1/operator/agencies/{agency_id}/clients/{client_id}";
    let path = "/v1/operator/agencies/agency/clients/acme";
    expect("PUT", link, 200, app.call("PUT", path, Some(&operator), &[], None).await);
    let rollup = "/v1/agency/clients";
    let agency = app.agency_admin("agency");
    expect("GET", rollup, 200, app.call("GET", rollup, Some(&agency), &[], None).await);
    expect("DELETE", link, 200, app.call("DELETE", path, Some(&operator), &[], None).await);
    // acme becomes postpaid, is invoiced for last month and pays by cheque.
    let limit = "/v1/operator/accounts/acme/credit-limit";
    let body = r#"{"credit_limit_usd": "100"}"#;
    assert_eq!(app.call("PUT", limit, Some(&operator), &[], Some(body)).await.status.as_u16(), 200);
    let mode = "/v1/operator/accounts/{account_id}/billing-mode";
    let path = mode.replace("{account_id}", "acme");
    let body = r#"{"mode": "postpaid"}"#;
    expect("PUT", mode, 200, app.call("PUT", &path, Some(&operator), &[], Some(body)).await);
    let last_month = ledger::Month::of(chrono::Utc::now()).previous();
    let last_month = last_month.to_string();
    let issue = "/v1/operator/accounts/{account_id}/invoices";
    let path = issue.replace("{account_id}", "acme");
    let body = format!(r#"{{"month": "{last_month}"}}"#);
    expect("POST", issue, 201, app.call("POST", &path, Some(&operator), &[], Some(&body)).await);
    expect(
        "GET",
        "/v1/invoices",
        200,
        app.call("GET", "/v1/invoices", Some(&admin), &[], None).await,
    );
    let one = "/v1/invoices/{month}";
    let path = one.replace("{month}", &last_month);
    expect("GET", one, 200, app.call("GET", &path, Some(&admin), &[], None).await);
    let manual = "/v1/operator/accounts/{account_id}/manual-payments";
    let path = manual.replace("{account_id}", "acme");
    let body = r#"{"method": "e_transfer", "amount_usd": "5", "reference": "ET-1", "received_on": "2026-12-01"}"#;
    let reply = app.call("POST", &path, Some(&operator), &key("cheque-1"), Some(body)).await;
    expect("POST", manual, 201, reply);
    // A fresh postpaid account with a call at the end of last month: its invoice asks for
    // something, which a credit note corrects.
    let created =
        app.send("POST", "/v1/operator/accounts", &operator, r#"{"account_id": "notes"}"#);
    assert_eq!(created.await.status.as_u16(), 201);
    let late =
        ledger::Month::of(chrono::Utc::now()).previous().end() - chrono::Duration::seconds(1);
    let late_call = ledger::Posting::usage(
        ledger::SourceId::parse("use:openapi-late#call").unwrap(),
        ledger::BillingItem::PhoneCall,
        ledger::Amount::new(rust_decimal::Decimal::from(5)).unwrap(),
        late,
    )
    .unwrap();
    let notes = ledger::AccountId::parse("notes").unwrap();
    ledger::LedgerStore::post(&*app.store, &notes, vec![late_call], late).await.unwrap();
    let body = r#"{"credit_limit_usd": "100"}"#;
    let path = "/v1/operator/accounts/notes/credit-limit";
    assert_eq!(app.call("PUT", path, Some(&operator), &[], Some(body)).await.status.as_u16(), 200);
    let path = "/v1/operator/accounts/notes/billing-mode";
    let body = r#"{"mode": "postpaid"}"#;
    assert_eq!(app.call("PUT", path, Some(&operator), &[], Some(body)).await.status.as_u16(), 200);
    let path = "/v1/operator/accounts/notes/invoices";
    let body = format!(r#"{{"month": "{last_month}"}}"#);
    let reply = app.call("POST", path, Some(&operator), &[], Some(&body)).await;
    assert_eq!(reply.status.as_u16(), 201);
    let note = "/v1/operator/accounts/{account_id}/invoices/{month}/credit-notes";
    let path = note.replace("{account_id}", "notes").replace("{month}", &last_month);
    let body = r#"{"amount_usd": "0.01", "reason": "goodwill"}"#;
    let reply = app.call("POST", &path, Some(&operator), &key("cn-1"), Some(body)).await;
    expect("POST", note, 201, reply);
    let portal = "/v1/operator/portal-sessions";
    let body = r#"{"account_id": "acme", "user": "ann@acme.example", "role": "viewer"}"#;
    expect("POST", portal, 201, app.call("POST", portal, Some(&operator), &[], Some(body)).await);
    let served: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(seen, served, "every route answered its success");
}

/// Routes are registered from their annotations (`utoipa_axum::routes!`), which document them;
/// a plain axum `.route(...)` would serve a path the document does not know. Only the public
/// `/openapi.json` and `/health` are registered so.
#[test]
fn every_route_is_registered_through_its_annotation() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut plain = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let route = rest.trim_start().split(',').next().unwrap_or_default().trim();
            if !["\"/openapi.json\"", "\"/health\""].contains(&route) {
                plain.push(format!("{}: {route}", path.display()));
            }
        }
    }
    assert!(plain.is_empty(), "routes registered without routes!(...): {plain:?}");
}
