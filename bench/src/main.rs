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
    /// Which suites to run.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["ledger".to_string(), "rating".to_string(), "worker".to_string()])]
    suites: Vec<String>,
    /// Usage worker batch sizes (messages per worker call) on DynamoDB Local.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 100, 1000])]
    worker_batches: Vec<usize>,
    /// Directory holding the Lambda binaries for the startup suite (one `<name>` file each).
    #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/lambda")]
    startup_dir: String,
    /// Authorizations per row of the holds suite.
    #[arg(long, default_value_t = 200)]
    hold_authorizations: usize,
    /// Concurrent clients on one hot account in the holds suite.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 8, 32])]
    hold_clients: Vec<usize>,
    /// Postpaid accounts the invoices suite issues October's invoices for.
    #[arg(long, default_value_t = 10_000)]
    invoice_accounts: usize,
    /// Concurrent issuers per row of the invoices suite (the accounts are split between rows).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 8])]
    invoice_issuers: Vec<usize>,
    /// Accounts in the monthly tax suite.
    #[arg(long, default_value_t = 10_000)]
    tax_accounts: usize,
    /// Events rated in the rating suite.
    #[arg(long, default_value_t = 2_000_000)]
    rating_events: usize,
    /// Accounts in the embedded store's Zipf suite (`sqlite-zipf`).
    #[arg(long, default_value_t = 10_000)]
    sqlite_zipf_accounts: usize,
    /// Usage events delivered per poller count in the `sqlite-zipf` suite.
    #[arg(long, default_value_t = 50_000)]
    sqlite_zipf_events: usize,
    /// Concurrent pollers (usage Lambda instances) measured in the `sqlite-zipf` suite.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 4, 8])]
    sqlite_zipf_pollers: Vec<usize>,
    /// Sync every commit (`full`, what the local runner uses) or only at checkpoints (`normal`:
    /// the store's ceiling without the disk's fsync latency) in the `sqlite-zipf` suite.
    #[arg(long, default_value = "full")]
    sqlite_zipf_sync: String,
    /// Accounts in the Zipf suite (created and funded before it is measured).
    #[arg(long, default_value_t = 10_000)]
    zipf_accounts: usize,
    /// Events delivered in each mode of the Zipf suite (single-event messages, envelopes).
    #[arg(long, default_value_t = 20_000)]
    zipf_events: usize,
    /// The Zipf exponent of the accounts' volume.
    #[arg(long, default_value_t = 1.1)]
    zipf_s: f64,
    /// Messages per Lambda invocation (the template's usage `BatchSize`).
    #[arg(long, default_value_t = 100)]
    lambda_batch: usize,
    /// Events per batch envelope in the Zipf suite.
    #[arg(long, default_value_t = 100)]
    envelope_events: usize,
    /// Envelopes per Lambda invocation measured in the Zipf suite (100 is the template's
    /// `BatchSize`; fewer keep an invocation's work inside the function's timeout).
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 100])]
    envelope_lambda_batches: Vec<usize>,
    /// Events each configuration of the pollers suite posts to the hot account.
    #[arg(long, default_value_t = 4_000)]
    poller_events: usize,
    /// Concurrent pollers measured in the pollers suite.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 4])]
    pollers: Vec<usize>,
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
        _ if pk.contains("#S#") || pk.contains("#G#") => "marker",
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
        "| batch | events | billed WCU/event | hottest repeatedly written key | WCU/event on it | hot-account ceiling (events/s) | DynamoDB Local reported WCU/event | RCU/event | p50 ms/batch | p99 ms/batch | events/s (Local) |"
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
            .hottest_repeated_key()
            .map(|(key, units)| (key_kind(key), units as f64))
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

/// A realistic mix: 60% calls (some international, some with premium features), 30% SMS,
/// 10% ring-through attempts and number renewals.
fn usage_body(account: &str, round: usize, i: usize) -> String {
    let id = format!("{round:04x}-{i:08x}-5b1c-4f2a-8e7d-0c3a");
    let head = format!(
        r#""version": 1, "event_id": "{id}", "account_id": "{account}", "occurred_at": "2027-01-04T14:05:09Z""#
    );
    match i % 10 {
        0..=3 => format!(
            r#"{{{head}, "type": "call", "data": {{"direction": "outbound", "from": "+14155550100", "to": "+1415555{:04}", "answered": true, "duration_seconds": {}}}}}"#,
            i % 10_000,
            30 + i % 600
        ),
        4 => format!(
            r#"{{{head}, "type": "call", "data": {{"direction": "outbound", "from": "+14155550100", "to": "+447700900123", "answered": true, "duration_seconds": 125, "premium": ["call_recording"]}}}}"#
        ),
        5 => format!(
            r#"{{{head}, "type": "call", "data": {{"direction": "inbound", "from": "+12125550199", "to": "+18005550100", "answered": true, "duration_seconds": 61, "premium": ["transcription"]}}}}"#
        ),
        6..=8 => format!(
            r#"{{{head}, "type": "sms_out", "data": {{"from": "+14155550100", "to": "+14155550123", "segments": {}}}}}"#,
            1 + i % 3
        ),
        _ => format!(
            r#"{{{head}, "type": "call", "data": {{"direction": "outbound", "from": "+14155550100", "to": "+14155550177", "answered": false, "duration_seconds": 0, "ring_through_attempts": 2}}}}"#
        ),
    }
}

