//! The DynamoDB single-table ledger store.
//!
//! A posting is one `TransactWriteItems`: the account item (a put conditional on its version)
//! plus the batch's entries packed into page items (conditional on not existing), the minute
//! index item when the batch opens a new minute, and the outbox items of the events it raised.
//! Idempotency uses one marker item per source id, written after the commit with standard
//! writes; the account item records the just-committed batch as "marker debt", and every poster
//! pays any debt (writes the missing markers) before it looks source ids up. Because every
//! commit is conditional on the account version, a poster that looked up markers while a new
//! batch committed fails its condition and starts over, so a source id is never applied twice.
//! See `docs/decisions.md` for the costs this buys (about 1.3 write units per event at batch
//! 100 instead of 4 for one transaction per event) and the alternatives.

pub mod capacity;
pub mod errors;
pub mod items;
pub mod keys;
mod markers;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, PutRequest, ReturnConsumedCapacity, ReturnValue,
    TransactWriteItem, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use tracing::warn;

use ledger::docs::{
    check_delete, check_doc_id, check_list, check_put, Doc, DocError, DocKind, DocStore,
};
use ledger::posting::{apply, settle_settings_change};
use ledger::store::{
    check_ids_limit, checked_postings, parse_outbox_position, AccountChange, MAX_CONFLICT_RETRIES,
};
use ledger::{
    Account, AccountId, AppliedEntry, Entry, EntryPage, EntryQuery, LedgerEvent, LedgerStore,
    MonthTotals, NewAccount, OutboxPage, PostOutcome, PostingSource, SourceId, StoreError,
    UnreadableOutboxItem,
};

use capacity::{item_size_bytes, read_units, write_units, CapacityMeter, WriteKind};
use errors::{classify, TransactionFailure};
use items::{
    from_item, to_item, AccountItem, DocItem, InlineBatch, Item, MarkerItem, MinuteItem, MonthItem,
    OutboxItem, PageEntry, PageItem, RegistryItem, GROUP_MARKERS,
};
use keys::*;
use markers::Markers;
pub use markers::Settled;

/// A batch rides on the account item (no page, no transaction) when the item stays within
/// this size with it: one standard write of at most 2 KB instead of a transaction of the
/// account item and a page (4 units or more).
const INLINE_MAX_ITEM_BYTES: usize = 2048;

/// The minute index is sparse: a batch that opens a new minute gets a minute-index item only
/// when at least this many pages went unindexed before it, so an activity read walks at most
/// this many pages (plus the pages of one minute) past the entries it returns, and a quiet
/// account, whose every batch opens a new minute, pays for an index item on one batch in this
/// many instead of on each (docs/decisions.md §60).
pub const INDEX_EVERY_PAGES: u32 = 8;

/// Entries JSON per page item; DynamoDB's item limit is 400 KB.
const MAX_PAGE_JSON_BYTES: usize = 256 * 1024;
/// BatchWriteItem takes at most 25 requests; BatchGetItem at most 100 keys.
const BATCH_WRITE_MAX: usize = 25;
const BATCH_GET_MAX: usize = 100;
/// Unprocessed items from batch calls are retried this many times with backoff.
const MAX_UNPROCESSED_RETRIES: u32 = 10;
/// Pages one activity request may read before it returns a (possibly short) page and a cursor.
const MAX_PAGES_PER_QUERY: usize = 200;

/// A deliberate fault for crash tests: behave as if the process died at this point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The commit succeeded; nothing after it ran (a large batch's markers were never written;
    /// a small batch's flush is the next poster's anyway).
    AfterCommitBeforeMarkers,
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    meter: Option<Arc<CapacityMeter>>,
    fault: Arc<std::sync::Mutex<Option<Fault>>>,
    inline_max_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("simulated crash at {0:?}")]
