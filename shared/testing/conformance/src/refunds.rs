//! Card refunds (issue 16) on every store: the refund flow's promises (debited once, returned
//! once, never more than the payment, a refused refund reversed once) rest on each store's
//! version-checked documents and idempotent postings. Pending refunds are finished by
//! delivering their `RefundPending` events, duplicated and out of order, as SQS would.

use std::sync::Arc;

use chrono::Utc;
use documents::payment::{load_payment, PaymentRecord, RefundStatus};
use documents::Store;
use ledger::{AccountId, AccountStatus, BillingItem, EntryKind, LedgerEventKind, LedgerStore};
use payment_flow::refund::{reconcile_pending_refund, refund_payment, RefundAsk, RefundError};
use payment_flow::{pay_now_with, PayNowAnswer, PaymentPorts, Reconciled};
use payments::{CardProcessor, RefundFault, SimulatedProcessor};
use rust_decimal::Decimal;

use crate::cases::{amount, open, primary_card};

/// A store that keeps both the ledger and the documents (every real store does).
pub use documents::Store as DocumentStore;

struct Rig {
    store: Arc<dyn Store>,
    processor: Arc<SimulatedProcessor>,
    id: AccountId,
}

impl Rig {
    async fn new(store: Arc<dyn Store>, name: &str) -> Rig {
        let id = open(&*store as &dyn LedgerStore, name, None).await;
        Rig { store, processor: Arc::new(SimulatedProcessor::new()), id }
    }

    fn ports(&self) -> PaymentPorts<'_> {
        PaymentPorts { store: &*self.store, processor: &*self.processor, notices: None }
    }

    /// A Pay Now of `usd` from a fresh Visa: the succeeded payment.
    async fn paid(&self, key: &str, usd: &str) -> PaymentRecord {
        let customer = self.processor.create_customer(self.id.as_str(), None).await.unwrap();
        let card = self.processor.attach_card(&customer, "pm_card_visa").await.unwrap();
        let stored = primary_card(card);
        let answer = pay_now_with(
            &self.ports(),
            &self.id,
            key,
            amount(usd),
            &stored,
            customer.as_str(),
            Utc::now(),
        )
        .await
        .expect("pay now");
        match answer {
            PayNowAnswer::Credited { payment } => payment,
            other => panic!("pay now came to {other:?}"),
        }
    }

    async fn refund(
        &self,
        payment: &str,
        key: &str,
        usd: &str,
    ) -> Result<RefundStatus, RefundError> {
        let ask = RefundAsk {
            payment_id: payment.to_string(),
            refund_id: key.to_string(),
            amount: amount(usd),
            reason: "customer asked".into(),
            by: Some("ops".into()),
        };
        refund_payment(&self.ports(), &self.id, ask, Utc::now()).await.map(|a| a.refund.status)
    }

    async fn payment(&self, payment_id: &str) -> PaymentRecord {
        load_payment(&*self.store, &self.id, payment_id).await.unwrap().expect("payment")
    }

    /// Sum of the account's `card_refund` entries: (debits, credits).
    async fn refund_entries(&self) -> (Decimal, Decimal, usize) {
        let store: &dyn LedgerStore = &*self.store;
        let entries = ledger::store::all_entries(store, &self.id, ledger::EntryQuery::default())
            .await
            .unwrap();
        let mut sums = (Decimal::ZERO, Decimal::ZERO, 0);
        for entry in entries.iter().filter(|e| e.item == BillingItem::CardRefund) {
            match entry.kind {
                EntryKind::Debit => sums.0 += entry.amount_usd.value(),
                EntryKind::Credit => sums.1 += entry.amount_usd.value(),
            }
            sums.2 += 1;
        }
        sums
    }

    /// Deliver every pending `RefundPending` event twice, newest first, as a redelivering
    /// queue would; returns how many were still not final after that.
    async fn deliver_refund_events(&self) -> usize {
        let store: &dyn LedgerStore = &*self.store;
        let events = store.pending_events(500).await.unwrap();
        let mut pending: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.kind {
                LedgerEventKind::RefundPending { refund } if e.account_id == self.id => {
                    Some(refund.clone())
                }
                _ => None,
            })
            .collect();
        pending.reverse();
        let mut not_final = 0;
        for refund in pending.iter().chain(pending.iter()) {
            match reconcile_pending_refund(&self.ports(), &self.id, refund, Utc::now()).await {
                Ok(Reconciled::Final) => {}
                Ok(Reconciled::NotYet(_)) => not_final += 1,
                Err(error) => panic!("reconciling {refund}: {error}"),
            }
        }
        not_final
    }

    fn returned_cents(&self, payment: &PaymentRecord) -> u64 {
        self.processor.refunded_cents(payment.processor_payment_id.as_deref().unwrap())
    }
}

