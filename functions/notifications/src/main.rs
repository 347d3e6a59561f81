//! Lambda: sends notices from the notifications queue through SES v2
//! (`ReportBatchItemFailures`).

use runtime::Aws;

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    let aws = Aws::load().await;
    let (docs, (mailer, from)) = (aws.store().await?, aws.mailer()?);
    runtime::run_sqs(|messages| {
        notifications::worker::process_batch(docs.clone(), mailer.clone(), &from, messages)
    })
    .await
}
