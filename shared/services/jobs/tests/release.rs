//! The daily number-release sweep (issue 13): a suspended account's numbers move towards
//! release one step at a time, each step's event raised once, and a top-up cancels it.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use jobs::release::{sweep, SweepOutcome};
use ledger::memory::MemoryStore;
use ledger::{
    AccountId, Amount, BillingItem, LedgerEventKind, LedgerStore, NewAccount, Posting,
    ReleaseStage, ServicePolicy, SourceId,
};
use rust_decimal_macros::dec;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap()
}

fn posting(id: &str, credit: bool, usd: rust_decimal::Decimal) -> Posting {
    let source = SourceId::parse(id).unwrap();
    let amount = Amount::new(usd).unwrap();
    if credit {
        Posting::credit(source, BillingItem::FundsAdded, amount, t0()).unwrap()
    } else {
        Posting::usage(source, BillingItem::PhoneCall, amount, t0()).unwrap()
    }
}

/// Funded with $5, then drained to the floor at `t0`: suspended since then, numbers due after
/// ten days.
async fn suspended(store: &MemoryStore, name: &str) -> AccountId {
    let id = AccountId::parse(name).unwrap();
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, t0())
        .await
        .unwrap();
    let policy = ServicePolicy { release_after_days: 10, ..ServicePolicy::default() };
    store
        .modify_account(
            &id,
            Arc::new(move |a| {
                a.service = Some(policy.clone());
                Ok(())
            }),
            t0(),
        )
        .await
        .unwrap();
    store.post(&id, vec![posting("pay:1", true, dec!(5))], t0()).await.unwrap();
    store.post(&id, vec![posting("use:1", false, dec!(5))], t0()).await.unwrap();
    id
}

fn release_events(store: &MemoryStore, events: &[ledger::LedgerEvent]) -> Vec<String> {
    let _ = store;
    events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                LedgerEventKind::NumbersReleaseWarning { .. }
                    | LedgerEventKind::NumbersReleaseDue { .. }
            )
        })
        .map(|e| e.id.clone())
        .collect()
}

#[tokio::test]
async fn the_release_moves_one_step_at_a_time_and_raises_each_event_once() {
    let store = MemoryStore::new();
    let id = suspended(&store, "acme").await;
    let release_at = t0() + Duration::days(10);
    assert_eq!(store.account(&id).await.unwrap().unwrap().release_at(), Some(release_at));

    let steps = [
        (t0() + Duration::days(2), SweepOutcome::NothingDue),
        (t0() + Duration::days(3), SweepOutcome::Advanced(ReleaseStage::WeekBefore)),
        (t0() + Duration::days(3) + Duration::hours(1), SweepOutcome::NothingDue),
        (t0() + Duration::days(9), SweepOutcome::Advanced(ReleaseStage::DayBefore)),
        (t0() + Duration::days(10), SweepOutcome::Advanced(ReleaseStage::Due)),
        (t0() + Duration::days(11), SweepOutcome::NothingDue),
    ];
    for (at, expected) in steps {
        assert_eq!(sweep(&store, &id, at).await.unwrap(), expected, "at {at}");
    }
    let events = store.pending_events(100).await.unwrap();
    let ids = release_events(&store, &events);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids[0].ends_with(":7d") && ids[1].ends_with(":1d"), "{ids:?}");
    let kinds: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            LedgerEventKind::NumbersReleaseWarning { days_left, release_at: r } => {
                Some((*days_left, *r))
            }
            LedgerEventKind::NumbersReleaseDue { release_at: r } => Some((0, *r)),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![(7, release_at), (1, release_at), (0, release_at)]);
}

#[tokio::test]
async fn a_top_up_before_the_release_cancels_it() {
    let store = MemoryStore::new();
    let id = suspended(&store, "acme").await;
    assert_eq!(
        sweep(&store, &id, t0() + Duration::days(4)).await.unwrap(),
        SweepOutcome::Advanced(ReleaseStage::WeekBefore)
    );
    store.post(&id, vec![posting("pay:2", true, dec!(20))], t0()).await.unwrap();
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!((account.release_stage, account.release_at()), (0, None), "cancelled");
    assert_eq!(
        sweep(&store, &id, t0() + Duration::days(30)).await.unwrap(),
        SweepOutcome::NothingDue
    );
    let events = store.pending_events(100).await.unwrap();
    assert_eq!(release_events(&store, &events).len(), 1, "only the notice sent before the top-up");
}

#[tokio::test]
async fn an_account_never_funded_has_no_numbers_to_release() {
    let store = MemoryStore::new();
    let id = AccountId::parse("new").unwrap();
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, t0())
        .await
        .unwrap();
    assert_eq!(
        sweep(&store, &id, t0() + Duration::days(400)).await.unwrap(),
        SweepOutcome::NothingDue
    );
}
