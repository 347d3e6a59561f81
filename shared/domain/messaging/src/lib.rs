//! Messages that leave a service, as ports and pure logic (no I/O of its own):
//!
//! - [`queue`]: a delivered message, its failure, a waiting worker's verdict, and the sender
//!   port the SQS adapter (`ringledger-queue`) and [`queue::MemoryQueue`] implement;
//! - [`outbox`]: the ledger outbox's relay: publish pending events, then acknowledge them;
//! - [`mail`]: the mailer port and the RFC 5322 message the SES and `.eml` adapters send;
//! - [`text`]: the text-message (SMS) port the SNS and `.sms.txt` adapters implement;
//! - [`metrics`]: business counts, which the Lambda runtime turns into CloudWatch metrics.

pub mod mail;
pub mod metrics;
pub mod outbox;
pub mod queue;
pub mod text;
