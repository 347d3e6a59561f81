//! Statements: what an account's entries in a range of UTC days add up to.
//!
//! A statement covers the entries posted in `[from 00:00, to + 1 day 00:00)` (UTC), the same
//! half-open range on `posted_at` as [`EntryQuery`]. It is built from the entries alone and
//! checked on the way: the entries must chain from the opening balance, so a statement is either
//! right or an error, never silently wrong.
//!
//! Where each entry lands in the summary:
//!
//! | entry                                 | summary line                                |
//! | ------------------------------------- | ------------------------------------------- |
//! | `funds_added` credit                  | card payments (Pay Now and auto-recharge)   |
//! | `refund`, `adjustment` credits        | other credits                               |
//! | usage debits (calls, SMS, numbers, …) | usage, by billing item                      |
//! | `included_minutes` credit             | usage, as its own negative line             |
//! | `sales_tax` debit                     | taxes                                       |
//! | `adjustment` debit                    | other debits                                |
//! | `credit_grant` credit (a grant)       | other credits                               |
//! | `credit_grant` debit (its expiry)     | other debits                                |
//!
//! A line paid (partly) from credit grants says so (`grants_usd`, and its description ends
//! "…, $X from credits"); `grants_used_usd` sums what grants paid for in the period.
//! so `opening + card payments + other credits - usage - taxes - other debits = closing`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::entry::{BillingItem, ChainError, Entry, EntryKind};
use crate::ids::AccountId;
use crate::store::{EntryQuery, LedgerStore, Show, StoreError, MAX_PAGE_SIZE};

/// The longest statement period, in days (both ends included): a leap year.
pub const MAX_STATEMENT_DAYS: i64 = 366;
/// The most entries one statement lists. A busier period has to be split into shorter ones.
pub const MAX_STATEMENT_LINES: usize = 100_000;
/// The longest line description, in characters (details are customer and operator input).
pub const MAX_DESCRIPTION_CHARS: usize = 200;

/// A statement of one account for the UTC days `from..=to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub account_id: AccountId,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The balance at `from` 00:00 UTC.
    pub opening_balance_usd: Decimal,
    /// `funds_added` credits: manual payments and auto-recharges.
    pub card_payments_usd: Decimal,
    /// Refunds and credit adjustments.
    pub other_credits_usd: Decimal,
    /// Usage debits per billing item; included plan minutes are a negative `included_minutes`
    /// line, so calls show at their full price.
    pub usage_by_item: BTreeMap<BillingItem, Decimal>,
    /// The sum of `usage_by_item`.
    pub usage_usd: Decimal,
    /// `sales_tax` debits.
    pub taxes_usd: Decimal,
    /// Debit adjustments.
    pub other_debits_usd: Decimal,
    /// The balance at `to + 1 day` 00:00 UTC.
    pub closing_balance_usd: Decimal,
    /// What credit grants paid for in the period (their shares of debits, less what plan
    /// credits gave back to them); expiries are not counted: they paid for nothing.
    #[serde(default)]
    pub grants_used_usd: Decimal,
    /// Every entry of the period, oldest first.
    pub lines: Vec<StatementLine>,
}

