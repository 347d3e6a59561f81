//! The SQS batch worker, the outbox relay and the Lambda handler, against the in-process
//! `MemoryStore` and a recording `EventSink`. Amounts are worked out by hand beside each
//! assertion; the standard card is `RateCard::standard()`, "plan" is `common::plan_card()`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::sqs::SqsEvent;
use chrono::{DateTime, Utc};
use common::*;
use ledger::memory::MemoryStore;
use ledger::{
    Account, AccountChange, AccountId, BillingItem, EntryPage, EntryQuery, LedgerEvent,
    LedgerEventKind, LedgerStore, NewAccount, PlanUsage, PostOutcome, Posting, PostingSource,
    SourceId, StoreError,
};
use messaging::outbox::{sweep, EventSink};
use rating::{RateCard, RateCardError};
use rust_decimal_macros::dec;
use usage::worker::{
    process_batch_received, BatchReport, Failure, Message, RateCards, CONTENTION_BUDGET,
    MAX_EVENTS_PER_POST,
};

/// The worker as the queue drives it, receiving at the tests' fixed `now()` so the fixtures'
/// occurrence times stay within the accepted window whenever the tests run.
async fn process_batch(
    store: Arc<dyn LedgerStore>,
    cards: &RateCards,
    sink: Option<Arc<dyn EventSink>>,
    messages: Vec<Message>,
) -> BatchReport {
    process_batch_received(store, cards, sink, messages, now()).await
}

fn message(id: &str, body: &str) -> Message {
    Message { id: id.into(), body: body.into() }
}

fn cards() -> RateCards {
    RateCards::new(HashMap::from([("plan".to_string(), plan_card())]), RateCard::standard())
        .expect("valid cards")
}

fn sorted(mut failures: Vec<Failure>) -> Vec<(String, String)> {
    failures.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    failures.into_iter().map(|f| (f.message_id, f.reason)).collect()
}

/// acme on the standard card with $10, globex on the "plan" card with $10.
async fn two_accounts() -> (Arc<MemoryStore>, AccountId, AccountId) {
    let store = Arc::new(MemoryStore::new());
    let acme = open(&store, "acme", dec!(10)).await;
    let globex = open(&store, "globex", dec!(10)).await;
    set_rate_card(&store, &globex, "plan").await;
    drain_outbox(&store).await;
    (store, acme, globex)
}

fn mixed_batch() -> Vec<Message> {
    vec![
        message("m-call", CALL_OUTBOUND),
        message("m-bad", POISON_MALFORMED),
        message("g-sms", &SMS_IN.replace("\"acme\"", "\"globex\"")),
        message("m-ghost", POISON_UNKNOWN_ACCOUNT),
        message("m-sms", SMS_OUT),
        message("m-long", &call("evt-long", "acme", "2026-11-03T12:00:00Z", 90_000)),
        message("g-call", &call("evt-g-call", "globex", "2026-11-03T12:00:00Z", 90)),
        message("m-fax", POISON_UNKNOWN_TYPE),
    ]
}

