//! DynamoDB-specific behaviour: crash points inside a posting, and cancellation reasons decoded
//! from the real DynamoDB Local responses.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use conformance::{at, credit, open, usage, usd};
use ledger::{LedgerStore, PostingResult, StoreError};
use store_dynamodb::errors::TransactionFailure;
use store_dynamodb::Fault;

fn applied_seqs(results: &[PostingResult]) -> Vec<u64> {
    results
        .iter()
        .map(|r| match r {
            PostingResult::Applied { seq, .. } | PostingResult::Duplicate { seq } => *seq,
            other => panic!("neither applied nor a duplicate: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_crash_after_commit_before_markers_never_applies_twice() {
    let store = e2e::fresh_dynamo_store().await;
    let id = open(&store, "crash", None).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();

    let batch = vec![usage("e1", "1"), usage("e2", "2"), usage("e3", "3")];
    store.inject_fault_once(Fault::AfterCommitBeforeMarkers);
    let crashed = store.post(&id, batch.clone(), at(2)).await;
    assert!(matches!(crashed, Err(StoreError::Unavailable(_))), "the caller saw a failure");
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, usd("94"), "the transaction itself committed");

    // The queue redelivers the same batch: every event is recognised, nothing changes.
    let redelivered = store.post(&id, batch.clone(), at(3)).await.unwrap();
    assert!(redelivered.results.iter().all(|r| matches!(r, PostingResult::Duplicate { .. })));
    assert_eq!(applied_seqs(&redelivered.results), vec![2, 3, 4]);
    assert_eq!(redelivered.account.balance_usd, usd("94"));

    // Crash again, then an unrelated batch arrives first and pays the marker debt.
    let second = vec![usage("f1", "0.5"), usage("f2", "0.25")];
    store.inject_fault_once(Fault::AfterCommitBeforeMarkers);
    assert!(store.post(&id, second.clone(), at(4)).await.is_err());
    let other = store.post(&id, vec![usage("g1", "0.0001")], at(5)).await.unwrap();
    assert_eq!(applied_seqs(&other.results), vec![7]);
    let again = store.post(&id, second, at(6)).await.unwrap();
    assert_eq!(
        again.results,
        vec![PostingResult::Duplicate { seq: 5 }, PostingResult::Duplicate { seq: 6 }]
    );
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!(account.balance_usd, usd("93.2499"));
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(pk.into())),
        ("sk".to_string(), AttributeValue::S(sk.into())),
    ])
}

fn conditional_put(table: &str, pk: &str, condition: &str) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(key(pk, "x")))
        .condition_expression(condition)
        .build()
        .unwrap();
    TransactWriteItem::builder().put(put).build()
}

#[tokio::test]
async fn cancellation_reasons_from_dynamodb_local_decode_into_typed_failures() {
    let store = e2e::fresh_dynamo_store().await;
    let client = store.client();
    let table = store.table();
    client.put_item().table_name(table).set_item(Some(key("existing", "x"))).send().await.unwrap();

    // Item 0 (the account slot) failing its condition is a version conflict.
    let result = client
        .transact_write_items()
        .transact_items(conditional_put(table, "existing", "attribute_not_exists(pk)"))
        .transact_items(conditional_put(table, "fresh-1", "attribute_not_exists(pk)"))
        .send()
        .await;
    let failure = TransactionFailure::from_sdk(result.expect_err("must be cancelled"));
    assert!(matches!(failure, TransactionFailure::VersionConflict), "{failure:?}");

    // Any other item failing its condition is an item that already exists, with its index.
    let result = client
        .transact_write_items()
        .transact_items(conditional_put(table, "fresh-2", "attribute_not_exists(pk)"))
        .transact_items(conditional_put(table, "existing", "attribute_not_exists(pk)"))
        .send()
        .await;
    let failure = TransactionFailure::from_sdk(result.expect_err("must be cancelled"));
    assert!(matches!(failure, TransactionFailure::AlreadyExists { item: 1 }), "{failure:?}");

    // Nothing of a cancelled transaction was written.
    for pk in ["fresh-1", "fresh-2"] {
        let item = client.get_item().table_name(table).set_key(Some(key(pk, "x"))).send().await;
        assert!(item.unwrap().item.is_none(), "{pk} must not exist");
    }
}

