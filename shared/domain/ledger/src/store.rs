//! The store port: everything the rest of ringledger asks of a ledger store.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use crate::account::{Account, MonthTotals, PlanUsage};
use crate::entry::{Entry, EntryKind};
use crate::ids::{AccountId, SourceId};
use crate::money::Amount;
use crate::month::Month;
use crate::posting::{AppliedEntry, LedgerEvent, Posting, PostingResult};
use crate::LedgerError;

/// The most entries one activity page returns.
pub const MAX_PAGE_SIZE: u32 = 500;
/// How many times a store retries an optimistic-concurrency conflict before giving up.
pub const MAX_CONFLICT_RETRIES: u32 = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub id: AccountId,
    pub credit_limit_usd: Option<Amount>,
}

/// A change to an account's settings, applied with optimistic concurrency (it may run more than
/// once under contention, so it must be a pure function of the account it is given).
pub type AccountChange = Arc<dyn Fn(&mut Account) -> Result<(), LedgerError> + Send + Sync>;

/// Where a batch's postings come from. Stores call it inside their atomic read-modify-write,
/// after looking up duplicates, so postings may depend on the account (rating with included
/// plan minutes) and stay exact under concurrency and redelivery.
pub trait PostingSource: Send + Sync {
    /// Every source id the postings may carry: looked up for duplicates first.
    fn candidate_source_ids(&self) -> Vec<SourceId>;

    /// The postings for `account` given the source ids already applied, and the account's
    /// plan usage after them. Called again on every optimistic-concurrency retry.
    fn postings(
        &self,
        account: &Account,
        already_applied: &HashMap<SourceId, AppliedEntry>,
    ) -> Result<(Vec<Posting>, PlanUsage), LedgerError>;
}

/// Ask `source` for its postings and check it declared every source id it uses (an undeclared
/// id would skip the duplicate lookup). Every store calls this, never `postings` directly.
pub fn checked_postings(
    source: &dyn PostingSource,
    account: &Account,
    already_applied: &HashMap<SourceId, AppliedEntry>,
) -> Result<(Vec<Posting>, PlanUsage), LedgerError> {
    let (postings, plan_usage) = source.postings(account, already_applied)?;
    let declared: std::collections::HashSet<SourceId> =
        source.candidate_source_ids().into_iter().collect();
    if let Some(posting) = postings.iter().find(|p| !declared.contains(&p.source_id)) {
        return Err(LedgerError::UndeclaredSourceId(posting.source_id.to_string()));
    }
    Ok((postings, plan_usage))
}

/// A fixed list of postings (payments, adjustments, tax).
pub struct FixedPostings(pub Vec<Posting>);

impl PostingSource for FixedPostings {
    fn candidate_source_ids(&self) -> Vec<SourceId> {
        crate::posting::distinct_source_ids(&self.0)
    }

