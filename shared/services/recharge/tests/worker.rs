//! The auto-recharge worker in process: memory store, simulated processor, recorded notices.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use conformance::{at, credit, open, usage, usd};
use documents::profile::{self, CardRole, Email, StoredCard};
use documents::Store;
use ledger::docs::DocStore;
use ledger::memory::MemoryStore;
use ledger::{
    Account, AccountId, Amount, LedgerEvent, LedgerEventKind, LedgerStore, RechargeMode,
    RechargeSettings,
};
use notifications::notice::{Notice, NoticeKind, NoticeSink};
use payments::{CardProcessor, SimulatedProcessor};
use recharge::{Fault, Outcome, RechargeWorker, MAX_ATTEMPTS};

#[derive(Default)]
struct Notices(Mutex<Vec<Notice>>);

#[async_trait]
impl NoticeSink for Notices {
    async fn publish(
        &self,
        notice: &Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(notice.clone());
        Ok(())
    }
}

struct Rig {
    store: Arc<MemoryStore>,
    processor: Arc<SimulatedProcessor>,
    notices: Arc<Notices>,
    worker: Arc<RechargeWorker>,
    id: AccountId,
    cards: Vec<String>,
}

/// An account with terms, the given cards (first is primary), auto-recharge
/// (threshold $15, amount $50, `mode`), funded with $20 and then used down to $14.99.
async fn rig(card_tokens: &[&str], mode: RechargeMode) -> (Rig, LedgerEvent) {
    let store = Arc::new(MemoryStore::new());
    let processor = Arc::new(SimulatedProcessor::new());
    let notices = Arc::new(Notices::default());
    let id = open(&*store, "acme", None).await;
    let customer = processor.create_customer("acme", None).await.unwrap();
    let mut cards = Vec::new();
    for (index, token) in card_tokens.iter().enumerate() {
        let details = processor.attach_card(&customer, token).await.unwrap();
        cards.push(details.payment_method_id.clone());
        let card = StoredCard {
            kind: Default::default(),
            verified: true,
            id: details.payment_method_id,
            brand: details.brand,
            last4: details.last4,
            exp_month: details.exp_month,
            exp_year: details.exp_year,
            role: if index == 0 { CardRole::Primary } else { CardRole::Backup },
            card_manager_email: Email::try_from("cards@acme.example".to_string()).unwrap(),
            added_at: Utc::now() + Duration::seconds(index as i64),
        };
        let customer_id = customer.0.clone();
        profile::update(&*store, &id, |p| {
            p.processor_customer_id = Some(customer_id.clone());
            p.cards.push(card.clone());
            Ok(())
        })
        .await
        .unwrap();
    }
    store.post(&id, vec![credit("pay-1", "20")], at(1)).await.unwrap();
    store
        .modify_account(
            &id,
            Arc::new(move |a: &mut Account| {
                a.recharge = Some(RechargeSettings::new(
                    true,
                    Amount::from_str("50")?,
                    Amount::from_str("15")?,
                    mode,
                )?);
                Ok(())
            }),
            at(1),
        )
        .await
        .unwrap();
    let crossed = store.post(&id, vec![usage("call-1", "5.01")], at(2)).await.unwrap();
    assert_eq!(crossed.account.balance_usd, usd("14.99"));
    let event = crossed
        .events
        .into_iter()
        .find(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. }))
        .expect("the crossing raised a recharge request");
    let dyn_store: Arc<dyn Store> = store.clone();
    let worker = Arc::new(RechargeWorker::new(dyn_store, processor.clone(), notices.clone()));
    (Rig { store, processor, notices, worker, id, cards }, event)
}

impl Rig {
    async fn balance(&self) -> rust_decimal::Decimal {
        self.store.account(&self.id).await.unwrap().unwrap().balance_usd
    }

    fn successes(&self) -> u64 {
        self.cards.iter().map(|c| self.processor.successful_charges(c)).sum()
    }

