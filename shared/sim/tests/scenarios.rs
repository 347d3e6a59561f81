//! Named scenarios from peers' public bugs, played against the real Pay Now and recharge code.

use std::sync::Arc;

use api::payments::{pay_now_with, PaymentPorts, PaymentRecord, PaymentStatus};
use api::profile::{self, CardRole, Email, StoredCard};
use api::state::Store;
use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger::docs::{DocKind, DocStore};
use ledger::memory::MemoryStore;
use ledger::{AccountId, Amount, BillingItem, LedgerEventKind, LedgerStore, NewAccount};
use payments::{CardProcessor, ChargeFault, SimulatedProcessor};
use recharge::{Outcome, RechargeWorker};
use std::str::FromStr;

struct Rig {
    store: Arc<MemoryStore>,
    processor: Arc<SimulatedProcessor>,
    worker: RechargeWorker,
    id: AccountId,
    card: StoredCard,
    customer: String,
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, 10, 12, 0, 0).single().unwrap()
}

async fn rig() -> Rig {
    let store = Arc::new(MemoryStore::new());
    let processor = Arc::new(SimulatedProcessor::new());
    processor.set_now(t0());
    let id = AccountId::parse("acme").unwrap();
    let ledger: &dyn LedgerStore = &*store;
    ledger
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, t0())
        .await
        .unwrap();
    let customer = processor.create_customer("acme", None).await.unwrap();
    let details = processor.attach_card(&customer, "pm_card_visa").await.unwrap();
    let card = StoredCard {
        id: details.payment_method_id,
        brand: details.brand,
        last4: details.last4,
        exp_month: details.exp_month,
        exp_year: details.exp_year,
        role: CardRole::Primary,
        card_manager_email: Email::try_from("cards@acme.example".to_string()).unwrap(),
        added_at: t0(),
    };
    let (c, saved) = (customer.0.clone(), card.clone());
    profile::update(&*store, &id, |p| {
        p.processor_customer_id = Some(c.clone());
        p.cards.push(saved.clone());
        Ok(())
    })
    .await
    .unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let notices = Arc::new(sim::RecordedNotices::default());
    let worker = RechargeWorker::new(dyn_store, processor.clone(), notices);
    Rig { store, processor, worker, id, card, customer: customer.0 }
}

impl Rig {
    async fn pay(&self, key: &str, usd: &str, now: DateTime<Utc>) -> u16 {
        let ports =
            PaymentPorts { store: &*self.store, processor: &*self.processor, notices: None };
        let amount = Amount::from_str(usd).unwrap();
        pay_now_with(&ports, &self.id, key, amount, &self.card, &self.customer, now)
            .await
            .map(|(status, _)| status.as_u16())
            .unwrap_or_else(|e| e.status.as_u16())
    }

    async fn balance(&self) -> rust_decimal::Decimal {
        let ledger: &dyn LedgerStore = &*self.store;
        ledger.account(&self.id).await.unwrap().unwrap().balance_usd
    }

    async fn payments(&self) -> Vec<PaymentRecord> {
        self.store
            .list_docs(&self.id, DocKind::Payment, None, 50)
            .await
            .unwrap()
            .iter()
            .map(|d| serde_json::from_str(&d.body).unwrap())
            .collect()
    }

    async fn pending_events(&self) -> Vec<ledger::LedgerEvent> {
        let ledger: &dyn LedgerStore = &*self.store;
        ledger
            .pending_events(50)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.kind, LedgerEventKind::PaymentPending { .. }))
            .collect()
    }
}

#[tokio::test]
async fn kill_bill_1015_a_retry_after_an_unknown_outcome_never_pays_twice() {
    let rig = rig().await;
    rig.processor.push_fault(ChargeFault::AnswerLost);
    assert_eq!(rig.pay("k1", "40", t0()).await, 202, "unknown is pending, not 'nothing charged'");
    assert_eq!(rig.processor.successful_charges(&rig.card.id), 1, "the card was charged");
    assert_eq!(rig.balance().await, rust_decimal::Decimal::ZERO);
    let pending = rig.payments().await;
    assert_eq!(pending[0].status, PaymentStatus::Pending);
    assert!(pending[0].pending_reason.is_some());

    assert_eq!(rig.pay("k1", "40", t0() + Duration::seconds(61)).await, 201);
    assert_eq!(rig.processor.successful_charges(&rig.card.id), 1, "one charge");
    assert_eq!(rig.balance().await, rust_decimal::Decimal::from(40), "one credit");
    assert_eq!(rig.pay("k1", "41", t0() + Duration::seconds(90)).await, 422);
}

