//! A batch whose entries are far over one page item's 256 KB: it commits as several page items
//! in one transaction, survives a crash between the commit and the markers, and reads back
//! page by page through cursors.

use conformance::{at, credit, open, source, usd};
use ledger::{BillingItem, EntryQuery, LedgerStore, Posting, StoreError};
use rust_decimal::Decimal;
use serde_json::json;
use store_dynamodb::items::{from_item, PageItem};
use store_dynamodb::keys::{page_pk, PAGE_SK};
use store_dynamodb::Fault;

use crate::{duplicate_seqs, has_marker, marker_debt, raw_item, wired_store};

/// The most postings one call takes (`MAX_POSTINGS_PER_CALL`).
const BATCH: usize = 1_000;
const PAGE_ITEM_JSON_BYTES: usize = 256 * 1024;
/// DynamoDB's item size limit.
const ITEM_LIMIT_BYTES: usize = 400 * 1024;
/// Entries per activity request: neither a divisor of the batch nor aligned with page items.
const LIMIT: u32 = 150;

fn big_batch() -> Vec<Posting> {
    (0..BATCH)
        .map(|i| {
            let amount = conformance::amount(&format!("0.{:04}", i % 97 + 1));
            Posting::usage(source(&format!("big-{i:04}")), BillingItem::PhoneCall, amount, at(0))
                .unwrap()
                // About 0.8 KB of entry JSON each: the batch is over 3 page items' worth.
                .with_details(json!({ "call": i, "note": "n".repeat(700) }))
                .unwrap()
        })
        .collect()
}

/// Every page item of the account from `first_seq` on, in order, read raw.
async fn page_items(
    store: &store_dynamodb::DynamoStore,
    id: &ledger::AccountId,
    first_seq: u64,
    last_seq: u64,
) -> Vec<PageItem> {
    let mut pages = Vec::new();
    let mut next = first_seq;
    while next <= last_seq {
        let item = raw_item(store, page_pk(id, next), PAGE_SK)
            .await
            .unwrap_or_else(|| panic!("no page item starts at {next}"));
        let page: PageItem = from_item(item).unwrap();
        assert_eq!(page.first, next);
        next = page.last + 1;
        pages.push(page);
    }
    pages
}