    fn attempts(&self) -> u64 {
        self.cards.iter().map(|c| self.processor.charge_attempts(c)).sum()
    }

    fn notices(&self, kind: &str) -> Vec<Notice> {
        self.notices.0.lock().unwrap().iter().filter(|n| n.kind.as_str() == kind).cloned().collect()
    }
}

#[tokio::test]
async fn top_up_to_charges_the_difference_once_and_brings_the_balance_back_to_fifty() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::TopUpTo).await;
    let outcome = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Settled { amount_usd, .. } if amount_usd.value() == usd("35.01")),
        "{outcome:?}"
    );
    assert_eq!(rig.balance().await, usd("50"));
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.recharge_in_flight, None, "the credit settled the request");
    assert_eq!(rig.successes(), 1);
    let receipts = rig.notices("payment_receipt");
    assert_eq!(receipts.len(), 1);
    assert!(
        matches!(&receipts[0].kind, NoticeKind::PaymentReceipt { balance_after_usd, .. } if *balance_after_usd == usd("50"))
    );

    // The same request delivered again changes nothing and charges nothing.
    let again = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert!(matches!(again, Outcome::NotNeeded(_)), "{again:?}");
    assert_eq!(rig.successes(), 1);
    assert_eq!(rig.balance().await, usd("50"));
}

#[tokio::test]
async fn add_mode_charges_the_configured_amount() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::Add).await;
    rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert_eq!(rig.balance().await, usd("64.99"));
}

#[tokio::test]
async fn a_declined_primary_falls_back_to_the_backup_card() {
    let (rig, request) =
        rig(&["pm_card_chargeDeclined", "pm_card_mastercard"], RechargeMode::TopUpTo).await;
    let outcome = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert!(matches!(&outcome, Outcome::Settled { .. }), "{outcome:?}");
    assert_eq!(rig.processor.charge_attempts(&rig.cards[0]), 1);
    assert_eq!(rig.processor.successful_charges(&rig.cards[1]), 1);
    assert_eq!(rig.balance().await, usd("50"));
    assert!(rig.notices("recharge_failed").is_empty());
}

#[tokio::test]
async fn when_every_card_fails_nothing_is_credited_and_no_card_is_charged_again_before_the_backoff()
{
    let (rig, request) = rig(
        &["pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"],
        RechargeMode::TopUpTo,
    )
    .await;
    let start = Utc::now();
    let first = rig.worker.handle(&request, start).await.unwrap();
    assert_eq!(first, Outcome::RetryAt(start + Duration::hours(1)));
    assert_eq!(rig.attempts(), 2, "each card tried once");
    assert_eq!(rig.balance().await, usd("14.99"), "nothing credited");
    let failures = rig.notices("recharge_failed");
    assert_eq!(failures.len(), 1);
    match &failures[0].kind {
        NoticeKind::RechargeFailed { failures, next_attempt_at, attempt, .. } => {
            assert_eq!(failures.len(), 2);
            assert!(failures.iter().any(|f| f.reason.to_lowercase().contains("insufficient")));
            assert_eq!(*attempt, 1);
            assert_eq!(*next_attempt_at, Some(start + Duration::hours(1)));
        }
        other => panic!("{other:?}"),
    }
    // Redelivered early: it waits, and no card is touched.
    let early = rig.worker.handle(&request, start + Duration::minutes(30)).await.unwrap();
    assert_eq!(early, Outcome::NotYet(start + Duration::hours(1)));
    assert_eq!(rig.attempts(), 2);
    // After the backoff: the second attempt, then 6 h.
    let later = start + Duration::minutes(61);
    let second = rig.worker.handle(&request, later).await.unwrap();
    assert_eq!(second, Outcome::RetryAt(later + Duration::hours(6)));
    assert_eq!(rig.attempts(), 4);
    // And it stops after the last attempt.
    let mut now = later;
    let mut last = second;
    for _ in 2..MAX_ATTEMPTS {
        now += Duration::hours(13);
        last = rig.worker.handle(&request, now).await.unwrap();
    }
    assert_eq!(last, Outcome::Stopped("out of attempts"));
    assert_eq!(rig.attempts(), 2 * u64::from(MAX_ATTEMPTS));
    // The stop cleared the in-flight marker: a redelivery is a request nobody wants any more.
    let stopped = rig.worker.handle(&request, now + Duration::days(2)).await.unwrap();
    assert!(matches!(stopped, Outcome::NotNeeded(_)), "{stopped:?}");
    assert_eq!(rig.attempts(), 2 * u64::from(MAX_ATTEMPTS), "never again");
}

