//! The Lambda runtime every function shares: what a cold start does once (logs and metrics,
//! the AWS config, the SDK clients, typed config from the environment) and the three shapes of
//! handler, so each function's `main` only says which service it runs:
//!
//! - [`run_sqs`] / [`run_sqs_held`]: an SQS event source with `ReportBatchItemFailures`, the
//!   worker answering with failures or with verdicts (hold until, retry soon, reject);
//! - [`run_http`] / [`run_router`]: an axum router behind API Gateway;
//! - [`run_json`]: a scheduled invocation with a JSON payload;
//! - [`jobs`]: the two scheduled-job functions (plan on a schedule, work from a queue).
//!
//! After every invocation the business metrics it counted are printed as one embedded-metric
//! line ([`telemetry`]).

pub mod env;
pub mod jobs;
pub mod processor_events;
pub mod telemetry;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use api::state::AppState;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use mailers::SesMailer;
use messaging::mail::Mailer;
use messaging::metrics::{count, MESSAGES_RETRIED};
use messaging::outbox::QueueEventSink;
use messaging::queue::{Failure, Message, Redelivery, Verdict};
use notifications::notice::QueueNotices;
use sqs::{LambdaBatch, SqsQueue};
use store_dynamodb::DynamoStore;

pub use env::ConfigError;

pub type Error = lambda_runtime::Error;

/// The AWS config, loaded once per cold start; clients are built from it.
pub struct Aws {
    config: aws_config::SdkConfig,
    sqs: std::sync::OnceLock<aws_sdk_sqs::Client>,
}

impl Aws {
    /// Logs and metrics, then the AWS config (region, credentials) from the environment.
    pub async fn load() -> Self {
        telemetry::init();
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Aws { config, sqs: std::sync::OnceLock::new() }
    }

    /// The ledger and document store on [`env::TABLE`], its connection warmed.
    pub async fn store(&self) -> Result<Arc<DynamoStore>, Error> {
        let table = env::required(env::TABLE)?;
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&self.config), table);
        store.warm_up(DynamoStore::WARM_UP_TIMEOUT).await;
        Ok(Arc::new(store))
    }

    /// The queue whose URL is in `variable` (one SQS client for all of them).
    pub fn queue(&self, variable: &'static str) -> Result<Arc<SqsQueue>, Error> {
        let url = env::required(variable)?;
        let client = self.sqs.get_or_init(|| aws_sdk_sqs::Client::new(&self.config)).clone();
        Ok(Arc::new(SqsQueue::new(client, url)))
    }

    /// Ledger events to their queues: recharge requests and pending payments to the recharge
    /// queue, notices to the notifications queue.
    pub fn ledger_events(&self) -> Result<Arc<QueueEventSink>, Error> {
        Ok(Arc::new(QueueEventSink {
            recharge: self.queue(env::RECHARGE_QUEUE_URL)?,
            notifications: self.queue(env::NOTIFICATIONS_QUEUE_URL)?,
        }))
    }

    /// Notices (receipts, failures) to the notifications queue.
    pub fn notices(&self) -> Result<Arc<QueueNotices>, Error> {
        Ok(Arc::new(QueueNotices(self.queue(env::NOTIFICATIONS_QUEUE_URL)?)))
    }

    /// SES v2 and the checked sender.
    pub fn mailer(&self) -> Result<(Arc<dyn Mailer>, String), Error> {
        let config = env::MailConfig::from_env()?;
        let mailer = SesMailer::new(aws_sdk_sesv2::Client::new(&self.config))
            .with_configuration_set(config.configuration_set);
        Ok((Arc::new(mailer), config.from))
    }

    /// Critical billing texts through SNS (`sns:Publish` to phone numbers).
    pub fn texts(&self) -> Arc<dyn messaging::text::TextSender> {
        let sender = env::optional(env::SMS_SENDER_ID);
        Arc::new(mailers::SnsTexts::new(aws_sdk_sns::Client::new(&self.config), sender))
    }
}

