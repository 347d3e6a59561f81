//! Lambda: the account API's activity, its CSV export and statements on demand (API Gateway
//! HTTP API, JWT authorizer).

use runtime::HttpNeeds;

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::run_http(
        api::app::activity_group,
        HttpNeeds { statements: true, ..HttpNeeds::default() },
    )
    .await
}
