//! Lambda: the account API's terms, overview, settings, audit log and operator routes (API
//! Gateway HTTP API, JWT authorizer).

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::run_http(api::app::settings_group, runtime::HttpNeeds::default()).await
}
