//! Lambda: sends notices from the notifications queue through SES v2 (`ReportBatchItemFailures`).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use ledger::docs::DocStore;
use notifications::mailer::{Mailer, SesMailer};
use store_dynamodb::DynamoStore;

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} must be set").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let from = notifications::mailer::check_sender(&env("RINGLEDGER_MAIL_FROM")?)?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), env("RINGLEDGER_TABLE")?);
    store.warm_up(DynamoStore::WARM_UP_TIMEOUT).await;
    let docs: Arc<dyn DocStore> = Arc::new(store);
    let mailer: Arc<dyn Mailer> = Arc::new(
        SesMailer::new(aws_sdk_sesv2::Client::new(&config))
            .with_configuration_set(std::env::var("RINGLEDGER_SES_CONFIGURATION_SET").ok()),
    );
    let (docs, mailer, from) = (&docs, &mailer, from.as_str());
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(
            notifications::handle_sqs_event(docs.clone(), mailer.clone(), from, event.payload)
                .await,
        )
    }))
    .await
}
