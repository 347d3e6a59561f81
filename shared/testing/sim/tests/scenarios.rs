//! Named scenarios from peers' public bugs, played against the real Pay Now and recharge code.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use documents::payment::{PaymentRecord, PaymentStatus};
use documents::profile::{self, StoredCard};
use documents::Store;
use ledger::docs::{DocKind, DocStore};
use ledger::memory::MemoryStore;
use ledger::{AccountId, Amount, BillingItem, LedgerEventKind, LedgerStore, NewAccount};
use payment_flow::{pay_now_with, PaymentPorts};
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
    let card = sim::register_card(&*store, &*processor, &id, &customer, "pm_card_visa", true, t0())
        .await
        .expect("card");
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
        sim::http_status(
            &pay_now_with(&ports, &self.id, key, amount, &self.card, &self.customer, now).await,
        )
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

// ---- Auto-recharge scenarios from peers' public bugs ----

use ledger::{Account, Posting, RechargeMode, RechargeSettings, SourceId};
use notifications::notice::NoticeKind;

struct Recharging {
    rig: Rig,
    notices: Arc<sim::RecordedNotices>,
    worker: Arc<RechargeWorker>,
}

/// The rig's account funded with $100, auto-recharge at $20 (amount $50, `mode`), and an
/// optional monthly cap.
async fn recharging(mode: RechargeMode, cap_usd: Option<&str>) -> Recharging {
    let rig = rig().await;
    let ledger: &dyn LedgerStore = &*rig.store;
    ledger.post(&rig.id, vec![credit("adj:fund", "100")], t0()).await.unwrap();
    let settings = RechargeSettings::new(
        true,
        Amount::from_str("50").unwrap(),
        Amount::from_str("20").unwrap(),
        mode,
    )
    .unwrap();
    ledger
        .modify_account(
            &rig.id,
            Arc::new(move |a: &mut Account| {
                a.recharge = Some(settings.clone());
                Ok(())
            }),
            t0(),
        )
        .await
        .unwrap();
    if let Some(cap) = cap_usd {
        let cap = Amount::from_str(cap).unwrap();
        profile::update(&*rig.store, &rig.id, |p| {
            p.auto_recharge_monthly_cap_usd = Some(cap);
            Ok(())
        })
        .await
        .unwrap();
    }
    let notices = Arc::new(sim::RecordedNotices::default());
    let dyn_store: Arc<dyn Store> = rig.store.clone();
    let worker = Arc::new(RechargeWorker::new(dyn_store, rig.processor.clone(), notices.clone()));
    Recharging { rig, notices, worker }
}

fn credit(source: &str, usd: &str) -> Posting {
    Posting::credit(
        SourceId::parse(source).unwrap(),
        BillingItem::Adjustment,
        Amount::from_str(usd).unwrap(),
        t0(),
    )
    .unwrap()
}

fn call(source: &str, usd: &str) -> Posting {
    Posting::usage(
        SourceId::parse(source).unwrap(),
        BillingItem::PhoneCall,
        Amount::from_str(usd).unwrap(),
        t0(),
    )
    .unwrap()
}

impl Recharging {
    /// Relay every pending recharge request to the worker until nothing is left (bounded).
    async fn drain(&self, now: DateTime<Utc>) -> Vec<Outcome> {
        let ledger: &dyn LedgerStore = &*self.rig.store;
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            let events = ledger.pending_events(50).await.unwrap();
            if events.is_empty() {
                break;
            }
            for event in events {
                if matches!(event.kind, LedgerEventKind::RechargeRequested { .. }) {
                    outcomes.push(self.worker.handle(&event, now).await.unwrap());
                }
                ledger.ack_event(&event).await.unwrap();
            }
        }
        outcomes
    }

    fn charges(&self) -> u64 {
        self.rig.processor.successful_charges(&self.rig.card.id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lago_5870_a_duplicate_top_up_request_charges_once() {
    let r = recharging(RechargeMode::Add, None).await;
    let ledger: &dyn LedgerStore = &*r.rig.store;
    let posted = ledger.post(&r.rig.id, vec![call("use:c1", "85")], t0()).await.unwrap();
    let request = posted
        .events
        .into_iter()
        .find(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. }))
        .expect("one request");
    // The same request delivered four times at once (SQS at-least-once, Lambda retries).
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (worker, event) = (r.worker.clone(), request.clone());
            tokio::spawn(async move { worker.handle(&event, t0()).await })
        })
        .collect();
    for handle in handles {
        let _ = handle.await.unwrap();
    }
    r.worker.handle(&request, t0()).await.unwrap();
    assert_eq!(r.charges(), 1);
    assert_eq!(r.rig.balance().await, rust_decimal::Decimal::from(65));
}

