//! Answers DynamoDB gives under load and DynamoDB Local never does, played on the wire in front
//! of a real table: unprocessed keys and items, throttling past every retry, transactions in
//! progress and transaction conflicts.

use conformance::{at, credit, open, usage, usd};
use ledger::{LedgerStore, PostingResult, StoreError};
use serde_json::{json, Value};

use crate::wire::{cancelled, error_body, Action, SDK_ATTEMPTS};
use crate::{applied_seqs, duplicate_seqs, has_marker, make_per_source, marker_debt, wired_store};

/// The store's bound on rounds of unprocessed keys or items (`MAX_UNPROCESSED_RETRIES`).
const UNPROCESSED_ROUNDS: usize = 10;
/// Throttled transactions the store absorbs before it gives up (`post_with`).
const THROTTLED_TRANSACTIONS: usize = 6;

fn source(name: &str) -> ledger::SourceId {
    conformance::source(name)
}

/// Move every item DynamoDB found into `UnprocessedKeys`, as DynamoDB does when it runs out of
/// capacity part-way: the keys that exist are exactly the ones that come back unanswered.
fn found_markers_unprocessed(table: &str, mut answer: Value) -> Value {
    let found = answer["Responses"][table].as_array().cloned().unwrap_or_default();
    let keys: Vec<Value> =
        found.iter().map(|item| json!({ "pk": item["pk"], "sk": item["sk"] })).collect();
    answer["Responses"][table] = json!([]);
    if !keys.is_empty() {
        answer["UnprocessedKeys"] = json!({ table: { "Keys": keys, "ConsistentRead": true } });
    }
    answer
}

#[tokio::test]
async fn marker_keys_left_unprocessed_are_asked_again_never_read_as_absent() {
    let (store, wire) = wired_store(true).await;
    let table = store.table().to_string();
    let id = open(&store, "unprocessed-keys", None).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();
    let batch: Vec<_> = (1..=5).map(|i| usage(&format!("e{i}"), "1")).collect();
    let first = store.post(&id, batch.clone(), at(2)).await.unwrap();
    assert_eq!(applied_seqs(&first.results), vec![2, 3, 4, 5, 6]);

    // The redelivery's lookup: twice in a row every marker that exists comes back unprocessed.
    wire.clear();
    let script_table = table.clone();
    wire.script(move |call| match (call.operation, call.nth) {
        ("BatchGetItem", 0 | 1) => {
            let table = script_table.clone();
            Action::Rewrite(Box::new(move |status, answer| {
                (status, found_markers_unprocessed(&table, answer))
            }))
        }
        _ => Action::Forward,
    });
    let mut redelivered = batch.clone();
    redelivered.push(usage("e6", "1"));
    let outcome = store.post(&id, redelivered, at(3)).await.unwrap();

    assert_eq!(duplicate_seqs(&outcome.results[..5]), vec![2, 3, 4, 5, 6]);
    assert_eq!(applied_seqs(&outcome.results[5..]), vec![7]);
    assert_eq!(outcome.account.balance_usd, usd("94"));
    let lookups = wire.of("BatchGetItem");
    assert_eq!(lookups.len(), 3, "asked once, then twice more for the unprocessed keys");
    for round in &lookups[..2] {
        let unprocessed = round.response["UnprocessedKeys"][&table]["Keys"].as_array();
        assert_eq!(unprocessed.map(Vec::len), Some(5), "the scripted rounds left 5 keys over");
    }
    let asked_again = lookups[1].request["RequestItems"][&table]["Keys"].as_array();
    assert_eq!(asked_again.map(Vec::len), Some(5), "only the unprocessed keys are asked again");
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!(account.balance_usd, usd("94"));
    assert_eq!(account.last_seq, 7);
}