fn usd(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// A refund debits once and returns once, however often it is asked for; a key reused for
/// another amount changes nothing; partial refunds add up to at most the payment.
pub async fn a_refund_debits_and_returns_once_whatever_is_repeated(store: Arc<dyn Store>) {
    let rig = Rig::new(store, "refund-once").await;
    let payment = rig.paid("pay-1", "100").await;
    assert_eq!(rig.refund(&payment.payment_id, "r1", "30").await.unwrap(), RefundStatus::Sent);
    for _ in 0..3 {
        assert_eq!(rig.refund(&payment.payment_id, "r1", "30").await.unwrap(), RefundStatus::Sent);
    }
    assert!(matches!(
        rig.refund(&payment.payment_id, "r1", "31").await,
        Err(RefundError::KeyReused { .. })
    ));
    assert_eq!(rig.refund(&payment.payment_id, "r2", "70").await.unwrap(), RefundStatus::Sent);
    assert!(matches!(
        rig.refund(&payment.payment_id, "r3", "0.01").await,
        Err(RefundError::TooMuch { .. })
    ));
    let record = rig.payment(&payment.payment_id).await;
    assert_eq!(record.refundable_usd(), Decimal::ZERO);
    assert_eq!(record.refunds.len(), 2);
    assert!(record
        .refunds
        .iter()
        .all(|r| r.entry_seq.is_some() && r.processor_refund_id.is_some()));
    assert_eq!(rig.returned_cents(&record), 10_000);
    assert_eq!(rig.refund_entries().await, (usd("100"), Decimal::ZERO, 2));
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, Decimal::ZERO);
    assert!(account.pending_refunds.is_empty());
    assert_eq!(rig.deliver_refund_events().await, 0);
    assert_eq!(rig.refund_entries().await, (usd("100"), Decimal::ZERO, 2));
}

