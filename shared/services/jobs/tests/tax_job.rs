//! The tax job on the in-memory store: the hand-computed entry once, exemptions, the planner
//! and the queue worker's handling of redeliveries and bad messages.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use jobs::job::MemorySink;
use jobs::tax::{TaxJob, TaxOutcome};
use jobs::worker::Workers;
use jobs::Job;

use ledger::memory::MemoryStore;
use ledger::store::all_entries;
use ledger::{
    AccountId, Amount, BillingItem, EntryQuery, LedgerStore, Month, NewAccount, Posting, SourceId,
};
use messaging::queue::Message;
use rust_decimal_macros::dec;

fn m(text: &str) -> Month {
    text.parse().unwrap()
}

fn oct(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, day, hour, 0, 0).unwrap()
}

fn nov(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 0, 5, 0).unwrap()
}

fn usage(source: &str, item: BillingItem, amount: &str) -> Posting {
    Posting::usage(
        SourceId::parse(source).unwrap(),
        item,
        amount.parse::<Amount>().unwrap(),
        oct(1, 0),
    )
    .unwrap()
}

fn credit(source: &str, item: BillingItem, amount: &str) -> Posting {
    Posting::credit(
        SourceId::parse(source).unwrap(),
        item,
        amount.parse::<Amount>().unwrap(),
        oct(1, 0),
    )
    .unwrap()
}

async fn account(store: &MemoryStore, name: &str, profile: serde_json::Value) -> AccountId {
    let id = AccountId::parse(name).unwrap();
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, oct(1, 0))
        .await
        .unwrap();
    let profile: documents::profile::Profile = serde_json::from_value(profile).unwrap();
    documents::profile::store(store, &id, &profile).await.unwrap();
    id
}

fn address(country: &str, region: &str, city: &str) -> serde_json::Value {
    serde_json::json!({
        "service_address": {
            "line1": "1 Main St", "city": city, "region": region, "postal_code": "00000", "country": country
        }
    })
}

fn job(store: &Arc<MemoryStore>) -> TaxJob {
    TaxJob {
        ledger: store.clone(),
        docs: store.clone(),
        table: Arc::new(tax::TaxTable::bundled().unwrap()),
        taxability: Arc::new(tax::Taxability::bundled().unwrap()),
    }
}

