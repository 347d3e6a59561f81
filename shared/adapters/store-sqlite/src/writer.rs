//! Group commit: one writer thread owns the write connection and commits many callers' writes in
//! one SQLite transaction.
//!
//! Callers queue a write and wait. The writer takes every write queued while its previous commit
//! was syncing (at most [`MAX_WRITES_PER_COMMIT`]), opens one `BEGIN IMMEDIATE` transaction, runs
//! each write in arrival order under a savepoint of its own, commits once, and only then answers
//! every caller. So a caller's `Ok` still means "durably committed" at the connection's
//! `synchronous` level, while a stream of small writes to different accounts pays one fsync per
//! group instead of one per write.
//!
//! A write that fails (a rejected posting, an unknown account, a panic in a posting source) is
//! rolled back to its savepoint and answered with its own error; the group's other writes are
//! untouched. If the transaction itself fails (`BEGIN`, `COMMIT`, or SQLite rolling the whole
//! transaction back after an I/O error), every write that ran in it is answered with
//! [`StoreError::Unavailable`]: nothing of the group is visible, and every write is safe to
//! retry because postings are idempotent by source id. Writes queued but not yet run when the
//! transaction broke are kept for the next group.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use ledger::StoreError;

/// The most writes one transaction carries: a bound on a group's size, its latency and the
/// WAL frames one commit appends.
pub const MAX_WRITES_PER_COMMIT: usize = 256;

/// Work run inside the group's transaction, on the write connection.
pub(crate) type Work<T> = Box<dyn FnOnce(&Connection) -> Result<T, StoreError> + Send>;

/// Commits and writes committed since the store was opened (for benchmarks and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes (postings, settings changes, document writes, acknowledgements) in them.
    pub writes: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// The handle callers queue writes on. Dropping the last one stops the writer thread once it
