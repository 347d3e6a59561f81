//! An outbox row the store cannot read is reported, not fatal: the relay skips it and goes on.

use std::str::FromStr;

use ledger::{AccountId, Amount, BillingItem, LedgerStore, NewAccount, Posting, SourceId};
use store_sqlite::{Durability, SqliteStore};

#[tokio::test]
async fn an_unreadable_outbox_row_is_reported_and_the_rows_around_it_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(&path, Durability::Normal).unwrap();
    // Each account's first credit reactivates it: three events, one per account.
    let start = chrono::Utc::now();
    for (index, name) in ["a", "b", "c"].into_iter().enumerate() {
        let id = AccountId::parse(name).unwrap();
        store
            .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, start)
            .await
            .unwrap();
        let credit = Posting::credit(
            SourceId::parse("pay-1").unwrap(),
            BillingItem::FundsAdded,
            Amount::from_str("5").unwrap(),
            start,
        )
        .unwrap();
        let at = start + chrono::Duration::seconds(index as i64);
        store.post(&id, vec![credit], at).await.unwrap();
    }
    let events = store.pending_events(10).await.unwrap();
    assert_eq!(events.len(), 3);

    // Damage b's event (as a newer version's event kind or a bad disk would).
    let raw = rusqlite::Connection::open(&path).unwrap();
    let damaged = raw
        .execute(
            "UPDATE outbox SET body = '{\"kind\": \"from_the_future\"}' WHERE id = ?1",
            [&events[1].id],
        )
        .unwrap();
    assert_eq!(damaged, 1);

    let page = store.outbox_page(None, 10).await.unwrap();
    assert_eq!(page.events, vec![events[0].clone(), events[2].clone()]);
    assert_eq!(page.unreadable.len(), 1);
    assert_eq!(page.unreadable[0].position, ledger::store::outbox_position(&events[1]));
    assert!(page.unreadable[0].reason.contains(&events[1].id), "{}", page.unreadable[0].reason);
    assert_eq!(page.next_after, None);

    // Paging one item at a time walks past it too.
    let first = store.outbox_page(None, 1).await.unwrap();
    assert_eq!(first.events, vec![events[0].clone()]);
    let second = store.outbox_page(first.next_after.as_deref(), 1).await.unwrap();
    assert!(second.events.is_empty());
    assert_eq!(second.unreadable.len(), 1);
    let third = store.outbox_page(second.next_after.as_deref(), 1).await.unwrap();
    assert_eq!(third.events, vec![events[2].clone()]);
    assert_eq!(third.next_after, None);
    // pending_events (the local runner's relay) skips it as well.
    assert_eq!(store.pending_events(10).await.unwrap(), vec![events[0].clone(), events[2].clone()]);
}