/// After every card failed `MAX_ATTEMPTS` attempts in a row, auto-recharge is off until
/// someone acts: debits next month raise no request and charge nothing; a card change turns it
/// back on, and the next debit below the threshold charges again.
#[tokio::test]
async fn out_of_attempts_turns_auto_recharge_off_until_a_card_change_whatever_the_month() {
    let (rig, request) = rig(&["pm_card_chargeDeclined"], RechargeMode::TopUpTo).await;
    let mut now = Utc::now();
    let mut last = rig.worker.handle(&request, now).await.unwrap();
    for _ in 1..MAX_ATTEMPTS {
        now += Duration::hours(13);
        last = rig.worker.handle(&request, now).await.unwrap();
    }
    assert_eq!(last, Outcome::Stopped("out of attempts"));
    assert_eq!(MAX_ATTEMPTS, 3, "three failed attempts in a row, as telephony providers do");
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    let stop = account.recharge_stopped.clone().expect("stopped");
    assert!(stop.until_lifted);
    let final_notice = rig.notices("recharge_failed").pop().expect("a failure notice");
    let text = notifications::templates::render(&final_notice).text;
    assert!(text.contains("turned itself off after 3 failed attempts"), "{text}");
    // Two months later a debit below the threshold raises nothing.
    let later = now + Duration::days(62);
    let debit = rig.store.post(&rig.id, vec![usage("call-2", "1")], later).await.unwrap();
    assert!(
        !debit.events.iter().any(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. })),
        "{:?}",
        debit.events
    );
    assert!(debit.account.recharge_in_flight.is_none());
    // A new card turns it back on: the ledger raises a request at once, and it charges.
    let attempts = rig.attempts();
    let customer = payments::CustomerId(
        profile::load(&*rig.store, &rig.id).await.unwrap().0.processor_customer_id.unwrap(),
    );
    let visa = rig.processor.attach_card(&customer, "pm_card_visa").await.unwrap();
    profile::update(&*rig.store, &rig.id, |p| {
        for card in &mut p.cards {
            card.role = CardRole::Backup;
        }
        p.cards.push(StoredCard {
            kind: Default::default(),
            verified: true,
            id: visa.payment_method_id.clone(),
            brand: visa.brand.clone(),
            last4: visa.last4.clone(),
            exp_month: visa.exp_month,
            exp_year: visa.exp_year,
            role: CardRole::Primary,
            card_manager_email: Email::try_from("cards@acme.example".to_string()).unwrap(),
            added_at: later,
        });
        Ok(())
    })
    .await
    .unwrap();
    assert!(payment_flow::rearm_auto_recharge(&*rig.store, &rig.id).await.unwrap());
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert!(account.recharge_stopped.is_none());
    let fresh = account.recharge_in_flight.clone().expect("a fresh request at once");
    let event = rig
        .store
        .pending_events(500)
        .await
        .unwrap()
        .into_iter()
        .find(|e| matches!(&e.kind, LedgerEventKind::RechargeRequested { request_id } if *request_id == fresh))
        .expect("its event");
    let settled = rig.worker.handle(&event, later).await.unwrap();
    assert!(matches!(settled, Outcome::Settled { .. }), "{settled:?}");
    assert_eq!(rig.attempts(), attempts, "the declined card is not charged again");
    assert_eq!(rig.processor.successful_charges(&visa.payment_method_id), 1);
}

