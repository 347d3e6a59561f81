//! Small batches ride on the account item: one conditional `PutItem` commits them, the next
//! poster flushes them (page, minute item, markers) before it looks anything up, readers find
//! them on the item meanwhile, and concurrency and crashes stay exactly-once.

use std::collections::HashMap;
use std::sync::Arc;

use conformance::{at, credit, open, source, usage, usd};
use ledger::{EntryQuery, LedgerStore, PostingResult, SourceId};
use store_dynamodb::keys::{page_pk, PAGE_SK};
use store_dynamodb::Fault;

use crate::{applied_seqs, duplicate_seqs, has_marker, inline_first, raw_item, wired_inline_store};

/// A `PutItem` of the account item (not a group marker).
fn is_account_put(exchange: &crate::wire::Exchange) -> bool {
    exchange.operation == "PutItem" && exchange.request["Item"]["sk"]["S"] == "A"
}

#[tokio::test]
async fn a_small_batch_commits_with_one_put_and_the_next_poster_flushes_it() {
    let (store, wire) = wired_inline_store(true).await;
    let id = open(&store, "inline", None).await;
    store.post(&id, vec![credit("pay", "100")], at(1)).await.unwrap();
    store.post(&id, vec![usage("warm", "0.01")], at(1)).await.unwrap();

    wire.clear();
    let batch = vec![usage("e1", "1"), usage("e2", "2")];
    let posted = store.post(&id, batch.clone(), at(2)).await.unwrap();
    assert_eq!(applied_seqs(&posted.results), vec![3, 4]);
    assert!(wire.of("TransactWriteItems").is_empty(), "no transaction");
    let puts: Vec<_> = wire.of("PutItem").into_iter().filter(is_account_put).collect();
    assert_eq!(puts.len(), 1, "one conditional put of the account item");
    assert!(puts[0].request["ConditionExpression"].as_str().unwrap().contains("version"));
    assert_eq!(inline_first(&store, &id).await, Some(3), "the batch rides on the account item");
    assert!(raw_item(&store, page_pk(&id, 3), PAGE_SK).await.is_none(), "no page yet");
    assert!(!has_marker(&store, &id, &source("e1")).await, "no marker yet");

    // Readers find it on the account item.
    let read =
        store.entries(&id, &EntryQuery { limit: 50, ..EntryQuery::default() }).await.unwrap();
    assert_eq!(read.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(read.entries[3].source_id, source("e2"));

    // A redelivery flushes it first, then finds both as duplicates.
    let again = store.post(&id, batch.clone(), at(3)).await.unwrap();
    assert_eq!(duplicate_seqs(&again.results), vec![3, 4]);
    assert!(raw_item(&store, page_pk(&id, 3), PAGE_SK).await.is_some(), "flushed to its page");
    assert!(has_marker(&store, &id, &source("e1")).await);
    assert!(has_marker(&store, &id, &source("e2")).await);
    assert_eq!(inline_first(&store, &id).await, None, "a batch of duplicates clears it");

    // The next batch rides inline in its turn; the chain still reads back whole.
    store.post(&id, vec![usage("e3", "3")], at(4)).await.unwrap();
    assert_eq!(inline_first(&store, &id).await, Some(5));
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!(account.balance_usd, usd("93.99"));
}

#[tokio::test]
async fn a_crash_after_an_inline_commit_never_applies_twice() {
    let (store, _wire) = wired_inline_store(false).await;
    let id = open(&store, "inline-crash", None).await;
    store.post(&id, vec![credit("pay", "10")], at(1)).await.unwrap();
    store.inject_fault_once(Fault::AfterCommitBeforeMarkers);
    let batch = vec![usage("e1", "1")];
    assert!(store.post(&id, batch.clone(), at(2)).await.is_err(), "the caller saw a failure");
    let redelivered = store.post(&id, batch, at(3)).await.unwrap();
    assert_eq!(redelivered.results, vec![PostingResult::Duplicate { seq: 2 }]);
    assert_eq!(conformance::assert_consistent(&store, &id).await.balance_usd, usd("9"));
}

#[tokio::test]
async fn a_charge_added_to_an_existing_event_gets_its_own_marker_and_the_group_marker_stays() {
    let (store, _wire) = wired_inline_store(false).await;
    let id = open(&store, "group-merge", None).await;
    store.post(&id, vec![credit("pay", "10")], at(1)).await.unwrap();
    store.post(&id, vec![usage("use:evt-1#call", "1")], at(2)).await.unwrap();
    // The event's second charge in a later batch (a rate card that grew a charge).
    store.post(&id, vec![usage("use:evt-1#recording", "0.5")], at(3)).await.unwrap();
    store.post(&id, vec![usage("other", "0.1")], at(4)).await.unwrap();
    assert!(has_marker(&store, &id, &source("use:evt-1#call")).await, "the first member stays");
    assert!(has_marker(&store, &id, &source("use:evt-1#recording")).await);
    let own = store_dynamodb::keys::marker_pk(&id, &source("use:evt-1#recording"));
    assert!(
        raw_item(&store, own, store_dynamodb::keys::MARKER_SK).await.is_some(),
        "the added charge has a marker of its own"
    );
    let group_pk = store_dynamodb::keys::group_marker_pk(&id, "use:evt-1");
    let group = raw_item(&store, group_pk, store_dynamodb::keys::GROUP_MARKER_SK).await.unwrap();
    let members = group["m"].as_s().unwrap();
    assert!(!members.contains("recording"), "the group marker is written once: {members}");
    let again = store
        .post(&id, vec![usage("use:evt-1#call", "1"), usage("use:evt-1#recording", "0.5")], at(5))
        .await
        .unwrap();
    assert_eq!(duplicate_seqs(&again.results), vec![2, 3]);
    assert_eq!(conformance::assert_consistent(&store, &id).await.balance_usd, usd("8.4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_small_batches_conflict_on_the_account_put_and_apply_each_source_id_once() {
    const TASKS: usize = 8;
    const ROUNDS: usize = 5;
    let (store, wire) = wired_inline_store(true).await;
    let store = Arc::new(store);
    let id = open(&*store, "inline-hot", None).await;
    store.post(&id, vec![credit("funds", "100")], at(1)).await.unwrap();
    wire.clear();
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (store, id, start) = (store.clone(), id.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            let mut results: Vec<(SourceId, PostingResult)> = Vec::new();
            for round in 0..ROUNDS {
                let postings = vec![
                    usage(&format!("own-{task}-{round}"), "0.01"),
                    usage(&format!("shared-{round}"), "0.5"),
                ];
                let outcome = store.post(&id, postings.clone(), at(10)).await.unwrap();
                results.extend(postings.into_iter().map(|p| p.source_id).zip(outcome.results));
            }
            results
        });
    }
    let mut applied: HashMap<SourceId, usize> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        for (source, result) in joined.expect("a poster panicked") {
            if matches!(result, PostingResult::Applied { .. }) {
                *applied.entry(source).or_default() += 1;
            }
        }
    }
    assert_eq!(applied.len(), TASKS * ROUNDS + ROUNDS, "every source id was applied");
    assert!(applied.values().all(|n| *n == 1), "a source id was applied twice");
    let puts: Vec<_> = wire.of("PutItem").into_iter().filter(is_account_put).collect();
    let conflicts =
        puts.iter().filter(|p| p.error_type() == Some("ConditionalCheckFailedException")).count();
    assert!(conflicts > 0, "the posters never collided: the test is not concurrent");
    let account = conformance::assert_consistent(&*store, &id).await;
    assert_eq!(account.balance_usd, usd("97.1"));
}
