//! Lambda: the auto-recharge worker on the recharge queue (`ReportBatchItemFailures`; waits
//! are held by stretching the message's visibility).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, LambdaEvent};
use recharge::sqs::{handle_sqs_event, SqsNoticeSink};
use recharge::RechargeWorker;

#[tokio::main]
async fn main() -> Result<(), bootstrap::Error> {
    bootstrap::init_tracing();
    let state = bootstrap::app_state(true).await?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = bootstrap::env("RINGLEDGER_RECHARGE_QUEUE_URL")?;
    let notices = Arc::new(SqsNoticeSink {
        client: sqs.clone(),
        queue_url: bootstrap::env("RINGLEDGER_NOTIFICATIONS_QUEUE_URL")?,
    });
    let worker =
        Arc::new(RechargeWorker::new(state.store.clone(), state.processor.clone(), notices));
    let (worker, sqs, queue_url) = (&worker, &sqs, &queue_url);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, bootstrap::Error>(
            handle_sqs_event(worker.clone(), sqs, queue_url, event.payload).await,
        )
    }))
    .await
}
