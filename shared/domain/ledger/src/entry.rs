//! Ledger entries: immutable records of every change of balance.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, SourceId};
use crate::money::Amount;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Debit,
    Credit,
}

impl EntryKind {
    pub fn signed(self, amount: Amount) -> Decimal {
        match self {
            EntryKind::Debit => -amount.value(),
            EntryKind::Credit => amount.value(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Debit => "debit",
            EntryKind::Credit => "credit",
        }
    }
}

/// The billing items of the product's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingItem {
    /// Phone number purchase or monthly renewal.
    PhoneNumber,
    /// Inbound or outbound call minutes.
    PhoneCall,
    OutgoingSms,
    IncomingSms,
    RingThroughAttempt,
    CarrierSurcharge,
    /// Transcription, enhanced caller ID, call recording.
    PremiumService,
    SalesTax,
    PlanFee,
    /// A manual payment or an auto-recharge.
    FundsAdded,
    /// An operator's adjustment, either direction.
    Adjustment,
    /// An operator's refund.
    Refund,
    /// The part of a call's charge covered by the plan's included minutes (a credit paired
    /// with the call's debit, so the call shows on statements at its full price).
    IncludedMinutes,
    /// Paid funds returned to the card they came from: a debit linked to the payment (and a
    /// credit when the processor definitely refused a refund already debited).
    CardRefund,
    /// A chargeback: the disputed amount and the processor's fee, debited when the processor
    /// withdraws them and credited back when a won dispute reinstates them.
    Dispute,
    /// Money the operator granted (promotional or goodwill): a credit that opens a grant, and
    /// the debit that removes what is left of it when it expires (see [`crate::grant`]).
    CreditGrant,
}

/// Credit notes' ledger credits (adjustments) carry source ids that start so.
pub const CREDIT_NOTE_SOURCE_PREFIX: &str = "cn:";

impl Entry {
    /// This entry pays what the account owes (lifting a dunning block): a credit of funds
    /// added by any means, or a credit note's adjustment (not any other adjustment: it settles
    /// no invoice).
    pub fn pays_what_is_owed(&self) -> bool {
        self.kind == EntryKind::Credit
            && (self.item == BillingItem::FundsAdded
                || (self.item == BillingItem::Adjustment
                    && self.source_id.as_str().starts_with(CREDIT_NOTE_SOURCE_PREFIX)))
    }
}

impl BillingItem {
    pub const ALL: [BillingItem; 16] = [
        BillingItem::PhoneNumber,
        BillingItem::PhoneCall,
        BillingItem::OutgoingSms,
        BillingItem::IncomingSms,
        BillingItem::RingThroughAttempt,
        BillingItem::CarrierSurcharge,
        BillingItem::PremiumService,
        BillingItem::SalesTax,
        BillingItem::PlanFee,
        BillingItem::FundsAdded,
        BillingItem::Adjustment,
        BillingItem::Refund,
        BillingItem::IncludedMinutes,
        BillingItem::CardRefund,
        BillingItem::Dispute,
        BillingItem::CreditGrant,
    ];

    pub fn allows(self, kind: EntryKind) -> bool {
        match self {
            BillingItem::FundsAdded | BillingItem::Refund | BillingItem::IncludedMinutes => {
                kind == EntryKind::Credit
            }
            BillingItem::Adjustment
            | BillingItem::CardRefund
            | BillingItem::Dispute
            | BillingItem::CreditGrant => true,
            _ => kind == EntryKind::Debit,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BillingItem::PhoneNumber => "phone_number",
            BillingItem::PhoneCall => "phone_call",
            BillingItem::OutgoingSms => "outgoing_sms",
            BillingItem::IncomingSms => "incoming_sms",
            BillingItem::RingThroughAttempt => "ring_through_attempt",
            BillingItem::CarrierSurcharge => "carrier_surcharge",
            BillingItem::PremiumService => "premium_service",
            BillingItem::SalesTax => "sales_tax",
            BillingItem::PlanFee => "plan_fee",
            BillingItem::FundsAdded => "funds_added",
            BillingItem::Adjustment => "adjustment",
            BillingItem::Refund => "refund",
            BillingItem::IncludedMinutes => "included_minutes",
            BillingItem::CardRefund => "card_refund",
            BillingItem::Dispute => "dispute",
            BillingItem::CreditGrant => "credit_grant",
        }
    }

