//! Item shapes, mapped with serde_dynamo.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use ledger::{Account, AccountId, Amount, BillingItem, Entry, EntryKind, SourceId, StoreError};

pub type Item = HashMap<String, AttributeValue>;

pub fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::to_item(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot map item: {e}")))
}

pub fn from_item<T: for<'de> Deserialize<'de>>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .map_err(|e| StoreError::Corrupt(format!("cannot read item: {e}")))
}

/// The account item. Stored with the account's JSON deflated (`a`, binary): the attribute
/// names of a nested map were most of the item's bytes, and every write of the account pays
/// for each KB. Items written before carry the account as a map (`account`), and still read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "StoredAccountItem", try_from = "StoredAccountItem")]
pub struct AccountItem {
    pub pk: String,
    pub sk: String,
    pub version: u64,
    pub account: Account,
    /// The seq range of the last committed batch whose source-id markers may not all be
    /// written yet. The next poster writes them before it looks any source id up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debt_first: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debt_last: Option<u64>,
    /// The last committed batch, when it was small enough to ride on the account item instead
    /// of a page: its page, minute-index item and markers are written by the next poster before
    /// it looks any source id up ("flushing"), and readers take its entries from here meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineBatch>,
    /// How this account's idempotency markers are kept: absent for one marker per source id
    /// (accounts created before group markers), [`GROUP_MARKERS`] for one per group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markers: Option<u8>,
    /// Pages written (or owed by an inline batch) since the last page that got a minute-index
    /// item. The index is sparse: a batch opening a new minute indexes its page only once
    /// [`crate::INDEX_EVERY_PAGES`] pages went unindexed, so a reader walks at most that many
    /// pages past its start. Absent on items written before: the next new minute indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unindexed_pages: Option<u32>,
}

/// [`AccountItem::markers`] of accounts whose markers are one item per source-id group.
pub const GROUP_MARKERS: u8 = 2;

/// [`AccountItem`] as DynamoDB holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredAccountItem {
    pk: String,
    sk: String,
    version: u64,
    /// Items written before the account was deflated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<Account>,
    /// The account's JSON, deflated.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    packed: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    debt_first: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    debt_last: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inline: Option<InlineBatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    markers: Option<u8>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    unindexed_pages: Option<u32>,
}

