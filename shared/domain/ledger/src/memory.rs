//! An in-process store: the reference adapter for unit tests of the crates above the port.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::account::{Account, MonthTotals};
use crate::docs::{
    check_delete, check_doc_id, check_list, check_put, Doc, DocError, DocKind, DocStore,
};
use crate::entry::Entry;
use crate::ids::{AccountId, SourceId};
use crate::month::Month;
use crate::posting::{apply, settle_settings_change, AppliedEntry, LedgerEvent};
use crate::store::{
    check_ids_limit, checked_postings, encode_cursor, outbox_position, parse_outbox_position,
    AccountChange, EntryPage, EntryQuery, LedgerStore, NewAccount, OutboxPage, PostOutcome,
    PostingSource, StoreError,
};

#[derive(Default)]
struct Book {
    account: Option<Account>,
    entries: Vec<Entry>,
    by_source: HashMap<SourceId, u64>,
    closed_months: BTreeMap<Month, MonthTotals>,
}

/// Events leave the outbox in time order, then per account in version order.
type OutboxKey = (DateTime<Utc>, AccountId, u64, String);

/// An event's outbox position as a comparable tuple (see [`parse_outbox_position`]).
fn position_key(event: &LedgerEvent) -> (i64, String, u64, String) {
    (
        event.raised_at.timestamp_micros().max(0),
        event.account_id.to_string(),
        event.version,
        event.id.clone(),
    )
}

fn outbox_key(event: &LedgerEvent) -> OutboxKey {
    (event.raised_at, event.account_id.clone(), event.version, event.id.clone())
}

