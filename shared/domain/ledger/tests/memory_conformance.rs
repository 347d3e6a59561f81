//! The memory store passes the same conformance suites as the real stores.

use std::sync::Arc;

use ledger::docs::DocStore;
use ledger::memory::MemoryStore;
use ledger::LedgerStore;

async fn fresh() -> Arc<dyn LedgerStore> {
    Arc::new(MemoryStore::new())
}

conformance::conformance_suite!(fresh, model_cases = 256);

async fn fresh_docs() -> Arc<dyn DocStore> {
    Arc::new(MemoryStore::new())
}

conformance::doc_conformance_suite!(fresh_docs);

async fn fresh_both() -> Arc<dyn conformance::refunds::DocumentStore> {
    Arc::new(MemoryStore::new())
}

conformance::refund_suite!(fresh_both);
conformance::plan_charge_suite!(fresh_both);
