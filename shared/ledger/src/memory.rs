//! An in-process store: the reference adapter for unit tests of the crates above the port.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::entry::Entry;
use crate::ids::{AccountId, SourceId};
use crate::posting::{apply, settle_settings_change, LedgerEvent};
use crate::store::{
    checked_postings, encode_cursor, AccountChange, EntryPage, EntryQuery, LedgerStore, NewAccount,
    PostOutcome, PostingSource, StoreError,
};

#[derive(Default)]
struct Book {
    account: Option<Account>,
    entries: Vec<Entry>,
    by_source: HashMap<SourceId, u64>,
}

/// Events leave the outbox in time order, then per account in version order.
type OutboxKey = (DateTime<Utc>, AccountId, u64, String);

fn outbox_key(event: &LedgerEvent) -> OutboxKey {
    (event.raised_at, event.account_id.clone(), event.version, event.id.clone())
}

#[derive(Default)]
pub struct MemoryStore {
    books: Mutex<HashMap<AccountId, Book>>,
    outbox: Mutex<BTreeMap<OutboxKey, LedgerEvent>>,
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
            let known: HashMap<SourceId, u64> = source
                .candidate_source_ids()
                .into_iter()
                .filter_map(|s| book.by_source.get(&s).map(|&seq| (s, seq)))
                .collect();
            let (postings, plan_usage) = checked_postings(&*source, account, &known)?;
            let base = Account { plan_usage, ..account.clone() };
            let application = apply(&base, &postings, &known, now)?;
            if application.changed() {
                for entry in &application.entries {
                    book.by_source.insert(entry.source_id.clone(), entry.seq);
                }
                book.entries.extend(application.entries.iter().cloned());
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

    async fn pending_events(&self, limit: u32) -> Result<Vec<LedgerEvent>, StoreError> {
        let outbox = self.outbox.lock().expect("outbox lock poisoned");
        Ok(outbox.values().take(limit as usize).cloned().collect())
    }

    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError> {
        let mut outbox = self.outbox.lock().expect("outbox lock poisoned");
        outbox.remove(&outbox_key(event));
        Ok(())
    }
}