#[tokio::test]
async fn lago_3618_a_top_up_is_never_settled_twice() {
    let r = recharging(RechargeMode::Add, None).await;
    let ledger: &dyn LedgerStore = &*r.rig.store;
    let posted = ledger.post(&r.rig.id, vec![call("use:c1", "85")], t0()).await.unwrap();
    let request = posted
        .events
        .into_iter()
        .find(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. }))
        .unwrap();
    // Settled, then the answer lost on a second delivery, then delivered again a day later.
    assert!(matches!(r.worker.handle(&request, t0()).await.unwrap(), Outcome::Settled { .. }));
    r.rig.processor.push_fault(ChargeFault::AnswerLost);
    let _ = r.worker.handle(&request, t0()).await;
    let later = t0() + Duration::days(1);
    r.rig.processor.set_now(later);
    let again = r.worker.handle(&request, later).await.unwrap();
    assert!(matches!(again, Outcome::NotNeeded(_)), "{again:?}");
    assert_eq!(r.charges(), 1);
    assert_eq!(r.rig.balance().await, rust_decimal::Decimal::from(65));
}

#[tokio::test]
async fn lago_6177_one_large_debit_raises_one_top_up_not_a_runaway_of_them() {
    for mode in [RechargeMode::Add, RechargeMode::TopUpTo] {
        let r = recharging(mode, None).await;
        let ledger: &dyn LedgerStore = &*r.rig.store;
        // $400 of calls from $100: far below the $20 threshold, and below the floor.
        ledger.post(&r.rig.id, vec![call("use:big", "400")], t0()).await.unwrap();
        let outcomes = r.drain(t0()).await;
        let settled = outcomes.iter().filter(|o| matches!(o, Outcome::Settled { .. })).count();
        assert_eq!(settled, 1, "{mode:?}: {outcomes:?}");
        assert_eq!(r.charges(), 1, "{mode:?}");
        // Still below the threshold after one top-up: no new request until the next posting.
        assert!(r.drain(t0()).await.is_empty(), "{mode:?}");
        let expected = match mode {
            RechargeMode::Add => rust_decimal::Decimal::from(-250),
            RechargeMode::TopUpTo => rust_decimal::Decimal::from(50),
        };
        assert_eq!(r.rig.balance().await, expected, "{mode:?}");
    }
}

#[tokio::test]
async fn lago_5992_a_cap_stops_auto_top_up_loudly_and_clears_what_it_held() {
    let r = recharging(RechargeMode::Add, Some("60")).await;
    let ledger: &dyn LedgerStore = &*r.rig.store;
    ledger.post(&r.rig.id, vec![call("use:c1", "85")], t0()).await.unwrap();
    r.drain(t0()).await;
    assert_eq!(r.charges(), 1, "the first $50 fits under the $60 cap");
    ledger.post(&r.rig.id, vec![call("use:c2", "50")], t0()).await.unwrap();
    let outcomes = r.drain(t0()).await;
    assert_eq!(outcomes, vec![Outcome::Stopped("monthly cap reached")]);
    assert_eq!(r.charges(), 1);
    let account = ledger.account(&r.rig.id).await.unwrap().unwrap();
    assert_eq!(account.recharge_in_flight, None, "nothing left holding the account");
    assert_eq!(account.recharge_stopped.map(|s| s.reason), Some("monthly cap reached".to_string()));
    let said = r.notices.published();
    assert!(said.iter().any(|n| matches!(n.kind, NoticeKind::RechargeCapReached { .. })));
    // Next month the stop has ended and the next posting raises a request again.
    let next_month = t0() + Duration::days(31);
    let posted = ledger.post(&r.rig.id, vec![call("use:c3", "1")], next_month).await.unwrap();
    assert!(posted
        .events
        .iter()
        .any(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. })));
}

#[tokio::test]
async fn cgrates_568_a_final_usage_debit_posts_even_through_the_floor() {
    let r = recharging(RechargeMode::Add, None).await;
    let ledger: &dyn LedgerStore = &*r.rig.store;
    let posted = ledger.post(&r.rig.id, vec![call("use:long-call", "130")], t0()).await.unwrap();
    assert!(matches!(posted.results[0], ledger::PostingResult::Applied { .. }));
    assert_eq!(posted.account.balance_usd, rust_decimal::Decimal::from(-30));
    assert_eq!(posted.account.status, ledger::AccountStatus::Suspended);
}

// ---- Real concurrency: workers racing on one request, a processor that yields mid-charge ----

/// The simulated processor, with the charge call yielding to other tasks before and after it
/// reaches the processor, so racing workers really interleave on a multi-threaded runtime.
struct Yielding(Arc<SimulatedProcessor>);