/// Refunds racing for one payment never return more than it: every refund that was not
/// refused is debited once and returned once, and together they stay within the payment.
pub async fn racing_refunds_never_exceed_the_payment(store: Arc<dyn Store>) {
    let rig = Arc::new(Rig::new(store, "refund-race").await);
    let payment = rig.paid("pay-1", "100").await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (rig, payment_id) = (rig.clone(), payment.payment_id.clone());
        tasks.push(tokio::spawn(async move {
            rig.refund(&payment_id, &format!("race-{n}"), "20").await
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            Ok(RefundStatus::Sent) | Err(RefundError::TooMuch { .. } | RefundError::Busy) => {}
            other => panic!("a racing refund came to {other:?}"),
        }
    }
    // A refund that lost a race after it was written down (Busy) is finished by its event.
    rig.deliver_refund_events().await;
    let record = rig.payment(&payment.payment_id).await;
    let sent = record.refunds.iter().filter(|r| r.status == RefundStatus::Sent).count();
    assert_eq!(sent, record.refunds.len(), "{:?}", record.refunds);
    assert!((1..=5).contains(&sent), "{sent} refunds of $20 were sent");
    let refunded = usd("20") * Decimal::from(sent);
    assert_eq!(record.refundable_usd(), usd("100") - refunded);
    assert_eq!(rig.returned_cents(&record), 2_000 * sent as u64);
    assert_eq!(rig.refund_entries().await, (refunded, Decimal::ZERO, sent));
}

/// Unknown outcomes: a lost answer and an unreachable processor leave the refund debited and
/// `requested`; its event, delivered twice and out of order, finds or sends it exactly once.
pub async fn an_unknown_refund_outcome_is_finished_once_by_its_event(store: Arc<dyn Store>) {
    let rig = Rig::new(store, "refund-unknown").await;
    let payment = rig.paid("pay-1", "100").await;
    rig.processor.push_refund_fault(RefundFault::AnswerLost);
    assert_eq!(
        rig.refund(&payment.payment_id, "lost", "10").await.unwrap(),
        RefundStatus::Requested
    );
    rig.processor.set_unavailable(true);
    assert_eq!(
        rig.refund(&payment.payment_id, "down", "15").await.unwrap(),
        RefundStatus::Requested
    );
    rig.processor.set_unavailable(false);
    // Debited already, returned: the lost one yes, the other not yet.
    assert_eq!(rig.refund_entries().await, (usd("25"), Decimal::ZERO, 2));
    let record = rig.payment(&payment.payment_id).await;
    assert_eq!(rig.returned_cents(&record), 1_000);
    assert_eq!(record.refundable_usd(), usd("75"));
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.pending_refunds.len(), 2);

    assert_eq!(rig.deliver_refund_events().await, 0);
    let record = rig.payment(&payment.payment_id).await;
    assert!(record.refunds.iter().all(|r| r.status == RefundStatus::Sent), "{record:?}");
    assert_eq!(rig.returned_cents(&record), 2_500);
    assert_eq!(rig.refund_entries().await, (usd("25"), Decimal::ZERO, 2));
    assert!(rig.store.account(&rig.id).await.unwrap().unwrap().pending_refunds.is_empty());
    // A repeat of the API call after the reconciler finished: the same refund, nothing new.
    assert_eq!(rig.refund(&payment.payment_id, "lost", "10").await.unwrap(), RefundStatus::Sent);
    assert_eq!(rig.returned_cents(&record), 2_500);
}

/// A refund the processor refuses is returned to the balance once, and what it took from the
/// payment is refundable again.
pub async fn a_refused_refund_is_reversed_once(store: Arc<dyn Store>) {
    let rig = Rig::new(store, "refund-refused").await;
    let payment = rig.paid("pay-1", "100").await;
    rig.processor.push_refund_fault(RefundFault::Fails);
    assert_eq!(rig.refund(&payment.payment_id, "no", "40").await.unwrap(), RefundStatus::Failed);
    assert_eq!(rig.refund(&payment.payment_id, "no", "40").await.unwrap(), RefundStatus::Failed);
    assert_eq!(rig.deliver_refund_events().await, 0);
    assert_eq!(rig.refund_entries().await, (usd("40"), usd("40"), 2));
    let record = rig.payment(&payment.payment_id).await;
    let line = record.refund("no").unwrap();
    assert!(line.reversal_seq.is_some() && line.failure_reason.is_some());
    assert_eq!(record.refundable_usd(), usd("100"));
    assert_eq!(rig.returned_cents(&record), 0);
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, usd("100"));
    // A new refund of the whole payment still goes through.
    assert_eq!(rig.refund(&payment.payment_id, "yes", "100").await.unwrap(), RefundStatus::Sent);
}

