//! Test support: posts numbered batches to a ledger until it is killed (SIGKILL) by a test.
//! `crash-poster sqlite <db-path>` or `crash-poster dynamodb <endpoint> <table>`.

use store_dynamodb::{client_for_endpoint, DynamoStore};
use store_sqlite::{Durability, SqliteStore};

const USAGE: &str = "usage: crash-poster sqlite <db-path> | dynamodb <endpoint> <table>";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["sqlite", path] => {
            let store = SqliteStore::open(path, Durability::Full).expect("open ledger");
            conformance::crash::post_until_killed(&store, e2e::CRASH_BATCH_SQLITE).await;
        }
        ["dynamodb", endpoint, table] => {
            let client = client_for_endpoint(Some(endpoint)).await;
            let store = DynamoStore::new(client, table.to_string());
            conformance::crash::post_until_killed(&store, e2e::CRASH_BATCH_DYNAMODB).await;
        }
        _ => panic!("{USAGE}"),
    }
}