/// One entry as a statement shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    pub seq: u64,
    pub posted_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    pub kind: EntryKind,
    pub item: BillingItem,
    /// Signed: credits positive, debits negative.
    pub amount_usd: Decimal,
    pub balance_after_usd: Decimal,
    pub source_id: String,
    /// For people: "Outbound call, 3 min", "Auto-recharge, visa 4242", or the item's label.
    pub description: String,
    /// The part of the amount credit grants bore (drawn by a debit, given back by a credit).
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub grants_usd: Decimal,
}

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// A client error (400).
    #[error("the statement period ends on {to}, before it starts on {from}")]
    ReversedRange { from: NaiveDate, to: NaiveDate },
    /// A client error (400).
    #[error("a statement covers at most {MAX_STATEMENT_DAYS} days; {from} to {to} is {days} days")]
    RangeTooLong { from: NaiveDate, to: NaiveDate, days: i64 },
    /// A client error (400).
    #[error("the statement period {from} to {to} is outside the supported dates")]
    DateOutOfRange { from: NaiveDate, to: NaiveDate },
    /// A client error (400).
    #[error("{from} to {to} has more than {MAX_STATEMENT_LINES} entries; choose a shorter range")]
    TooManyLines { from: NaiveDate, to: NaiveDate },
    /// Not found (404).
    #[error("account {0} not found")]
    AccountNotFound(AccountId),
    /// The entries given to [`Statement::build`] are not one stretch of the account's chain
    /// (a bug or corrupt data, 500).
    #[error("the entries of the statement do not chain: {0}")]
    BrokenChain(#[from] ChainError),
    /// An entry of another account or outside the period was given to [`Statement::build`]
    /// (a bug, 500).
    #[error("entry {seq} does not belong to the statement of {account_id} for {from} to {to}")]
    ForeignEntry { seq: u64, account_id: AccountId, from: NaiveDate, to: NaiveDate },
    /// Reading the ledger failed: retry when [`StoreError::is_retryable`] (503).
    #[error("reading the ledger failed")]
    Store(#[source] StoreError),
}

impl StatementError {
    /// The request itself is wrong (a 400): asking again the same way fails the same way.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            StatementError::ReversedRange { .. }
                | StatementError::RangeTooLong { .. }
                | StatementError::DateOutOfRange { .. }
                | StatementError::TooManyLines { .. }
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StatementError::AccountNotFound(_))
    }

    /// The same call may succeed later (the store was unavailable, throttled or contended).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StatementError::Store(error) if error.is_retryable())
    }
}

impl From<StoreError> for StatementError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AccountNotFound(id) => StatementError::AccountNotFound(id),
            other => StatementError::Store(other),
        }
    }
}

/// Check a statement period and return it as the half-open UTC range of `posted_at` it covers.
pub fn period_bounds(
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(DateTime<Utc>, DateTime<Utc>), StatementError> {
    if to < from {
        return Err(StatementError::ReversedRange { from, to });
    }
    let days = (to - from).num_days() + 1;
    if days > MAX_STATEMENT_DAYS {
        return Err(StatementError::RangeTooLong { from, to, days });
    }
    let end = to.succ_opt().ok_or(StatementError::DateOutOfRange { from, to })?;
    Ok((from.and_time(NaiveTime::MIN).and_utc(), end.and_time(NaiveTime::MIN).and_utc()))
}

/// Where an entry lands in the summary (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    CardPayments,
    OtherCredits,
    Usage,
    Taxes,
    OtherDebits,
}

fn bucket(kind: EntryKind, item: BillingItem) -> Bucket {
    match (kind, item) {
        (EntryKind::Credit, BillingItem::FundsAdded) => Bucket::CardPayments,
        (EntryKind::Credit, BillingItem::IncludedMinutes) => Bucket::Usage,
        (EntryKind::Credit, _) => Bucket::OtherCredits,
        (EntryKind::Debit, BillingItem::SalesTax) => Bucket::Taxes,
        // Paid funds returned to the card: not usage.
        (EntryKind::Debit, BillingItem::CardRefund | BillingItem::Dispute) => Bucket::OtherDebits,
        // What was left of an expired grant: not usage either.
        (EntryKind::Debit, BillingItem::CreditGrant) => Bucket::OtherDebits,
        // The posting rules never debit the credit-only items; should one appear, it is still
        // counted (as an other debit) so the statement reconciles.
        (
            EntryKind::Debit,
            BillingItem::Adjustment
            | BillingItem::Refund
            | BillingItem::FundsAdded
            | BillingItem::IncludedMinutes,
        ) => Bucket::OtherDebits,
        (EntryKind::Debit, _) => Bucket::Usage,
    }
}

