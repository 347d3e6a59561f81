//! Group commit: writes queued while the writer is busy share one transaction, a write that fails
//! fails alone, and a transaction that breaks fails exactly the writes that ran in it.
//!
//! The writer is held inside a posting (a source that waits at a gate) while the writes under
//! test queue up in a known order, so every group's membership is deterministic.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use ledger::{
    Account, AccountId, AppliedEntry, LedgerError, LedgerStore, NewAccount, PlanUsage, PostOutcome,
    Posting, PostingResult, PostingSource, SourceId, StoreError,
};
use store_sqlite::{CommitStats, Durability, SqliteStore};

const GATE_TIMEOUT: Duration = Duration::from_secs(10);

fn usage(source: &str) -> Posting {
    Posting::usage(
        SourceId::parse(source).unwrap(),
        ledger::BillingItem::OutgoingSms,
        ledger::Amount::from_str("0.0123").unwrap(),
        Utc::now(),
    )
    .unwrap()
}

/// A posting source that tells the test the writer has reached it, then waits to be let go:
/// everything posted meanwhile queues behind the writer's current transaction.
struct Gate {
    reached: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    open: Mutex<mpsc::Receiver<()>>,
    posting: Posting,
}

impl PostingSource for Gate {
    fn candidate_source_ids(&self) -> Vec<SourceId> {
        vec![self.posting.source_id.clone()]
    }

    fn postings(
        &self,
        account: &Account,
        _already_applied: &HashMap<SourceId, AppliedEntry>,
    ) -> Result<(Vec<Posting>, PlanUsage), LedgerError> {
        if let Some(reached) = self.reached.lock().unwrap().take() {
            let _ = reached.send(());
        }
        let _ = self.open.lock().unwrap().recv_timeout(GATE_TIMEOUT);
        Ok((vec![self.posting.clone()], account.plan_usage.clone()))
    }
}

/// A source the ledger rejects.
struct Rejecting;

impl PostingSource for Rejecting {
    fn candidate_source_ids(&self) -> Vec<SourceId> {
        vec![SourceId::parse("rejected-1").unwrap()]
    }

    fn postings(
        &self,
        _account: &Account,
        _already_applied: &HashMap<SourceId, AppliedEntry>,
    ) -> Result<(Vec<Posting>, PlanUsage), LedgerError> {
        Err(LedgerError::Unrateable("no rate for this test".into()))
    }
}

/// A source with a bug.
struct Panicking;

impl PostingSource for Panicking {
    fn candidate_source_ids(&self) -> Vec<SourceId> {
        vec![SourceId::parse("panicked-1").unwrap()]
    }

    fn postings(
        &self,
        _account: &Account,
        _already_applied: &HashMap<SourceId, AppliedEntry>,
    ) -> Result<(Vec<Posting>, PlanUsage), LedgerError> {
        panic!("a posting source bug");
    }
}

/// A store call's future, queued behind the gate.
type Write<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

