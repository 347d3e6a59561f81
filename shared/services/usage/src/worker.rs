//! The usage worker: a batch of SQS messages in, the ids of the messages that failed out.
//!
//! Messages are parsed one by one (a malformed one fails alone); each holds one event or a
//! batch envelope of events. Events are grouped by account, rated and posted with one store call
//! per account chunk, accounts in parallel, each in its own task so a panic fails only that
//! account's messages. A message is what the queue retries, so it fails when any of its events
//! fails, with one reason per message; its events that did post are duplicates on redelivery.
//! Failed messages return to the queue and, after `maxReceiveCount` tries, go to the dead-letter
//! queue; nothing is dropped silently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use ledger::{AccountId, LedgerStore, PostingResult, StoreError};
use messaging::outbox::{publish_and_ack, EventSink};
pub use messaging::queue::{Failure, Message};
use tracing::{error, info, warn, Instrument};

use crate::events::{batch_event_label, UsageEvent, UsageMessage};
use crate::source::AccountRatedEvents;

/// Events per store call: up to ~6 postings each stays under the ledger's 1,000 per call.
pub const MAX_EVENTS_PER_POST: usize = 100;
/// Accounts posted concurrently within one batch.
pub const ACCOUNT_CONCURRENCY: usize = 8;
/// How long the worker keeps retrying an account chunk the store reports as contended (its own
/// conflict retries exhausted) before the chunk's messages go back to the queue. Well inside the
/// function's 60 s timeout (the store's own retries take up to about 3 s more), so contention
/// costs a few seconds of latency, not a receive: only contention lasting that long on five
/// receives in a row could reach the dead-letter queue.
pub const CONTENTION_BUDGET: Duration = Duration::from_secs(5);
/// The first and the largest wait between two tries of a contended chunk (jittered: each wait
/// is drawn between half and all of its ceiling, so contending pollers spread out).
pub const CONTENTION_BACKOFF_FIRST: Duration = Duration::from_millis(50);
pub const CONTENTION_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Reasons kept in one message's failure when several of its events failed (the rest are
/// counted; every one is logged).
pub const MAX_REASONS_PER_FAILURE: usize = 3;

/// The rate cards: the rating crate's (re-exported for the worker's callers).
pub use rating::{RateCards, RateCardsError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub failures: Vec<Failure>,
    pub events_posted: usize,
    pub postings_applied: usize,
    pub postings_duplicate: usize,
    /// Event ids already applied as another charge (see [`PostingResult::SourceIdReused`]):
    /// nothing changed, logged at error.
    pub postings_reused: usize,
    pub postings_refused: usize,
}

/// Process one batch received now. Returns which messages failed and why (already logged).
pub async fn process_batch(
    store: Arc<dyn LedgerStore>,
    cards: &RateCards,
    sink: Option<Arc<dyn EventSink>>,
    messages: Vec<Message>,
) -> BatchReport {
    process_batch_received(store, cards, sink, messages, Utc::now()).await
}

