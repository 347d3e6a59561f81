//! The queue port on SQS: [`SqsQueue`] sends (one message or batches of ten with one result
//! each), [`LambdaBatch`] turns Lambda's SQS event into worker messages and the worker's
//! verdicts into the partial-batch response, and [`poll_once`] does what Lambda's event source
//! mapping does, for the local runner and the end-to-end tests. Waits and quick retries are
//! held by a message's visibility; long waits are sent again as fresh messages
//! ([`Redelivery`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;

use async_trait::async_trait;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use chrono::Utc;
use messaging::queue::{
    BoxError, Failure, Message, Outgoing, QueueSender, Redelivery, Verdict, MAX_BATCH,
    MAX_DELAY_SECONDS, MAX_HOLD_SECONDS,
};
use tracing::{info, warn};

/// The most messages one receive returns (an SQS limit).
pub const MAX_RECEIVE: i32 = 10;

/// One SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    pub client: Client,
    pub url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsQueue { client, url: url.into() }
    }

    /// Hide a received message for `seconds` (best effort: if this fails, it returns sooner).
    pub async fn hold(&self, receipt: &str, seconds: i64) {
        let seconds = seconds.clamp(0, MAX_HOLD_SECONDS) as i32;
        let result = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await;
        if let Err(error) = result {
            warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "could not change a message's visibility; it returns at its usual time");
        }
    }

    /// Send `body` again as a new message (receive count 0), delayed up to 15 minutes.
    pub async fn requeue(&self, body: &str, delay_seconds: i64) -> bool {
        let delay = delay_seconds.clamp(0, MAX_DELAY_SECONDS) as i32;
        match self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
        {
            Ok(_) => {
                info!("message sent again to reset its receive count");
                true
            }
            Err(error) => {
                warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "could not requeue; the message stays and may reach the DLQ");
                false
            }
        }
    }

    /// What to do with a delivery the worker judged: `true` when it leaves the queue (done, or
    /// carried on by a fresh copy), `false` when it stays (held or left to come back).
    async fn settle(&self, delivery: &Delivery, verdict: &Verdict, policy: Redelivery) -> bool {
        let wait_seconds = match verdict {
            Verdict::Done => return true,
            Verdict::Reject(_) => return false,
            Verdict::Wait(until) => (*until - Utc::now()).num_seconds(),
            Verdict::Retry(_) => policy.retry_after.map_or(60, |after| after.as_secs() as i64),
        };
        if policy.requeue_after_receives.is_some_and(|limit| delivery.receives >= limit)
            && self.requeue(&delivery.message.body, wait_seconds).await
        {
            return true;
        }
        if let Some(receipt) = &delivery.receipt {
            if matches!(verdict, Verdict::Wait(_)) || policy.retry_after.is_some() {
                self.hold(receipt, wait_seconds).await;
            }
        }
        false
    }
}

fn attribute(value: &str) -> Result<MessageAttributeValue, BoxError> {
    Ok(MessageAttributeValue::builder().data_type("String").string_value(value).build()?)
}

/// An error and its sources on one line (a batch's one error is given to each message).
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

/// SQS answered neither success nor failure for an entry: treat it as not sent.
#[derive(Debug, thiserror::Error)]
#[error("SQS did not answer for this message")]
struct NotAnswered;

impl SqsQueue {
    async fn send_entries(
        &self,
        messages: &[Outgoing],
    ) -> Result<Vec<Result<(), BoxError>>, BoxError> {
        let mut entries = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(format!("e{index}"))
                .message_body(&message.body);
            for (name, value) in &message.attributes {
                entry = entry.message_attributes(*name, attribute(value)?);
            }
            entries.push(entry.build()?);
        }
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await?;
        let mut results: Vec<Result<(), BoxError>> =
            messages.iter().map(|_| Err(Box::new(NotAnswered) as BoxError)).collect();
        let index = |id: &str| id.strip_prefix('e').and_then(|i| i.parse::<usize>().ok());
        for ok in output.successful() {
            if let Some(slot) = index(ok.id()).and_then(|i| results.get_mut(i)) {
                *slot = Ok(());
            }
        }
        for failed in output.failed() {
            if let Some(slot) = index(failed.id()).and_then(|i| results.get_mut(i)) {
                *slot = Err(format!(
                    "{} ({}sender fault): {}",
                    failed.code(),
                    if failed.sender_fault() { "" } else { "not a " },
                    failed.message().unwrap_or_default()
                )
                .into());
            }
        }
        Ok(results)
    }
}

#[async_trait]
impl QueueSender for SqsQueue {
    async fn send(&self, message: &Outgoing) -> Result<(), BoxError> {
        let mut request =
            self.client.send_message().queue_url(&self.url).message_body(&message.body);
        for (name, value) in &message.attributes {
            request = request.message_attributes(*name, attribute(value)?);
        }
        request.send().await?;
        Ok(())
    }

