//! Pay Now end to end: the account API's router served on loopback over DynamoDB Local, the
//! Stripe adapter charging localstripe. One charge at localstripe and one ledger credit per
//! Idempotency-Key, also for 16 concurrent requests with one key; a declined card credits
//! nothing and is recorded as a failed payment.

use std::sync::Arc;
use std::time::Duration;

use api::auth::{LocalJwt, Role};
use api::state::AppState;
use chrono::{Datelike, Utc};
use conformance::usd;
use e2e::ControlledProcessor;
use ledger::{AccountId, EntryQuery};
use payments::StripeProcessor;
use reqwest::StatusCode;
use serde_json::Value;
use store_dynamodb::DynamoStore;
use usage::worker::RateCards;

/// Receipts the API published.
#[derive(Default)]
struct RecordedNotices(std::sync::Mutex<Vec<notifications::notice::Notice>>);

#[async_trait::async_trait]
impl notifications::notice::NoticeSink for RecordedNotices {
    async fn publish(
        &self,
        notice: &notifications::notice::Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(notice.clone());
        Ok(())
    }
}

struct Reply {
    status: StatusCode,
    text: String,
    json: Value,
}

struct App {
    base_url: String,
    http: reqwest::Client,
    jwt: LocalJwt,
    store: Arc<DynamoStore>,
    processor: Arc<ControlledProcessor<StripeProcessor>>,
    notices: Arc<RecordedNotices>,
}