    /// Whether a debit of this item is paid from the account's credit grants before its paid
    /// funds. Money that goes back to the card processor (a card refund, a chargeback) is paid
    /// money and never comes out of a grant; a grant's own expiry removes only that grant.
    pub fn draws_on_grants(self) -> bool {
        !matches!(self, BillingItem::CardRefund | BillingItem::Dispute | BillingItem::CreditGrant)
    }

    pub fn parse(value: &str) -> Option<Self> {
        BillingItem::ALL.into_iter().find(|item| item.as_str() == value)
    }
}

/// The part of one entry a grant bore: drawn from it (a debit) or given back to it (a credit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantShare {
    #[serde(rename = "g")]
    pub grant: String,
    #[serde(rename = "a")]
    pub amount_usd: Decimal,
}

/// One immutable ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub account_id: AccountId,
    /// 1, 2, 3, ... per account, without gaps.
    pub seq: u64,
    pub kind: EntryKind,
    pub item: BillingItem,
    pub amount_usd: Amount,
    pub balance_after_usd: Decimal,
    /// When the ledger applied it (UTC, never earlier than the entry before it).
    pub posted_at: DateTime<Utc>,
    /// When the billed thing happened (UTC), as the source reported it.
    pub occurred_at: DateTime<Utc>,
    pub source_id: SourceId,
    pub details: serde_json::Value,
    /// The part of the amount each credit grant bore (see [`crate::grant`]): drawn from it by a
    /// debit, given back to it by a credit. The rest is paid funds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantShare>,
}

impl Entry {
    pub fn signed_amount_usd(&self) -> Decimal {
        self.kind.signed(self.amount_usd)
    }

    /// The part of the amount credit grants bore (the rest is paid funds).
    pub fn grants_usd(&self) -> Decimal {
        self.grants.iter().map(|share| share.amount_usd).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("entry {found} follows {previous}: sequence numbers must be consecutive from 1")]
    Gap { previous: u64, found: u64 },
    #[error("entry {seq}: balance_after {found} but previous balance plus amount is {expected}")]
    Broken { seq: u64, expected: Decimal, found: Decimal },
    #[error("entry {seq} was posted before the entry preceding it")]
    TimeTravel { seq: u64 },
    #[error("account balance {account} differs from the last balance_after {chain}")]
    AccountMismatch { account: Decimal, chain: Decimal },
}

/// Check the invariant: `balance = opening + credits - debits`, and the `balance_after` values form
/// one unbroken chain with consecutive sequence numbers starting at 1.
pub fn verify_chain(
    opening_balance_usd: Decimal,
    entries: &[Entry],
    account_balance_usd: Decimal,
) -> Result<(), ChainError> {
    let mut balance = opening_balance_usd;
    let mut previous_seq = 0;
    let mut previous_posted_at = None;
    for entry in entries {
        if entry.seq != previous_seq + 1 {
            return Err(ChainError::Gap { previous: previous_seq, found: entry.seq });
        }
        let expected = balance + entry.signed_amount_usd();
        if entry.balance_after_usd != expected {
            return Err(ChainError::Broken {
                seq: entry.seq,
                expected,
                found: entry.balance_after_usd,
            });
        }
        if previous_posted_at.is_some_and(|at| entry.posted_at < at) {
            return Err(ChainError::TimeTravel { seq: entry.seq });
        }
        balance = expected;
        previous_seq = entry.seq;
        previous_posted_at = Some(entry.posted_at);
    }
    if balance != account_balance_usd {
        return Err(ChainError::AccountMismatch { account: account_balance_usd, chain: balance });
    }
    Ok(())
}
