//! The embedded store keeps its promises across restarts and `kill -9`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ledger::store::all_entries;
use ledger::{
    verify_chain, AccountId, Amount, BillingItem, EntryQuery, LedgerStore, NewAccount, Posting,
    PostingResult, SourceId,
};
use store_sqlite::{Durability, SqliteStore};

const BATCH: usize = 50;

#[tokio::test]
async fn a_reopened_store_has_every_committed_posting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let id = AccountId::parse("restart").unwrap();
    {
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        store
            .create_account(
                NewAccount { id: id.clone(), credit_limit_usd: None },
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let credit = Posting::credit(
            SourceId::parse("pay-1").unwrap(),
            BillingItem::FundsAdded,
            Amount::from_str("25.5").unwrap(),
            chrono::Utc::now(),
        )
        .unwrap();
        store.post(&id, vec![credit], chrono::Utc::now()).await.unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    let account = store.account(&id).await.unwrap().expect("account survived");
    assert_eq!(account.balance_usd, rust_decimal::Decimal::from_str("25.5").unwrap());
    let entries = all_entries(&store, &id, EntryQuery::default()).await.unwrap();
    assert_eq!(entries.len(), 1);
    verify_chain(account.opening_balance_usd, &entries, account.balance_usd).unwrap();
}

/// Kill a posting process (SIGKILL) three times mid-stream: every batch is whole or absent, the
/// chain is unbroken, and redelivering every batch afterwards applies each id exactly once.
#[tokio::test]
async fn a_killed_process_leaves_nothing_half_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let id = AccountId::parse("crash").unwrap();
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-poster"))
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start crash-poster");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "crash-poster round {round} did not start");
        // Let it commit a few batches, then kill it wherever it is.
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = (round + 1) * 5 * BATCH as u64;
        loop {
            let seq = store.account(&id).await.unwrap().map_or(0, |a| a.last_seq);
            if seq >= target || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill().expect("kill -9");
        child.wait().unwrap();
    }

    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    let account = store.account(&id).await.unwrap().unwrap();
    assert!(account.last_seq >= 15 * BATCH as u64, "the poster made progress before each kill");
    let entries = all_entries(&store, &id, EntryQuery::default()).await.unwrap();
    verify_chain(account.opening_balance_usd, &entries, account.balance_usd).unwrap();
    let mut per_batch: HashMap<String, usize> = HashMap::new();
    for entry in &entries {
        let batch = entry.source_id.as_str().split('-').next().unwrap().to_string();
        *per_batch.entry(batch).or_default() += 1;
    }
    assert!(per_batch.values().all(|&n| n == BATCH), "a batch was half applied: {per_batch:?}");

    // Redeliver every batch the poster may have attempted, plus one it never reached.
    let batches = per_batch.len() + 1;
    let mut applied = 0;
    for batch in 0..batches {
        let postings: Vec<Posting> = (0..BATCH)
            .map(|i| {
                Posting::usage(
                    SourceId::parse(format!("k{batch}-{i}")).unwrap(),
                    BillingItem::OutgoingSms,
                    Amount::from_str("0.0123").unwrap(),
                    chrono::Utc::now(),
                )
                .unwrap()
            })
            .collect();
        let outcome = store.post(&id, postings, chrono::Utc::now()).await.unwrap();
        applied +=
            outcome.results.iter().filter(|r| matches!(r, PostingResult::Applied { .. })).count();
    }
    assert_eq!(applied, BATCH, "only the never-delivered batch applies");
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.last_seq as usize, batches * BATCH);
    assert_eq!(
        account.balance_usd,
        -rust_decimal::Decimal::from_str("0.0123").unwrap()
            * rust_decimal::Decimal::from(batches * BATCH)
    );
}