#[tokio::test]
async fn marker_keys_unprocessed_on_every_round_fail_the_posting_and_apply_nothing() {
    let (store, wire) = wired_store(true).await;
    let table = store.table().to_string();
    let id = open(&store, "unprocessed-forever", None).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();
    let batch = vec![usage("e1", "1"), usage("e2", "2")];
    store.post(&id, batch.clone(), at(2)).await.unwrap();

    wire.clear();
    let script_table = table.clone();
    wire.script(move |call| match call.operation {
        // Nothing answered, every key handed back: DynamoDB Local is never even asked.
        "BatchGetItem" => Action::Reply(
            200,
            json!({
                "Responses": { script_table.as_str(): [] },
                "UnprocessedKeys": call.request["RequestItems"].clone(),
            }),
        ),
        _ => Action::Forward,
    });
    let failed = store.post(&id, batch.clone(), at(3)).await;
    assert!(matches!(failed, Err(StoreError::Throttled)), "got {failed:?}");
    assert_eq!(wire.of("BatchGetItem").len(), UNPROCESSED_ROUNDS, "a bounded number of rounds");
    assert!(wire.of("TransactWriteItems").is_empty(), "nothing was written");
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!((account.last_seq, account.balance_usd), (3, usd("97")));

    // Once DynamoDB answers again, the redelivery is recognised.
    wire.script(|_| Action::Forward);
    let outcome = store.post(&id, batch, at(4)).await.unwrap();
    assert_eq!(duplicate_seqs(&outcome.results), vec![2, 3]);
    conformance::assert_consistent(&store, &id).await;
}

#[tokio::test]
async fn unprocessed_marker_writes_are_retried_until_written() {
    let (store, wire) = wired_store(true).await;
    let table = store.table().to_string();
    let id = open(&store, "unprocessed-items", None).await;
    // Markers go out in BatchWriteItem calls (here per-source ones; group markers the same way).
    make_per_source(&store, &id).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();

    wire.clear();
    wire.script(|call| match (call.operation, call.nth) {
        ("BatchWriteItem", 0 | 1) => {
            Action::Reply(200, json!({ "UnprocessedItems": call.request["RequestItems"].clone() }))
        }
        _ => Action::Forward,
    });
    let batch = vec![usage("e1", "1"), usage("e2", "2"), usage("e3", "3")];
    let outcome = store.post(&id, batch, at(2)).await.unwrap();
    assert_eq!(applied_seqs(&outcome.results), vec![2, 3, 4]);

    let writes = wire.of("BatchWriteItem");
    assert_eq!(writes.len(), 3, "two unprocessed rounds, then written");
    assert_eq!(writes.iter().filter(|w| w.forwarded).count(), 1);
    let retried = writes[2].request["RequestItems"][&table].as_array().map(Vec::len);
    assert_eq!(retried, Some(3), "the unprocessed markers are sent again");
    for name in ["e1", "e2", "e3"] {
        assert!(has_marker(&store, &id, &source(name)).await, "marker {name} written");
    }
    assert_eq!(marker_debt(&store, &id).await, None, "the debt is cleared once markers exist");
}

#[tokio::test]
async fn marker_writes_never_processed_stay_debt_that_the_next_poster_pays() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "unprocessed-debt", None).await;
    make_per_source(&store, &id).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();

    wire.clear();
    wire.script(|call| match call.operation {
        "BatchWriteItem" => {
            Action::Reply(200, json!({ "UnprocessedItems": call.request["RequestItems"].clone() }))
        }
        _ => Action::Forward,
    });
    let batch = vec![usage("e1", "1"), usage("e2", "2")];
    let outcome = store.post(&id, batch.clone(), at(2)).await.unwrap();
    assert_eq!(applied_seqs(&outcome.results), vec![2, 3], "the commit stands");
    assert_eq!(wire.of("BatchWriteItem").len(), UNPROCESSED_ROUNDS);
    assert!(!has_marker(&store, &id, &source("e1")).await);
    assert_eq!(marker_debt(&store, &id).await.as_deref(), Some("2"), "the batch is owed");

    // The redelivery pays the debt before it looks the source ids up.
    wire.script(|_| Action::Forward);
    let again = store.post(&id, batch, at(3)).await.unwrap();
    assert_eq!(duplicate_seqs(&again.results), vec![2, 3]);
    assert!(has_marker(&store, &id, &source("e1")).await);
    assert!(has_marker(&store, &id, &source("e2")).await);
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!(account.balance_usd, usd("97"));
}

