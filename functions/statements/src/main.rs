//! Lambda: statements. EventBridge Scheduler invokes it with `{"run": "plan", "cadence":
//! "monthly"}` (1st of the month) or `"weekly"` (Mondays) to publish one job per account; the
//! statements queue invokes it with SQS batches of scheduled and on-demand statement jobs, each
//! sent through SES once (see `runtime::jobs`).

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::jobs::serve(runtime::jobs::JobFunction::Statements).await
}
