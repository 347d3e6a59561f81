//! The embedded store under realistic traffic (issue 18): usage events for many accounts with
//! Zipf-distributed volume, delivered to the usage worker (`process_batch_received`) in SQS
//! batches of the template's size, on a file-backed store with `synchronous=FULL`. Printed
//! beside the fsync rate of the disk the database is on, which bounds a store that commits once
//! per account.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{self, StreamExt};

use ledger::{AccountId, LedgerStore, NewAccount};
use store_sqlite::{CommitStats, Durability, SqliteStore};
use usage::worker::{process_batch_received, Message, RateCards};

use super::{percentile, usage_body, Args, SplitMix, Zipf};

/// The exponent of the accounts' volume distribution (issue 18's model).
const ZIPF_EXPONENT: f64 = 1.1;
/// The usage queue's `BatchSize` in `infra/template.yaml`.
const SQS_BATCH_MESSAGES: usize = 100;
/// A fixed seed: every run delivers the same stream.
const STREAM_SEED: u64 = 18;
/// Accounts created at once while setting up (not measured).
const SETUP_CONCURRENCY: usize = 64;
/// How long the fsync probe runs, and at most how many syncs it makes.
const FSYNC_PROBE_DURATION: Duration = Duration::from_secs(2);
const FSYNC_PROBE_MAX_SYNCS: usize = 200_000;
/// The probe overwrites 4 KiB pages cyclically in a preallocated file, as SQLite reuses its WAL.
const FSYNC_PROBE_PAGE_BYTES: usize = 4096;
const FSYNC_PROBE_PAGES: usize = 256;

pub async fn suite(args: &Args) {
    std::fs::create_dir_all(&args.sqlite_dir).expect("bench dir");
    let fsyncs_per_second = fsync_rate(Path::new(&args.sqlite_dir));
    let accounts = args.sqlite_zipf_accounts;
    let batches = zipf_stream(accounts, args.sqlite_zipf_events);
    let events: usize = batches.iter().map(Vec::len).sum();
    let store_calls: usize = batches.iter().map(|batch| distinct_accounts(batch)).sum();
    let touched = batches.iter().flatten().map(|(account, _)| *account).collect::<HashSet<_>>();
    let store_calls_per_event = store_calls as f64 / events as f64;

    println!(
        "### Embedded store, Zipf stream (SQLite, WAL, synchronous={}, file in `{}`)\n",
        args.sqlite_zipf_sync.to_uppercase(),
        args.sqlite_dir
    );
    println!(
        "{accounts} accounts, Zipf s = {ZIPF_EXPONENT}, {events} usage events in SQS batches of \
         {SQS_BATCH_MESSAGES} ({} accounts touched, {store_calls_per_event:.3} store calls per \
         event).\n",
        touched.len()
    );
    println!(
        "fsync rate of this disk: {fsyncs_per_second:.0} fsyncs/s (4 KiB overwrite + \
         fdatasync, one thread); one commit per store call would cap the stream at about \
         {:.0} events/s.\n",
        fsyncs_per_second / store_calls_per_event
    );
    println!("| pollers | events | postings applied | events/s | p50 ms/batch | p99 ms/batch | commits | writes per commit |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &pollers in &args.sqlite_zipf_pollers {
        let run = deliver(args, accounts, &batches, pollers).await;
        println!(
            "| {pollers} | {events} | {} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
            run.postings_applied,
            events as f64 / run.elapsed.as_secs_f64(),
            percentile(&run.latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&run.latencies, 0.99).as_secs_f64() * 1e3,
            run.commits.commits,
            run.commits.writes as f64 / run.commits.commits.max(1) as f64,
        );
    }
    println!();
}

struct ZipfRun {
    elapsed: Duration,
    latencies: Vec<Duration>,
    postings_applied: usize,
    /// Commits and writes during the stream (the setup's excluded).
    commits: CommitStats,
}