#[tokio::test]
async fn group_marker_writes_that_fail_stay_debt_that_the_next_poster_pays() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "group-marker-debt", None).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();

    // Every group-marker write is throttled past the SDK's retries: the commit stands, the
    // markers are owed.
    wire.clear();
    wire.script(|call| match call.operation {
        "BatchWriteItem" => Action::Reply(400, error_body("ThrottlingException", "Rate exceeded")),
        _ => Action::Forward,
    });
    let batch = vec![usage("e1", "1"), usage("e2", "2")];
    let outcome = store.post(&id, batch.clone(), at(2)).await.unwrap();
    assert_eq!(applied_seqs(&outcome.results), vec![2, 3], "the commit stands");
    assert!(!wire.of("BatchWriteItem").is_empty(), "the markers were tried");
    assert!(!has_marker(&store, &id, &source("e1")).await);
    assert_eq!(marker_debt(&store, &id).await.as_deref(), Some("2"), "the batch is owed");

    // The redelivery pays the debt before it looks the source ids up.
    wire.script(|_| Action::Forward);
    let again = store.post(&id, batch, at(3)).await.unwrap();
    assert_eq!(duplicate_seqs(&again.results), vec![2, 3]);
    assert!(has_marker(&store, &id, &source("e1")).await);
    assert!(has_marker(&store, &id, &source("e2")).await);
    assert_eq!(marker_debt(&store, &id).await, None, "paid and cleared");
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!(account.balance_usd, usd("97"));
}

#[tokio::test]
async fn a_throttled_read_past_the_sdk_retries_is_throttled() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "throttled-read", None).await;
    wire.clear();
    wire.script(|call| match call.operation {
        "GetItem" => Action::Reply(400, error_body("ThrottlingException", "Rate exceeded")),
        _ => Action::Forward,
    });
    let posted = store.post(&id, vec![credit("pay", "10")], at(1)).await;
    assert!(matches!(posted, Err(StoreError::Throttled)), "got {posted:?}");
    assert_eq!(wire.of("GetItem").len(), SDK_ATTEMPTS as usize, "the SDK retried first");
    let read = store.account(&id).await;
    assert!(matches!(read, Err(StoreError::Throttled)), "got {read:?}");

    wire.script(|_| Action::Forward);
    assert_eq!(store.account(&id).await.unwrap().unwrap().last_seq, 0, "nothing applied");
}

#[tokio::test]
async fn a_throttled_duplicate_lookup_is_throttled_and_applies_nothing() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "throttled-lookup", None).await;
    wire.clear();
    wire.script(|call| match call.operation {
        "BatchGetItem" => Action::Reply(
            400,
            error_body("ProvisionedThroughputExceededException", "Throughput exceeds the limit"),
        ),
        _ => Action::Forward,
    });
    let posted = store.post(&id, vec![credit("pay", "10")], at(1)).await;
    assert!(matches!(posted, Err(StoreError::Throttled)), "got {posted:?}");
    assert_eq!(wire.of("BatchGetItem").len(), SDK_ATTEMPTS as usize);
    assert!(wire.of("TransactWriteItems").is_empty());
}