/// The summary figures of a statement, from its lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    card_payments_usd: Decimal,
    other_credits_usd: Decimal,
    usage_by_item: BTreeMap<BillingItem, Decimal>,
    usage_usd: Decimal,
    taxes_usd: Decimal,
    other_debits_usd: Decimal,
}

impl Totals {
    fn add(&mut self, kind: EntryKind, item: BillingItem, signed_amount_usd: Decimal) {
        match bucket(kind, item) {
            Bucket::CardPayments => self.card_payments_usd += signed_amount_usd,
            Bucket::OtherCredits => self.other_credits_usd += signed_amount_usd,
            Bucket::Usage => {
                // Usage is shown as a charge: debits positive, the included-minutes credit
                // negative.
                *self.usage_by_item.entry(item).or_insert(Decimal::ZERO) -= signed_amount_usd;
                self.usage_usd -= signed_amount_usd;
            }
            Bucket::Taxes => self.taxes_usd -= signed_amount_usd,
            Bucket::OtherDebits => self.other_debits_usd -= signed_amount_usd,
        }
    }

    fn of(lines: &[StatementLine]) -> Totals {
        let mut totals = Totals::default();
        for line in lines {
            totals.add(line.kind, line.item, line.amount_usd);
        }
        totals
    }
}

impl Statement {
    /// Build the statement of `account_id` for `from..=to` from the balance at the start of the
    /// period and every entry posted in it, oldest first. Checks that the entries are the
    /// account's, inside the period, with consecutive sequence numbers, in posting order, and
    /// that their balances chain from `opening_balance_usd`.
    pub fn build(
        account_id: AccountId,
        from: NaiveDate,
        to: NaiveDate,
        opening_balance_usd: Decimal,
        entries: &[Entry],
    ) -> Result<Statement, StatementError> {
        let (start, end) = period_bounds(from, to)?;
        if entries.len() > MAX_STATEMENT_LINES {
            return Err(StatementError::TooManyLines { from, to });
        }
        let mut totals = Totals::default();
        let mut lines = Vec::with_capacity(entries.len());
        let mut balance = opening_balance_usd;
        let mut previous: Option<&Entry> = None;
        let mut grants_used_usd = Decimal::ZERO;
        for entry in entries {
            if entry.account_id != account_id || entry.posted_at < start || entry.posted_at >= end {
                return Err(StatementError::ForeignEntry { seq: entry.seq, account_id, from, to });
            }
            if let Some(previous) = previous {
                if entry.seq != previous.seq + 1 {
                    return Err(ChainError::Gap { previous: previous.seq, found: entry.seq }.into());
                }
                if entry.posted_at < previous.posted_at {
                    return Err(ChainError::TimeTravel { seq: entry.seq }.into());
                }
            }
            let amount_usd = entry.signed_amount_usd();
            let expected = balance + amount_usd;
            if entry.balance_after_usd != expected {
                return Err(ChainError::Broken {
                    seq: entry.seq,
                    expected,
                    found: entry.balance_after_usd,
                }
                .into());
            }
            balance = expected;
            totals.add(entry.kind, entry.item, amount_usd);
            let grants_usd = entry.grants_usd();
            if entry.item != BillingItem::CreditGrant {
                grants_used_usd += match entry.kind {
                    EntryKind::Debit => grants_usd,
                    EntryKind::Credit => -grants_usd,
                };
            }
            lines.push(StatementLine {
                seq: entry.seq,
                posted_at: entry.posted_at,
                occurred_at: entry.occurred_at,
                kind: entry.kind,
                item: entry.item,
                amount_usd,
                balance_after_usd: entry.balance_after_usd,
                source_id: entry.source_id.to_string(),
                description: describe(entry),
                grants_usd,
            });
            previous = Some(entry);
        }
        let statement = Statement {
            account_id,
            from,
            to,
            opening_balance_usd,
            card_payments_usd: totals.card_payments_usd,
            other_credits_usd: totals.other_credits_usd,
            usage_by_item: totals.usage_by_item,
            usage_usd: totals.usage_usd,
            taxes_usd: totals.taxes_usd,
            other_debits_usd: totals.other_debits_usd,
            closing_balance_usd: balance,
            grants_used_usd,
            lines,
        };
        debug_assert!(statement.reconciles(), "a statement built from a checked chain reconciles");
        Ok(statement)
    }

