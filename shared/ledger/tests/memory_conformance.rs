//! The memory store passes the same conformance suite as the real stores.

use std::sync::Arc;

use ledger::memory::MemoryStore;
use ledger::LedgerStore;

async fn fresh() -> Arc<dyn LedgerStore> {
    Arc::new(MemoryStore::new())
}

conformance::conformance_suite!(fresh, model_cases = 256);
