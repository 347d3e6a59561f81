//! Holds (issue 13) on DynamoDB Local: what an authorization and its settlement cost in write
//! and read units, and how many authorizations one hot account sustains.

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use ledger::{AccountId, LedgerStore, StoreError, TermsAcceptance};
use rating::{Direction, RateCards};
use store_dynamodb::capacity::{CapacityMeter, MeterState};
use store_dynamodb::{client_for_endpoint, create_table, keys, DynamoStore};
use usage::authorize::Action;
use usage::events::UsageEvent;
use usage::holds::{self, HoldError};
use usage::source::RatedEvents;

use crate::{open_account, percentile, Args};

fn call() -> Action {
    Action::Call { direction: Direction::Outbound, to: "+15551230000".into() }
}

fn report(event: &str, account: &AccountId, authorization: Option<&str>) -> UsageEvent {
    let mut body = serde_json::json!({
        "version": 1, "event_id": event, "account_id": account.as_str(),
        "occurred_at": Utc::now().to_rfc3339(), "type": "call",
        "data": {"direction": "outbound", "from": "+15550000001", "to": "+15551230000",
                 "answered": true, "duration_seconds": 95},
    });
    if let Some(id) = authorization {
        body["authorization_id"] = serde_json::json!(id);
    }
    UsageEvent::parse(&body.to_string()).expect("a valid call event")
}

async fn funded(store: &dyn LedgerStore, name: &str) -> AccountId {
    let id = open_account(store, name).await;
    store
        .modify_account(
            &id,
            Arc::new(|account| {
                account.terms = Some(TermsAcceptance {
                    version: "2026-01".into(),
                    accepted_by: "bench@example.com".into(),
                    accepted_at: Utc::now(),
                });
                Ok(())
            }),
            Utc::now(),
        )
        .await
        .expect("accept terms");
    let credit = ledger::Posting::credit(
        ledger::SourceId::parse("pay:bench").expect("id"),
        ledger::BillingItem::FundsAdded,
        ledger::Amount::new(rust_decimal::Decimal::from(1_000_000)).expect("amount"),
        Utc::now(),
    )
    .expect("credit");
    store.post(&id, vec![credit], Utc::now()).await.expect("fund");
    id
}

async fn place(store: &dyn LedgerStore, cards: &RateCards, id: &AccountId, hold: &str) -> bool {
    for attempt in 0..100u64 {
        match holds::place(store, cards, id, hold, &call(), Utc::now(), 14_400).await {
            Ok(answer) => return answer.decision.allowed,
            Err(HoldError::Store(StoreError::Contention(_) | StoreError::Throttled)) => {
                tokio::time::sleep(std::time::Duration::from_millis(2 + attempt * 2)).await;
            }
            Err(other) => panic!("placing {hold}: {other}"),
        }
    }
    panic!("placing {hold}: contended 100 times");
}

async fn post_report(
    store: &dyn LedgerStore,
    cards: &RateCards,
    id: &AccountId,
    event: UsageEvent,
) {
    let card = cards.card(None).expect("standard card");
    for attempt in 0..100u64 {
        let source = Arc::new(RatedEvents { card: card.clone(), events: vec![event.clone()] });
        match store.post_with(id, source, Utc::now()).await {
            Ok(_) => return,
            Err(StoreError::Contention(_) | StoreError::Throttled) => {
                tokio::time::sleep(std::time::Duration::from_millis(2 + attempt * 2)).await;
            }
            Err(other) => panic!("reporting: {other}"),
        }
    }
    panic!("reporting: contended 100 times");
}

fn units(state: &MeterState, n: f64) -> (f64, f64) {
    (state.write_units as f64 / n, state.read_units as f64 / n)
}