/// Process one batch received at `received_at`: events that occurred too far after or before
/// it fail like malformed ones ([`UsageEvent::check_occurred_at`]). Postings still carry the
/// store's clock.
pub async fn process_batch_received(
    store: Arc<dyn LedgerStore>,
    cards: &RateCards,
    sink: Option<Arc<dyn EventSink>>,
    messages: Vec<Message>,
    received_at: DateTime<Utc>,
) -> BatchReport {
    let mut report = BatchReport::default();
    let mut failures = Vec::new();
    let mut by_account: BTreeMap<AccountId, Vec<Delivered>> = BTreeMap::new();
    for message in messages {
        match UsageMessage::parse_received(&message.body, received_at) {
            Ok(UsageMessage::Event(event)) => {
                let delivered = Delivered { message_id: message.id, label: None, event };
                by_account.entry(delivered.event.account_id.clone()).or_default().push(delivered);
            }
            Ok(UsageMessage::Batch(events)) => {
                for (index, parsed) in events.into_iter().enumerate() {
                    match parsed {
                        Ok(event) => {
                            let label = batch_event_label(index, Some(event.event_id.as_str()));
                            let delivered = Delivered {
                                message_id: message.id.clone(),
                                label: Some(label),
                                event,
                            };
                            by_account
                                .entry(delivered.event.account_id.clone())
                                .or_default()
                                .push(delivered);
                        }
                        Err(error) => {
                            warn!(
                                message_id = %message.id,
                                index = error.index,
                                event_id = error.event_id.as_deref().unwrap_or(""),
                                reason = %error.error,
                                "malformed usage event in a batch message"
                            );
                            failures.push(Failure {
                                message_id: message.id.clone(),
                                reason: error.to_string(),
                            });
                        }
                    }
                }
            }
            Err(error) => {
                warn!(message_id = %message.id, reason = %error, "malformed usage message");
                failures.push(Failure { message_id: message.id, reason: error.to_string() });
            }
        }
    }
    let tasks = by_account.into_iter().map(|(account_id, events)| {
        let store = store.clone();
        let cards = cards.clone();
        let sink = sink.clone();
        let names: Vec<(String, Option<String>)> =
            events.iter().map(|d| (d.message_id.clone(), d.label.clone())).collect();
        let span = tracing::info_span!("account", %account_id, events = events.len());
        async move {
            let handle =
                tokio::spawn(
                    async move {
                        post_account(&*store, &cards, sink.as_deref(), &account_id, events).await
                    }
                    .instrument(span),
                );
            match handle.await {
                Ok(outcome) => outcome,
                Err(join_error) => {
                    let reason = format!("worker panicked: {join_error}");
                    warn!(%reason, "account batch failed");
                    let failures = names
                        .into_iter()
                        .map(|(message_id, label)| Failure {
                            message_id,
                            reason: labelled(label.as_deref(), &reason),
                        })
                        .collect();
                    AccountOutcome { failures, ..Default::default() }
                }
            }
        }
    });
    let outcomes: Vec<AccountOutcome> =
        futures::stream::iter(tasks).buffer_unordered(ACCOUNT_CONCURRENCY).collect().await;
    for outcome in outcomes {
        failures.extend(outcome.failures);
        report.events_posted += outcome.events_posted;
        report.postings_applied += outcome.applied;
        report.postings_duplicate += outcome.duplicate;
        report.postings_reused += outcome.reused;
        report.postings_refused += outcome.refused;
    }
    report.failures = one_failure_per_message(failures);
    report
}

/// One event on its way to the ledger: the message it came in and, for an event of a batch
/// envelope, which one it is (reasons and logs name it).
struct Delivered {
    message_id: String,
    label: Option<String>,
    event: UsageEvent,
}

impl Delivered {
    fn failure(&self, reason: &str) -> Failure {
        Failure {
            message_id: self.message_id.clone(),
            reason: labelled(self.label.as_deref(), reason),
        }
    }
}

fn labelled(label: Option<&str>, reason: &str) -> String {
    match label {
        Some(label) => format!("{label}: {reason}"),
        None => reason.to_string(),
    }
}

/// The queue retries messages, not events: a batch message whose events failed for several
/// reasons is reported once, with the first [`MAX_REASONS_PER_FAILURE`] reasons.
fn one_failure_per_message(failures: Vec<Failure>) -> Vec<Failure> {
    let mut order: Vec<String> = Vec::new();
    let mut reasons: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    for failure in failures {
        let entry = reasons.entry(failure.message_id.clone()).or_default();
        if entry.is_empty() {
            order.push(failure.message_id);
        }
        entry.push(failure.reason);
    }
    order
        .into_iter()
        .map(|message_id| {
            let all = reasons.remove(&message_id).unwrap_or_default();
            let mut reason = all
                .iter()
                .take(MAX_REASONS_PER_FAILURE)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("; ");
            if all.len() > MAX_REASONS_PER_FAILURE {
                reason.push_str(&format!(
                    "; and {} more failed events",
                    all.len() - MAX_REASONS_PER_FAILURE
                ));
            }
            Failure { message_id, reason }
        })
        .collect()
}

#[derive(Debug, Default)]
struct AccountOutcome {
    failures: Vec<Failure>,
    events_posted: usize,
    applied: usize,
    duplicate: usize,
    reused: usize,
    refused: usize,
}

