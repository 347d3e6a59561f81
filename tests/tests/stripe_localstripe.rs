//! The Stripe adapter against localstripe, the stateful fake of Stripe's HTTP API that
//! `scripts/stack.sh up` starts: customers, attach / detach with brand, last 4 and expiry,
//! successful and declined off-session charges, one payment intent per Idempotency-Key.
//!
//! What localstripe 1.15.10 can and cannot show (read in its resources.py):
//! - every card reads as brand `visa`; last 4 and expiry are the ones given;
//! - Stripe's decline test numbers (generic, insufficient funds, expired, incorrect CVC,
//!   processing error) are refused at attach with `card_declined` and no `decline_code`, as
//!   Stripe refuses them when attached to a customer; the only card it declines at charge
//!   time is the "attach succeeds, charges fail" one, again as plain `card_declined`, without
//!   the payment intent in the error. The mapping of `insufficient_funds`, `expired_card`,
//!   `incorrect_cvc` and `processing_error` is tested against Stripe's documented error bodies
//!   in shared/adapters/payments/src/stripe.rs;
//! - a 3-D Secure card leaves the off-session intent in `requires_action` (Stripe answers 402
//!   `authentication_required`); both read as a decline;
//! - it honours `Idempotency-Key` and accepts `description` on payment intents only through
//!   the launcher in scripts/stack.sh, which adds both (stock localstripe ignores the header
//!   and rejects the field).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Datelike;
use payments::{
    CardDetails, CardProcessor, ChargeOutcome, ChargeRequest, CustomerId, DeclineCode,
    ProcessorError, RefundOutcome, RefundRequest, SecretKey, StripeConfig, StripeProcessor,
};
use serde_json::Value;

const SECRET_KEY: &str = "sk_test_ringledger";

// Stripe's published test card numbers (docs.stripe.com/testing), kept as their first 15
// digits: `luhn_complete` adds the check digit at run time, so no card number, not even a
// public test one, is committed (scanners and card-data reviews flag any 16-digit PAN).
const VISA_SUCCESS: &str = "424242424242424";
const MASTERCARD_SUCCESS: &str = "555555555555444";
const GENERIC_DECLINE: &str = "400000000000000";
const INSUFFICIENT_FUNDS: &str = "400000000000999";
const EXPIRED_CARD: &str = "400000000000006";
const INCORRECT_CVC: &str = "400000000000012";
const PROCESSING_ERROR: &str = "400000000000011";
/// Attaching succeeds, every charge is declined.
const CHARGES_DECLINED: &str = "400000000000034";
/// Needs 3-D Secure for every payment.
const REQUIRES_AUTHENTICATION: &str = "400000250000315";

use e2e::stripe::luhn_complete;

fn stripe_endpoint() -> String {
    std::env::var("RINGLEDGER_STRIPE_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "RINGLEDGER_STRIPE_ENDPOINT is not set. These tests need localstripe: run them \
             through ./scripts/test.sh, or `scripts/stack.sh up` and `source .stack/env` first."
        )
    })
}