/// Refunding money already spent takes the balance below the floor, and the account suspends
/// like at any debit; a payment that did not succeed cannot be refunded.
pub async fn refunding_spent_money_suspends_the_account(store: Arc<dyn Store>) {
    let rig = Rig::new(store, "refund-spent").await;
    let payment = rig.paid("pay-1", "50").await;
    let spend = ledger::Posting::usage(
        ledger::SourceId::parse("call-1").unwrap(),
        BillingItem::PhoneCall,
        amount("45"),
        Utc::now(),
    )
    .unwrap();
    rig.store.post(&rig.id, vec![spend], Utc::now()).await.unwrap();
    assert_eq!(rig.refund(&payment.payment_id, "all", "50").await.unwrap(), RefundStatus::Sent);
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, usd("-45"));
    assert_eq!(account.status, AccountStatus::Suspended);
    assert!(matches!(
        rig.refund("no-such-payment", "x", "1").await,
        Err(RefundError::NoSuchPayment(_))
    ));
}

/// Dispute states applied duplicated and in any order post each money step once: a won dispute
/// withdraws and reinstates the funds and the fee, a lost one only withdraws them, and what a
/// dispute holds cannot also be refunded. The scheduled reconciliation changes nothing after.
pub async fn dispute_states_apply_once_in_any_order(store: Arc<dyn Store>) {
    use payment_flow::dispute::{apply_dispute, reconcile_disputes};
    let rig = Rig::new(store, "disputed").await;
    let payment = rig.paid("pay-1", "100").await;
    let intent = payment.processor_payment_id.clone().unwrap();
    let won = rig.processor.open_dispute(&intent, 4_000).unwrap();
    let opened = rig.processor.disputes().into_iter().find(|d| d.dispute_id == won).unwrap();
    let withdrawn = rig.processor.withdraw_dispute_funds(&won).unwrap();
    let decided = rig.processor.decide_dispute(&won, true).unwrap();
    for state in [&decided, &opened, &withdrawn, &decided, &withdrawn, &opened] {
        apply_dispute(&rig.ports(), state, Utc::now()).await.expect("apply");
    }
    let lost = rig.processor.open_dispute(&intent, 4_000).unwrap();
    let opened_lost = rig.processor.disputes().into_iter().find(|d| d.dispute_id == lost).unwrap();
    let decided_lost = rig.processor.decide_dispute(&lost, false).unwrap();
    for state in [&decided_lost, &opened_lost, &decided_lost] {
        apply_dispute(&rig.ports(), state, Utc::now()).await.expect("apply");
    }
    let store: &dyn LedgerStore = &*rig.store;
    let entries =
        ledger::store::all_entries(store, &rig.id, ledger::EntryQuery::default()).await.unwrap();
    let disputes: Vec<_> = entries.iter().filter(|e| e.item == BillingItem::Dispute).collect();
    let signed: Decimal = disputes.iter().map(|e| e.signed_amount_usd()).sum();
    assert_eq!(disputes.len(), 6, "won: 2 debits + 2 credits; lost: 2 debits");
    assert_eq!(signed, usd("-55"), "the lost dispute's $40 and its $15 fee");
    let record = rig.payment(&payment.payment_id).await;
    let status = |id: &str| record.disputes.iter().find(|d| d.dispute_id == id).unwrap().status;
    assert_eq!(status(&won), documents::payment::DisputeOutcome::Won);
    assert_eq!(status(&lost), documents::payment::DisputeOutcome::Lost);
    assert_eq!(record.refundable_usd(), usd("60"), "what the lost dispute holds is not refundable");
    assert!(matches!(
        rig.refund(&payment.payment_id, "too-much", "60.01").await,
        Err(RefundError::TooMuch { .. })
    ));
    assert_eq!(rig.refund(&payment.payment_id, "rest", "60").await.unwrap(), RefundStatus::Sent);
    // The scheduled reconciliation sees both disputes as they stand: nothing new.
    let since = Utc::now() - chrono::Duration::days(1);
    assert_eq!(reconcile_disputes(&rig.ports(), since, Utc::now()).await.unwrap(), 2);
    let after =
        ledger::store::all_entries(store, &rig.id, ledger::EntryQuery::default()).await.unwrap();
    assert_eq!(after.len(), entries.len() + 1, "only the refund's debit was added");
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, usd("-15"));
    assert!(account.open_disputes.is_empty(), "{:?}", account.open_disputes);
    // A dispute left open is listed on the account (for the operator's policy), once however
    // often its state arrives, and unlisted when it is decided, even if "open" comes late.
    let open = rig.processor.open_dispute(&intent, 1_000).unwrap();
    let opened = rig.processor.disputes().into_iter().find(|d| d.dispute_id == open).unwrap();
    for _ in 0..2 {
        apply_dispute(&rig.ports(), &opened, Utc::now()).await.expect("apply");
    }
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.open_disputes, std::slice::from_ref(&open));
    let decided = rig.processor.decide_dispute(&open, true).unwrap();
    for state in [&decided, &opened] {
        apply_dispute(&rig.ports(), state, Utc::now()).await.expect("apply");
    }
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert!(account.open_disputes.is_empty(), "{:?}", account.open_disputes);
}

