//! Lambda: the account API's cards, Pay Now and payment history (API Gateway HTTP API, JWT
//! authorizer). It charges cards and queues receipts.

use runtime::HttpNeeds;

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    let needs = HttpNeeds { card_processor: true, receipts: true, statements: false };
    runtime::run_http(api::app::payments_group, needs).await
}
