//! Lambda: `POST /v1/webhooks/stripe` behind API Gateway without an authorizer (Stripe signs
//! each delivery): verify, store once, publish to the processor-events queue.

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::processor_events::serve_webhook().await
}
