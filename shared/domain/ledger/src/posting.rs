//! Posting rules: how a batch of postings changes an account. Pure; the stores persist the result.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountStatus, MonthTotals};
use crate::entry::{BillingItem, Entry, EntryKind};
use crate::ids::SourceId;
use crate::money::Amount;
use crate::month::Month;
use crate::LedgerError;

/// The most postings one store call accepts; callers chunk bigger batches.
pub const MAX_POSTINGS_PER_CALL: usize = 1_000;
/// The most bytes of JSON details one entry may carry.
pub const MAX_DETAILS_BYTES: usize = 1_024;

/// What happens when a debit would take the balance below the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingRule {
    /// Completed usage and credits: the thing already happened, so it always posts.
    Always,
    /// A purchase asked for in advance: refused when it would take the balance below the floor,
    /// and refused before the terms of service are accepted.
    RefuseBelowFloor,
}

/// A request to change an account's balance, identified by a stable source id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub source_id: SourceId,
    pub kind: EntryKind,
    pub item: BillingItem,
    pub amount_usd: Amount,
    pub rule: PostingRule,
    pub occurred_at: DateTime<Utc>,
    pub details: serde_json::Value,
    /// The hold (authorization id) this posting reports: settled in the same atomic write,
    /// and not counted against the posting's own floor check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settles: Option<String>,
    /// A `credit_grant` credit: the terms of the grant it opens (its id is the source id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<crate::GrantTerms>,
}

impl Posting {
    /// Completed usage: a debit that always posts.
    pub fn usage(
        source_id: SourceId,
        item: BillingItem,
        amount_usd: Amount,
        occurred_at: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        Self::new(source_id, EntryKind::Debit, item, amount_usd, PostingRule::Always, occurred_at)
    }

    /// An advance purchase (a phone number): a debit refused below the floor.
    pub fn purchase(
        source_id: SourceId,
        item: BillingItem,
        amount_usd: Amount,
        occurred_at: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        Self::new(
            source_id,
            EntryKind::Debit,
            item,
            amount_usd,
            PostingRule::RefuseBelowFloor,
            occurred_at,
        )
    }

    /// A credit: funds added, a refund or a positive adjustment.
    pub fn credit(
        source_id: SourceId,
        item: BillingItem,
        amount_usd: Amount,
        occurred_at: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        Self::new(source_id, EntryKind::Credit, item, amount_usd, PostingRule::Always, occurred_at)
    }

    pub fn new(
        source_id: SourceId,
        kind: EntryKind,
        item: BillingItem,
        amount_usd: Amount,
        rule: PostingRule,
        occurred_at: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        if !item.allows(kind) {
            return Err(LedgerError::WrongDirection { item, kind });
        }
        if kind == EntryKind::Credit && rule != PostingRule::Always {
            return Err(LedgerError::CreditsAlwaysPost);
        }
        Ok(Posting {
            source_id,
            kind,
            item,
            amount_usd,
            rule,
            occurred_at: crate::truncate_to_micros(occurred_at),
            details: serde_json::Value::Null,
            settles: None,
            grant: None,
        })
        .and_then(|posting| posting.check_grant().map(|()| posting))
    }

    /// A credit grant: opens a grant of `amount_usd` on the terms given (see [`crate::grant`]).
    pub fn grant(
        source_id: SourceId,
        amount_usd: Amount,
        terms: crate::GrantTerms,
        occurred_at: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        if terms.priority > crate::MAX_GRANT_PRIORITY {
            return Err(LedgerError::GrantTerms);
        }
        Ok(Posting {
            source_id,
            kind: EntryKind::Credit,
            item: BillingItem::CreditGrant,
            amount_usd,
            rule: PostingRule::Always,
            occurred_at: crate::truncate_to_micros(occurred_at),
            details: serde_json::Value::Null,
            settles: None,
            grant: Some(terms),
        })
    }