#[tokio::test]
async fn transactions_throttled_past_every_retry_are_throttled_and_apply_nothing() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "throttled-commit", None).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();

    // Cancelled with a throttling reason on one item: the store's own retries, no SDK retry.
    wire.clear();
    wire.script(|call| match call.operation {
        "TransactWriteItems" => {
            Action::Reply(400, cancelled(call.request, &["None", "ThrottlingError"]))
        }
        _ => Action::Forward,
    });
    let posted = store.post(&id, vec![usage("e1", "1")], at(2)).await;
    assert!(matches!(posted, Err(StoreError::Throttled)), "got {posted:?}");
    assert_eq!(wire.of("TransactWriteItems").len(), THROTTLED_TRANSACTIONS);

    // Refused outright as throttled: the SDK retries each of the store's attempts.
    wire.clear();
    wire.script(|call| match call.operation {
        "TransactWriteItems" => Action::Reply(400, error_body("ThrottlingException", "Slow down")),
        _ => Action::Forward,
    });
    let posted = store.post(&id, vec![usage("e1", "1")], at(3)).await;
    assert!(matches!(posted, Err(StoreError::Throttled)), "got {posted:?}");
    assert_eq!(wire.of("TransactWriteItems").len(), THROTTLED_TRANSACTIONS * SDK_ATTEMPTS as usize);

    wire.script(|_| Action::Forward);
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!((account.last_seq, account.balance_usd), (1, usd("100")), "nothing applied");
    assert!(!has_marker(&store, &id, &source("e1")).await);
}

#[tokio::test]
async fn a_transaction_throttled_a_few_times_then_commits_once() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "throttled-then-ok", None).await;
    wire.clear();
    wire.script(|call| match (call.operation, call.nth) {
        ("TransactWriteItems", 0..=2) => {
            Action::Reply(400, cancelled(call.request, &["ThrottlingError"]))
        }
        _ => Action::Forward,
    });
    let outcome = store.post(&id, vec![credit("pay", "10")], at(1)).await.unwrap();
    assert_eq!(applied_seqs(&outcome.results), vec![1]);
    let commits = wire.of("TransactWriteItems");
    assert_eq!(commits.len(), 4);
    assert_eq!(commits.iter().filter(|c| c.forwarded).count(), 1);
    assert_eq!(conformance::assert_consistent(&store, &id).await.balance_usd, usd("10"));
}

fn in_progress() -> serde_json::Value {
    error_body("TransactionInProgressException", "Transaction is in progress")
}

fn tokens(commits: &[crate::wire::Exchange]) -> Vec<String> {
    commits.iter().map(|c| c.request["ClientRequestToken"].as_str().unwrap().to_string()).collect()
}

/// The SDK counts `TransactionInProgressException` as throttling and resends the same request
/// (same client request token, which is how DynamoDB finishes the transaction in flight); past
/// the SDK's attempts, the store starts over from a fresh read with a new token.
#[tokio::test]
async fn a_transaction_in_progress_is_resent_with_its_token_then_rebuilt_from_a_fresh_read() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "in-progress", None).await;
    wire.clear();
    wire.script(|call| match (call.operation, call.nth) {
        ("TransactWriteItems", n) if n < SDK_ATTEMPTS as usize => Action::Reply(400, in_progress()),
        _ => Action::Forward,
    });
    let outcome = store.post(&id, vec![credit("pay", "10")], at(1)).await.unwrap();
    assert_eq!(applied_seqs(&outcome.results), vec![1]);
    let commits = wire.of("TransactWriteItems");
    assert_eq!(commits.len(), SDK_ATTEMPTS as usize + 1);
    let tokens = tokens(&commits);
    assert!(tokens[..3].iter().all(|t| t == &tokens[0]), "the SDK resends the same transaction");
    assert_ne!(tokens[3], tokens[0], "the store's retry is a new transaction");
    assert_eq!(wire.of("GetItem").len(), 2, "built from a fresh read of the account");
    assert_eq!(conformance::assert_consistent(&store, &id).await.balance_usd, usd("10"));
}