#[tokio::test]
async fn killed_after_the_charge_before_the_credit_the_retry_finds_the_payment_and_credits_once() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::TopUpTo).await;
    rig.worker.inject_fault_once(Fault::AfterChargeBeforeCredit);
    assert!(rig.worker.handle(&request, Utc::now()).await.is_err());
    assert_eq!(rig.successes(), 1, "the card was charged");
    assert_eq!(rig.balance().await, usd("14.99"), "but not credited yet");
    let retried = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert!(matches!(retried, Outcome::Settled { .. }));
    assert_eq!(rig.successes(), 1, "the retry found the same payment: one charge");
    assert_eq!(rig.balance().await, usd("50"), "credited once");
}

#[tokio::test]
async fn killed_before_the_charge_the_retry_charges_once() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::TopUpTo).await;
    rig.worker.inject_fault_once(Fault::BeforeCharge);
    assert!(rig.worker.handle(&request, Utc::now()).await.is_err());
    assert_eq!(rig.attempts(), 0);
    rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert_eq!(rig.successes(), 1);
    assert_eq!(rig.balance().await, usd("50"));
}

#[tokio::test]
async fn the_same_request_delivered_twice_at_once_charges_once() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::TopUpTo).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let worker = rig.worker.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move { worker.handle(&request, Utc::now()).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(rig.successes(), 1);
    assert_eq!(rig.balance().await, usd("50"));
    conformance::assert_consistent(&*rig.store, &rig.id).await;
}

#[tokio::test]
async fn the_monthly_cap_stops_auto_recharge_and_says_so() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::Add).await;
    profile::update(&*rig.store, &rig.id, |p| {
        p.auto_recharge_monthly_cap_usd = Some(Amount::from_str("49.99").unwrap());
        Ok(())
    })
    .await
    .unwrap();
    let outcome = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert_eq!(outcome, Outcome::Stopped("monthly cap reached"));
    assert_eq!(rig.attempts(), 0);
    assert_eq!(rig.notices("recharge_cap_reached").len(), 1);
}

#[tokio::test]
async fn a_recharge_reactivates_a_suspended_account() {
    let (rig, _) = rig(&["pm_card_visa"], RechargeMode::TopUpTo).await;
    rig.store.post(&rig.id, vec![usage("big", "20")], at(3)).await.unwrap();
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.status, ledger::AccountStatus::Suspended);
    let in_flight = account.recharge_in_flight.clone().unwrap();
    let event = LedgerEvent {
        id: format!("acme:recharge_requested:{}", account.last_seq),
        account_id: rig.id.clone(),
        kind: LedgerEventKind::RechargeRequested { request_id: in_flight },
        seq: account.last_seq,
        version: account.version,
        balance_usd: account.balance_usd,
        raised_at: Utc::now(),
    };
    rig.worker.handle(&event, Utc::now()).await.unwrap();
    let after = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(after.balance_usd, usd("50"), "topped up from -5.01 to 50: 55.01 charged");
    assert_eq!(after.status, ledger::AccountStatus::Active);
    let pending = rig.store.pending_events(100).await.unwrap();
    assert!(pending.iter().any(|e| e.kind == LedgerEventKind::Reactivated));
}

