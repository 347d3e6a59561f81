//! Lambda: rates and posts telephony usage events from SQS (`ReportBatchItemFailures`).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use rating::RateCards;
use store_dynamodb::DynamoStore;
use usage::sqs::SqsSink;

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} must be set").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        env("RINGLEDGER_TABLE")?,
    ));
    store.warm_up(DynamoStore::WARM_UP_TIMEOUT).await;
    let sink = Arc::new(SqsSink {
        client: aws_sdk_sqs::Client::new(&config),
        recharge_queue_url: env("RINGLEDGER_RECHARGE_QUEUE_URL")?,
        notifications_queue_url: env("RINGLEDGER_NOTIFICATIONS_QUEUE_URL")?,
    });
    let cards = match std::env::var("RINGLEDGER_RATE_CARDS") {
        Ok(path) => RateCards::from_json(&std::fs::read_to_string(&path)?)?,
        Err(_) => RateCards::standard_only(),
    };
    let (store, sink, cards) = (&store, &sink, &cards);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(
            usage::handle_sqs_event(store.clone(), cards, Some(sink.clone()), event.payload).await,
        )
    }))
    .await
}