/// A refund the processor took and failed afterwards (its event delivered twice, late) is
/// returned to the balance once, and its amount is refundable again.
pub async fn a_refund_that_fails_later_is_reversed_once(store: Arc<dyn Store>) {
    use payment_flow::refund::refund_failed_later;
    let rig = Rig::new(store, "refund-later").await;
    let payment = rig.paid("pay-1", "100").await;
    assert_eq!(rig.refund(&payment.payment_id, "r-1", "30").await.unwrap(), RefundStatus::Sent);
    let intent = payment.processor_payment_id.clone().unwrap();
    let key = rig
        .processor
        .refunds()
        .into_iter()
        .find(|(request, _)| request.payment_intent_id == intent)
        .map(|(request, _)| request.idempotency_key)
        .unwrap();
    assert!(rig.processor.fail_refund_later(&key).is_some());
    for _ in 0..2 {
        let answer = refund_failed_later(&rig.ports(), &intent, &key, "card closed", Utc::now())
            .await
            .unwrap()
            .expect("our refund");
        assert_eq!(answer.refund.status, RefundStatus::Failed);
    }
    assert_eq!(rig.refund_entries().await, (usd("30"), usd("30"), 2));
    let record = rig.payment(&payment.payment_id).await;
    assert_eq!(record.refundable_usd(), usd("100"));
    assert_eq!(rig.returned_cents(&record), 0);
    assert_eq!(record.refund("r-1").unwrap().failure_reason.as_deref(), Some("card closed"));
    // Not one of our keys: nothing to do.
    assert!(refund_failed_later(&rig.ports(), &intent, "someone-else", "x", Utc::now())
        .await
        .unwrap()
        .is_none());
}