struct Held {
    store: SqliteStore,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn store_with(accounts: &[&str]) -> Held {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    for name in accounts.iter().chain(&["gate"]) {
        let new = NewAccount { id: id(name), credit_limit_usd: None };
        store.create_account(new, Utc::now()).await.unwrap();
    }
    Held { store, path, _dir: dir }
}

fn id(name: &str) -> AccountId {
    AccountId::parse(name).unwrap()
}

/// Hold the writer at a gate, queue `writes` in order behind it, let it go; the gate's own
/// posting (`gate-<n>`) commits alone, in the group before theirs.
async fn behind_the_gate<T>(store: &SqliteStore, round: u32, writes: Vec<Write<'_, T>>) -> Vec<T> {
    let (reached, writer_is_held) = tokio::sync::oneshot::channel();
    let (open, gate) = mpsc::channel();
    let source = Arc::new(Gate {
        reached: Mutex::new(Some(reached)),
        open: Mutex::new(gate),
        posting: usage(&format!("gate-{round}")),
    });
    let gate_store = store.clone();
    let gated =
        tokio::spawn(async move { gate_store.post_with(&id("gate"), source, Utc::now()).await });
    writer_is_held.await.unwrap();
    // `join_all` polls each write once, in order, before the gate opens: each queues on its
    // first poll, so the queue holds them in this order.
    let (results, ()) = tokio::join!(join_all(writes), async {
        tokio::task::yield_now().await;
        open.send(()).unwrap();
    });
    gated.await.unwrap().expect("the gate's own posting commits");
    results
}

fn applied(outcome: &Result<PostOutcome, StoreError>) -> bool {
    matches!(outcome, Ok(o) if o.results.iter().all(|r| matches!(r, PostingResult::Applied { .. })))
}

fn stats_since(store: &SqliteStore, before: CommitStats) -> (u64, u64) {
    let now = store.commit_stats();
    (now.commits - before.commits, now.writes - before.writes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_behind_a_commit_share_one_and_a_failing_one_fails_alone() {
    let names: Vec<String> = (0..32).map(|i| format!("quiet-{i:02}")).collect();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.extend(["rejected", "panicked"]);
    let held = store_with(&all).await;
    let store = &held.store;
    let before = store.commit_stats();

    let ids: Vec<AccountId> = names.iter().map(|name| id(name)).collect();
    let (rejected, panicked) = (id("rejected"), id("panicked"));
    let mut writes: Vec<Write<'_, _>> = Vec::new();
    for (index, account) in ids.iter().enumerate() {
        if index == 10 {
            writes.push(store.post_with(&rejected, Arc::new(Rejecting), Utc::now()));
        }
        if index == 20 {
            writes.push(store.post_with(&panicked, Arc::new(Panicking), Utc::now()));
        }
        writes.push(store.post(account, vec![usage("sms-1")], Utc::now()));
    }
    let results = behind_the_gate(store, 1, writes).await;

    assert!(matches!(results[10], Err(StoreError::Rejected(LedgerError::Unrateable(_)))));
    assert!(matches!(results[21], Err(StoreError::Unavailable(_))), "{:?}", results[21]);
    let posted: Vec<_> =
        results.iter().enumerate().filter(|(i, _)| *i != 10 && *i != 21).map(|(_, r)| r).collect();
    assert_eq!(posted.len(), names.len());
    assert!(posted.iter().all(|r| applied(r)), "every other posting applied");
    // The gate's group, then one group for all 34 writes queued behind it.
    assert_eq!(stats_since(store, before), (2, 35));

    for name in &names {
        let account = store.account(&id(name)).await.unwrap().unwrap();
        assert_eq!(account.last_seq, 1, "{name}");
        assert_eq!(account.balance_usd, rust_decimal::Decimal::from_str("-0.0123").unwrap());
    }
    for name in ["rejected", "panicked"] {
        assert_eq!(store.account(&id(name)).await.unwrap().unwrap().last_seq, 0, "{name}");
    }
    // What was answered Ok is durable: a reopened store has it.
    let reopened = SqliteStore::open(&held.path, Durability::Full).unwrap();
    assert_eq!(reopened.account(&id("quiet-31")).await.unwrap().unwrap().last_seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_rolled_back_under_a_write_fails_exactly_the_writes_that_ran_in_it() {
    let held = store_with(&["a", "b", "poison", "c"]).await;
    let store = &held.store;
    // SQLite aborts the whole transaction (as on a full disk or an I/O error) when an entry of
    // account `poison` is inserted.
    let raw = rusqlite::Connection::open(&held.path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER poison AFTER INSERT ON entries WHEN NEW.account_id = 'poison' \
         BEGIN SELECT RAISE(ROLLBACK, 'injected failure'); END;",
    )
    .unwrap();
    let before = store.commit_stats();

    let ids: Vec<AccountId> = ["a", "b", "poison", "c"].into_iter().map(id).collect();
    let writes: Vec<Write<'_, _>> =
        ids.iter().map(|account| store.post(account, vec![usage("sms-1")], Utc::now())).collect();
    let results = behind_the_gate(store, 1, writes).await;

    // a and b ran before the poison in the same transaction: rolled back, told to retry.
    for (name, result) in ["a", "b", "poison"].iter().zip(&results) {
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{name}: {result:?}");
        assert!(result.as_ref().unwrap_err().is_retryable());
        assert_eq!(store.account(&id(name)).await.unwrap().unwrap().last_seq, 0, "{name}");
    }
    // c had not run yet: it went into the next group and committed.
    assert!(applied(&results[3]), "{:?}", results[3]);
    assert_eq!(store.account(&id("c")).await.unwrap().unwrap().last_seq, 1);
    // The gate's group and c's; the failed group committed nothing.
    assert_eq!(stats_since(store, before), (2, 2));

    // Retrying is safe and applies each posting once.
    raw.execute_batch("DROP TRIGGER poison").unwrap();
    for name in ["a", "b", "poison", "c"] {
        let outcome = store.post(&id(name), vec![usage("sms-1")], Utc::now()).await.unwrap();
        let expected_new = name != "c";
        assert_eq!(
            matches!(outcome.results[0], PostingResult::Applied { .. }),
            expected_new,
            "{name}: {:?}",
            outcome.results[0]
        );
        assert_eq!(outcome.account.last_seq, 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postings_and_settings_changes_to_one_account_in_one_group_apply_in_order() {
    let held = store_with(&["busy"]).await;
    let store = &held.store;
    let limit = ledger::Amount::from_str("50").unwrap();
    let change: ledger::AccountChange = Arc::new(move |account: &mut Account| {
        account.credit_limit_usd = Some(limit);
        Ok(())
    });
    let busy = id("busy");
    let writes: Vec<Write<'_, _>> = vec![
        Box::pin(async {
            store.post(&busy, vec![usage("sms-1")], Utc::now()).await.map(|o| o.account)
        }),
        Box::pin(store.modify_account(&busy, change, Utc::now())),
        Box::pin(async {
            store.post(&busy, vec![usage("sms-2")], Utc::now()).await.map(|o| o.account)
        }),
        // Redelivered within the same group: a duplicate of the first.
        Box::pin(async {
            store.post(&busy, vec![usage("sms-1")], Utc::now()).await.map(|o| o.account)
        }),
    ];
    let accounts: Vec<Account> =
        behind_the_gate(store, 1, writes).await.into_iter().map(Result::unwrap).collect();
    let versions: Vec<u64> = accounts.iter().map(|a| a.version).collect();
    assert!(versions.windows(2).take(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(accounts[0].credit_limit_usd, None);
    assert_eq!(accounts[2].credit_limit_usd, Some(limit));
    assert_eq!(accounts[2].last_seq, 2);
    assert_eq!(accounts[3], accounts[2], "the duplicate changed nothing");
    let stored = store.account(&busy).await.unwrap().unwrap();
    assert_eq!(stored, accounts[3]);
    conformance::cases::assert_consistent(store, &busy).await;
}
