//! Helpers for the end-to-end tests: they talk to the real local servers that
//! `./scripts/test.sh` installs and starts, and fail loudly when those are missing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ledger::LedgerStore;
use store_dynamodb::{client_for_endpoint, create_table, DynamoStore};

/// The DynamoDB Local endpoint; panics with instructions when the stack is not running.
pub fn dynamodb_endpoint() -> String {
    std::env::var("RINGLEDGER_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "RINGLEDGER_DYNAMODB_ENDPOINT is not set. These tests need DynamoDB Local: run them \
             through ./scripts/test.sh, or `scripts/stack.sh up` and `source .stack/env` first."
        )
    })
}

/// A table name no other test (or test run) uses.
pub fn unique_table(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A DynamoDB store on a new table of its own.
pub async fn fresh_dynamo_store() -> DynamoStore {
    let client = client_for_endpoint(Some(&dynamodb_endpoint())).await;
    let table = unique_table("ledger");
    create_table(&client, &table).await.unwrap_or_else(|e| {
        panic!("cannot create table {table} on DynamoDB Local at {}: {e:?}", dynamodb_endpoint())
    });
    DynamoStore::new(client, table)
}

pub async fn fresh_store() -> Arc<dyn LedgerStore> {
    Arc::new(fresh_dynamo_store().await)
}