    fn postings(
        &self,
        account: &Account,
        _already_applied: &HashMap<SourceId, AppliedEntry>,
    ) -> Result<(Vec<Posting>, PlanUsage), LedgerError> {
        Ok((self.0.clone(), account.plan_usage.clone()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutcome {
    /// One result per posting, in order.
    pub results: Vec<PostingResult>,
    /// The account after the call.
    pub account: Account,
    /// Events raised by this call (already in the outbox).
    pub events: Vec<LedgerEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    #[default]
    All,
    Debits,
    Credits,
}

impl Show {
    pub fn admits(self, kind: EntryKind) -> bool {
        match self {
            Show::All => true,
            Show::Debits => kind == EntryKind::Debit,
            Show::Credits => kind == EntryKind::Credit,
        }
    }
}

/// Entries of one account posted in `[from, to)` (UTC), oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub show: Show,
    /// Opaque, from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    pub limit: u32,
}

impl EntryQuery {
    pub fn admits(&self, entry: &Entry) -> bool {
        self.show.admits(entry.kind)
            && self.from.is_none_or(|from| entry.posted_at >= from)
            && self.to.is_none_or(|to| entry.posted_at < to)
    }

    pub fn checked_limit(&self) -> Result<u32, LedgerError> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(LedgerError::BadPageSize { max: MAX_PAGE_SIZE });
        }
        Ok(self.limit)
    }

    /// The sequence number the cursor says to resume after (0 without a cursor).
    pub fn resume_after_seq(&self) -> Result<u64, LedgerError> {
        match &self.cursor {
            None => Ok(0),
            Some(cursor) => decode_cursor(cursor),
        }
    }
}

/// Cursors are `s<seq>`: resume after that entry. Opaque to clients.
pub fn encode_cursor(last_seq: u64) -> String {
    format!("s{last_seq}")
}

pub fn decode_cursor(cursor: &str) -> Result<u64, LedgerError> {
    cursor.strip_prefix('s').and_then(|n| n.parse::<u64>().ok()).ok_or(LedgerError::BadCursor)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryPage {
    pub entries: Vec<Entry>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("account {0} not found")]
    AccountNotFound(AccountId),
    #[error("account {0} already exists")]
    AccountExists(AccountId),
    /// The request broke a ledger rule: a 4xx, nothing changed.
    #[error(transparent)]
    Rejected(#[from] LedgerError),
    /// Optimistic-concurrency conflicts exhausted the retries: safe to retry later.
    #[error("too much contention on account {0}; nothing was applied, retry later")]
    Contention(AccountId),
    /// The store is throttling: safe to retry later.
    #[error("the store is throttling requests; nothing was applied, retry later")]
    Throttled,
    /// Anything else went wrong talking to the store. The outcome may be unknown; retrying with
    /// the same source ids is always safe.
    #[error("the ledger store failed")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data broke an invariant. A bug: stop and look.
    #[error("stored ledger data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn unavailable(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable(Box::new(source))
    }

    /// Whether the same call may simply be retried.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Contention(_) | StoreError::Throttled | StoreError::Unavailable(_)
        )
    }
}

