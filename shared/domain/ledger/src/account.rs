//! Accounts and the settings the ledger's posting rules read.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::hold::Hold;
use crate::ids::AccountId;
use crate::money::Amount;
use crate::month::Month;
use crate::service::ServicePolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// `balance > floor`: calls, SMS and purchases are allowed.
    Active,
    /// `balance <= floor`, or blocked for an overdue invoice ([`OverdueBlock`]): the
    /// authorization API refuses billable actions.
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermsAcceptance {
    pub version: String,
    pub accepted_by: String,
    pub accepted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RechargeMode {
    /// Charge the configured amount.
    Add,
    /// Charge what brings the balance back up to the configured amount.
    TopUpTo,
}

/// The smallest recharge amount and threshold the product allows (from the product docs).
pub const MIN_RECHARGE_AMOUNT_USD: Decimal = Decimal::from_parts(50, 0, 0, false, 0);
pub const MIN_RECHARGE_THRESHOLD_USD: Decimal = Decimal::from_parts(10, 0, 0, false, 0);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RechargeSettingsError {
    #[error("recharge amount must be at least $50")]
    AmountTooSmall,
    #[error("recharge threshold must be at least $10")]
    ThresholdTooSmall,
    #[error("recharge amount must be above the threshold")]
    AmountNotAboveThreshold,
    #[error("recharge amount and threshold must be whole cents")]
    NotWholeCents,
}

/// Auto-recharge settings that passed the product's validation rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRechargeSettings", into = "RawRechargeSettings")]
pub struct RechargeSettings {
    enabled: bool,
    amount_usd: Amount,
    threshold_usd: Amount,
    mode: RechargeMode,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawRechargeSettings {
    enabled: bool,
    amount_usd: Amount,
    threshold_usd: Amount,
    mode: RechargeMode,
}

impl RechargeSettings {
    pub fn new(
        enabled: bool,
        amount_usd: Amount,
        threshold_usd: Amount,
        mode: RechargeMode,
    ) -> Result<Self, RechargeSettingsError> {
        if amount_usd.value().scale() > 2 || threshold_usd.value().scale() > 2 {
            return Err(RechargeSettingsError::NotWholeCents);
        }
        if amount_usd.value() < MIN_RECHARGE_AMOUNT_USD {
            return Err(RechargeSettingsError::AmountTooSmall);
        }
        if threshold_usd.value() < MIN_RECHARGE_THRESHOLD_USD {
            return Err(RechargeSettingsError::ThresholdTooSmall);
        }
        if amount_usd <= threshold_usd {
            return Err(RechargeSettingsError::AmountNotAboveThreshold);
        }
        Ok(RechargeSettings { enabled, amount_usd, threshold_usd, mode })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn amount_usd(&self) -> Amount {
        self.amount_usd
    }
    pub fn threshold_usd(&self) -> Amount {
        self.threshold_usd
    }
    pub fn mode(&self) -> RechargeMode {
        self.mode
    }
}

impl TryFrom<RawRechargeSettings> for RechargeSettings {
    type Error = RechargeSettingsError;
    fn try_from(raw: RawRechargeSettings) -> Result<Self, Self::Error> {
        RechargeSettings::new(raw.enabled, raw.amount_usd, raw.threshold_usd, raw.mode)
    }
}

impl From<RechargeSettings> for RawRechargeSettings {
    fn from(s: RechargeSettings) -> Self {
        RawRechargeSettings {
            enabled: s.enabled,
            amount_usd: s.amount_usd,
            threshold_usd: s.threshold_usd,
            mode: s.mode,
        }
    }
}

/// Included plan seconds used in one calendar month (UTC). Updated atomically with the
/// postings that use them, so a redelivered call never uses them twice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlanUsage {
    /// `None` before the first use (stored as an empty string).
    #[serde(with = "crate::month::empty_is_none")]
    pub month: Option<Month>,
    pub included_seconds_used: u64,
}

impl PlanUsage {
    /// Seconds used in `month`: zero if the record is of another month.
    pub fn used_in(&self, month: Month) -> u64 {
        if self.month == Some(month) {
            self.included_seconds_used
        } else {
            0
        }
    }
}

/// What an account's entries posted in one calendar month (UTC, by `posted_at`) add up to, by
/// billing item: debits minus credits, so charges are positive and credits negative. Kept
/// current by every posting, atomically with it, so monthly jobs (sales tax) read one record
/// instead of a month of entries. Months close in posting order: once a later month has a
/// posting, an earlier month's totals never change again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthTotals {
    pub month: Month,
    #[serde(default)]
    pub by_item: std::collections::BTreeMap<crate::entry::BillingItem, Decimal>,
}

impl MonthTotals {
    pub fn empty(month: Month) -> Self {
        MonthTotals { month, by_item: Default::default() }
    }

    /// Debits minus credits of `item` in the month (zero when it has none).
    pub fn net(&self, item: crate::entry::BillingItem) -> Decimal {
        self.by_item.get(&item).copied().unwrap_or(Decimal::ZERO)
    }

    /// Add one entry's effect.
    pub fn add(&mut self, entry: &crate::entry::Entry) {
        let charge = -entry.signed_amount_usd();
        let total = self.by_item.entry(entry.item).or_insert(Decimal::ZERO);
        *total += charge;
        if total.is_zero() {
            self.by_item.remove(&entry.item);
        }
    }
}

/// An account's [`MonthTotals`] as stored: `None` (before the first posting) is written as the
/// totals of month `""` with no items, the form records had before `Month` existed.
mod stored_month_totals {
    use super::{Decimal, Month, MonthTotals};
    use crate::entry::BillingItem;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize)]
    struct Stored {
        #[serde(with = "crate::month::empty_is_none")]
        month: Option<Month>,
        #[serde(default)]
        by_item: BTreeMap<BillingItem, Decimal>,
    }

    pub fn serialize<S: Serializer>(
        totals: &Option<MonthTotals>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match totals {
            Some(totals) => totals.serialize(serializer),
            None => Stored { month: None, by_item: BTreeMap::new() }.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<MonthTotals>, D::Error> {
        let stored = Stored::deserialize(deserializer)?;
        Ok(stored.month.map(|month| MonthTotals { month, by_item: stored.by_item }))
    }
}

/// An account as the ledger sees it. Balance, `last_seq` and `version` change only by posting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    /// Exact, never rounded.
    pub balance_usd: Decimal,
    pub opening_balance_usd: Decimal,
    pub status: AccountStatus,
    /// Postpaid accounts may go down to `-credit_limit`; `None` means prepaid (floor 0).
    pub credit_limit_usd: Option<Amount>,
    pub terms: Option<TermsAcceptance>,
    pub recharge: Option<RechargeSettings>,
    /// The id of the auto-recharge request raised and not yet settled.
    pub recharge_in_flight: Option<String>,
    /// Auto-recharge stopped for a month (out of attempts, monthly cap reached, dead-lettered):
    /// no request is raised while it holds. The next calendar month, a change of the
    /// auto-recharge settings, a new or re-roled card, a payment or an operator's re-arm lifts
    /// it, so a stopped request never leaves the account drained with auto-recharge "on".
    #[serde(default)]
    pub recharge_stopped: Option<RechargeStop>,
    /// Pay Now payments whose outcome is not final yet, by their claim's idempotency key. Adding
    /// one raises a [`crate::LedgerEventKind::PaymentPending`] in the same write, so a reconciler
    /// settles it even when the request that made it died (at most
    /// [`MAX_PENDING_PAYMENTS`]).
    #[serde(default)]
    pub pending_payments: Vec<String>,
    /// Card refunds not final yet, as `payment_id/refund_id`. Adding one raises a
    /// [`crate::LedgerEventKind::RefundPending`] in the same write (bounded with the pending
    /// payments by [`MAX_PENDING_PAYMENTS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_refunds: Vec<String>,
    /// Crossing below this (balance less active holds) raises a low-balance notice, once until
    /// a credit brings it back above.
    pub low_balance_usd: Option<Amount>,
    /// A low-balance notice was raised and no credit has lifted the account above the level
    /// since: holds coming and going must not raise it again with every call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub low_balance_noticed: bool,
    /// Money reserved for authorized calls, messages and purchases (see [`crate::hold`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Hold>,
    /// Credit grants with something left (see [`crate::grant`]), at most
    /// [`crate::MAX_GRANTS`] as the operator API enforces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<crate::grant::CreditGrant>,
    /// Disputes (chargebacks) of the account's payments that are open, by dispute id: kept by
    /// the dispute flow from each payment's dispute record (which only moves forward), read by
    /// the authorization when the operator suspends accounts with an open dispute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_disputes: Vec<String>,
    /// The operator's rules below the floor (see [`crate::service`]); `None`: the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePolicy>,
    /// When the balance last reached the floor from above; cleared when it is lifted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_since: Option<DateTime<Utc>>,
    /// How far this suspension's number release has gone ([`crate::service::ReleaseStage`]).
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub release_stage: u8,
    /// The id of the account's rate card (see the rating crate); `None` uses the standard card.
    #[serde(default)]
    pub rate_card: Option<String>,
    /// Every credit that pays what the account owes (funds added, by any means, and operator
    /// adjustments such as credit notes), summed over the account's life: the dunning block
    /// lifts when it reaches the block's target, in the write that posts the payment.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub paid_in_usd: Decimal,
    /// Blocked for an invoice left unpaid past the operator's number of days overdue (issue
    /// 17): service stops as at the floor, until payments bring `paid_in_usd` to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_block: Option<OverdueBlock>,
    #[serde(default)]
    pub plan_usage: PlanUsage,
    /// Totals of the month of the account's last posting (see [`MonthTotals`]). Earlier months
    /// are closed into the store's month records when a posting opens a new month.
    /// `None` before the first posting.
    #[serde(default, with = "stored_month_totals")]
    pub month_totals: Option<MonthTotals>,
    /// Optimistic-concurrency version; every write bumps it.
    pub version: u64,
    /// The sequence number of the account's last entry (0 before the first).
    pub last_seq: u64,
    pub last_posted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A postpaid account blocked for an overdue invoice (set by the daily sweep, lifted by a
/// payment in the same write that posts it, or by the sweep once no invoice is overdue that
/// long).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueBlock {
    /// The oldest invoice overdue past the limit.
    pub month: Month,
    pub since: DateTime<Utc>,
    /// The block lifts when [`Account::paid_in_usd`] reaches this: what was paid in when the
    /// sweep read the invoices, plus what they left outstanding.
    pub until_paid_in_usd: Decimal,
}

fn is_zero_u8(value: &u8) -> bool {
    *value == 0
}

/// Pay Now payments an account may have in flight at once.
pub const MAX_PENDING_PAYMENTS: usize = 16;

/// Why and for which month auto-recharge stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RechargeStop {
    /// The stop holds through this month (UTC).
    pub month: Month,
    pub reason: String,
    /// Turned off until someone acts (a card change, a payment, new auto-recharge settings, an
    /// operator's re-arm): the month ending does not lift it. Set when every card failed
    /// [`MAX_FAILED_ATTEMPTS`](crate::MAX_FAILED_ATTEMPTS) attempts in a row, so a stolen or
    /// closed card is not tried again every month.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_lifted: bool,
    /// A stop for one UTC day only (the daily cap): it holds through `day`, not the month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<chrono::NaiveDate>,
}

