//! Lambda: the auto-recharge worker on the recharge queue (`ReportBatchItemFailures`; waits
//! are held by stretching the message's visibility, long ones requeued fresh).

use std::sync::Arc;

use recharge::RechargeWorker;
use runtime::{env, Aws};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    let aws = Aws::load().await;
    let worker =
        Arc::new(RechargeWorker::new(aws.store().await?, env::card_processor()?, aws.notices()?));
    let queue = aws.queue(env::RECHARGE_QUEUE_URL)?;
    runtime::run_sqs_held(queue, recharge::REDELIVERY, |messages| {
        recharge::verdicts(worker.clone(), messages)
    })
    .await
}
