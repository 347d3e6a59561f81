//! The outbox relay: ledger events (recharge requests, notices) written atomically with the
//! postings are published downstream, then acknowledged. A crash between publish and ack
//! publishes again: consumers deduplicate by event id. A crash before publish loses nothing:
//! the event stays pending until a sweep relays it.
//!
//! Nothing one event does stops the others: an event that fails to publish stays pending for
//! the next sweep, and an outbox item the store cannot read is skipped, logged at error and
//! counted (the relay function turns the count into a metric with an alarm).

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use ledger::{LedgerEvent, LedgerStore, StoreError};
use tracing::{error, warn};

use crate::metrics;
use crate::queue::{Outgoing, QueueSender, MAX_BATCH};

/// Events per publish call: a queue's batch send takes at most 10 messages.
pub const PUBLISH_BATCH: usize = MAX_BATCH;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("publishing failed")]
    Publish(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where ledger events go (SQS queues in AWS and in the tests).
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn publish(&self, event: &LedgerEvent) -> Result<(), RelayError>;

    /// Publish up to [`PUBLISH_BATCH`] events in one go: one result per event, in order, so a
    /// failed event never hides the others' success. By default, one [`EventSink::publish`]
    /// after the other.
    async fn publish_batch(&self, events: &[LedgerEvent]) -> Vec<Result<(), RelayError>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            results.push(self.publish(event).await);
        }
        results
    }
}

/// What a relay pass did. `failed` events stay pending for the next pass; `unreadable` outbox
/// items stay too, and are counted again on every sweep until someone removes them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayReport {
    pub relayed: usize,
    pub failed: usize,
    pub unreadable: usize,
}

impl RelayReport {
    /// Count the report as business metrics (the template alarms on unreadable items).
    pub fn count(&self) {
        metrics::count(metrics::OUTBOX_RELAYED, self.relayed as u64);
        metrics::count(metrics::OUTBOX_PUBLISH_FAILED, self.failed as u64);
        metrics::count(metrics::OUTBOX_UNREADABLE, self.unreadable as u64);
    }
}

impl std::ops::AddAssign for RelayReport {
    fn add_assign(&mut self, other: Self) {
        self.relayed += other.relayed;
        self.failed += other.failed;
        self.unreadable += other.unreadable;
    }
}

/// Batches of one page published at once: 5,000 events are 500 batches, too slow one after
/// the other for a 10 s function.
pub const PUBLISH_CONCURRENCY: usize = 4;

/// Publish `events`, [`PUBLISH_BATCH`] at a time (a few batches at once), and acknowledge the
/// published ones. A failed publish or acknowledgement is logged and counted and leaves that
/// event pending (published again later: consumers deduplicate); the other events go on.
pub async fn publish_and_ack(
    store: &dyn LedgerStore,
    sink: &dyn EventSink,
    events: &[LedgerEvent],
) -> RelayReport {
    let batches: Vec<_> = events
        .chunks(PUBLISH_BATCH)
        .map(|batch| publish_batch_and_ack(store, sink, batch))
        .collect();
    let reports: Vec<RelayReport> =
        futures::stream::iter(batches).buffer_unordered(PUBLISH_CONCURRENCY).collect().await;
    let mut total = RelayReport::default();
    for report in reports {
        total += report;
    }
    total
}

async fn publish_batch_and_ack(
    store: &dyn LedgerStore,
    sink: &dyn EventSink,
    batch: &[LedgerEvent],
) -> RelayReport {
    let results = sink.publish_batch(batch).await;
    assert_eq!(results.len(), batch.len(), "a sink answers once per event");
    let mut report = RelayReport::default();
    let mut published = Vec::with_capacity(batch.len());
    for (event, result) in batch.iter().zip(results) {
        match result {
            Ok(()) => published.push(event.clone()),
            Err(error) => {
                warn!(event_id = %event.id, error = %error, "publish failed; event left pending");
                report.failed += 1;
            }
        }
    }
    match store.ack_events(&published).await {
        Ok(()) => report.relayed += published.len(),
        Err(error) => {
            // Published but maybe not acknowledged: relayed again later, deduplicated.
            warn!(events = published.len(), %error, "acknowledgement failed; events left pending");
            report.failed += published.len();
        }
    }
    report
}