/// Consecutive failed auto-recharge attempts (every card declined) after which auto-recharge
/// turns itself off until someone acts (telephony providers use 3).
pub const MAX_FAILED_ATTEMPTS: u32 = 3;

impl Account {
    /// May a new auto-recharge request be raised at `at`: none in flight, and not stopped for
    /// `at`'s month.
    pub fn recharge_may_start(&self, at: DateTime<Utc>) -> bool {
        self.recharge_in_flight.is_none()
            && self.recharge_stopped.as_ref().is_none_or(|stop| match stop.day {
                Some(day) => !stop.until_lifted && day != at.date_naive(),
                None => !stop.until_lifted && stop.month != Month::of(at),
            })
    }

    pub fn open(id: AccountId, credit_limit_usd: Option<Amount>, now: DateTime<Utc>) -> Self {
        let mut account = Account {
            id,
            balance_usd: Decimal::ZERO,
            opening_balance_usd: Decimal::ZERO,
            status: AccountStatus::Suspended,
            credit_limit_usd,
            terms: None,
            recharge: None,
            recharge_in_flight: None,
            recharge_stopped: None,
            pending_payments: Vec::new(),
            pending_refunds: Vec::new(),
            low_balance_usd: None,
            low_balance_noticed: false,
            holds: Vec::new(),
            grants: Vec::new(),
            open_disputes: Vec::new(),
            service: None,
            suspended_since: None,
            release_stage: 0,
            rate_card: None,
            paid_in_usd: Decimal::ZERO,
            overdue_block: None,
            plan_usage: PlanUsage::default(),
            month_totals: None,
            version: 0,
            last_seq: 0,
            last_posted_at: None,
            created_at: crate::truncate_to_micros(now),
        };
        account.status = account.status_for(account.balance_usd);
        account
    }

