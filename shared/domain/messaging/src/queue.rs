//! Queues as the services see them: a delivered [`Message`], the [`Failure`] that sends it back,
//! the [`Verdict`] of a worker that may ask to wait, and the [`QueueSender`] port every queue
//! adapter implements (SQS in AWS, [`MemoryQueue`] in tests and in-process wiring).

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most messages one batch send takes (an SQS limit, and the relay's page of publishes).
pub const MAX_BATCH: usize = 10;

/// One delivered queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub body: String,
}

/// Why a message was not processed; it goes back to the queue (and in the end to the DLQ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message_id: String,
    pub reason: String,
}

/// What a worker that may have to wait decides about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done: delete it.
    Done,
    /// Leave it; it comes back after the queue's retry delay.
    Retry(String),
    /// Leave it hidden until then.
    Wait(DateTime<Utc>),
    /// It cannot be handled (unreadable): leave it for the dead-letter queue, never resend it.
    Reject(String),
}

/// A message to send: its body and string attributes (`event_id`, `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outgoing {
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
}

impl Outgoing {
    pub fn new(body: impl Into<String>) -> Self {
        Outgoing { body: body.into(), attributes: Vec::new() }
    }

    pub fn with_attribute(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push((name, value.into()));
        self
    }
}

/// Sends messages to one queue.
#[async_trait]
pub trait QueueSender: Send + Sync {
    async fn send(&self, message: &Outgoing) -> Result<(), BoxError>;

    /// Send up to [`MAX_BATCH`] messages in one go: one result per message, in order, so a
    /// failed message never hides the others' success. By default one send after the other.
    async fn send_batch(&self, messages: &[Outgoing]) -> Vec<Result<(), BoxError>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.send(message).await);
        }
        results
    }
}

/// Keeps what is sent in memory, in order.
#[derive(Debug, Default)]
pub struct MemoryQueue(Mutex<Vec<Outgoing>>);

impl MemoryQueue {
    /// Everything sent so far, emptying the queue.
    pub fn take(&self) -> Vec<Outgoing> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl QueueSender for MemoryQueue {
    async fn send(&self, message: &Outgoing) -> Result<(), BoxError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(message.clone());
        Ok(())
    }
}

/// How a queue brings back the messages a worker did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redelivery {
    /// A failed message comes back after this long instead of the queue's visibility timeout.
    pub retry_after: Option<std::time::Duration>,
    /// A message received this many times that must still wait or retry is sent again as a
    /// fresh message (receive count 0) and the old one deleted, so a long wait whose state is
    /// durable never dead-letters. `None`: failures reach the DLQ after `maxReceiveCount`.
    /// A [`Verdict::Reject`]ed message is never sent again.
    pub requeue_after_receives: Option<u32>,
}

impl Redelivery {
    /// The queue's own visibility timeout and dead-letter policy.
    pub const QUEUE_DEFAULT: Redelivery =
        Redelivery { retry_after: None, requeue_after_receives: None };
}

/// The longest a queue hides a message (SQS's 12 h visibility limit, less a minute: it counts
/// from the receipt, so a hold is always a little shorter and a message that returns early
/// waits again).
pub const MAX_HOLD_SECONDS: i64 = 12 * 3_600 - 60;
/// The longest delay of a message sent again (SQS's 15 minutes).
pub const MAX_DELAY_SECONDS: i64 = 15 * 60;