/// The truncated fixture's reason is serde_json's, behind the worker's prefix.
fn expected_mixed_failures() -> Vec<(String, String)> {
    vec![
        ("m-bad".into(), "not a usage event: EOF while parsing a value at line 1 column 41".into()),
        ("m-fax".into(), r#"unknown event type "fax""#.into()),
        ("m-ghost".into(), "unknown account ghost".into()),
        ("m-long".into(), "call duration 90000 s exceeds the 86400 s limit".into()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_mixed_batch_fails_exactly_the_bad_messages_and_posts_the_rest() {
    let (store, acme, globex) = two_accounts().await;
    let report = process_batch(store.clone(), &cards(), None, mixed_batch()).await;

    assert_eq!(sorted(report.failures.clone()), expected_mixed_failures());
    assert_eq!(
        report,
        BatchReport {
            failures: report.failures.clone(),
            // acme: call + sms; globex: sms + call.
            events_posted: 4,
            // acme: 2 + 2; globex sms 2, covered call 3 (call, #included, #surcharge).
            postings_applied: 9,
            postings_duplicate: 0,
            postings_reused: 0,
            postings_refused: 0,
        }
    );
    // acme, standard card: call 187 s -> 192 billed * 0.014/60 = 0.0448, surcharge 0.0025;
    // SMS 2 * 0.0079 = 0.0158, surcharge 0.003. 10 - 0.0661 = 9.9339.
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9339));
    // globex, plan card: SMS in 0.005 + 0.001; call 90 s covered (0.03 - 0.03) + 0.0025.
    let globex = account(&store, &globex).await;
    assert_eq!(globex.balance_usd, dec!(9.9915));
    assert_eq!(
        globex.plan_usage,
        PlanUsage { month: Some("2026-11".parse().unwrap()), included_seconds_used: 90 }
    );
    assert!(store.account(&account_id("ghost")).await.unwrap().is_none());
}

#[tokio::test]
async fn redelivering_a_processed_batch_posts_nothing_new_and_counts_duplicates() {
    let (store, acme, globex) = two_accounts().await;
    process_batch(store.clone(), &cards(), None, mixed_batch()).await;
    let (acme_before, globex_before) =
        (account(&store, &acme).await, account(&store, &globex).await);

    let report = process_batch(store.clone(), &cards(), None, mixed_batch()).await;
    assert_eq!(sorted(report.failures), expected_mixed_failures());
    // Every posting proposed is a duplicate: 2 + 2 for acme, 2 for globex's SMS and 2 for its
    // call (already applied, so rated without quota: no `#included` credit is proposed again).
    assert_eq!(
        (report.events_posted, report.postings_applied, report.postings_duplicate),
        (4, 0, 8)
    );
    assert_eq!(account(&store, &acme).await, acme_before);
    assert_eq!(account(&store, &globex).await, globex_before);
}

#[tokio::test]
async fn an_event_dated_in_the_future_fails_alone_and_leaves_the_included_minutes_to_later_calls() {
    let (store, _acme, globex) = two_accounts().await;
    let report = process_batch(
        store.clone(),
        &cards(),
        None,
        vec![
            message("g-2099", &call("evt-2099", "globex", "2099-01-01T00:00:00Z", 60)),
            message("g-now", &call("evt-now", "globex", "2026-11-03T16:30:00Z", 60)),
        ],
    )
    .await;
    assert_eq!(
        sorted(report.failures),
        vec![(
            "g-2099".into(),
            "occurred_at 2099-01-01 00:00:00 UTC is more than 300 s after the event was \
             received (2026-11-03 17:00:00 UTC)"
                .into()
        )]
    );
    // The call of now used its plan's included minutes: only the surcharge is paid.
    let globex = account(&store, &globex).await;
    assert_eq!(
        globex.plan_usage,
        PlanUsage { month: Some("2026-11".parse().unwrap()), included_seconds_used: 60 }
    );
    assert_eq!(globex.balance_usd, dec!(9.9975));
}

#[tokio::test]
async fn an_event_redelivered_at_another_price_is_counted_as_reused_not_charged_and_not_failed() {
    let (store, acme, _globex) = two_accounts().await;
    process_batch(store.clone(), &cards(), None, vec![message("m-sms", SMS_OUT)]).await;
    let before = account(&store, &acme).await;
    // The account moves to the plan card (other SMS prices); the platform redelivers.
    set_rate_card(&store, &acme, "plan").await;
    let report =
        process_batch(store.clone(), &cards(), None, vec![message("m-sms", SMS_OUT)]).await;
    assert!(report.failures.is_empty(), "retrying cannot help: {:?}", report.failures);
    assert_eq!(
        (report.postings_applied, report.postings_duplicate, report.postings_reused),
        (0, 0, 2)
    );
    assert_eq!(account(&store, &acme).await.balance_usd, before.balance_usd);
}

#[tokio::test]
async fn an_empty_batch_reports_nothing() {
    let store = Arc::new(MemoryStore::new());
    assert_eq!(process_batch(store, &cards(), None, vec![]).await, BatchReport::default());
}

#[tokio::test]
async fn a_refused_number_purchase_is_counted_but_not_failed() {
    let store = Arc::new(MemoryStore::new());
    let acme = open(&store, "acme", dec!(0.50)).await;
    accept_terms(&store, &acme).await;
    // Standard card: a local number costs 1.15 > 0.50.
    let report = process_batch(
        store.clone(),
        &cards(),
        None,
        vec![message("m-buy", NUMBER_PURCHASE), message("m-sms", SMS_IN)],
    )
    .await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!((report.events_posted, report.postings_applied, report.postings_refused), (2, 2, 1));
    // SMS in: 0.0079 + 0.003.
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(0.4891));
}

#[tokio::test]
async fn a_refused_number_purchase_raises_an_event_naming_the_number_for_the_platform() {
    let store = Arc::new(MemoryStore::new());
    let acme = open(&store, "acme", dec!(0.50)).await;
    accept_terms(&store, &acme).await;
    drain_outbox(&store).await;
    let sink = Arc::new(RecordingSink::default());
    let report = process_batch(
        store.clone(),
        &cards(),
        Some(sink.clone()),
        vec![message("m-buy", NUMBER_PURCHASE)],
    )
    .await;
    assert_eq!((report.postings_applied, report.postings_refused), (0, 1));
    let events = sink.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let LedgerEventKind::PurchaseRefused { item, amount_usd, details, .. } = &events[0].kind else {
        panic!("{events:?}");
    };
    assert_eq!((*item, amount_usd.value()), (BillingItem::PhoneNumber, dec!(1.15)));
    assert_eq!(details["number"], "+14155550100");
    assert_eq!(events[0].balance_usd, dec!(0.50));
    assert!(store.pending_events(10).await.unwrap().is_empty(), "published and acknowledged");
}

#[tokio::test]
async fn an_account_whose_rate_card_is_unknown_fails_all_its_messages_and_only_those() {
    let (store, acme, globex) = two_accounts().await;
    set_rate_card(&store, &acme, "gold").await;
    let acme_before = account(&store, &acme).await;
    let report = process_batch(
        store.clone(),
        &cards(),
        None,
        vec![
            message("m-call", CALL_OUTBOUND),
            message("m-sms", SMS_OUT),
            message("g-sms", &SMS_IN.replace("\"acme\"", "\"globex\"")),
        ],
    )
    .await;
    let reason = r#"account acme has unknown rate card Some("gold")"#.to_string();
    assert_eq!(
        sorted(report.failures),
        vec![("m-call".into(), reason.clone()), ("m-sms".into(), reason)]
    );
    assert_eq!((report.events_posted, report.postings_applied), (1, 2));
    assert_eq!(account(&store, &acme).await, acme_before);
    // globex, plan card: 0.005 + 0.001.
    assert_eq!(account(&store, &globex).await.balance_usd, dec!(9.994));
}

#[tokio::test]
async fn more_events_than_one_store_call_takes_are_posted_in_chunks() {
    let store = Arc::new(MemoryStore::new());
    let acme = open(&store, "acme", dec!(10)).await;
    let count = MAX_EVENTS_PER_POST * 2 + 5;
    let messages: Vec<Message> = (0..count)
        .map(|i| {
            let body = SMS_IN.replace("evt-sms-in-1", &format!("evt-sms-{i}"));
            message(&format!("m-{i}"), &body)
        })
        .collect();
    let report = process_batch(store.clone(), &cards(), None, messages).await;
    assert!(report.failures.is_empty());
    assert_eq!((report.events_posted, report.postings_applied), (count, count * 2));
    // 205 * (0.0079 + 0.003) = 205 * 0.0109 = 2.2345
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(7.7655));
}