/// An account id no other test (or test run against the same localstripe) uses.
fn unique_account(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{tag}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

struct Rig {
    endpoint: String,
    stripe: StripeProcessor,
    http: reqwest::Client,
    exp_year: u16,
}

impl Rig {
    fn new() -> Self {
        let endpoint = stripe_endpoint();
        let key = SecretKey::parse(SECRET_KEY).expect("test key");
        let stripe = StripeProcessor::new(StripeConfig::new(endpoint.clone(), key))
            .expect("a Stripe processor for localstripe");
        let this_year = u16::try_from(chrono::Utc::now().year()).expect("a plausible year");
        Rig { endpoint, stripe, http: reqwest::Client::new(), exp_year: this_year + 3 }
    }

    async fn customer(&self, tag: &str) -> CustomerId {
        self.stripe.create_customer(&unique_account(tag), None).await.expect("create customer")
    }

    /// What Stripe.js does in the customer's browser: turns the card into a payment method
    /// token. (localstripe wants the secret key here; Stripe.js sends the publishable one.)
    async fn card_token(&self, prefix_15_digits: &str) -> String {
        e2e::stripe::card_token(&self.http, prefix_15_digits, self.exp_year).await
    }

    async fn attached_card(&self, customer: &CustomerId, prefix_15_digits: &str) -> CardDetails {
        let token = self.card_token(prefix_15_digits).await;
        self.stripe.attach_card(customer, &token).await.expect("attach")
    }

    /// The adapter's charge, with a pointer to the fix when localstripe runs without the
    /// stack's launcher (stock localstripe refuses a payment intent's `description`).
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProcessorError> {
        let result = self.stripe.charge(request).await;
        if let Err(ProcessorError::InvalidRequest(message)) = &result {
            assert!(
                !message.contains("Unexpected description"),
                "localstripe refused `description`: start it with scripts/stack.sh, whose \
                 launcher adds Stripe's `description` and Idempotency-Key to it ({message})"
            );
        }
        result
    }

    async fn get(&self, path_and_query: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.endpoint))
            .bearer_auth(SECRET_KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "GET {path_and_query}: {status} {body}");
        body
    }

    /// Every payment intent of the customer, read back from localstripe page by page (its
    /// list takes no `customer` filter, and other tests share the server).
    async fn payment_intents_of(&self, customer: &CustomerId) -> Vec<Value> {
        const MAX_PAGES: usize = 1_000;
        let mut found = Vec::new();
        let mut starting_after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let cursor =
                starting_after.as_ref().map_or(String::new(), |id| format!("&starting_after={id}"));
            let page = self.get(&format!("/v1/payment_intents?limit=100{cursor}")).await;
            let data = page["data"].as_array().expect("a list");
            found.extend(data.iter().filter(|pi| pi["customer"] == customer.as_str()).cloned());
            if page["has_more"] != true {
                return found;
            }
            starting_after = data.last().and_then(|pi| pi["id"].as_str()).map(str::to_owned);
        }
        panic!("more than {MAX_PAGES} pages of payment intents on localstripe");
    }
}

fn charge_of(
    customer: &CustomerId,
    card: &CardDetails,
    key: &str,
    amount_cents: u64,
) -> ChargeRequest {
    ChargeRequest {
        method: Default::default(),
        customer: customer.clone(),
        payment_method_id: card.payment_method_id.clone(),
        amount_cents,
        idempotency_key: key.to_owned(),
        description: "ringledger Pay Now".to_owned(),
    }
}

#[test]
fn luhn_complete_rebuilds_stripes_published_test_numbers() {
    let last4 = |prefix: &str| luhn_complete(prefix)[12..].to_owned();
    assert_eq!(last4(VISA_SUCCESS), "4242");
    assert_eq!(last4(MASTERCARD_SUCCESS), "4444");
    assert_eq!(last4(GENERIC_DECLINE), "0002");
    assert_eq!(last4(INSUFFICIENT_FUNDS), "9995");
    assert_eq!(last4(EXPIRED_CARD), "0069");
    assert_eq!(last4(INCORRECT_CVC), "0127");
    assert_eq!(last4(PROCESSING_ERROR), "0119");
    assert_eq!(last4(CHARGES_DECLINED), "0341");
    assert_eq!(last4(REQUIRES_AUTHENTICATION), "3155");
}

#[tokio::test]
async fn a_customer_is_created_with_its_account_and_email() {
    let rig = Rig::new();
    let account = unique_account("acme");
    let customer =
        rig.stripe.create_customer(&account, Some("billing@acme.example")).await.expect("customer");
    assert!(customer.as_str().starts_with("cus_"), "{customer}");
    let stored = rig.get(&format!("/v1/customers/{customer}")).await;
    assert_eq!(stored["email"], "billing@acme.example");
    assert_eq!(stored["metadata"]["account_id"], account.as_str());
    // Card events name the customer only: its account is read back from the metadata.
    assert_eq!(rig.stripe.customer_account(&customer).await.expect("lookup"), Some(account));
    let unknown = payments::CustomerId("cus_doesnotexist0".into());
    assert_eq!(rig.stripe.customer_account(&unknown).await.expect("lookup"), None);
}

