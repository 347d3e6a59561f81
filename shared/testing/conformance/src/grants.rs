//! Credit grants on every store: the shares each entry records must survive the store's own
//! encoding (DynamoDB pages and inline batches, SQLite rows), and expiry must remove what is left
//! exactly once however many writers race past the expiry.

use std::sync::Arc;

use ledger::{
    Account, BillingItem, EntryKind, GrantCategory, GrantTerms, LedgerError, LedgerStore, Posting,
    PostingResult, StoreError,
};

use crate::cases::{amount, assert_consistent, at, credit, open, snapshot, source, usage, usd};

fn grant(id: &str, value: &str, expires: Option<i64>) -> Posting {
    let terms = GrantTerms {
        category: GrantCategory::Promotional,
        expires_at: expires.map(at),
        priority: 50,
    };
    Posting::grant(source(id), amount(value), terms, at(0)).unwrap()
}

/// Post, retrying contention as the workers do.
async fn post_retrying(
    store: &dyn LedgerStore,
    id: &ledger::AccountId,
    postings: Vec<Posting>,
    now: chrono::DateTime<chrono::Utc>,
) -> ledger::PostOutcome {
    for attempt in 0..50u64 {
        match store.post(id, postings.clone(), now).await {
            Ok(outcome) => return outcome,
            Err(StoreError::Contention(_) | StoreError::Throttled) => {
                tokio::time::sleep(std::time::Duration::from_millis(5 + attempt * 3)).await;
            }
            Err(other) => panic!("posting: {other}"),
        }
    }
    panic!("still contended after 50 tries");
}

pub async fn debits_draw_on_grants_first_and_expiry_removes_what_is_left_once(
    store: Arc<dyn LedgerStore>,
) {
    let id = open(&*store, "grants", None).await;
    post_retrying(
        &*store,
        &id,
        vec![credit("pay-1", "10"), grant("cg:promo", "5", Some(100))],
        at(1),
    )
    .await;
    // Twenty calls at once before the expiry: the grant pays for all of them.
    let calls = (0..20).map(|n| {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move {
            post_retrying(&*store, &id, vec![usage(&format!("call-{n}"), "0.10")], at(50)).await
        })
    });
    for call in futures::future::join_all(calls).await {
        call.expect("poster");
    }
    let account = assert_consistent(&*store, &id).await;
    assert_eq!(account.granted_usd(), usd("3"));
    assert_eq!(account.paid_usd(), usd("10"), "paid funds untouched while a grant lasts");
    // Past the expiry, writers race: some with a call, some with nothing to post.
    let racers = (0..12).map(|n| {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let postings =
                if n % 2 == 0 { vec![usage(&format!("late-{n}"), "0.25")] } else { Vec::new() };
            post_retrying(&*store, &id, postings, at(200)).await
        })
    });
    for racer in futures::future::join_all(racers).await {
        racer.expect("poster");
    }
    let (account, entries) = snapshot(&*store, &id).await;
    let removals: Vec<_> =
        entries.iter().filter(|e| e.source_id.as_str() == "gx:cg:promo").collect();
    assert_eq!(removals.len(), 1, "removed once");
    assert_eq!(removals[0].amount_usd.value(), usd("3"));
    assert_eq!((removals[0].kind, removals[0].item), (EntryKind::Debit, BillingItem::CreditGrant));
    assert!(account.grants.is_empty());
    assert_eq!(account.paid_usd(), usd("8.5"), "six late calls from paid funds, nothing expired");
    let drawn: Vec<_> =
        entries.iter().filter(|e| e.source_id.as_str().starts_with("call-")).collect();
    assert!(drawn.iter().all(|e| e.grants.len() == 1 && e.grants[0].amount_usd == usd("0.10")));
    assert_consistent(&*store, &id).await;
}

pub async fn a_grant_opens_once_and_a_void_removes_what_is_left_once(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "voided", None).await;
    let opens = (0..6).map(|_| {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move {
            post_retrying(&*store, &id, vec![grant("cg:goodwill", "7", None)], at(5)).await
        })
    });
    let mut applied = 0;
    for open in futures::future::join_all(opens).await {
        let outcome = open.expect("poster");
        applied += usize::from(matches!(outcome.results[0], PostingResult::Applied { .. }));
    }
    assert_eq!(applied, 1, "one grant, however often it is sent");
    post_retrying(&*store, &id, vec![usage("call-1", "2")], at(6)).await;
    // A settings change cannot touch what is left of a grant, nor push its expiry out.
    for change in [
        Arc::new(|a: &mut Account| {
            a.grants[0].remaining_usd += usd("1");
            Ok(())
        }) as ledger::AccountChange,
        Arc::new(|a: &mut Account| {
            a.grants.clear();
            Ok(())
        }),
    ] {
        let refused = store.modify_account(&id, change, at(7)).await;
        assert!(
            matches!(refused, Err(StoreError::Rejected(LedgerError::BalanceFieldsAreLedgerOnly))),
            "{refused:?}"
        );
    }
    // The void: the expiry brought forward, then concurrent writes remove what is left once.
    store
        .modify_account(
            &id,
            Arc::new(|a: &mut Account| {
                a.grants[0].expires_at = Some(at(8));
                Ok(())
            }),
            at(8),
        )
        .await
        .expect("void");
    let writers = (0..6).map(|_| {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move { post_retrying(&*store, &id, Vec::new(), at(9)).await })
    });
    for writer in futures::future::join_all(writers).await {
        writer.expect("poster");
    }
    let (account, entries) = snapshot(&*store, &id).await;
    let removals: Vec<_> = entries.iter().filter(|e| e.item == BillingItem::CreditGrant).collect();
    assert_eq!(removals.len(), 2, "the grant and its one removal");
    assert_eq!(removals[1].amount_usd.value(), usd("5"));
    assert_eq!(account.balance_usd, usd("0"));
    assert_eq!(account.paid_usd(), usd("0"));
    assert_consistent(&*store, &id).await;
}