struct SimulatedCrash(Fault);

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            meter: None,
            fault: Arc::new(std::sync::Mutex::new(None)),
            inline_max_bytes: INLINE_MAX_ITEM_BYTES,
        }
    }

    /// Carry a batch on the account item only while the item stays within `bytes` (0: never;
    /// tests of the transaction path and benchmarks use it).
    pub fn with_inline_max_bytes(mut self, bytes: usize) -> Self {
        self.inline_max_bytes = bytes;
        self
    }

    /// Count billed capacity per partition key (benchmarks).
    pub fn with_meter(mut self, meter: Arc<CapacityMeter>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Make the next posting stop at `fault` as if the process died there (crash tests).
    pub fn inject_fault_once(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
    }

    fn take_fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// How long a cold start waits for [`DynamoStore::warm_up`] at most.
    pub const WARM_UP_TIMEOUT: Duration = Duration::from_secs(2);

    /// Open the connection to DynamoDB (DNS, TCP, TLS) now, in a Lambda's init phase, so the
    /// first invocation does not pay for it: one eventually consistent `GetItem` of a key that
    /// never exists (half a read unit per cold start), bounded by `timeout`. Failures are
    /// ignored (the first real call simply connects itself). `RINGLEDGER_WARM_UP=0` turns it
    /// off. Returns whether DynamoDB answered.
    pub async fn warm_up(&self, timeout: Duration) -> bool {
        if std::env::var("RINGLEDGER_WARM_UP").is_ok_and(|v| v == "0") {
            return false;
        }
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(WARM_UP_PK.into(), WARM_UP_PK)))
            .consistent_read(false)
            .send();
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::debug!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error), "warm-up failed");
                false
            }
            Err(_) => false,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn meter_write(&self, item: &Item, kind: WriteKind) {
        if let Some(meter) = &self.meter {
            let pk = match item.get("pk") {
                Some(AttributeValue::S(pk)) => pk.as_str(),
                _ => "?",
            };
            meter.record_write(pk, write_units(item_size_bytes(item), kind));
        }
    }

    fn meter_read(&self, item: &Item) {
        if let Some(meter) = &self.meter {
            meter.record_read(read_units(item_size_bytes(item)));
        }
    }

    fn key(pk: String, sk: &str) -> Item {
        HashMap::from([
            ("pk".to_string(), AttributeValue::S(pk)),
            ("sk".to_string(), AttributeValue::S(sk.to_string())),
        ])
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        if let Some(item) = &output.item {
            self.meter_read(item);
        }
        Ok(output.item)
    }

    async fn read_account(&self, id: &AccountId) -> Result<Option<AccountItem>, StoreError> {
        match self.get(account_pk(id), ACCOUNT_SK).await? {
            None => Ok(None),
            Some(item) => {
                let account: AccountItem = from_item(item)?;
                if account.version != account.account.version {
                    return Err(StoreError::Corrupt(format!("account {id} version mismatch")));
                }
                Ok(Some(account))
            }
        }
    }

    async fn read_page(&self, id: &AccountId, first_seq: u64) -> Result<PageItem, StoreError> {
        let item = self.get(page_pk(id, first_seq), PAGE_SK).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("account {id} has no page starting at {first_seq}"))
        })?;
        from_item(item)
    }

    fn page_entries(id: &AccountId, page: &PageItem) -> Result<Vec<Entry>, StoreError> {
        let posted_at = DateTime::<Utc>::from_timestamp_micros(page.posted_at)
            .ok_or_else(|| StoreError::Corrupt("page time out of range".into()))?;
        let compact: Vec<PageEntry> = serde_json::from_str(&page.entries_json()?)
            .map_err(|e| StoreError::Corrupt(format!("page of {id} unreadable: {e}")))?;
        compact.into_iter().map(|e| e.into_entry(id, posted_at)).collect()
    }

    fn marker(id: &AccountId, entry: &Entry, page: u64) -> MarkerItem {
        MarkerItem {
            pk: marker_pk(id, &entry.source_id),
            sk: MARKER_SK.into(),
            seq: entry.seq,
            page,
            kind: Some(entry.kind),
            item: Some(entry.item),
            amount_usd: Some(entry.amount_usd),
        }
    }

    async fn batch_put(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            self.meter_write(&item, WriteKind::Standard);
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write(requests).await
    }

    /// `BatchWriteItem` in chunks of 25, the chunks at once, each retrying its unprocessed
    /// requests with backoff.
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let calls = requests.chunks(BATCH_WRITE_MAX).map(|chunk| self.batch_write_chunk(chunk));
        futures::future::join_all(calls).await.into_iter().collect()
    }

    async fn batch_write_chunk(&self, chunk: &[WriteRequest]) -> Result<(), StoreError> {
        let mut pending: Vec<WriteRequest> = chunk.to_vec();
        for attempt in 0..=MAX_UNPROCESSED_RETRIES {
            if pending.is_empty() {
                break;
            }
            if attempt == MAX_UNPROCESSED_RETRIES {
                return Err(StoreError::Throttled);
            }
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending.clone())
                .send()
                .await
                .map_err(classify)?;
            pending = output
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default();
            if !pending.is_empty() {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Ok(())
    }

    /// Which of `sources` already have an entry on this account, and at which seq (one marker
    /// item per source id: accounts from before group markers).
    async fn lookup_markers(
        &self,
        id: &AccountId,
        sources: &[SourceId],
    ) -> Result<HashMap<SourceId, AppliedEntry>, StoreError> {
        // Markers are matched back by their exact key: a source id may itself contain `#`.
        // (BatchGetItem rejects repeated keys: the map makes them distinct.)
        let by_key: HashMap<String, &SourceId> =
            sources.iter().map(|s| (marker_pk(id, s), s)).collect();
        let items = self.consistent_batch_get(by_key.keys().cloned().collect(), MARKER_SK).await?;
        let mut known = HashMap::new();
        for item in items {
            let marker: MarkerItem = from_item(item)?;
            let source = by_key.get(&marker.pk).ok_or_else(|| {
                StoreError::Corrupt(format!("marker {} was not asked for", marker.pk))
            })?;
            known.insert((*source).clone(), marker.applied());
        }
        Ok(known)
    }

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
        self.meter_write(&item, WriteKind::Transactional);
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        if let Some(condition) = condition {
            put = put.condition_expression(condition);
        }
        Ok(TransactWriteItem::builder()
            .put(put.build().map_err(|e| StoreError::Corrupt(e.to_string()))?)
            .build())
    }

    /// The account item for `account`, carrying `carry` (debt or an inline batch) and the
    /// marker layout of `current`.
    fn account_item(account: &Account, current: Option<&AccountItem>, carry: Carry) -> AccountItem {
        let (debt, inline) = match carry {
            Carry::Nothing => (None, None),
            Carry::Debt(first, last) => (Some((first, last)), None),
            Carry::Inline(batch) => (None, Some(batch)),
            Carry::Unchanged => (
                current.and_then(|c| c.debt_first.zip(c.debt_last)),
                current.and_then(|c| c.inline.clone()),
            ),
        };
        AccountItem {
            pk: account_pk(&account.id),
            sk: ACCOUNT_SK.into(),
            version: account.version,
            account: account.clone(),
            debt_first: debt.map(|d| d.0),
            debt_last: debt.map(|d| d.1),
            inline,
            markers: current.map_or(Some(GROUP_MARKERS), |c| c.markers),
            unindexed_pages: current.and_then(|c| c.unindexed_pages),
        }
    }

    /// The account item (already mapped: mapping deflates it, so it is done once per write) as
    /// a transaction's put, conditional on the version it replaces.
    fn account_put(
        &self,
        item: Item,
        expected_version: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        self.meter_write(&item, WriteKind::Transactional);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("version = :expected")
            .expression_attribute_values(
                ":expected",
                AttributeValue::N(expected_version.to_string()),
            )
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn outbox_puts(&self, events: &[LedgerEvent]) -> Result<Vec<TransactWriteItem>, StoreError> {
        events
            .iter()
            .map(|event| {
                let item = to_item(&OutboxItem {
                    pk: outbox_pk_for(&event.id),
                    sk: outbox_sk(event),
                    event: serde_json::to_string(event)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })?;
                self.put(item, None)
            })
            .collect()
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TransactionFailure> {
        let token: String = {
            use std::fmt::Write;
            let mut token = String::with_capacity(32);
            for _ in 0..4 {
                let _ = write!(token, "{:08x}", rand_u32());
            }
            token
        };
        let output = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(token)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(TransactionFailure::from_sdk)?;
        if let Some(meter) = &self.meter {
            let units: f64 =
                output.consumed_capacity().iter().filter_map(|c| c.capacity_units()).sum();
            meter.record_reported(units, true);
        }
        Ok(())
    }

    /// Pack entries into pages of at most [`MAX_PAGE_JSON_BYTES`] of JSON each.
    fn pages(
        id: &AccountId,
        entries: &[Entry],
        extends: Option<String>,
    ) -> Result<Vec<PageItem>, StoreError> {
        let mut extends = extends;
        let mut pages = Vec::new();
        let mut current: Vec<String> = Vec::new();
        let mut current_bytes = 0;
        let mut first = entries.first().map_or(0, |e| e.seq);
        let posted_at = entries.first().map_or(0, |e| e.posted_at.timestamp_micros());
        for (index, entry) in entries.iter().enumerate() {
            let json = serde_json::to_string(&PageEntry::from_entry(entry))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            current_bytes += json.len() + 1;
            current.push(json);
            let last_of_batch = index + 1 == entries.len();
            if current_bytes >= MAX_PAGE_JSON_BYTES || last_of_batch {
                pages.push(PageItem {
                    pk: page_pk(id, first),
                    sk: PAGE_SK.into(),
                    first,
                    last: entry.seq,
                    posted_at,
                    entries: format!("[{}]", current.join(",")),
                    deflated: None,
                    extends: extends.take(),
                });
                current.clear();
                current_bytes = 0;
                first = entry.seq + 1;
            }
        }
        Ok(pages)
    }

    /// Put the account item alone, conditional on its version: a small batch with nothing else
    /// to write atomically commits with one standard write.
    async fn put_account(
        &self,
        item: Item,
        expected_version: u64,
    ) -> Result<(), TransactionFailure> {
        self.meter_write(&item, WriteKind::Standard);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("version = :expected")
            .expression_attribute_values(
                ":expected",
                AttributeValue::N(expected_version.to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if errors::is_conditional_check_failed(&error) => {
                Err(TransactionFailure::VersionConflict)
            }
            Err(error) => match classify(error) {
                StoreError::Throttled => Err(TransactionFailure::Throttled),
                other => Err(TransactionFailure::Other(other)),
            },
        }
    }

    async fn try_post(
        &self,
        id: &AccountId,
        source: &dyn PostingSource,
        now: DateTime<Utc>,
    ) -> Result<Result<PostOutcome, TransactionFailure>, StoreError> {
        let current =
            self.read_account(id).await?.ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
        let markers = Markers::of(&current);
        // Settle what the last commit left before looking anything up.
        let debt = current.debt_first.zip(current.debt_last);
        if let Some((first, last)) = debt {
            self.pay_debt(id, markers, first, last).await?;
        }
        if let Some(inline) = &current.inline {
            self.flush_inline(id, markers, inline).await?;
        }
        let known = self.lookup(id, markers, &source.candidate_source_ids()).await?;
        let (postings, plan_usage) = checked_postings(source, &current.account, &known.applied)?;
        let base = Account { plan_usage, ..current.account.clone() };
        let application = apply(&base, &postings, &known.applied, now)?;
        let outcome = PostOutcome {
            results: application.results.clone(),
            account: application.account.clone(),
            events: application.events.clone(),
        };
        if !application.changed() {
            // No commit follows to replace what was settled above: clear it, or every
            // redelivery would settle it again.
            if let Some((first, _)) = debt {
                self.clear_settled(id, Settled::Debt(first)).await;
            }
            if let Some(inline) = &current.inline {
                self.clear_settled(id, Settled::Inline(inline.first)).await;
            }
            return Ok(Ok(outcome));
        }
        if application.entries.is_empty() {
            // Events alone (a refused purchase): the account's new version and the outbox, in
            // one transaction; what the last commit left was settled above.
            let item = Self::account_item(&application.account, Some(&current), Carry::Nothing);
            let mut items = vec![self.account_put(to_item(&item)?, current.version)?];
            items.extend(self.outbox_puts(&application.events)?);
            return Ok(self.transact(items).await.map(|()| outcome));
        }
        let first = application.entries[0].seq;
        let last = application.account.last_seq;
        let posted_at = application.entries[0].posted_at;
        let new_minute = current
            .account
            .last_posted_at
            .is_none_or(|previous| minute_sk(previous) != minute_sk(posted_at));
        let opens_minute =
            new_minute && current.unindexed_pages.is_none_or(|n| n >= INDEX_EVERY_PAGES);
        // Pages since the last indexed one once this batch is written (`pages` of its own).
        let unindexed_after = |pages: u32| {
            if opens_minute {
                pages - 1
            } else {
                current.unindexed_pages.unwrap_or(0).saturating_add(pages)
            }
        };
        let extends = match markers {
            Markers::PerGroup => known.extends_of(&application.entries)?,
            Markers::PerSource => None,
        };
        let month_put = match &application.closed_month {
            Some(closed) => {
                let month = MonthItem {
                    pk: month_pk(id),
                    sk: closed.month.to_string(),
                    totals: serde_json::to_string(closed)
                        .map_err(|e| StoreError::Corrupt(format!("month totals: {e}")))?,
                };
                Some(self.put(to_item(&month)?, Some("attribute_not_exists(pk)"))?)
            }
            None => None,
        };

        // A small batch rides on the account item: its page, minute item and markers are the
        // next poster's to write (and readers find it here meanwhile).
        let entries_json = {
            let compact: Result<Vec<String>, _> = application
                .entries
                .iter()
                .map(|e| serde_json::to_string(&PageEntry::from_entry(e)))
                .collect();
            format!("[{}]", compact.map_err(|e| StoreError::Corrupt(e.to_string()))?.join(","))
        };
        let deflated = items::deflate(entries_json.as_bytes())
            .map_err(|e| StoreError::Corrupt(format!("cannot deflate a batch: {e}")))?;
        let inline = InlineBatch {
            first,
            last,
            posted_at: posted_at.timestamp_micros(),
            entries: String::new(),
            deflated: Some(deflated),
            opens_minute,
            extends: extends.clone(),
        };
        let mut inline_item =
            Self::account_item(&application.account, Some(&current), Carry::Inline(inline));
        inline_item.unindexed_pages = Some(unindexed_after(1));
        let inline_item = to_item(&inline_item)?;
        if item_size_bytes(&inline_item) <= self.inline_max_bytes {
            let committed = if application.events.is_empty() && month_put.is_none() {
                self.put_account(inline_item, current.version).await
            } else {
                let mut items = vec![self.account_put(inline_item, current.version)?];
                items.extend(month_put);
                items.extend(self.outbox_puts(&application.events)?);
                self.transact(items).await
            };
            if committed.is_ok() {
                if let Some(fault) = self.take_fault() {
                    return Err(StoreError::unavailable(SimulatedCrash(fault)));
                }
            }
            return Ok(committed.map(|()| outcome));
        }

        // A large batch: the account item, its pages, the minute item, the closed month and the
        // outbox in one transaction; the markers after it, as debt until written.
        let pages = Self::pages(id, &application.entries, extends.clone())?;
        let mut item =
            Self::account_item(&application.account, Some(&current), Carry::Debt(first, last));
        item.unindexed_pages = Some(unindexed_after(pages.len() as u32));
        let mut items = vec![self.account_put(to_item(&item)?, current.version)?];
        let mut marked = Vec::with_capacity(application.entries.len());
        for page in pages {
            for entry in
                &application.entries[(page.first - first) as usize..=(page.last - first) as usize]
            {
                marked.push((entry.clone(), page.first));
            }
            items.push(self.put(to_item(&page.stored()?)?, Some("attribute_not_exists(pk)"))?);
        }
        if opens_minute {
            let minute = MinuteItem { pk: minute_pk(id), sk: minute_sk(posted_at), first };
            items.push(self.put(to_item(&minute)?, Some("attribute_not_exists(pk)"))?);
        }
        items.extend(month_put);
        items.extend(self.outbox_puts(&application.events)?);

        if let Err(failure) = self.transact(items).await {
            return Ok(Err(failure));
        }
        if let Some(fault) = self.take_fault() {
            return Err(StoreError::unavailable(SimulatedCrash(fault)));
        }
        // Best effort: a failure here leaves the debt for the next poster, never a wrong answer.
        match self.write_batch_markers(id, markers, &marked, extends.as_deref()).await {
            Ok(()) => self.clear_settled(id, Settled::Debt(first)).await,
            Err(error) => warn!(account_id = %id, %error, "markers left as debt"),
        }
        Ok(Ok(outcome))
    }
}

/// What a new account item carries from the last commit for the next poster.
enum Carry {
    /// Nothing: what the last commit left was settled.
    Nothing,
    /// Marker debt of a large batch.
    Debt(u64, u64),
    /// A small batch riding on the account item.
    Inline(InlineBatch),
    /// Whatever the current item carries (a settings change).
    Unchanged,
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u32
}

/// Jittered exponential backoff: about 2 ms doubling to 100 ms.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = (2u64 << attempt.min(6)).min(100);
    Duration::from_millis(1 + u64::from(rand_u32()) % ceiling_ms)
}

#[async_trait]
impl LedgerStore for DynamoStore {
    #[tracing::instrument(skip_all, fields(account_id = %new.id), err)]
    async fn create_account(
        &self,
        new: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        let account = Account::open(new.id.clone(), new.credit_limit_usd, now);
        // New accounts keep one marker per source-id group.
        let item = to_item(&Self::account_item(&account, None, Carry::Nothing))?;
        self.meter_write(&item, WriteKind::Transactional);
        let registry =
            to_item(&RegistryItem { pk: REGISTRY_PK.into(), sk: account.id.as_str().into() })?;
        self.meter_write(&registry, WriteKind::Transactional);
        let items = vec![
            self.put(item, Some("attribute_not_exists(pk)"))?,
            self.put(registry, Some("attribute_not_exists(pk)"))?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(account),
            // Item 0 failing its condition reads as a version conflict: here it means "exists".
            Err(TransactionFailure::AlreadyExists { .. } | TransactionFailure::VersionConflict) => {
                Err(StoreError::AccountExists(new.id))
            }
            Err(failure) => Err(failure.into_store_error(&new.id)),
        }
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        Ok(self.read_account(id).await?.map(|item| item.account))
    }

    #[tracing::instrument(skip_all, fields(account_id = %id), err)]
    async fn modify_account(
        &self,
        id: &AccountId,
        change: AccountChange,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        for attempt in 0..MAX_CONFLICT_RETRIES {
            let current = self
                .read_account(id)
                .await?
                .ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
            let mut next = current.account.clone();
            change(&mut next)?;
            let events = settle_settings_change(&current.account, &mut next, now)?;
            let item = Self::account_item(&next, Some(&current), Carry::Unchanged);
            // Without events the account item is all there is to write: one conditional
            // `PutItem` (a standard write, half a transaction's units). Holds are changes like
            // this, one per authorization.
            let committed = if events.is_empty() {
                self.put_account(to_item(&item)?, current.version).await
            } else {
                let mut items = vec![self.account_put(to_item(&item)?, current.version)?];
                items.extend(self.outbox_puts(&events)?);
                self.transact(items).await
            };
            match committed {
                Ok(()) => return Ok(next),
                Err(failure) if failure.is_retryable() => {
                    messaging::metrics::count(messaging::metrics::CONTENTION_RETRIES, 1);
                    tokio::time::sleep(backoff(attempt)).await
                }
                Err(failure) => return Err(failure.into_store_error(id)),
            }
        }
        Err(StoreError::Contention(id.clone()))
    }

    #[tracing::instrument(skip_all, fields(account_id = %id), err)]
    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn PostingSource>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError> {
        let mut throttled = 0;
        for attempt in 0..MAX_CONFLICT_RETRIES {
            match self.try_post(id, &*source, now).await? {
                Ok(outcome) => return Ok(outcome),
                Err(TransactionFailure::Throttled) => {
                    throttled += 1;
                    if throttled > 5 {
                        return Err(StoreError::Throttled);
                    }
                    tokio::time::sleep(backoff(attempt + 3)).await;
                }
                Err(failure) if failure.is_retryable() => {
                    messaging::metrics::count(messaging::metrics::CONTENTION_RETRIES, 1);
                    tokio::time::sleep(backoff(attempt)).await
                }
                Err(failure) => return Err(failure.into_store_error(id)),
            }
        }
        Err(StoreError::Contention(id.clone()))
    }

    async fn entries(&self, id: &AccountId, query: &EntryQuery) -> Result<EntryPage, StoreError> {
        let limit = query.checked_limit()? as usize;
        let cursor = match &query.cursor {
            None => None,
            Some(cursor) => Some(decode_page_cursor(cursor)?),
        };
        let account =
            self.read_account(id).await?.ok_or_else(|| StoreError::AccountNotFound(id.clone()))?;
        let last_seq = account.account.last_seq;
        let (mut page_first, after) = match cursor {
            // A cursor names the page of an entry this API returned: never past the end.
            Some((page, after)) if page > last_seq || after > last_seq => {
                return Err(StoreError::Rejected(ledger::LedgerError::BadCursor));
            }
            Some(position) => position,
            None => (self.first_page_for(id, query.from).await?, 0),
        };
        let mut entries: Vec<Entry> = Vec::new();
        let mut last_returned: Option<(u64, u64)> = None;
        let mut pages_read = 0;
        while page_first >= 1 && page_first <= last_seq {
            if pages_read == MAX_PAGES_PER_QUERY {
                // Scanned enough for one request: hand back a cursor to continue from here.
                let next = encode_page_cursor(page_first, page_first - 1);
                return Ok(EntryPage { entries, next_cursor: Some(next) });
            }
            // The last batch may still ride on the account item (read above, so consistent
            // with `last_seq`): its page may not be written yet.
            let inline = account.inline.as_ref().filter(|batch| batch.first == page_first);
            let page = match inline {
                Some(batch) => batch.page(id),
                None => match self.read_page(id, page_first).await {
                    // Only a cursor can point at a page start that does not exist.
                    Err(StoreError::Corrupt(_)) if cursor.is_some() && pages_read == 0 => {
                        return Err(StoreError::Rejected(ledger::LedgerError::BadCursor));
                    }
                    other => other?,
                },
            };
            pages_read += 1;
            for entry in Self::page_entries(id, &page)? {
                if entry.seq <= after {
                    continue;
                }
                if query.to.is_some_and(|to| entry.posted_at >= to) {
                    return Ok(EntryPage { entries, next_cursor: None });
                }
                if !query.admits(&entry) {
                    continue;
                }
                if entries.len() == limit {
                    let (page, seq) = last_returned.expect("a full page has a last entry");
                    return Ok(EntryPage {
                        entries,
                        next_cursor: Some(encode_page_cursor(page, seq)),
                    });
                }
                last_returned = Some((page.first, entry.seq));
                entries.push(entry);
            }
            page_first = page.last + 1;
        }
        Ok(EntryPage { entries, next_cursor: None })
    }

    async fn closed_month(
        &self,
        id: &AccountId,
        month: ledger::Month,
    ) -> Result<Option<MonthTotals>, StoreError> {
        let Some(item) = self.get(month_pk(id), &month.to_string()).await? else {
            return Ok(None);
        };
        let item: MonthItem = from_item(item)?;
        serde_json::from_str(&item.totals)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("month {month} of {id} unreadable: {e}")))
    }

    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        let limit = check_ids_limit(limit)?;
        let mut ids = Vec::with_capacity(limit);
        let mut start: Option<Item> =
            after.map(|after| Self::key(REGISTRY_PK.into(), after.as_str()));
        // One query usually answers; a 1 MB response limit may split it.
        while ids.len() < limit {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(REGISTRY_PK.into()))
                .set_exclusive_start_key(start.take())
                .limit((limit - ids.len()) as i32)
                .consistent_read(true)
                .send()
                .await
                .map_err(classify)?;
            if let Some(meter) = &self.meter {
                // A query is billed on the summed size of what it read, per 4 KB.
                let bytes: usize = output.items().iter().map(item_size_bytes).sum();
                meter.record_read(read_units(bytes.max(1)));
            }
            for item in output.items.unwrap_or_default() {
                let entry: RegistryItem = from_item(item)?;
                ids.push(AccountId::parse(entry.sk).map_err(|e| {
                    StoreError::Corrupt(format!("registry holds a bad account id: {e}"))
                })?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(ids)
    }

    async fn outbox_page(&self, after: Option<&str>, limit: u32) -> Result<OutboxPage, StoreError> {
        let limit = limit.clamp(1, 1_000) as usize;
        if let Some(after) = after {
            parse_outbox_position(after)?;
        }
        // Every shard's next `limit + 1` items, merged by position: the first `limit` of them
        // are the page, and one more says the outbox goes on.
        let mut found: Vec<(String, Result<LedgerEvent, String>)> = Vec::new();
        let mut horizon: Option<String> = None;
        for shard in 0..OUTBOX_SHARDS {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", AttributeValue::S(outbox_pk(shard)))
                .limit(limit as i32 + 1)
                .consistent_read(true);
            let request = match after {
                None => request.key_condition_expression("pk = :pk"),
                Some(after) => request
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", AttributeValue::S(after.to_string())),
            };
            let output = request.send().await.map_err(classify)?;
            let items = output.items.unwrap_or_default();
            let cut = output.last_evaluated_key.is_some() && items.len() <= limit;
            let before = found.len();
            for item in items {
                let Some(AttributeValue::S(sk)) = item.get("sk").cloned() else {
                    return Err(StoreError::Corrupt("an outbox item has no sort key".into()));
                };
                let event = from_item::<OutboxItem>(item)
                    .map_err(|e| e.to_string())
                    .and_then(|outbox| {
                        serde_json::from_str::<LedgerEvent>(&outbox.event)
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| format!("outbox item {sk} unreadable: {e}"));
                found.push((sk, event));
            }
            // A response cut at 1 MB before `limit + 1` items says nothing of this shard past its
            // last item: the page must end there, or the cursor would skip what lies beyond.
            if let Some(last) = found.last().filter(|_| cut && found.len() > before) {
                let last = last.0.clone();
                horizon = Some(horizon.map_or(last.clone(), |h: String| h.min(last)));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut more = found.len() > limit;
        if let Some(horizon) = &horizon {
            more |= found.iter().any(|(sk, _)| sk > horizon);
            found.retain(|(sk, _)| sk <= horizon);
        }
        found.truncate(limit);
        let mut page = OutboxPage {
            next_after: if more { found.last().map(|(sk, _)| sk.clone()) } else { None },
            ..OutboxPage::default()
        };
        for (position, event) in found {
            match event {
                Ok(event) => page.events.push(event),
                Err(reason) => page.unreadable.push(UnreadableOutboxItem { position, reason }),
            }
        }
        Ok(page)
    }

    /// Batched deletes, 25 a call: the relay acknowledges a page in a few calls.
    async fn ack_events(&self, events: &[LedgerEvent]) -> Result<(), StoreError> {
        let mut requests = Vec::with_capacity(events.len());
        for event in events {
            if let Some(meter) = &self.meter {
                // An outbox item is far below 1 KB: one unit per delete.
                meter.record_write(&outbox_pk_for(&event.id), 1);
            }
            let delete = DeleteRequest::builder()
                .set_key(Some(Self::key(outbox_pk_for(&event.id), &outbox_sk(event))))
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        self.batch_write(requests).await
    }

    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(outbox_pk_for(&event.id), &outbox_sk(event))))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

impl DynamoStore {
    /// A page at or before the first entry posted at `from`: the first page of the latest
    /// indexed minute not after `from`'s. The index is sparse ([`INDEX_EVERY_PAGES`]), so the
    /// caller skips the entries before `from` on the pages between.
    async fn first_page_for(
        &self,
        id: &AccountId,
        from: Option<DateTime<Utc>>,
    ) -> Result<u64, StoreError> {
        let Some(from) = from else { return Ok(1) };
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk <= :minute")
            .expression_attribute_values(":pk", AttributeValue::S(minute_pk(id)))
            .expression_attribute_values(":minute", AttributeValue::S(minute_sk(from)))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        match output.items.unwrap_or_default().into_iter().next() {
            Some(item) => Ok(from_item::<MinuteItem>(item)?.first),
            None => Ok(1),
        }
    }
}

fn doc_from_item(item: Item) -> Result<Doc, StoreError> {
    let item: DocItem = from_item(item)?;
    if item.version == 0 {
        return Err(StoreError::Corrupt(format!("document {} has version 0", item.sk)));
    }
    Ok(Doc { id: item.sk, version: item.version, body: item.body })
}

/// Documents are single items written with standard conditional writes: a version condition
/// on one item is all the optimistic concurrency they need, so no transactions.
#[async_trait]
impl DocStore for DynamoStore {
    async fn get_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
    ) -> Result<Option<Doc>, StoreError> {
        check_doc_id(id)?;
        self.get(doc_pk(account, kind), id).await?.map(doc_from_item).transpose()
    }

    #[tracing::instrument(skip_all, fields(account_id = %account, kind = kind.as_str()))]
    async fn put_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        body: &str,
        expected_version: Option<u64>,
    ) -> Result<u64, DocError> {
        let version = check_put(id, body, expected_version)?;
        let item = to_item(&DocItem {
            pk: doc_pk(account, kind),
            sk: id.to_string(),
            version,
            body: body.to_string(),
        })?;
        // A write whose condition fails is billed too, so every attempt is counted.
        self.meter_write(&item, WriteKind::Standard);
        let request = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let request = match expected_version {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(expected) => request
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(expected.to_string())),
        };
        match request.send().await {
            Ok(_) => Ok(version),
            Err(error) if errors::is_conditional_check_failed(&error) => Err(DocError::Conflict),
            Err(error) => Err(classify(error).into()),
        }
    }

    #[tracing::instrument(skip_all, fields(account_id = %account, kind = kind.as_str()))]
    async fn delete_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        expected_version: u64,
    ) -> Result<(), DocError> {
        check_delete(id, expected_version)?;
        let pk = doc_pk(account, kind);
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk.clone(), id)))
            .condition_expression("version = :expected")
            .expression_attribute_values(
                ":expected",
                AttributeValue::N(expected_version.to_string()),
            )
            // A delete is billed on the size of the item it removes; the old item says it.
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                if let Some(old) = &output.attributes {
                    self.meter_write(old, WriteKind::Standard);
                }
                Ok(())
            }
            Err(error) if errors::is_conditional_check_failed(&error) => {
                if let Some(meter) = &self.meter {
                    meter.record_write(&pk, 1);
                }
                Err(DocError::Conflict)
            }
            Err(error) => Err(classify(error).into()),
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
        let mut docs = Vec::with_capacity(limit);
        let mut start_key: Option<Item> = None;
        // One query reads at most 1 MB, less than `limit` large documents: continue from where
        // it stopped until the page is full. Every round returns at least one document while
        // more remain (a document is far below 1 MB), so `limit` rounds always suffice.
        for _ in 0..limit {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", AttributeValue::S(doc_pk(account, kind)))
                .scan_index_forward(true)
                .limit(i32::try_from(limit - docs.len()).unwrap_or(i32::MAX))
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take());
            let request = match after {
                None => request.key_condition_expression("pk = :pk"),
                Some(after) => request
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", AttributeValue::S(after.to_string())),
            };
            let output = request.send().await.map_err(classify)?;
            let items = output.items.unwrap_or_default();
            if let Some(meter) = &self.meter {
                // A query is billed on the total size it read, not per item.
                meter.record_read(read_units(items.iter().map(item_size_bytes).sum()));
            }
            for item in items {
                docs.push(doc_from_item(item)?);
            }
            start_key = output.last_evaluated_key;
            if docs.len() >= limit || start_key.is_none() {
                break;
            }
        }
        Ok(docs)
    }
}

/// Cursors name the page to resume in and the last entry returned: `d<page>.<seq>`.
fn encode_page_cursor(page_first: u64, after_seq: u64) -> String {
    format!("d{page_first}.{after_seq}")
}

fn decode_page_cursor(cursor: &str) -> Result<(u64, u64), StoreError> {
    cursor
        .strip_prefix('d')
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(page, seq)| Some((page.parse().ok()?, seq.parse().ok()?)))
        .filter(|(page, seq): &(u64, u64)| *page >= 1 && *seq >= *page - 1)
        .ok_or(StoreError::Rejected(ledger::LedgerError::BadCursor))
}

pub use table::{client_for_endpoint, create_table, delete_table};