/// October for a New York City account: $40 of funds, calls 12.3456 of which 2.50 included,
/// SMS 0.75, a number 1.15, a refund 1.00 (not taxable), a November call (not October's).
async fn known_month(store: &MemoryStore, id: &AccountId) {
    store.post(id, vec![credit("pay-1", BillingItem::FundsAdded, "40")], oct(1, 9)).await.unwrap();
    store
        .post(
            id,
            vec![
                usage("call-1", BillingItem::PhoneCall, "12.3456"),
                credit("call-1#included", BillingItem::IncludedMinutes, "2.5"),
                usage("sms-1", BillingItem::OutgoingSms, "0.75"),
            ],
            oct(12, 10),
        )
        .await
        .unwrap();
    store
        .post(id, vec![usage("num-1", BillingItem::PhoneNumber, "1.15")], oct(31, 23))
        .await
        .unwrap();
    store.post(id, vec![credit("refund-1", BillingItem::Refund, "1")], oct(31, 23)).await.unwrap();
    store
        .post(
            id,
            vec![usage("call-2", BillingItem::PhoneCall, "3")],
            nov(1) - chrono::Duration::minutes(1),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_known_month_is_taxed_to_the_hand_computed_cent_once_however_often_it_runs() {
    let store = Arc::new(MemoryStore::new());
    let id = account(&store, "nyc", address("US", "NY", "New York")).await;
    known_month(&store, &id).await;
    // Taxable: 12.3456 - 2.50 + 0.75 + 1.15 = 11.7456 (the refund and the funds are not taxed;
    // 23:59 on Oct 31 is still October). 11.7456 x 8.875% = 1.042422 -> $1.04.
    let tax = job(&store);
    let first = tax.run(&id, m("2026-10"), nov(1)).await.unwrap();
    assert_eq!(
        first,
        TaxOutcome::Posted {
            seq: 8,
            tax_usd: dec!(1.04),
            taxable_usd: dec!(11.7456),
            rate_percent: dec!(8.875),
            jurisdiction: "New York, NY (state and city)".into(),
        }
    );
    let balance = store.account(&id).await.unwrap().unwrap().balance_usd;
    for day in [1, 2, 15] {
        assert_eq!(
            tax.run(&id, m("2026-10"), nov(day)).await.unwrap(),
            TaxOutcome::AlreadyTaxed { seq: 8 }
        );
    }
    assert_eq!(store.account(&id).await.unwrap().unwrap().balance_usd, balance);
    let entries = all_entries(&*store, &id, EntryQuery::default()).await.unwrap();
    let taxes: Vec<_> = entries.iter().filter(|e| e.item == BillingItem::SalesTax).collect();
    assert_eq!(taxes.len(), 1, "one tax entry per account and month");
    assert_eq!(taxes[0].amount_usd.value(), dec!(1.04));
    assert_eq!(taxes[0].source_id.as_str(), "tax:2026-10");
    assert_eq!(taxes[0].details["taxable_usd"], "11.7456");
    assert_eq!(Month::of(taxes[0].occurred_at), m("2026-10"));
    // November's tax counts the November call only (and not October's tax).
    let december = Utc.with_ymd_and_hms(2026, 12, 1, 0, 5, 0).unwrap();
    match tax.run(&id, m("2026-11"), december).await.unwrap() {
        TaxOutcome::Posted { taxable_usd, tax_usd, .. } => {
            assert_eq!(taxable_usd, dec!(3));
            assert_eq!(tax_usd, dec!(0.27)); // 3 x 8.875% = 0.26625 -> 0.27
        }
        other => panic!("expected November's tax, got {other:?}"),
    }
}

#[tokio::test]
async fn exempt_unaddressed_unknown_places_and_idle_accounts_get_no_entry() {
    let store = Arc::new(MemoryStore::new());
    let mut exempt_profile = address("US", "NY", "New York");
    exempt_profile["tax_exempt"] = true.into();
    let exempt = account(&store, "exempt", exempt_profile).await;
    let nowhere = account(&store, "nowhere", serde_json::json!({})).await;
    let untaxed_place = account(&store, "oregon", address("US", "OR", "Portland")).await;
    let idle = account(&store, "idle", address("US", "CA", "Fresno")).await;
    let funds_only = account(&store, "funds", address("US", "CA", "Fresno")).await;
    for id in [&exempt, &nowhere, &untaxed_place] {
        known_month(&store, id).await;
    }
    store
        .post(&funds_only, vec![credit("pay", BillingItem::FundsAdded, "100")], oct(3, 0))
        .await
        .unwrap();
    let tax = job(&store);
    assert_eq!(tax.run(&exempt, m("2026-10"), nov(1)).await.unwrap(), TaxOutcome::Exempt);
    assert_eq!(
        tax.run(&nowhere, m("2026-10"), nov(1)).await.unwrap(),
        TaxOutcome::NoServiceAddress
    );
    assert_eq!(
        tax.run(&untaxed_place, m("2026-10"), nov(1)).await.unwrap(),
        TaxOutcome::NoJurisdiction { country: "US".into(), region: Some("OR".into()) }
    );
    assert_eq!(tax.run(&idle, m("2026-10"), nov(1)).await.unwrap(), TaxOutcome::NoTaxableUsage);
    assert_eq!(
        tax.run(&funds_only, m("2026-10"), nov(1)).await.unwrap(),
        TaxOutcome::NoTaxableUsage
    );
    for id in [&exempt, &nowhere, &untaxed_place, &idle, &funds_only] {
        let entries = all_entries(&*store, id, EntryQuery::default()).await.unwrap();
        assert!(entries.iter().all(|e| e.item != BillingItem::SalesTax), "{id} was taxed");
    }
}

#[tokio::test]
async fn a_month_that_is_not_over_or_not_a_month_is_refused_for_good() {
    let store = Arc::new(MemoryStore::new());
    let id = account(&store, "early", address("US", "CA", "Fresno")).await;
    known_month(&store, &id).await;
    let tax = job(&store);
    let early = tax.run(&id, m("2026-10"), oct(31, 23)).await.unwrap_err();
    assert!(early.is_permanent() && early.to_string().contains("not over"), "{early}");
    // A message whose month is not `YYYY-MM` is not a job: the worker drops it, never retries.
    let garbage = format!(r#"{{"job":"tax","account_id":"{id}","month":"2026-13"}}"#);
    let error = Job::parse(&garbage).unwrap_err();
    assert!(error.to_string().contains("is not a month"), "{error}");
    let workers = Workers { tax: Some(tax), statements: None };
    let failures = workers.process_batch(vec![Message { id: "m".into(), body: garbage }]).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(store.account(&id).await.unwrap().unwrap().last_seq, 7, "nothing posted");
}

#[tokio::test]
async fn the_planner_publishes_one_job_per_account_and_the_worker_taxes_each_once() {
    let store = Arc::new(MemoryStore::new());
    let mut ids = Vec::new();
    for n in 0..1_203 {
        let id = account(&store, &format!("acct-{n:05}"), address("US", "WA", "Seattle")).await;
        store
            .post(&id, vec![usage("call", BillingItem::PhoneCall, "10")], oct(5, 0))
            .await
            .unwrap();
        ids.push(id);
    }
    let sink = MemorySink::default();
    let mut progress = Vec::new();
    let report = jobs::plan::plan(
        &*store,
        &sink,
        |account_id| Some(Job::Tax { account_id, month: m("2026-10") }),
        |done| progress.push(done),
    )
    .await
    .unwrap();
    assert_eq!((report.accounts, report.published), (1_203, 1_203));
    assert_eq!(progress, vec![500, 1_000, 1_203]);
    let planned = sink.take();
    let planned_ids: std::collections::BTreeSet<_> =
        planned.iter().map(|j| j.account_id().clone()).collect();
    assert_eq!(planned_ids.len(), 1_203, "every account exactly once");

    // The worker, with every message delivered twice and one garbage message.
    let workers = Workers { tax: Some(job(&store)), statements: None };
    let mut messages: Vec<Message> = planned
        .iter()
        .chain(planned.iter())
        .enumerate()
        .map(|(n, job)| Message { id: format!("m{n}"), body: serde_json::to_string(job).unwrap() })
        .collect();
    messages.push(Message { id: "junk".into(), body: "{\"job\":\"nope\"}".into() });
    for chunk in messages.chunks(10) {
        let failures = workers.process_batch(chunk.to_vec()).await;
        assert!(failures.is_empty(), "{failures:?}");
    }
    for id in &ids {
        let account = store.account(id).await.unwrap().unwrap();
        // $10 of October calls in Washington from 2026-10-01: 6.75% -> $0.675 -> $0.68.
        assert_eq!(account.balance_usd, dec!(-10.68), "{id}");
        assert_eq!(account.last_seq, 2);
    }
}
