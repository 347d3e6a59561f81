//! The outbox relay: one event that fails to publish, or one outbox item that cannot be read,
//! never stops the others; events go out in batches of ten.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::*;
use ledger::memory::MemoryStore;
use ledger::{
    Account, AccountChange, AccountId, BillingItem, EntryPage, EntryQuery, LedgerEvent,
    LedgerStore, NewAccount, OutboxPage, PostOutcome, Posting, PostingSource, SourceId, StoreError,
    UnreadableOutboxItem,
};
use messaging::metrics::OUTBOX_UNREADABLE as UNREADABLE_METRIC;
use messaging::outbox::{sweep, RelayReport, PUBLISH_BATCH};
use rust_decimal_macros::dec;

/// `count` accounts funded one after the other: each funding reactivates its account and raises
/// one event, in account order.
async fn funded_accounts(count: usize) -> MemoryStore {
    let store = MemoryStore::new();
    for index in 0..count {
        let id = account_id(&format!("a{index:02}"));
        store
            .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, now())
            .await
            .unwrap();
        let funding = Posting::credit(
            SourceId::parse("fund").unwrap(),
            BillingItem::FundsAdded,
            usd(dec!(5)),
            now(),
        )
        .unwrap();
        let at = now() + chrono::Duration::seconds(index as i64);
        store.post(&id, vec![funding], at).await.unwrap();
    }
    store
}

fn accounts_of(events: &[LedgerEvent]) -> Vec<String> {
    let mut accounts: Vec<String> = events.iter().map(|e| e.account_id.to_string()).collect();
    accounts.sort();
    accounts
}

#[tokio::test]
async fn a_failed_publish_leaves_that_event_pending_and_the_sweep_relays_the_rest() {
    let store = funded_accounts(5).await;
    let sink = RecordingSink::failing_for("a01");
    let report = sweep(&store, &sink, 100, 1_000).await.expect("the sweep itself succeeds");
    assert_eq!(report, RelayReport { relayed: 4, failed: 1, unreadable: 0 });
    assert_eq!(accounts_of(&sink.events()), vec!["a00", "a02", "a03", "a04"]);
    assert_eq!(accounts_of(&store.pending_events(100).await.unwrap()), vec!["a01"]);

    // The next sweep tries it again (and only it).
    let healthy = RecordingSink::default();
    let report = sweep(&store, &healthy, 100, 1_000).await.unwrap();
    assert_eq!(report, RelayReport { relayed: 1, failed: 0, unreadable: 0 });
    assert_eq!(accounts_of(&healthy.events()), vec!["a01"]);
}

#[tokio::test]
async fn a_page_of_failures_does_not_stall_the_sweep_on_the_pages_after_it() {
    let store = funded_accounts(5).await;
    let sink = RecordingSink::failing_for("a00");
    // Pages of one: the first page is all failure; the sweep pages on past it.
    let report = sweep(&store, &sink, 1, 1_000).await.unwrap();
    assert_eq!(report, RelayReport { relayed: 4, failed: 1, unreadable: 0 });
    assert_eq!(accounts_of(&store.pending_events(100).await.unwrap()), vec!["a00"]);
}

#[tokio::test]
async fn events_are_published_in_batches_of_ten() {
    assert_eq!(PUBLISH_BATCH, 10);
    let store = funded_accounts(25).await;
    let sink = RecordingSink::default();
    let report = sweep(&store, &sink, 100, 1_000).await.unwrap();
    assert_eq!(report.relayed, 25);
    assert_eq!(sink.batch_sizes(), vec![5, 10, 10]);
    assert!(store.pending_events(100).await.unwrap().is_empty());
    let mut ids: Vec<String> = sink.events().iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25, "each event published once");
}

/// A MemoryStore whose outbox also holds one item it cannot read, before every event.
struct DamagedOutbox(MemoryStore);

#[async_trait]
impl LedgerStore for DamagedOutbox {
    async fn create_account(
        &self,
        a: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.0.create_account(a, now).await
    }
    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.0.account(id).await
    }
    async fn modify_account(
        &self,
        id: &AccountId,
        change: AccountChange,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.0.modify_account(id, change, now).await
    }
    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn PostingSource>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError> {
        self.0.post_with(id, source, now).await
    }
    async fn entries(&self, id: &AccountId, query: &EntryQuery) -> Result<EntryPage, StoreError> {
        self.0.entries(id, query).await
    }
    async fn closed_month(
        &self,
        id: &AccountId,
        month: ledger::Month,
    ) -> Result<Option<ledger::MonthTotals>, StoreError> {
        self.0.closed_month(id, month).await
    }
    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        self.0.account_ids(after, limit).await
    }
    async fn outbox_page(&self, after: Option<&str>, limit: u32) -> Result<OutboxPage, StoreError> {
        let mut page = self.0.outbox_page(after, limit).await?;
        if after.is_none() {
            page.unreadable.push(UnreadableOutboxItem {
                position: "00000000000000000000#damaged#00000000000000000001#x".into(),
                reason: "outbox item x unreadable: unknown variant `from_the_future`".into(),
            });
        }
        Ok(page)
    }
    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError> {
        self.0.ack_event(event).await
    }
}

#[tokio::test]
async fn an_unreadable_outbox_item_is_skipped_and_counted_on_every_sweep_and_the_rest_relayed() {
    let store = DamagedOutbox(funded_accounts(3).await);
    let sink = RecordingSink::default();
    let report = sweep(&store, &sink, 100, 1_000).await.expect("the sweep goes on past it");
    assert_eq!(report, RelayReport { relayed: 3, failed: 0, unreadable: 1 });
    assert_eq!(accounts_of(&sink.events()), vec!["a00", "a01", "a02"]);
    // Still there, still counted: the alarm holds until someone removes it.
    let again = sweep(&store, &sink, 100, 1_000).await.unwrap();
    assert_eq!(again, RelayReport { relayed: 0, failed: 0, unreadable: 1 });
}

#[tokio::test]
async fn a_sweep_looks_at_most_at_max_items_including_failures() {
    let store = funded_accounts(5).await;
    let sink = RecordingSink::failing_for("a00");
    let report = sweep(&store, &sink, 2, 3).await.unwrap();
    assert_eq!(report, RelayReport { relayed: 2, failed: 1, unreadable: 0 });
    assert_eq!(store.pending_events(100).await.unwrap().len(), 3);
}

#[test]
fn the_report_is_one_embedded_metric_format_line_the_alarm_reads() {
    let report = RelayReport { relayed: 7, failed: 2, unreadable: 1 };
    let at = DateTime::parse_from_rfc3339("2026-11-03T17:00:00Z").unwrap().with_timezone(&Utc);
    // The report counts metrics; the Lambda runtime prints them as one EMF line.
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(runtime::telemetry::MetricsLayer);
    tracing::subscriber::with_default(subscriber, || report.count());
    let line = runtime::telemetry::take_metric_line(at).expect("a metric line");
    assert!(!line.contains('\n'));
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["_aws"]["Timestamp"], 1_793_725_200_000i64);
    let directive = &json["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "ringledger");
    let names: Vec<&str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    let mut expected = vec!["OutboxRelayed", "OutboxPublishFailed", UNREADABLE_METRIC];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(
        (json["OutboxRelayed"].clone(), json["OutboxPublishFailed"].clone()),
        (7.into(), 2.into())
    );
    assert_eq!(json[UNREADABLE_METRIC], 1);
}
