//! The embedded store keeps its promises across restarts. (Its `kill -9` test is in `tests/`,
//! beside the DynamoDB one, sharing the crash poster.)

use std::str::FromStr;

use ledger::store::all_entries;
use ledger::{
    verify_chain, AccountId, Amount, BillingItem, EntryQuery, LedgerStore, NewAccount, Posting,
    SourceId,
};
use store_sqlite::{Durability, SqliteStore};

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
