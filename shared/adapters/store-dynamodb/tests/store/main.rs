//! The DynamoDB store against DynamoDB Local: the answers DynamoDB Local never gives (played
//! on the wire), a batch that spans several page items, and real concurrency on one account.
//!
//! These tests need DynamoDB Local and fail loudly without it: run them through
//! `./scripts/test.sh`, or `scripts/stack.sh up` and `source .stack/env` first.

mod concurrency;
mod inline;
mod large_batch;
mod minute_index;
mod unusual_answers;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use ledger::{AccountId, PostingResult, SourceId};
use store_dynamodb::items::Item;
use store_dynamodb::{create_table, DynamoStore};

use wire::Wire;

pub fn dynamodb_endpoint() -> String {
    std::env::var("RINGLEDGER_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "RINGLEDGER_DYNAMODB_ENDPOINT is not set. These tests need DynamoDB Local: run them \
             through ./scripts/test.sh, or `scripts/stack.sh up` and `source .stack/env` first."
        )
    })
}

/// A table name no other test (or test run) uses.
fn unique_table(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A store on a new table of its own, every request of which passes through the returned wire
/// (forwarded unchanged until the test scripts otherwise). Every batch commits through the
/// transaction path (no batch rides on the account item): what most tests here play with;
/// [`wired_inline_store`] keeps small batches inline.
pub async fn wired_store(keep_bodies: bool) -> (DynamoStore, Arc<Wire>) {
    let (store, wire) = wired_inline_store(keep_bodies).await;
    (store.with_inline_max_bytes(0), wire)
}

/// [`wired_store`] with the store's own rule for small batches (they ride on the account item).
pub async fn wired_inline_store(keep_bodies: bool) -> (DynamoStore, Arc<Wire>) {
    let endpoint = dynamodb_endpoint();
    let (client, wire) = wire::wired_client(&endpoint, keep_bodies).await;
    let table = unique_table("store");
    create_table(&client, &table).await.unwrap_or_else(|e| {
        panic!("cannot create table {table} on DynamoDB Local at {endpoint}: {e:?}")
    });
    wire.clear();
    (DynamoStore::new(client, table), wire)
}

/// The raw item at `pk`/`sk`, read consistently.
pub async fn raw_item(store: &DynamoStore, pk: String, sk: &str) -> Option<Item> {
    store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(pk))
        .key("sk", AttributeValue::S(sk.to_string()))
        .consistent_read(true)
        .send()
        .await
        .expect("read a raw item")
        .item
}

/// Whether the source id has its marker: its group's marker lists it (accounts with group
/// markers), or its own marker item exists (accounts from before them, and members added to a
/// group that already existed).
pub async fn has_marker(store: &DynamoStore, id: &AccountId, source: &SourceId) -> bool {
    use store_dynamodb::keys::{
        group_marker_pk, marker_group, marker_pk, GROUP_MARKER_SK, MARKER_SK,
    };
    let group = raw_item(store, group_marker_pk(id, marker_group(source)), GROUP_MARKER_SK).await;
    if let Some(item) = group {
        let members = match item.get("m") {
            Some(AttributeValue::S(json)) => json.clone(),
            other => panic!("group marker members: {other:?}"),
        };
        let members: Vec<serde_json::Value> = serde_json::from_str(&members).unwrap();
        if members.iter().any(|m| m["r"] == source.as_str()) {
            return true;
        }
    }
    raw_item(store, marker_pk(id, source), MARKER_SK).await.is_some()
}

/// Turn `id` into an account from before group markers: one marker item per source id.
pub async fn make_per_source(store: &DynamoStore, id: &AccountId) {
    let key = store_dynamodb::keys::account_pk(id);
    let mut item = raw_item(store, key, store_dynamodb::keys::ACCOUNT_SK)
        .await
        .expect("the account item exists");
    assert_eq!(item.remove("markers"), Some(AttributeValue::N("2".into())), "group markers");
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(item))
        .send()
        .await
        .expect("rewrite the account item");
}

/// The first seq of the batch riding on the account item (`inline.f`), if any.
pub async fn inline_first(store: &DynamoStore, id: &AccountId) -> Option<u64> {
    let item =
        raw_item(store, store_dynamodb::keys::account_pk(id), store_dynamodb::keys::ACCOUNT_SK)
            .await
            .expect("the account item exists");
    match item.get("inline")? {
        AttributeValue::M(map) => match map.get("f") {
            Some(AttributeValue::N(n)) => Some(n.parse().unwrap()),
            other => panic!("inline.f: {other:?}"),
        },
        other => panic!("inline is not a map: {other:?}"),
    }
}

/// The marker debt the account item carries (`debt_first`), if any.
pub async fn marker_debt(store: &DynamoStore, id: &AccountId) -> Option<String> {
    let item =
        raw_item(store, store_dynamodb::keys::account_pk(id), store_dynamodb::keys::ACCOUNT_SK)
            .await
            .expect("the account item exists");
    item.get("debt_first").map(|v| match v {
        AttributeValue::N(n) => n.clone(),
        other => panic!("debt_first is not a number: {other:?}"),
    })
}

pub fn applied_seqs(results: &[PostingResult]) -> Vec<u64> {
    results
        .iter()
        .map(|r| match r {
            PostingResult::Applied { seq, .. } => *seq,
            other => panic!("not applied: {other:?}"),
        })
        .collect()
}

pub fn duplicate_seqs(results: &[PostingResult]) -> Vec<u64> {
    results
        .iter()
        .map(|r| match r {
            PostingResult::Duplicate { seq } => *seq,
            other => panic!("not a duplicate: {other:?}"),
        })
        .collect()
}
