//! Lambda: statements. One function, two triggers:
//! - EventBridge Scheduler invokes it with `{"run": "plan", "cadence": "monthly"}` (1st of the
//!   month) or `"weekly"` (Mondays): it publishes one job per account for the previous period;
//!   each job sends only when the account's profile asks for that cadence;
//! - the statements queue's event source mapping invokes it with SQS batches of scheduled and
//!   on-demand statement jobs: each statement is sent through SES once (HTML + CSV attachment).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use jobs::job::SqsJobSink;
use jobs::statements::{Cadence, StatementJob};
use jobs::worker::{RetrySoon, Workers, RETRY_AFTER};
use jobs::Job;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use notifications::mailer::{Mailer, SesMailer};
use serde::Deserialize;
use store_dynamodb::DynamoStore;

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} must be set").into())
}

#[derive(Deserialize)]
struct PlanRequest {
    run: String,
    cadence: String,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let from_address = notifications::mailer::check_sender(&env("RINGLEDGER_MAIL_FROM")?)?;
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        env("RINGLEDGER_TABLE")?,
    ));
    store.warm_up(DynamoStore::WARM_UP_TIMEOUT).await;
    let mailer: Arc<dyn Mailer> = Arc::new(
        SesMailer::new(aws_sdk_sesv2::Client::new(&config))
            .with_configuration_set(std::env::var("RINGLEDGER_SES_CONFIGURATION_SET").ok()),
    );
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = env("RINGLEDGER_STATEMENTS_QUEUE_URL")?;
    let retry = RetrySoon { client: sqs.clone(), queue_url: queue_url.clone(), after: RETRY_AFTER };
    let sink = SqsJobSink { client: sqs, queue_url };
    let workers = Workers {
        tax: None,
        statements: Some(StatementJob {
            ledger: store.clone(),
            docs: store.clone(),
            mailer,
            from_address,
        }),
    };
    let (store, sink, workers, retry) = (&store, &sink, &workers, &retry);
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let payload = event.payload;
        if payload.get("Records").is_some() {
            let event: SqsEvent = serde_json::from_value(payload)?;
            return Ok::<_, Error>(serde_json::to_value(workers.handle_sqs_event(event, retry).await)?);
        }
        let request: PlanRequest = serde_json::from_value(payload).map_err(|e| {
            format!("expected an SQS batch or {{\"run\": \"plan\", \"cadence\": \"monthly\"}}: {e}")
        })?;
        let cadence = Cadence::parse(&request.cadence)
            .filter(|_| request.run == "plan")
            .ok_or("expected {\"run\": \"plan\", \"cadence\": \"monthly\" or \"weekly\"}")?;
        let (from, to) = cadence.previous_period(chrono::Utc::now().date_naive());
        let report = jobs::plan::plan(
            &**store,
            sink,
            |account_id| Some(Job::ScheduledStatement { account_id, cadence, from, to }),
            |_| {},
        )
        .await?;
        tracing::info!(cadence = cadence.as_str(), %from, %to, accounts = report.accounts, "statements planned");
        Ok(serde_json::json!({ "cadence": cadence.as_str(), "from": from, "to": to, "accounts": report.accounts }))
    }))
    .await
}
