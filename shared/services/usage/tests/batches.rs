//! Batch envelopes (`{"version": 1, "batch": [<event>, ...]}`, `docs/usage-events.md`): how they
//! parse, and how the worker fails them. A message is what the queue retries, so an envelope
//! fails as a whole when any of its events fails; its events that posted are duplicates when it
//! comes back. Amounts are worked out by hand beside each assertion (standard card for acme, the
//! "plan" card for globex, as in `worker.rs`).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::*;
use ledger::memory::MemoryStore;
use ledger::{
    Account, AccountChange, AccountId, EntryPage, EntryQuery, LedgerEvent, LedgerStore, NewAccount,
    PostOutcome, PostingSource, StoreError,
};
use rating::RateCard;
use rust_decimal_macros::dec;
use usage::events::{
    BatchEventError, EventError, UsageMessage, MAX_BATCH_BYTES, MAX_EVENTS_PER_BATCH,
};
use usage::worker::{
    process_batch_received, BatchReport, Failure, Message, RateCards, MAX_REASONS_PER_FAILURE,
};

const BATCH_FIXTURE: &str = include_str!("../../../../tests/fixtures/usage-batch/batch.json");

fn batch(events: &[&str]) -> String {
    let events: Vec<&str> = events.iter().map(|e| e.trim()).collect();
    format!(r#"{{"version": 1, "batch": [{}]}}"#, events.join(", "))
}

fn message(id: &str, body: &str) -> Message {
    Message { id: id.into(), body: body.into() }
}

fn cards() -> RateCards {
    RateCards::new(HashMap::from([("plan".to_string(), plan_card())]), RateCard::standard())
        .expect("valid cards")
}

async fn process(store: Arc<dyn LedgerStore>, messages: Vec<Message>) -> BatchReport {
    process_batch_received(store, &cards(), None, messages, now()).await
}

fn failures(report: &BatchReport) -> Vec<(String, String)> {
    let mut failures: Vec<(String, String)> =
        report.failures.iter().map(|f| (f.message_id.clone(), f.reason.clone())).collect();
    failures.sort();
    failures
}

async fn two_accounts() -> (Arc<MemoryStore>, AccountId, AccountId) {
    let store = Arc::new(MemoryStore::new());
    let acme = open(&store, "acme", dec!(10)).await;
    let globex = open(&store, "globex", dec!(10)).await;
    set_rate_card(&store, &globex, "plan").await;
    (store, acme, globex)
}

fn parse_batch(body: &str) -> Vec<Result<usage::events::UsageEvent, BatchEventError>> {
    match UsageMessage::parse(body) {
        Ok(UsageMessage::Batch(events)) => events,
        other => panic!("{body} should be a batch, got {other:?}"),
    }
}

fn whole_message_error(body: &str) -> EventError {
    match UsageMessage::parse(body) {
        Err(error) => error,
        Ok(parsed) => panic!("{body} should fail as a whole, got {parsed:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

#[test]
fn a_single_event_message_is_still_one_event() {
    let UsageMessage::Event(event) = UsageMessage::parse(CALL_OUTBOUND).unwrap() else {
        panic!("one event");
    };
    assert_eq!(event.event_id.as_str(), "evt-call-out-1");
    // And a bad single event keeps today's error, not a batch one.
    assert_eq!(whole_message_error(POISON_UNKNOWN_TYPE), EventError::UnknownType("fax".into()));
}

#[test]
fn the_batch_fixture_parses_to_its_events_in_order() {
    let events = parse_batch(BATCH_FIXTURE);
    let ids: Vec<String> =
        events.into_iter().map(|e| e.unwrap().event_id.as_str().to_string()).collect();
    assert_eq!(ids, vec!["evt-b-call-1", "evt-b-sms-1", "evt-b-sms-2"]);
}

#[test]
fn a_bad_event_in_a_batch_is_reported_with_its_position_and_id_and_the_others_still_parse() {
    let events = parse_batch(&batch(&[SMS_OUT, POISON_UNKNOWN_TYPE, SMS_IN]));
    assert_eq!(events.len(), 3);
    assert!(events[0].is_ok() && events[2].is_ok());
    let error = events[1].clone().unwrap_err();
    assert_eq!(
        error,
        BatchEventError {
            index: 1,
            event_id: Some("evt-fax-1".into()),
            error: EventError::UnknownType("fax".into())
        }
    );
    assert_eq!(error.to_string(), r#"batch[1] (event "evt-fax-1"): unknown event type "fax""#);

    // An element that is not even an object has no id to name.
    let events = parse_batch(&batch(&[SMS_OUT, "42"]));
    assert_eq!(
        events[1].clone().unwrap_err().to_string(),
        "batch[1]: not a usage event: invalid type: integer `42`, expected struct Envelope"
    );
}

#[test]
fn an_envelope_is_strict_an_unknown_field_or_another_version_fails_the_whole_message() {
    let unknown = format!(r#"{{"version": 1, "batch": [{}], "sender": "pbx-7"}}"#, SMS_OUT.trim());
    let error = whole_message_error(&unknown);
    assert!(
        error.to_string().starts_with("not a usage event: batch envelope: unknown field `sender`"),
        "{error}"
    );
    let newer =
        format!(r#"{{"version": 2, "batch": [{}], "compression": "none"}}"#, SMS_OUT.trim());
    assert_eq!(whole_message_error(&newer), EventError::UnsupportedVersion(2));
    let missing = format!(r#"{{"batch": [{}]}}"#, SMS_OUT.trim());
    assert!(whole_message_error(&missing).to_string().contains("missing field `version`"));
    let not_a_list = r#"{"version": 1, "batch": {"event": 1}}"#;
    assert!(matches!(whole_message_error(not_a_list), EventError::Malformed(_)));
}

#[test]
fn an_empty_batch_or_one_over_the_event_limit_fails_the_whole_message() {
    assert_eq!(whole_message_error(r#"{"version": 1, "batch": []}"#), EventError::BatchCount(0));
    let sms: Vec<String> = (0..=MAX_EVENTS_PER_BATCH)
        .map(|i| SMS_OUT.replace("evt-sms-out-1", &format!("e{i}")))
        .collect();
    let refs: Vec<&str> = sms.iter().map(String::as_str).collect();
    assert_eq!(whole_message_error(&batch(&refs)), EventError::BatchCount(101));
    assert_eq!(parse_batch(&batch(&refs[..MAX_EVENTS_PER_BATCH])).len(), MAX_EVENTS_PER_BATCH);
    assert_eq!(
        EventError::BatchCount(101).to_string(),
        "batch holds 101 events; a batch holds 1 to 100"
    );
}

#[test]
fn a_batch_over_64_kib_fails_before_it_is_parsed_and_one_at_the_limit_parses() {
    let mut body = batch(&[SMS_OUT]);
    body.push_str(&" ".repeat(MAX_BATCH_BYTES - body.len()));
    assert_eq!(parse_batch(&body).len(), 1);
    body.push(' ');
    assert_eq!(whole_message_error(&body), EventError::BatchTooLarge(65_537));
    // A single event keeps its own 16 KiB limit.
    let mut single = SMS_OUT.trim().to_string();
    single.push_str(&" ".repeat(20_000));
    assert_eq!(whole_message_error(&single), EventError::TooLarge(single.len()));
}

#[test]
fn an_envelope_inside_a_batch_is_not_an_event() {
    let nested = batch(&[&batch(&[SMS_OUT])]);
    let events = parse_batch(&nested);
    assert!(matches!(events[0], Err(BatchEventError { error: EventError::Malformed(_), .. })));
}

#[test]
fn every_event_of_a_batch_is_checked_against_the_receipt_time() {
    let future = SMS_OUT.replace("2026-11-03T16:00:00Z", "2099-01-01T00:00:00Z");
    let Ok(UsageMessage::Batch(events)) =
        UsageMessage::parse_received(&batch(&[SMS_IN, &future]), now())
    else {
        panic!("a well-formed batch");
    };
    assert!(events[0].is_ok());
    assert!(matches!(
        events[1],
        Err(BatchEventError { index: 1, error: EventError::OccursInTheFuture { .. }, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_envelope_for_many_accounts_posts_each_accounts_events_like_single_messages() {
    let (store, acme, globex) = two_accounts().await;
    let report = process(store.clone(), vec![message("m-batch", BATCH_FIXTURE)]).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // acme: call 2 + sms 2; globex: sms 2.
    assert_eq!((report.events_posted, report.postings_applied), (3, 6));
    // acme, standard card: call 0.0448 + 0.0025, SMS 2 x 0.0079 + 0.003 -> 10 - 0.0661.
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9339));
    // globex, plan card: SMS in 0.005 + 0.001.
    assert_eq!(account(&store, &globex).await.balance_usd, dec!(9.994));

    // Redelivered: every posting is a duplicate, nothing changes, nothing fails.
    let again = process(store.clone(), vec![message("m-batch", BATCH_FIXTURE)]).await;
    assert!(again.failures.is_empty());
    assert_eq!((again.postings_applied, again.postings_duplicate), (0, 6));
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9339));
}

#[tokio::test]
async fn envelopes_and_single_event_messages_mix_in_one_queue_batch() {
    let (store, acme, globex) = two_accounts().await;
    let report = process(
        store.clone(),
        vec![
            message("m-batch", BATCH_FIXTURE),
            message("m-single", SMS_IN),
            message("m-poison", POISON_UNKNOWN_TYPE),
        ],
    )
    .await;
    assert_eq!(failures(&report), vec![("m-poison".into(), r#"unknown event type "fax""#.into())]);
    assert_eq!(report.events_posted, 4);
    // acme: 0.0661 + SMS in 0.0079 + 0.003 = 0.077.
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.923));
    assert_eq!(account(&store, &globex).await.balance_usd, dec!(9.994));
}

#[tokio::test]
async fn the_same_event_twice_in_one_envelope_is_charged_once() {
    let (store, acme, globex) = two_accounts().await;
    let covered = call("evt-g-call", "globex", "2026-11-03T12:00:00Z", 90);
    let report = process(
        store.clone(),
        vec![message("m-twice", &batch(&[SMS_OUT, &covered, SMS_OUT, &covered]))],
    )
    .await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // SMS 2 postings; the covered call 3 (call, #included, #surcharge), each once; the copies
    // are duplicates of what the same store call applied.
    assert_eq!((report.events_posted, report.postings_applied), (4, 5));
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9812));
    // globex, plan card: the call's 90 s are covered once (0.03 - 0.03), surcharge 0.0025.
    let globex = account(&store, &globex).await;
    assert_eq!(globex.balance_usd, dec!(9.9975));
    assert_eq!(globex.plan_usage.included_seconds_used, 90);
}

#[tokio::test]
async fn an_envelope_with_a_permanently_bad_event_posts_the_rest_and_fails_naming_that_event() {
    let (store, acme, _globex) = two_accounts().await;
    let long = call("evt-long", "acme", "2026-11-03T12:00:00Z", 90_000);
    let body = batch(&[SMS_OUT, POISON_UNKNOWN_TYPE, CALL_OUTBOUND, &long]);
    let report = process(store.clone(), vec![message("m-mixed", &body)]).await;
    // One failure for the message (the queue retries messages), naming both bad events.
    assert_eq!(
        failures(&report),
        vec![(
            "m-mixed".into(),
            "batch[1] (event \"evt-fax-1\"): unknown event type \"fax\"; batch[3] (event \
             \"evt-long\"): call duration 90000 s exceeds the 86400 s limit"
                .into()
        )]
    );
    // The good events posted: 10 - 0.0188 - 0.0473.
    assert_eq!(report.events_posted, 2);
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9339));

    // Every retry (and the dead-letter re-drive after a fix) finds them applied.
    let again = process(store.clone(), vec![message("m-mixed", &body)]).await;
    assert_eq!(failures(&again), failures(&report));
    assert_eq!((again.postings_applied, again.postings_duplicate), (0, 4));
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9339));
}

#[tokio::test]
async fn a_malformed_envelope_fails_as_a_whole_and_posts_nothing() {
    let (store, acme, _globex) = two_accounts().await;
    let body = format!(r#"{{"version": 1, "batch": [{}], "extra": true}}"#, SMS_OUT.trim());
    let truncated = &BATCH_FIXTURE[..BATCH_FIXTURE.len() / 2];
    let report =
        process(store.clone(), vec![message("m-extra", &body), message("m-truncated", truncated)])
            .await;
    let failed = failures(&report);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].1.contains("unknown field `extra`"), "{}", failed[0].1);
    assert!(failed[1].1.starts_with("not a usage event: EOF while parsing"), "{}", failed[1].1);
    assert_eq!(report.events_posted, 0);
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(10));
}

#[tokio::test]
async fn an_envelope_with_an_unknown_account_fails_while_its_known_accounts_post() {
    let (store, acme, globex) = two_accounts().await;
    let body = batch(&[SMS_OUT, POISON_UNKNOWN_ACCOUNT, &SMS_IN.replace("\"acme\"", "\"globex\"")]);
    let report = process(store.clone(), vec![message("m-ghost", &body)]).await;
    assert_eq!(
        failures(&report),
        vec![("m-ghost".into(), "batch[1] (event \"evt-ghost-1\"): unknown account ghost".into())]
    );
    assert_eq!(account(&store, &acme).await.balance_usd, dec!(9.9812));
    assert_eq!(account(&store, &globex).await.balance_usd, dec!(9.994));
}

#[tokio::test]
async fn a_message_with_many_failed_events_keeps_the_first_reasons_and_counts_the_rest() {
    let (store, _acme, _globex) = two_accounts().await;
    let poison: Vec<String> =
        (0..5).map(|i| POISON_UNKNOWN_TYPE.replace("evt-fax-1", &format!("evt-fax-{i}"))).collect();
    let refs: Vec<&str> = poison.iter().map(String::as_str).collect();
    let report = process(store, vec![message("m-faxes", &batch(&refs))]).await;
    assert_eq!(report.failures.len(), 1);
    let reason = &report.failures[0].reason;
    assert_eq!(reason.matches("unknown event type").count(), MAX_REASONS_PER_FAILURE);
    assert!(reason.ends_with("; and 2 more failed events"), "{reason}");
    assert!(reason.starts_with("batch[0] (event \"evt-fax-0\")"), "{reason}");
}

/// A MemoryStore whose posts for account "globex" fail (a store outage) while `down` is set.
struct FlakyStore {
    inner: MemoryStore,
    down: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("connection reset")]
struct ConnectionReset;

#[async_trait]
impl LedgerStore for FlakyStore {
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
        if id.as_str() == "globex" && self.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable(ConnectionReset));
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

#[tokio::test]
async fn a_retryable_failure_of_one_account_fails_the_whole_envelope_and_its_retry_posts_once() {
    let inner = MemoryStore::new();
    let acme = open(&inner, "acme", dec!(10)).await;
    let globex = open(&inner, "globex", dec!(10)).await;
    set_rate_card(&inner, &globex, "plan").await;
    let store = Arc::new(FlakyStore { inner, down: AtomicBool::new(true) });

    let first = process(store.clone(), vec![message("m-batch", BATCH_FIXTURE)]).await;
    assert_eq!(
        first.failures,
        vec![Failure {
            message_id: "m-batch".into(),
            reason: "batch[2] (event \"evt-b-sms-2\"): ledger store: the ledger store failed"
                .into()
        }]
    );
    // acme's events posted; globex's did not.
    assert_eq!(first.events_posted, 2);
    assert_eq!(store.account(&acme).await.unwrap().unwrap().balance_usd, dec!(9.9339));
    assert_eq!(store.account(&globex).await.unwrap().unwrap().balance_usd, dec!(10));

    // The queue redelivers the whole message once the store is back: acme's events are
    // duplicates, globex's post, each exactly once.
    store.down.store(false, Ordering::SeqCst);
    let retry = process(store.clone(), vec![message("m-batch", BATCH_FIXTURE)]).await;
    assert!(retry.failures.is_empty(), "{:?}", retry.failures);
    assert_eq!((retry.postings_applied, retry.postings_duplicate), (2, 4));
    assert_eq!(store.account(&acme).await.unwrap().unwrap().balance_usd, dec!(9.9339));
    assert_eq!(store.account(&globex).await.unwrap().unwrap().balance_usd, dec!(9.994));
}
