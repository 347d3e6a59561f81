//! Lambda: the card processor's events from the processor-events queue
//! (`ReportBatchItemFailures`), and the dispute reconciliation EventBridge Scheduler runs with
//! `{"run": "reconcile_disputes"}`.

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::processor_events::serve_worker().await
}