#[derive(Default)]
pub struct MemoryStore {
    books: Mutex<BTreeMap<AccountId, Book>>,
    outbox: Mutex<BTreeMap<OutboxKey, LedgerEvent>>,
    /// Documents per account and kind, by id (so a list is a range of the map).
    docs: Mutex<HashMap<(AccountId, DocKind), BTreeMap<String, Doc>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn push_events(&self, events: &[LedgerEvent]) {
        let mut outbox = self.outbox.lock().expect("outbox lock poisoned");
        for event in events {
            outbox.insert(outbox_key(event), event.clone());
        }
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn create_account(
        &self,
        new: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        let mut books = self.books.lock().expect("books lock poisoned");
        let book = books.entry(new.id.clone()).or_default();
        if book.account.is_some() {
            return Err(StoreError::AccountExists(new.id));
        }
        let account = Account::open(new.id, new.credit_limit_usd, now);
        book.account = Some(account.clone());
        Ok(account)
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        let books = self.books.lock().expect("books lock poisoned");
        Ok(books.get(id).and_then(|b| b.account.clone()))
    }

    async fn modify_account(
        &self,
        id: &AccountId,
        change: AccountChange,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        let events;
        let account = {
            let mut books = self.books.lock().expect("books lock poisoned");
            let current = books
                .get_mut(id)
                .and_then(|b| b.account.as_mut())
                .ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
            let mut next = current.clone();
            change(&mut next)?;
            events = settle_settings_change(current, &mut next, now)?;
            *current = next.clone();
            next
        };
        self.push_events(&events);
        Ok(account)
    }

    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn PostingSource>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError> {
        let application = {
            let mut books = self.books.lock().expect("books lock poisoned");
            let book = books.get_mut(id).ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
            let account =
                book.account.as_ref().ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
            let known: HashMap<SourceId, AppliedEntry> = source
                .candidate_source_ids()
                .into_iter()
                .filter_map(|s| {
                    let &seq = book.by_source.get(&s)?;
                    Some((s, AppliedEntry::of(&book.entries[(seq - 1) as usize])))
                })
                .collect();
            let (postings, plan_usage) = checked_postings(&*source, account, &known)?;
            let base = Account { plan_usage, ..account.clone() };
            let application = apply(&base, &postings, &known, now)?;
            if application.changed() {
                for entry in &application.entries {
                    book.by_source.insert(entry.source_id.clone(), entry.seq);
                }
                book.entries.extend(application.entries.iter().cloned());
                if let Some(closed) = &application.closed_month {
                    book.closed_months.insert(closed.month, closed.clone());
                }
                book.account = Some(application.account.clone());
            }
            application
        };
        self.push_events(&application.events);
        Ok(PostOutcome {
            results: application.results,
            account: application.account,
            events: application.events,
        })
    }

    async fn entries(&self, id: &AccountId, query: &EntryQuery) -> Result<EntryPage, StoreError> {
        let limit = query.checked_limit()? as usize;
        let after = query.resume_after_seq()?;
        let books = self.books.lock().expect("books lock poisoned");
        let book = books.get(id).ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
        let mut entries = Vec::new();
        let mut next_cursor = None;
        for entry in book.entries.iter().skip(after as usize) {
            if query.to.is_some_and(|to| entry.posted_at >= to) {
                break;
            }
            if query.admits(entry) {
                if entries.len() == limit {
                    next_cursor =
                        Some(encode_cursor(entries.last().map_or(after, |e: &Entry| e.seq)));
                    break;
                }
                entries.push(entry.clone());
            }
        }
        Ok(EntryPage { entries, next_cursor })
    }

    async fn closed_month(
        &self,
        id: &AccountId,
        month: Month,
    ) -> Result<Option<MonthTotals>, StoreError> {
        let books = self.books.lock().expect("books lock poisoned");
        let book = books.get(id).ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
        Ok(book.closed_months.get(&month).cloned())
    }

    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let limit = check_ids_limit(limit)?;
        let books = self.books.lock().expect("books lock poisoned");
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(books
            .range::<AccountId, _>((from, Bound::Unbounded))
            .filter(|(_, book)| book.account.is_some())
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn outbox_page(&self, after: Option<&str>, limit: u32) -> Result<OutboxPage, StoreError> {
        let after = after.map(parse_outbox_position).transpose()?;
        let outbox = self.outbox.lock().expect("outbox lock poisoned");
        // Events are typed here, so every item is readable.
        let mut events: Vec<LedgerEvent> = outbox
            .values()
            .filter(|event| after.as_ref().is_none_or(|after| position_key(event) > *after))
            .take(limit as usize + 1)
            .cloned()
            .collect();
        let next_after = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(outbox_position)
        } else {
            None
        };
        Ok(OutboxPage { events, unreadable: Vec::new(), next_after })
    }

    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError> {
        let mut outbox = self.outbox.lock().expect("outbox lock poisoned");
        outbox.remove(&outbox_key(event));
        Ok(())
    }
}

#[async_trait]
impl DocStore for MemoryStore {
    async fn get_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
    ) -> Result<Option<Doc>, StoreError> {
        check_doc_id(id)?;
        let docs = self.docs.lock().expect("docs lock poisoned");
        Ok(docs.get(&(account.clone(), kind)).and_then(|of_kind| of_kind.get(id)).cloned())
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
        let mut docs = self.docs.lock().expect("docs lock poisoned");
        let of_kind = docs.entry((account.clone(), kind)).or_default();
        let stored_version = of_kind.get(id).map(|doc| doc.version);
        if stored_version != expected_version {
            return Err(DocError::Conflict);
        }
        of_kind.insert(id.to_string(), Doc { id: id.to_string(), version, body: body.to_string() });
        Ok(version)
    }

    async fn delete_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        expected_version: u64,
    ) -> Result<(), DocError> {
        check_delete(id, expected_version)?;
        let mut docs = self.docs.lock().expect("docs lock poisoned");
        let of_kind = docs.get_mut(&(account.clone(), kind)).ok_or(DocError::Conflict)?;
        match of_kind.get(id) {
            Some(doc) if doc.version == expected_version => {
                of_kind.remove(id);
                Ok(())
            }
            _ => Err(DocError::Conflict),
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
        let docs = self.docs.lock().expect("docs lock poisoned");
        let Some(of_kind) = docs.get(&(account.clone(), kind)) else { return Ok(Vec::new()) };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(of_kind
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, doc)| doc.clone())
            .collect())
    }
}
