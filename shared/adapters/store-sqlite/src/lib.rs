//! The embedded durable ledger store: SQLite (bundled) in WAL mode with full fsync per commit.
//!
//! One writer thread owns the write connection and commits writes in groups (see [`writer`]):
//! every posting, settings change, document write and acknowledgement queued while the previous
//! commit was syncing goes into one `BEGIN IMMEDIATE` transaction, each under its own savepoint,
//! and its caller is answered only after that transaction is committed. A posting is atomic: its
//! account row, entries and outbox rows commit together or not at all, also when the process is
//! killed midway (the WAL rolls the partial transaction back). Reads run on a few read-only
//! connections on tokio's blocking pool, each in a snapshot of the last commit.

mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use ledger::docs::{
    check_delete, check_doc_id, check_list, check_put, Doc, DocError, DocKind, DocStore,
};
use ledger::posting::{apply, settle_settings_change};
use ledger::store::{
    check_ids_limit, checked_postings, encode_cursor, parse_outbox_position, AccountChange,
};
use ledger::{
    Account, AccountId, AppliedEntry, Entry, EntryKind, EntryPage, EntryQuery, LedgerEvent,
    LedgerStore, MonthTotals, NewAccount, OutboxPage, PostOutcome, PostingSource, Show, SourceId,
    StoreError, UnreadableOutboxItem,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id       TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    body     TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS entries (
    account_id    TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    source_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    posted_at_us  INTEGER NOT NULL,
    body          TEXT NOT NULL,
    PRIMARY KEY (account_id, seq),
    UNIQUE (account_id, source_id)
) STRICT;
CREATE TABLE IF NOT EXISTS outbox (
    id            TEXT PRIMARY KEY,
    raised_at_us  INTEGER NOT NULL,
    account_id    TEXT NOT NULL,
    version       INTEGER NOT NULL,
    body          TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS outbox_in_order ON outbox (raised_at_us, account_id, version, id);
CREATE TABLE IF NOT EXISTS closed_months (
    account_id  TEXT NOT NULL,
    month       TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (account_id, month)
) STRICT;
CREATE TABLE IF NOT EXISTS docs (
    account_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (account_id, kind, id)
) STRICT;
";

/// How the store syncs commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: a committed posting survives power loss. The default.
    #[default]
    Full,
    /// fsync at WAL checkpoints only: survives a process crash, may lose the last commits on
    /// power loss. For tests and benchmarks that say so.
    Normal,
}

pub use writer::{CommitStats, MAX_WRITES_PER_COMMIT};

/// Read-only connections of a file-backed store: reads run beside the writer's transaction.
const READ_CONNECTIONS: usize = 4;
/// The writer's page cache (KiB): the pages postings touch (accounts, the newest entries, the
/// indexes' inner pages) stay in memory instead of being read back from the file per posting.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// WAL pages written before the writer copies them back into the database file (SQLite's
/// default is 1,000). Postings to many accounts rewrite the same index and account pages across
/// groups; a longer WAL copies each of them back once per checkpoint rather than many times.
/// Durability does not depend on it: every commit is synced to the WAL itself.
const WAL_CHECKPOINT_PAGES: u32 = 10_000;
/// Prepared statements kept per connection: the writer runs every write's statements, plus
/// its savepoints, in every group.
const STATEMENT_CACHE: usize = 64;

#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    writer: writer::Writer,
    /// Read connections; an in-memory store's only connection is also its writer's.
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error("sqlite: {0}")]
struct Sqlite(#[from] rusqlite::Error);

fn db(error: rusqlite::Error) -> StoreError {
    StoreError::unavailable(Sqlite(error))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

impl SqliteStore {
    /// Open (creating if needed) the ledger database at `path`.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let connection = Connection::open(path).map_err(db)?;
        let writer = Arc::new(Mutex::new(Self::init(connection, durability)?));
        let readers = (0..READ_CONNECTIONS)
            .map(|_| {
                let reader = Connection::open(path).map_err(db)?;
                reader
                    .execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
                    .map_err(db)?;
                reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                Ok(Arc::new(Mutex::new(reader)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Self::start(writer, readers)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        let connection = Connection::open_in_memory().map_err(db)?;
        let connection = Arc::new(Mutex::new(Self::init(connection, Durability::Normal)?));
        Self::start(connection.clone(), vec![connection])
    }

    fn init(connection: Connection, durability: Durability) -> Result<Connection, StoreError> {
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
                 PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{WRITER_CACHE_KIB}; \
                 PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}; {SCHEMA}"
            ))
            .map_err(db)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(connection)
    }

    fn start(
        writer: Arc<Mutex<Connection>>,
        readers: Vec<Arc<Mutex<Connection>>>,
    ) -> Result<Self, StoreError> {
        let writer = writer::Writer::start(writer)?;
        Ok(SqliteStore {
            shared: Arc::new(Shared { writer, readers, next_reader: AtomicUsize::new(0) }),
        })
    }

    /// Transactions committed and writes in them since the store was opened.
    pub fn commit_stats(&self) -> CommitStats {
        self.shared.writer.stats()
    }

    /// Run `work` in the writer's next group commit; `Ok` once that group is durable.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.shared.writer.write(Box::new(work)).await
    }

    /// Run `work` on a read connection, in one read transaction (a snapshot of the last commit).
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let turn = shared.next_reader.fetch_add(1, Ordering::Relaxed);
            let reader = &shared.readers[turn % shared.readers.len()];
            let mut guard = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let snapshot = guard.transaction().map_err(db)?;
            let result = work(&snapshot);
            // A read-only transaction: ending it cannot lose anything.
            snapshot.finish().map_err(db)?;
            result
        })
        .await
        .map_err(StoreError::unavailable)?
    }
}