// ---------------------------------------------------------------------------------------------
// Events raised by postings
// ---------------------------------------------------------------------------------------------

/// acme on the standard card with 0.05: the call and SMS (0.0661) take it to -0.0161.
async fn nearly_empty_account() -> (Arc<MemoryStore>, AccountId) {
    let store = Arc::new(MemoryStore::new());
    let acme = open(&store, "acme", dec!(0.05)).await;
    (store, acme)
}

fn suspending_batch() -> Vec<Message> {
    vec![message("m-call", CALL_OUTBOUND), message("m-sms", SMS_OUT)]
}

fn assert_one_suspension(events: &[LedgerEvent], acme: &AccountId) {
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, LedgerEventKind::Suspended);
    assert_eq!(&events[0].account_id, acme);
    assert_eq!(events[0].balance_usd, dec!(-0.0161));
}

#[tokio::test]
async fn with_a_sink_the_events_raised_are_published_and_acknowledged() {
    let (store, acme) = nearly_empty_account().await;
    let sink = Arc::new(RecordingSink::default());
    let report =
        process_batch(store.clone(), &cards(), Some(sink.clone()), suspending_batch()).await;
    assert!(report.failures.is_empty());
    assert_one_suspension(&sink.events(), &acme);
    assert!(store.pending_events(100).await.unwrap().is_empty());
}

