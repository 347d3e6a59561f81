//! Postpaid invoices (issue 17) on DynamoDB Local: what issuing one costs in write and read
//! units and requests, and how long issuing a month's invoices for many accounts takes when
//! several workers (the statements function's concurrency) issue them at once through the one
//! number counter.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use ledger::{AccountId, Amount, BillingItem, LedgerStore, Month, NewAccount, Posting, SourceId};
use rust_decimal::Decimal;
use store_dynamodb::capacity::CapacityMeter;
use store_dynamodb::{create_table, DynamoStore};

use crate::{counted_client, percentile, Args};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("a fixed time")
}

pub async fn suite(endpoint: &str, args: &Args) {
    let (client, requests) = counted_client(endpoint).await;
    let table = format!("bench-invoices-{}", std::process::id());
    create_table(&client, &table).await.expect("create table");
    let meter = Arc::new(CapacityMeter::default());
    let store = Arc::new(DynamoStore::new(client, table).with_meter(meter.clone()));
    let month: Month = "2026-10".parse().expect("a month");
    let accounts = args.invoice_accounts;

    // Each account: postpaid with a $500 limit and a billing contact, and October's usage: a
    // few calls and a surcharge, a plan fee, and a payment (six entries).
    let setup = Instant::now();
    stream::iter(0..accounts)
        .for_each_concurrent(32, |n| {
            let store = store.clone();
            async move {
                let id = AccountId::parse(format!("inv{n:05}")).expect("valid id");
                let limit = Some(Amount::new(Decimal::new(500, 0)).expect("valid"));
                store
                    .create_account(
                        NewAccount { id: id.clone(), credit_limit_usd: limit },
                        at("2026-10-01T00:00:00Z"),
                    )
                    .await
                    .expect("create");
                let mut profile = documents::profile::Profile {
                    billing_emails: vec![documents::profile::Email::try_from(format!(
                        "billing@{id}.example"
                    ))
                    .expect("an address")],
                    ..Default::default()
                };
                profile.billing_mode = documents::invoice::BillingMode::Postpaid;
                documents::profile::store(&*store, &id, &profile).await.expect("profile");
                let entries = [
                    ("use:c1#call", BillingItem::PhoneCall, "1.2345", "2026-10-03T10:00:00Z"),
                    (
                        "use:c1#surcharge",
                        BillingItem::CarrierSurcharge,
                        "0.0025",
                        "2026-10-03T10:00:00Z",
                    ),
                    ("use:c2#call", BillingItem::PhoneCall, "3.40", "2026-10-12T10:00:00Z"),
                    ("use:s1", BillingItem::OutgoingSms, "0.0079", "2026-10-20T10:00:00Z"),
                    ("plan:2026-10-15", BillingItem::PlanFee, "29", "2026-10-15T00:00:00Z"),
                ];
                for (source, item, value, when) in entries {
                    let posting = Posting::usage(
                        SourceId::parse(source).expect("source"),
                        item,
                        Amount::new(value.parse().expect("amount")).expect("amount"),
                        at(when),
                    )
                    .expect("posting");
                    store.post(&id, vec![posting], at(when)).await.expect("post");
                }
                let paid = Posting::credit(
                    SourceId::parse("pay:oct").expect("source"),
                    BillingItem::FundsAdded,
                    Amount::new(Decimal::new(20, 0)).expect("amount"),
                    at("2026-10-25T00:00:00Z"),
                )
                .expect("credit");
                store.post(&id, vec![paid], at("2026-10-25T00:00:00Z")).await.expect("post");
            }
        })
        .await;
    let setup = setup.elapsed();

    println!("### Issuing a month's invoices on DynamoDB Local ({accounts} postpaid accounts, six entries each)\n");
    println!(
        "Setup {:.0} s (accounts, profiles and October's entries; not measured).\n",
        setup.as_secs_f64()
    );
    println!("| concurrent issuers | invoices | seconds | invoices/s | billed WCU/invoice | RCU/invoice | DynamoDB requests/invoice | p50 ms/invoice | max ms/invoice |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let now = at("2026-11-01T00:05:00Z");
    let mut issued_so_far = 0;
    for &concurrency in &args.invoice_issuers {
        // Each row issues a fresh slice of the accounts (the counter carries on).
        let slice: Vec<usize> =
            (issued_so_far..accounts).take(accounts / args.invoice_issuers.len()).collect();
        issued_so_far += slice.len();
        meter.take();
        requests.take();
        let started = Instant::now();
        let mut durations: Vec<std::time::Duration> = stream::iter(slice.clone())
            .map(|n| {
                let store = store.clone();
                async move {
                    let id = AccountId::parse(format!("inv{n:05}")).expect("valid id");
                    let began = Instant::now();
                    let invoice = jobs::invoices::issue(&*store, &*store, &id, month, now)
                        .await
                        .expect("issue")
                        .expect("postpaid");
                    assert!(invoice.number.is_some());
                    assert_eq!(invoice.amount_due_usd, Decimal::new(1364, 2));
                    began.elapsed()
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let elapsed = started.elapsed();
        durations.sort();
        let state = meter.take();
        let total_requests: u64 = requests.take().values().sum();
        let n = slice.len() as f64;
        println!(
            "| {concurrency} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} |",
            slice.len(),
            elapsed.as_secs_f64(),
            n / elapsed.as_secs_f64(),
            state.write_units as f64 / n,
            state.read_units as f64 / n,
            total_requests as f64 / n,
            percentile(&durations, 0.5).as_secs_f64() * 1e3,
            durations.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
    }
    println!();
}
