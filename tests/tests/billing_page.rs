//! The billing settings page (issue 14) in a real browser: headless Chromium over WebDriver
//! (`e2e::browser`), the page and the account API served on loopback over DynamoDB Local,
//! cards registered and charged at localstripe.
//!
//! The journey: an operator's portal link → the terms gate → a primary and a backup card →
//! Pay Now (pressed twice: one charge) → auto-recharge refused with the reason next to the
//! field, then saved with what changed → the payment, its printable receipt and the activity
//! → the CSV export → a statement sent now. Then what must be refused: a viewer changes
//! nothing, a used or expired link opens nothing, and one account's session sees nothing of
//! another's. axe-core finds no serious or critical accessibility violation on any page, at
//! desktop and phone widths; screenshots go to `target/screenshots/`.

use std::sync::Arc;

use api::auth::{LocalJwt, Role};
use api::portal::{PortalKeys, PortalRole};
use api::state::AppState;
use chrono::{Datelike, Utc};
use e2e::browser::{screenshots_dir, Browser, DESKTOP, PHONE};
use ledger::AccountId;
use reqwest::StatusCode;
use serde_json::Value;
use usage::worker::RateCards;

/// Receipts the recharge worker published.
#[derive(Default)]
struct Receipts(std::sync::Mutex<Vec<notifications::notice::Notice>>);

#[async_trait::async_trait]
impl notifications::notice::NoticeSink for Receipts {
    async fn publish(
        &self,
        notice: &notifications::notice::Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(notice.clone());
        Ok(())
    }
}

struct Site {
    base: String,
    http: reqwest::Client,
    jwt: LocalJwt,
    keys: Arc<PortalKeys>,
    store: Arc<store_dynamodb::DynamoStore>,
    jobs: Arc<jobs::job::MemorySink>,
    processor: Arc<payments::StripeProcessor>,
}

impl Site {
    async fn start() -> Site {
        Site::start_with(None).await
    }

