//! Plan renewals (issue 15): each period charged once, in advance, whatever re-runs, overlaps
//! or crashes between the fee and the plan's move; changes and cancellations at the renewal.

use std::str::FromStr;

use chrono::{NaiveDate, Utc};
use documents::plan::{Plan, PlanPeriod, PlanTerms};
use documents::profile;
use jobs::plans::renew;
use ledger::memory::MemoryStore;
use ledger::{AccountId, Amount, BillingItem, EntryQuery, LedgerStore, NewAccount};

fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

fn terms(name: &str, price: &str, period: PlanPeriod) -> PlanTerms {
    PlanTerms { name: name.into(), price_usd: Amount::from_str(price).unwrap(), period }
}

async fn fees(store: &MemoryStore, id: &AccountId) -> Vec<(String, String)> {
    ledger::store::all_entries(store, id, EntryQuery::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.item == BillingItem::PlanFee)
        .map(|e| (e.source_id.to_string(), e.amount_usd.value().normalize().to_string()))
        .collect()
}

#[tokio::test]
async fn each_period_is_charged_once_and_changes_wait_for_the_renewal() {
    let store = MemoryStore::new();
    let id = AccountId::parse("acme").unwrap();
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, Utc::now())
        .await
        .unwrap();
    profile::update(&store, &id, |p| {
        p.plan = Some(Plan::starting(terms("Pro", "29", PlanPeriod::Monthly), day("2026-01-31")));
        Ok(())
    })
    .await
    .unwrap();
    // Three periods have started by 31 March: each charged once, however often the job runs.
    assert_eq!(renew(&store, &store, &id, day("2026-03-31")).await.unwrap(), 3);
    assert_eq!(renew(&store, &store, &id, day("2026-03-31")).await.unwrap(), 0);
    assert_eq!(
        fees(&store, &id).await,
        [
            ("plan:2026-01-31".to_string(), "29".to_string()),
            ("plan:2026-02-28".into(), "29".into()),
            ("plan:2026-03-31".into(), "29".into()),
        ]
    );
    // A crash after the fee posted, before the plan moved on: the re-run moves it, charging
    // nothing twice.
    let (profile, _) = profile::load(&store, &id).await.unwrap();
    let next = profile.plan.unwrap().next_renewal;
    assert_eq!(next, day("2026-04-30"));
    let fee = ledger::Posting::usage(
        ledger::SourceId::parse(documents::plan::fee_source_id(next)).unwrap(),
        BillingItem::PlanFee,
        Amount::from_str("29").unwrap(),
        Utc::now(),
    )
    .unwrap();
    store.post(&id, vec![fee], Utc::now()).await.unwrap();
    assert_eq!(renew(&store, &store, &id, day("2026-04-30")).await.unwrap(), 0);
    assert_eq!(fees(&store, &id).await.len(), 4);
    // A change mid-period: the next renewal charges the new terms; then a cancellation ends it.
    profile::update(&store, &id, |p| {
        p.plan.as_mut().unwrap().change = Some(terms("Team", "99", PlanPeriod::Annual));
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(renew(&store, &store, &id, day("2026-05-30")).await.unwrap(), 0, "not yet due");
    assert_eq!(renew(&store, &store, &id, day("2026-05-31")).await.unwrap(), 1);
    assert_eq!(
        fees(&store, &id).await.last().unwrap(),
        &("plan:2026-05-31".to_string(), "99".to_string())
    );
    let (profile, _) = profile::load(&store, &id).await.unwrap();
    let plan = profile.plan.unwrap();
    assert_eq!((plan.terms.name.as_str(), plan.next_renewal), ("Team", day("2027-05-31")));
    profile::update(&store, &id, |p| {
        p.plan.as_mut().unwrap().cancel_at_renewal = true;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(renew(&store, &store, &id, day("2028-01-01")).await.unwrap(), 0);
    assert!(profile::load(&store, &id).await.unwrap().0.plan.is_none(), "ended at the renewal");
    assert_eq!(fees(&store, &id).await.len(), 5);
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.balance_usd, rust_decimal::Decimal::from(-215), "29 x 4 + 99");
    assert_eq!(account.status, ledger::AccountStatus::Suspended, "a fee suspends like any debit");
}
