//! Test support: posts numbered batches to a SQLite ledger until it is killed.
//! `crash-poster <db-path>`; used by the durability tests to kill a process mid-posting.

use std::str::FromStr;

use ledger::{AccountId, Amount, BillingItem, LedgerStore, NewAccount, Posting, SourceId};
use store_sqlite::{Durability, SqliteStore};

pub const BATCH: u64 = 50;
const MAX_BATCHES: u64 = 100_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path = std::env::args().nth(1).expect("usage: crash-poster <db-path>");
    let store = SqliteStore::open(&path, Durability::Full).expect("open ledger");
    let id = AccountId::parse("crash").expect("valid id");
    if store.account(&id).await.expect("read account").is_none() {
        let new = NewAccount { id: id.clone(), credit_limit_usd: None };
        store.create_account(new, chrono::Utc::now()).await.expect("create account");
    }
    let start = store.account(&id).await.expect("read").expect("exists").last_seq / BATCH;
    println!("ready");
    for batch in start..MAX_BATCHES {
        let postings = (0..BATCH)
            .map(|i| {
                let source = SourceId::parse(format!("k{batch}-{i}")).expect("valid source");
                let amount = Amount::from_str("0.0123").expect("valid amount");
                Posting::usage(source, BillingItem::OutgoingSms, amount, chrono::Utc::now())
                    .expect("valid posting")
            })
            .collect();
        store.post(&id, postings, chrono::Utc::now()).await.expect("post");
    }
}