#[tokio::test]
async fn a_missing_table_is_an_unavailable_store_not_a_panic() {
    let client = store_dynamodb::client_for_endpoint(Some(&e2e::dynamodb_endpoint())).await;
    let store = store_dynamodb::DynamoStore::new(client, "no-such-table-here");
    let result = store.account(&conformance::account_id("x")).await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
}

#[tokio::test]
async fn forged_cursors_are_bad_requests_not_corruption() {
    let store = e2e::fresh_dynamo_store().await;
    let id = open(&store, "cursors", None).await;
    for i in 0..3 {
        store.post(&id, vec![usage(&format!("e{i}"), "1")], at(i)).await.unwrap();
    }
    for cursor in ["d9.8", "d2.0", "d1.18446744073709551615", "d0.0", "s1"] {
        let query =
            ledger::EntryQuery { cursor: Some(cursor.into()), limit: 10, ..Default::default() };
        let result = store.entries(&id, &query).await;
        assert!(
            matches!(result, Err(StoreError::Rejected(ledger::LedgerError::BadCursor))),
            "{cursor}: {result:?}"
        );
    }
    let page = store.entries(&id, &ledger::EntryQuery { limit: 1, ..Default::default() }).await;
    let cursor = page.unwrap().next_cursor.expect("more entries");
    let next = ledger::EntryQuery { cursor: Some(cursor), limit: 10, ..Default::default() };
    assert_eq!(store.entries(&id, &next).await.unwrap().entries.len(), 2);
}

#[tokio::test]
async fn the_cold_start_warm_up_connects_without_writing_and_gives_up_quietly() {
    let store = e2e::fresh_dynamo_store().await;
    let meter = std::sync::Arc::new(store_dynamodb::capacity::CapacityMeter::default());
    let store = store.with_meter(meter.clone());
    assert!(store.warm_up(std::time::Duration::from_secs(5)).await, "DynamoDB Local answers");
    assert_eq!(meter.take().write_units, 0, "the warm-up writes nothing");
    assert!(store.account_ids(None, 10).await.unwrap().is_empty(), "and creates no account");

    // Nothing listens on this port: the warm-up reports failure instead of erroring.
    let closed = store_dynamodb::client_for_endpoint(Some("http://127.0.0.1:9")).await;
    let unreachable = store_dynamodb::DynamoStore::new(closed, "ringledger");
    assert!(!unreachable.warm_up(std::time::Duration::from_millis(1500)).await);
}

#[tokio::test]
async fn an_unreadable_outbox_item_is_reported_and_the_events_around_it_are_read() {
    let store = e2e::fresh_dynamo_store().await;
    for (index, name) in ["ob-a", "ob-b"].into_iter().enumerate() {
        let id = open(&store, name, None).await;
        store.post(&id, vec![credit("pay", "1")], at(index as i64 * 10 + 1)).await.unwrap();
    }
    let events = store.pending_events(10).await.unwrap();
    assert_eq!(events.len(), 2);
    // An item between the two (as a newer version's event kind or a bad write would leave it).
    let position = format!("{:020}#ob-a#{:020}#x", at(5).timestamp_micros(), 1);
    let damaged = HashMap::from([
        ("pk".to_string(), AttributeValue::S("O#0".into())),
        ("sk".to_string(), AttributeValue::S(position.clone())),
        ("event".to_string(), AttributeValue::S(r#"{"kind": "from_the_future"}"#.into())),
    ]);
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(damaged))
        .send()
        .await
        .unwrap();

    let page = store.outbox_page(None, 10).await.unwrap();
    assert_eq!(page.events, events);
    assert_eq!(page.unreadable.len(), 1);
    assert_eq!(page.unreadable[0].position, position);
    assert_eq!(page.next_after, None);
    // One at a time, the cursor walks past it.
    let first = store.outbox_page(None, 1).await.unwrap();
    assert_eq!(first.events, events[..1].to_vec());
    let second = store.outbox_page(first.next_after.as_deref(), 1).await.unwrap();
    assert_eq!((second.events.len(), second.unreadable.len()), (0, 1));
    let third = store.outbox_page(second.next_after.as_deref(), 1).await.unwrap();
    assert_eq!((third.events, third.next_after), (events[1..].to_vec(), None));
}

fn get_key(pk: String, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(pk)),
        ("sk".to_string(), AttributeValue::S(sk.into())),
    ])
}