fn rating_suite(args: &Args) {
    use rating::{rate, RateCard};
    let card = RateCard::standard();
    let events: Vec<usage::events::UsageEvent> = (0..1_000)
        .map(|i| usage::events::UsageEvent::parse(&usage_body("acme", 0, i)).expect("valid event"))
        .collect();
    let usages: Vec<rating::Usage<'_>> = events.iter().map(|e| e.usage()).collect();
    // Warm up, then one thread (one core) for the whole run.
    let mut charges = 0usize;
    for usage in &usages {
        charges += rate(&card, usage, 0).expect("rates").charges.len();
    }
    let started = Instant::now();
    for i in 0..args.rating_events {
        let rated = rate(&card, &usages[i % usages.len()], 0).expect("rates");
        charges += rated.charges.len();
    }
    let elapsed = started.elapsed();
    let per_second = args.rating_events as f64 / elapsed.as_secs_f64();
    println!("### Rating alone (one thread, standard card, realistic mix)\n");
    println!("| events | seconds | events/s | ns/event | charges produced |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.3} | {:.0} | {:.0} | {} |\n",
        args.rating_events,
        elapsed.as_secs_f64(),
        per_second,
        1e9 / per_second,
        charges
    );
    // Parsing + rating + building postings, for scale.
    let bodies: Vec<String> = (0..100_000).map(|i| usage_body("acme", 1, i)).collect();
    let parse_started = Instant::now();
    let mut parsed_charges = 0usize;
    for body in &bodies {
        let event = usage::events::UsageEvent::parse(body).expect("valid");
        parsed_charges += rate(&card, &event.usage(), 0).expect("rates").charges.len();
    }
    let parse_elapsed = parse_started.elapsed();
    println!(
        "Parsing the JSON message and rating it: {:.0} events/s on one thread ({} events, {} charges).\n",
        bodies.len() as f64 / parse_elapsed.as_secs_f64(),
        bodies.len(),
        parsed_charges
    );
}