#[tokio::test]
async fn without_a_sink_events_stay_pending_and_one_sweep_publishes_them_exactly_once() {
    let (store, acme) = nearly_empty_account().await;
    let report = process_batch(store.clone(), &cards(), None, suspending_batch()).await;
    assert!(report.failures.is_empty());
    assert_one_suspension(&store.pending_events(100).await.unwrap(), &acme);

    let sink = RecordingSink::default();
    assert_eq!(sweep(&*store, &sink, 10, 100).await.unwrap().relayed, 1);
    assert_eq!(sweep(&*store, &sink, 10, 100).await.unwrap().relayed, 0);
    assert_one_suspension(&sink.events(), &acme);
    assert!(store.pending_events(100).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_sink_leaves_the_messages_posted_and_the_events_for_the_sweeper() {
    let (store, acme) = nearly_empty_account().await;
    let down: Arc<dyn EventSink> = Arc::new(RecordingSink::failing());
    let report = process_batch(store.clone(), &cards(), Some(down), suspending_batch()).await;
    assert!(report.failures.is_empty(), "the postings were made: retrying would not help");
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(-0.0161));
    assert_one_suspension(&store.pending_events(100).await.unwrap(), &acme);

    let sink = RecordingSink::default();
    assert_eq!(sweep(&*store, &sink, 10, 100).await.unwrap().relayed, 1);
    assert_one_suspension(&sink.events(), &acme);
}

#[tokio::test]
async fn a_sweep_relays_at_most_max_events() {
    let store = MemoryStore::new();
    // Five funded accounts: each funding reactivates its account and raises one event.
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        let id = account_id(name);
        store
            .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, now())
            .await
            .unwrap();
        let funding = Posting::credit(
            SourceId::parse(format!("fund-{name}")).unwrap(),
            BillingItem::FundsAdded,
            usd(dec!(5)),
            now(),
        )
        .unwrap();
        store.post(&id, vec![funding], now()).await.unwrap();
    }
    assert_eq!(store.pending_events(100).await.unwrap().len(), 5);

    let sink = RecordingSink::default();
    assert_eq!(sweep(&store, &sink, 2, 3).await.unwrap().relayed, 3);
    assert_eq!(sink.events().len(), 3);
    assert_eq!(store.pending_events(100).await.unwrap().len(), 2);
    assert_eq!(sweep(&store, &sink, 2, 100).await.unwrap().relayed, 2);
    assert!(sink.events().iter().all(|e| e.kind == LedgerEventKind::Reactivated));
    let mut ids: Vec<String> = sink.events().iter().map(|e| e.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each event published once");
}

// ---------------------------------------------------------------------------------------------
// Store failures and panics
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
#[error("connection reset")]
struct ConnectionReset;

