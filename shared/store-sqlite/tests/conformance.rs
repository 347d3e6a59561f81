//! The embedded store passes the shared conformance suite, on a real file in WAL mode.

use std::sync::Arc;

use ledger::LedgerStore;
use store_sqlite::{Durability, SqliteStore};

async fn fresh() -> Arc<dyn LedgerStore> {
    // Each store gets its own directory; the directory lives as long as the test process.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    Arc::new(SqliteStore::open(dir.join("ledger.db"), Durability::Normal).expect("open sqlite"))
}

conformance::conformance_suite!(fresh, model_cases = 128);