    /// With the processor's hosted card fields: a stand-in for Stripe.js served by this site
    /// (`/fake-stripe.js`), whose card field makes a real payment method at localstripe.
    async fn start_with(card_form: Option<api::portal::CardForm>) -> Site {
        let store = Arc::new(e2e::fresh_dynamo_store().await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut keys =
            PortalKeys::new(b"billing-page-test-secret-0123456789".to_vec(), base.clone());
        if let Some(card_form) = card_form {
            keys = keys.with_card_form(card_form);
        }
        let keys = Arc::new(keys);
        let jobs = Arc::new(jobs::job::MemorySink::default());
        let processor = Arc::new(e2e::stripe::processor());
        let state = Arc::new(AppState {
            store: store.clone(),
            cards: RateCards::standard_only(),
            processor: processor.clone(),
            notices: None,
            statements: Some(jobs.clone()),
            portal: Some(keys.clone()),
        });
        let jwt = LocalJwt::new(b"billing-page-jwt".to_vec());
        let fake_stripe = axum::Router::new()
            .route(
                "/fake-stripe.js",
                axum::routing::get(|| async {
                    ([("content-type", "application/javascript")], FAKE_STRIPE_JS)
                }),
            )
            .route("/fake-stripe/token", axum::routing::get(fake_token));
        let app = web::router(state.clone())
            .merge(fake_stripe)
            .merge(api::app::local(state, jwt.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Site { base, http: reqwest::Client::new(), jwt, keys, store, jobs, processor }
    }

    fn operator(&self) -> String {
        self.jwt.issue("ops@ringledger.example", None, Role::Operator, 600)
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn account(&self, name: &str) {
        let body = format!(r#"{{"account_id": "{name}"}}"#);
        let (status, json) = self
            .json(reqwest::Method::POST, "/v1/operator/accounts", &self.operator(), &body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
    }

    /// A one-time portal link, through the operator route.
    async fn link(&self, account: &str, user: &str, role: &str) -> String {
        let body = format!(r#"{{"account_id": "{account}", "user": "{user}", "role": "{role}"}}"#);
        let (status, json) = self
            .json(reqwest::Method::POST, "/v1/operator/portal-sessions", &self.operator(), &body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        let url = json["url"].as_str().unwrap().to_string();
        assert!(url.starts_with(&format!("{}/billing/session/", self.base)), "{url}");
        url
    }

    /// A request with the browser's session cookie, as a script on another site could not.
    async fn with_cookie(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", format!("{}={cookie}", web::COOKIE))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }
}

/// A stand-in for Stripe.js: a card field of its own (not part of our form: it has no name),
/// and `createPaymentMethod` turning what was typed into a payment method at localstripe.
const FAKE_STRIPE_JS: &str = r#"window.Stripe = function (key) {
  window.__stripeKey = key;
  return {
    elements: function () { return { create: function () { return { mount: function (selector) {
      var input = document.createElement("input");
      input.id = "fake-card-number";
      input.setAttribute("aria-label", "Card number");
      document.querySelector(selector).appendChild(input);
    } }; } }; },
    createPaymentMethod: function () {
      var number = document.getElementById("fake-card-number").value;
      return fetch("/fake-stripe/token?number=" + encodeURIComponent(number))
        .then(function (r) { return r.json(); })
        .then(function (pm) { return pm.error ? { error: pm.error } : { paymentMethod: pm }; });
    }
  };
};
"#;

async fn fake_token(
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    let number = query.get("number").cloned().unwrap_or_default();
    if number.len() != 16 || !number.chars().all(|c| c.is_ascii_digit()) {
        return axum::Json(
            serde_json::json!({ "error": { "message": "Your card number is incomplete." } }),
        );
    }
    let year = u16::try_from(Utc::now().year()).unwrap() + 3;
    let token = e2e::stripe::card_token(&reqwest::Client::new(), &number[..15], year).await;
    axum::Json(serde_json::json!({ "id": token }))
}

async fn accessible(browser: &Browser, page: &str) {
    let violations = browser.accessibility_violations().await;
    assert!(violations.is_empty(), "{page}: {violations:#?}");
}

async fn shoot(browser: &Browser, name: &str) {
    let png = screenshots_dir().join(format!("billing-{name}.png"));
    let bytes = browser.screenshot(&png).await;
    assert!(bytes.len() > 5_000, "{} looks blank", png.display());
}

#[tokio::test]
async fn a_customer_pays_and_manages_billing_from_a_portal_link() {
    let site = Site::start().await;
    let name = e2e::unique_table("web");
    site.account(&name).await;
    let url = site.link(&name, "owner@web.example", "admin").await;

    let browser = Browser::start(DESKTOP).await;
    browser.goto(&url).await;
    assert!(browser.url().await.ends_with("/billing"), "redirected to the page");
    // Terms first, nothing else.
    assert_eq!(browser.count("#terms").await, 1);
    assert_eq!(browser.count("#pay").await, 0, "nothing else until the terms are accepted");
    accessible(&browser, "terms").await;
    shoot(&browser, "terms-desktop").await;
    browser.click("#terms button[type=submit]").await;
    browser.wait_for_text("#overview", "$0.00").await;

    // A primary and a backup card (tokens made as the processor's hosted fields would).
    let year = u16::try_from(Utc::now().year()).unwrap() + 3;
    for (prefix, role) in [("424242424242424", "primary"), ("555555555555444", "backup")] {
        let token = e2e::stripe::card_token(&site.http, prefix, year).await;
        browser.fill("#methods-token", &token).await;
        browser.fill("#methods-manager", "cards@web.example").await;
        browser
            .eval(&format!(
                "document.getElementById('methods-role').value = '{role}'; return true;"
            ))
            .await;
        browser.click("form[action$='/card-add'] button[type=submit]").await;
        let last4 = &prefix[12..15];
        browser.wait_for_text("#methods", last4).await;
    }
    let methods = browser.text("#methods").await;
    assert!(methods.contains("4242") && methods.contains("4444"), "{methods}");

    // Pay Now, pressed twice before the page answers: one charge.
    browser.fill("#pay-amount", "25").await;
    browser
        .eval("const b = document.querySelector(\"form[action$='/pay'] button\"); b.click(); b.click(); return true;")
        .await;
    browser.wait_for_text("#pay", "Paid $25.00").await;
    let cookie = browser.cookie(web::COOKIE).await.expect("the session cookie");
    assert_eq!(browser.text("#balance").await, "$25.00");

    // Auto-recharge: refused with the reason at the field, then saved with what changed.
    browser
        .eval("document.querySelector(\"#auto input[name=enabled]\").checked = true; return true;")
        .await;
    browser.fill("#auto-amount", "5").await;
    browser.fill("#auto-threshold", "10").await;
    browser.click("form[action$='/auto-recharge'] button[type=submit]").await;
    let refused = browser.wait_for_text("#auto", "at least $50").await;
    assert_eq!(browser.count("#auto-amount[aria-invalid=true]").await, 1, "{refused}");
    assert!(browser.count("#auto-amount-error").await == 1, "{refused}");
    accessible(&browser, "auto-recharge refused").await;
    browser.fill("#auto-amount", "50").await;
    browser.fill("#auto-threshold", "20").await;
    browser.click("form[action$='/auto-recharge'] button[type=submit]").await;
    let saved = browser.wait_for_text("#auto", "Saved.").await;
    assert!(saved.contains("threshold"), "{saved}");
    assert!(saved.contains("below $20.00"), "{saved}");

    // Usage takes the balance below the threshold: the recharge worker (the one the local
    // runner and the auto-recharge Lambda run) charges the primary card once.
    let id = AccountId::parse(&name).unwrap();
    let call = ledger::Posting::usage(
        ledger::SourceId::parse("use:web-call-1#call").unwrap(),
        ledger::BillingItem::PhoneCall,
        "10".parse().unwrap(),
        Utc::now(),
    )
    .unwrap();
    let posted =
        ledger::LedgerStore::post(&*site.store, &id, vec![call], Utc::now()).await.unwrap();
    let request = posted
        .events
        .iter()
        .find(|e| matches!(e.kind, ledger::LedgerEventKind::RechargeRequested { .. }))
        .expect("below $20: a recharge request")
        .clone();
    let worker = recharge::RechargeWorker::new(
        site.store.clone(),
        site.processor.clone(),
        Arc::new(Receipts::default()),
    );
    for _ in 0..2 {
        // Delivered twice, charged once.
        worker.handle(&request, Utc::now()).await.unwrap();
    }
    browser.goto(&format!("{}/billing", site.base)).await;
    assert_eq!(browser.text("#balance").await, "$65.00", "25 - 10 + a 50 recharge");
    assert_eq!(browser.count("#history tr.payment").await, 2);
    // The last 30 days' usage gives the recommended settings.
    let advice = browser.text("#advice").await;
    assert!(
        advice.contains("about $10.00")
            && advice.contains("add $50.00 when the balance falls below $10.00"),
        "{advice}"
    );

    // The payments, a receipt, the activity.
    let history = browser.text("#history").await;
    assert!(history.contains("$25.00") && history.contains("$50.00"), "{history}");
    accessible(&browser, "billing page").await;
    shoot(&browser, "page-desktop").await;
    browser.click("#history tr.payment:last-child a").await;
    assert_eq!(browser.text("#receipt-amount").await, "$25.00");
    accessible(&browser, "receipt").await;
    shoot(&browser, "receipt-desktop").await;
    let receipt_url = browser.url().await;
    browser.goto(&format!("{}/billing", site.base)).await;
    assert!(browser.text("#activity").await.contains("funds added"));

    // The CSV export of the activity.
    let (status, csv) = site
        .with_cookie(reqwest::Method::GET, "/billing/activity.csv?show=credits", &cookie, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert!(csv.lines().count() >= 2 && csv.contains("funds_added"), "{csv}");

    // The service address: a bad country refused at its field, then saved.
    browser.fill("#address-line1", "1 Broadway").await;
    browser.fill("#address-city", "New York").await;
    browser.fill("#address-region", "NY").await;
    browser.fill("#address-postal_code", "10004").await;
    browser.fill("#address-country", "USA").await;
    browser.click("form[action$='/address'] button[type=submit]").await;
    browser.wait_for("#address-country[aria-invalid=true]").await;
    browser.fill("#address-country", "US").await;
    browser.click("form[action$='/address'] button[type=submit]").await;
    let saved = browser.wait_for_text("#address", "Service address saved.").await;
    assert!(saved.contains("1 Broadway, New York, NY, 10004, US"), "{saved}");

    // A statement, sent now.
    browser.click("form[action$='/statement'] button[type=submit]").await;
    browser.wait_for_text("#statements", "on its way").await;
    assert_eq!(site.jobs.0.lock().unwrap().len(), 1, "one statement job");

    // A form without the session's CSRF token changes nothing.
    let (status, _) = site
        .with_cookie(
            reqwest::Method::POST,
            "/billing/actions/pay",
            &cookie,
            &[("amount", "10"), ("key", "x-1")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The page on a phone.
    browser.close().await;
    let phone = Browser::start(PHONE).await;
    let url = site.link(&name, "owner@web.example", "admin").await;
    phone.goto(&url).await;
    let width =
        phone.eval("return [document.documentElement.scrollWidth, window.innerWidth];").await;
    assert!(width[0].as_u64() <= width[1].as_u64(), "no sideways scrolling on a phone: {width}");
    accessible(&phone, "billing page on a phone").await;
    shoot(&phone, "page-phone").await;
    phone.goto(&receipt_url).await;
    shoot(&phone, "receipt-phone").await;
    phone.close().await;

    // One charge at localstripe for the two presses, and one for the recharge.
    let (profile, _) = documents::profile::load(&*site.store, &id).await.unwrap();
    let intents = e2e::stripe_intents_of(&site.http, &profile.processor_customer_id.unwrap()).await;
    let mut charged: Vec<i64> = intents
        .iter()
        .filter(|i| i["status"] == "succeeded")
        .map(|i| i["amount"].as_i64().unwrap())
        .collect();
    charged.sort();
    assert_eq!(charged, vec![2_500, 5_000], "{intents:?}");
}

#[tokio::test]
async fn viewers_used_links_expired_links_and_other_accounts_are_refused() {
    let site = Site::start().await;
    let (a, b) = (e2e::unique_table("web-a"), e2e::unique_table("web-b"));
    site.account(&a).await;
    site.account(&b).await;

    // A link opens once.
    let url = site.link(&a, "viewer@a.example", "viewer").await;
    let first =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let opened = first.get(&url).send().await.unwrap();
    assert_eq!(opened.status(), StatusCode::SEE_OTHER);
    let set_cookie = opened.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/billing"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let again = first.get(&url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::GONE);
    assert!(again.text().await.unwrap().contains("already used"));
    // An expired link opens nothing.
    let (path, _) = site.keys.link(
        &AccountId::parse(&a).unwrap(),
        "late@a.example",
        PortalRole::Admin,
        Utc::now() - chrono::Duration::minutes(11),
    );
    let late = first.get(format!("{}{path}", site.base)).send().await.unwrap();
    assert_eq!(late.status(), StatusCode::GONE);
    assert!(late.text().await.unwrap().contains("expired"));

    // A viewer sees the page without a single form, and a change is refused.
    let viewer = Browser::start(DESKTOP).await;
    let url = site.link(&a, "viewer@a.example", "viewer").await;
    viewer.goto(&url).await;
    assert_eq!(viewer.count("form[method=post]").await, 0, "a viewer gets no forms");
    let cookie = viewer.cookie(web::COOKIE).await.unwrap();
    let csrf = site.keys.session(&cookie, Utc::now()).unwrap().csrf;
    let (status, text) = site
        .with_cookie(reqwest::Method::POST, "/billing/actions/terms", &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    accessible(&viewer, "viewer's terms page").await;
    viewer.close().await;

    // Account B pays; A's session cannot see B's payment.
    let admin_b = site.jwt.issue("admin@b.example", Some(&b), Role::Admin, 600);
    let (status, json) =
        site.json(reqwest::Method::POST, "/v1/terms", &admin_b, r#"{"version": "2026-01"}"#).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let token = e2e::stripe::card_token(&site.http, "424242424242424", 2031).await;
    let card = format!(
        r#"{{"payment_method_token": "{token}", "card_manager_email": "c@b.example", "role": "primary"}}"#
    );
    let (status, json) = site.json(reqwest::Method::POST, "/v1/cards", &admin_b, &card).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let paid = site
        .http
        .post(format!("{}/v1/payments", site.base))
        .bearer_auth(&admin_b)
        .header("idempotency-key", "b-1")
        .header("content-type", "application/json")
        .body(r#"{"amount_usd": "15"}"#)
        .send()
        .await
        .unwrap();
    let paid: Value = paid.json().await.unwrap();
    let b_payment = paid["payment"]["payment_id"].as_str().expect("B's payment").to_string();
    let (status, page) = site
        .with_cookie(reqwest::Method::GET, &format!("/billing/receipts/{b_payment}"), &cookie, &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    let (status, page) = site.with_cookie(reqwest::Method::GET, "/billing", &cookie, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&a) && !page.contains(&b), "A's page shows A only");
    // No cookie, or a forged one: the session has ended.
    let (status, _) =
        site.with_cookie(reqwest::Method::GET, "/billing", "forged.token.value", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cards_are_entered_in_the_processors_hosted_fields_when_configured() {
    let card_form = api::portal::CardForm {
        script_url: "/fake-stripe.js".into(),
        publishable_key: "pk_test_billing_page".into(),
    };
    let site = Site::start_with(Some(card_form)).await;
    let name = e2e::unique_table("web-h");
    site.account(&name).await;
    let url = site.link(&name, "owner@h.example", "admin").await;
    let browser = Browser::start(DESKTOP).await;
    browser.goto(&url).await;
    browser.click("#terms button[type=submit]").await;
    browser.wait_for_text("#overview", "$0.00").await;
    // The processor's field, not ours: no token to type, and the page's key handed over.
    assert_eq!(browser.count("#methods-token").await, 0);
    assert_eq!(browser.count("#fake-card-number").await, 1);
    assert_eq!(browser.eval("return window.__stripeKey;").await, "pk_test_billing_page");
    accessible(&browser, "hosted card fields").await;
    // An incomplete number: the processor's message, nothing sent to us.
    browser.fill("#fake-card-number", "42424242").await;
    browser.click("form[data-card-form] button[type=submit]").await;
    browser.wait_for_text("#card-error", "incomplete").await;
    assert_eq!(browser.count("#methods tr[data-card]").await, 0);
    // A whole number: the token is made at localstripe and the card registered.
    browser.fill("#fake-card-number", "4242424242424242").await;
    browser.fill("#methods-manager", "cards@h.example").await;
    browser.click("form[data-card-form] button[type=submit]").await;
    let methods = browser.wait_for_text("#methods", "Card added.").await;
    assert!(methods.contains("4242"), "{methods}");
    browser.close().await;
}
