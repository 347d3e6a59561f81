//! What every Lambda does once per cold start: tracing, typed config from the environment, SDK
//! clients built once and shared by every invocation.

use std::sync::Arc;

use api::state::AppState;
use notifications::notice::NoticeSink;
use payments::{SecretKey, StripeConfig, StripeProcessor};
use rating::RateCards;
use recharge::sqs::SqsNoticeSink;
use store_dynamodb::DynamoStore;

pub type Error = lambda_http::Error;

pub fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("{name} must be set").into())
}

pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
}

pub fn rate_cards() -> Result<RateCards, Error> {
    match std::env::var("RINGLEDGER_RATE_CARDS") {
        Ok(path) => Ok(RateCards::from_json(&std::fs::read_to_string(&path)?)?),
        Err(_) => Ok(RateCards::standard_only()),
    }
}

/// The account API's state: the DynamoDB store, the card processor, the rate cards. Only a
/// function that charges cards (`require_processor`) needs `RINGLEDGER_STRIPE_SECRET_KEY`;
/// the others get a processor that refuses every call, and never hold the secret.
pub async fn app_state(require_processor: bool) -> Result<Arc<AppState>, Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), env("RINGLEDGER_TABLE")?);
    store.warm_up(DynamoStore::WARM_UP_TIMEOUT).await;
    let processor: Arc<dyn payments::CardProcessor> = if require_processor {
        Arc::new(StripeProcessor::new(StripeConfig::new(
            std::env::var("RINGLEDGER_STRIPE_URL")
                .unwrap_or_else(|_| "https://api.stripe.com".into()),
            SecretKey::parse(env("RINGLEDGER_STRIPE_SECRET_KEY")?)?,
        ))?)
    } else {
        Arc::new(payments::NoProcessor)
    };
    // Receipts go to the notifications queue when the function is given one.
    let notices: Option<Arc<dyn NoticeSink>> =
        match std::env::var("RINGLEDGER_NOTIFICATIONS_QUEUE_URL") {
            Ok(queue_url) => Some(Arc::new(SqsNoticeSink {
                client: aws_sdk_sqs::Client::new(&config),
                queue_url,
            })),
            Err(_) => None,
        };
    // Statement emails go to the statements queue when the function is given one.
    let statements: Option<Arc<dyn jobs::JobSink>> =
        match std::env::var("RINGLEDGER_STATEMENTS_QUEUE_URL") {
            Ok(queue_url) => Some(Arc::new(jobs::job::SqsJobSink {
                client: aws_sdk_sqs::Client::new(&config),
                queue_url,
            })),
            Err(_) => None,
        };
    Ok(Arc::new(AppState {
        store: Arc::new(store),
        cards: rate_cards()?,
        processor,
        notices,
        statements,
    }))
}

/// Serve one route group behind API Gateway. Each function names its group's router directly,
/// so the other groups' routes are not linked into it.
pub async fn serve_group(
    group: fn() -> axum::Router<Arc<AppState>>,
    require_processor: bool,
) -> Result<(), Error> {
    init_tracing();
    let state = app_state(require_processor).await?;
    lambda_http::run(api::app::lambda_router(group(), state)).await
}
