//! Lambda on a one-minute schedule: the sweeper behind the usage worker's fast path. Ledger
//! events that no worker published (a crash between the commit and the send, settings changes,
//! Pay Now) are sent to their queues and acknowledged.

use messaging::outbox::sweep;
use runtime::Aws;

/// At most this many outbox items per invocation (the next minute takes the rest): 500 pages
/// of SendMessageBatch calls fit the 10 s timeout.
const MAX_EVENTS_PER_RUN: usize = 5_000;

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    let aws = Aws::load().await;
    let (store, sink) = (aws.store().await?, aws.ledger_events()?);
    runtime::run_json(|_| async {
        let report = sweep(&*store, &*sink, 100, MAX_EVENTS_PER_RUN).await?;
        report.count();
        Ok(serde_json::json!({ "relayed": report.relayed, "failed": report.failed, "unreadable": report.unreadable }))
    })
    .await
}