impl App {
    /// The local router (`serve`'s) on a loopback port, over a fresh DynamoDB Local table and
    /// localstripe; each charge is held `charge_delay` before it is sent.
    async fn start(charge_delay: Duration) -> Self {
        let store = Arc::new(e2e::fresh_dynamo_store().await);
        let mut processor = ControlledProcessor::new(e2e::stripe::processor());
        processor.charge_delay = charge_delay;
        let processor = Arc::new(processor);
        let notices = Arc::new(RecordedNotices::default());
        let state = Arc::new(AppState {
            store: store.clone(),
            cards: RateCards::standard_only(),
            processor: processor.clone(),
            notices: Some(notices.clone()),
            statements: None,
            portal: None,
        });
        let jwt = LocalJwt::new(b"pay-now-e2e-secret".to_vec());
        let router = api::app::local(state, jwt.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let base_url = format!("http://{}", listener.local_addr().expect("its address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        App { base_url, http: reqwest::Client::new(), jwt, store, processor, notices }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> Reply {
        self.call_on(None, method, path, token, key, body).await
    }

    /// A call naming the account to act on (`Ringledger-Account`: an agency user's client).
    async fn call_on(
        &self,
        named: Option<&str>,
        method: reqwest::Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> Reply {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base_url)).bearer_auth(token);
        if let Some(account) = named {
            request = request.header("ringledger-account", account);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status();
        let text = response.text().await.expect("a body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, text, json }
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(reqwest::Method::GET, path, token, None, None).await
    }

    async fn pay(&self, token: &str, key: &str, amount: &str) -> Reply {
        let body = format!(r#"{{"amount_usd": "{amount}"}}"#);
        self.call(reqwest::Method::POST, "/v1/payments", token, Some(key), Some(body)).await
    }

    /// An account an operator created, its terms accepted and one primary card on localstripe
    /// (a token made as Stripe.js would); the admin's token.
    async fn ready_account(&self, name: &str, card_prefix: &str) -> String {
        let operator = self.jwt.issue("ops@ringledger.example", None, Role::Operator, 600);
        let created = self
            .call(
                reqwest::Method::POST,
                "/v1/operator/accounts",
                &operator,
                None,
                Some(format!(r#"{{"account_id": "{name}"}}"#)),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let admin = self.jwt.issue("admin@example.com", Some(name), Role::Admin, 600);
        let terms = self
            .call(
                reqwest::Method::POST,
                "/v1/terms",
                &admin,
                None,
                Some(r#"{"version": "2026-01"}"#.into()),
            )
            .await;
        assert_eq!(terms.status, StatusCode::OK, "{}", terms.text);
        let exp_year = u16::try_from(Utc::now().year()).expect("a plausible year") + 3;
        let token = e2e::stripe::card_token(&self.http, card_prefix, exp_year).await;
        let card = self
            .call(
                reqwest::Method::POST,
                "/v1/cards",
                &admin,
                None,
                Some(format!(
                    r#"{{"payment_method_token": "{token}", "card_manager_email": "cards@{name}.example", "role": "primary"}}"#
                )),
            )
            .await;
        assert_eq!(card.status, StatusCode::CREATED, "{}", card.text);
        admin
    }

    /// The account's payment intents at localstripe (by its processor customer).
    async fn intents(&self, id: &AccountId) -> Vec<Value> {
        let (profile, _) = api::profile::load(&*self.store, id).await.expect("the profile");
        let customer = profile.processor_customer_id.expect("a processor customer");
        e2e::stripe_intents_of(&self.http, &customer).await
    }

    /// The account's ledger entries (every one, from DynamoDB Local).
    async fn entries(&self, id: &AccountId) -> Vec<ledger::Entry> {
        ledger::store::all_entries(&*self.store, id, EntryQuery::default())
            .await
            .expect("the account's entries")
    }

    async fn payments(&self, token: &str) -> Vec<Value> {
        let history = self.get("/v1/payments", token).await;
        assert_eq!(history.status, StatusCode::OK, "{}", history.text);
        history.json["payments"].as_array().cloned().expect("a payment list")
    }

    fn receipts(&self) -> usize {
        self.notices.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_now_charges_localstripe_once_and_credits_the_balance_once() {
    let app = App::start(Duration::ZERO).await;
    let name = e2e::unique_table("paynow");
    let id = AccountId::parse(&name).expect("a valid account id");
    let admin = app.ready_account(&name, e2e::stripe::VISA_SUCCESS).await;

    let paid = app.pay(&admin, "order-1", "25.50").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    assert_eq!(paid.json["payment"]["status"], "succeeded");
    assert_eq!(paid.json["payment"]["balance_after_usd"], "25.5");
    let intents = app.intents(&id).await;
    assert_eq!(intents.len(), 1, "one payment intent at localstripe: {intents:#?}");
    assert_eq!(intents[0]["amount"], 2550);
    assert_eq!(intents[0]["status"], "succeeded");
    assert_eq!(paid.json["payment"]["processor_payment_id"], intents[0]["id"]);

    // The same key again: the same answer, nothing charged or credited again.
    let again = app.pay(&admin, "order-1", "25.50").await;
    assert_eq!((again.status, &again.json), (paid.status, &paid.json), "{}", again.text);
    assert_eq!(app.intents(&id).await.len(), 1);
    let entries = app.entries(&id).await;
    assert_eq!(entries.len(), 1, "one credit: {entries:#?}");
    assert_eq!(entries[0].source_id.as_str(), "pay:order-1");
    assert_eq!(entries[0].amount_usd.value(), usd("25.50"));
    let account = conformance::assert_consistent(&*app.store, &id).await;
    assert_eq!(account.balance_usd, usd("25.50"));
    assert!(account.pending_payments.is_empty(), "{:?}", account.pending_payments);
    let payments = app.payments(&admin).await;
    assert_eq!(payments.len(), 1, "{payments:#?}");
    assert_eq!(payments[0]["status"], "succeeded");
    assert_eq!(app.receipts(), 1, "one receipt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_pay_nows_with_one_key_make_one_payment_intent_and_one_credit() {
    // The charge is held 5 s: longer than a request that finds the key taken waits for its
    // owner's answer (20 x 100 ms), so the other 15 answer while the first is still charging.
    let app = Arc::new(App::start(Duration::from_secs(5)).await);
    let name = e2e::unique_table("paynow16");
    let id = AccountId::parse(&name).expect("a valid account id");
    let admin = app.ready_account(&name, e2e::stripe::VISA_SUCCESS).await;

    let start = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, admin, start) = (app.clone(), admin.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            app.pay(&admin, "order-16", "10").await
        }));
    }
    let mut statuses = Vec::new();
    let mut payment_ids = std::collections::BTreeSet::new();
    for task in tasks {
        let reply = task.await.expect("a request task");
        match reply.status {
            StatusCode::CREATED => assert_eq!(reply.json["payment"]["status"], "succeeded"),
            StatusCode::ACCEPTED => assert_eq!(reply.json["payment"]["status"], "pending"),
            other => panic!("{other} {}", reply.text),
        }
        let payment_id = reply.json["payment"]["payment_id"].as_str().expect("a payment id");
        payment_ids.insert(payment_id.to_string());
        statuses.push(reply.status);
    }
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    assert!(created >= 1, "the request that charged answers 201: {statuses:?}");
    assert!(
        statuses.contains(&StatusCode::ACCEPTED),
        "no request found the key taken while the first was charging (202 pending), so \
         nothing concurrent was tested: {statuses:?}"
    );
    assert_eq!(payment_ids.len(), 1, "every answer names the same payment: {payment_ids:?}");

    assert_eq!(
        app.processor.charges_sent.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one charge sent to the processor"
    );
    let intents = app.intents(&id).await;
    assert_eq!(intents.len(), 1, "one payment intent at localstripe: {intents:#?}");
    assert_eq!(intents[0]["amount"], 1000);
    assert_eq!(intents[0]["status"], "succeeded");
    let entries = app.entries(&id).await;
    assert_eq!(entries.len(), 1, "one credit: {entries:#?}");
    assert_eq!(entries[0].source_id.as_str(), "pay:order-16");
    let account = conformance::assert_consistent(&*app.store, &id).await;
    assert_eq!(account.balance_usd, usd("10"));
    assert!(account.pending_payments.is_empty(), "{:?}", account.pending_payments);

    // Once settled, the key answers 201 with that payment, and still nothing more is charged.
    let settled = app.pay(&admin, "order-16", "10").await;
    assert_eq!(settled.status, StatusCode::CREATED, "{}", settled.text);
    assert_eq!(
        settled.json["payment"]["payment_id"].as_str(),
        payment_ids.iter().next().map(String::as_str)
    );
    assert_eq!(app.intents(&id).await.len(), 1);
    let payments = app.payments(&admin).await;
    assert_eq!(payments.len(), 1, "{payments:#?}");
    assert_eq!(payments[0]["status"], "succeeded");
    assert_eq!(app.receipts(), 1, "one receipt, not one per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_credits_nothing_and_records_a_failed_payment() {
    let app = App::start(Duration::ZERO).await;
    let name = e2e::unique_table("paydecl");
    let id = AccountId::parse(&name).expect("a valid account id");
    let admin = app.ready_account(&name, e2e::stripe::CHARGES_DECLINED).await;

    let declined = app.pay(&admin, "order-d", "40").await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{}", declined.text);
    assert_eq!(declined.json["code"], "card_declined");
    assert_eq!(declined.json["payment"]["status"], "failed");
    let intents = app.intents(&id).await;
    assert!(
        intents.iter().all(|pi| pi["status"] != "succeeded"),
        "a declined card was charged: {intents:#?}"
    );

    // The same key again is the same decline, and no second attempt at the processor.
    let again = app.pay(&admin, "order-d", "40").await;
    assert_eq!((again.status, &again.json), (declined.status, &declined.json), "{}", again.text);
    assert_eq!(app.intents(&id).await.len(), intents.len());
    assert_eq!(app.processor.charges_sent.load(std::sync::atomic::Ordering::SeqCst), 1);

    assert!(app.entries(&id).await.is_empty(), "nothing credited");
    let account = conformance::assert_consistent(&*app.store, &id).await;
    assert_eq!(account.balance_usd, usd("0"));
    assert!(account.pending_payments.is_empty(), "{:?}", account.pending_payments);
    let payments = app.payments(&admin).await;
    assert_eq!(payments.len(), 1, "{payments:#?}");
    assert_eq!(payments[0]["status"], "failed");
    assert_eq!(payments[0]["failure_code"], "card_declined");
    assert!(payments[0]["failure_reason"].as_str().is_some_and(|r| !r.is_empty()), "{payments:#?}");
    assert_eq!(app.receipts(), 0, "no receipt for a decline");
}

/// An agency's card at localstripe pays for its client (issue 15), over DynamoDB Local: the
/// agency's user pays into the client by naming it, and the client's plan is charged to the
/// agency's card by the payments worker's step, its balance untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_card_at_localstripe_pays_its_clients_payment_and_plan() {
    let app = App::start(Duration::ZERO).await;
    let agency = e2e::unique_table("agency");
    let client = e2e::unique_table("client");
    app.ready_account(&agency, e2e::stripe::VISA_SUCCESS).await;
    let operator = app.jwt.issue("ops@ringledger.example", None, Role::Operator, 600);
    let body = format!(r#"{{"account_id": "{client}"}}"#);
    let created =
        app.call(reqwest::Method::POST, "/v1/operator/accounts", &operator, None, Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let client_admin = app.jwt.issue("admin@client.example", Some(&client), Role::Admin, 600);
    let terms = r#"{"version": "2026-01"}"#.to_string();
    let accepted =
        app.call(reqwest::Method::POST, "/v1/terms", &client_admin, None, Some(terms)).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    let link = format!("/v1/operator/agencies/{agency}/clients/{client}");
    let linked = app.call(reqwest::Method::PUT, &link, &operator, None, None).await;
    assert_eq!(linked.status, StatusCode::OK, "{}", linked.text);

    let user = app.jwt.issue("billing@agency.example", Some(&agency), Role::AgencyAdmin, 600);
    let pay = r#"{"amount_usd": "30"}"#.to_string();
    let paid = app
        .call_on(
            Some(&client),
            reqwest::Method::POST,
            "/v1/payments",
            &user,
            Some("fund-1"),
            Some(pay),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    let agency_id = AccountId::parse(&agency).unwrap();
    let client_id = AccountId::parse(&client).unwrap();
    let intents = app.intents(&agency_id).await;
    assert_eq!(intents.len(), 1, "charged on the agency's customer: {intents:#?}");
    assert_eq!(intents[0]["amount"], 3000);
    assert_eq!(
        conformance::assert_consistent(&*app.store, &client_id).await.balance_usd,
        usd("30")
    );

    let plan = r#"{"name": "Pro", "price_usd": "29", "period": "monthly", "direct_charge": true}"#;
    let set = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/operator/accounts/{client}/plan"),
            &operator,
            None,
            Some(plan.into()),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(set.json["card_charge_pending"], true, "{}", set.text);
    let ports = payment_flow::PaymentPorts {
        store: &*app.store,
        processor: &*app.processor,
        notices: Some(&*app.notices),
    };
    let key = format!("plan:{}", Utc::now().date_naive());
    for _ in 0..2 {
        let settled =
            payment_flow::reconcile_pending_payment(&ports, &client_id, &key, Utc::now()).await;
        assert_eq!(settled.expect("settled"), payment_flow::Reconciled::Final);
    }
    let intents = app.intents(&agency_id).await;
    assert_eq!(intents.len(), 2, "{intents:#?}");
    let account = conformance::assert_consistent(&*app.store, &client_id).await;
    assert_eq!(account.balance_usd, usd("30"), "the plan was paid by the agency's card");
    let fees: Vec<_> = app
        .entries(&client_id)
        .await
        .into_iter()
        .filter(|e| e.item == ledger::BillingItem::PlanFee)
        .collect();
    assert_eq!(fees.len(), 1);
}
