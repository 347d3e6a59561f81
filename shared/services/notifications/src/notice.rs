//! A notice to send, with a stable id: the same notice delivered twice is sent once.

use chrono::{DateTime, Utc};
use ledger::{AccountId, Amount, BillingItem, LedgerEvent, LedgerEventKind, Refusal};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Stable across redeliveries: `receipt:<payment id>`, `recharge_failed:<request>:<attempt>`,
    /// or the ledger event id.
    pub id: String,
    pub account_id: AccountId,
    pub raised_at: DateTime<Utc>,
    pub kind: NoticeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentTrigger {
    Manual,
    Auto,
    /// A plan period charged to the card (opt-in direct charge).
    Plan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardFailure {
    pub card_brand: String,
    pub card_last4: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NoticeKind {
    /// A successful charge: to the billing contacts.
    PaymentReceipt {
        payment_id: String,
        amount_usd: Amount,
        card_brand: String,
        card_last4: String,
        balance_after_usd: Decimal,
        trigger: PaymentTrigger,
        paid_at: DateTime<Utc>,
    },
    /// A payment that was pending (the processor had not answered, the bank was still
    /// processing it, or its holder had to authenticate it) ended failed, after the customer
    /// was told it was pending: to the billing contacts.
    PaymentFailed {
        payment_id: String,
        amount_usd: Amount,
        card_brand: String,
        card_last4: String,
        reason: String,
    },
    /// A refund of a payment to its card (or the processor's refusal of one): to the billing
    /// contacts.
    RefundReceipt {
        payment_id: String,
        refund_id: String,
        amount_usd: Amount,
        card_brand: String,
        card_last4: String,
        reason: String,
        /// `false`: the processor refused it and the amount went back to the balance.
        returned: bool,
        failure_reason: Option<String>,
        balance_after_usd: Decimal,
        refunded_at: DateTime<Utc>,
    },
    /// A payment was disputed by the cardholder (a chargeback), or its dispute moved: to the
    /// billing contacts. `stage`: `opened`, `funds_withdrawn`, `won` or `lost`.
    Dispute {
        payment_id: String,
        dispute_id: String,
        stage: String,
        amount_usd: Amount,
        fee_usd: Decimal,
        card_brand: String,
        card_last4: String,
        balance_after_usd: Decimal,
    },
    /// Every card failed: to the recharge-failure email and the billing contacts.
    RechargeFailed {
        request_id: String,
        attempt: u32,
        amount_usd: Amount,
        failures: Vec<CardFailure>,
        /// When the next attempt happens; `None` when auto-recharge gave up.
        next_attempt_at: Option<DateTime<Utc>>,
    },
    /// A plan period's direct charge failed on every card: to the recharge-failure email and
    /// the billing contacts. `next_attempt_at` `None`: out of attempts, the fee was taken from
    /// the balance instead.
    PlanChargeFailed {
        plan: String,
        period_from: chrono::NaiveDate,
        amount_usd: Amount,
        attempt: u32,
        failures: Vec<CardFailure>,
        next_attempt_at: Option<DateTime<Utc>>,
    },
    /// Every card declined an invoice's pre-authorized charge in one attempt: to the
    /// recharge-failure address and the billing contacts.
    InvoicePaymentFailed {
        number: String,
        month: ledger::Month,
        amount_usd: Amount,
        attempt: u32,
        failures: Vec<CardFailure>,
        /// `None`: no more attempts; the invoice waits for a payment by hand.
        next_attempt_at: Option<DateTime<Utc>>,
    },
    /// The customer's monthly auto-recharge cap was reached: no more this month.
    RechargeCapReached {
        month: ledger::Month,
        cap_usd: Amount,
        spent_usd: Decimal,
    },
    /// The daily auto-recharge cap was reached: no more until the next UTC day.
    RechargeDailyCapReached {
        day: chrono::NaiveDate,
        cap_usd: Amount,
        spent_usd: Decimal,
    },
    LowBalance {
        balance_usd: Decimal,
    },
    Suspended {
        balance_usd: Decimal,
    },
    Reactivated {
        balance_usd: Decimal,
    },
    /// A postpaid account was blocked: the invoice of `month` is unpaid past the days overdue
    /// the operator allows.
    InvoiceOverdueBlock {
        month: ledger::Month,
        balance_usd: Decimal,
    },
    /// A suspended account's numbers are due for release in `days_left` days.
    NumbersReleaseWarning {
        release_at: DateTime<Utc>,
        days_left: u32,
        balance_usd: Decimal,
    },
    /// The account stayed suspended: its numbers are being released.
    NumbersReleaseDue {
        release_at: DateTime<Utc>,
        balance_usd: Decimal,
    },
    /// The primary card expires within a month (sent once per card and expiry), to the card
    /// manager and the billing contacts.
    CardExpiring {
        card_brand: String,
        card_last4: String,
        exp_month: u8,
        exp_year: u16,
        card_manager_email: Option<String>,
        /// The backup that payments fall through to once it has expired ("Mastercard 4444").
        backup: Option<String>,
    },
    /// An advance purchase (a phone number) was refused: nothing was charged.
    PurchaseRefused {
        item: BillingItem,
        amount_usd: Amount,
        refusal: Refusal,
        /// The phone number, when the purchase's details name one.
        number: Option<String>,
        balance_usd: Decimal,
    },
}

impl NoticeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NoticeKind::PaymentReceipt { .. } => "payment_receipt",
            NoticeKind::PaymentFailed { .. } => "payment_failed",
            NoticeKind::RefundReceipt { .. } => "refund_receipt",
            NoticeKind::Dispute { .. } => "dispute",
            NoticeKind::RechargeFailed { .. } => "recharge_failed",
            NoticeKind::PlanChargeFailed { .. } => "plan_charge_failed",
            NoticeKind::InvoicePaymentFailed { .. } => "invoice_payment_failed",
            NoticeKind::RechargeCapReached { .. } => "recharge_cap_reached",
            NoticeKind::RechargeDailyCapReached { .. } => "recharge_daily_cap_reached",
            NoticeKind::LowBalance { .. } => "low_balance",
            NoticeKind::Suspended { .. } => "suspended",
            NoticeKind::Reactivated { .. } => "reactivated",
            NoticeKind::InvoiceOverdueBlock { .. } => "invoice_overdue_block",
            NoticeKind::PurchaseRefused { .. } => "purchase_refused",
            NoticeKind::CardExpiring { .. } => "card_expiring",
            NoticeKind::NumbersReleaseWarning { .. } => "numbers_release_warning",
            NoticeKind::NumbersReleaseDue { .. } => "numbers_release_due",
        }
    }
}