pub(crate) fn deflate(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn inflate(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

impl From<AccountItem> for StoredAccountItem {
    fn from(item: AccountItem) -> Self {
        // An `Account` always serializes; deflating into memory cannot fail.
        let json = serde_json::to_vec(&item.account).expect("an account serializes");
        let packed = deflate(&json).expect("deflating into memory");
        StoredAccountItem {
            pk: item.pk,
            sk: item.sk,
            version: item.version,
            account: None,
            packed: Some(packed),
            debt_first: item.debt_first,
            debt_last: item.debt_last,
            inline: item.inline,
            markers: item.markers,
            unindexed_pages: item.unindexed_pages,
        }
    }
}

impl TryFrom<StoredAccountItem> for AccountItem {
    type Error = String;

    fn try_from(stored: StoredAccountItem) -> Result<Self, String> {
        let account = match (stored.account, stored.packed) {
            (_, Some(packed)) => {
                let json = inflate(&packed).map_err(|e| format!("account unreadable: {e}"))?;
                serde_json::from_slice(&json).map_err(|e| format!("account unreadable: {e}"))?
            }
            (Some(account), None) => account,
            (None, None) => return Err("an account item without its account".into()),
        };
        Ok(AccountItem {
            pk: stored.pk,
            sk: stored.sk,
            version: stored.version,
            account,
            debt_first: stored.debt_first,
            debt_last: stored.debt_last,
            inline: stored.inline,
            markers: stored.markers,
            unindexed_pages: stored.unindexed_pages,
        })
    }
}

/// A small batch carried on the account item (see [`AccountItem::inline`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineBatch {
    #[serde(rename = "f")]
    pub first: u64,
    #[serde(rename = "l")]
    pub last: u64,
    /// Posting time (micros since the epoch, UTC).
    #[serde(rename = "t")]
    pub posted_at: i64,
    /// JSON array of [`PageEntry`], exactly as its page will hold it (empty when stored
    /// deflated in [`InlineBatch::deflated`], as batches are now).
    #[serde(rename = "e", default, skip_serializing_if = "String::is_empty")]
    pub entries: String,
    /// The same JSON, deflated: the account item is paid for by the KB on every write.
    #[serde(rename = "z", default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub deflated: Option<Vec<u8>>,
    /// The batch is the first of its minute: flushing writes the minute-index item.
    #[serde(rename = "n", default)]
    pub opens_minute: bool,
    /// The existing groups this batch adds to (see [`PageItem::extends`]).
    #[serde(rename = "x", alias = "g", default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
}

/// One batch's entries (or a part of a large batch), in a compact form.
///
/// Stored deflated ([`PageItem::stored`]); read with [`PageItem::entries_json`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageItem {
    pub pk: String,
    pub sk: String,
    pub first: u64,
    pub last: u64,
    /// Every entry of a batch shares its posting time (micros since the epoch, UTC).
    pub posted_at: i64,
    /// JSON array of [`PageEntry`] (empty when stored deflated in [`PageItem::deflated`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entries: String,
    /// The same JSON, deflated: how pages are stored (about a quarter of the bytes, so of the
    /// write units, which a page pays twice inside the transaction). Pages written before this
    /// carry `entries` instead.
    #[serde(rename = "z", default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub deflated: Option<Vec<u8>>,
    /// Group markers only: JSON array of the groups that already existed when this batch
    /// added members to them (those members get per-source-id markers; a group marker is
    /// written once, by the batch that created it). On the batch's first page; absent when
    /// the batch only created groups. Pages written before carry `prior`, an object keyed by
    /// the same groups.
    #[serde(rename = "x", alias = "prior", default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageEntry {
    #[serde(rename = "s")]
    pub seq: u64,
    #[serde(rename = "k")]
    pub kind: EntryKind,
    #[serde(rename = "i")]
    pub item: BillingItem,
    #[serde(rename = "a")]
    pub amount_usd: Amount,
    #[serde(rename = "b")]
    pub balance_after_usd: Decimal,
    #[serde(rename = "o")]
    pub occurred_at_micros: i64,
    #[serde(rename = "r")]
    pub source_id: SourceId,
    #[serde(rename = "d", default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// The credit grants' shares of the entry (see `ledger::grant`).
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<ledger::GrantShare>,
}

impl PageEntry {
    pub fn from_entry(entry: &Entry) -> Self {
        PageEntry {
            seq: entry.seq,
            kind: entry.kind,
            item: entry.item,
            amount_usd: entry.amount_usd,
            balance_after_usd: entry.balance_after_usd,
            occurred_at_micros: entry.occurred_at.timestamp_micros(),
            source_id: entry.source_id.clone(),
            details: entry.details.clone(),
            grants: entry.grants.clone(),
        }
    }