async fn get_item(
    store: &store_dynamodb::DynamoStore,
    key: HashMap<String, AttributeValue>,
) -> Option<HashMap<String, AttributeValue>> {
    store
        .client()
        .get_item()
        .table_name(store.table())
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

#[tokio::test]
async fn a_marker_keeps_its_charge_and_one_written_before_it_did_is_a_plain_duplicate() {
    use store_dynamodb::keys::{group_marker_pk, marker_pk, GROUP_MARKER_SK, MARKER_SK};
    let store = e2e::fresh_dynamo_store().await;
    let id = open(&store, "markers", None).await;
    store.post(&id, vec![credit("pay", "100"), usage("evt-1", "2.5")], at(1)).await.unwrap();
    // The small batch rode on the account item; the next poster writes its markers.
    store.post(&id, vec![usage("evt-2", "0.5")], at(2)).await.unwrap();
    let marker = get_item(&store, get_key(group_marker_pk(&id, "evt-1"), GROUP_MARKER_SK))
        .await
        .expect("the group marker was written");
    let members = match marker.get("m") {
        Some(AttributeValue::S(json)) => json.clone(),
        other => panic!("members: {other:?}"),
    };
    assert!(members.contains("\"i\":\"phone_call\""), "{members}");
    assert!(members.contains("\"k\":\"debit\""), "{members}");
    let reused = store.post(&id, vec![usage("evt-1", "9")], at(3)).await.unwrap();
    assert!(matches!(reused.results[0], PostingResult::SourceIdReused { seq: 2, .. }));

    // An account from before group markers keeps one marker per source id; a marker as an
    // older version wrote it carries no charge, so a duplicate of it is not compared.
    let legacy = open(&store, "legacy-markers", None).await;
    let account_key = get_key(store_dynamodb::keys::account_pk(&legacy), "A");
    let mut account = get_item(&store, account_key).await.expect("the account item");
    assert_eq!(account.remove("markers"), Some(AttributeValue::N("2".into())));
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(account))
        .send()
        .await
        .unwrap();
    store.post(&legacy, vec![credit("pay", "100"), usage("evt-1", "2.5")], at(1)).await.unwrap();
    store.post(&legacy, vec![usage("evt-2", "0.5")], at(2)).await.unwrap();
    let key = get_key(marker_pk(&legacy, &ledger::SourceId::parse("evt-1").unwrap()), MARKER_SK);
    let marker = get_item(&store, key).await.expect("the per-source marker was written");
    assert_eq!(marker.get("i"), Some(&AttributeValue::S("phone_call".into())));
    assert_eq!(marker.get("k"), Some(&AttributeValue::S("debit".into())));
    assert!(get_item(&store, get_key(group_marker_pk(&legacy, "evt-1"), GROUP_MARKER_SK))
        .await
        .is_none());
    let reused = store.post(&legacy, vec![usage("evt-1", "9")], at(3)).await.unwrap();
    assert!(matches!(reused.results[0], PostingResult::SourceIdReused { seq: 2, .. }));
    let mut old = marker.clone();
    for attribute in ["k", "i", "a"] {
        old.remove(attribute);
    }
    store.client().put_item().table_name(store.table()).set_item(Some(old)).send().await.unwrap();
    let again = store.post(&legacy, vec![usage("evt-1", "9")], at(4)).await.unwrap();
    assert_eq!(again.results, vec![PostingResult::Duplicate { seq: 2 }]);
    assert_eq!(again.account.balance_usd, usd("97"));
}