    /// The lowest balance at which service still runs is anything above this.
    pub fn floor_usd(&self) -> Decimal {
        self.credit_limit_usd.map(|limit| -limit.value()).unwrap_or(Decimal::ZERO)
    }

    pub fn status_for(&self, balance_usd: Decimal) -> AccountStatus {
        if balance_usd > self.floor_usd() && self.overdue_block.is_none() {
            AccountStatus::Active
        } else {
            AccountStatus::Suspended
        }
    }

    pub fn terms_accepted(&self) -> bool {
        self.terms.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_account_without_months_is_stored_as_before_months_were_typed() {
        let account =
            Account::open(AccountId::parse("acme").unwrap(), None, at("2026-10-01T00:00:00Z"));
        let json = serde_json::to_value(&account).unwrap();
        assert_eq!(
            json["plan_usage"],
            serde_json::json!({"month": "", "included_seconds_used": 0})
        );
        assert_eq!(json["month_totals"], serde_json::json!({"month": "", "by_item": {}}));
        let read: Account = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read, account);
        assert_eq!(serde_json::to_value(&read).unwrap(), json, "written back byte for byte");
    }

    #[test]
    fn stored_months_read_and_write_back_unchanged() {
        let mut account =
            Account::open(AccountId::parse("acme").unwrap(), None, at("2026-10-01T00:00:00Z"));
        let october: Month = "2026-10".parse().unwrap();
        account.plan_usage = PlanUsage { month: Some(october), included_seconds_used: 90 };
        account.month_totals = Some(MonthTotals {
            month: october,
            by_item: [(crate::entry::BillingItem::PhoneCall, Decimal::new(12345, 4))].into(),
        });
        account.recharge_stopped = Some(RechargeStop {
            month: october,
            reason: "monthly cap reached".into(),
            until_lifted: false,
            day: None,
        });
        let text = serde_json::to_string(&account).unwrap();
        assert!(
            text.contains(r#""plan_usage":{"month":"2026-10","included_seconds_used":90}"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#""month_totals":{"month":"2026-10","by_item":{"phone_call":"1.2345"}}"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#""recharge_stopped":{"month":"2026-10","reason":"monthly cap reached"}"#
            ),
            "{text}"
        );
        let read: Account = serde_json::from_str(&text).unwrap();
        assert_eq!(read, account);
        assert_eq!(serde_json::to_string(&read).unwrap(), text);

        // A record written before `month_totals` existed reads as no month yet.
        let mut old = serde_json::to_value(&account).unwrap();
        old.as_object_mut().unwrap().remove("month_totals");
        let read: Account = serde_json::from_value(old).unwrap();
        assert_eq!(read.month_totals, None);
        // A stored month that is not `YYYY-MM` is corrupt data, not "no month".
        let mut bad = serde_json::to_value(&account).unwrap();
        bad["plan_usage"]["month"] = serde_json::json!("October");
        assert!(serde_json::from_value::<Account>(bad).is_err());
    }
}
