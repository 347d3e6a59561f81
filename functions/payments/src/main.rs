//! Lambda: the account API's cards, Pay Now and payment history (API Gateway HTTP API, JWT authorizer).

#[tokio::main]
async fn main() -> Result<(), bootstrap::Error> {
    bootstrap::serve_group(api::app::payments_group, true).await
}