    /// Whether the statement adds up: the summary is what its lines add up to, `opening +
    /// card payments + other credits - usage - taxes - other debits = closing`, and the lines'
    /// running balances chain from the opening balance to the closing balance.
    pub fn reconciles(&self) -> bool {
        let totals = Totals::of(&self.lines);
        let summary = Totals {
            card_payments_usd: self.card_payments_usd,
            other_credits_usd: self.other_credits_usd,
            usage_by_item: self.usage_by_item.clone(),
            usage_usd: self.usage_usd,
            taxes_usd: self.taxes_usd,
            other_debits_usd: self.other_debits_usd,
        };
        let usage_sum: Decimal = self.usage_by_item.values().copied().sum();
        let formula = self.opening_balance_usd + self.card_payments_usd + self.other_credits_usd
            - self.usage_usd
            - self.taxes_usd
            - self.other_debits_usd;
        let mut balance = self.opening_balance_usd;
        let chains = self.lines.iter().all(|line| {
            balance += line.amount_usd;
            line.balance_after_usd == balance
        });
        totals == summary
            && usage_sum == self.usage_usd
            && formula == self.closing_balance_usd
            && chains
            && balance == self.closing_balance_usd
    }

    /// The total of the credits of the period (card payments and other credits).
    pub fn credits_usd(&self) -> Decimal {
        self.card_payments_usd + self.other_credits_usd
    }

    /// The total of the debits of the period, net of included plan minutes.
    pub fn debits_usd(&self) -> Decimal {
        self.usage_usd + self.taxes_usd + self.other_debits_usd
    }
}