async fn worker_suite(endpoint: &str, args: &Args) {
    use usage::worker::{process_batch_received, Message, RateCards};
    // After the events' occurrence (and after the legacy-id date, so the lookups measured are
    // the steady state's), fixed so the bench does not age.
    let received_at = chrono::DateTime::parse_from_rfc3339("2027-01-04T18:00:00Z")
        .expect("a fixed receipt time")
        .to_utc();
    println!("### Usage worker on DynamoDB Local (one hot account, no sink)\n");
    println!("| worker batch | events | postings | billed WCU/event | RCU/event | hottest repeatedly written key | WCU/event on it | hot-account ceiling (events/s) | events/s (Local) | ms per batch |");
    println!("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    let client = client_for_endpoint(Some(endpoint)).await;
    let cards = RateCards::standard_only();
    for &batch in &args.worker_batches {
        let table = format!("bench-worker-{}-{batch}", std::process::id());
        create_table(&client, &table).await.expect("create table");
        let meter = Arc::new(CapacityMeter::default());
        let store: Arc<dyn LedgerStore> =
            Arc::new(DynamoStore::new(client.clone(), table).with_meter(meter.clone()));
        open_account(&*store, "acme").await;
        let rounds = (args.events / batch).max(2);
        let mut postings = 0;
        meter.take();
        let started = Instant::now();
        for round in 0..rounds {
            let messages: Vec<Message> = (0..batch)
                .map(|i| Message { id: format!("m{i}"), body: usage_body("acme", round + 1, i) })
                .collect();
            let report =
                process_batch_received(store.clone(), &cards, None, messages, received_at).await;
            assert!(report.failures.is_empty(), "{:?}", report.failures.first());
            postings += report.postings_applied;
        }
        let elapsed = started.elapsed();
        let state = meter.take();
        let events = (rounds * batch) as f64;
        let (hottest_key, hottest) = state
            .hottest_repeated_key()
            .map(|(key, units)| (key_kind(key), units as f64))
            .unwrap_or(("none", 0.0));
        println!(
            "| {batch} | {} | {postings} | {:.3} | {:.3} | {hottest_key} | {:.4} | {:.0} | {:.0} | {:.1} |",
            rounds * batch,
            state.write_units as f64 / events,
            state.read_units as f64 / events,
            hottest / events,
            PARTITION_WRITE_UNITS_PER_SECOND * events / hottest,
            events / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e3 / rounds as f64,
        );
    }
    println!();
}

/// The monthly tax run on DynamoDB Local: the planner walks the account registry and publishes
/// one job per account (to an in-memory sink here: SQS costs are per message, not per read);
/// the worker taxes each account from its month totals. Half the accounts posted after the
/// month ended (their October totals are a closed month record: one more read).
async fn tax_suite(endpoint: &str, args: &Args) {
    use chrono::TimeZone;
    use futures::stream::{self, StreamExt};
    use jobs::job::MemorySink;
    use jobs::tax::{TaxJob, TaxOutcome};
    use ledger::docs::{DocKind, DocStore};

    let n = args.tax_accounts;
    let client = client_for_endpoint(Some(endpoint)).await;
    let table = format!("bench-tax-{}", std::process::id());
    create_table(&client, &table).await.expect("create table");
    let meter = Arc::new(CapacityMeter::default());
    let store = Arc::new(DynamoStore::new(client, table).with_meter(meter.clone()));
    let october = Utc.with_ymd_and_hms(2026, 10, 15, 12, 0, 0).unwrap();
    let november = Utc.with_ymd_and_hms(2026, 11, 1, 0, 5, 0).unwrap();
    let setup = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let store = store.clone();
            async move {
                let id = AccountId::parse(format!("acct-{i:06}")).unwrap();
                store
                    .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, october)
                    .await
                    .expect("create");
                let profile = serde_json::json!({"service_address": {
                    "line1": "1 Pine St", "city": "Seattle", "region": "WA",
                    "postal_code": "98101", "country": "US"}});
                store
                    .put_doc(&id, DocKind::Profile, "profile", &profile.to_string(), None)
                    .await
                    .expect("profile");
                let usage = |name: &str, item, cents: i64| {
                    Posting::usage(
                        SourceId::parse(name).unwrap(),
                        item,
                        Amount::new(Decimal::new(cents + i as i64 % 100, 2)).unwrap(),
                        october,
                    )
                    .unwrap()
                };
                let postings = vec![
                    usage("call-1", BillingItem::PhoneCall, 1_234),
                    usage("sms-1", BillingItem::OutgoingSms, 75),
                    usage("num-1", BillingItem::PhoneNumber, 115),
                ];
                store.post(&id, postings, october).await.expect("post");
                if i % 2 == 0 {
                    let later = vec![usage("call-2", BillingItem::PhoneCall, 300)];
                    store.post(&id, later, november).await.expect("post");
                }
            }
        })
        .await;
    let setup = setup.elapsed();

    meter.take();
    let sink = MemorySink::default();
    let started = Instant::now();
    let report = jobs::plan::plan(
        &*store,
        &sink,
        |account_id| Some(jobs::Job::Tax { account_id, month: "2026-10".parse().unwrap() }),
        |_| {},
    )
    .await
    .expect("plan");
    let plan_time = started.elapsed();
    let plan_meter = meter.take();
    assert_eq!(report.published as usize, n);

    let job = TaxJob {
        ledger: store.clone(),
        docs: store.clone(),
        table: Arc::new(tax::TaxTable::bundled().unwrap()),
        taxability: Arc::new(tax::Taxability::bundled().unwrap()),
    };
    let planned = sink.take();
    let mut rows = Vec::new();
    for run in ["first run", "re-run"] {
        meter.take();
        let started = Instant::now();
        let results: Vec<(Duration, TaxOutcome)> = stream::iter(planned.iter())
            .map(|planned| {
                let job = job.clone();
                async move {
                    let jobs::Job::Tax { account_id, month } = planned else { unreachable!() };
                    let t = Instant::now();
                    let outcome = job.run(account_id, *month, november).await.expect("tax");
                    (t.elapsed(), outcome)
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let elapsed = started.elapsed();
        let state = meter.take();
        let mut latencies: Vec<Duration> = results.iter().map(|r| r.0).collect();
        latencies.sort();
        let posted = results.iter().filter(|r| matches!(r.1, TaxOutcome::Posted { .. })).count();
        let again =
            results.iter().filter(|r| matches!(r.1, TaxOutcome::AlreadyTaxed { .. })).count();
        rows.push(format!(
            "| worker, {run} | {n} | {posted} posted, {again} already taxed | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |",
            state.read_units as f64 / n as f64,
            state.write_units as f64 / n as f64,
            elapsed.as_secs_f64() * 1e3 / n as f64,
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        ));
    }
    println!(
        "### Monthly tax on DynamoDB Local ({n} accounts, setup {:.0} s)
",
        setup.as_secs_f64()
    );
    println!("| step | accounts | result | RCU/account | WCU/account | wall ms/account (32 at once) | p50 ms/account | p99 ms/account |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    println!(
        "| planner | {n} | {} jobs | {:.3} | {:.3} | {:.3} | | |",
        report.published,
        plan_meter.read_units as f64 / n as f64,
        plan_meter.write_units as f64 / n as f64,
        plan_time.as_secs_f64() * 1e3 / n as f64,
    );
    for row in rows {
        println!("{row}");
    }
    println!();
}

/// Start each Lambda binary against a stand-in Runtime API and time how long it takes to ask
/// for its first invocation (cold start to ready: config, SDK clients, TLS-free endpoints).
async fn startup_suite(args: &Args) {
    use std::sync::Mutex;
    const BINARIES: [&str; 13] = [
        "usage-debits",
        "usage-authorization",
        "payments",
        "settings",
        "activity",
        "auto-recharge",
        "notifications",
        "outbox-relay",
        "monthly-tax",
        "statements",
        "webhook",
        "processor-events",
        "web",
    ];
    const RUNS: usize = 10;
    let ready: Arc<Mutex<Option<tokio::sync::oneshot::Sender<Instant>>>> =
        Arc::new(Mutex::new(None));
    let signal = ready.clone();
    let app = axum::Router::new().route(
        "/2018-06-01/runtime/invocation/next",
        axum::routing::get(move || {
            let signal = signal.clone();
            async move {
                if let Some(tx) = signal.lock().unwrap().take() {
                    let _ = tx.send(Instant::now());
                }
                // Never answer: the function stays parked waiting for work.
                std::future::pending::<()>().await;
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "### Lambda start-up to ready (local, {RUNS} runs each, stand-in Runtime API, DynamoDB warm-up {})\n",
        if args.endpoint.is_some() { "against DynamoDB Local" } else { "without DynamoDB (fails fast)" }
    );
    println!("| function | binary size (MB) | p50 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for name in BINARIES {
        let path = std::path::Path::new(&args.startup_dir).join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            println!("| {name} | missing | | |");
            continue;
        };
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let (tx, rx) = tokio::sync::oneshot::channel();
            *ready.lock().unwrap() = Some(tx);
            let started = Instant::now();
            let mut child = tokio::process::Command::new(&path)
                .env("AWS_LAMBDA_RUNTIME_API", &api)
                .env("AWS_LAMBDA_FUNCTION_NAME", name)
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "bench")
                .env("AWS_SECRET_ACCESS_KEY", "bench")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("RINGLEDGER_TABLE", "ringledger")
                .env(
                    "RINGLEDGER_RECHARGE_QUEUE_URL",
                    "https://sqs.us-east-1.amazonaws.com/1/recharge",
                )
                .env(
                    "RINGLEDGER_NOTIFICATIONS_QUEUE_URL",
                    "https://sqs.us-east-1.amazonaws.com/1/notifications",
                )
                .env("RINGLEDGER_STRIPE_SECRET_KEY", "sk_test_bench")
                .env("RINGLEDGER_MAIL_FROM", "billing@example.com")
                .env("RINGLEDGER_STRIPE_WEBHOOK_SECRET", "whsec_bench")
                .env(
                    "RINGLEDGER_PROCESSOR_EVENTS_QUEUE_URL",
                    "https://sqs.us-east-1.amazonaws.com/1/processor-events",
                )
                .env("RINGLEDGER_TAX_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/tax")
                .env("RINGLEDGER_PORTAL_SECRET", "bench-portal-secret-0123456789abcdef")
                .env("RINGLEDGER_PORTAL_BASE_URL", "https://billing.example.com")
                .env(
                    "RINGLEDGER_STATEMENTS_QUEUE_URL",
                    "https://sqs.us-east-1.amazonaws.com/1/statements",
                )
                // The init-phase warm-up really reaches DynamoDB (Local) when there is one.
                .envs(args.endpoint.iter().map(|e| ("AWS_ENDPOINT_URL_DYNAMODB", e.as_str())))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start the function");
            match tokio::time::timeout(Duration::from_secs(10), rx).await {
                Ok(Ok(at)) => times.push(at - started),
                _ => println!("| {name} | did not become ready | | |"),
            }
            let _ = child.kill().await;
        }
        if times.is_empty() {
            continue;
        }
        times.sort();
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            meta.len() as f64 / 1e6,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
        );
    }
    println!();
}

mod holds;
mod invoices;
mod sqlite_zipf;
// ---------------------------------------------------------------------------------------------
// Realistic traffic (issue 18): Zipf-distributed accounts, deliveries as Lambda receives them
// ---------------------------------------------------------------------------------------------

/// On-demand list prices, us-east-1, as published on aws.amazon.com/dynamodb/pricing/on-demand,
/// /sqs/pricing and /lambda/pricing (read 2026-12-02; DynamoDB's since the 50% cut of
/// 2024-11-01). SQS bills every started 64 KiB of a request's payload as one request.
const DYNAMODB_USD_PER_MILLION_WRITE_UNITS: f64 = 0.625;
const DYNAMODB_USD_PER_MILLION_READ_UNITS: f64 = 0.125;
const SQS_USD_PER_MILLION_REQUESTS: f64 = 0.40;
const SQS_BILLING_CHUNK_BYTES: usize = 64 * 1024;
/// SQS batch calls (SendMessageBatch, ReceiveMessage, DeleteMessageBatch) take 10 messages.
const SQS_MESSAGES_PER_CALL: usize = 10;
const LAMBDA_ARM_USD_PER_GB_SECOND: f64 = 0.000_013_333_4;
const LAMBDA_USD_PER_MILLION_REQUESTS: f64 = 0.20;
/// The usage function's memory (infra/template.yaml).
const LAMBDA_MEMORY_GB: f64 = 0.25;

/// Counts what reaches DynamoDB, by operation, retries included (one per HTTP attempt).
#[derive(Debug, Default)]
struct RequestCounter {
    by_operation: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl RequestCounter {
    fn take(&self) -> std::collections::BTreeMap<String, u64> {
        std::mem::take(&mut *self.by_operation.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Debug, Clone)]
struct CountRequests(Arc<RequestCounter>);

impl aws_sdk_dynamodb::config::Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("unknown", |m| m.name())
            .to_string();
        *self
            .0
            .by_operation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(operation)
            .or_default() += 1;
        Ok(())
    }
}

/// A DynamoDB client that counts its requests.
async fn counted_client(endpoint: &str) -> (aws_sdk_dynamodb::Client, Arc<RequestCounter>) {
    let counter = Arc::new(RequestCounter::default());
    let base = client_for_endpoint(Some(endpoint)).await;
    let config = base.config().to_builder().interceptor(CountRequests(counter.clone())).build();
    (aws_sdk_dynamodb::Client::from_conf(config), counter)
}

/// Calls the worker makes on the ledger port: commits, contention, account reads.
#[derive(Debug, Default)]
struct PortCalls {
    posts: std::sync::atomic::AtomicU64,
    posts_ok: std::sync::atomic::AtomicU64,
    posts_contended: std::sync::atomic::AtomicU64,
    account_reads: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct PortCounts {
    posts: u64,
    posts_ok: u64,
    posts_contended: u64,
    account_reads: u64,
}

impl PortCalls {
    fn take(&self) -> PortCounts {
        use std::sync::atomic::Ordering::SeqCst;
        PortCounts {
            posts: self.posts.swap(0, SeqCst),
            posts_ok: self.posts_ok.swap(0, SeqCst),
            posts_contended: self.posts_contended.swap(0, SeqCst),
            account_reads: self.account_reads.swap(0, SeqCst),
        }
    }
}

/// The store, counting the port calls made on it.
struct CountingStore {
    inner: Arc<dyn LedgerStore>,
    calls: Arc<PortCalls>,
}

#[async_trait::async_trait]
impl LedgerStore for CountingStore {
    async fn create_account(
        &self,
        account: NewAccount,
        now: chrono::DateTime<Utc>,
    ) -> Result<ledger::Account, ledger::StoreError> {
        self.inner.create_account(account, now).await
    }
    async fn account(&self, id: &AccountId) -> Result<Option<ledger::Account>, ledger::StoreError> {
        self.calls.account_reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.account(id).await
    }
    async fn modify_account(
        &self,
        id: &AccountId,
        change: ledger::AccountChange,
        now: chrono::DateTime<Utc>,
    ) -> Result<ledger::Account, ledger::StoreError> {
        self.inner.modify_account(id, change, now).await
    }
    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn ledger::PostingSource>,
        now: chrono::DateTime<Utc>,
    ) -> Result<ledger::PostOutcome, ledger::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.posts.fetch_add(1, SeqCst);
        let result = self.inner.post_with(id, source, now).await;
        match &result {
            Ok(_) => self.calls.posts_ok.fetch_add(1, SeqCst),
            Err(ledger::StoreError::Contention(_)) => {
                self.calls.posts_contended.fetch_add(1, SeqCst)
            }
            Err(_) => 0,
        };
        result
    }
    async fn entries(
        &self,
        id: &AccountId,
        query: &ledger::EntryQuery,
    ) -> Result<ledger::EntryPage, ledger::StoreError> {
        self.inner.entries(id, query).await
    }
    async fn closed_month(
        &self,
        id: &AccountId,
        month: ledger::Month,
    ) -> Result<Option<ledger::MonthTotals>, ledger::StoreError> {
        self.inner.closed_month(id, month).await
    }
    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, ledger::StoreError> {
        self.inner.account_ids(after, limit).await
    }
    async fn outbox_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ledger::OutboxPage, ledger::StoreError> {
        self.inner.outbox_page(after, limit).await
    }
    async fn ack_event(&self, event: &ledger::LedgerEvent) -> Result<(), ledger::StoreError> {
        self.inner.ack_event(event).await
    }
}