#[tokio::test]
async fn a_new_card_resets_the_backoff_and_a_fresh_request_is_charged_once() {
    use tower::ServiceExt;
    let (rig, request) = rig(
        &["pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"],
        RechargeMode::TopUpTo,
    )
    .await;
    let start = Utc::now();
    assert!(matches!(rig.worker.handle(&request, start).await.unwrap(), Outcome::RetryAt(_)));

    // The admin registers a working card through the API.
    let dyn_store: Arc<dyn Store> = rig.store.clone();
    let state = Arc::new(api::state::AppState {
        store: dyn_store,
        cards: rating::RateCards::standard_only(),
        processor: rig.processor.clone(),
        notices: None,
        statements: None,
        portal: None,
    });
    let jwt = api::auth::LocalJwt::new(b"secret".to_vec());
    let token = jwt.issue("admin@acme.example", Some("acme"), api::auth::Role::Admin, 600);
    let app = api::app::local(state, jwt);
    let body = r#"{"payment_method_token": "pm_card_visa", "card_manager_email": "a@acme.example", "role": "primary"}"#;
    let response = app
        .oneshot(
            axum::http::Request::post("/v1/cards")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);

    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    let fresh_id = account.recharge_in_flight.clone().expect("a fresh request was raised");
    let LedgerEventKind::RechargeRequested { request_id: old_id } = &request.kind else {
        unreachable!()
    };
    assert_ne!(&fresh_id, old_id);
    let fresh = rig
        .store
        .pending_events(100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| matches!(&e.kind, LedgerEventKind::RechargeRequested { request_id } if *request_id == fresh_id))
        .expect("the fresh request is in the outbox");
    let outcome = rig.worker.handle(&fresh, start + Duration::minutes(1)).await.unwrap();
    assert!(matches!(outcome, Outcome::Settled { .. }), "{outcome:?}");
    assert_eq!(rig.balance().await, usd("50"));
    // The old request, when its message comes back, is dropped.
    let old = rig.worker.handle(&request, start + Duration::hours(2)).await.unwrap();
    assert!(matches!(old, Outcome::NotNeeded(_)), "{old:?}");
    let (profile, _) = profile::load(&*rig.store, &rig.id).await.unwrap();
    let charged: u64 = profile.cards.iter().map(|c| rig.processor.successful_charges(&c.id)).sum();
    assert_eq!(charged, 1, "one successful charge in all");
    assert_eq!(rig.balance().await, usd("50"));
}

// ---- Recovery first, stops that clear what they hold, re-checks at charge time (issue 11) ----

async fn disable_auto_recharge(rig: &Rig) {
    rig.store
        .modify_account(
            &rig.id,
            Arc::new(|a: &mut Account| {
                a.recharge = None;
                Ok(())
            }),
            Utc::now(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_charge_whose_credit_crashed_is_credited_even_after_auto_recharge_is_disabled() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::Add).await;
    rig.worker.inject_fault_once(Fault::AfterChargeBeforeCredit);
    assert!(rig.worker.handle(&request, Utc::now()).await.is_err());
    assert_eq!(rig.successes(), 1, "the card was charged");
    disable_auto_recharge(&rig).await;

    let outcome = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert!(matches!(outcome, Outcome::Settled { .. }), "{outcome:?}");
    assert_eq!(rig.balance().await, usd("64.99"), "the charge is credited once");
    assert_eq!(rig.successes(), 1);
}

#[tokio::test]
async fn a_charge_whose_credit_crashed_is_credited_after_its_card_is_deleted_and_no_backup_is_charged(
) {
    let (rig, request) = rig(&["pm_card_visa", "pm_card_mastercard"], RechargeMode::Add).await;
    rig.worker.inject_fault_once(Fault::AfterChargeBeforeCredit);
    assert!(rig.worker.handle(&request, Utc::now()).await.is_err());
    let charged = rig.cards[0].clone();
    profile::update(&*rig.store, &rig.id, |p| {
        p.cards.retain(|c| c.id != charged);
        Ok(())
    })
    .await
    .unwrap();

    let outcome = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Settled { card_last4, .. } if card_last4 == "4242"),
        "{outcome:?}"
    );
    assert_eq!(rig.processor.successful_charges(&rig.cards[1]), 0, "the backup is not charged");
    assert_eq!(rig.successes(), 1);
    assert_eq!(rig.balance().await, usd("64.99"));
}

