//! The recharge queue: messages are ledger events (`recharge_requested`). A request that must
//! wait (every card failed, or it came back early) is reported as failed with its visibility
//! stretched to the backoff, so SQS holds it until then; after the queue's `maxReceiveCount`
//! it reaches the dead-letter queue (and its alarm).

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use ledger::LedgerEvent;
use notifications::notice::{Notice, NoticeSink};
use tracing::{info, warn};

use crate::{Outcome, RechargeWorker};

/// SQS's longest visibility timeout (12 h). It counts from the message's receipt, so a hold
/// is always a little shorter than this (a request that comes back early waits again).
pub const MAX_VISIBILITY_SECONDS: i64 = 12 * 3_600 - 60;
/// A message received this many times that must still wait or retry is sent again as a fresh
/// message and the old one deleted, so a long backoff or a long processor outage never
/// dead-letters a request whose state is durable (the queue's `maxReceiveCount` is 8; the
/// backoff schedule needs at most 5 holds). Only unreadable messages reach the DLQ.
pub const REQUEUE_AFTER_RECEIVES: u32 = 6;
/// SQS's longest delivery delay (15 min).
const MAX_DELAY_SECONDS: i64 = 15 * 60;

/// Publishes notices to the notifications queue.
pub struct SqsNoticeSink {
    pub client: Client,
    pub queue_url: String,
}

#[async_trait]
impl NoticeSink for SqsNoticeSink {
    async fn publish(
        &self,
        notice: &Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let body = serde_json::to_string(notice)?;
        self.client.send_message().queue_url(&self.queue_url).message_body(body).send().await?;
        Ok(())
    }
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done: delete it.
    Done,
    /// Leave it; it comes back after the queue's visibility timeout.
    Retry(String),
    /// Leave it hidden until then.
    Wait(DateTime<Utc>),
}

pub async fn handle_message(worker: &RechargeWorker, body: &str, now: DateTime<Utc>) -> Verdict {
    let event: LedgerEvent = match serde_json::from_str(body) {
        Ok(event) => event,
        Err(error) => return Verdict::Retry(format!("not a ledger event: {error}")),
    };
    match worker.handle(&event, now).await {
        Ok(Outcome::RetryAt(at) | Outcome::NotYet(at)) => Verdict::Wait(at),
        Ok(outcome) => {
            info!(event = %event.id, ?outcome, "recharge request handled");
            Verdict::Done
        }
        Err(error) => {
            warn!(event = %event.id, %error, "recharge request failed; will retry");
            Verdict::Retry(error.to_string())
        }
    }
}

async fn hold(client: &Client, queue_url: &str, receipt: &str, until: DateTime<Utc>) {
    let seconds = (until - Utc::now()).num_seconds().clamp(0, MAX_VISIBILITY_SECONDS) as i32;
    let result = client
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(seconds)
        .send()
        .await;
    if let Err(error) = result {
        warn!(%error, "could not stretch the message's visibility; it returns sooner");
    }
}

/// Send `body` again as a new message (receive count 0), delayed up to SQS's 15 minutes.
async fn requeue(client: &Client, queue_url: &str, body: &str, delay_seconds: i64) -> bool {
    let delay = delay_seconds.clamp(0, MAX_DELAY_SECONDS) as i32;
    match client
        .send_message()
        .queue_url(queue_url)
        .message_body(body)
        .delay_seconds(delay)
        .send()
        .await
    {
        Ok(_) => {
            info!("recharge message sent again to reset its receive count");
            true
        }
        Err(error) => {
            warn!(%error, "could not requeue; the message stays and may reach the DLQ");
            false
        }
    }
}

/// The Lambda handler: one task per message, panics contained, waits held by visibility.
pub async fn handle_sqs_event(
    worker: Arc<RechargeWorker>,
    client: &Client,
    queue_url: &str,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for (index, record) in event.records.into_iter().enumerate() {
        let id = record.message_id.clone().unwrap_or_else(|| format!("record-{index}"));
        let body = record.body.clone().unwrap_or_default();
        let task_worker = worker.clone();
        let task_body = body.clone();
        let verdict =
            tokio::spawn(async move { handle_message(&task_worker, &task_body, Utc::now()).await })
                .await
                .unwrap_or_else(|panic| Verdict::Retry(format!("worker panicked: {panic}")));
        if verdict == Verdict::Done {
            continue;
        }
        let receives = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse::<u32>().ok())
            .unwrap_or(0);
        let readable = serde_json::from_str::<LedgerEvent>(&body).is_ok();
        if readable && receives >= REQUEUE_AFTER_RECEIVES {
            let delay = match &verdict {
                Verdict::Wait(until) => (*until - Utc::now()).num_seconds(),
                _ => 60,
            };
            if requeue(client, queue_url, &body, delay).await {
                // The fresh copy carries the request on; this one is deleted as done.
                continue;
            }
        }
        if let (Verdict::Wait(until), Some(receipt)) = (&verdict, &record.receipt_handle) {
            hold(client, queue_url, receipt, *until).await;
        }
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    pub received: usize,
    pub done: usize,
    pub waiting: usize,
    pub retrying: usize,
}

/// One receive → handle → delete / hold round, like Lambda's event source (local runner, tests).
pub async fn poll_once(
    worker: &RechargeWorker,
    client: &Client,
    queue_url: &str,
    now: DateTime<Utc>,
) -> Result<PollStats, aws_sdk_sqs::Error> {
    let output = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .send()
        .await?;
    let mut stats = PollStats::default();
    for message in output.messages.unwrap_or_default() {
        stats.received += 1;
        let body = message.body.clone().unwrap_or_default();
        let receipt = message.receipt_handle.clone().unwrap_or_default();
        let receives = message
            .attributes
            .as_ref()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            })
            .and_then(|count| count.parse::<u32>().ok())
            .unwrap_or(0);
        let verdict = handle_message(worker, &body, now).await;
        let requeued = match &verdict {
            Verdict::Done => false,
            _ if receives >= REQUEUE_AFTER_RECEIVES
                && serde_json::from_str::<LedgerEvent>(&body).is_ok() =>
            {
                let delay = match &verdict {
                    Verdict::Wait(until) => (*until - Utc::now()).num_seconds(),
                    _ => 60,
                };
                requeue(client, queue_url, &body, delay).await
            }
            _ => false,
        };
        match verdict {
            Verdict::Done => stats.done += 1,
            _ if requeued => stats.waiting += 1,
            Verdict::Wait(until) => {
                stats.waiting += 1;
                hold(client, queue_url, &receipt, until).await;
            }
            Verdict::Retry(_) => stats.retrying += 1,
        }
        if matches!(verdict, Verdict::Done) || requeued {
            client.delete_message().queue_url(queue_url).receipt_handle(&receipt).send().await?;
        }
    }
    Ok(stats)
}