/// has committed what was queued.
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<Box<dyn Write>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Start the writer thread on `connection` (shared with readers only for in-memory stores,
    /// which cannot open a second connection to the same database).
    pub(crate) fn start(connection: Arc<Mutex<Connection>>) -> Result<Self, StoreError> {
        let (queue, requests) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("ringledger-sqlite-writer".into())
            .spawn(move || run(connection, requests, &thread_counters))
            .map_err(StoreError::unavailable)?;
        Ok(Writer { queue, counters })
    }

    /// Queue `work` for the next group and wait until that group is committed (or failed).
    pub(crate) async fn write<T: Send + 'static>(&self, work: Work<T>) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Box::new(Request { work, reply }))
            .map_err(|_| StoreError::unavailable(WriterGone))?;
        answer.await.map_err(|_| StoreError::unavailable(WriterGone))?
    }

    pub(crate) fn stats(&self) -> CommitStats {
        self.counters.snapshot()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer thread has stopped")]
struct WriterGone;

/// The group's transaction failed: none of its writes was committed.
#[derive(Debug, thiserror::Error)]
#[error("the group commit failed; nothing of this write was committed")]
struct GroupCommitFailed(#[source] Arc<rusqlite::Error>);

/// A write's work panicked; its savepoint was rolled back.
#[derive(Debug, thiserror::Error)]
#[error("a write panicked and was rolled back: {0}")]
struct WritePanicked(String);

/// One queued write: run it in the group, or fail it without running.
trait Write: Send {
    /// Run the work (the group has opened a savepoint for it); says whether it succeeded, so
    /// the group releases the savepoint or rolls it back.
    fn run(self: Box<Self>, connection: &Connection) -> (Box<dyn Answer>, bool);
    fn fail(self: Box<Self>, error: StoreError);
}

/// A write that ran, waiting for its group's fate.
trait Answer: Send {
    fn answer(self: Box<Self>, committed: Result<(), Arc<rusqlite::Error>>);
}

struct Request<T> {
    work: Work<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

struct Ran<T> {
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send + 'static> Write for Request<T> {
    fn run(self: Box<Self>, connection: &Connection) -> (Box<dyn Answer>, bool) {
        let Request { work, reply } = *self;
        let result = match catch_unwind(AssertUnwindSafe(|| work(connection))) {
            Ok(result) => result,
            Err(panic) => Err(StoreError::unavailable(WritePanicked(panic_message(&*panic)))),
        };
        let succeeded = result.is_ok();
        (Box::new(Ran { result, reply }), succeeded)
    }

    fn fail(self: Box<Self>, error: StoreError) {
        // The caller may have gone (a dropped future); nobody is left to tell.
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send + 'static> Answer for Ran<T> {
    fn answer(self: Box<Self>, committed: Result<(), Arc<rusqlite::Error>>) {
        let answer = match committed {
            Ok(()) => self.result,
            // Even a write that failed on its own is told the group failed: what it read came
            // from writes that are now rolled back, so only "retry" is certain.
            Err(error) => Err(StoreError::unavailable(GroupCommitFailed(error))),
        };
        let _ = self.reply.send(answer);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn run(
    connection: Arc<Mutex<Connection>>,
    mut requests: mpsc::UnboundedReceiver<Box<dyn Write>>,
    counters: &Counters,
) {
    let mut pending: VecDeque<Box<dyn Write>> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match requests.blocking_recv() {
                Some(write) => pending.push_back(write),
                // Every store handle is gone and everything queued was committed.
                None => return,
            }
        }
        // Everything that queued up while the previous group was committing joins this one.
        while pending.len() < MAX_WRITES_PER_COMMIT {
            match requests.try_recv() {
                Ok(write) => pending.push_back(write),
                Err(_) => break,
            }
        }
        let connection = connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        commit_group(&connection, &mut pending, counters);
    }
}

/// Run up to [`MAX_WRITES_PER_COMMIT`] of `pending` in one transaction and answer them. Writes
/// left in `pending` (the transaction broke before they ran) go into the next group.
fn commit_group(
    connection: &Connection,
    pending: &mut VecDeque<Box<dyn Write>>,
    counters: &Counters,
) {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        // Nothing ran, so nothing is uncertain: fail this group's writes, each safe to retry.
        let error = Arc::new(error);
        let group = pending.len().min(MAX_WRITES_PER_COMMIT);
        for write in pending.drain(..group) {
            write.fail(StoreError::unavailable(GroupCommitFailed(error.clone())));
        }
        return;
    }
    let mut ran: Vec<Box<dyn Answer>> = Vec::with_capacity(pending.len());
    let mut broken = None;
    while ran.len() < MAX_WRITES_PER_COMMIT {
        let Some(write) = pending.pop_front() else { break };
        if let Err(error) = savepoint(connection, "SAVEPOINT write") {
            // Failed, not kept for the next group: a savepoint that keeps failing must not
            // hold the queue forever.
            write.fail(StoreError::unavailable(GroupCommitFailed(Arc::new(error))));
            broken = Some(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("a savepoint could not be opened".into()),
            ));
            break;
        }
        let (answer, succeeded) = write.run(connection);
        ran.push(answer);
        let closed = if succeeded {
            savepoint(connection, "RELEASE write")
        } else {
            savepoint(connection, "ROLLBACK TO write")
                .and_then(|()| savepoint(connection, "RELEASE write"))
        };
        if let Err(error) = closed {
            broken = Some(error);
            break;
        }
        // SQLite rolls the whole transaction back on some errors (disk full, I/O): what ran
        // before is gone, so the group must fail even though each savepoint was fine.
        if connection.is_autocommit() {
            broken = Some(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("the transaction was rolled back under a write".into()),
            ));
            break;
        }
    }
    let committed = match broken {
        Some(error) => Err(error),
        None => connection.execute_batch("COMMIT"),
    };
    let committed = match committed {
        Ok(()) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(ran.len() as u64, Ordering::Relaxed);
            Ok(())
        }
        Err(error) => {
            if !connection.is_autocommit() {
                // If even the rollback fails, closing the connection would roll back; the next
                // BEGIN fails instead, and every caller keeps getting a retryable error.
                let _ = connection.execute_batch("ROLLBACK");
            }
            Err(Arc::new(error))
        }
    };
    for answer in ran {
        answer.answer(committed.clone());
    }
}

/// Open, release or roll back the per-write savepoint (prepared once: it runs twice per write).
fn savepoint(connection: &Connection, statement: &str) -> Result<(), rusqlite::Error> {
    connection.prepare_cached(statement)?.execute([])?;
    Ok(())
}
