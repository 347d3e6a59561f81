//! The single-table key design.
//!
//! | item    | pk                         | sk                 |
//! |---------|----------------------------|--------------------|
//! | account | `A#<account>`              | `A`                |
//! | page    | `A#<account>#P#<first_seq>`| `P`                |
//! | minute  | `A#<account>#I`            | `YYYY-MM-DDTHH:MM` |
//! | marker  | `A#<account>#S#<source_id>`| `S`                |
//! | outbox  | `O#<shard>`                | `<micros>#<account>#<version>#<event>` |
//! | document| `A#<account>#D#<kind>`     | `<document id>`    |
//! | month   | `A#<account>#M`            | `YYYY-MM`          |
//! | registry| `R`                        | `<account>`        |
//!
//! Only the account item is written by every posting, once per batch; pages and markers each
//! get a partition key of their own, so a hot account is capped by its account item alone.
//! Documents (profile, payments, idempotency records, audit log) share one partition per account
//! and kind, so listing a kind is an ascending query on the sort key; they never touch the
//! ledger's items. Account ids cannot contain `#`, so no document key collides with another
//! item's key, whatever characters the document id holds.
//!
//! A month item holds a closed month's totals by billing item, written by the posting that
//! opened the next month (once per account and month). The registry lists every account id in
//! one partition (written once, when the account is created), so the monthly jobs walk the
//! accounts with a few queries instead of scanning the ledger.

use chrono::{DateTime, Utc};
use ledger::docs::DocKind;
use ledger::{AccountId, LedgerEvent, SourceId};

pub const OUTBOX_SHARDS: u64 = 8;

pub fn account_pk(id: &AccountId) -> String {
    format!("A#{id}")
}

pub const ACCOUNT_SK: &str = "A";

pub fn page_pk(id: &AccountId, first_seq: u64) -> String {
    format!("A#{id}#P#{first_seq}")
}

pub const PAGE_SK: &str = "P";

pub fn minute_pk(id: &AccountId) -> String {
    format!("A#{id}#I")
}

pub fn minute_sk(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M").to_string()
}

pub fn month_pk(id: &AccountId) -> String {
    format!("A#{id}#M")
}

pub const REGISTRY_PK: &str = "R";

/// The key the cold-start warm-up reads; no item is ever written there.
pub const WARM_UP_PK: &str = "W";

pub fn marker_pk(id: &AccountId, source: &SourceId) -> String {
    format!("A#{id}#S#{source}")
}

pub const MARKER_SK: &str = "S";

/// The group a source id's marker belongs to: a usage charge (`use:<event>#<charge>`) shares
/// one marker with the other charges of its event; any other source id is a group of its own.
/// Any deterministic rule is sound (a group's marker holds every member applied); this one
/// makes a usage event one marker.
pub fn marker_group(source: &SourceId) -> &str {
    let id = source.as_str();
    match id.strip_prefix("use:").and_then(|rest| rest.rfind('#').map(|at| at + 4)) {
        Some(at) => &id[..at],
        None => id,
    }
}

pub fn group_marker_pk(id: &AccountId, group: &str) -> String {
    format!("A#{id}#G#{group}")
}

pub const GROUP_MARKER_SK: &str = "G";

pub fn doc_pk(id: &AccountId, kind: DocKind) -> String {
    format!("A#{id}#D#{}", kind.as_str())
}

pub use ledger::stable_hash;

pub fn outbox_pk_for(event_id: &str) -> String {
    format!("O#{}", stable_hash(event_id) % OUTBOX_SHARDS)
}

pub fn outbox_pk(shard: u64) -> String {
    format!("O#{shard}")
}

/// Sorts by time, then per account by version, like every store's outbox: the event's outbox
/// position, which the relay's cursors name.
pub fn outbox_sk(event: &LedgerEvent) -> String {
    ledger::store::outbox_position(event)
}