    /// Only a `credit_grant` credit carries grant terms, and it must: the grant's expiry
    /// debits are the ledger's own.
    pub(crate) fn check_grant(&self) -> Result<(), LedgerError> {
        let is_grant = self.item == BillingItem::CreditGrant;
        let good = match &self.grant {
            Some(terms) => {
                is_grant
                    && self.kind == EntryKind::Credit
                    && terms.priority <= crate::MAX_GRANT_PRIORITY
            }
            None => !is_grant,
        };
        if good {
            Ok(())
        } else {
            Err(LedgerError::GrantTerms)
        }
    }

    /// This posting reports the authorization `hold` (see [`crate::hold`]).
    pub fn settling(mut self, hold: Option<String>) -> Self {
        self.settles = hold;
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Result<Self, LedgerError> {
        let size = serde_json::to_vec(&details).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
        if size > MAX_DETAILS_BYTES {
            return Err(LedgerError::DetailsTooLarge { size_bytes: size });
        }
        self.details = details;
        Ok(self)
    }

    /// Checks a posting (built by hand or deserialized) as strictly as the constructors do.
    pub fn validate(&self) -> Result<(), LedgerError> {
        if !self.item.allows(self.kind) {
            return Err(LedgerError::WrongDirection { item: self.item, kind: self.kind });
        }
        if self.kind == EntryKind::Credit && self.rule != PostingRule::Always {
            return Err(LedgerError::CreditsAlwaysPost);
        }
        self.check_grant()?;
        if self.occurred_at != crate::truncate_to_micros(self.occurred_at) {
            return Err(LedgerError::SubMicrosecondTime);
        }
        if !self.details.is_null() {
            let size = serde_json::to_vec(&self.details).map_or(usize::MAX, |bytes| bytes.len());
            if size > MAX_DETAILS_BYTES {
                return Err(LedgerError::DetailsTooLarge { size_bytes: size });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// The purchase would take the balance below the floor.
    InsufficientBalance {
        balance_usd: Decimal,
        floor_usd: Decimal,
    },
    TermsNotAccepted,
    /// The account is blocked for the invoice of `month`, unpaid past the days overdue the
    /// operator allows.
    InvoiceOverdue {
        month: Month,
    },
}

/// What became of one posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PostingResult {
    Applied {
        seq: u64,
        balance_after_usd: Decimal,
    },
    /// The source id was applied before (or earlier in the same batch): nothing changed.
    /// `seq` is the entry that applied it.
    Duplicate {
        seq: u64,
    },
    /// The source id was applied before as another charge (another kind, item or amount):
    /// nothing changed. The caller reused an id for something else, or what it posts under the
    /// id changed; either needs a look, so it is not reported as a plain duplicate. `kind`,
    /// `item` and `amount_usd` are the entry that holds the id.
    SourceIdReused {
        seq: u64,
        kind: EntryKind,
        item: BillingItem,
        amount_usd: Amount,
    },
    Refused(Refusal),
}

/// What a store knows of the entry that applied a source id, for the duplicate check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedEntry {
    pub seq: u64,
    /// The entry's kind, item and amount; `None` when the store's record of the id predates
    /// keeping them (DynamoDB markers written before markers recorded the charge): such an id is
    /// reported as a duplicate without a comparison.
    pub charge: Option<(EntryKind, BillingItem, Amount)>,
}

impl AppliedEntry {
    pub fn of(entry: &Entry) -> Self {
        AppliedEntry { seq: entry.seq, charge: Some((entry.kind, entry.item, entry.amount_usd)) }
    }

    /// Whether `posting` asks for the same charge (a redelivery), or cannot be compared.
    fn matches(&self, posting: &Posting) -> bool {
        self.charge.is_none_or(|charge| charge == (posting.kind, posting.item, posting.amount_usd))
    }

    fn result_for(&self, posting: &Posting) -> PostingResult {
        match self.charge {
            Some((kind, item, amount_usd)) if !self.matches(posting) => {
                PostingResult::SourceIdReused { seq: self.seq, kind, item, amount_usd }
            }
            _ => PostingResult::Duplicate { seq: self.seq },
        }
    }
}

/// Something that must happen because of a posting, written atomically with it (the outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEvent {
    /// Stable: `<account>:<kind>:<seq>`, so redelivery downstream is recognisable.
    pub id: String,
    pub account_id: crate::AccountId,
    pub kind: LedgerEventKind,
    /// The account's last entry when the event was raised.
    pub seq: u64,
    /// The account version whose write raised it: orders an account's events.
    pub version: u64,
    pub balance_usd: Decimal,
    pub raised_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LedgerEventKind {
    /// The balance fell below the auto-recharge threshold with no recharge in flight.
    RechargeRequested { request_id: String },
    /// The balance crossed below the account's low-balance level.
    LowBalance,
    /// The balance reached the floor: service stops.
    Suspended,
    /// A credit lifted the balance above the floor (or paid the overdue invoices that
    /// blocked the account): service resumes.
    Reactivated,
    /// The invoice of `month` is unpaid past the days overdue the operator allows: service
    /// stops as at the floor until it is paid (raised instead of `Suspended` when the block
    /// is what stopped it).
    InvoiceOverdueBlock { month: Month },
    /// A Pay Now is waiting for the card processor's answer (by the claim's idempotency key):
    /// the payments reconciler settles it, credit once or mark failed, whatever became of the
    /// request that started it.
    PaymentPending { key: String },
    /// A card refund was started and is not final yet (`payment_id/refund_id`): the payments
    /// reconciler finishes it (debit once, refund once, or reverse a definite failure).
    RefundPending { refund: String },
    /// An advance purchase (a phone number) was refused: nothing was charged, so the platform
    /// releases what it reserved for it. `details` are the posting's (the number).
    PurchaseRefused {
        source_id: SourceId,
        item: BillingItem,
        amount_usd: Amount,
        refusal: Refusal,
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        details: serde_json::Value,
    },
    /// A suspended account's numbers are due for release at `release_at` unless it is topped
    /// up: raised 7 days and 1 day before.
    NumbersReleaseWarning { release_at: DateTime<Utc>, days_left: u32 },
    /// The account stayed suspended until `release_at`: the platform releases its numbers.
    NumbersReleaseDue { release_at: DateTime<Utc> },
}

impl LedgerEventKind {
    /// Work for the payments worker (it holds the card processor): auto-recharge requests and
    /// pending payments and refunds. Everything else becomes a notice.
    pub fn for_payments_worker(&self) -> bool {
        matches!(
            self,
            LedgerEventKind::RechargeRequested { .. }
                | LedgerEventKind::PaymentPending { .. }
                | LedgerEventKind::RefundPending { .. }
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            LedgerEventKind::RechargeRequested { .. } => "recharge_requested",
            LedgerEventKind::LowBalance => "low_balance",
            LedgerEventKind::Suspended => "suspended",
            LedgerEventKind::Reactivated => "reactivated",
            LedgerEventKind::InvoiceOverdueBlock { .. } => "invoice_overdue_block",
            LedgerEventKind::PaymentPending { .. } => "payment_pending",
            LedgerEventKind::RefundPending { .. } => "refund_pending",
            LedgerEventKind::PurchaseRefused { .. } => "purchase_refused",
            LedgerEventKind::NumbersReleaseWarning { .. } => "numbers_release_warning",
            LedgerEventKind::NumbersReleaseDue { .. } => "numbers_release_due",
        }
    }
}

/// The outcome of applying a batch to an account, ready for a store to persist atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The account after the batch (version bumped when anything changed).
    pub account: Account,
    pub entries: Vec<Entry>,
    pub results: Vec<PostingResult>,
    pub events: Vec<LedgerEvent>,
    /// The totals of the month this batch closed by opening a new one: stores keep them,
    /// in the same atomic write, as the month's record (see [`crate::MonthTotals`]).
    pub closed_month: Option<MonthTotals>,
    /// A report settled a hold (or left its mark) with nothing else to write: a redelivered
    /// report whose hold was placed after the report was first applied.
    pub holds_changed: bool,
}

impl Application {
    /// Whether the store must write anything: entries, events (a refused purchase raises
    /// one without an entry), or the account's holds alone.
    pub fn changed(&self) -> bool {
        !self.entries.is_empty() || !self.events.is_empty() || self.holds_changed
    }
}

/// Apply `postings` to `account`. `already_applied` maps source ids the store already holds for
/// this account to their entry: a posting under one of them is a duplicate when it asks for the
/// same charge, and [`PostingResult::SourceIdReused`] when it asks for another.
///
/// Panics if the resulting balance chain is broken: that is a bug, never an operating error.
pub fn apply(
    account: &Account,
    postings: &[Posting],
    already_applied: &HashMap<SourceId, AppliedEntry>,
    now: DateTime<Utc>,
) -> Result<Application, LedgerError> {
    if postings.len() > MAX_POSTINGS_PER_CALL {
        return Err(LedgerError::BatchTooLarge { count: postings.len() });
    }
    let posted_at = match account.last_posted_at {
        Some(last) if last > now => last,
        _ => crate::truncate_to_micros(now),
    };
    for posting in postings {
        posting.check_grant()?;
    }
    let floor = account.floor_usd();
    let mut balance = account.balance_usd;
    let mut seq = account.last_seq;
    let mut in_batch: HashMap<&SourceId, u64> = HashMap::new();
    let mut entries = Vec::new();
    // Grants expired by now: what is left of them is removed first, so nothing in this batch
    // draws on them and the balance the batch is checked against is what the account has.
    let mut grants = account.grants.clone();
    expire_grants(account, &mut grants, posted_at, &mut seq, &mut balance, &mut entries);
    let mut results = Vec::with_capacity(postings.len());
    let mut refused: Vec<(&Posting, Refusal)> = Vec::new();
    // Holds reported by postings that were applied or refused now (not by duplicates: their
    // first application settled them).
    let mut settles: Vec<(&str, crate::HoldPurpose)> = Vec::new();

    // Holds reported again by duplicates: still active only when the hold was placed after the
    // report first applied (a late replay of the authorization); the report ends it.
    let mut settled_again: Vec<&str> = Vec::new();
    for posting in postings {
        if let Some(earlier) = already_applied.get(&posting.source_id) {
            results.push(earlier.result_for(posting));
            settled_again.extend(posting.settles.as_deref());
            continue;
        }
        if let Some(&earlier) = in_batch.get(&posting.source_id) {
            let entry = &entries[(earlier - account.last_seq - 1) as usize];
            results.push(AppliedEntry::of(entry).result_for(posting));
            continue;
        }
        let next_balance = balance + posting.kind.signed(posting.amount_usd);
        if let Some(hold) = posting.settles.as_deref() {
            settles.push((hold, crate::HoldPurpose::of_item(posting.item)));
        }
        if posting.rule == PostingRule::RefuseBelowFloor {
            // Other authorizations' holds are spoken for; the posting's own is what it uses.
            let reserved = account.held_usd(posted_at, posting.settles.as_deref());
            let refusal = if !account.terms_accepted() {
                Some(Refusal::TermsNotAccepted)
            } else if let Some(block) = &account.overdue_block {
                Some(Refusal::InvoiceOverdue { month: block.month })
            } else if next_balance < floor + reserved {
                Some(Refusal::InsufficientBalance { balance_usd: balance, floor_usd: floor })
            } else {
                None
            };
            if let Some(refusal) = refusal {
                results.push(PostingResult::Refused(refusal.clone()));
                if !refused.iter().any(|(earlier, _)| earlier.source_id == posting.source_id) {
                    refused.push((posting, refusal));
                }
                continue;
            }
        }
        seq += 1;
        balance = next_balance;
        in_batch.insert(&posting.source_id, seq);
        let shares = match (posting.kind, &posting.grant) {
            (EntryKind::Credit, Some(terms)) => {
                grants.push(crate::CreditGrant {
                    id: posting.source_id.to_string(),
                    category: terms.category,
                    granted_usd: posting.amount_usd.value(),
                    remaining_usd: posting.amount_usd.value(),
                    expires_at: terms.expires_at,
                    priority: terms.priority,
                    granted_at: posted_at,
                });
                vec![crate::GrantShare {
                    grant: posting.source_id.to_string(),
                    amount_usd: posting.amount_usd.value(),
                }]
            }
            (EntryKind::Debit, _) if posting.item.draws_on_grants() => {
                crate::grant::draw(&mut grants, posting.amount_usd.value(), posted_at)
            }
            // A plan credit gives back what its call (the entry before it) took last.
            (EntryKind::Credit, None) if posting.item == BillingItem::IncludedMinutes => {
                match entries.last() {
                    Some(call) if call.kind == EntryKind::Debit => {
                        crate::grant::give_back(&mut grants, call, posting.amount_usd.value())
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        entries.push(Entry {
            account_id: account.id.clone(),
            seq,
            kind: posting.kind,
            item: posting.item,
            amount_usd: posting.amount_usd,
            balance_after_usd: balance,
            posted_at,
            occurred_at: posting.occurred_at,
            source_id: posting.source_id.clone(),
            details: posting.details.clone(),
            grants: shares,
        });
        results.push(PostingResult::Applied { seq, balance_after_usd: balance });
    }

    let mut next = account.clone();
    grants.retain(|grant| grant.remaining_usd > Decimal::ZERO);
    assert_grants_follow(account, &grants, &entries);
    next.grants = grants;
    next.prune_holds(posted_at);
    for (hold, purpose) in settles {
        next.report_hold(hold, purpose, posted_at);
    }
    let mut holds_changed = false;
    for hold in settled_again {
        holds_changed |= next.settle_hold(hold, posted_at);
    }
    let mut events = Vec::new();
    let mut closed_month = None;
    let version = account.version + 1;
    if !entries.is_empty() {
        assert_chain_extends(account, &entries);
        let month = Month::of(posted_at);
        if next.month_totals.as_ref().map(|totals| totals.month) != Some(month) {
            closed_month = next.month_totals.replace(MonthTotals::empty(month));
        }
        let totals = next.month_totals.get_or_insert_with(|| MonthTotals::empty(month));
        for entry in &entries {
            totals.add(entry);
        }
        next.balance_usd = balance;
        next.last_seq = seq;
        next.last_posted_at = Some(posted_at);
        next.version += 1;
        // Payments count toward lifting a dunning block, in the write that posts them.
        next.paid_in_usd += entries
            .iter()
            .filter(|e| e.pays_what_is_owed())
            .map(|e| e.amount_usd.value())
            .sum::<Decimal>();
        if next.overdue_block.as_ref().is_some_and(|b| next.paid_in_usd >= b.until_paid_in_usd) {
            next.overdue_block = None;
        }
        next.status = next.status_for(balance);

        // A recharge credit settles the request it was raised for.
        if let Some(in_flight) = &account.recharge_in_flight {
            let settled = entries
                .iter()
                .any(|e| e.item == BillingItem::FundsAdded && e.source_id.as_str() == in_flight);
            if settled {
                next.recharge_in_flight = None;
            }
        }

        // Only a debit raises a recharge request: a credit that leaves the balance still below
        // the threshold (a recharge smaller than one large debit) must not chain another top-up
        // after it, or one large debit becomes a runaway of them (Lago #6177).
        let debited = entries.iter().any(|e| e.kind == EntryKind::Debit);
        events.extend(crossings(account, &mut next, posted_at, debited));
    }
    if !refused.is_empty() {
        if entries.is_empty() {
            // Only the events are written: the version orders them after the account's others.
            next.version += 1;
        }
        for (posting, refusal) in refused {
            // One id per refused source id, so a redelivered refusal is recognised downstream.
            let kind = LedgerEventKind::PurchaseRefused {
                source_id: posting.source_id.clone(),
                item: posting.item,
                amount_usd: posting.amount_usd,
                refusal,
                details: posting.details.clone(),
            };
            events.push(LedgerEvent {
                id: format!("{}:{}:{}", account.id, kind.as_str(), posting.source_id),
                account_id: account.id.clone(),
                kind,
                seq,
                version,
                balance_usd: balance,
                raised_at: posted_at,
            });
        }
    }
    // Nothing else to write: the account alone, at a new version.
    let holds_changed = holds_changed && entries.is_empty() && events.is_empty();
    if holds_changed {
        next.version += 1;
    }
    Ok(Application { account: next, entries, results, events, closed_month, holds_changed })
}

/// Recompute what a change of settings implies: status from the (possibly new) floor, and the
/// events a status change or a newly enabled auto-recharge raises. Balance and sequence must not
/// have been touched by the change.
pub fn settle_settings_change(
    before: &Account,
    after: &mut Account,
    now: DateTime<Utc>,
) -> Result<Vec<LedgerEvent>, LedgerError> {
    if after.id != before.id
        || after.balance_usd != before.balance_usd
        || after.opening_balance_usd != before.opening_balance_usd
        || after.last_seq != before.last_seq
        || after.last_posted_at != before.last_posted_at
        || after.version != before.version
    {
        return Err(LedgerError::BalanceFieldsAreLedgerOnly);
    }
    // Grants are money: a settings change may only bring a grant's expiry forward (a void).
    let same_grants = after.grants.len() == before.grants.len()
        && before.grants.iter().zip(&after.grants).all(|(was, is)| {
            let expiry_kept_or_earlier = match (was.expires_at, is.expires_at) {
                (_, None) => was.expires_at.is_none(),
                (None, Some(_)) => true,
                (Some(was), Some(is)) => is <= was,
            };
            crate::CreditGrant { expires_at: None, ..was.clone() }
                == crate::CreditGrant { expires_at: None, ..is.clone() }
                && expiry_kept_or_earlier
        });
    if !same_grants {
        return Err(LedgerError::BalanceFieldsAreLedgerOnly);
    }
    after.version += 1;
    after.status = after.status_for(after.balance_usd);
    let pending = |a: &Account| a.pending_payments.len() + a.pending_refunds.len();
    if pending(after) > crate::MAX_PENDING_PAYMENTS && pending(after) > pending(before) {
        return Err(LedgerError::TooManyPendingPayments);
    }
    if after.unsettled_holds() > crate::MAX_HOLDS
        && after.unsettled_holds() > before.unsettled_holds()
    {
        return Err(LedgerError::TooManyHolds);
    }
    // New auto-recharge settings re-arm a stopped auto-recharge.
    if after.recharge != before.recharge {
        after.recharge_stopped = None;
    }
    // Never before the account's last posting, so events keep their order per account.
    let at = match after.last_posted_at {
        Some(last) if last > now => last,
        _ => crate::truncate_to_micros(now),
    };
    Ok(crossings(before, after, at, true))
}

/// The events a change of an account raises, whether a posting or a settings change made it
/// (one rule, one id format: `<account>:<kind>:<seq>:v<version>[:<key>]`):
/// - a status change: suspended at the floor, reactivated above it;
/// - the balance crossing below the low-balance level;
/// - a Pay Now key newly pending;
/// - an auto-recharge request, when auto-recharge is on, the balance is below its threshold,
///   none is in flight and it is not stopped this month (and `may_request`: postings only
///   raise one for a debit).
///
/// `after` must already carry the new balance, sequence, version and status; the request it
/// raises is recorded on it.
pub fn crossings(
    before: &Account,
    after: &mut Account,
    at: DateTime<Utc>,
    may_request: bool,
) -> Vec<LedgerEvent> {
    let mut kinds = Vec::new();
    match (before.status, after.status) {
        (AccountStatus::Active, AccountStatus::Suspended) => {
            after.suspended_since = Some(at);
            after.release_stage = 0;
            // A block above the floor says so in its own event (below).
            if after.balance_usd <= after.floor_usd() || after.overdue_block.is_none() {
                kinds.push(LedgerEventKind::Suspended)
            }
        }
        (AccountStatus::Suspended, AccountStatus::Active) => {
            // A top-up before the release cancels all of it.
            after.suspended_since = None;
            after.release_stage = 0;
            kinds.push(LedgerEventKind::Reactivated)
        }
        _ => {}
    }
    if let (None, Some(block)) = (&before.overdue_block, &after.overdue_block) {
        kinds.push(LedgerEventKind::InvoiceOverdueBlock { month: block.month });
    }
    // The number release moved on (the daily sweep sets the stage it has reached).
    if after.release_stage > before.release_stage && after.status == AccountStatus::Suspended {
        if let Some(release_at) = after.release_at() {
            for stage in before.release_stage + 1..=after.release_stage {
                kinds.push(match crate::ReleaseStage::from_u8(stage) {
                    crate::ReleaseStage::WeekBefore => {
                        LedgerEventKind::NumbersReleaseWarning { release_at, days_left: 7 }
                    }
                    crate::ReleaseStage::DayBefore => {
                        LedgerEventKind::NumbersReleaseWarning { release_at, days_left: 1 }
                    }
                    _ => LedgerEventKind::NumbersReleaseDue { release_at },
                });
            }
        }
    }
    // On the balance less active holds, latched: holds come and go with every call, and a
    // customer is told once until a credit lifts the account back above the level.
    if before.low_balance_usd != after.low_balance_usd {
        after.low_balance_noticed = false;
    }
    if let Some(level) = after.low_balance_usd.map(Amount::value) {
        // Before: the balance less holds, a grant that expired still counted (the expiry's
        // removal, posting now, is the crossing the customer is told of).
        let was = before.balance_usd - before.held_usd(at, None);
        let is = after.unreserved_usd(at);
        if after.low_balance_noticed && after.balance_usd > before.balance_usd && is >= level {
            after.low_balance_noticed = false;
        }
        if !after.low_balance_noticed && was >= level && is < level {
            after.low_balance_noticed = true;
            kinds.push(LedgerEventKind::LowBalance);
        }
    }
    for key in &after.pending_payments {
        if !before.pending_payments.contains(key) {
            kinds.push(LedgerEventKind::PaymentPending { key: key.clone() });
        }
    }
    for refund in &after.pending_refunds {
        if !before.pending_refunds.contains(refund) {
            kinds.push(LedgerEventKind::RefundPending { refund: refund.clone() });
        }
    }
    if let Some(recharge) = after.recharge.as_ref().filter(|r| r.enabled() && may_request) {
        // Below the threshold once active holds are counted: a hot account recharges before
        // the calls in progress drain it.
        if after.unreserved_usd(at) < recharge.threshold_usd().value()
            && after.recharge_may_start(at)
        {
            let request_id = format!("rch:{}:{}:v{}", after.id, after.last_seq, after.version);
            after.recharge_in_flight = Some(request_id.clone());
            // A stop from an earlier month has ended (a stop until lifted never gets here).
            after.recharge_stopped = None;
            kinds.push(LedgerEventKind::RechargeRequested { request_id });
        }
    }
    kinds
        .into_iter()
        .map(|kind| {
            // Several payments may become pending in one change: each event needs its own id.
            let key = match &kind {
                LedgerEventKind::PaymentPending { key } => format!(":{key}"),
                LedgerEventKind::RefundPending { refund } => format!(":refund:{refund}"),
                LedgerEventKind::NumbersReleaseWarning { days_left, .. } => {
                    format!(":{days_left}d")
                }
                _ => String::new(),
            };
            LedgerEvent {
                id: format!(
                    "{}:{}:{}:v{}{key}",
                    after.id,
                    kind.as_str(),
                    after.last_seq,
                    after.version
                ),
                account_id: after.id.clone(),
                kind,
                seq: after.last_seq,
                version: after.version,
                balance_usd: after.balance_usd,
                raised_at: at,
            }
        })
        .collect()
}

/// Post the removal of what is left of every grant expired at `posted_at` (one debit each,
/// source id `gx:<grant>`, dated at the expiry).
fn expire_grants(
    account: &Account,
    grants: &mut [crate::CreditGrant],
    posted_at: DateTime<Utc>,
    seq: &mut u64,
    balance: &mut Decimal,
    entries: &mut Vec<Entry>,
) {
    let mut expired: Vec<&mut crate::CreditGrant> = grants
        .iter_mut()
        .filter(|grant| grant.expired_at(posted_at) && grant.remaining_usd > Decimal::ZERO)
        .collect();
    expired.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
    for grant in expired {
        let left = grant.remaining_usd;
        let (Ok(amount_usd), Ok(source_id)) =
            (Amount::new(left), SourceId::parse(crate::grant::expiry_source_id(&grant.id)))
        else {
            // A grant id too long for the expiry's source id cannot be opened (the API checks
            // it); leave the grant rather than post an entry nobody could recognise again.
            continue;
        };
        grant.remaining_usd = Decimal::ZERO;
        *seq += 1;
        *balance -= left;
        entries.push(Entry {
            account_id: account.id.clone(),
            seq: *seq,
            kind: EntryKind::Debit,
            item: BillingItem::CreditGrant,
            amount_usd,
            balance_after_usd: *balance,
            posted_at,
            occurred_at: grant.expires_at.unwrap_or(posted_at).min(posted_at),
            source_id,
            details: serde_json::json!({ "grant": grant.id, "expired": true }),
            grants: vec![crate::GrantShare { grant: grant.id.clone(), amount_usd: left }],
        });
    }
}

/// Every grant's remainder moved by exactly its entries' shares: a bug otherwise.
fn assert_grants_follow(account: &Account, grants: &[crate::CreditGrant], entries: &[Entry]) {
    let moved: Decimal = entries
        .iter()
        .flat_map(|entry| entry.grants.iter().map(move |share| (entry.kind, share.amount_usd)))
        .map(|(kind, amount)| if kind == EntryKind::Credit { amount } else { -amount })
        .sum();
    let after: Decimal = grants.iter().map(|grant| grant.remaining_usd).sum();
    assert_eq!(after, account.granted_usd() + moved, "grant remainders drifted from their shares");
    assert!(grants.iter().all(|grant| grant.remaining_usd > Decimal::ZERO));
}

fn assert_chain_extends(account: &Account, entries: &[Entry]) {
    let first = entries.first().map(|e| e.seq).unwrap_or(0);
    assert_eq!(first, account.last_seq + 1, "new entries must continue the sequence");
    let mut balance = account.balance_usd;
    let mut previous = account.last_seq;
    for entry in entries {
        assert_eq!(entry.seq, previous + 1, "sequence gap in a batch");
        balance += entry.signed_amount_usd();
        assert_eq!(entry.balance_after_usd, balance, "balance chain broken in a batch");
        previous = entry.seq;
    }
}

/// Source ids in a batch, deduplicated, in first-seen order: what a store must look up.
pub fn distinct_source_ids(postings: &[Posting]) -> Vec<SourceId> {
    let mut seen = HashSet::new();
    postings.iter().filter(|p| seen.insert(&p.source_id)).map(|p| p.source_id.clone()).collect()
}
