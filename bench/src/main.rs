//! Ledger benchmarks: DynamoDB write units per event, hot-partition ceiling and latency on
//! DynamoDB Local; events/s on the embedded SQLite store. Prints Markdown for BENCHMARKS.md.
//!
//! `scripts/bench.sh` starts DynamoDB Local and runs this in release mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use rust_decimal::Decimal;

use ledger::{
    AccountId, Amount, BillingItem, LedgerStore, NewAccount, Posting, PostingResult, SourceId,
};
use store_dynamodb::capacity::CapacityMeter;
use store_dynamodb::{client_for_endpoint, create_table, DynamoStore};
use store_sqlite::{Durability, SqliteStore};

/// DynamoDB's documented per-partition write limit.
const PARTITION_WRITE_UNITS_PER_SECOND: f64 = 1_000.0;

#[derive(Parser)]
struct Args {
    /// DynamoDB Local endpoint; without it only the embedded store is measured.
    #[arg(long, env = "RINGLEDGER_DYNAMODB_ENDPOINT")]
    endpoint: Option<String>,
    /// Events per batch size measured.
    #[arg(long, default_value_t = 2_000)]
    events: usize,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 10, 100])]
    batches: Vec<usize>,
    /// Where the embedded store's database file goes (use a real disk, not tmpfs).
    #[arg(long, default_value = "target/bench")]
    sqlite_dir: String,
}

/// A realistic completed call: UUID-sized event id, a few details.
fn call_event(round: usize, batch: usize, index: usize) -> Posting {
    let source = SourceId::parse(format!("{:08x}-4c1e-4b7a-{:04x}-{:012x}", batch, round, index))
        .expect("valid source id");
    let amount = Amount::new(Decimal::new(1_3000 + (index as i64 % 977), 4)).expect("valid");
    Posting::usage(source, BillingItem::PhoneCall, amount, Utc::now())
        .expect("valid posting")
        .with_details(serde_json::json!({
            "direction": "outbound", "to": "+14155550123", "seconds": 187, "rate": "0.0070"
        }))
        .expect("small details")
}

/// Which kind of item a partition key belongs to (see the store's key design).
fn key_kind(pk: &str) -> &'static str {
    match pk.matches('#').count() {
        1 => "account",
        _ if pk.contains("#P#") => "page",
        _ if pk.contains("#S#") => "marker",
        _ if pk.ends_with("#I") => "minute index",
        _ => "other",
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct Run {
    events: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn drive(
    store: &dyn LedgerStore,
    account: &AccountId,
    round: usize,
    batch: usize,
    events: usize,
) -> Run {
    let batches = events.div_ceil(batch);
    let mut latencies = Vec::with_capacity(batches);
    let started = Instant::now();
    for b in 0..batches {
        let postings: Vec<Posting> = (0..batch).map(|i| call_event(round, b, i)).collect();
        let began = Instant::now();
        let outcome = store.post(account, postings, Utc::now()).await.expect("post");
        latencies.push(began.elapsed());
        assert!(outcome.results.iter().all(|r| matches!(r, PostingResult::Applied { .. })));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Run { events: batches * batch, elapsed, latencies }
}

async fn open_account(store: &dyn LedgerStore, name: &str) -> AccountId {
    let id = AccountId::parse(name).expect("valid id");
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, Utc::now())
        .await
        .expect("create account");
    id
}

async fn dynamodb(endpoint: &str, args: &Args) {
    println!("### DynamoDB Local ({endpoint})\n");
    println!(
        "| batch | events | billed WCU/event | hottest key | WCU/event on hottest key | hot-account ceiling (events/s) | DynamoDB Local reported WCU/event | RCU/event | p50 ms/batch | p99 ms/batch | events/s (Local) |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let client = client_for_endpoint(Some(endpoint)).await;
    for &batch in &args.batches {
        let table = format!("bench-{}-{batch}", std::process::id());
        create_table(&client, &table).await.expect("create table");
        let meter = Arc::new(CapacityMeter::default());
        let store = DynamoStore::new(client.clone(), table).with_meter(meter.clone());
        let account = open_account(&store, "hot").await;
        // Warm up (connection, first page), then measure from a clean meter.
        drive(&store, &account, 0, batch, batch).await;
        meter.take();
        let run = drive(&store, &account, 1, batch, args.events).await;
        let state = meter.take();
        let events = run.events as f64;
        let (hottest_key, hottest) = state
            .write_units_by_key
            .iter()
            .max_by_key(|(_, units)| **units)
            .map(|(key, units)| (key_kind(key), *units as f64))
            .unwrap_or(("none", 0.0));
        let hot_per_event = hottest / events;
        println!(
            "| {batch} | {} | {:.3} | {hottest_key} | {:.4} | {:.0} | {:.3} | {:.3} | {:.2} | {:.2} | {:.0} |",
            run.events,
            state.write_units as f64 / events,
            hot_per_event,
            PARTITION_WRITE_UNITS_PER_SECOND / hot_per_event,
            state.reported_write_units / events,
            state.read_units as f64 / events,
            percentile(&run.latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&run.latencies, 0.99).as_secs_f64() * 1e3,
            events / run.elapsed.as_secs_f64(),
        );
    }
    println!();
}

async fn sqlite(args: &Args) {
    println!("### Embedded store (SQLite, WAL, synchronous=FULL, file in `{}`)\n", args.sqlite_dir);
    println!("| batch | events | events/s | p50 ms/batch | p99 ms/batch |");
    println!("|---:|---:|---:|---:|---:|");
    std::fs::create_dir_all(&args.sqlite_dir).expect("bench dir");
    for &batch in &args.batches {
        let dir = tempfile::tempdir_in(&args.sqlite_dir).expect("temp dir");
        let store = SqliteStore::open(dir.path().join("bench.db"), Durability::Full).expect("open");
        let account = open_account(&store, "hot").await;
        drive(&store, &account, 0, batch, batch).await;
        let run = drive(&store, &account, 1, batch, args.events).await;
        println!(
            "| {batch} | {} | {:.0} | {:.3} | {:.3} |",
            run.events,
            run.events as f64 / run.elapsed.as_secs_f64(),
            percentile(&run.latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&run.latencies, 0.99).as_secs_f64() * 1e3,
        );
    }
    println!();
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(endpoint) = &args.endpoint {
        dynamodb(endpoint, &args).await;
    }
    sqlite(&args).await;
}
