//! Lambda: the monthly sales-tax run. EventBridge Scheduler (1st of the month, 00:05 UTC)
//! invokes it with `{"run": "plan"}` to publish one tax job per account; the tax queue invokes
//! it with SQS batches to tax each account's month (see `runtime::jobs`).

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::jobs::serve(runtime::jobs::JobFunction::Tax).await
}
