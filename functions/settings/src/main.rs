//! Lambda: the account API's terms, overview, settings, audit log, invoices and operator routes (API
//! Gateway HTTP API, JWT authorizer).

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::run_http(
        api::app::settings_group,
        // An operator's "issue this invoice now" queues its email on the statements queue.
        runtime::HttpNeeds { statements: true, ..runtime::HttpNeeds::default() },
    )
    .await
}