#[tokio::test]
async fn a_crash_after_the_credit_still_records_the_payment_and_sends_the_receipt() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::Add).await;
    rig.worker.inject_fault_once(Fault::AfterCreditBeforeBookkeeping);
    assert!(rig.worker.handle(&request, Utc::now()).await.is_err());
    assert_eq!(rig.balance().await, usd("64.99"));
    assert!(rig.notices("payment_receipt").is_empty());

    let outcome = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert!(matches!(outcome, Outcome::Settled { .. }), "{outcome:?}");
    assert_eq!(rig.balance().await, usd("64.99"), "credited once");
    assert_eq!(rig.notices("payment_receipt").len(), 1);
    let payments =
        rig.store.list_docs(&rig.id, ledger::docs::DocKind::Payment, None, 10).await.unwrap();
    assert_eq!(payments.len(), 1);
    assert!(payments[0].body.contains("\"succeeded\""), "{}", payments[0].body);
    assert_eq!(rig.successes(), 1);
}

#[tokio::test]
async fn add_mode_charges_nothing_when_the_balance_recovered_before_the_worker_ran() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::Add).await;
    rig.store.post(&rig.id, vec![credit("pay-2", "20")], at(3)).await.unwrap();
    let outcome = rig.worker.handle(&request, Utc::now()).await.unwrap();
    assert!(matches!(outcome, Outcome::NotNeeded(_)), "{outcome:?}");
    assert_eq!(rig.attempts(), 0);
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.recharge_in_flight, None);
}

#[tokio::test]
async fn a_request_out_of_attempts_clears_in_flight_stops_for_the_month_and_a_card_change_rearms_it(
) {
    let (rig, request) = rig(&["pm_card_chargeDeclined"], RechargeMode::Add).await;
    let mut now = Utc::now();
    let mut last = None;
    for _ in 0..(MAX_ATTEMPTS * 3) {
        let outcome = rig.worker.handle(&request, now).await.unwrap();
        if let Outcome::RetryAt(at) | Outcome::NotYet(at) = outcome {
            now = at;
            continue;
        }
        last = Some(outcome);
        break;
    }
    assert_eq!(last, Some(Outcome::Stopped("out of attempts")));
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert_eq!(account.recharge_in_flight, None, "a stopped request holds nothing");
    let stop = account.recharge_stopped.clone().expect("stopped for the month");
    assert_eq!(stop.month, ledger::Month::of(now));

    // More usage the same month raises no new request (no runaway retries)...
    let posted = rig.store.post(&rig.id, vec![usage("call-2", "1")], now).await.unwrap();
    assert!(!posted
        .events
        .iter()
        .any(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. })));
    // ...and a card change (or a payment) re-arms it at once.
    assert!(payment_flow::rearm_auto_recharge(&*rig.store, &rig.id).await.unwrap());
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert!(account.recharge_in_flight.is_some(), "a fresh request was raised");
    assert_eq!(account.recharge_stopped, None);
}

