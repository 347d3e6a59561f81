//! Lambda: rates and posts telephony usage events from SQS (`ReportBatchItemFailures`); the
//! events the postings raise go straight to their queues (the outbox relay sweeps the rest).

use messaging::outbox::EventSink;
use runtime::{env, Aws};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    let aws = Aws::load().await;
    let (store, cards) = (aws.store().await?, env::rate_cards()?);
    let sink: std::sync::Arc<dyn EventSink> = aws.ledger_events()?;
    runtime::run_sqs(|messages| async {
        let report =
            usage::worker::process_batch(store.clone(), &cards, Some(sink.clone()), messages).await;
        report.failures
    })
    .await
}