/// The statement of an account for the UTC days `from..=to`, read from the store.
///
/// Reads the account, then the period's entries a page at a time. The opening balance comes
/// from the chain itself: the first entry of the period minus its amount; without one, the
/// first entry after the period minus its amount; without that either, the account's balance.
/// The account is read first on purpose: any entry it already counts is found by the later
/// reads, so an account balance that is used covers no entry of the period or after it.
pub async fn statement_for(
    store: &dyn LedgerStore,
    id: &AccountId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Statement, StatementError> {
    let (start, end) = period_bounds(from, to)?;
    let account =
        store.account(id).await?.ok_or_else(|| StatementError::AccountNotFound(id.clone()))?;
    let mut query = EntryQuery {
        from: Some(start),
        to: Some(end),
        show: Show::All,
        cursor: None,
        limit: MAX_PAGE_SIZE,
    };
    let mut entries = Vec::new();
    loop {
        let page = store.entries(id, &query).await?;
        entries.extend(page.entries);
        if entries.len() > MAX_STATEMENT_LINES {
            return Err(StatementError::TooManyLines { from, to });
        }
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    let opening_balance_usd = match entries.first() {
        Some(first) => balance_before(first),
        None => {
            let after =
                EntryQuery { from: Some(end), to: None, show: Show::All, cursor: None, limit: 1 };
            match store.entries(id, &after).await?.entries.first() {
                Some(next) => balance_before(next),
                None => account.balance_usd,
            }
        }
    };
    Statement::build(id.clone(), from, to, opening_balance_usd, &entries)
}

fn balance_before(entry: &Entry) -> Decimal {
    entry.balance_after_usd - entry.signed_amount_usd()
}

/// The label of a billing item, as statements and receipts name it.
pub fn item_label(item: BillingItem) -> &'static str {
    match item {
        BillingItem::PhoneNumber => "Phone number charge",
        BillingItem::PhoneCall => "Phone call charge",
        BillingItem::OutgoingSms => "Outgoing text message",
        BillingItem::IncomingSms => "Incoming text message",
        BillingItem::RingThroughAttempt => "Ring-through connection attempt",
        BillingItem::CarrierSurcharge => "Carrier surcharge",
        BillingItem::PremiumService => "Premium service",
        BillingItem::SalesTax => "Monthly sales tax",
        BillingItem::PlanFee => "Plan fee",
        BillingItem::FundsAdded => "Funds added",
        BillingItem::Adjustment => "Adjustment",
        BillingItem::Refund => "Refund",
        BillingItem::IncludedMinutes => "Included plan minutes",
        BillingItem::CardRefund => "Refund to card",
        BillingItem::Dispute => "Chargeback (disputed payment)",
        BillingItem::CreditGrant => "Credit grant",
    }
}

/// A line's description from its details where they say more than the item, else the item's
/// label. Details are the usage worker's, the payment paths' and operators' JSON: anything
/// unexpected falls back to the label. One line of at most [`MAX_DESCRIPTION_CHARS`].
pub fn describe(entry: &Entry) -> String {
    let details = &entry.details;
    let text = |key: &str| details.get(key).and_then(serde_json::Value::as_str);
    let number = |key: &str| details.get(key).and_then(serde_json::Value::as_u64);
    let call = || -> Option<String> {
        if text("event")? != "call" {
            return None;
        }
        let direction = match text("direction")? {
            "inbound" => "Inbound call",
            "outbound" => "Outbound call",
            _ => "Call",
        };
        Some(match number("seconds") {
            Some(seconds) => format!("{direction}, {}", duration(seconds)),
            None => direction.to_string(),
        })
    };
    let sms = || -> Option<String> {
        let label = match text("event")? {
            "sms_in" => "Incoming text message",
            "sms_out" => "Outgoing text message",
            _ => return None,
        };
        Some(match number("segments") {
            Some(1) | None => label.to_string(),
            Some(segments) => format!("{label}, {segments} segments"),
        })
    };
    let label = item_label(entry.item);
    let described = match entry.item {
        BillingItem::PhoneCall => call(),
        BillingItem::OutgoingSms | BillingItem::IncomingSms => sms(),
        BillingItem::IncludedMinutes => {
            let covered = number("included_seconds").map(duration);
            match (call(), covered) {
                (Some(call), Some(covered)) => Some(format!("{label} ({covered}): {call}")),
                (Some(call), None) => Some(format!("{label}: {call}")),
                _ => None,
            }
        }
        BillingItem::CarrierSurcharge | BillingItem::RingThroughAttempt => {
            call().or_else(sms).map(|what| format!("{label}: {what}"))
        }
        BillingItem::PremiumService => {
            let feature = entry.source_id.as_str().rsplit_once('#').map(|(_, f)| f);
            let feature = match feature {
                Some("transcription") => Some("transcription"),
                Some("call_recording") => Some("call recording"),
                Some("enhanced_caller_id") => Some("enhanced caller ID"),
                _ => None,
            };
            match (feature, call()) {
                (Some(feature), Some(call)) => Some(format!("{label}, {feature}: {call}")),
                (Some(feature), None) => Some(format!("{label}, {feature}")),
                (None, call) => call.map(|call| format!("{label}: {call}")),
            }
        }
        BillingItem::PhoneNumber => {
            let what = match text("event") {
                Some("number_purchase") => "Phone number purchase",
                Some("number_renewal") => "Phone number renewal",
                _ => label,
            };
            Some(match text("number") {
                Some(number) => format!("{what}, {number}"),
                None => what.to_string(),
            })
        }
        BillingItem::FundsAdded => {
            let what = match text("trigger") {
                Some("auto") => "Auto-recharge",
                Some("manual") => "Payment (Pay Now)",
                _ => "Payment",
            };
            Some(match text("card") {
                Some(card) => format!("{what}, {card}"),
                None => what.to_string(),
            })
        }
        BillingItem::CardRefund => {
            let what = match entry.kind {
                crate::EntryKind::Debit => label,
                crate::EntryKind::Credit => "Refund to card failed, returned to the balance",
            };
            let what = match text("card") {
                Some(card) => format!("{what}, {card}"),
                None => what.to_string(),
            };
            Some(match text("reason").filter(|r| !r.trim().is_empty()) {
                Some(reason) => format!("{what}: {reason}"),
                None => what,
            })
        }
        BillingItem::Dispute => {
            let what = match (entry.kind, text("part")) {
                (crate::EntryKind::Debit, Some("fee")) => "Chargeback fee",
                (crate::EntryKind::Debit, _) => label,
                (crate::EntryKind::Credit, Some("fee")) => "Chargeback fee returned (dispute won)",
                (crate::EntryKind::Credit, _) => "Chargeback reversed (dispute won)",
            };
            Some(match text("payment_id") {
                Some(payment) => format!("{what}, payment {payment}"),
                None => what.to_string(),
            })
        }
        BillingItem::Adjustment | BillingItem::Refund => {
            text("reason").filter(|r| !r.trim().is_empty()).map(|r| format!("{label}: {r}"))
        }
        BillingItem::SalesTax => text("month")
            .and_then(|m| m.parse::<crate::Month>().ok())
            .map(|month| format!("Sales tax for {}", month.first_day().format("%B %Y"))),
        BillingItem::PlanFee => None,
        BillingItem::CreditGrant => {
            let what = match entry.kind {
                crate::EntryKind::Credit => match text("category") {
                    Some("goodwill") => "Goodwill credit",
                    Some("promotional") => "Promotional credit",
                    _ => label,
                },
                crate::EntryKind::Debit => "Credit expired, unused part removed",
            };
            Some(match text("reason").filter(|r| !r.trim().is_empty()) {
                Some(reason) => format!("{what}: {reason}"),
                None => what.to_string(),
            })
        }
    };
    let described = described.unwrap_or_else(|| label.to_string());
    // Which money paid: a debit drawn (partly) from grants says how much.
    let grants_usd = entry.grants_usd();
    let described = if entry.kind == EntryKind::Debit
        && entry.item != BillingItem::CreditGrant
        && !grants_usd.is_zero()
    {
        let paid_from = if grants_usd == entry.amount_usd.value() {
            "paid from credits".to_string()
        } else {
            // Exact: a sub-cent share is not "$0.00".
            let exact = grants_usd.normalize();
            let shown =
                if exact.scale() > 2 { format!("${exact}") } else { crate::display_usd(exact) };
            format!("{shown} from credits")
        };
        // The note goes first into the cut, so a long description never loses it.
        let room = MAX_DESCRIPTION_CHARS.saturating_sub(paid_from.chars().count() + 2);
        let head: String = one_line(&described).chars().take(room).collect();
        format!("{head}, {paid_from}")
    } else {
        described
    };
    one_line(&described)
}

/// "45 s", "3 min", "2 min 5 s".
fn duration(seconds: u64) -> String {
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// Control characters (line breaks) become spaces, runs of spaces one, and the text is cut at
/// [`MAX_DESCRIPTION_CHARS`] with an ellipsis.
fn one_line(text: &str) -> String {
    let cleaned: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let joined = words.join(" ");
    if joined.chars().count() <= MAX_DESCRIPTION_CHARS {
        return joined;
    }
    let mut cut: String = joined.chars().take(MAX_DESCRIPTION_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SourceId;
    use crate::money::Amount;
    use serde_json::json;

    fn entry(item: BillingItem, kind: EntryKind, details: serde_json::Value) -> Entry {
        Entry {
            account_id: AccountId::parse("acme").unwrap(),
            seq: 1,
            kind,
            item,
            amount_usd: Amount::new(Decimal::ONE).unwrap(),
            balance_after_usd: Decimal::ONE,
            posted_at: DateTime::UNIX_EPOCH,
            occurred_at: DateTime::UNIX_EPOCH,
            source_id: SourceId::parse("evt-1#transcription").unwrap(),
            details,
            grants: Vec::new(),
        }
    }

    #[test]
    fn descriptions_read_as_words_and_fall_back_to_the_label() {
        let call = json!({"event": "call", "direction": "outbound", "to": "+15551230000",
            "seconds": 180, "billed_seconds": 180, "included_seconds": 125});
        let debit = EntryKind::Debit;
        assert_eq!(
            describe(&entry(BillingItem::PhoneCall, debit, call.clone())),
            "Outbound call, 3 min"
        );
        assert_eq!(
            describe(&entry(BillingItem::IncludedMinutes, EntryKind::Credit, call.clone())),
            "Included plan minutes (2 min 5 s): Outbound call, 3 min"
        );
        assert_eq!(
            describe(&entry(BillingItem::PremiumService, debit, call)),
            "Premium service, transcription: Outbound call, 3 min"
        );
        let sms = json!({"event": "sms_out", "segments": 3});
        assert_eq!(
            describe(&entry(BillingItem::OutgoingSms, debit, sms)),
            "Outgoing text message, 3 segments"
        );
        let number = json!({"event": "number_renewal", "number": "+15550001111"});
        assert_eq!(
            describe(&entry(BillingItem::PhoneNumber, debit, number)),
            "Phone number renewal, +15550001111"
        );
        let paid = json!({"trigger": "auto", "card": "visa 4242", "payment_id": "p"});
        assert_eq!(
            describe(&entry(BillingItem::FundsAdded, EntryKind::Credit, paid)),
            "Auto-recharge, visa 4242"
        );
        let refund = json!({"reason": "Dropped calls\non the 3rd", "by": "ops"});
        assert_eq!(
            describe(&entry(BillingItem::Refund, EntryKind::Credit, refund)),
            "Refund: Dropped calls on the 3rd"
        );
        let tax = json!({"month": "2026-10"});
        assert_eq!(
            describe(&entry(BillingItem::SalesTax, debit, tax)),
            "Sales tax for October 2026"
        );
        for item in BillingItem::ALL {
            let described = describe(&entry(item, debit, serde_json::Value::Null));
            assert!(!described.is_empty());
        }
        assert_eq!(
            describe(&entry(BillingItem::PlanFee, debit, json!({"weird": [1]}))),
            "Plan fee"
        );
        let long = json!({"reason": "x".repeat(500)});
        assert_eq!(
            describe(&entry(BillingItem::Adjustment, debit, long)).chars().count(),
            MAX_DESCRIPTION_CHARS
        );
    }

    #[test]
    fn periods_are_checked_with_clear_errors() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let (start, end) = period_bounds(day("2026-10-01"), day("2026-10-31")).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert_eq!(end.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert!(period_bounds(day("2028-01-01"), day("2028-12-31")).is_ok(), "a leap year");
        assert!(period_bounds(day("2026-01-01"), day("2027-01-01")).is_ok(), "366 days");
        let too_long = period_bounds(day("2026-01-01"), day("2027-01-02")).unwrap_err();
        assert!(too_long.is_bad_request());
        assert_eq!(
            too_long.to_string(),
            "a statement covers at most 366 days; 2026-01-01 to 2027-01-02 is 367 days"
        );
        let reversed = period_bounds(day("2026-10-02"), day("2026-10-01")).unwrap_err();
        assert!(reversed.is_bad_request());
        assert_eq!(
            reversed.to_string(),
            "the statement period ends on 2026-10-01, before it starts on 2026-10-02"
        );
        let edge = period_bounds(NaiveDate::MAX, NaiveDate::MAX).unwrap_err();
        assert!(matches!(edge, StatementError::DateOutOfRange { .. }), "{edge}");
    }
}
