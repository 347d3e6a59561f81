//! Lambda: the account API's terms, overview, settings, audit log and operator routes (API Gateway HTTP API, JWT authorizer).

#[tokio::main]
async fn main() -> Result<(), bootstrap::Error> {
    bootstrap::serve_group(api::app::settings_group, false).await
}
