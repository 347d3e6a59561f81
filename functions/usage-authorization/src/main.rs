//! Lambda: `POST /v1/authorizations` behind API Gateway's IAM authorizer.

use std::sync::Arc;

use api::authorization::{router, AuthorizationState, PlatformAuth};
use runtime::{env, Aws};
use usage::authorize::DEFAULT_MAX_CALL_SECONDS;

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    let aws = Aws::load().await;
    let state = AuthorizationState {
        store: aws.store().await?,
        cards: env::rate_cards()?,
        platform: PlatformAuth::Iam,
        max_call_seconds: DEFAULT_MAX_CALL_SECONDS,
    };
    runtime::run_router(router(Arc::new(state))).await
}
