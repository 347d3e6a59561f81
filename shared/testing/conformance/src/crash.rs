//! Shared by the kill -9 tests of every store: a poster that runs until it is killed, and the
//! checks run on what it left behind.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::Utc;
use rust_decimal::Decimal;

use ledger::{
    AccountId, Amount, BillingItem, LedgerStore, NewAccount, Posting, PostingResult, SourceId,
};

use crate::cases::{assert_consistent, snapshot};

/// The account the crash posters write to.
pub const CRASH_ACCOUNT: &str = "crash";
const AMOUNT_USD: &str = "0.0123";
const MAX_BATCHES: u64 = 100_000;

/// Batch `number` of the crash stream: `size` SMS debits with ids `k<number>-<i>`.
pub fn crash_batch(number: u64, size: usize) -> Vec<Posting> {
    (0..size)
        .map(|i| {
            let source = SourceId::parse(format!("k{number}-{i}")).expect("valid source");
            let amount = Amount::from_str(AMOUNT_USD).expect("valid amount");
            Posting::usage(source, BillingItem::OutgoingSms, amount, Utc::now())
                .expect("valid posting")
        })
        .collect()
}

/// Post numbered batches, resuming after the last whole one, until killed. Prints `ready` once
/// the account exists so the test knows the process is up.
pub async fn post_until_killed(store: &dyn LedgerStore, size: usize) {
    let id = AccountId::parse(CRASH_ACCOUNT).expect("valid id");
    if store.account(&id).await.expect("read account").is_none() {
        let new = NewAccount { id: id.clone(), credit_limit_usd: None };
        store.create_account(new, Utc::now()).await.expect("create account");
    }
    let start = store.account(&id).await.expect("read").expect("exists").last_seq / size as u64;
    println!("ready");
    for number in start..MAX_BATCHES {
        store.post(&id, crash_batch(number, size), Utc::now()).await.expect("post");
    }
}

/// After the kills: the chain is unbroken, every batch is whole or absent, and redelivering
/// every batch (plus one never delivered) applies only the new one.
pub async fn assert_whole_batches_and_exact_redelivery(store: &dyn LedgerStore, size: usize) {
    let id = AccountId::parse(CRASH_ACCOUNT).expect("valid id");
    assert_consistent(store, &id).await;
    let (_, entries) = snapshot(store, &id).await;
    let mut per_batch: HashMap<String, usize> = HashMap::new();
    for entry in &entries {
        let batch = entry.source_id.as_str().split('-').next().unwrap_or_default().to_string();
        *per_batch.entry(batch).or_default() += 1;
    }
    assert!(per_batch.values().all(|&n| n == size), "a batch was half applied: {per_batch:?}");

    let batches = per_batch.len() as u64 + 1;
    let mut applied = 0;
    for number in 0..batches {
        let outcome = store.post(&id, crash_batch(number, size), Utc::now()).await.expect("post");
        applied +=
            outcome.results.iter().filter(|r| matches!(r, PostingResult::Applied { .. })).count();
    }
    assert_eq!(applied, size, "only the never-delivered batch applies");
    let account = assert_consistent(store, &id).await;
    let total = batches as usize * size;
    assert_eq!(account.last_seq as usize, total);
    let each = Decimal::from_str(AMOUNT_USD).expect("valid");
    assert_eq!(account.balance_usd, -each * Decimal::from(total));
}
