//! Lambda: the monthly sales-tax run. One function, two triggers:
//! - EventBridge Scheduler (1st of the month, 00:05 UTC) invokes it with `{"run": "plan"}` (or
//!   `{"run": "plan", "month": "2026-10"}` to re-run a month): it publishes one tax job per
//!   account to the tax queue;
//! - the tax queue's event source mapping invokes it with SQS batches: it taxes each account
//!   (`ReportBatchItemFailures`).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use jobs::job::SqsJobSink;
use jobs::tax::TaxJob;
use jobs::worker::{RetrySoon, Workers, RETRY_AFTER};
use jobs::Job;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde::Deserialize;
use store_dynamodb::DynamoStore;

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} must be set").into())
}

#[derive(Deserialize)]
struct PlanRequest {
    run: String,
    /// Default: the month before the current one (UTC).
    month: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        env("RINGLEDGER_TABLE")?,
    ));
    store.warm_up(DynamoStore::WARM_UP_TIMEOUT).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = env("RINGLEDGER_TAX_QUEUE_URL")?;
    let retry = RetrySoon { client: sqs.clone(), queue_url: queue_url.clone(), after: RETRY_AFTER };
    let sink = SqsJobSink { client: sqs, queue_url };
    let workers = Workers {
        tax: Some(TaxJob {
            ledger: store.clone(),
            docs: store.clone(),
            table: Arc::new(tax::TaxTable::bundled()?),
            taxability: Arc::new(tax::Taxability::bundled()?),
        }),
        statements: None,
    };
    let (store, sink, workers, retry) = (&store, &sink, &workers, &retry);
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let payload = event.payload;
        if payload.get("Records").is_some() {
            let event: SqsEvent = serde_json::from_value(payload)?;
            return Ok::<_, Error>(serde_json::to_value(workers.handle_sqs_event(event, retry).await)?);
        }
        let request: PlanRequest = serde_json::from_value(payload)
            .map_err(|e| format!("expected an SQS batch or {{\"run\": \"plan\"}}: {e}"))?;
        if request.run != "plan" {
            return Err(format!("unknown run {:?}; expected \"plan\"", request.run).into());
        }
        let month = request.month.unwrap_or_else(|| tax::previous_month(chrono::Utc::now()));
        tax::parse_month(&month)?;
        let report = jobs::plan::plan(
            &**store,
            sink,
            |account_id| Some(Job::Tax { account_id, month: month.clone() }),
            |_| {},
        )
        .await?;
        tracing::info!(%month, accounts = report.accounts, published = report.published, "tax run planned");
        Ok(serde_json::json!({ "month": month, "accounts": report.accounts, "published": report.published }))
    }))
    .await
}
