//! Many tasks on a multi-threaded runtime posting to one hot account at once, against DynamoDB
//! Local. Version conflicts are counted on the wire, from DynamoDB's own cancellation reasons.

use std::collections::HashMap;
use std::sync::Arc;

use conformance::{at, credit, open, usage, usd};
use ledger::{EntryQuery, LedgerStore, Posting, PostingResult, SourceId};
use rust_decimal::Decimal;

use crate::wired_store;

const TASKS: usize = 12;
const BATCHES_PER_TASK: usize = 5;
const OWN_PER_BATCH: usize = 3;
/// Source ids every task posts in its batch `b`: applied by exactly one of them.
const SHARED_PER_BATCH: usize = 2;

fn batch(task: usize, round: usize) -> Vec<Posting> {
    let own = (0..OWN_PER_BATCH).map(|p| usage(&format!("own-{task}-{round}-{p}"), "0.01"));
    let shared = (0..SHARED_PER_BATCH).map(|p| usage(&format!("shared-{round}-{p}"), "0.5"));
    own.chain(shared).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posters_on_one_account_conflict_and_apply_each_source_id_once() {
    let (store, wire) = wired_store(false).await;
    let store = Arc::new(store);
    let id = open(&*store, "hot", None).await;
    store.post(&id, vec![credit("funds", "100")], at(1)).await.unwrap();
    wire.clear();

    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (store, id, start) = (store.clone(), id.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            let mut results: Vec<(SourceId, PostingResult)> = Vec::new();
            for round in 0..BATCHES_PER_TASK {
                let postings = batch(task, round);
                let outcome = store
                    .post(&id, postings.clone(), at(10 + round as i64))
                    .await
                    .unwrap_or_else(|e| panic!("task {task} round {round}: {e:?}"));
                let sources = postings.into_iter().map(|p| p.source_id);
                results.extend(sources.zip(outcome.results));
            }
            results
        });
    }
    let mut applied: HashMap<SourceId, Vec<u64>> = HashMap::new();
    let mut duplicates: HashMap<SourceId, Vec<u64>> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        for (source, result) in joined.expect("a poster panicked") {
            match result {
                PostingResult::Applied { seq, .. } => applied.entry(source).or_default().push(seq),
                PostingResult::Duplicate { seq } => duplicates.entry(source).or_default().push(seq),
                other => panic!("{source}: neither applied nor a duplicate: {other:?}"),
            }
        }
    }

    let commits = wire.of("TransactWriteItems");
    let conflicts = commits.iter().filter(|c| c.is_version_conflict()).count();
    assert!(conflicts > 0, "the posters never collided: the test is not concurrent");
    let committed = commits.iter().filter(|c| c.status == 200).count();
    assert_eq!(committed + conflicts, commits.len(), "every other answer is a commit");

    let own_ids = TASKS * BATCHES_PER_TASK * OWN_PER_BATCH;
    let shared_ids = BATCHES_PER_TASK * SHARED_PER_BATCH;
    assert_eq!(applied.len(), own_ids + shared_ids, "every source id was applied");
    assert!(applied.values().all(|seqs| seqs.len() == 1), "a source id was applied twice");
    for (source, seqs) in &duplicates {
        let first = applied.get(source).unwrap_or_else(|| panic!("{source} never applied"));
        assert!(seqs.iter().all(|seq| seq == &first[0]), "{source}: duplicates name its entry");
    }
    let shared_duplicates: usize = duplicates.values().map(Vec::len).sum();
    assert_eq!(shared_duplicates, shared_ids * (TASKS - 1), "the other posters saw duplicates");

    // The ledger itself: each source id exactly once, an unbroken chain, the right balance.
    let account = conformance::assert_consistent(&*store, &id).await;
    let mut entries = Vec::new();
    let mut cursor = None;
    loop {
        let query = EntryQuery { limit: 500, cursor, ..EntryQuery::default() };
        let page = store.entries(&id, &query).await.unwrap();
        entries.extend(page.entries);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let mut by_source: HashMap<&SourceId, usize> = HashMap::new();
    for entry in &entries {
        *by_source.entry(&entry.source_id).or_default() += 1;
    }
    assert_eq!(entries.len(), 1 + own_ids + shared_ids);
    assert!(by_source.values().all(|n| *n == 1), "a source id has two entries");
    for (source, seqs) in &applied {
        assert_eq!(
            entries[seqs[0] as usize - 1].source_id,
            *source,
            "entry {} is {source}",
            seqs[0]
        );
    }
    let debits = usd("0.01") * Decimal::from(own_ids) + usd("0.5") * Decimal::from(shared_ids);
    assert_eq!(account.balance_usd, usd("100") - debits);
    assert_eq!(account.last_seq, entries.len() as u64);
    eprintln!("{} version conflicts over {} commits", conflicts, committed);
}