/// `ContentionRetries` as the store and the worker count it (`messaging::metrics`, through
/// `tracing`): every commit retried because another writer changed the account first.
static CONTENTION_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct MetricCounter;

#[derive(Default)]
struct MetricFields {
    metric: String,
    value: u64,
}

impl tracing::field::Visit for MetricFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "metric" {
            self.metric = value.to_string();
        }
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "value" {
            self.value = value;
        }
    }
    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MetricCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != messaging::metrics::METRIC_TARGET {
            return;
        }
        let mut fields = MetricFields::default();
        event.record(&mut fields);
        if fields.metric == messaging::metrics::CONTENTION_RETRIES {
            CONTENTION_RETRIES.fetch_add(fields.value, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn count_metrics() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let subscriber = tracing_subscriber::registry()
        .with(MetricCounter.with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Ranks drawn with probability proportional to 1 / (rank + 1)^s (rank 0 the busiest account):
/// the Zipf suites on DynamoDB and on the embedded store draw the same way.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        cumulative.iter_mut().for_each(|c| *c /= total);
        Zipf { cumulative }
    }

    fn rank(&self, uniform: f64) -> usize {
        self.cumulative.partition_point(|&c| c < uniform).min(self.cumulative.len() - 1)
    }
}

/// SplitMix64: a fixed seed gives every run the same stream.
struct SplitMix(u64);

impl SplitMix {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn zipf_account(rank: usize) -> String {
    format!("z{rank:05}")
}

/// SQS requests billed for messages of `sizes` bytes: sent one by one or ten at a time, received
/// ten at a time by Lambda's pollers, deleted ten at a time (every started 64 KiB of a call's
/// payload is one request). Empty receives of idle pollers are a fixed cost, not per event.
struct SqsRequests {
    send_one_by_one: u64,
    send_in_tens: u64,
    receive: u64,
    delete: u64,
}

fn sqs_requests(sizes: &[usize]) -> SqsRequests {
    let chunks = |bytes: usize| bytes.div_ceil(SQS_BILLING_CHUNK_BYTES).max(1) as u64;
    let tens = || sizes.chunks(SQS_MESSAGES_PER_CALL);
    SqsRequests {
        send_one_by_one: sizes.iter().map(|&size| chunks(size)).sum(),
        send_in_tens: tens().map(|call| chunks(call.iter().sum())).sum(),
        receive: tens().map(|call| chunks(call.iter().sum())).sum(),
        delete: tens().count() as u64,
    }
}

struct ZipfMode {
    label: String,
    events: usize,
    invocations: usize,
    port: PortCounts,
    requests: std::collections::BTreeMap<String, u64>,
    meter: store_dynamodb::capacity::MeterState,
    sqs: SqsRequests,
    durations: Vec<Duration>,
    elapsed: Duration,
}

/// Billed write units by the kind of item written (from its partition key, `keys.rs`).
fn write_units_by_item_kind(
    meter: &store_dynamodb::capacity::MeterState,
) -> std::collections::BTreeMap<&'static str, u64> {
    let mut by_kind = std::collections::BTreeMap::new();
    for (pk, units) in &meter.write_units_by_key {
        let kind = if pk.starts_with("O#") {
            "outbox"
        } else if pk.contains("#G#") {
            "group marker"
        } else if pk.contains("#S#") {
            "source marker"
        } else if pk.contains("#P#") {
            "page"
        } else if pk.ends_with("#I") {
            "minute index"
        } else if pk.ends_with("#M") {
            "month"
        } else if pk.contains("#D#") {
            "document"
        } else if pk.starts_with("A#") {
            "account"
        } else {
            "other"
        };
        *by_kind.entry(kind).or_default() += units;
    }
    by_kind
}

impl ZipfMode {
    fn per_event(&self, value: f64) -> f64 {
        value / self.events as f64
    }

    fn mean_invocation_seconds(&self) -> f64 {
        self.durations.iter().map(Duration::as_secs_f64).sum::<f64>() / self.invocations as f64
    }

    /// Dollars per million events: DynamoDB writes, reads, SQS sent singly, SQS sent in tens,
    /// Lambda.
    fn cost_per_million(&self) -> [f64; 5] {
        let singly = (self.sqs.send_one_by_one + self.sqs.receive + self.sqs.delete) as f64;
        let in_tens = (self.sqs.send_in_tens + self.sqs.receive + self.sqs.delete) as f64;
        let invocations = 1e6 / (self.events as f64 / self.invocations as f64);
        [
            self.per_event(self.meter.write_units as f64) * DYNAMODB_USD_PER_MILLION_WRITE_UNITS,
            self.per_event(self.meter.read_units as f64) * DYNAMODB_USD_PER_MILLION_READ_UNITS,
            self.per_event(singly) * SQS_USD_PER_MILLION_REQUESTS,
            self.per_event(in_tens) * SQS_USD_PER_MILLION_REQUESTS,
            invocations
                * self.mean_invocation_seconds()
                * LAMBDA_MEMORY_GB
                * LAMBDA_ARM_USD_PER_GB_SECOND
                + invocations * LAMBDA_USD_PER_MILLION_REQUESTS / 1e6,
        ]
    }
}

async fn zipf_suite(endpoint: &str, args: &Args) {
    use futures::stream::{self, StreamExt};
    use usage::worker::{process_batch_received, Message, RateCards};
    let received_at = chrono::DateTime::parse_from_rfc3339("2027-01-04T18:00:00Z")
        .expect("a fixed receipt time")
        .to_utc();
    let (client, requests) = counted_client(endpoint).await;
    let table = format!("bench-zipf-{}", std::process::id());
    create_table(&client, &table).await.expect("create table");
    let meter = Arc::new(CapacityMeter::default());
    let calls = Arc::new(PortCalls::default());
    let dynamo = Arc::new(DynamoStore::new(client, table).with_meter(meter.clone()));
    let store: Arc<dyn LedgerStore> =
        Arc::new(CountingStore { inner: dynamo.clone(), calls: calls.clone() });
    // What the accounts' last commits left for their next posting (an inline batch's page,
    // minute item and markers), written now: before a mode so it pays nothing of the mode
    // before, and after it, counted, so each mode pays for all of its own events.
    // (Taken off the item only before: in a steady stream the next commit replaces it.)
    let settle = |ranks: Vec<usize>, take_off: bool| {
        let dynamo = dynamo.clone();
        async move {
            stream::iter(ranks)
                .for_each_concurrent(32, |rank| {
                    let dynamo = dynamo.clone();
                    async move {
                        let id = AccountId::parse(zipf_account(rank)).expect("valid id");
                        if take_off {
                            dynamo.settle(&id).await.expect("settle an account");
                        } else {
                            dynamo.write_pending(&id).await.expect("write what is pending");
                        }
                    }
                })
                .await;
        }
    };

    // Every account exists and holds funds, so no posting crosses a threshold (no events).
    let setup = Instant::now();
    stream::iter(0..args.zipf_accounts)
        .for_each_concurrent(32, |rank| {
            let store = store.clone();
            async move {
                let id = open_account(&*store, &zipf_account(rank)).await;
                let funds = Posting::credit(
                    SourceId::parse("pay:bench-funds").expect("valid"),
                    BillingItem::FundsAdded,
                    Amount::new(Decimal::new(100_000, 0)).expect("valid"),
                    Utc::now(),
                )
                .expect("valid posting");
                store.post(&id, vec![funds], Utc::now()).await.expect("fund");
            }
        })
        .await;
    let setup = setup.elapsed();

    let zipf = Zipf::new(args.zipf_accounts, args.zipf_s);
    let mut random = SplitMix(0x5eed_0018);
    let ranks: Vec<usize> = (0..args.zipf_events).map(|_| zipf.rank(random.uniform())).collect();
    let touched: Vec<usize> = {
        let set: std::collections::BTreeSet<usize> = ranks.iter().copied().collect();
        set.into_iter().collect()
    };
    let distinct = touched.len();
    let busiest = ranks.iter().filter(|&&r| r == 0).count();

    let mut deliveries = vec![(None, args.lambda_batch)];
    deliveries
        .extend(args.envelope_lambda_batches.iter().map(|&b| (Some(args.envelope_events), b)));
    let mut modes = Vec::new();
    for (index, (envelope, lambda_batch)) in deliveries.into_iter().enumerate() {
        let round = index + 1;
        let bodies: Vec<String> = ranks
            .iter()
            .enumerate()
            .map(|(i, &r)| usage_body(&zipf_account(r), round, i))
            .collect();
        let (label, messages): (String, Vec<String>) = match envelope {
            None => (format!("single-event messages, {lambda_batch} per invocation"), bodies),
            Some(per) => (
                format!("envelopes of {per} events, {lambda_batch} per invocation"),
                bodies
                    .chunks(per)
                    .map(|events| format!(r#"{{"version": 1, "batch": [{}]}}"#, events.join(", ")))
                    .collect(),
            ),
        };
        let sizes: Vec<usize> = messages.iter().map(String::len).collect();
        assert!(sizes.iter().all(|&size| size <= usage::events::MAX_BATCH_BYTES));
        let cards = RateCards::standard_only();
        settle(touched.clone(), true).await;
        meter.take();
        calls.take();
        requests.take();
        let mut durations = Vec::new();
        let started = Instant::now();
        for (n, batch) in messages.chunks(lambda_batch).enumerate() {
            let batch: Vec<Message> = batch
                .iter()
                .enumerate()
                .map(|(i, body)| Message { id: format!("m{n}-{i}"), body: body.clone() })
                .collect();
            let began = Instant::now();
            let report =
                process_batch_received(store.clone(), &cards, None, batch, received_at).await;
            durations.push(began.elapsed());
            assert!(report.failures.is_empty(), "{:?}", report.failures.first());
        }
        let elapsed = started.elapsed();
        let port = calls.take();
        let mut meter_state = meter.take();
        let mut mode_requests = requests.take();
        // What the mode's last commits left is written by each account's next posting: its
        // writes are the mode's (the account reads to find it are not: that posting reads the
        // account anyway), and so are its `BatchWriteItem` requests.
        settle(touched.clone(), false).await;
        let pending = meter.take();
        meter_state.write_units += pending.write_units;
        for (key, units) in pending.write_units_by_key {
            *meter_state.write_units_by_key.entry(key).or_default() += units;
        }
        if let Some(writes) = requests.take().remove("BatchWriteItem") {
            *mode_requests.entry("BatchWriteItem".to_string()).or_default() += writes;
        }
        modes.push(ZipfMode {
            label,
            events: ranks.len(),
            invocations: durations.len(),
            port,
            requests: mode_requests,
            meter: meter_state,
            sqs: sqs_requests(&sizes),
            durations,
            elapsed,
        });
    }

    println!(
        "### Realistic traffic on DynamoDB Local: {} accounts, Zipf s = {}, {} events per mode\n",
        args.zipf_accounts, args.zipf_s, args.zipf_events
    );
    println!(
        "Setup {:.0} s (accounts created and funded, not measured). The stream touched {distinct} \
         accounts; the busiest took {busiest} events ({:.1}%). Every mode delivers the same \
         account sequence (fresh event ids) in full Lambda batches, one invocation after another \
         (a busy queue fills a batch before the 5 s window closes); every count below is per \
         event delivered. Each mode starts with every account settled, and its write units \
         and `BatchWriteItem` requests include writing, after its last invocation, what its last \
         commits left for each account's next posting (an inline batch's page, minute item and \
         markers), so a mode pays for all of its own events and nothing of the one before.\n",
        setup.as_secs_f64(),
        100.0 * busiest as f64 / ranks.len() as f64,
    );
    println!("| delivery | events/invocation | store calls (commits)/event | account reads/event | DynamoDB requests/event | billed WCU/event | RCU/event | SQS requests/event (sent singly) | SQS requests/event (sent in tens) | ms/invocation p50 | ms/invocation max | events/s (Local) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mode in &modes {
        let mut sorted = mode.durations.clone();
        sorted.sort();
        let total_requests: u64 = mode.requests.values().sum();
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.4} | {:.4} | {:.0} | {:.0} | {:.0} |",
            mode.label,
            mode.events as f64 / mode.invocations as f64,
            mode.per_event(mode.port.posts as f64),
            mode.per_event(mode.port.account_reads as f64),
            mode.per_event(total_requests as f64),
            mode.per_event(mode.meter.write_units as f64),
            mode.per_event(mode.meter.read_units as f64),
            mode.per_event((mode.sqs.send_one_by_one + mode.sqs.receive + mode.sqs.delete) as f64),
            mode.per_event((mode.sqs.send_in_tens + mode.sqs.receive + mode.sqs.delete) as f64),
            percentile(&sorted, 0.5).as_secs_f64() * 1e3,
            sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            mode.events as f64 / mode.elapsed.as_secs_f64(),
        );
    }
    println!();
    for mode in &modes {
        let breakdown: Vec<String> = mode
            .requests
            .iter()
            .map(|(operation, count)| format!("{operation} {:.3}", mode.per_event(*count as f64)))
            .collect();
        println!("DynamoDB requests per event, {}: {}.\n", mode.label, breakdown.join(", "));
        let by_kind: Vec<String> = write_units_by_item_kind(&mode.meter)
            .iter()
            .map(|(kind, units)| format!("{kind} {:.3}", mode.per_event(*units as f64)))
            .collect();
        println!("Billed write units per event by item, {}: {}.\n", mode.label, by_kind.join(", "));
    }
    println!("Cost per million usage events at on-demand list prices (us-east-1): DynamoDB ${DYNAMODB_USD_PER_MILLION_WRITE_UNITS}/M write units and ${DYNAMODB_USD_PER_MILLION_READ_UNITS}/M read units, SQS ${SQS_USD_PER_MILLION_REQUESTS}/M requests (each started 64 KiB of a call billed as one; the platform sending each message on its own or ten per `SendMessageBatch`; Lambda's pollers receive and delete in tens), Lambda arm64 ${LAMBDA_ARM_USD_PER_GB_SECOND}/GB-s at {} MB + ${LAMBDA_USD_PER_MILLION_REQUESTS}/M invocations, with the invocation time measured here against DynamoDB Local (an upper bound: DynamoDB Local on this machine is slower per call than DynamoDB).\n", (LAMBDA_MEMORY_GB * 1024.0) as u32);
    println!("| delivery | DynamoDB writes | DynamoDB reads | SQS (sent singly) | SQS (sent in tens) | Lambda | total (sent singly) | total (sent in tens) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for mode in &modes {
        let [writes, reads, singly, in_tens, lambda] = mode.cost_per_million();
        println!(
            "| {} | ${writes:.2} | ${reads:.2} | ${singly:.3} | ${in_tens:.3} | ${lambda:.3} | **${:.2}** | **${:.2}** |",
            mode.label,
            writes + reads + singly + lambda,
            writes + reads + in_tens + lambda,
        );
    }
    println!();
}

/// One hot account, several pollers posting to it at once (the usage Lambda scaled out), each
/// with the template's batch of 100 single-event messages.
async fn pollers_suite(endpoint: &str, args: &Args) {
    use usage::worker::{process_batch_received, Message, RateCards};
    let received_at = chrono::DateTime::parse_from_rfc3339("2027-01-04T18:00:00Z")
        .expect("a fixed receipt time")
        .to_utc();
    println!("### One hot account, concurrent pollers, on DynamoDB Local ({} events each, batches of {})\n", args.poller_events, args.lambda_batch);
    println!("| pollers | events | events/s (Local) | commits | commit conflicts (store retries)/commit | worker re-posts (contention)/commit | DynamoDB requests/commit | messages failed | billed WCU/event | RCU/event | ms/invocation p50 | ms/invocation max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cards = RateCards::standard_only();
    for &pollers in &args.pollers {
        let (client, requests) = counted_client(endpoint).await;
        let table = format!("bench-pollers-{}-{pollers}", std::process::id());
        create_table(&client, &table).await.expect("create table");
        let meter = Arc::new(CapacityMeter::default());
        let calls = Arc::new(PortCalls::default());
        let store: Arc<dyn LedgerStore> = Arc::new(CountingStore {
            inner: Arc::new(DynamoStore::new(client, table).with_meter(meter.clone())),
            calls: calls.clone(),
        });
        open_account(&*store, "hot").await;
        let rounds = (args.poller_events / args.lambda_batch / pollers).max(1);
        meter.take();
        calls.take();
        requests.take();
        CONTENTION_RETRIES.store(0, std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        let runs = (0..pollers).map(|poller| {
            let store = store.clone();
            let cards = cards.clone();
            let batch = args.lambda_batch;
            tokio::spawn(async move {
                let mut failed = 0;
                let mut durations = Vec::new();
                for round in 0..rounds {
                    let messages: Vec<Message> = (0..batch)
                        .map(|i| Message {
                            id: format!("m{i}"),
                            body: usage_body("hot", 1 + poller * rounds + round, i),
                        })
                        .collect();
                    let began = Instant::now();
                    let report =
                        process_batch_received(store.clone(), &cards, None, messages, received_at)
                            .await;
                    durations.push(began.elapsed());
                    failed += report.failures.len();
                }
                (failed, durations)
            })
        });
        let results = futures::future::join_all(runs).await;
        let elapsed = started.elapsed();
        let mut failed = 0;
        let mut durations = Vec::new();
        for result in results {
            let (f, d) = result.expect("poller");
            failed += f;
            durations.extend(d);
        }
        durations.sort();
        let port = calls.take();
        let state = meter.take();
        let total_requests: u64 = requests.take().values().sum();
        let all_retries = CONTENTION_RETRIES.load(std::sync::atomic::Ordering::SeqCst);
        // The worker counts one retry per contended post it tries again; the rest are the
        // store's own conflict retries inside one post.
        let worker_retries = port.posts_contended;
        let store_retries = all_retries.saturating_sub(worker_retries);
        let events = (pollers * rounds * args.lambda_batch) as f64;
        let commits = port.posts_ok.max(1) as f64;
        println!(
            "| {pollers} | {events} | {:.0} | {} | {:.2} | {:.2} | {:.1} | {failed} | {:.3} | {:.3} | {:.0} | {:.0} |",
            events / elapsed.as_secs_f64(),
            port.posts_ok,
            store_retries as f64 / commits,
            worker_retries as f64 / commits,
            total_requests as f64 / commits,
            state.write_units as f64 / events,
            state.read_units as f64 / events,
            percentile(&durations, 0.5).as_secs_f64() * 1e3,
            durations.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
    }
    println!();
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let wants = |suite: &str| args.suites.iter().any(|s| s == suite);
    if wants("startup") {
        startup_suite(&args).await;
    }
    if wants("rating") {
        rating_suite(&args);
    }
    if let Some(endpoint) = &args.endpoint {
        if wants("ledger") {
            dynamodb(endpoint, &args).await;
        }
        if wants("worker") {
            worker_suite(endpoint, &args).await;
        }
        if wants("tax") {
            tax_suite(endpoint, &args).await;
        }
        if wants("zipf") || wants("pollers") {
            count_metrics();
        }
        if wants("zipf") {
            zipf_suite(endpoint, &args).await;
        }
        if wants("pollers") {
            pollers_suite(endpoint, &args).await;
        }
        if wants("holds") {
            holds::suite(endpoint, &args).await;
        }
        if wants("invoices") {
            invoices::suite(endpoint, &args).await;
        }
    }
    if wants("ledger") {
        sqlite(&args).await;
    }
    if wants("sqlite-zipf") {
        sqlite_zipf::suite(&args).await;
    }
}