    /// One `SendMessageBatch` per ten messages.
    async fn send_batch(&self, messages: &[Outgoing]) -> Vec<Result<(), BoxError>> {
        let mut results = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(MAX_BATCH) {
            match self.send_entries(chunk).await {
                Ok(answers) => results.extend(answers),
                Err(error) => {
                    let reason = error_chain(&*error);
                    results.extend(chunk.iter().map(|_| Err(reason.clone().into())));
                }
            }
        }
        results
    }
}

/// One received message with what settling it needs.
#[derive(Debug, Clone)]
struct Delivery {
    message: Message,
    receipt: Option<String>,
    receives: u32,
}

/// Lambda's SQS event as worker messages, kept with their receipts and receive counts. A
/// record without id or body is kept, with an empty body, so it fails visibly instead of
/// vanishing.
pub struct LambdaBatch {
    deliveries: Vec<Delivery>,
}

impl LambdaBatch {
    pub fn new(event: SqsEvent) -> Self {
        let deliveries = event
            .records
            .into_iter()
            .enumerate()
            .map(|(index, record)| Delivery {
                receives: record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(0),
                message: Message {
                    id: record.message_id.unwrap_or_else(|| format!("record-{index}")),
                    body: record.body.unwrap_or_default(),
                },
                receipt: record.receipt_handle,
            })
            .collect();
        LambdaBatch { deliveries }
    }

    pub fn messages(&self) -> Vec<Message> {
        self.deliveries.iter().map(|d| d.message.clone()).collect()
    }

    /// The partial-batch response for `ReportBatchItemFailures` when the worker reports failed
    /// messages only (the others are done); the queue's own timeout brings them back.
    pub fn response(failures: &[Failure]) -> SqsBatchResponse {
        batch_response(failures.iter().map(|f| f.message_id.clone()))
    }

    /// The partial-batch response for a worker's verdicts (a message without one is done),
    /// holding or requeueing the ones that stay as `policy` says.
    pub async fn settle(
        &self,
        queue: &SqsQueue,
        verdicts: &HashMap<String, Verdict>,
        policy: Redelivery,
    ) -> SqsBatchResponse {
        let mut stay = Vec::new();
        for delivery in &self.deliveries {
            let verdict = verdicts.get(&delivery.message.id).unwrap_or(&Verdict::Done);
            if !queue.settle(delivery, verdict, policy).await {
                stay.push(delivery.message.id.clone());
            }
        }
        batch_response(stay)
    }
}

/// Failures as verdicts: each failed message is retried, the others are done.
pub fn verdicts_of(failures: &[Failure]) -> HashMap<String, Verdict> {
    failures.iter().map(|f| (f.message_id.clone(), Verdict::Retry(f.reason.clone()))).collect()
}

fn batch_response(ids: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = ids
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    pub received: usize,
    /// Left the queue: done, or carried on by a fresh copy.
    pub deleted: usize,
    /// Stayed: held until later, or left to come back.
    pub failed: usize,
}

impl std::ops::AddAssign for PollStats {
    fn add_assign(&mut self, other: Self) {
        self.received += other.received;
        self.deleted += other.deleted;
        self.failed += other.failed;
    }
}

/// One receive → handle → settle round, as Lambda's event source mapping does it: messages
/// that are done (or requeued) are deleted, the others stay (held as `policy` says) and reach
/// the DLQ through the queue's redrive policy. `handler` answers with verdicts by message id;
/// a message without one is done.
pub async fn poll_once<F, Fut>(
    queue: &SqsQueue,
    wait_seconds: i32,
    policy: Redelivery,
    handler: F,
) -> Result<PollStats, aws_sdk_sqs::Error>
where
    F: FnOnce(Vec<Message>) -> Fut,
    Fut: Future<Output = HashMap<String, Verdict>>,
{
    let output = queue
        .client
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(MAX_RECEIVE)
        .wait_time_seconds(wait_seconds)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await?;
    let received = output.messages.unwrap_or_default();
    if received.is_empty() {
        return Ok(PollStats::default());
    }
    let deliveries: Vec<Delivery> = received
        .iter()
        .enumerate()
        .map(|(index, m)| Delivery {
            message: Message {
                id: m.message_id.clone().unwrap_or_else(|| format!("message-{index}")),
                body: m.body.clone().unwrap_or_default(),
            },
            receipt: m.receipt_handle.clone(),
            receives: m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|count| count.parse().ok())
                .unwrap_or(0),
        })
        .collect();
    let verdicts = handler(deliveries.iter().map(|d| d.message.clone()).collect()).await;
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for (index, delivery) in deliveries.iter().enumerate() {
        let verdict = verdicts.get(&delivery.message.id).unwrap_or(&Verdict::Done);
        if !queue.settle(delivery, verdict, policy).await {
            continue;
        }
        if let Some(handle) = &delivery.receipt {
            if seen.insert(handle.clone()) {
                let entry = DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{index}"))
                    .receipt_handle(handle)
                    .build()
                    .map_err(aws_sdk_sqs::Error::from)?;
                entries.push(entry);
            }
        }
    }
    let deleted = entries.len();
    if !entries.is_empty() {
        queue
            .client
            .delete_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(PollStats { received: deliveries.len(), deleted, failed: deliveries.len() - deleted })
}
