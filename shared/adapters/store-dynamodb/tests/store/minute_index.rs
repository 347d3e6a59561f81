//! The minute index is sparse: a quiet account, whose every batch opens a new minute, gets an
//! index item on one batch in [`INDEX_EVERY_PAGES`], and activity reads from any moment still
//! return exactly the entries posted from then on.

use aws_sdk_dynamodb::types::AttributeValue;
use conformance::{at, credit, open, usage};
use ledger::{EntryQuery, LedgerStore};
use store_dynamodb::keys::minute_pk;
use store_dynamodb::INDEX_EVERY_PAGES;

use crate::wired_inline_store;

async fn minute_items(store: &store_dynamodb::DynamoStore, id: &ledger::AccountId) -> Vec<String> {
    let output = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(minute_pk(id)))
        .consistent_read(true)
        .send()
        .await
        .expect("query the minute index");
    output
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|item| item["sk"].as_s().expect("a minute key").clone())
        .collect()
}

#[tokio::test]
async fn a_quiet_account_indexes_one_batch_in_eight_and_reads_from_any_moment_stay_exact() {
    let (store, _wire) = wired_inline_store(false).await;
    let id = open(&store, "quiet", None).await;
    store.post(&id, vec![credit("pay", "100")], at(0)).await.unwrap();
    // One event every three minutes, each its own batch and its own minute: 40 batches.
    let batches = 40;
    for n in 1..=batches {
        let event = format!("e{n}");
        store.post(&id, vec![usage(&event, "0.01")], at(n * 180)).await.unwrap();
    }
    // One more posting flushes the last inline batch (and its minute item, if it has one).
    store.post(&id, vec![usage("last", "0.01")], at((batches + 1) * 180)).await.unwrap();

    let indexed = minute_items(&store, &id).await;
    let pages = batches as usize + 1;
    assert!(
        indexed.len() <= pages / INDEX_EVERY_PAGES as usize + 1,
        "{} index items for {pages} pages: {indexed:?}",
        indexed.len()
    );
    assert!(indexed.len() >= 2, "the index still has items: {indexed:?}");

    let everything = ledger::store::all_entries(&store, &id, EntryQuery::default()).await.unwrap();
    assert_eq!(everything.len(), batches as usize + 2);
    // From every moment (on an entry, between entries, before the first), the read returns
    // exactly the entries posted from then on, whether or not that minute was indexed.
    for offset in [0, 1, 90, 179, 180, 181, 1_000, 3_599, 3_600, 5_000, 7_199, 7_380] {
        let from = at(offset);
        let query = EntryQuery { from: Some(from), limit: 500, ..EntryQuery::default() };
        let read = store.entries(&id, &query).await.unwrap();
        assert!(read.next_cursor.is_none());
        let expected: Vec<u64> =
            everything.iter().filter(|e| e.posted_at >= from).map(|e| e.seq).collect();
        let got: Vec<u64> = read.entries.iter().map(|e| e.seq).collect();
        assert_eq!(got, expected, "reading from {from}");
    }
}
