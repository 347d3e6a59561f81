//! A process posting to a ledger is killed (SIGKILL) mid-stream, three times, on each store:
//! every batch is whole or absent, the chain is unbroken, and redelivering every batch applies
//! each source id exactly once.

use std::time::Duration;

use e2e::{run_and_kill, CRASH_BATCH_DYNAMODB, CRASH_BATCH_SQLITE};
use ledger::{AccountId, LedgerStore};
use store_sqlite::{Durability, SqliteStore};

const POSTER: &str = env!("CARGO_BIN_EXE_crash-poster");

async fn last_seq(store: &dyn LedgerStore) -> u64 {
    let id = AccountId::parse(conformance::crash::CRASH_ACCOUNT).unwrap();
    store.account(&id).await.unwrap().map_or(0, |a| a.last_seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sqlite_poster_leaves_whole_batches_and_redelivery_applies_each_id_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let path_arg = path.to_str().unwrap();
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    for round in 0..3u64 {
        let target = (round + 1) * 5 * CRASH_BATCH_SQLITE as u64;
        run_and_kill(POSTER, &["sqlite", path_arg], &store, target, Duration::from_millis(2)).await;
    }
    assert!(last_seq(&store).await >= 15 * CRASH_BATCH_SQLITE as u64, "progress before kills");
    conformance::crash::assert_whole_batches_and_exact_redelivery(&store, CRASH_BATCH_SQLITE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dynamodb_poster_leaves_whole_batches_and_redelivery_applies_each_id_once() {
    let store = e2e::fresh_dynamo_store().await;
    let endpoint = e2e::dynamodb_endpoint();
    for round in 0..3u64 {
        let target = (round + 1) * 4 * CRASH_BATCH_DYNAMODB as u64;
        // Poll at different rhythms so the kill lands at different points inside a posting.
        let poll = Duration::from_millis(1 + round * 3);
        let args = ["dynamodb", endpoint.as_str(), store.table()];
        run_and_kill(POSTER, &args, &store, target, poll).await;
    }
    // Requests the dead process had already sent may still land; let them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(last_seq(&store).await >= 12 * CRASH_BATCH_DYNAMODB as u64, "progress before kills");
    conformance::crash::assert_whole_batches_and_exact_redelivery(&store, CRASH_BATCH_DYNAMODB)
        .await;
}
