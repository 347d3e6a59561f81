//! Idempotency markers, and settling what the last commit left for the next poster.
//!
//! Two layouts, chosen per account ([`Markers`]): one marker item per source id (accounts
//! created before group markers), or one per *group* of source ids ([`keys::marker_group`]: a
//! usage event's charges share one), which writes and reads about half as many items for usage.
//!
//! A group marker is written once, by the batch that created the group, and never changes: it
//! holds the members that batch applied. A later batch that adds a member to a group that
//! already existed (a redelivery under a rate card that grew a charge) gives that member a
//! per-source-id marker instead, and records the groups it extended (`extends`, on its first
//! page or inline) so whoever writes its markers knows which layout each member takes. Every
//! writer of a marker therefore writes the same content, so markers go out unconditionally in
//! `BatchWriteItem` calls of 25, all at once, and a late or repeated writer cannot drop a
//! member. A lookup reads the group markers and, only for a candidate whose group exists
//! without it, that candidate's per-source-id marker.
//!
//! What the last commit left: *marker debt* (a large batch's markers, written after the commit;
//! the account item names the batch) or an *inline batch* (a small batch carried on the account
//! item: its page, minute-index item and markers are all still to write). Either is settled by
//! the next poster before it looks anything up, and settling is idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use ledger::{AccountId, AppliedEntry, Entry, SourceId, StoreError};

use crate::errors::classify;
use crate::items::{
    from_item, to_item, AccountItem, GroupMarkerItem, GroupMember, InlineBatch, Item, MinuteItem,
    PageItem, GROUP_MARKERS,
};
use crate::keys::*;
use crate::{backoff, DynamoStore, BATCH_GET_MAX, MAX_UNPROCESSED_RETRIES};

/// How an account keeps its idempotency markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Markers {
    PerSource,
    PerGroup,
}

impl Markers {
    pub(crate) fn of(account: &AccountItem) -> Self {
        if account.markers == Some(GROUP_MARKERS) {
            Markers::PerGroup
        } else {
            Markers::PerSource
        }
    }
}

/// What a lookup found: the applied entries of the source ids asked about and, for group
/// markers, which of their groups already exist (a batch adding to one marks its members one
/// by one).
#[derive(Debug, Default)]
pub(crate) struct Known {
    pub applied: HashMap<SourceId, AppliedEntry>,
    pub groups: HashSet<String>,
}

impl Known {
    /// The existing groups that `entries` add to, as the JSON a page or an inline batch carries
    /// (`None` when they only create groups, the usual case).
    pub(crate) fn extends_of(&self, entries: &[Entry]) -> Result<Option<String>, StoreError> {
        let extended: BTreeSet<&str> = entries
            .iter()
            .map(|e| marker_group(&e.source_id))
            .filter(|group| self.groups.contains(*group))
            .collect();
        if extended.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(&extended)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("extended groups: {e}")))
    }
}

/// The groups a batch extended: a JSON array of group names, or (pages and inline batches
/// written before group markers became write-once) an object whose keys are those groups.
fn parse_extends(extends: Option<&str>) -> Result<HashSet<String>, StoreError> {
    let Some(json) = extends else { return Ok(HashSet::new()) };
    let unreadable =
        |e: serde_json::Error| StoreError::Corrupt(format!("extended groups unreadable: {e}"));
    if json.trim_start().starts_with('{') {
        let prior: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(json).map_err(unreadable)?;
        return Ok(prior.into_keys().collect());
    }
    serde_json::from_str(json).map_err(unreadable)
}

impl DynamoStore {
    /// Which of `sources` already have an entry on this account, and at which seq.
    pub(crate) async fn lookup(
        &self,
        id: &AccountId,
        markers: Markers,
        sources: &[SourceId],
    ) -> Result<Known, StoreError> {
        match markers {
            Markers::PerSource => Ok(Known {
                applied: self.lookup_markers(id, sources).await?,
                groups: HashSet::new(),
            }),
            Markers::PerGroup => self.lookup_groups(id, sources).await,
        }
    }