#[tokio::test]
async fn attach_returns_brand_last4_and_expiry_and_detach_removes_the_card() {
    let rig = Rig::new();
    let customer = rig.customer("attach").await;
    let token = rig.card_token(VISA_SUCCESS).await;
    let card = rig.stripe.attach_card(&customer, &token).await.expect("attach");
    assert_eq!(
        card,
        CardDetails {
            kind: Default::default(),
            verified: true,
            payment_method_id: token.clone(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 8,
            exp_year: rig.exp_year,
        }
    );
    assert!(!card.is_expired(chrono::Utc::now().date_naive()));
    let listed = rig.get(&format!("/v1/payment_methods?customer={customer}&type=card")).await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|pm| pm["id"].as_str())
        .collect();
    assert_eq!(ids, [token.as_str()]);

    rig.stripe.detach_card(&card.payment_method_id).await.expect("detach");
    let after = rig.get(&format!("/v1/payment_methods/{token}")).await;
    assert_eq!(after["customer"], Value::Null);
    let listed = rig.get(&format!("/v1/payment_methods?customer={customer}&type=card")).await;
    assert_eq!(listed["data"], serde_json::json!([]));
}

#[tokio::test]
async fn a_successful_charge_is_a_succeeded_payment_intent_for_the_amount() {
    let rig = Rig::new();
    let customer = rig.customer("pay").await;
    let card = rig.attached_card(&customer, VISA_SUCCESS).await;
    let key = unique_account("pay-now");
    let outcome = rig.charge(&charge_of(&customer, &card, &key, 1234)).await.expect("charge");
    let ChargeOutcome::Succeeded { payment_intent_id } = outcome else {
        panic!("expected a successful charge, got {outcome:?}");
    };
    let intent = rig.get(&format!("/v1/payment_intents/{payment_intent_id}")).await;
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 1234);
    assert_eq!(intent["currency"], "usd");
    assert_eq!(intent["customer"], customer.as_str());
    assert_eq!(intent["payment_method"], card.payment_method_id.as_str());
    assert_eq!(intent["description"], "ringledger Pay Now");
    assert_eq!(intent["metadata"]["idempotency_key"], key.as_str());
}

#[tokio::test]
async fn a_card_declined_at_charge_is_card_declined_with_a_reason() {
    let rig = Rig::new();
    let customer = rig.customer("declined").await;
    let card = rig.attached_card(&customer, CHARGES_DECLINED).await;
    assert_eq!(card.last4, "0341");
    let outcome = rig
        .charge(&charge_of(&customer, &card, &unique_account("k"), 5000))
        .await
        .expect("an outcome");
    let ChargeOutcome::Declined { payment_intent_id, decline } = outcome else {
        panic!("expected a decline, got {outcome:?}");
    };
    assert_eq!(decline.code, DeclineCode::CardDeclined);
    assert_eq!(decline.message, "Your card was declined.");
    assert_eq!(
        decline.reason(),
        "Your card was declined by its issuer. Please contact your bank or use another card."
    );
    // localstripe keeps the failed intent but does not name it in the 402 (Stripe does).
    let intents = rig.payment_intents_of(&customer).await;
    assert_eq!(intents.len(), 1, "{intents:#?}");
    assert_eq!(intents[0]["status"], "requires_payment_method");
    assert_eq!(intents[0]["last_payment_error"]["code"], "card_declined");
    if let Some(id) = payment_intent_id {
        assert_eq!(intents[0]["id"], id.as_str());
    }
}

