//! The embedded store passes the shared conformance suites, on a real file in WAL mode.

use std::sync::Arc;

use ledger::docs::DocStore;
use ledger::LedgerStore;
use store_sqlite::{Durability, SqliteStore};

fn open_fresh() -> SqliteStore {
    // Each store gets its own directory; the directory lives as long as the test process.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    SqliteStore::open(dir.join("ledger.db"), Durability::Normal).expect("open sqlite")
}

async fn fresh() -> Arc<dyn LedgerStore> {
    Arc::new(open_fresh())
}

conformance::conformance_suite!(fresh, model_cases = 128);

async fn fresh_docs() -> Arc<dyn DocStore> {
    Arc::new(open_fresh())
}

conformance::doc_conformance_suite!(fresh_docs);

async fn fresh_both() -> Arc<dyn conformance::refunds::DocumentStore> {
    Arc::new(open_fresh())
}

conformance::refund_suite!(fresh_both);
conformance::plan_charge_suite!(fresh_both);
