//! Lambda: the account API's activity and its CSV export (API Gateway HTTP API, JWT authorizer).

#[tokio::main]
async fn main() -> Result<(), bootstrap::Error> {
    bootstrap::serve_group(api::app::activity_group, false).await
}
