//! The processor's webhook: only signed, fresh deliveries are taken; each event is received
//! once and handed on once, however often it is delivered; a failed hand-off is redone on the
//! redelivery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use api::webhooks::{router, ProcessorEventSink, WebhookState, STRIPE_WEBHOOK_PATH};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::BodyExt;
use ledger::docs::{DocKind, DocStore, PROCESSOR_EVENTS_ACCOUNT};
use ledger::memory::MemoryStore;
use payments::stripe_events::{EventAction, ProcessorEvent};
use tower::ServiceExt;

const SECRET: &str = "whsec_test_webhooks";

#[derive(Default)]
struct Recorded {
    events: Mutex<Vec<ProcessorEvent>>,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl ProcessorEventSink for Recorded {
    async fn publish(
        &self,
        event: &ProcessorEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.failing.load(Ordering::SeqCst) {
            return Err("the queue is down".into());
        }
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }
}

fn sign(body: &str, timestamp: i64, secret: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn dispute_event(id: &str) -> String {
    serde_json::json!({
        "id": id, "type": "charge.dispute.funds_withdrawn", "created": 1_700_000_000,
        "data": {"object": {
            "id": "dp_1", "amount": 2500, "status": "needs_response", "payment_intent": "pi_1",
            "balance_transactions": [{"amount": -2500, "fee": 1500}]
        }}
    })
    .to_string()
}

struct Rig {
    store: Arc<MemoryStore>,
    sink: Arc<Recorded>,
    app: axum::Router,
}

impl Rig {
    fn new() -> Rig {
        let store = Arc::new(MemoryStore::new());
        let sink = Arc::new(Recorded::default());
        let app = router(Arc::new(WebhookState {
            store: store.clone(),
            secret: Some(SECRET.into()),
            sink: sink.clone(),
        }));
        Rig { store, sink, app }
    }

    async fn deliver(
        &self,
        body: &str,
        signature: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::post(STRIPE_WEBHOOK_PATH);
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    async fn stored(&self) -> usize {
        let account = ledger::AccountId::parse(PROCESSOR_EVENTS_ACCOUNT).unwrap();
        self.store.list_docs(&account, DocKind::ProcessorEvent, None, 100).await.unwrap().len()
    }

    fn handed_on(&self) -> usize {
        self.sink.events.lock().unwrap().len()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn unsigned_wrongly_signed_and_replayed_deliveries_are_refused_and_change_nothing() {
    let rig = Rig::new();
    let body = dispute_event("evt_1");
    for signature in [
        None,
        Some("t=1,v1=00".to_string()),
        Some(sign(&body, now(), "whsec_someone_else")),
        Some(sign(&dispute_event("evt_2"), now(), SECRET)),
        // Signed right, ten minutes ago: a replay.
        Some(sign(&body, now() - 600, SECRET)),
    ] {
        let (status, reply) = rig.deliver(&body, signature.as_deref()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{signature:?}: {reply}");
        assert_eq!(reply["code"], "bad_signature", "{reply}");
    }
    assert_eq!((rig.stored().await, rig.handed_on()), (0, 0));
    let garbage = "not json";
    let (status, reply) = rig.deliver(garbage, Some(&sign(garbage, now(), SECRET))).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unreadable_event"))
    );
    assert_eq!(rig.stored().await, 0);
}

#[tokio::test]
async fn an_event_is_received_once_and_handed_on_once_however_often_it_is_delivered() {
    let rig = Rig::new();
    let body = dispute_event("evt_1");
    let (status, reply) = rig.deliver(&body, Some(&sign(&body, now(), SECRET))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["duplicate"], false);
    for _ in 0..3 {
        let (status, reply) = rig.deliver(&body, Some(&sign(&body, now(), SECRET))).await;
        assert_eq!((status, reply["duplicate"].as_bool()), (StatusCode::OK, Some(true)));
    }
    assert_eq!((rig.stored().await, rig.handed_on()), (1, 1));
    let handed = rig.sink.events.lock().unwrap()[0].clone();
    let EventAction::Dispute { dispute: state } = handed.action else { panic!("a dispute") };
    assert!(state.funds_withdrawn);
    // Events that move no money are kept, not handed on.
    let other = serde_json::json!({
        "id": "evt_9", "type": "customer.updated", "created": 1, "data": {"object": {}}
    })
    .to_string();
    let (status, _) = rig.deliver(&other, Some(&sign(&other, now(), SECRET))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((rig.stored().await, rig.handed_on()), (2, 1));
}

#[tokio::test]
async fn a_failed_hand_off_answers_503_and_the_redelivery_hands_it_on() {
    let rig = Rig::new();
    let body = dispute_event("evt_5");
    rig.sink.failing.store(true, Ordering::SeqCst);
    let (status, _) = rig.deliver(&body, Some(&sign(&body, now(), SECRET))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((rig.stored().await, rig.handed_on()), (1, 0));
    rig.sink.failing.store(false, Ordering::SeqCst);
    let (status, reply) = rig.deliver(&body, Some(&sign(&body, now(), SECRET))).await;
    assert_eq!((status, reply["duplicate"].as_bool()), (StatusCode::OK, Some(false)));
    let (_, again) = rig.deliver(&body, Some(&sign(&body, now(), SECRET))).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(rig.handed_on(), 1);
}

/// A Pay Now whose answer was lost is settled by its `payment_intent.*` event (after the claim's
/// stale window, as any reconciliation is), once, however often the event comes.
#[tokio::test]
async fn a_pay_now_event_settles_the_payment_its_key_names_once() {
    use payments::{CardProcessor, ChargeFault, SimulatedProcessor};
    let store = MemoryStore::new();
    let processor = SimulatedProcessor::new();
    let ledger: &dyn ledger::LedgerStore = &store;
    let id = conformance::open(ledger, "acme", None).await;
    let customer = processor.create_customer("acme", None).await.unwrap();
    let card = processor.attach_card(&customer, "pm_card_visa").await.unwrap();
    let stored = conformance::cases::primary_card(card);
    let ports = payment_flow::PaymentPorts { store: &store, processor: &processor, notices: None };
    processor.push_fault(ChargeFault::AnswerLost);
    let now = chrono::Utc::now();
    let amount = conformance::amount("25");
    let answer =
        payment_flow::pay_now_with(&ports, &id, "order-1", amount, &stored, customer.as_str(), now)
            .await
            .unwrap();
    assert!(matches!(answer, payment_flow::PayNowAnswer::Pending { .. }), "{answer:?}");
    let event = ProcessorEvent {
        id: "evt_1".into(),
        kind: "payment_intent.succeeded".into(),
        created: now.timestamp(),
        action: EventAction::PayNowOutcome { account_id: "acme".into(), key: "order-1".into() },
    };
    let later = now + chrono::Duration::seconds(payment_flow::STALE_IN_PROGRESS_SECONDS + 1);
    for _ in 0..3 {
        api::webhooks::apply_event(&ports, &event, later).await.unwrap();
    }
    let account = ledger.account(&id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, rust_decimal::Decimal::from(25));
    assert!(account.pending_payments.is_empty());
    assert_eq!(processor.successful_charges(&stored.id), 1);
}

#[derive(Default)]
struct Notices(Mutex<Vec<notifications::notice::Notice>>);

#[async_trait::async_trait]
impl notifications::notice::NoticeSink for Notices {
    async fn publish(
        &self,
        notice: &notifications::notice::Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(notice.clone());
        Ok(())
    }
}

/// The card networks' updater gave the card a new expiry: the stored card follows, once; a
/// stale update (an earlier expiry, arriving late) changes nothing; the processor's "expiring"
/// event sends the primary's expiry notice, under the same id as the daily sweep's.
#[tokio::test]
async fn card_events_update_the_stored_card_and_notice_its_expiry() {
    use payments::{CardProcessor, SimulatedProcessor};
    let store = MemoryStore::new();
    let processor = SimulatedProcessor::new();
    let ledger: &dyn ledger::LedgerStore = &store;
    let id = conformance::open(ledger, "acme", None).await;
    let customer = processor.create_customer("acme", None).await.unwrap();
    let card = processor.attach_card(&customer, "pm_card_visa").await.unwrap();
    let stored = conformance::cases::primary_card(card.clone());
    documents::profile::update(&store, &id, |p| {
        p.processor_customer_id = Some(customer.as_str().to_string());
        p.cards = vec![stored.clone()];
        Ok(())
    })
    .await
    .unwrap();
    let notices = Notices::default();
    let ports = payment_flow::PaymentPorts {
        store: &store,
        processor: &processor,
        notices: Some(&notices),
    };
    let event = |kind: &str, object: serde_json::Value| {
        let body = serde_json::json!({"id": "evt_c", "type": kind, "created": 1, "data": {"object": object}});
        payments::stripe_events::parse_event(body.to_string().as_bytes()).unwrap()
    };
    let method = |year: u16, last4: &str| {
        serde_json::json!({"id": card.payment_method_id, "object": "payment_method", "type": "card",
            "customer": customer.as_str(),
            "card": {"brand": "visa", "last4": last4, "exp_month": 8, "exp_year": year}})
    };
    let updated = event("payment_method.automatically_updated", method(2045, "1881"));
    let stale = event("payment_method.updated", method(2043, "4242"));
    for delivered in [&updated, &stale, &updated] {
        api::webhooks::apply_event(&ports, delivered, chrono::Utc::now()).await.unwrap();
    }
    let (profile, _) = documents::profile::load(&store, &id).await.unwrap();
    let card_now = &profile.cards[0];
    assert_eq!((card_now.last4.as_str(), card_now.exp_month, card_now.exp_year), ("1881", 8, 2045));
    // A detached method names no customer: acknowledged, nothing changes.
    let mut detached = method(2035, "0000");
    detached["customer"] = serde_json::Value::Null;
    let detached = event("payment_method.updated", detached);
    assert!(matches!(detached.action, EventAction::Ignore));

    let expiring = event(
        "customer.source.expiring",
        serde_json::json!({"id": card.payment_method_id, "object": "card", "customer": customer.as_str(),
            "brand": "Visa", "last4": "1881", "exp_month": 8, "exp_year": 2045}),
    );
    assert!(matches!(expiring.action, EventAction::CardExpiring { .. }));
    for _ in 0..2 {
        api::webhooks::apply_event(&ports, &expiring, chrono::Utc::now()).await.unwrap();
    }
    let said = notices.0.lock().unwrap().clone();
    assert!(!said.is_empty());
    let expected_id = format!("card_expiring:acme:{}:2045-08", card.payment_method_id);
    assert!(said.iter().all(|n| n.id == expected_id), "{said:?}");
    // A customer that is not ours: nothing.
    let stranger = event("payment_method.updated", {
        let mut other = method(2032, "1111");
        other["customer"] = serde_json::json!("cus_stranger");
        other
    });
    api::webhooks::apply_event(&ports, &stranger, chrono::Utc::now()).await.unwrap();
    let (after, _) = documents::profile::load(&store, &id).await.unwrap();
    assert_eq!(after.cards[0].exp_year, 2045);
}

/// 3-D Secure on Pay Now: the payment waits for its holder (the caller gets the next action,
/// nothing is credited); the holder's success, announced by the processor's event, credits it
/// once; a payment never authenticated is cancelled after the window and marked failed.
#[tokio::test]
async fn a_pay_now_that_needs_authentication_is_credited_only_once_authenticated() {
    use payments::{CardProcessor, SimulatedProcessor};
    let store = MemoryStore::new();
    let processor = SimulatedProcessor::new();
    let ledger: &dyn ledger::LedgerStore = &store;
    let id = conformance::open(ledger, "acme", None).await;
    let customer = processor.create_customer("acme", None).await.unwrap();
    let card = processor.attach_card(&customer, "pm_card_authenticationRequired").await.unwrap();
    let stored = conformance::cases::primary_card(card);
    let ports = payment_flow::PaymentPorts { store: &store, processor: &processor, notices: None };
    let now = chrono::Utc::now();
    let amount = conformance::amount("25");
    let pay = |key: &'static str| {
        payment_flow::pay_now_with(&ports, &id, key, amount, &stored, customer.as_str(), now)
    };
    let answer = pay("order-3ds").await.unwrap();
    let payment_flow::PayNowAnswer::Pending { payment, next_action: Some(action) } = answer else {
        panic!("expected a payment waiting for its holder, got {answer:?}");
    };
    assert_eq!(action.kind, "use_stripe_sdk");
    let intent = payment.processor_payment_id.clone().unwrap();
    assert!(action.client_secret.starts_with(&intent));
    assert!(payment.pending_reason.unwrap().contains("3-D Secure"));
    assert_eq!(
        ledger.account(&id).await.unwrap().unwrap().balance_usd,
        rust_decimal::Decimal::ZERO
    );

    assert!(processor.authenticate(&intent, true));
    let event = ProcessorEvent {
        id: "evt_3ds".into(),
        kind: "payment_intent.succeeded".into(),
        created: now.timestamp(),
        action: EventAction::PayNowOutcome { account_id: "acme".into(), key: "order-3ds".into() },
    };
    let later = now + chrono::Duration::seconds(payment_flow::STALE_IN_PROGRESS_SECONDS + 1);
    for _ in 0..3 {
        api::webhooks::apply_event(&ports, &event, later).await.unwrap();
    }
    let account = ledger.account(&id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, rust_decimal::Decimal::from(25), "credited once");

    // Left waiting: the reconciler asks again within the window (still pending), then cancels.
    let answer = pay("order-abandoned").await.unwrap();
    assert!(matches!(answer, payment_flow::PayNowAnswer::Pending { next_action: Some(_), .. }));
    let soon = now + chrono::Duration::minutes(30);
    let settled = payment_flow::reconcile_pending_payment(&ports, &id, "order-abandoned", soon);
    assert!(!matches!(settled.await.unwrap(), payment_flow::Reconciled::Final));
    let late = now + chrono::Duration::minutes(payment_flow::AUTHENTICATION_WINDOW_MINUTES + 1);
    let settled = payment_flow::reconcile_pending_payment(&ports, &id, "order-abandoned", late);
    assert!(matches!(settled.await.unwrap(), payment_flow::Reconciled::Final));
    let account = ledger.account(&id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, rust_decimal::Decimal::from(25), "nothing more");
    assert!(account.pending_payments.is_empty());
    assert_eq!(processor.successful_charges(&stored.id), 1);
    assert!(processor.waiting_for_authentication().is_empty(), "cancelled at the processor");
}
