//! The DynamoDB store passes the shared conformance suites against DynamoDB Local.

use std::sync::Arc;

use ledger::docs::DocStore;

conformance::conformance_suite!(e2e::fresh_store, model_cases = 48);

/// A document store on a new table of its own.
async fn fresh_docs() -> Arc<dyn DocStore> {
    Arc::new(e2e::fresh_dynamo_store().await)
}

conformance::doc_conformance_suite!(fresh_docs);

/// Ledger and documents on a new table of their own.
async fn fresh_both() -> Arc<dyn conformance::refunds::DocumentStore> {
    Arc::new(e2e::fresh_dynamo_store().await)
}

conformance::refund_suite!(fresh_both);
conformance::plan_charge_suite!(fresh_both);