#[tokio::test]
async fn decline_test_cards_are_refused_when_attached() {
    let rig = Rig::new();
    let customer = rig.customer("refused").await;
    for prefix in
        [GENERIC_DECLINE, INSUFFICIENT_FUNDS, EXPIRED_CARD, INCORRECT_CVC, PROCESSING_ERROR]
    {
        let token = rig.card_token(prefix).await;
        let error = rig.stripe.attach_card(&customer, &token).await.expect_err("refused");
        let ProcessorError::Declined(decline) = &error else {
            panic!("{prefix}: expected a decline, got {error:?}");
        };
        // localstripe says only `card_declined` for all of them (see the module comment).
        assert_eq!(decline.code, DeclineCode::CardDeclined, "{prefix}");
        assert!(!decline.reason().is_empty());
        let number = luhn_complete(prefix);
        assert!(!format!("{error:?} {error}").contains(&number), "no card number in errors");
    }
    let listed = rig.get(&format!("/v1/payment_methods?customer={customer}&type=card")).await;
    assert_eq!(listed["data"], serde_json::json!([]));
}

#[tokio::test]
async fn the_same_idempotency_key_twice_is_one_payment_intent() {
    let rig = Rig::new();
    let customer = rig.customer("idem").await;
    let card = rig.attached_card(&customer, VISA_SUCCESS).await;
    let request = charge_of(&customer, &card, &unique_account("recharge-req"), 5000);
    let first = rig.charge(&request).await.expect("first");
    let retry = rig.charge(&request).await.expect("retry after a crash");
    assert!(matches!(first, ChargeOutcome::Succeeded { .. }), "{first:?}");
    assert_eq!(
        retry, first,
        "a second payment intent for the same Idempotency-Key: is localstripe running behind \
         the launcher in scripts/stack.sh, which adds Stripe's idempotency?"
    );
    let intents = rig.payment_intents_of(&customer).await;
    assert_eq!(intents.len(), 1, "{intents:#?}");

    let other_amount = ChargeRequest { amount_cents: 5001, ..request.clone() };
    let error = rig.charge(&other_amount).await.expect_err("key reused with another amount");
    assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{error:?}");
    assert_eq!(rig.payment_intents_of(&customer).await.len(), 1);
}

#[tokio::test]
async fn an_off_session_charge_that_needs_authentication_is_declined() {
    let rig = Rig::new();
    let customer = rig.customer("3ds").await;
    let card = rig.attached_card(&customer, REQUIRES_AUTHENTICATION).await;
    let outcome = rig
        .charge(&charge_of(&customer, &card, &unique_account("k"), 5000))
        .await
        .expect("an outcome");
    let ChargeOutcome::Declined { payment_intent_id: Some(_), decline } = outcome else {
        panic!("expected a decline with its intent, got {outcome:?}");
    };
    assert_eq!(decline.code, DeclineCode::Other("authentication_required".into()));
    assert!(decline.reason().contains("confirm this payment"), "{}", decline.reason());
}

#[tokio::test]
async fn unknown_tokens_and_customers_are_invalid_requests() {
    let rig = Rig::new();
    let customer = rig.customer("unknown").await;
    let error =
        rig.stripe.attach_card(&customer, "pm_doesnotexist").await.expect_err("no such token");
    assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{error:?}");
    let token = rig.card_token(VISA_SUCCESS).await;
    let nobody = CustomerId("cus_doesnotexist".into());
    let error = rig.stripe.attach_card(&nobody, &token).await.expect_err("no such customer");
    assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{error:?}");
    let error =
        rig.stripe.detach_card("pm_doesnotexist").await.expect_err("no such payment method");
    assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{error:?}");
}

#[tokio::test]
async fn a_payment_is_found_by_its_idempotency_key_and_an_unused_key_finds_nothing() {
    let rig = Rig::new();
    let customer = rig.customer("lookup").await;
    let card = rig.attached_card(&customer, VISA_SUCCESS).await;
    let key = unique_account("lookup-key");
    let ChargeOutcome::Succeeded { payment_intent_id } =
        rig.charge(&charge_of(&customer, &card, &key, 2500)).await.expect("charge")
    else {
        panic!("expected a successful charge");
    };
    let found = rig.stripe.find_charge(&customer, &key).await.expect("lookup");
    assert_eq!(found, Some(ChargeOutcome::Succeeded { payment_intent_id }));
    let other = rig.customer("lookup-other").await;
    assert_eq!(rig.stripe.find_charge(&other, &key).await.expect("lookup"), None, "per customer");
    let unused = unique_account("never-used");
    assert_eq!(rig.stripe.find_charge(&customer, &unused).await.expect("lookup"), None);
}

