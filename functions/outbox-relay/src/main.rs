//! Lambda on a one-minute schedule: the sweeper behind the usage worker's fast path. Ledger
//! events that no worker published (a crash between the commit and the send, settings changes,
//! Pay Now) are sent to their queues and acknowledged.

use lambda_runtime::{run, service_fn, LambdaEvent};
use store_dynamodb::DynamoStore;
use usage::relay::sweep;
use usage::sqs::SqsSink;

/// At most this many outbox items per invocation (the next minute takes the rest): 500 pages
/// of SendMessageBatch calls fit the 10 s timeout.
const MAX_EVENTS_PER_RUN: usize = 5_000;

#[tokio::main]
async fn main() -> Result<(), bootstrap::Error> {
    bootstrap::init_tracing();
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        bootstrap::env("RINGLEDGER_TABLE")?,
    );
    store.warm_up(store_dynamodb::DynamoStore::WARM_UP_TIMEOUT).await;
    let sink = SqsSink {
        client: aws_sdk_sqs::Client::new(&config),
        recharge_queue_url: bootstrap::env("RINGLEDGER_RECHARGE_QUEUE_URL")?,
        notifications_queue_url: bootstrap::env("RINGLEDGER_NOTIFICATIONS_QUEUE_URL")?,
    };
    let (store, sink) = (&store, &sink);
    run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let report = sweep(store, sink, 100, MAX_EVENTS_PER_RUN).await?;
        // Embedded metric format: the unreadable-item alarm reads this line.
        println!("{}", report.metric_line(chrono::Utc::now()));
        Ok::<_, bootstrap::Error>(serde_json::json!({
            "relayed": report.relayed,
            "failed": report.failed,
            "unreadable": report.unreadable,
        }))
    }))
    .await
}
