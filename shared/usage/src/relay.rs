//! The outbox relay: ledger events (recharge requests, notices) written atomically with the
//! postings are published downstream, then acknowledged. A crash between publish and ack
//! publishes again: consumers deduplicate by event id. A crash before publish loses nothing:
//! the event stays pending until a sweep relays it.

use async_trait::async_trait;
use ledger::{LedgerEvent, LedgerStore, StoreError};

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
}

/// Publish `events` and acknowledge each once it is published.
pub async fn publish_and_ack(
    store: &dyn LedgerStore,
    sink: &dyn EventSink,
    events: &[LedgerEvent],
) -> Result<(), RelayError> {
    for event in events {
        sink.publish(event).await?;
        store.ack_event(event).await?;
    }
    Ok(())
}

/// Relay every pending event, `batch` at a time, at most `max_events` in one call.
pub async fn sweep(
    store: &dyn LedgerStore,
    sink: &dyn EventSink,
    batch: u32,
    max_events: usize,
) -> Result<usize, RelayError> {
    let mut relayed = 0;
    while relayed < max_events {
        let room = u32::try_from(max_events - relayed).unwrap_or(u32::MAX);
        let pending = store.pending_events(batch.min(room)).await?;
        if pending.is_empty() {
            break;
        }
        publish_and_ack(store, sink, &pending).await?;
        relayed += pending.len();
    }
    Ok(relayed)
}