    pub fn into_entry(
        self,
        account_id: &AccountId,
        posted_at: DateTime<Utc>,
    ) -> Result<Entry, StoreError> {
        let occurred_at = DateTime::<Utc>::from_timestamp_micros(self.occurred_at_micros)
            .ok_or_else(|| StoreError::Corrupt("entry time out of range".into()))?;
        Ok(Entry {
            account_id: account_id.clone(),
            seq: self.seq,
            kind: self.kind,
            item: self.item,
            amount_usd: self.amount_usd,
            balance_after_usd: self.balance_after_usd,
            posted_at,
            occurred_at,
            source_id: self.source_id,
            details: self.details,
            grants: self.grants,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarkerItem {
    pub pk: String,
    pub sk: String,
    pub seq: u64,
    pub page: u64,
    /// The charge the source id applied, so a duplicate is compared without reading its page.
    /// Absent on markers written before they kept it (those are not compared).
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EntryKind>,
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub item: Option<BillingItem>,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub amount_usd: Option<Amount>,
}

impl MarkerItem {
    pub fn applied(&self) -> ledger::AppliedEntry {
        let charge = match (self.kind, self.item, self.amount_usd) {
            (Some(kind), Some(item), Some(amount)) => Some((kind, item, amount)),
            _ => None,
        };
        ledger::AppliedEntry { seq: self.seq, charge }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinuteItem {
    pub pk: String,
    pub sk: String,
    pub first: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxItem {
    pub pk: String,
    pub sk: String,
    /// JSON of the ledger event.
    pub event: String,
}

/// A document: `version` is a number attribute, `body` the JSON as a string attribute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocItem {
    pub pk: String,
    /// The document id.
    pub sk: String,
    pub version: u64,
    pub body: String,
}

/// A closed month's totals (JSON of [`ledger::MonthTotals`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonthItem {
    pub pk: String,
    /// `YYYY-MM`.
    pub sk: String,
    pub totals: String,
}

/// One account in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryItem {
    pub pk: String,
    /// The account id.
    pub sk: String,
}

/// One idempotency marker for a group of source ids (a usage event's charges): the members
/// the batch that created the group applied, with the charge each applied. Written once;
/// members added later have per-source-id markers ([`MarkerItem`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupMarkerItem {
    pub pk: String,
    pub sk: String,
    /// The first seq of the batch that created the group (and wrote this marker, once).
    #[serde(rename = "b")]
    pub batch: u64,
    /// JSON array of [`GroupMember`].
    #[serde(rename = "m")]
    pub members: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    #[serde(rename = "r")]
    pub source_id: SourceId,
    #[serde(rename = "s")]
    pub seq: u64,
    #[serde(rename = "p")]
    pub page: u64,
    #[serde(rename = "k")]
    pub kind: EntryKind,
    #[serde(rename = "i")]
    pub item: BillingItem,
    #[serde(rename = "a")]
    pub amount_usd: Amount,
}

impl GroupMember {
    pub fn of(entry: &Entry, page: u64) -> Self {
        GroupMember {
            source_id: entry.source_id.clone(),
            seq: entry.seq,
            page,
            kind: entry.kind,
            item: entry.item,
            amount_usd: entry.amount_usd,
        }
    }

    pub fn applied(&self) -> ledger::AppliedEntry {
        ledger::AppliedEntry {
            seq: self.seq,
            charge: Some((self.kind, self.item, self.amount_usd)),
        }
    }
}

impl PageItem {
    /// The page as it is stored: its entries' JSON deflated.
    pub fn stored(mut self) -> Result<Self, StoreError> {
        use std::io::Write;
        if self.deflated.is_none() {
            let mut encoder =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            encoder
                .write_all(self.entries.as_bytes())
                .and_then(|()| encoder.finish())
                .map(|bytes| self.deflated = Some(bytes))
                .map_err(|e| StoreError::Corrupt(format!("cannot deflate a page: {e}")))?;
            self.entries.clear();
        }
        Ok(self)
    }

    /// The entries' JSON, whichever way the page was stored.
    pub fn entries_json(&self) -> Result<std::borrow::Cow<'_, str>, StoreError> {
        use std::io::Read;
        match &self.deflated {
            None => Ok(std::borrow::Cow::Borrowed(&self.entries)),
            Some(bytes) => {
                let mut json = String::new();
                flate2::read::DeflateDecoder::new(bytes.as_slice())
                    .read_to_string(&mut json)
                    .map_err(|e| {
                        StoreError::Corrupt(format!("page {} unreadable: {e}", self.pk))
                    })?;
                Ok(std::borrow::Cow::Owned(json))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_at<'a>(item: &'a Item, path: &[&str]) -> &'a str {
        let (last, maps) = path.split_last().unwrap();
        let mut map = item;
        for key in maps {
            map = map[*key].as_m().unwrap();
        }
        map[*last].as_s().unwrap()
    }

    #[test]
    fn months_are_stored_as_yyyy_mm_strings_and_no_month_as_empty() {
        let now = "2026-10-05T12:00:00Z".parse().unwrap();
        let account = Account::open(AccountId::parse("acme").unwrap(), None, now);
        let fresh = AccountItem {
            pk: "A#acme".into(),
            sk: "A".into(),
            version: 0,
            account: account.clone(),
            debt_first: None,
            debt_last: None,
            inline: None,
            markers: None,
            unindexed_pages: None,
        };
        let item = to_item(&fresh).unwrap();
        assert!(matches!(item.get("a"), Some(AttributeValue::B(_))), "stored deflated: {item:?}");
        assert!(!item.contains_key("account"));
        let read: AccountItem = from_item(item).unwrap();
        assert_eq!(read.account, account);
        // An item written before the account was deflated: the account as a map.
        let mut legacy = to_item(&fresh).unwrap();
        legacy.remove("a");
        legacy.insert(
            "account".into(),
            AttributeValue::M(serde_dynamo::aws_sdk_dynamodb_1::to_item(&account).unwrap()),
        );
        assert_eq!(string_at(&legacy, &["account", "plan_usage", "month"]), "");
        assert_eq!(string_at(&legacy, &["account", "month_totals", "month"]), "");
        let read: AccountItem = from_item(legacy).unwrap();
        assert_eq!(read.account, account);

        let october: ledger::Month = "2026-10".parse().unwrap();
        let mut used = account;
        used.plan_usage = ledger::PlanUsage { month: Some(october), included_seconds_used: 60 };
        used.month_totals = Some(ledger::MonthTotals::empty(october));
        used.recharge_stopped = Some(ledger::RechargeStop {
            month: october,
            reason: "monthly cap reached".into(),
            until_lifted: false,
            day: None,
        });
        used.paid_in_usd = rust_decimal::Decimal::new(12_345, 2);
        used.overdue_block = Some(ledger::OverdueBlock {
            month: october,
            since: chrono::DateTime::UNIX_EPOCH,
            until_paid_in_usd: rust_decimal::Decimal::new(20_000, 2),
        });
        let json = serde_json::to_value(&used).unwrap();
        assert_eq!(json["overdue_block"]["month"], "2026-10");
        assert_eq!(json["plan_usage"]["month"], "2026-10");
        assert_eq!(json["month_totals"]["month"], "2026-10");
        assert_eq!(json["recharge_stopped"]["month"], "2026-10");
        let item = to_item(&AccountItem { account: used.clone(), ..fresh }).unwrap();
        let read: AccountItem = from_item(item).unwrap();
        assert_eq!(read.account, used);
    }

    #[test]
    fn a_stored_page_reads_back_the_same_entries_and_an_old_one_still_reads() {
        let entries =
            format!("[{}]", vec![r#"{"s":1,"k":"debit","i":"phone_call"}"#; 50].join(","));
        let page = PageItem {
            pk: "A#acme#P#1".into(),
            sk: "P".into(),
            first: 1,
            last: 50,
            posted_at: 0,
            entries: entries.clone(),
            deflated: None,
            extends: None,
        };
        assert_eq!(page.entries_json().unwrap(), entries, "a page written before deflating");
        let stored = page.stored().unwrap();
        assert!(stored.entries.is_empty());
        let bytes = stored.deflated.as_ref().unwrap().len();
        assert!(bytes * 4 < entries.len(), "{bytes} bytes for {}", entries.len());
        assert_eq!(stored.entries_json().unwrap(), entries);
        let item = to_item(&stored).unwrap();
        assert!(matches!(item.get("z"), Some(AttributeValue::B(_))), "{item:?}");
        let back: PageItem = from_item(item).unwrap();
        assert_eq!(back.entries_json().unwrap(), entries);
    }
}
