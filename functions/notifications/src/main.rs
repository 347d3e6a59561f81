//! Lambda: sends notices from the notifications queue through SES v2, critical ones also as
//! texts through SNS, and applies SES's bounce and complaint notifications (their own queue,
//! through SNS) (`ReportBatchItemFailures`).

use runtime::Aws;

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    let aws = Aws::load().await;
    let (docs, (mailer, from)) = (aws.store().await?, aws.mailer()?);
    let texts = Some(aws.texts());
    runtime::run_sqs(|messages| {
        notifications::worker::process_batch(
            docs.clone(),
            mailer.clone(),
            texts.clone(),
            &from,
            messages,
        )
    })
    .await
}