impl Notice {
    /// The notice a ledger event calls for (recharge requests go to the recharge worker).
    pub fn from_ledger_event(event: &LedgerEvent) -> Option<Notice> {
        let kind = match &event.kind {
            LedgerEventKind::RechargeRequested { .. }
            | LedgerEventKind::PaymentPending { .. }
            | LedgerEventKind::RefundPending { .. } => return None,
            LedgerEventKind::LowBalance => {
                NoticeKind::LowBalance { balance_usd: event.balance_usd }
            }
            LedgerEventKind::Suspended => NoticeKind::Suspended { balance_usd: event.balance_usd },
            LedgerEventKind::Reactivated => {
                NoticeKind::Reactivated { balance_usd: event.balance_usd }
            }
            LedgerEventKind::InvoiceOverdueBlock { month } => {
                NoticeKind::InvoiceOverdueBlock { month: *month, balance_usd: event.balance_usd }
            }
            LedgerEventKind::NumbersReleaseWarning { release_at, days_left } => {
                NoticeKind::NumbersReleaseWarning {
                    release_at: *release_at,
                    days_left: *days_left,
                    balance_usd: event.balance_usd,
                }
            }
            LedgerEventKind::NumbersReleaseDue { release_at } => NoticeKind::NumbersReleaseDue {
                release_at: *release_at,
                balance_usd: event.balance_usd,
            },
            LedgerEventKind::PurchaseRefused { item, amount_usd, refusal, details, .. } => {
                NoticeKind::PurchaseRefused {
                    item: *item,
                    amount_usd: *amount_usd,
                    refusal: refusal.clone(),
                    number: details.get("number").and_then(|n| n.as_str()).map(str::to_string),
                    balance_usd: event.balance_usd,
                }
            }
        };
        Some(Notice {
            id: event.id.clone(),
            account_id: event.account_id.clone(),
            raised_at: event.raised_at,
            kind,
        })
    }

    /// A queue message: a `Notice`, or a `LedgerEvent` the outbox relay published.
    pub fn parse_message(body: &str) -> Result<Option<Notice>, crate::error::NotANotice> {
        if let Ok(notice) = serde_json::from_str::<Notice>(body) {
            return Ok(Some(notice));
        }
        match serde_json::from_str::<LedgerEvent>(body) {
            Ok(event) => Ok(Notice::from_ledger_event(&event)),
            Err(error) => Err(crate::error::NotANotice(error)),
        }
    }
}

/// Where notices go to be sent (the notifications queue in AWS; the worker directly locally).
#[async_trait::async_trait]
pub trait NoticeSink: Send + Sync {
    async fn publish(
        &self,
        notice: &Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Notices as queue messages (the notifications queue in AWS): the body is the notice's JSON.
pub struct QueueNotices(pub std::sync::Arc<dyn messaging::queue::QueueSender>);

#[async_trait::async_trait]
impl NoticeSink for QueueNotices {
    async fn publish(
        &self,
        notice: &Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let message = messaging::queue::Outgoing::new(serde_json::to_string(notice)?)
            .with_attribute("notice_id", notice.id.clone())
            .with_attribute("kind", notice.kind.as_str());
        self.0.send(&message).await
    }
}

/// The notice that `card` (the account's primary) expires soon: its id names the card and the
/// expiry, so the daily sweep and the processor's `customer.source.expiring` event send it once
/// between them. The backup named is the next card in charge order that outlives it.
pub fn card_expiring(
    account: &ledger::AccountId,
    profile: &documents::profile::Profile,
    card: &documents::profile::StoredCard,
    raised_at: DateTime<Utc>,
) -> Notice {
    let backup = profile
        .charge_order()
        .into_iter()
        .filter(|other| other.id != card.id)
        .find(|other| other.last_valid_day() > card.last_valid_day())
        .map(|other| format!("{} {}", other.brand, other.last4));
    Notice {
        id: format!("card_expiring:{account}:{}:{}-{:02}", card.id, card.exp_year, card.exp_month),
        account_id: account.clone(),
        raised_at,
        kind: NoticeKind::CardExpiring {
            card_brand: card.brand.clone(),
            card_last4: card.last4.clone(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            card_manager_email: Some(card.card_manager_email.as_str().to_string()),
            backup,
        },
    }
}