pub async fn suite(endpoint: &str, args: &Args) {
    let cards = RateCards::standard_only();
    let n = args.hold_authorizations;
    println!("### Holds on DynamoDB Local ({n} authorizations per row, one call report each)\n");
    println!("Units per authorization, one at a time on one account, with other calls' holds already active on it (each adds about 200 bytes to the account item):\n");
    println!("| other active holds | place: WCU | place: RCU | report settling its hold: WCU | the same report without a hold: WCU | create + settle, over a report alone: WCU | p50 ms place | account item after (bytes) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let client = client_for_endpoint(Some(endpoint)).await;
    for background in [0usize, 20] {
        let table = format!("bench-holds-{}-{background}", std::process::id());
        create_table(&client, &table).await.expect("create table");
        let meter = Arc::new(CapacityMeter::default());
        let store = DynamoStore::new(client.clone(), table.clone()).with_meter(meter.clone());
        let held = funded(&store, "held").await;
        let plain = funded(&store, "plain").await;
        for account in [&held, &plain] {
            for b in 0..background {
                assert!(place(&store, &cards, account, &format!("background-{b}")).await);
            }
        }
        // Warm up: a first page, a first minute item, connections.
        post_report(&store, &cards, &held, report("warm-held", &held, None)).await;
        post_report(&store, &cards, &plain, report("warm-plain", &plain, None)).await;
        let (mut placed, mut settled, mut alone) =
            (MeterState::default(), MeterState::default(), MeterState::default());
        let mut latencies = Vec::with_capacity(n);
        meter.take();
        for i in 0..n {
            let hold = format!("call-{i}");
            let began = Instant::now();
            assert!(place(&store, &cards, &held, &hold).await, "the bench account is rich");
            latencies.push(began.elapsed());
            add(&mut placed, meter.take());
            post_report(&store, &cards, &held, report(&format!("h{i}"), &held, Some(&hold))).await;
            add(&mut settled, meter.take());
            post_report(&store, &cards, &plain, report(&format!("p{i}"), &plain, None)).await;
            add(&mut alone, meter.take());
        }
        latencies.sort();
        let (place_w, place_r) = units(&placed, n as f64);
        let (settle_w, _) = units(&settled, n as f64);
        let (alone_w, _) = units(&alone, n as f64);
        let item = client
            .get_item()
            .table_name(&table)
            .key("pk", AttributeValue::S(keys::account_pk(&held)))
            .key("sk", AttributeValue::S(keys::ACCOUNT_SK.into()))
            .send()
            .await
            .expect("read the account item")
            .item
            .expect("the account item");
        println!(
            "| {background} | {place_w:.2} | {place_r:.2} | {settle_w:.2} | {alone_w:.2} | {:.2} | {:.1} | {} |",
            place_w + settle_w - alone_w,
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            store_dynamodb::capacity::item_size_bytes(&item),
        );
    }
    println!();

    println!("One hot account, clients each placing a hold and reporting its call, over and over (authorizations/s counts places; every place is followed by its report):\n");
    println!("| clients | authorizations | authorizations/s (Local) | p50 ms place | p99 ms place | WCU per authorization + report |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &clients in &args.hold_clients {
        let table = format!("bench-holds-hot-{}-{clients}", std::process::id());
        create_table(&client, &table).await.expect("create table");
        let meter = Arc::new(CapacityMeter::default());
        let store: Arc<dyn LedgerStore> =
            Arc::new(DynamoStore::new(client.clone(), table).with_meter(meter.clone()));
        let hot = funded(&*store, "hot").await;
        let per_client = (n / clients).max(1);
        meter.take();
        let started = Instant::now();
        let runs = (0..clients).map(|c| {
            let (store, cards, hot) = (store.clone(), cards.clone(), hot.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let hold = format!("c{c}-{i}");
                    let began = Instant::now();
                    assert!(place(&*store, &cards, &hot, &hold).await);
                    latencies.push(began.elapsed());
                    let event = report(&format!("r{c}-{i}"), &hot, Some(&hold));
                    post_report(&*store, &cards, &hot, event).await;
                }
                latencies
            })
        });
        let mut latencies = Vec::new();
        for run in futures::future::join_all(runs).await {
            latencies.extend(run.expect("client"));
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let total = (clients * per_client) as f64;
        let state = meter.take();
        println!(
            "| {clients} | {total} | {:.0} | {:.1} | {:.1} | {:.2} |",
            total / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            state.write_units as f64 / total,
        );
    }
    println!();
}

fn add(total: &mut MeterState, more: MeterState) {
    total.write_units += more.write_units;
    total.read_units += more.read_units;
}