/// A cap stop ends with its month; an out-of-attempts stop does not (it waits for someone to
/// act: see `out_of_attempts_turns_auto_recharge_off_until_a_card_change_whatever_the_month`).
#[tokio::test]
async fn a_cap_stop_ends_with_its_month_and_an_out_of_attempts_stop_does_not() {
    let (rig, request) = rig(&["pm_card_chargeDeclined"], RechargeMode::Add).await;
    let mut now = at(3);
    for _ in 0..(MAX_ATTEMPTS * 3) {
        match rig.worker.handle(&request, now).await.unwrap() {
            Outcome::RetryAt(at) | Outcome::NotYet(at) => now = at,
            _ => break,
        }
    }
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    let stop = account.recharge_stopped.expect("stopped");
    assert!(stop.until_lifted);
    let next_month = chrono::DateTime::parse_from_rfc3339(&format!("{}-28T00:00:00Z", stop.month))
        .unwrap()
        .to_utc()
        + Duration::days(5);
    let raised = |events: &[LedgerEvent]| {
        events.iter().any(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. }))
    };
    let posted = rig.store.post(&rig.id, vec![usage("call-3", "1")], next_month).await.unwrap();
    assert!(!raised(&posted.events), "{:?}", posted.events);
    // The same stop for a reached cap ends with its month.
    let month = stop.month;
    rig.store
        .modify_account(
            &rig.id,
            Arc::new(move |a: &mut Account| {
                a.recharge_stopped = Some(ledger::RechargeStop {
                    month,
                    reason: "monthly cap reached".into(),
                    until_lifted: false,
                    day: None,
                });
                Ok(())
            }),
            next_month,
        )
        .await
        .unwrap();
    // (The change itself raises the request: the balance is below the threshold and last
    // month's stop no longer holds.)
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    assert!(account.recharge_in_flight.is_some(), "a request was raised");
}

// ---- The daily cap (issue 16) ----

/// The recharge request the last posting raised.
fn raised(outcome: &ledger::PostOutcome) -> LedgerEvent {
    outcome
        .events
        .iter()
        .find(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. }))
        .cloned()
        .expect("a recharge request")
}

#[tokio::test]
async fn the_daily_cap_stops_auto_recharge_for_the_rest_of_the_day_only() {
    let (rig, first) = rig(&["pm_card_visa"], RechargeMode::Add).await;
    profile::update(&*rig.store, &rig.id, |p| {
        p.auto_recharge_daily_cap_usd = Some(Amount::from_str("100").unwrap());
        Ok(())
    })
    .await
    .unwrap();
    let day = Utc::now();
    assert!(matches!(rig.worker.handle(&first, day).await.unwrap(), Outcome::Settled { .. }));
    let second = rig.store.post(&rig.id, vec![usage("call-2", "50")], day).await.unwrap();
    let second = raised(&second);
    assert!(matches!(rig.worker.handle(&second, day).await.unwrap(), Outcome::Settled { .. }));
    // $100 spent today: a third $50 would pass the cap.
    let third = rig.store.post(&rig.id, vec![usage("call-3", "50")], day).await.unwrap();
    let third = raised(&third);
    assert_eq!(
        rig.worker.handle(&third, day).await.unwrap(),
        Outcome::Stopped("daily cap reached")
    );
    assert_eq!(rig.successes(), 2);
    let said = rig.notices("recharge_daily_cap_reached");
    assert_eq!(said.len(), 1);
    assert!(matches!(
        said[0].kind,
        NoticeKind::RechargeDailyCapReached { spent_usd, .. } if spent_usd == usd("100")
    ));
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    let stop = account.recharge_stopped.clone().expect("stopped");
    assert_eq!(stop.day, Some(day.date_naive()));
    // Later the same day, more usage raises nothing.
    let later = rig.store.post(&rig.id, vec![usage("call-4", "1")], day).await.unwrap();
    assert!(later
        .events
        .iter()
        .all(|e| !matches!(e.kind, LedgerEventKind::RechargeRequested { .. })));
    // The next UTC day, the next debit raises a request, and it is charged.
    let tomorrow = day + Duration::days(1);
    let next = rig.store.post(&rig.id, vec![usage("call-5", "1")], tomorrow).await.unwrap();
    let next = raised(&next);
    assert!(matches!(rig.worker.handle(&next, tomorrow).await.unwrap(), Outcome::Settled { .. }));
    assert_eq!(rig.successes(), 3);
    conformance::assert_consistent(&*rig.store, &rig.id).await;
}