/// Relay pending events, a page of `page_size` at a time, looking at most at `max_items`
/// outbox items in one call. Only failing to read the outbox at all is an error.
pub async fn sweep(
    store: &dyn LedgerStore,
    sink: &dyn EventSink,
    page_size: u32,
    max_items: usize,
) -> Result<RelayReport, RelayError> {
    let mut report = RelayReport::default();
    let mut after: Option<String> = None;
    loop {
        let seen = report.relayed + report.failed + report.unreadable;
        if seen >= max_items {
            break;
        }
        let room = u32::try_from(max_items - seen).unwrap_or(u32::MAX);
        let page = store.outbox_page(after.as_deref(), page_size.min(room)).await?;
        for item in &page.unreadable {
            error!(position = %item.position, reason = %item.reason, "outbox item unreadable; skipped");
        }
        report.unreadable += page.unreadable.len();
        report += publish_and_ack(store, sink, &page.events).await;
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if report.unreadable > 0 {
        error!(unreadable = report.unreadable, "outbox items could not be read");
    }
    if report.failed > 0 {
        warn!(failed = report.failed, "events left pending for the next sweep");
    }
    Ok(report)
}

/// Ledger events as queue messages: recharge requests and pending payments to the recharge
/// queue (its worker holds the card processor), every other event (notices) to the
/// notifications queue. The body is the event's JSON; `event_id` and `kind` are attributes.
pub struct QueueEventSink {
    pub recharge: Arc<dyn QueueSender>,
    pub notifications: Arc<dyn QueueSender>,
}

impl QueueEventSink {
    fn queue_for(&self, event: &LedgerEvent) -> usize {
        if event.kind.for_payments_worker() {
            0
        } else {
            1
        }
    }

    fn queue(&self, index: usize) -> &dyn QueueSender {
        if index == 0 {
            &*self.recharge
        } else {
            &*self.notifications
        }
    }
}

/// The message that carries `event`.
pub fn event_message(event: &LedgerEvent) -> Result<Outgoing, RelayError> {
    let body = serde_json::to_string(event).map_err(|e| RelayError::Publish(Box::new(e)))?;
    Ok(Outgoing::new(body)
        .with_attribute("event_id", event.id.clone())
        .with_attribute("kind", event.kind.as_str()))
}

#[async_trait]
impl EventSink for QueueEventSink {
    async fn publish(&self, event: &LedgerEvent) -> Result<(), RelayError> {
        self.queue(self.queue_for(event))
            .send(&event_message(event)?)
            .await
            .map_err(RelayError::Publish)
    }

    /// One batch send per destination queue.
    async fn publish_batch(&self, events: &[LedgerEvent]) -> Vec<Result<(), RelayError>> {
        let mut results: Vec<Option<Result<(), RelayError>>> =
            events.iter().map(|_| None).collect();
        for queue in [0, 1] {
            let mut indices = Vec::new();
            let mut messages = Vec::new();
            for (index, event) in events.iter().enumerate() {
                if self.queue_for(event) != queue {
                    continue;
                }
                match event_message(event) {
                    Ok(message) => {
                        indices.push(index);
                        messages.push(message);
                    }
                    Err(error) => results[index] = Some(Err(error)),
                }
            }
            for (indices, batch) in indices.chunks(MAX_BATCH).zip(messages.chunks(MAX_BATCH)) {
                let answers = self.queue(queue).send_batch(batch).await;
                for (index, answer) in indices.iter().zip(answers) {
                    results[*index] = Some(answer.map_err(RelayError::Publish));
                }
            }
        }
        results
            .into_iter()
            .map(|result| {
                result
                    .unwrap_or_else(|| Err(RelayError::Publish("the queue did not answer".into())))
            })
            .collect()
    }
}