#[tokio::test]
async fn a_batch_over_a_page_item_commits_as_several_survives_a_crash_and_reads_back_by_cursor() {
    let (store, wire) = wired_store(false).await;
    let id = open(&store, "large-batch", None).await;
    store.post(&id, vec![credit("funds", "1000")], at(1)).await.unwrap();
    let batch = big_batch();
    let debits: Decimal = batch.iter().map(|p| p.amount_usd.value()).sum();
    let expected_balance = usd("1000") - debits;

    // The process dies after the transaction committed, before any marker was written.
    store.inject_fault_once(Fault::AfterCommitBeforeMarkers);
    let crashed = store.post(&id, batch.clone(), at(2)).await;
    assert!(matches!(crashed, Err(StoreError::Unavailable(_))), "got {crashed:?}");
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!((account.last_seq, account.balance_usd), (1 + BATCH as u64, expected_balance));
    assert_eq!(marker_debt(&store, &id).await.as_deref(), Some("2"), "the batch owes markers");
    assert!(!has_marker(&store, &id, &source("big-0000")).await);
    assert!(!has_marker(&store, &id, &source("big-0999")).await);

    let pages = page_items(&store, &id, 2, account.last_seq).await;
    assert!(pages.len() >= 3, "the batch split into {} page items", pages.len());
    for (index, page) in pages.iter().enumerate() {
        let json = page.entries_json().unwrap().len();
        let stored = page.deflated.as_ref().map_or(page.entries.len(), Vec::len);
        assert!(stored < ITEM_LIMIT_BYTES, "page {} is too big", page.first);
        assert!(stored < json, "page {} is stored deflated", page.first);
        if index + 1 < pages.len() {
            assert!(json >= PAGE_ITEM_JSON_BYTES, "page {} is short", page.first);
        }
        assert_eq!(page.posted_at, pages[0].posted_at, "one batch, one posting time");
    }

    // The queue redelivers the whole batch: every posting is recognised, nothing changes.
    let redelivered = store.post(&id, batch.clone(), at(3)).await.unwrap();
    assert_eq!(duplicate_seqs(&redelivered.results), (2..=1 + BATCH as u64).collect::<Vec<_>>());
    assert_eq!(redelivered.account.balance_usd, expected_balance);
    assert_eq!(redelivered.account.last_seq, 1 + BATCH as u64);
    assert_eq!(marker_debt(&store, &id).await, None, "the redelivery paid the debt");
    assert!(has_marker(&store, &id, &source("big-0000")).await);
    assert!(has_marker(&store, &id, &source("big-0999")).await);

    // Once paid, the debt is gone: a second redelivery only looks the markers up.
    wire.clear();
    let again = store.post(&id, batch.clone(), at(4)).await.unwrap();
    assert_eq!(duplicate_seqs(&again.results), (2..=1 + BATCH as u64).collect::<Vec<_>>());
    assert!(wire.of("BatchWriteItem").is_empty(), "no marker was written again");
    assert!(wire.of("PutItem").is_empty(), "no item was put");
    assert_eq!(wire.of("BatchGetItem").len(), BATCH / 100, "1,000 keys, 100 a call");

    // Read back request by request, each continuing from the previous cursor.
    let mut read = Vec::new();
    let mut cursor = None;
    let mut requests = 0;
    loop {
        requests += 1;
        assert!(requests <= 20, "the cursors do not end");
        let query = EntryQuery { limit: LIMIT, cursor: cursor.clone(), ..EntryQuery::default() };
        let page = store.entries(&id, &query).await.unwrap();
        match &page.next_cursor {
            Some(next) => {
                assert_eq!(page.entries.len(), LIMIT as usize, "a page with a cursor is full");
                assert_ne!(Some(next), cursor.as_ref(), "the cursor moves on");
            }
            None => assert!(page.entries.len() <= LIMIT as usize),
        }
        read.extend(page.entries);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let total = 1 + BATCH;
    assert_eq!(requests, total.div_ceil(LIMIT as usize));
    assert_eq!(read.len(), total);
    assert_eq!(
        read.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total as u64).collect::<Vec<_>>()
    );
    for (entry, posting) in read[1..].iter().zip(&batch) {
        assert_eq!(entry.source_id, posting.source_id);
        assert_eq!(entry.amount_usd, posting.amount_usd);
        assert_eq!(entry.details, posting.details);
        assert_eq!(entry.posted_at, read[1].posted_at);
    }
    let opening = account.opening_balance_usd;
    ledger::verify_chain(opening, &read, expected_balance).expect("the chain read back verifies");
    conformance::assert_consistent(&store, &id).await;
}

#[tokio::test]
async fn a_refusal_after_a_crash_pays_the_debt_and_does_not_carry_it_on() {
    let (store, wire) = wired_store(false).await;
    let id = open(&store, "refusal-after-crash", None).await;
    store.post(&id, vec![credit("funds", "3")], at(1)).await.unwrap();
    store.inject_fault_once(Fault::AfterCommitBeforeMarkers);
    let batch = vec![conformance::usage("e1", "1"), conformance::usage("e2", "1")];
    assert!(store.post(&id, batch.clone(), at(2)).await.is_err());
    assert_eq!(marker_debt(&store, &id).await.as_deref(), Some("2"));

    // A purchase the balance cannot cover changes no balance: only the account's events.
    let refused = store.post(&id, vec![conformance::purchase("num-1", "5")], at(3)).await.unwrap();
    assert!(matches!(refused.results[..], [ledger::PostingResult::Refused(_)]), "{refused:?}");
    assert!(!refused.events.is_empty(), "the refusal raised an event");
    assert!(has_marker(&store, &id, &source("e1")).await, "the refusal paid the debt");
    assert_eq!(marker_debt(&store, &id).await, None, "and did not write it back");

    wire.clear();
    let again = store.post(&id, batch, at(4)).await.unwrap();
    assert_eq!(duplicate_seqs(&again.results), vec![2, 3]);
    assert!(wire.of("BatchWriteItem").is_empty(), "no debt left to pay");
    assert!(wire.of("PutItem").is_empty(), "no item was put");
    let account = conformance::assert_consistent(&store, &id).await;
    assert_eq!(account.balance_usd, usd("1"));
}
