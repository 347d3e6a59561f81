//! SQS adapters: the ledger-event sink, Lambda's SQS event types, and a poller that behaves like
//! Lambda's SQS event source mapping (for the local runner and the end-to-end tests).

use std::future::Future;

use async_trait::async_trait;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use ledger::{LedgerEvent, LedgerEventKind};

use crate::relay::{EventSink, RelayError, PUBLISH_BATCH};
use crate::worker::{Failure, Message};

/// The most messages one receive returns (an SQS limit).
pub const MAX_RECEIVE: i32 = 10;

/// Publishes recharge requests to the recharge queue and every other event (notices) to the
/// notifications queue.
pub struct SqsSink {
    pub client: Client,
    pub recharge_queue_url: String,
    pub notifications_queue_url: String,
}

fn attribute(value: &str) -> Result<MessageAttributeValue, RelayError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| RelayError::Publish(Box::new(e)))
}

impl SqsSink {
    fn queue_for(&self, event: &LedgerEvent) -> &str {
        match event.kind {
            // The recharge queue's worker also settles pending payments (it holds the processor).
            LedgerEventKind::RechargeRequested { .. } | LedgerEventKind::PaymentPending { .. } => {
                &self.recharge_queue_url
            }
            _ => &self.notifications_queue_url,
        }
    }

    /// One `SendMessageBatch` to `queue` of `events` (at most 10): one result per event.
    async fn send_batch(
        &self,
        queue: &str,
        events: &[&LedgerEvent],
    ) -> Result<Vec<Result<(), RelayError>>, RelayError> {
        let mut entries = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let body =
                serde_json::to_string(event).map_err(|e| RelayError::Publish(Box::new(e)))?;
            let entry = SendMessageBatchRequestEntry::builder()
                .id(format!("e{index}"))
                .message_body(body)
                .message_attributes("event_id", attribute(&event.id)?)
                .message_attributes("kind", attribute(event.kind.as_str())?)
                .build()
                .map_err(|e| RelayError::Publish(Box::new(e)))?;
            entries.push(entry);
        }
        let output = self
            .client
            .send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| RelayError::Publish(Box::new(e)))?;
        let mut results: Vec<Result<(), RelayError>> =
            events.iter().map(|_| Err(RelayError::Publish(Box::new(NotAnswered)))).collect();
        for ok in output.successful() {
            if let Some(slot) = entry_index(ok.id()).and_then(|i| results.get_mut(i)) {
                *slot = Ok(());
            }
        }
        for failed in output.failed() {
            if let Some(slot) = entry_index(failed.id()).and_then(|i| results.get_mut(i)) {
                let reason = format!(
                    "{} ({}sender fault): {}",
                    failed.code(),
                    if failed.sender_fault() { "" } else { "not a " },
                    failed.message().unwrap_or_default()
                );
                *slot = Err(RelayError::Publish(reason.into()));
            }
        }
        Ok(results)
    }
}

/// SQS answered neither success nor failure for an entry: treat it as not sent.
#[derive(Debug, thiserror::Error)]
#[error("SQS did not answer for this message")]
struct NotAnswered;

/// An error and its sources on one line (the batch's one error is given to each of its events).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn entry_index(id: &str) -> Option<usize> {
    id.strip_prefix('e')?.parse().ok()
}

#[async_trait]
impl EventSink for SqsSink {
    async fn publish(&self, event: &LedgerEvent) -> Result<(), RelayError> {
        let body = serde_json::to_string(event).map_err(|e| RelayError::Publish(Box::new(e)))?;
        self.client
            .send_message()
            .queue_url(self.queue_for(event))
            .message_body(body)
            .message_attributes("event_id", attribute(&event.id)?)
            .message_attributes("kind", attribute(event.kind.as_str())?)
            .send()
            .await
            .map_err(|e| RelayError::Publish(Box::new(e)))?;
        Ok(())
    }

    /// One `SendMessageBatch` per destination queue (recharge, notifications).
    async fn publish_batch(&self, events: &[LedgerEvent]) -> Vec<Result<(), RelayError>> {
        let mut results: Vec<Option<Result<(), RelayError>>> =
            events.iter().map(|_| None).collect();
        let mut queues = vec![&self.recharge_queue_url];
        if self.notifications_queue_url != self.recharge_queue_url {
            queues.push(&self.notifications_queue_url);
        }
        for queue in queues {
            let (indices, batch): (Vec<usize>, Vec<&LedgerEvent>) = events
                .iter()
                .enumerate()
                .filter(|(_, event)| self.queue_for(event) == queue.as_str())
                .unzip();
            for (indices, batch) in indices.chunks(PUBLISH_BATCH).zip(batch.chunks(PUBLISH_BATCH)) {
                match self.send_batch(queue, batch).await {
                    Ok(answers) => {
                        for (index, answer) in indices.iter().zip(answers) {
                            results[*index] = Some(answer);
                        }
                    }
                    Err(error) => {
                        let reason = error_chain(&error);
                        for index in indices {
                            results[*index] = Some(Err(RelayError::Publish(reason.clone().into())));
                        }
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(RelayError::Publish(Box::new(NotAnswered)))))
            .collect()
    }
}

/// Lambda's SQS event as worker messages (a record without id or body is kept, with an empty
/// body, so it fails visibly instead of vanishing).
pub fn messages_from_event(event: SqsEvent) -> Vec<Message> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| Message {
            id: record.message_id.unwrap_or_else(|| format!("record-{index}")),
            body: record.body.unwrap_or_default(),
        })
        .collect()
}

/// The partial-batch response Lambda needs for `ReportBatchItemFailures`.
pub fn batch_response(failures: &[Failure]) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .iter()
        .map(|f| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = f.message_id.clone();
            failure
        })
        .collect();
    response
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    pub received: usize,
    pub deleted: usize,
    pub failed: usize,
}

/// One receive → handle → delete round, as Lambda's event source mapping does it: successes are
/// deleted, failures are left to become visible again (and reach the DLQ through the queue's
/// redrive policy).
pub async fn poll_once<F, Fut>(
    client: &Client,
    queue_url: &str,
    wait_seconds: i32,
    handler: F,
) -> Result<PollStats, aws_sdk_sqs::Error>
where
    F: FnOnce(Vec<Message>) -> Fut,
    Fut: Future<Output = Vec<Failure>>,
{
    let output = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(MAX_RECEIVE)
        .wait_time_seconds(wait_seconds)
        .send()
        .await?;
    let received = output.messages.unwrap_or_default();
    if received.is_empty() {
        return Ok(PollStats::default());
    }
    let messages: Vec<Message> = received
        .iter()
        .enumerate()
        .map(|(index, m)| Message {
            id: m.message_id.clone().unwrap_or_else(|| format!("message-{index}")),
            body: m.body.clone().unwrap_or_default(),
        })
        .collect();
    let failures = handler(messages.clone()).await;
    let failed: std::collections::HashSet<&str> =
        failures.iter().map(|f| f.message_id.as_str()).collect();
    let mut entries = Vec::new();
    for (index, (message, raw)) in messages.iter().zip(&received).enumerate() {
        if failed.contains(message.id.as_str()) {
            continue;
        }
        if let Some(handle) = &raw.receipt_handle {
            let entry = DeleteMessageBatchRequestEntry::builder()
                .id(format!("m{index}"))
                .receipt_handle(handle)
                .build()
                .map_err(aws_sdk_sqs::Error::from)?;
            entries.push(entry);
        }
    }
    let deleted = entries.len();
    if !entries.is_empty() {
        client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(PollStats { received: messages.len(), deleted, failed: failures.len() })
}
