//! Notices: what the billing system tells a customer by email.
//!
//! - [`notice`]: the notice type, with a stable id per notice;
//! - [`templates`]: subject, plain text and HTML for every kind of notice;
//! - [`mailer`]: the mailer port, with SES v2 and `.eml`-folder adapters (attachments included);
//! - [`worker`]: the SQS worker that sends each notice once per id;
//! - [`statement`]: statements by email (summary, line items, CSV attachment), once per request.

pub mod mailer;
pub mod notice;
pub mod statement;
pub mod templates;
pub mod worker;

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use ledger::docs::DocStore;

/// The notifications Lambda's handler: an SQS batch in, the failed message ids out.
pub async fn handle_sqs_event(
    docs: Arc<dyn DocStore>,
    mailer: Arc<dyn mailer::Mailer>,
    from: &str,
    event: SqsEvent,
) -> SqsBatchResponse {
    let messages = usage::sqs::messages_from_event(event);
    let failures = worker::process_batch(docs, mailer, from, messages).await;
    usage::sqs::batch_response(&failures)
}