#[tokio::test]
async fn a_refund_returns_part_of_a_payment_once_per_key_and_is_found_by_its_key() {
    let rig = Rig::new();
    let customer = rig.customer("refund").await;
    let card = rig.attached_card(&customer, VISA_SUCCESS).await;
    let key = unique_account("refund-pay");
    let ChargeOutcome::Succeeded { payment_intent_id } =
        rig.charge(&charge_of(&customer, &card, &key, 5000)).await.expect("charge")
    else {
        panic!("expected a successful charge");
    };
    let refund_key = unique_account("refund-key");
    let request = RefundRequest {
        payment_intent_id: payment_intent_id.clone(),
        amount_cents: 1250,
        idempotency_key: refund_key.clone(),
    };
    assert_eq!(
        rig.stripe.find_refund(&payment_intent_id, &refund_key).await.expect("lookup"),
        None
    );
    let first = rig.stripe.refund(&request).await.expect("refund");
    let RefundOutcome::Sent { refund_id } = first.clone() else {
        panic!("expected a sent refund, got {first:?}");
    };
    // The same key again is the same refund, not a second one.
    assert_eq!(rig.stripe.refund(&request).await.expect("repeat"), first);
    let refund = rig.get(&format!("/v1/refunds/{refund_id}")).await;
    assert_eq!(refund["amount"], 1250);
    assert_eq!(refund["metadata"]["idempotency_key"], refund_key.as_str());
    let listed = rig.get(&format!("/v1/refunds?payment_intent={payment_intent_id}")).await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        rig.stripe.find_refund(&payment_intent_id, &refund_key).await.expect("lookup"),
        Some(first)
    );
    let unused = unique_account("refund-unused");
    assert_eq!(rig.stripe.find_refund(&payment_intent_id, &unused).await.expect("lookup"), None);
    // A refund made in the dashboard (no metadata of ours) is listed beside ours, without a key.
    let response = rig
        .http
        .post(format!("{}/v1/refunds", rig.endpoint))
        .bearer_auth(SECRET_KEY)
        .form(&[("payment_intent", payment_intent_id.as_str()), ("amount", "300")])
        .send()
        .await
        .expect("a dashboard refund");
    assert!(response.status().is_success(), "{}", response.text().await.unwrap_or_default());
    let listed = rig.stripe.refunds_of(&payment_intent_id).await.expect("refunds of the payment");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let theirs: Vec<_> = listed.iter().filter(|r| r.idempotency_key.is_none()).collect();
    assert_eq!(theirs.len(), 1, "{listed:?}");
    assert_eq!(theirs[0].amount_cents, 300);
    assert!(matches!(theirs[0].outcome, RefundOutcome::Sent { .. }), "{listed:?}");
    assert!(listed.iter().all(|r| r.payment_intent_id == payment_intent_id));
    // (localstripe cannot filter refunds by creation time: `recent_refunds` is tested against
    // recorded answers in the adapter's unit tests.)
    // A refund of a payment intent that does not exist is refused, not unknown.
    let missing = RefundRequest { payment_intent_id: "pi_doesnotexist".into(), ..request };
    assert!(matches!(rig.stripe.refund(&missing).await, Err(ProcessorError::InvalidRequest(_))));
}