async fn post_account(
    store: &dyn LedgerStore,
    cards: &RateCards,
    sink: Option<&dyn EventSink>,
    account_id: &AccountId,
    events: Vec<Delivered>,
) -> AccountOutcome {
    let mut outcome = AccountOutcome::default();
    let fail_all = |outcome: &mut AccountOutcome, events: &[Delivered], reason: &str| {
        warn!(%reason, count = events.len(), "usage events failed");
        outcome.failures.extend(events.iter().map(|delivered| delivered.failure(reason)));
    };
    // The card is the account's, read by the store inside the atomic write: no read of the
    // account here (one `GetItem` less per store call; unrateable events are left out by name).
    for chunk in events.chunks(MAX_EVENTS_PER_POST) {
        let source = Arc::new(AccountRatedEvents::new(
            cards.clone(),
            chunk.iter().map(|delivered| delivered.event.clone()).collect(),
        ));
        match post_through_contention(store, account_id, source.clone()).await {
            Ok(posted) => {
                let left_out = source.unrateable();
                for (index, reason) in &left_out {
                    let delivered = &chunk[*index];
                    warn!(
                        message_id = %delivered.message_id,
                        event = delivered.label.as_deref().unwrap_or(""),
                        reason = %reason,
                        "usage event cannot be rated"
                    );
                    outcome.failures.push(delivered.failure(reason));
                }
                let posted_events = chunk.len() - left_out.len();
                outcome.events_posted += posted_events;
                messaging::metrics::count(messaging::metrics::USAGE_EVENTS, posted_events as u64);
                for result in &posted.results {
                    match result {
                        PostingResult::Applied { .. } => outcome.applied += 1,
                        PostingResult::Duplicate { .. } => outcome.duplicate += 1,
                        PostingResult::SourceIdReused { seq, kind, item, amount_usd } => {
                            // Retrying cannot help: the message succeeds, and this says why
                            // nothing was charged (an id reused by the platform, or a rate
                            // card changed between deliveries).
                            error!(
                                seq,
                                kind = kind.as_str(),
                                item = item.as_str(),
                                amount_usd = %amount_usd.value(),
                                "usage source id already applied as another charge"
                            );
                            outcome.reused += 1;
                        }
                        PostingResult::Refused(reason) => {
                            // A purchase the platform should not have made: recorded, not retried.
                            warn!(?reason, "usage posting refused");
                            outcome.refused += 1;
                        }
                    }
                }
                if let Some(sink) = sink {
                    // Fast path; the sweeper relays whatever this misses.
                    let relayed = publish_and_ack(store, sink, &posted.events).await;
                    if relayed.failed > 0 {
                        warn!(failed = relayed.failed, "events left in the outbox for the sweeper");
                    }
                }
                info!(events = chunk.len(), balance = %posted.account.balance_usd, "posted");
            }
            Err(StoreError::AccountNotFound(_)) => {
                fail_all(&mut outcome, chunk, &format!("unknown account {account_id}"));
            }
            Err(error @ (StoreError::Rejected(_) | StoreError::Corrupt(_))) => {
                fail_all(&mut outcome, chunk, &format!("rejected by the ledger: {error}"));
            }
            Err(error) => fail_all(&mut outcome, chunk, &format!("ledger store: {error}")),
        }
    }
    outcome
}

/// Post one chunk, retrying while the store reports contention, with jittered backoff, for at
/// most [`CONTENTION_BUDGET`]. Contention means nothing was applied, so a retry is always safe.
async fn post_through_contention(
    store: &dyn LedgerStore,
    account_id: &AccountId,
    source: Arc<AccountRatedEvents>,
) -> Result<ledger::PostOutcome, StoreError> {
    let deadline = tokio::time::Instant::now() + CONTENTION_BUDGET;
    let mut ceiling = CONTENTION_BACKOFF_FIRST;
    let mut tries: u32 = 1;
    loop {
        match store.post_with(account_id, source.clone(), Utc::now()).await {
            Err(StoreError::Contention(_)) => {
                let wait = jittered(ceiling);
                if tokio::time::Instant::now() + wait > deadline {
                    warn!(tries, "contention outlasted the worker's budget; back to the queue");
                    return Err(StoreError::Contention(account_id.clone()));
                }
                info!(tries, wait_ms = wait.as_millis() as u64, "contended account; retrying");
                messaging::metrics::count(messaging::metrics::CONTENTION_RETRIES, 1);
                tokio::time::sleep(wait).await;
                ceiling = (ceiling * 2).min(CONTENTION_BACKOFF_MAX);
                tries += 1;
            }
            other => return other,
        }
    }
}

/// A wait between half and all of `ceiling` (std's randomly keyed hasher is the only
/// randomness needed).
fn jittered(ceiling: Duration) -> Duration {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(Utc::now());
    let half_ms = (ceiling.as_millis() as u64 / 2).max(1);
    Duration::from_millis(half_ms + random % (half_ms + 1))
}
