//! Lambda: `POST /v1/authorizations` behind API Gateway's IAM authorizer.

use std::sync::Arc;

use api::authorization::{router, AuthorizationState, PlatformAuth};
use lambda_http::{run, Error};
use rating::RateCards;
use store_dynamodb::DynamoStore;
use usage::authorize::DEFAULT_MAX_CALL_SECONDS;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = std::env::var("RINGLEDGER_TABLE").map_err(|_| "RINGLEDGER_TABLE must be set")?;
    let cards = match std::env::var("RINGLEDGER_RATE_CARDS") {
        Ok(path) => RateCards::from_json(&std::fs::read_to_string(&path)?)?,
        Err(_) => RateCards::standard_only(),
    };
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table);
    store.warm_up(DynamoStore::WARM_UP_TIMEOUT).await;
    let state = AuthorizationState {
        store: Arc::new(store),
        cards,
        platform: PlatformAuth::Iam,
        max_call_seconds: DEFAULT_MAX_CALL_SECONDS,
    };
    run(router(Arc::new(state))).await
}