/// The payment-intent form the adapter sends for `request` (same fields, same order), so a raw
/// request and the adapter's are the same request to the idempotency layer.
fn charge_form(request: &ChargeRequest) -> Vec<(&'static str, String)> {
    vec![
        ("amount", request.amount_cents.to_string()),
        ("currency", "usd".into()),
        ("customer", request.customer.as_str().to_owned()),
        ("payment_method", request.payment_method_id.clone()),
        ("payment_method_types[]", "card".into()),
        ("off_session", "true".into()),
        ("confirm", "true".into()),
        ("description", request.description.clone()),
        ("metadata[idempotency_key]", request.idempotency_key.clone()),
    ]
}

/// A raw payment-intent POST with the request's key, held `hold_ms` inside the launcher's
/// idempotency section (its `Localstripe-Test-Delay` hook): (status, body).
async fn raw_charge(
    http: &reqwest::Client,
    endpoint: &str,
    request: &ChargeRequest,
    hold_ms: u64,
) -> (u16, Value) {
    let response = http
        .post(format!("{endpoint}/v1/payment_intents"))
        .bearer_auth(SECRET_KEY)
        .header("Idempotency-Key", &request.idempotency_key)
        .header("Localstripe-Test-Delay", hold_ms.to_string())
        .form(&charge_form(request))
        .send()
        .await
        .expect("POST /v1/payment_intents");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_requests_with_one_key_are_one_payment_intent_and_fifteen_409s() {
    let rig = Rig::new();
    let customer = rig.customer("concurrent").await;
    let card = rig.attached_card(&customer, VISA_SUCCESS).await;
    let request = charge_of(&customer, &card, &unique_account("concurrent-key"), 2500);

    // Whichever request takes the key first is held 1 s; the other 15 arrive meanwhile.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, endpoint, request, start) =
            (rig.http.clone(), rig.endpoint.clone(), request.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            raw_charge(&http, &endpoint, &request, 1_000).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("a request task"));
    }
    let created: Vec<_> = answers.iter().filter(|(status, _)| *status == 200).collect();
    let in_progress: Vec<_> = answers.iter().filter(|(status, _)| *status == 409).collect();
    assert_eq!(
        (created.len(), in_progress.len()),
        (1, 15),
        "one request runs, the others are told it is in progress (is localstripe running the \
         current scripts/localstripe_launcher.py? `scripts/stack.sh down` and `up` restart it): \
         {answers:#?}"
    );
    assert!(
        in_progress.iter().all(|(_, body)| body["error"]["type"] == "idempotency_error"),
        "{in_progress:#?}"
    );
    assert_eq!(created[0].1["status"], "succeeded");
    let intents = rig.payment_intents_of(&customer).await;
    assert_eq!(intents.len(), 1, "one payment intent for one key: {intents:#?}");

    // Once the first has answered, the same request is its replay.
    let replay = rig.charge(&request).await.expect("a replay");
    let intent_id = created[0].1["id"].as_str().expect("an id").to_owned();
    assert_eq!(replay, ChargeOutcome::Succeeded { payment_intent_id: intent_id });
    assert_eq!(rig.payment_intents_of(&customer).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_reads_a_409_in_progress_as_unavailable_never_as_a_decline() {
    let rig = Rig::new();
    let customer = rig.customer("inprogress").await;
    let card = rig.attached_card(&customer, VISA_SUCCESS).await;
    let request = charge_of(&customer, &card, &unique_account("inprogress-key"), 4200);
    let held = {
        let (http, endpoint, request) = (rig.http.clone(), rig.endpoint.clone(), request.clone());
        tokio::spawn(async move { raw_charge(&http, &endpoint, &request, 1_500).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let error = rig.charge(&request).await.expect_err("the key is in use");
    assert!(
        matches!(error, ProcessorError::Unavailable(_)),
        "a 409 in progress must be an unknown, retryable outcome: {error:?}"
    );
    let (status, body) = held.await.expect("the held request");
    assert_eq!(status, 200, "{body}");
    let retried = rig.charge(&request).await.expect("the retry after the 409");
    let intent_id = body["id"].as_str().expect("an id").to_owned();
    assert_eq!(retried, ChargeOutcome::Succeeded { payment_intent_id: intent_id });
    assert_eq!(rig.payment_intents_of(&customer).await.len(), 1);
}

/// Pay Now is on session (its `pay:` key): a card that needs 3-D Secure waits for its holder
/// instead of declining, the client gets the intent's client secret, and once the holder has
/// authenticated (localstripe's `_authenticate`, standing in for the browser) the payment is
/// found succeeded; a payment left waiting is cancelled and reported declined.
#[tokio::test]
async fn an_on_session_charge_that_needs_authentication_waits_for_the_holder() {
    let rig = Rig::new();
    let customer = rig.customer("3ds-on").await;
    let card = rig.attached_card(&customer, REQUIRES_AUTHENTICATION).await;
    let key = format!("pay:{}:order-1", unique_account("a"));
    let request = charge_of(&customer, &card, &key, 2500);
    let outcome = rig.charge(&request).await.expect("an outcome");
    let ChargeOutcome::RequiresAction { payment_intent_id, client_secret } = outcome else {
        panic!("expected the payment to wait for its holder, got {outcome:?}");
    };
    assert!(client_secret.starts_with(&payment_intent_id), "{client_secret}");
    let response = rig
        .http
        .post(format!("{}/v1/payment_intents/{payment_intent_id}/_authenticate", rig.endpoint))
        .bearer_auth(SECRET_KEY)
        .form(&[("client_secret", client_secret.as_str()), ("success", "true")])
        .send()
        .await
        .expect("authenticate");
    assert!(response.status().is_success(), "{}", response.text().await.unwrap_or_default());
    let found = rig.stripe.find_charge(&customer, &key).await.expect("lookup");
    assert_eq!(
        found,
        Some(ChargeOutcome::Succeeded { payment_intent_id: payment_intent_id.clone() })
    );
    // A cancel that comes after the holder's success loses: the payment stands.
    let ended = rig.stripe.cancel_charge(&payment_intent_id).await.expect("cancel");
    assert_eq!(ended, ChargeOutcome::Succeeded { payment_intent_id });

    let abandoned = format!("pay:{}:order-2", unique_account("a"));
    let outcome =
        rig.charge(&charge_of(&customer, &card, &abandoned, 2500)).await.expect("outcome");
    let ChargeOutcome::RequiresAction { payment_intent_id, .. } = outcome else {
        panic!("expected the payment to wait for its holder, got {outcome:?}");
    };
    let ended = rig.stripe.cancel_charge(&payment_intent_id).await.expect("cancel");
    assert!(matches!(ended, ChargeOutcome::Declined { .. }), "{ended:?}");

    // The holder fails: the intent waits for another payment method, which the browser could
    // still confirm; Pay Now cancels a declined intent before recording it failed, and then
    // nothing can capture it any more.
    let failing = format!("pay:{}:order-3", unique_account("a"));
    let outcome = rig.charge(&charge_of(&customer, &card, &failing, 2500)).await.expect("outcome");
    let ChargeOutcome::RequiresAction { payment_intent_id, client_secret } = outcome else {
        panic!("expected the payment to wait for its holder, got {outcome:?}");
    };
    let response = rig
        .http
        .post(format!("{}/v1/payment_intents/{payment_intent_id}/_authenticate", rig.endpoint))
        .bearer_auth(SECRET_KEY)
        .form(&[("client_secret", client_secret.as_str()), ("success", "false")])
        .send()
        .await
        .expect("authenticate");
    assert!(response.status().is_success(), "{}", response.text().await.unwrap_or_default());
    let found = rig.stripe.find_charge(&customer, &failing).await.expect("lookup");
    assert!(matches!(found, Some(ChargeOutcome::Declined { .. })), "{found:?}");
    let ended = rig.stripe.cancel_charge(&payment_intent_id).await.expect("cancel");
    assert!(matches!(ended, ChargeOutcome::Declined { .. }), "{ended:?}");
    let stored = rig.get(&format!("/v1/payment_intents/{payment_intent_id}")).await;
    assert_eq!(stored["status"], "canceled", "{stored}");
}