/// Serve an SQS event source whose worker reports the messages that failed; they come back
/// after the queue's visibility timeout.
pub async fn run_sqs<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(Vec<Message>) -> Fut,
    Fut: Future<Output = Vec<Failure>>,
{
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let batch = LambdaBatch::new(event.payload);
        let failures = handler(batch.messages()).await;
        count(MESSAGES_RETRIED, failures.len() as u64);
        telemetry::flush();
        Ok::<_, Error>(LambdaBatch::response(&failures))
    }))
    .await
}

/// Serve an SQS event source whose worker answers with verdicts: messages that must wait are
/// held by their visibility, retried sooner or requeued fresh as `policy` says.
pub async fn run_sqs_held<F, Fut>(
    queue: Arc<SqsQueue>,
    policy: Redelivery,
    handler: F,
) -> Result<(), Error>
where
    F: Fn(Vec<Message>) -> Fut,
    Fut: Future<Output = HashMap<String, Verdict>>,
{
    let (handler, queue) = (&handler, &queue);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let batch = LambdaBatch::new(event.payload);
        let verdicts = handler(batch.messages()).await;
        let response = batch.settle(queue, &verdicts, policy).await;
        count(MESSAGES_RETRIED, response.batch_item_failures.len() as u64);
        telemetry::flush();
        Ok::<_, Error>(response)
    }))
    .await
}

/// Serve a scheduled function: a JSON payload in, a JSON summary out.
pub async fn run_json<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: Future<Output = Result<serde_json::Value, Error>>,
{
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let result = handler(event.payload).await;
        telemetry::flush();
        result
    }))
    .await
}

/// What an account-API route group needs besides the store and the rate cards. Each is
/// required when asked for: the function does not start without its variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpNeeds {
    /// Charges cards ([`env::STRIPE_SECRET_KEY`]); without it the group's state holds a
    /// processor that refuses every call, and never the secret.
    pub card_processor: bool,
    /// Queues payment receipts ([`env::NOTIFICATIONS_QUEUE_URL`]).
    pub receipts: bool,
    /// Queues statements to send ([`env::STATEMENTS_QUEUE_URL`]).
    pub statements: bool,
}

/// Serve one account-API route group behind API Gateway. Each function names its group's
/// router directly, so the other groups' routes are not linked into it.
pub async fn run_http(
    group: fn() -> axum::Router<Arc<AppState>>,
    needs: HttpNeeds,
) -> Result<(), Error> {
    let aws = Aws::load().await;
    let state = AppState {
        store: aws.store().await?,
        cards: env::rate_cards()?,
        processor: if needs.card_processor {
            env::card_processor()?
        } else {
            Arc::new(payments::NoProcessor)
        },
        notices: if needs.receipts { Some(aws.notices()?) } else { None },
        statements: if needs.statements {
            Some(Arc::new(::jobs::job::QueueJobs(aws.queue(env::STATEMENTS_QUEUE_URL)?)))
        } else {
            None
        },
        portal: api::portal::PortalKeys::from_env()
            .map_err(|e| Error::from(e.as_str()))?
            .map(Arc::new),
    };
    run_router(api::app::lambda_router(group(), Arc::new(state))).await
}

/// The billing page's Lambda: the whole account API's state (cards, Pay Now, receipts,
/// statements), the portal keys required, and the page's router in front.
pub async fn run_web() -> Result<(), Error> {
    let aws = Aws::load().await;
    let portal = api::portal::PortalKeys::from_env()
        .map_err(|e| Error::from(e.as_str()))?
        .ok_or_else(|| Error::from("RINGLEDGER_PORTAL_SECRET is not set"))?;
    let state = AppState {
        store: aws.store().await?,
        cards: env::rate_cards()?,
        processor: env::card_processor()?,
        notices: Some(aws.notices()?),
        statements: Some(Arc::new(::jobs::job::QueueJobs(aws.queue(env::STATEMENTS_QUEUE_URL)?))),
        portal: Some(Arc::new(portal)),
    };
    run_router(web::router(Arc::new(state))).await
}

/// Serve an axum router behind API Gateway, printing each request's metrics after it.
pub async fn run_router(router: axum::Router) -> Result<(), Error> {
    let router = router.layer(axum::middleware::map_response(
        |response: axum::response::Response| async move {
            telemetry::flush();
            response
        },
    ));
    lambda_http::run(router).await
}