/// A fresh store with every account, then the whole stream through `pollers` concurrent
/// workers (Lambda instances), each taking the next batch when done with its last.
async fn deliver(
    args: &Args,
    accounts: usize,
    batches: &[Vec<(usize, Message)>],
    pollers: usize,
) -> ZipfRun {
    let dir = tempfile::tempdir_in(&args.sqlite_dir).expect("temp dir");
    let sqlite = Arc::new(
        SqliteStore::open(dir.path().join("zipf.db"), durability(args)).expect("open store"),
    );
    let store: Arc<dyn LedgerStore> = sqlite.clone();
    let opened_at = Utc::now();
    stream::iter(0..accounts)
        .for_each_concurrent(SETUP_CONCURRENCY, |rank| {
            let store = store.clone();
            async move {
                let new = NewAccount { id: account_id(rank), credit_limit_usd: None };
                store.create_account(new, opened_at).await.expect("create account");
            }
        })
        .await;
    // After the events' occurrence, fixed so the bench does not age (as the worker suite).
    let received_at = chrono::DateTime::parse_from_rfc3339("2027-01-04T18:00:00Z")
        .expect("a fixed receipt time")
        .to_utc();
    let cards = RateCards::standard_only();
    let queue: Vec<Vec<Message>> = batches
        .iter()
        .map(|batch| batch.iter().map(|(_, message)| message.clone()).collect())
        .collect();
    let queue = Arc::new(Mutex::new(queue.into_iter()));
    let before = sqlite.commit_stats();
    let started = Instant::now();
    let workers: Vec<_> = (0..pollers)
        .map(|_| {
            let (store, cards, queue) = (store.clone(), cards.clone(), queue.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut postings_applied = 0;
                loop {
                    let next = queue.lock().expect("queue lock").next();
                    let Some(messages) = next else { break };
                    let began = Instant::now();
                    let report =
                        process_batch_received(store.clone(), &cards, None, messages, received_at)
                            .await;
                    latencies.push(began.elapsed());
                    assert!(report.failures.is_empty(), "{:?}", report.failures.first());
                    postings_applied += report.postings_applied;
                }
                (latencies, postings_applied)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut postings_applied = 0;
    for worker in workers {
        let (worker_latencies, worker_postings) = worker.await.expect("poller panicked");
        latencies.extend(worker_latencies);
        postings_applied += worker_postings;
    }
    let elapsed = started.elapsed();
    let after = sqlite.commit_stats();
    let commits = CommitStats {
        commits: after.commits - before.commits,
        writes: after.writes - before.writes,
    };
    let mut run = ZipfRun { elapsed, latencies, postings_applied, commits };
    run.latencies.sort();
    run
}

fn durability(args: &Args) -> Durability {
    match args.sqlite_zipf_sync.as_str() {
        "full" => Durability::Full,
        "normal" => Durability::Normal,
        other => panic!("--sqlite-zipf-sync is full or normal, not {other:?}"),
    }
}

fn account_id(rank: usize) -> AccountId {
    AccountId::parse(format!("zipf-{rank:05}")).expect("valid account id")
}

fn distinct_accounts(batch: &[(usize, Message)]) -> usize {
    batch.iter().map(|(account, _)| *account).collect::<HashSet<_>>().len()
}

/// The stream: `events` usage messages in batches, each message's account drawn by rank from
/// Zipf(s) over `accounts` (rank 0 the busiest), the worker suite's usage mix within a batch.
fn zipf_stream(accounts: usize, events: usize) -> Vec<Vec<(usize, Message)>> {
    let zipf = Zipf::new(accounts, ZIPF_EXPONENT);
    let mut random = SplitMix(STREAM_SEED);
    (0..events.div_ceil(SQS_BATCH_MESSAGES))
        .map(|batch| {
            let size = SQS_BATCH_MESSAGES.min(events - batch * SQS_BATCH_MESSAGES);
            (0..size)
                .map(|i| {
                    let rank = zipf.rank(random.uniform());
                    let body = usage_body(account_id(rank).as_str(), batch + 1, i);
                    (rank, Message { id: format!("m{batch}-{i}"), body })
                })
                .collect()
        })
        .collect()
}

/// Durable syncs per second on the disk holding `dir`: overwrite a 4 KiB page of a
/// preallocated file and `fdatasync` it, in a loop, for a couple of seconds.
fn fsync_rate(dir: &Path) -> f64 {
    let path = dir.join("fsync-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("open fsync probe");
    let page = [0x5a_u8; FSYNC_PROBE_PAGE_BYTES];
    for index in 0..FSYNC_PROBE_PAGES {
        file.write_all_at(&page, (index * FSYNC_PROBE_PAGE_BYTES) as u64).expect("preallocate");
    }
    file.sync_all().expect("sync probe");
    let started = Instant::now();
    let mut syncs = 0;
    while syncs < FSYNC_PROBE_MAX_SYNCS && started.elapsed() < FSYNC_PROBE_DURATION {
        let offset = (syncs % FSYNC_PROBE_PAGES) * FSYNC_PROBE_PAGE_BYTES;
        file.write_all_at(&page, offset as u64).expect("write probe page");
        file.sync_data().expect("fdatasync probe");
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).expect("remove fsync probe");
    rate
}
