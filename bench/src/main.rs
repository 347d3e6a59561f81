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
    const BINARIES: [&str; 10] = [
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
                .env("RINGLEDGER_TAX_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/tax")
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

mod sqlite_zipf;

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
    }
    if wants("ledger") {
        sqlite(&args).await;
    }
    if wants("sqlite-zipf") {
        sqlite_zipf::suite(&args).await;
    }
}