/// 3-D Secure on Pay Now: the payment's events (the processor's `payment_intent.*`, which
/// reconcile the payment) arrive before the holder acts, after, twice, concurrently: nothing is
/// credited before the success and it is credited once after; a second payment left waiting is
/// cancelled after the window, with nothing credited.
pub async fn a_payment_waiting_for_its_holder_is_credited_once_whatever_its_events_do(
    store: Arc<dyn Store>,
) {
    use payment_flow::{reconcile_pending_payment, AUTHENTICATION_WINDOW_MINUTES};
    let rig = Rig::new(store, "three-ds").await;
    let customer = rig.processor.create_customer(rig.id.as_str(), None).await.unwrap();
    let card = rig.processor.attach_card(&customer, "pm_card_authenticationRequired").await;
    let stored = primary_card(card.unwrap());
    let now = Utc::now();
    let pay = |key: &'static str| {
        let ports = rig.ports();
        let stored = stored.clone();
        let customer = customer.clone();
        let id = rig.id.clone();
        async move {
            pay_now_with(&ports, &id, key, amount("40"), &stored, customer.as_str(), now).await
        }
    };
    let answer = pay("auth-1").await.expect("pay now");
    let PayNowAnswer::Pending { payment, next_action: Some(_) } = answer else {
        panic!("expected a payment waiting for its holder, got {answer:?}");
    };
    let later = now + chrono::Duration::seconds(payment_flow::STALE_IN_PROGRESS_SECONDS + 1);
    let balance = || async {
        let store: &dyn LedgerStore = &*rig.store;
        store.account(&rig.id).await.unwrap().unwrap().balance_usd
    };
    // An event before the holder acts: still waiting, nothing credited.
    let early = reconcile_pending_payment(&rig.ports(), &rig.id, "auth-1", later).await.unwrap();
    assert!(matches!(early, Reconciled::NotYet(_)), "{early:?}");
    assert_eq!(balance().await, Decimal::ZERO);
    assert!(rig.processor.authenticate(payment.processor_payment_id.as_deref().unwrap(), true));
    // The success's event, delivered four times at once (after the early look's claim went
    // stale: until then a look finds the payment in that look's hands).
    let after = later + chrono::Duration::seconds(payment_flow::STALE_IN_PROGRESS_SECONDS + 1);
    let ports = rig.ports();
    let deliveries = (0..4).map(|_| reconcile_pending_payment(&ports, &rig.id, "auth-1", after));
    for delivered in futures::future::join_all(deliveries).await {
        delivered.expect("reconcile");
    }
    assert_eq!(balance().await, usd("40"), "credited once");
    // Left waiting: cancelled after the window, nothing credited, nothing pending.
    let answer = pay("auth-2").await.expect("pay now");
    assert!(matches!(answer, PayNowAnswer::Pending { next_action: Some(_), .. }));
    let late = now + chrono::Duration::minutes(AUTHENTICATION_WINDOW_MINUTES + 1);
    for _ in 0..2 {
        let settled = reconcile_pending_payment(&rig.ports(), &rig.id, "auth-2", late).await;
        assert!(matches!(settled.expect("reconcile"), Reconciled::Final));
    }
    assert_eq!(balance().await, usd("40"));
    let store: &dyn LedgerStore = &*rig.store;
    assert!(store.account(&rig.id).await.unwrap().unwrap().pending_payments.is_empty());
    assert_eq!(rig.processor.successful_charges(&stored.id), 1);
}

/// The processor's card events, repeated and out of order: the stored card ends as the newest
/// update says, never back to an earlier expiry.
pub async fn card_updates_apply_once_in_any_order(store: Arc<dyn Store>) {
    use payment_flow::cards::{card_updated, CardEvent};
    let rig = Rig::new(store, "card-updates").await;
    let customer = rig.processor.create_customer(rig.id.as_str(), None).await.unwrap();
    let card = rig.processor.attach_card(&customer, "pm_card_visa").await.unwrap();
    let stored = primary_card(card.clone());
    documents::profile::update(&*rig.store, &rig.id, |p| {
        p.cards = vec![stored.clone()];
        Ok(())
    })
    .await
    .unwrap();
    let update = |year: u16, last4: &str| payments::CardDetails {
        kind: Default::default(),
        verified: true,
        exp_year: year,
        exp_month: 3,
        last4: last4.into(),
        ..card.clone()
    };
    let (newest, older) = (update(2046, "1881"), update(2044, "0000"));
    let mut outcomes = Vec::new();
    for details in [&older, &newest, &older, &newest] {
        outcomes.push(card_updated(&rig.ports(), customer.as_str(), details).await.unwrap());
    }
    assert_eq!(
        outcomes,
        [CardEvent::Updated, CardEvent::Updated, CardEvent::Unchanged, CardEvent::Unchanged]
    );
    let (profile, _) = documents::profile::load(&*rig.store, &rig.id).await.unwrap();
    let now = &profile.cards[0];
    assert_eq!((now.last4.as_str(), now.exp_month, now.exp_year), ("1881", 3, 2046));
    let stranger = payments::CustomerId("cus_not_ours".into());
    assert_eq!(
        card_updated(&rig.ports(), stranger.as_str(), &newest).await.unwrap(),
        CardEvent::NotOurs
    );
}