#[async_trait]
pub trait LedgerStore: Send + Sync {
    async fn create_account(
        &self,
        account: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError>;

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError>;

    /// Change settings (terms, credit limit, auto-recharge, ...). Never the balance.
    async fn modify_account(
        &self,
        id: &AccountId,
        change: AccountChange,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError>;

    /// Apply a batch of postings to one account atomically: every applied posting becomes one
    /// entry, duplicates (by source id) change nothing, and the raised events land in the outbox
    /// in the same atomic write.
    async fn post(
        &self,
        id: &AccountId,
        postings: Vec<Posting>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError> {
        if postings.len() > crate::posting::MAX_POSTINGS_PER_CALL {
            return Err(LedgerError::BatchTooLarge { count: postings.len() }.into());
        }
        self.post_with(id, Arc::new(FixedPostings(postings)), now).await
    }

    /// Like [`LedgerStore::post`], with postings computed from the account inside the atomic
    /// write (see [`PostingSource`]).
    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn PostingSource>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError>;

    async fn entries(&self, id: &AccountId, query: &EntryQuery) -> Result<EntryPage, StoreError>;

    /// The record a posting wrote when it closed `month` of this account by opening a later
    /// one. Use [`LedgerStore::month_totals`]; this is the store's half of it.
    async fn closed_month(
        &self,
        id: &AccountId,
        month: Month,
    ) -> Result<Option<MonthTotals>, StoreError>;

    /// What the account's entries posted in `month` (UTC) add up to, by billing item: the
    /// account's own totals when `month` is the month of its last posting, else the month's
    /// closed record, else nothing (no postings that month). One or two reads. Final once the
    /// month is over: a posting never lands in a month before the account's last posting.
    async fn month_totals(&self, id: &AccountId, month: Month) -> Result<MonthTotals, StoreError> {
        let account =
            self.account(id).await?.ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
        let Some(current) = account.month_totals else { return Ok(MonthTotals::empty(month)) };
        if current.month == month {
            return Ok(current);
        }
        if current.month < month {
            return Ok(MonthTotals::empty(month));
        }
        Ok(self.closed_month(id, month).await?.unwrap_or_else(|| MonthTotals::empty(month)))
    }

    /// Account ids in ascending order after `after`, at most `limit` (1 to
    /// [`MAX_PAGE_SIZE`]): how the monthly jobs find every account.
    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError>;

    /// Up to `limit` outbox items after `after` (a position from an earlier page; `None` from the
    /// start), oldest first. An item that cannot be read does not fail the page: it is reported
    /// in [`OutboxPage::unreadable`] (and stays in the outbox for someone to look at).
    async fn outbox_page(&self, after: Option<&str>, limit: u32) -> Result<OutboxPage, StoreError>;

    /// Events written by postings and not yet acknowledged by the relay, oldest first: the
    /// readable events of the outbox's first page.
    async fn pending_events(&self, limit: u32) -> Result<Vec<LedgerEvent>, StoreError> {
        Ok(self.outbox_page(None, limit).await?.events)
    }

    /// The relay delivered the event downstream. Acknowledging twice is fine.
    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError>;

    /// [`LedgerStore::ack_event`] for several events (stores batch it). On an error some may
    /// be acknowledged and some not: those are relayed again, which consumers tolerate.
    async fn ack_events(&self, events: &[LedgerEvent]) -> Result<(), StoreError> {
        for event in events {
            self.ack_event(event).await?;
        }
        Ok(())
    }
}

/// One page of the outbox (see [`LedgerStore::outbox_page`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxPage {
    /// The readable events, oldest first.
    pub events: Vec<LedgerEvent>,
    /// Items that could not be read: skipped, never fatal to the page.
    pub unreadable: Vec<UnreadableOutboxItem>,
    /// The position to ask for the next page after; `None` when this page reached the end.
    pub next_after: Option<String>,
}

/// An outbox item a store could not turn back into a [`LedgerEvent`] (corrupt or written by a
/// newer version): a bug or damage to look at, so it is reported on every sweep until removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableOutboxItem {
    /// Its outbox position (see [`outbox_position`]) or, when even that is unreadable, its key.
    pub position: String,
    pub reason: String,
}

/// Where an event sits in the outbox: `<micros:020>#<account>#<version:020>#<event id>`. Sorting
/// these strings sorts by time, then per account by version (account ids never contain `#`, and
/// every character they may contain sorts after it), which is the order every store keeps.
pub fn outbox_position(event: &LedgerEvent) -> String {
    format!(
        "{:020}#{}#{:020}#{}",
        event.raised_at.timestamp_micros().max(0),
        event.account_id,
        event.version,
        event.id
    )
}

/// The parts of an outbox position: time (micros), account, version, event id.
pub fn parse_outbox_position(position: &str) -> Result<(i64, String, u64, String), LedgerError> {
    let mut parts = position.splitn(4, '#');
    let (Some(micros), Some(account), Some(version), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(LedgerError::BadCursor);
    };
    let micros = micros.parse::<i64>().map_err(|_| LedgerError::BadCursor)?;
    let version = version.parse::<u64>().map_err(|_| LedgerError::BadCursor)?;
    Ok((micros, account.to_string(), version, id.to_string()))
}

/// Check a page size for [`LedgerStore::account_ids`].
pub fn check_ids_limit(limit: u32) -> Result<usize, LedgerError> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(LedgerError::BadPageSize { max: MAX_PAGE_SIZE });
    }
    Ok(limit as usize)
}

/// Read every entry of an account (tests, statements of small ranges, audits).
pub async fn all_entries(
    store: &dyn LedgerStore,
    id: &AccountId,
    query: EntryQuery,
) -> Result<Vec<Entry>, StoreError> {
    let mut query = EntryQuery { limit: MAX_PAGE_SIZE, ..query };
    let mut out = Vec::new();
    loop {
        let page = store.entries(id, &query).await?;
        out.extend(page.entries);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return Ok(out),
        }
    }
}