#[async_trait::async_trait]
impl CardProcessor for Yielding {
    async fn create_customer(
        &self,
        account_id: &str,
        email: Option<&str>,
    ) -> Result<payments::CustomerId, payments::ProcessorError> {
        self.0.create_customer(account_id, email).await
    }

    async fn attach_card(
        &self,
        customer: &payments::CustomerId,
        token: &str,
    ) -> Result<payments::CardDetails, payments::ProcessorError> {
        self.0.attach_card(customer, token).await
    }

    async fn detach_card(&self, id: &str) -> Result<(), payments::ProcessorError> {
        self.0.detach_card(id).await
    }

    async fn charge(
        &self,
        request: &payments::ChargeRequest,
    ) -> Result<payments::ChargeOutcome, payments::ProcessorError> {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let outcome = self.0.charge(request).await;
        tokio::task::yield_now().await;
        outcome
    }

    async fn find_charge(
        &self,
        customer: &payments::CustomerId,
        key: &str,
    ) -> Result<Option<payments::ChargeOutcome>, payments::ProcessorError> {
        tokio::task::yield_now().await;
        self.0.find_charge(customer, key).await
    }

    async fn refund(
        &self,
        request: &payments::RefundRequest,
    ) -> Result<payments::RefundOutcome, payments::ProcessorError> {
        self.0.refund(request).await
    }

    async fn find_refund(
        &self,
        payment_intent_id: &str,
        key: &str,
    ) -> Result<Option<payments::RefundOutcome>, payments::ProcessorError> {
        self.0.find_refund(payment_intent_id, key).await
    }
    async fn recent_disputes(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<payments::DisputeState>, payments::ProcessorError> {
        self.0.recent_disputes(since).await
    }

    async fn payment_account(
        &self,
        payment_intent_id: &str,
    ) -> Result<Option<String>, payments::ProcessorError> {
        self.0.payment_account(payment_intent_id).await
    }

    async fn cancel_charge(
        &self,
        payment_intent_id: &str,
    ) -> Result<payments::ChargeOutcome, payments::ProcessorError> {
        self.0.cancel_charge(payment_intent_id).await
    }

    async fn refunds_of(
        &self,
        payment_intent_id: &str,
    ) -> Result<Vec<payments::ProcessorRefund>, payments::ProcessorError> {
        self.0.refunds_of(payment_intent_id).await
    }

    async fn recent_refunds(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<payments::ProcessorRefund>, payments::ProcessorError> {
        self.0.recent_refunds(since).await
    }

    async fn customer_account(
        &self,
        customer: &payments::CustomerId,
    ) -> Result<Option<String>, payments::ProcessorError> {
        self.0.customer_account(customer).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_workers_racing_on_one_request_conflict_and_charge_and_credit_once() {
    let store = Arc::new(sim::FaultyStore::new(1, 0));
    let processor = Arc::new(SimulatedProcessor::new());
    let id = AccountId::parse("race").unwrap();
    let ledger: &dyn LedgerStore = &*store;
    ledger
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, t0())
        .await
        .unwrap();
    let customer = processor.create_customer("race", None).await.unwrap();
    let card = sim::register_card(&*store, &*processor, &id, &customer, "pm_card_visa", true, t0())
        .await
        .expect("card");
    ledger.post(&id, vec![credit("adj:fund", "30")], t0()).await.unwrap();
    let settings = RechargeSettings::new(
        true,
        Amount::from_str("50").unwrap(),
        Amount::from_str("20").unwrap(),
        RechargeMode::Add,
    )
    .unwrap();
    ledger
        .modify_account(
            &id,
            Arc::new(move |a: &mut Account| {
                a.recharge = Some(settings.clone());
                Ok(())
            }),
            t0(),
        )
        .await
        .unwrap();
    let posted = ledger.post(&id, vec![call("use:c1", "15")], t0()).await.unwrap();
    let request = posted
        .events
        .into_iter()
        .find(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. }))
        .unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let worker = Arc::new(RechargeWorker::new(
        dyn_store,
        Arc::new(Yielding(processor.clone())),
        Arc::new(sim::RecordedNotices::default()),
    ));
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (worker, event, barrier) = (worker.clone(), request.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                worker.handle(&event, t0()).await
            })
        })
        .collect();
    let mut settled = 0;
    for task in tasks {
        if let Ok(Outcome::Settled { .. }) = task.await.unwrap() {
            settled += 1;
        }
    }
    assert!(store.conflicts() > 0, "the workers really raced on the write-ahead record");
    assert!(settled >= 1);
    assert_eq!(processor.successful_charges(&card.id), 1, "one charge");
    let account = ledger.account(&id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, rust_decimal::Decimal::from(65), "one credit");
    assert_eq!(account.recharge_in_flight, None);
}
