//! Usage debits: telephony events become money here.
//!
//! - [`events`]: the versioned event schema, parsed strictly;
//! - [`source`]: events rated into postings inside the ledger's atomic write;
//! - [`worker`]: the SQS batch worker (grouping, failures, panics contained);
//! - [`relay`]: the outbox relay for recharge requests and notices;
//! - [`authorize`]: may this account place this call / send this SMS / buy this number;
//! - [`sqs`]: SQS adapters: the event sink and a poller that behaves like Lambda's SQS source.

pub mod authorize;
pub mod events;
pub mod relay;
pub mod source;
pub mod sqs;
pub mod worker;

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use ledger::LedgerStore;

/// The usage-debits Lambda's handler: an SQS batch in, the failed message ids out.
pub async fn handle_sqs_event(
    store: Arc<dyn LedgerStore>,
    cards: &worker::RateCards,
    sink: Option<Arc<dyn relay::EventSink>>,
    event: SqsEvent,
) -> SqsBatchResponse {
    handle_sqs_event_received(store, cards, sink, event, chrono::Utc::now()).await
}

/// [`handle_sqs_event`] for a batch received at `received_at` (see
/// [`worker::process_batch_received`]).
pub async fn handle_sqs_event_received(
    store: Arc<dyn LedgerStore>,
    cards: &worker::RateCards,
    sink: Option<Arc<dyn relay::EventSink>>,
    event: SqsEvent,
    received_at: chrono::DateTime<chrono::Utc>,
) -> SqsBatchResponse {
    let messages = sqs::messages_from_event(event);
    let report = worker::process_batch_received(store, cards, sink, messages, received_at).await;
    sqs::batch_response(&report.failures)
}