fn read_account(
    connection: &Connection,
    id: &AccountId,
) -> Result<Option<(Account, i64)>, StoreError> {
    let row: Option<(String, i64)> = connection
        .prepare_cached("SELECT body, version FROM accounts WHERE id = ?1")
        .map_err(db)?
        .query_row(params![id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .map_err(db)?;
    match row {
        None => Ok(None),
        Some((body, version)) => {
            let account: Account = serde_json::from_str(&body).map_err(corrupt)?;
            if account.version as i64 != version {
                return Err(corrupt(format!("account {id} version column disagrees with body")));
            }
            Ok(Some((account, version)))
        }
    }
}

fn write_account(
    connection: &Connection,
    account: &Account,
    expected_version: i64,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(account).map_err(corrupt)?;
    let updated = connection
        .prepare_cached(
            "UPDATE accounts SET body = ?1, version = ?2 WHERE id = ?3 AND version = ?4",
        )
        .map_err(db)?
        .execute(params![body, account.version as i64, account.id.as_str(), expected_version])
        .map_err(db)?;
    // The write lock is held, so nobody else can have moved the version: this is a bug if not 1.
    assert_eq!(updated, 1, "account row changed under an IMMEDIATE transaction");
    Ok(())
}

fn write_events(connection: &Connection, events: &[LedgerEvent]) -> Result<(), StoreError> {
    let mut insert = connection
        .prepare_cached(
            "INSERT OR IGNORE INTO outbox (id, raised_at_us, account_id, version, body) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db)?;
    for event in events {
        let body = serde_json::to_string(event).map_err(corrupt)?;
        insert
            .execute(params![
                event.id,
                micros(event.raised_at),
                event.account_id.as_str(),
                event.version as i64,
                body
            ])
            .map_err(db)?;
    }
    Ok(())
}

/// One posting, inside the writer's group transaction (under its own savepoint).
fn post_blocking(
    tx: &Connection,
    id: &AccountId,
    source: &dyn PostingSource,
    now: DateTime<Utc>,
) -> Result<PostOutcome, StoreError> {
    let (account, version) =
        read_account(tx, id)?.ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;

    let mut known: HashMap<SourceId, AppliedEntry> = HashMap::new();
    {
        let mut lookup = tx
            .prepare_cached("SELECT body FROM entries WHERE account_id = ?1 AND source_id = ?2")
            .map_err(db)?;
        for candidate in source.candidate_source_ids() {
            let body: Option<String> = lookup
                .query_row(params![id.as_str(), candidate.as_str()], |row| row.get(0))
                .optional()
                .map_err(db)?;
            if let Some(body) = body {
                let entry: Entry = serde_json::from_str(&body).map_err(corrupt)?;
                known.insert(candidate, AppliedEntry::of(&entry));
            }
        }
    }
    let (postings, plan_usage) = checked_postings(source, &account, &known)?;
    let base = Account { plan_usage, ..account.clone() };
    let application = apply(&base, &postings, &known, now)?;
    if application.changed() {
        // Chain continuity before the write is built: the stored last entry must end where the
        // account's balance says it does.
        let last_balance: Option<String> = tx
            .prepare_cached("SELECT body FROM entries WHERE account_id = ?1 AND seq = ?2")
            .map_err(db)?
            .query_row(params![id.as_str(), account.last_seq as i64], |row| row.get(0))
            .optional()
            .map_err(db)?;
        let chained_from = match last_balance {
            Some(body) => serde_json::from_str::<Entry>(&body).map_err(corrupt)?.balance_after_usd,
            None if account.last_seq == 0 => account.opening_balance_usd,
            None => {
                return Err(corrupt(format!("account {id} is missing entry {}", account.last_seq)))
            }
        };
        if chained_from != account.balance_usd {
            return Err(corrupt(format!("account {id} balance is not its last balance_after")));
        }
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO entries (account_id, seq, source_id, kind, posted_at_us, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(db)?;
        for entry in &application.entries {
            let body = serde_json::to_string(entry).map_err(corrupt)?;
            insert
                .execute(params![
                    id.as_str(),
                    entry.seq as i64,
                    entry.source_id.as_str(),
                    entry.kind.as_str(),
                    micros(entry.posted_at),
                    body
                ])
                .map_err(db)?;
        }
        drop(insert);
        write_account(tx, &application.account, version)?;
        write_events(tx, &application.events)?;
        if let Some(closed) = &application.closed_month {
            tx.execute(
                "INSERT INTO closed_months (account_id, month, body) VALUES (?1, ?2, ?3)",
                params![
                    id.as_str(),
                    closed.month.to_string(),
                    serde_json::to_string(closed).map_err(corrupt)?
                ],
            )
            .map_err(db)?;
        }
    }
    Ok(PostOutcome {
        results: application.results,
        account: application.account,
        events: application.events,
    })
}

fn entries_blocking(
    connection: &Connection,
    id: &AccountId,
    query: &EntryQuery,
) -> Result<EntryPage, StoreError> {
    let limit = query.checked_limit()?;
    let after = query.resume_after_seq()?;
    if read_account(connection, id)?.is_none() {
        return Err(StoreError::AccountNotFound(id.clone()));
    }
    let kind = match query.show {
        Show::All => None,
        Show::Debits => Some(EntryKind::Debit.as_str()),
        Show::Credits => Some(EntryKind::Credit.as_str()),
    };
    let mut statement = connection
        .prepare_cached(
            "SELECT body FROM entries WHERE account_id = ?1 AND seq > ?2 \
             AND posted_at_us >= ?3 AND posted_at_us < ?4 AND (?5 IS NULL OR kind = ?5) \
             ORDER BY seq LIMIT ?6",
        )
        .map_err(db)?;
    let rows = statement
        .query_map(
            params![
                id.as_str(),
                after as i64,
                query.from.map(micros).unwrap_or(i64::MIN),
                query.to.map(micros).unwrap_or(i64::MAX),
                kind,
                i64::from(limit) + 1
            ],
            |row| row.get::<_, String>(0),
        )
        .map_err(db)?;
    let mut entries = Vec::with_capacity(limit as usize + 1);
    for body in rows {
        let entry: Entry = serde_json::from_str(&body.map_err(db)?).map_err(corrupt)?;
        entries.push(entry);
    }
    let next_cursor = if entries.len() > limit as usize {
        entries.truncate(limit as usize);
        entries.last().map(|e| encode_cursor(e.seq))
    } else {
        None
    };
    Ok(EntryPage { entries, next_cursor })
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn create_account(
        &self,
        new: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.write(move |connection| {
            let account = Account::open(new.id.clone(), new.credit_limit_usd, now);
            let body = serde_json::to_string(&account).map_err(corrupt)?;
            let inserted = connection
                .execute(
                    "INSERT OR IGNORE INTO accounts (id, version, body) VALUES (?1, ?2, ?3)",
                    params![account.id.as_str(), account.version as i64, body],
                )
                .map_err(db)?;
            if inserted == 0 {
                return Err(StoreError::AccountExists(new.id));
            }
            Ok(account)
        })
        .await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let id = id.clone();
        self.read(move |connection| Ok(read_account(connection, &id)?.map(|(a, _)| a))).await
    }

    async fn modify_account(
        &self,
        id: &AccountId,
        change: AccountChange,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        let id = id.clone();
        self.write(move |tx| {
            let (current, version) =
                read_account(tx, &id)?.ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
            let mut next = current.clone();
            change(&mut next)?;
            let events = settle_settings_change(&current, &mut next, now)?;
            write_account(tx, &next, version)?;
            write_events(tx, &events)?;
            Ok(next)
        })
        .await
    }

    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn PostingSource>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError> {
        let id = id.clone();
        self.write(move |tx| post_blocking(tx, &id, &*source, now)).await
    }

    async fn entries(&self, id: &AccountId, query: &EntryQuery) -> Result<EntryPage, StoreError> {
        let id = id.clone();
        let query = query.clone();
        self.read(move |connection| entries_blocking(connection, &id, &query)).await
    }

    async fn closed_month(
        &self,
        id: &AccountId,
        month: ledger::Month,
    ) -> Result<Option<MonthTotals>, StoreError> {
        let (id, month) = (id.clone(), month.to_string());
        self.read(move |connection| {
            let body: Option<String> = connection
                .prepare_cached(
                    "SELECT body FROM closed_months WHERE account_id = ?1 AND month = ?2",
                )
                .map_err(db)?
                .query_row(params![id.as_str(), month], |row| row.get(0))
                .optional()
                .map_err(db)?;
            body.map(|body| serde_json::from_str(&body).map_err(corrupt)).transpose()
        })
        .await
    }

    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let limit = check_ids_limit(limit)?;
        let after = after.map(|id| id.as_str().to_string()).unwrap_or_default();
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT id FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2")
                .map_err(db)?;
            let rows = statement
                .query_map(params![after, limit as i64], |row| row.get::<_, String>(0))
                .map_err(db)?;
            let mut ids = Vec::new();
            for id in rows {
                ids.push(AccountId::parse(id.map_err(db)?).map_err(|e| corrupt(e.to_string()))?);
            }
            Ok(ids)
        })
        .await
    }

    async fn outbox_page(&self, after: Option<&str>, limit: u32) -> Result<OutboxPage, StoreError> {
        // Before the first position: time -1 sorts before every stored (non-negative) time.
        let after = match after {
            Some(position) => parse_outbox_position(position)?,
            None => (-1, String::new(), 0, String::new()),
        };
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT raised_at_us, account_id, version, id, body FROM outbox \
                     WHERE (raised_at_us, account_id, version, id) > (?1, ?2, ?3, ?4) \
                     ORDER BY raised_at_us, account_id, version, id LIMIT ?5",
                )
                .map_err(db)?;
            let rows = statement
                .query_map(
                    params![after.0, after.1, after.2 as i64, after.3, i64::from(limit) + 1],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, String>(4)?,
                        ))
                    },
                )
                .map_err(db)?;
            let mut page = OutboxPage::default();
            let mut last = None;
            for (read, row) in rows.enumerate() {
                let (micros, account_id, version, id, body) = row.map_err(db)?;
                if read == limit as usize {
                    // A row beyond the page: the next page starts after its last row.
                    page.next_after = last.take();
                    break;
                }
                let position = format!("{:020}#{account_id}#{:020}#{id}", micros.max(0), version);
                match serde_json::from_str::<LedgerEvent>(&body) {
                    Ok(event) => page.events.push(event),
                    Err(error) => page.unreadable.push(UnreadableOutboxItem {
                        position: position.clone(),
                        reason: format!("outbox event {id} unreadable: {error}"),
                    }),
                }
                last = Some(position);
            }
            Ok(page)
        })
        .await
    }

    /// One write (in one group commit) for all of them.
    async fn ack_events(&self, events: &[LedgerEvent]) -> Result<(), StoreError> {
        let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
        self.write(move |tx| {
            let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1").map_err(db)?;
            for id in &ids {
                delete.execute(params![id]).map_err(db)?;
            }
            Ok(())
        })
        .await
    }

    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError> {
        let event_id = event.id.clone();
        self.write(move |connection| {
            connection
                .execute("DELETE FROM outbox WHERE id = ?1", params![event_id])
                .map_err(db)?;
            Ok(())
        })
        .await
    }
}