/// A MemoryStore whose posts panic for account "boom" and fail for account "down".
struct FaultyStore(MemoryStore);

#[async_trait]
impl LedgerStore for FaultyStore {
    async fn create_account(
        &self,
        a: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.0.create_account(a, now).await
    }
    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.0.account(id).await
    }
    async fn modify_account(
        &self,
        id: &AccountId,
        change: AccountChange,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.0.modify_account(id, change, now).await
    }
    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn PostingSource>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError> {
        match id.as_str() {
            "boom" => panic!("store bug"),
            "down" => Err(StoreError::unavailable(ConnectionReset)),
            _ => self.0.post_with(id, source, now).await,
        }
    }
    async fn entries(&self, id: &AccountId, query: &EntryQuery) -> Result<EntryPage, StoreError> {
        self.0.entries(id, query).await
    }
    async fn closed_month(
        &self,
        id: &AccountId,
        month: ledger::Month,
    ) -> Result<Option<ledger::MonthTotals>, StoreError> {
        self.0.closed_month(id, month).await
    }
    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        self.0.account_ids(after, limit).await
    }
    async fn outbox_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ledger::OutboxPage, StoreError> {
        self.0.outbox_page(after, limit).await
    }
    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError> {
        self.0.ack_event(event).await
    }
}

#[tokio::test]
async fn a_panic_or_store_failure_for_one_account_fails_only_that_accounts_messages() {
    let inner = MemoryStore::new();
    for name in ["acme", "boom", "down"] {
        open(&inner, name, dec!(10)).await;
    }
    let store = Arc::new(FaultyStore(inner));
    let for_account = |name: &str| SMS_OUT.replace("\"acme\"", &format!("\"{name}\""));
    let report = process_batch(
        store.clone(),
        &cards(),
        None,
        vec![
            message("m-boom", &for_account("boom")),
            message("m-acme", SMS_OUT),
            message("m-down", &for_account("down")),
        ],
    )
    .await;
    let failures = sorted(report.failures);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0].0, "m-boom");
    assert!(failures[0].1.starts_with("worker panicked"), "{}", failures[0].1);
    assert_eq!(failures[1], ("m-down".into(), "ledger store: the ledger store failed".into()));
    assert_eq!((report.events_posted, report.postings_applied), (1, 2));
    // 10 - 2 * 0.0079 - 0.003
    let acme = store.account(&account_id("acme")).await.unwrap().unwrap();
    assert_eq!(acme.balance_usd, dec!(9.9812));
}

/// A MemoryStore that reports contention (conflict retries exhausted, nothing applied) for the
/// first `contended` posts, then posts normally.
struct ContendedStore {
    inner: MemoryStore,
    contended: u32,
    posts: std::sync::atomic::AtomicU32,
}

impl ContendedStore {
    fn posts(&self) -> u32 {
        self.posts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl LedgerStore for ContendedStore {
    async fn create_account(
        &self,
        a: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.inner.create_account(a, now).await
    }
    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.inner.account(id).await
    }
    async fn modify_account(
        &self,
        id: &AccountId,
        change: AccountChange,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.inner.modify_account(id, change, now).await
    }
    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn PostingSource>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError> {
        let before = self.posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if before < self.contended {
            return Err(StoreError::Contention(id.clone()));
        }
        self.inner.post_with(id, source, now).await
    }
    async fn entries(&self, id: &AccountId, query: &EntryQuery) -> Result<EntryPage, StoreError> {
        self.inner.entries(id, query).await
    }
    async fn closed_month(
        &self,
        id: &AccountId,
        month: ledger::Month,
    ) -> Result<Option<ledger::MonthTotals>, StoreError> {
        self.inner.closed_month(id, month).await
    }
    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        self.inner.account_ids(after, limit).await
    }
    async fn outbox_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ledger::OutboxPage, StoreError> {
        self.inner.outbox_page(after, limit).await
    }
    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError> {
        self.inner.ack_event(event).await
    }
}