/// A crash after a reached cap was written down: the redelivery replays the same stop (for the
/// day, not "out of attempts", which would turn auto-recharge off for good) and the notice.
#[tokio::test]
async fn a_cap_stop_interrupted_by_a_crash_is_replayed_as_the_same_stop() {
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::Add).await;
    profile::update(&*rig.store, &rig.id, |p| {
        p.auto_recharge_daily_cap_usd = Some(Amount::from_str("49.99").unwrap());
        Ok(())
    })
    .await
    .unwrap();
    let day = Utc::now();
    rig.worker.inject_fault_once(Fault::AfterCapRecorded);
    assert!(rig.worker.handle(&request, day).await.is_err(), "crashed");
    assert!(rig.notices("recharge_daily_cap_reached").is_empty());
    let outcome = rig.worker.handle(&request, day).await.unwrap();
    assert_eq!(outcome, Outcome::Stopped("daily cap reached"));
    let stop = rig.store.account(&rig.id).await.unwrap().unwrap().recharge_stopped.unwrap();
    assert!(!stop.until_lifted, "a cap is not a failure: {stop:?}");
    assert_eq!(stop.day, Some(day.date_naive()));
    assert_eq!(rig.notices("recharge_daily_cap_reached").len(), 1);
    assert_eq!(rig.attempts(), 0);
}

/// Pay Now through the API, then the pending recharge: with the operator's switch on, the
/// manual payment counts toward the daily cap; off (the default), it does not.
async fn pay_then_recharge(count_manual_payments: bool) -> Outcome {
    use tower::ServiceExt;
    let (rig, request) = rig(&["pm_card_visa"], RechargeMode::Add).await;
    let dyn_store: Arc<dyn Store> = rig.store.clone();
    let state = Arc::new(api::state::AppState {
        store: dyn_store,
        cards: rating::RateCards::standard_only(),
        processor: rig.processor.clone(),
        notices: None,
        statements: None,
        portal: None,
    });
    let jwt = api::auth::LocalJwt::new(b"secret".to_vec());
    let admin = jwt.issue("admin@acme.example", Some("acme"), api::auth::Role::Admin, 600);
    let operator = jwt.issue("ops@example.com", None, api::auth::Role::Operator, 600);
    let app = api::app::local(state, jwt);
    let call = |method: &str, path: &str, token: &str, body: &str, key: Option<&str>| {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        app.clone().oneshot(request.body(axum::body::Body::from(body.to_string())).unwrap())
    };
    let caps = r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "15", "mode": "add", "daily_cap_usd": "100"}"#;
    let saved = call("PUT", "/v1/settings/auto-recharge", &admin, caps, None).await.unwrap();
    assert_eq!(saved.status().as_u16(), 200);
    let switch = format!(r#"{{"count_manual_payments": {count_manual_payments}}}"#);
    let path = "/v1/operator/accounts/acme/recharge-caps";
    assert_eq!(call("PUT", path, &operator, &switch, None).await.unwrap().status().as_u16(), 200);
    let paid = call("POST", "/v1/payments", &admin, r#"{"amount_usd": "60"}"#, Some("by-hand-1"));
    assert_eq!(paid.await.unwrap().status().as_u16(), 201);
    // Back below the threshold: the request the Pay Now's re-arm raised, or the first one.
    let drained = rig.store.post(&rig.id, vec![usage("call-9", "70")], Utc::now()).await.unwrap();
    let event = drained
        .events
        .iter()
        .find(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. }))
        .cloned()
        .unwrap_or(request);
    let account = rig.store.account(&rig.id).await.unwrap().unwrap();
    let in_flight = account.recharge_in_flight.clone().expect("a request in flight");
    let event =
        LedgerEvent { kind: LedgerEventKind::RechargeRequested { request_id: in_flight }, ..event };
    rig.worker.handle(&event, Utc::now()).await.unwrap()
}

#[tokio::test]
async fn pay_now_counts_toward_the_caps_only_when_the_operator_says_so() {
    assert_eq!(pay_then_recharge(true).await, Outcome::Stopped("daily cap reached"));
    assert!(matches!(pay_then_recharge(false).await, Outcome::Settled { .. }));
}