fn read_doc(
    connection: &Connection,
    account: &AccountId,
    kind: DocKind,
    id: &str,
) -> Result<Option<Doc>, StoreError> {
    let row: Option<(i64, String)> = connection
        .prepare_cached(
            "SELECT version, body FROM docs WHERE account_id = ?1 AND kind = ?2 AND id = ?3",
        )
        .map_err(db)?
        .query_row(params![account.as_str(), kind.as_str(), id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
        .map_err(db)?;
    row.map(|(version, body)| Ok(Doc { id: id.to_string(), version: doc_version(version)?, body }))
        .transpose()
}

fn doc_version(stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored)
        .ok()
        .filter(|&version| version >= 1)
        .ok_or_else(|| corrupt(format!("document version {stored} is not positive")))
}

#[async_trait]
impl DocStore for SqliteStore {
    async fn get_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
    ) -> Result<Option<Doc>, StoreError> {
        check_doc_id(id)?;
        let (account, id) = (account.clone(), id.to_string());
        self.read(move |connection| read_doc(connection, &account, kind, &id)).await
    }

    async fn put_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        body: &str,
        expected_version: Option<u64>,
    ) -> Result<u64, DocError> {
        let version = check_put(id, body, expected_version)?;
        let (account, id, body) = (account.clone(), id.to_string(), body.to_string());
        let written = self
            .write(move |connection| {
                let changed = match expected_version {
                    None => connection
                        .prepare_cached(
                            "INSERT INTO docs (account_id, kind, id, version, body) \
                             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                        )
                        .map_err(db)?
                        .execute(params![account.as_str(), kind.as_str(), id, version as i64, body])
                        .map_err(db)?,
                    // `check_put` keeps `expected` below `i64::MAX`, so both casts are exact.
                    Some(expected) => connection
                        .prepare_cached(
                            "UPDATE docs SET version = ?4, body = ?5 \
                             WHERE account_id = ?1 AND kind = ?2 AND id = ?3 AND version = ?6",
                        )
                        .map_err(db)?
                        .execute(params![
                            account.as_str(),
                            kind.as_str(),
                            id,
                            version as i64,
                            body,
                            expected as i64
                        ])
                        .map_err(db)?,
                };
                Ok(changed == 1)
            })
            .await?;
        if written {
            Ok(version)
        } else {
            Err(DocError::Conflict)
        }
    }

    async fn delete_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        expected_version: u64,
    ) -> Result<(), DocError> {
        check_delete(id, expected_version)?;
        let (account, id) = (account.clone(), id.to_string());
        let deleted = self
            .write(move |connection| {
                connection
                    .prepare_cached(
                        "DELETE FROM docs WHERE account_id = ?1 AND kind = ?2 AND id = ?3 \
                         AND version = ?4",
                    )
                    .map_err(db)?
                    // `check_delete` keeps the version within i64.
                    .execute(params![account.as_str(), kind.as_str(), id, expected_version as i64])
                    .map_err(db)
            })
            .await?;
        if deleted == 1 {
            Ok(())
        } else {
            Err(DocError::Conflict)
        }
    }

    async fn list_docs(
        &self,
        account: &AccountId,
        kind: DocKind,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Doc>, StoreError> {
        let limit = check_list(after, limit)?;
        // Every id is non-empty, so all of them sort after the empty string.
        let (account, after) = (account.clone(), after.unwrap_or("").to_string());
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT id, version, body FROM docs \
                     WHERE account_id = ?1 AND kind = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                )
                .map_err(db)?;
            let rows = statement
                .query_map(params![account.as_str(), kind.as_str(), after, limit as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?))
                })
                .map_err(db)?;
            let mut docs = Vec::with_capacity(limit);
            for row in rows {
                let (id, version, body) = row.map_err(db)?;
                docs.push(Doc { id, version: doc_version(version)?, body });
            }
            Ok(docs)
        })
        .await
    }
}