async fn contended(contended: u32) -> Arc<ContendedStore> {
    let inner = MemoryStore::new();
    open(&inner, "acme", dec!(10)).await;
    Arc::new(ContendedStore { inner, contended, posts: Default::default() })
}

#[tokio::test(start_paused = true)]
async fn a_contended_account_is_retried_with_backoff_until_it_posts_instead_of_failing() {
    let store = contended(5).await;
    let started = tokio::time::Instant::now();
    let report = process_batch(store.clone(), &cards(), None, suspending_batch()).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!((report.events_posted, report.postings_applied), (2, 4));
    assert_eq!(store.posts(), 6, "five contended tries, then the one that posted");
    // Waits of at least 25 + 50 + 100 + 200 + 400 ms (half of each doubling ceiling).
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_millis(775), "{waited:?}");
    assert!(waited < CONTENTION_BUDGET, "{waited:?}");
    // 10 - 0.0661
    assert_eq!(
        store.account(&account_id("acme")).await.unwrap().unwrap().balance_usd,
        dec!(9.9339)
    );
}

#[tokio::test(start_paused = true)]
async fn contention_that_outlasts_the_budget_returns_the_messages_to_the_queue_in_bounded_time() {
    let store = contended(u32::MAX).await;
    let started = tokio::time::Instant::now();
    let report = process_batch(store.clone(), &cards(), None, suspending_batch()).await;
    let reason = "ledger store: too much contention on account acme; nothing was applied, retry \
                  later";
    assert_eq!(
        sorted(report.failures),
        vec![("m-call".into(), reason.into()), ("m-sms".into(), reason.into())]
    );
    assert!(started.elapsed() <= CONTENTION_BUDGET, "{:?}", started.elapsed());
    assert!(store.posts() > 5, "retried {} times", store.posts());
    assert_eq!(store.account(&account_id("acme")).await.unwrap().unwrap().balance_usd, dec!(10));
}

// ---------------------------------------------------------------------------------------------
// Rate cards
// ---------------------------------------------------------------------------------------------

#[test]
fn rate_cards_give_the_standard_card_to_accounts_without_one_and_none_for_unknown_ids() {
    let cards = cards();
    assert_eq!(*cards.card(None).unwrap(), RateCard::standard());
    assert_eq!(*cards.card(Some("plan")).unwrap(), plan_card());
    assert!(cards.card(Some("gold")).is_none());
    assert!(RateCards::standard_only().card(Some("plan")).is_none());
}

#[test]
fn rate_cards_load_from_the_operators_json_file() {
    let json = serde_json::json!({ "cards": { "plan": plan_card() } }).to_string();
    let cards = RateCards::from_json(&json).unwrap();
    assert_eq!(*cards.card(Some("plan")).unwrap(), plan_card());
    assert_eq!(*cards.card(None).unwrap(), RateCard::standard());

    let json = serde_json::json!({ "standard": plan_card() }).to_string();
    assert_eq!(*RateCards::from_json(&json).unwrap().card(None).unwrap(), plan_card());
}

#[test]
fn rate_cards_from_json_reject_an_invalid_card() {
    let mut bad = plan_card();
    bad.calls.subsequent_increment_seconds = 0;
    let json = serde_json::json!({ "cards": { "bad": bad } }).to_string();
    assert_eq!(
        RateCards::from_json(&json).unwrap_err().to_string(),
        "rate cards: billing increments must be between 1 and 3600 seconds"
    );

    let mut negative = plan_card();
    negative.sms.outbound_per_segment_usd = dec!(-0.01);
    let json = serde_json::json!({ "standard": negative }).to_string();
    let error = RateCards::from_json(&json).unwrap_err().to_string();
    assert!(error.contains("sms.outbound_per_segment_usd"), "{error}");
}