#[tokio::test]
async fn a_commit_answered_as_in_progress_is_never_applied_twice() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "in-progress-committed", None).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();

    // DynamoDB Local commits; the caller is told the transaction is still in progress. The
    // SDK's resend carries the same token, and DynamoDB answers it without applying it again.
    wire.clear();
    wire.script(|call| match (call.operation, call.nth) {
        ("TransactWriteItems", 0) => Action::Rewrite(Box::new(|_, _| (400, in_progress()))),
        _ => Action::Forward,
    });
    let batch = vec![usage("e1", "1"), usage("e2", "2")];
    let outcome = store.post(&id, batch.clone(), at(2)).await.unwrap();
    assert_eq!(applied_seqs(&outcome.results), vec![2, 3]);
    let commits = wire.of("TransactWriteItems");
    assert_eq!(commits.len(), 2);
    assert!(commits.iter().all(|c| c.forwarded));
    let tokens = tokens(&commits);
    assert_eq!(tokens[0], tokens[1]);
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!((account.last_seq, account.balance_usd), (3, usd("97")));

    // Every one of the SDK's attempts commits or finds the commit, and every answer says "in
    // progress": the store starts over, finds the batch through its marker debt, and says so.
    wire.clear();
    wire.script(|call| match (call.operation, call.nth) {
        ("TransactWriteItems", n) if n < SDK_ATTEMPTS as usize => {
            Action::Rewrite(Box::new(|_, _| (400, in_progress())))
        }
        _ => Action::Forward,
    });
    let batch = vec![usage("f1", "1"), usage("f2", "2")];
    let outcome = store.post(&id, batch.clone(), at(3)).await.unwrap();
    assert_eq!(duplicate_seqs(&outcome.results), vec![4, 5], "the first commit is found");
    assert_eq!(wire.of("TransactWriteItems").len(), SDK_ATTEMPTS as usize, "nothing rewritten");
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!((account.last_seq, account.balance_usd), (5, usd("94")));
    let again = store.post(&id, batch, at(4)).await.unwrap();
    assert_eq!(duplicate_seqs(&again.results), vec![4, 5]);
}

#[tokio::test]
async fn transaction_conflicts_are_retried_and_apply_once() {
    let (store, wire) = wired_store(true).await;
    let id = open(&store, "tx-conflict", None).await;
    wire.clear();
    wire.script(|call| match (call.operation, call.nth) {
        ("TransactWriteItems", 0 | 1) => {
            Action::Reply(400, cancelled(call.request, &["None", "TransactionConflict"]))
        }
        _ => Action::Forward,
    });
    let outcome =
        store.post(&id, vec![credit("pay", "10"), credit("pay-2", "5")], at(1)).await.unwrap();
    assert_eq!(applied_seqs(&outcome.results), vec![1, 2]);
    assert_eq!(wire.of("TransactWriteItems").len(), 3);
    assert_eq!(conformance::assert_consistent(&store, &id).await.balance_usd, usd("15"));
}

#[tokio::test]
async fn transaction_conflicts_that_never_clear_surface_as_contention() {
    let (store, wire) = wired_store(false).await;
    let id = open(&store, "tx-conflict-forever", None).await;
    wire.clear();
    wire.script(|call| match call.operation {
        "TransactWriteItems" => {
            Action::Reply(400, cancelled(call.request, &["TransactionConflict"]))
        }
        _ => Action::Forward,
    });
    let posted = store.post(&id, vec![credit("pay", "10")], at(1)).await;
    match posted {
        Err(StoreError::Contention(account)) => assert_eq!(account, id),
        other => panic!("expected contention, got {other:?}"),
    }
    assert_eq!(
        wire.of("TransactWriteItems").len(),
        ledger::store::MAX_CONFLICT_RETRIES as usize,
        "bounded by the conflict retries"
    );
    wire.script(|_| Action::Forward);
    assert_eq!(store.account(&id).await.unwrap().unwrap().last_seq, 0);
    let later = store.post(&id, vec![credit("pay", "10")], at(2)).await.unwrap();
    assert!(matches!(later.results[..], [PostingResult::Applied { seq: 1, .. }]));
}