/// A refund made in the processor's dashboard is followed once however often its event comes
/// (and by the reconciliation when it does not); failing later, it is reversed once; our own
/// refunds are left to the refund flow.
pub async fn refunds_made_at_the_processor_are_followed_once(store: Arc<dyn Store>) {
    use payment_flow::refund::{
        reconcile_external_refunds, sync_external_refunds, AT_THE_PROCESSOR,
    };
    let rig = Rig::new(store, "dashboard").await;
    let payment = rig.paid("pay-1", "100").await;
    let intent = payment.processor_payment_id.clone().unwrap();
    assert_eq!(rig.refund(&payment.payment_id, "ours", "10").await.unwrap(), RefundStatus::Sent);
    let outside = rig.processor.refund_outside(&intent, 3_000).unwrap();
    for _ in 0..3 {
        sync_external_refunds(&rig.ports(), &intent, Utc::now()).await.expect("sync");
    }
    let since = Utc::now() - chrono::Duration::days(1);
    assert_eq!(reconcile_external_refunds(&rig.ports(), since, Utc::now()).await.unwrap(), 0);
    let record = rig.payment(&payment.payment_id).await;
    assert_eq!(record.refunds.len(), 2, "ours and the dashboard's: {:?}", record.refunds);
    let line = record.refund(&outside).expect("the dashboard's refund is on the payment");
    assert_eq!((line.amount_usd, line.by.as_deref()), (amount("30"), Some(AT_THE_PROCESSOR)));
    assert_eq!(record.refundable_usd(), usd("60"));
    assert_eq!(rig.refund_entries().await, (usd("40"), Decimal::ZERO, 2));
    // It fails at the processor later: reversed once, refundable again.
    assert!(rig.processor.fail_refund_later(&format!("dashboard:{outside}")).is_some());
    for _ in 0..2 {
        sync_external_refunds(&rig.ports(), &intent, Utc::now()).await.expect("sync");
    }
    assert_eq!(reconcile_external_refunds(&rig.ports(), since, Utc::now()).await.unwrap(), 0);
    assert_eq!(rig.refund_entries().await, (usd("40"), usd("30"), 3));
    let record = rig.payment(&payment.payment_id).await;
    assert_eq!(record.refund(&outside).unwrap().status, RefundStatus::Failed);
    assert_eq!(record.refundable_usd(), usd("90"));
    // One the event never announced: the reconciliation finds it.
    let unannounced = rig.processor.refund_outside(&intent, 500).unwrap();
    assert_eq!(reconcile_external_refunds(&rig.ports(), since, Utc::now()).await.unwrap(), 1);
    assert!(rig.payment(&payment.payment_id).await.refund(&unannounced).is_some());
    let store: &dyn LedgerStore = &*rig.store;
    assert_eq!(store.account(&rig.id).await.unwrap().unwrap().balance_usd, usd("85"));
}

/// Generate one `#[tokio::test]` per refund case for a store that keeps ledger and documents.
#[macro_export]
macro_rules! refund_suite {
    ($factory:path) => {
        $crate::refund_suite!(@case $factory,
            a_refund_debits_and_returns_once_whatever_is_repeated,
            racing_refunds_never_exceed_the_payment,
            an_unknown_refund_outcome_is_finished_once_by_its_event,
            a_refused_refund_is_reversed_once,
            refunding_spent_money_suspends_the_account,
            dispute_states_apply_once_in_any_order,
            a_refund_that_fails_later_is_reversed_once,
            a_payment_waiting_for_its_holder_is_credited_once_whatever_its_events_do,
            card_updates_apply_once_in_any_order,
            refunds_made_at_the_processor_are_followed_once,
        );
    };
    (@case $factory:path, $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::refunds::$name($factory().await).await;
            }
        )+
    };
}