#[test]
fn rate_cards_from_json_reject_unknown_fields_at_file_and_card_level() {
    let json = serde_json::json!({ "cards": {}, "default": "plan" }).to_string();
    let error = RateCards::from_json(&json).unwrap_err().to_string();
    assert!(error.starts_with("rate cards: unknown field `default`"), "{error}");

    let mut card = serde_json::to_value(plan_card()).unwrap();
    card["sms"]["mms_per_message_usd"] = serde_json::json!("0.02");
    let json = serde_json::json!({ "cards": { "plan": card } }).to_string();
    let error = RateCards::from_json(&json).unwrap_err().to_string();
    assert!(error.contains("unknown field `mms_per_message_usd`"), "{error}");

    assert!(RateCards::from_json("not json").unwrap_err().to_string().starts_with("rate cards: "));
}

#[test]
fn rate_cards_new_validates_every_card() {
    let bad = RateCard { included_minutes_per_month: 31 * 24 * 60 + 1, ..plan_card() };
    let error =
        RateCards::new(HashMap::from([("bad".to_string(), bad.clone())]), RateCard::standard())
            .unwrap_err();
    assert_eq!(error, RateCardError::TooManyIncludedMinutes);
    assert_eq!(
        RateCards::new(HashMap::new(), bad).unwrap_err(),
        RateCardError::TooManyIncludedMinutes
    );
}

// ---------------------------------------------------------------------------------------------
// The Lambda handler
// ---------------------------------------------------------------------------------------------

const LAMBDA_EVENT: &str = include_str!("../../../../tests/fixtures/lambda/sqs_usage_event.json");

/// What the usage-debits Lambda does with an SQS event (`runtime::run_sqs` around the worker).
async fn handle_lambda_event(
    store: Arc<MemoryStore>,
    cards: &RateCards,
    sink: Option<Arc<dyn EventSink>>,
    event: SqsEvent,
    received_at: DateTime<Utc>,
) -> aws_lambda_events::sqs::SqsBatchResponse {
    let batch = sqs::LambdaBatch::new(event);
    let report = process_batch_received(store, cards, sink, batch.messages(), received_at).await;
    sqs::LambdaBatch::response(&report.failures)
}

#[tokio::test]
async fn the_lambda_handler_reports_exactly_the_malformed_record_as_a_batch_item_failure() {
    let store = Arc::new(MemoryStore::new());
    let acme = open(&store, "acme", dec!(10)).await;
    let event: SqsEvent = serde_json::from_str(LAMBDA_EVENT).expect("a Lambda SQS event");
    assert_eq!(event.records.len(), 3);

    let response = handle_lambda_event(store.clone(), &cards(), None, event, now()).await;
    let failed: Vec<&str> =
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, vec!["7d2e9b3c-5a1f-4e6d-8b0c-3f7a9e1d2c02"]);
    // The two good records posted: call 0.0448 + 0.0025, SMS 0.0158 + 0.003.
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9339));

    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(
        json["batchItemFailures"],
        serde_json::json!([{ "itemIdentifier": "7d2e9b3c-5a1f-4e6d-8b0c-3f7a9e1d2c02" }])
    );
}

#[tokio::test]
async fn the_lambda_handler_reports_no_failures_for_a_clean_redelivery() {
    let store = Arc::new(MemoryStore::new());
    let acme = open(&store, "acme", dec!(10)).await;
    let mut event: SqsEvent = serde_json::from_str(LAMBDA_EVENT).unwrap();
    event.records.remove(1);
    let first = handle_lambda_event(store.clone(), &cards(), None, event.clone(), now()).await;
    let again = handle_lambda_event(store.clone(), &cards(), None, event, now()).await;
    assert!(first.batch_item_failures.is_empty());
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9339));
}

#[tokio::test]
async fn a_record_without_a_message_id_or_body_still_fails_visibly() {
    let store = Arc::new(MemoryStore::new());
    let event: SqsEvent =
        serde_json::from_str(r#"{"Records": [{"eventSource": "aws:sqs"}]}"#).unwrap();
    let response = handle_lambda_event(store, &cards(), None, event, now()).await;
    let failed: Vec<&str> =
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, vec!["record-0"]);
}