#[tokio::test]
async fn a_pay_now_left_pending_is_settled_by_the_reconciler_without_the_client() {
    let rig = rig().await;
    rig.processor.push_fault(ChargeFault::Processing { succeeds: true, minutes: 30 });
    assert_eq!(rig.pay("k2", "25", t0()).await, 202);
    let events = rig.pending_events().await;
    assert_eq!(events.len(), 1, "the pending payment is announced to the reconciler");
    // Too early: its owner may still be working on it.
    let early = rig.worker.handle(&events[0], t0() + Duration::seconds(10)).await.unwrap();
    assert!(matches!(early, Outcome::NotYet(_)), "{early:?}");
    // Still processing at the processor: asked again later.
    let still = rig.worker.handle(&events[0], t0() + Duration::minutes(5)).await.unwrap();
    assert!(matches!(still, Outcome::NotYet(_)), "{still:?}");
    rig.processor.set_now(t0() + Duration::hours(1));
    let done = rig.worker.handle(&events[0], t0() + Duration::hours(1)).await.unwrap();
    assert_eq!(done, Outcome::NotNeeded("payment settled"));
    assert_eq!(rig.balance().await, rust_decimal::Decimal::from(25));
    assert_eq!(rig.payments().await[0].status, PaymentStatus::Succeeded);
    let ledger: &dyn LedgerStore = &*rig.store;
    let account = ledger.account(&rig.id).await.unwrap().unwrap();
    assert!(account.pending_payments.is_empty());
    // The client's retry now gets the final answer; still one charge.
    assert_eq!(rig.pay("k2", "25", t0() + Duration::hours(2)).await, 201);
    assert_eq!(rig.processor.successful_charges(&rig.card.id), 1);
}

#[tokio::test]
async fn a_processing_payment_that_fails_is_marked_failed_and_credits_nothing() {
    let rig = rig().await;
    rig.processor.push_fault(ChargeFault::Processing { succeeds: false, minutes: 30 });
    assert_eq!(rig.pay("k3", "25", t0()).await, 202);
    rig.processor.set_now(t0() + Duration::hours(1));
    assert_eq!(rig.pay("k3", "25", t0() + Duration::hours(1)).await, 402);
    assert_eq!(rig.balance().await, rust_decimal::Decimal::ZERO);
    let payment = &rig.payments().await[0];
    assert_eq!(payment.status, PaymentStatus::Failed);
    assert!(payment.failure_reason.is_some());
}

#[tokio::test]
async fn a_replay_after_the_processor_forgot_the_key_looks_the_payment_up_instead_of_charging() {
    let rig = rig().await;
    rig.processor.push_fault(ChargeFault::AnswerLost);
    assert_eq!(rig.pay("k4", "30", t0()).await, 202);
    // Two days later (Stripe keeps keys 24 h) the client retries.
    let later = t0() + Duration::days(2);
    rig.processor.set_now(later);
    assert_eq!(rig.pay("k4", "30", later).await, 201);
    assert_eq!(rig.processor.successful_charges(&rig.card.id), 1, "found, not charged again");
    assert_eq!(rig.balance().await, rust_decimal::Decimal::from(30));
}

#[tokio::test]
async fn a_processor_that_never_got_the_request_is_charged_once_by_the_replay() {
    let rig = rig().await;
    rig.processor.push_fault(ChargeFault::Unreachable);
    assert_eq!(rig.pay("k5", "30", t0()).await, 202);
    assert_eq!(rig.processor.successful_charges(&rig.card.id), 0);
    assert_eq!(rig.pay("k5", "30", t0() + Duration::minutes(2)).await, 201);
    assert_eq!(rig.processor.successful_charges(&rig.card.id), 1);
    let ledger: &dyn LedgerStore = &*rig.store;
    let entries = ledger::store::all_entries(
        ledger,
        &rig.id,
        ledger::EntryQuery {
            from: None,
            to: None,
            show: ledger::Show::All,
            cursor: None,
            limit: 100,
        },
    )
    .await
    .unwrap();
    assert_eq!(entries.iter().filter(|e| e.item == BillingItem::FundsAdded).count(), 1);
}