    async fn lookup_groups(
        &self,
        id: &AccountId,
        sources: &[SourceId],
    ) -> Result<Known, StoreError> {
        let groups: Vec<String> = {
            let mut seen = HashSet::new();
            sources
                .iter()
                .map(marker_group)
                .filter(|g| seen.insert(*g))
                .map(|g| group_marker_pk(id, g))
                .collect()
        };
        let items = self.consistent_batch_get(groups, GROUP_MARKER_SK).await?;
        let mut members_of: HashMap<String, HashMap<SourceId, AppliedEntry>> = HashMap::new();
        for item in items {
            let marker: GroupMarkerItem = from_item(item)?;
            let members: Vec<GroupMember> = serde_json::from_str(&marker.members).map_err(|e| {
                StoreError::Corrupt(format!("marker {} unreadable: {e}", marker.pk))
            })?;
            let group = marker
                .pk
                .strip_prefix(&group_marker_pk(id, ""))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("marker {} was not asked for", marker.pk))
                })?
                .to_string();
            members_of.insert(
                group,
                members.iter().map(|m| (m.source_id.clone(), m.applied())).collect(),
            );
        }
        let mut known = Known::default();
        // A candidate whose group exists without it may have been added by a later batch:
        // its own marker says (asked only for redeliveries, whose groups exist).
        let mut added_later = Vec::new();
        for source in sources {
            let Some(members) = members_of.get(marker_group(source)) else { continue };
            match members.get(source) {
                Some(applied) => {
                    known.applied.insert(source.clone(), *applied);
                }
                None => added_later.push(source.clone()),
            }
        }
        if !added_later.is_empty() {
            known.applied.extend(self.lookup_markers(id, &added_later).await?);
        }
        known.groups = members_of.into_keys().collect();
        Ok(known)
    }

    /// Consistent `BatchGetItem` of `pks` (one sort key), 100 keys a call, the calls at once,
    /// unprocessed keys retried with backoff.
    pub(crate) async fn consistent_batch_get(
        &self,
        pks: Vec<String>,
        sk: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let calls = pks.chunks(BATCH_GET_MAX).map(|chunk| {
            let keys: Vec<Item> = chunk.iter().map(|pk| Self::key(pk.clone(), sk)).collect();
            self.batch_get_chunk(keys)
        });
        let mut items = Vec::new();
        for result in futures::future::join_all(calls).await {
            items.extend(result?);
        }
        Ok(items)
    }

    async fn batch_get_chunk(&self, mut keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::new();
        for attempt in 0..=MAX_UNPROCESSED_RETRIES {
            if keys.is_empty() {
                break;
            }
            if attempt == MAX_UNPROCESSED_RETRIES {
                return Err(StoreError::Throttled);
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys.clone()))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if let Some(meter) = &self.meter {
                // Consistent reads bill at least one unit per key asked for, found or not.
                meter.record_read(keys.len() as u64);
            }
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(classify)?;
            for item in output.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default()
            {
                self.meter_read(&item);
                found.push(item);
            }
            keys = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if !keys.is_empty() {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Ok(found)
    }

    /// Write the markers of a committed batch: `entries` with the first seq of the page each
    /// is on, `extends` the groups it added to (their new members get per-source-id markers).
    pub(crate) async fn write_batch_markers(
        &self,
        id: &AccountId,
        markers: Markers,
        entries: &[(Entry, u64)],
        extends: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut items = Vec::new();
        match markers {
            Markers::PerSource => {
                for (entry, page) in entries {
                    items.push(to_item(&Self::marker(id, entry, *page))?);
                }
            }
            Markers::PerGroup => {
                let Some(batch) = entries.first().map(|(e, _)| e.seq) else { return Ok(()) };
                let extended = parse_extends(extends)?;
                let mut created: BTreeMap<&str, Vec<GroupMember>> = BTreeMap::new();
                for (entry, page) in entries {
                    let group = marker_group(&entry.source_id);
                    if extended.contains(group) {
                        items.push(to_item(&Self::marker(id, entry, *page))?);
                    } else {
                        created.entry(group).or_default().push(GroupMember::of(entry, *page));
                    }
                }
                for (group, members) in created {
                    items.push(to_item(&GroupMarkerItem {
                        pk: group_marker_pk(id, group),
                        sk: GROUP_MARKER_SK.into(),
                        batch,
                        members: serde_json::to_string(&members)
                            .map_err(|e| StoreError::Corrupt(format!("group marker: {e}")))?,
                    })?);
                }
            }
        }
        self.batch_put(items).await
    }

    /// Pay marker debt: read the batch `first..=last` back from its pages and write its markers
    /// (idempotent).
    pub(crate) async fn pay_debt(
        &self,
        id: &AccountId,
        markers: Markers,
        first: u64,
        last: u64,
    ) -> Result<(), StoreError> {
        let mut page_first = first;
        let mut entries = Vec::new();
        let mut extends = None;
        while page_first <= last {
            let page = self.read_page(id, page_first).await?;
            if page_first == first {
                extends = page.extends.clone();
            }
            for entry in Self::page_entries(id, &page)? {
                entries.push((entry, page.first));
            }
            page_first = page.last + 1;
        }
        self.write_batch_markers(id, markers, &entries, extends.as_deref()).await
    }

    /// Write what an inline batch still owes: its page, its minute-index item and its markers
    /// (all idempotent: the content follows from the committed batch).
    pub(crate) async fn flush_inline(
        &self,
        id: &AccountId,
        markers: Markers,
        inline: &InlineBatch,
    ) -> Result<(), StoreError> {
        let page = inline.page(id);
        let entries: Vec<(Entry, u64)> =
            Self::page_entries(id, &page)?.into_iter().map(|e| (e, inline.first)).collect();
        let mut items = vec![to_item(&page.clone().stored()?)?];
        if inline.opens_minute {
            let posted_at = chrono::DateTime::from_timestamp_micros(inline.posted_at)
                .ok_or_else(|| StoreError::Corrupt("inline batch time out of range".into()))?;
            items.push(to_item(&MinuteItem {
                pk: minute_pk(id),
                sk: minute_sk(posted_at),
                first: inline.first,
            })?);
        }
        let (written, marked) = tokio::join!(
            self.batch_put(items),
            self.write_batch_markers(id, markers, &entries, inline.extends.as_deref())
        );
        written.and(marked)
    }

    /// Write what the account's last commit left for the next poster (a large batch's markers,
    /// or an inline batch's page, minute item and markers), as the next posting would, and
    /// say what was written. It stays on the account item until a commit replaces it (or
    /// [`DynamoStore::settle`] takes it off). Benchmarks call it to count what a stream of
    /// postings owes when it stops; nothing needs it for correctness.
    pub async fn write_pending(&self, id: &AccountId) -> Result<Option<Settled>, StoreError> {
        let Some(current) = self.read_account(id).await? else {
            return Err(StoreError::AccountNotFound(id.clone()));
        };
        let markers = Markers::of(&current);
        if let Some((first, last)) = current.debt_first.zip(current.debt_last) {
            self.pay_debt(id, markers, first, last).await?;
            return Ok(Some(Settled::Debt(first)));
        }
        if let Some(inline) = &current.inline {
            self.flush_inline(id, markers, inline).await?;
            return Ok(Some(Settled::Inline(inline.first)));
        }
        Ok(None)
    }

    /// [`DynamoStore::write_pending`], then take it off the account item.
    pub async fn settle(&self, id: &AccountId) -> Result<(), StoreError> {
        if let Some(settled) = self.write_pending(id).await? {
            self.clear_settled(id, settled).await;
        }
        Ok(())
    }

    /// Remove a settled inline batch, or settled debt, from the account item when no commit
    /// follows to replace it (a batch of duplicates only): otherwise every redelivery would
    /// settle it again. Conditional on it still being the same batch; failure is harmless.
    pub(crate) async fn clear_settled(&self, id: &AccountId, settled: Settled) {
        let (expression, condition, first) = match settled {
            Settled::Debt(first) => ("REMOVE debt_first, debt_last", "debt_first = :first", first),
            // Attribute names keep DynamoDB's reserved words out of the expression.
            Settled::Inline(first) => ("REMOVE #inline", "#inline.f = :first", first),
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(account_pk(id), ACCOUNT_SK)))
            .update_expression(expression)
            .condition_expression(condition);
        if matches!(settled, Settled::Inline(_)) {
            request = request.expression_attribute_names("#inline", "inline");
        }
        let result = request
            .expression_attribute_values(":first", AttributeValue::N(first.to_string()))
            .send()
            .await;
        if let Some(meter) = &self.meter {
            // Billed on the account item's size; about 0.5 KB, so one unit.
            meter.record_write(&account_pk(id), 1);
        }
        if let Err(error) = result {
            // Someone else committed since, or the call failed: it is settled either way (the
            // writes exist); the next poster's re-write is idempotent.
            tracing::debug!(account_id = %id, error = %error, "settled batch not cleared");
        }
    }
}

/// What [`DynamoStore::clear_settled`] removes.
#[derive(Debug, Clone, Copy)]
pub enum Settled {
    Debt(u64),
    Inline(u64),
}

impl InlineBatch {
    /// The page this batch is written to when it is flushed.
    pub(crate) fn page(&self, id: &AccountId) -> PageItem {
        PageItem {
            pk: page_pk(id, self.first),
            sk: PAGE_SK.into(),
            first: self.first,
            last: self.last,
            posted_at: self.posted_at,
            entries: self.entries.clone(),
            deflated: self.deflated.clone(),
            extends: self.extends.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_events_charges_share_a_group_and_other_ids_are_their_own() {
        let group = |s: &str| marker_group(&SourceId::parse(s).unwrap()).to_string();
        assert_eq!(group("use:evt-1#call"), "use:evt-1");
        assert_eq!(group("use:evt-1#transcription"), "use:evt-1");
        assert_eq!(group("use:evt-1"), "use:evt-1");
        assert_eq!(group("use:a#b#call"), "use:a#b");
        assert_eq!(group("pay:k-1"), "pay:k-1");
        assert_eq!(group("evt#legacy"), "evt#legacy");
        assert_eq!(group("rch:acme:3:v7"), "rch:acme:3:v7");
    }
}
