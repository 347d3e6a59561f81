//! Credit grants: money the operator gives an account (promotional or goodwill), kept apart from
//! the funds the customer paid.
//!
//! A grant is opened by a `credit_grant` credit carrying its terms ([`GrantTerms`]); it lives on
//! the account ([`Account::grants`]) while anything is left of it. The balance is paid funds plus
//! what is left of the grants: the ledger keeps one balance and one chain, and the split is
//! derived, never stored twice (`paid = balance − granted`).
//!
//! - **Drawing.** A debit of an item that [`draws on grants`](crate::BillingItem::draws_on_grants)
//!   takes from the grants usable at its posting time first (earliest expiry first, grants
//!   without an expiry last; then the lower `priority`; then the older grant), and from paid
//!   funds only for the rest. Each entry records the part every grant bore ([`Entry::grants`]),
//!   so statements and the activity say which grant paid for what, and a grant's remainder is
//!   the sum of its entries' shares.
//! - **What never draws on grants:** money that leaves to the card processor (a card refund, a
//!   dispute): a grant is never refundable to a card, and a chargeback is paid money.
//! - **Plan credits.** A call's `included_minutes` credit follows the call's debit in the same
//!   batch; it gives back the money the call took last (paid funds first, then the grants in
//!   reverse order), so the plan's minutes never turn granted money into paid money.
//! - **Expiry.** At `expires_at` a grant stops paying for anything. The first write of the account
//!   at or after that time posts a `credit_grant` debit for what is left (source id
//!   `gx:<grant id>`), ahead of that write's own postings; a daily sweep writes it for quiet
//!   accounts. The remainder is frozen from the moment of expiry, so it is removed exactly once,
//!   and until it is, the available balance already leaves it out. Paid funds never expire.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, GrantShare};
use crate::Account;

/// Grants one account may hold at once (those with something left): a bound on the account
/// item's size; the operator API refuses more.
pub const MAX_GRANTS: usize = 32;
/// The priority a grant gets when none is given (0 is drawn first, 100 last).
pub const DEFAULT_GRANT_PRIORITY: u8 = 50;
pub const MAX_GRANT_PRIORITY: u8 = 100;

/// Why the operator granted the credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantCategory {
    Promotional,
    Goodwill,
}

impl GrantCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantCategory::Promotional => "promotional",
            GrantCategory::Goodwill => "goodwill",
        }
    }
}

/// The terms a `credit_grant` credit opens its grant with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTerms {
    pub category: GrantCategory,
    /// `None`: the grant never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// 0 to 100; among grants expiring together, the lower is drawn first.
    pub priority: u8,
}

/// A grant with something left, as the account carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditGrant {
    /// The source id of the credit that opened it.
    pub id: String,
    pub category: GrantCategory,
    pub granted_usd: Decimal,
    pub remaining_usd: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: u8,
    pub granted_at: DateTime<Utc>,
}

impl CreditGrant {
    /// Expired at `at`: it pays for nothing from then on, and what is left is to be removed.
    pub fn expired_at(&self, at: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|expires| expires <= at)
    }

    /// The order grants are drawn in: earliest expiry (none last), lower priority, older, id.
    fn draw_order(&self) -> (bool, Option<DateTime<Utc>>, u8, DateTime<Utc>, &str) {
        (self.expires_at.is_none(), self.expires_at, self.priority, self.granted_at, &self.id)
    }
}

impl Account {
    /// What is left of the account's grants (expired or not, until the expiry entry posts).
    pub fn granted_usd(&self) -> Decimal {
        self.grants.iter().map(|grant| grant.remaining_usd).sum()
    }

    /// The customer's own money: the balance less what is left of the grants. Never expires.
    pub fn paid_usd(&self) -> Decimal {
        self.balance_usd - self.granted_usd()
    }

    /// What is left of grants that expired by `at` and whose expiry entry has not posted yet:
    /// still in the balance, but usable for nothing.
    pub fn expired_grants_usd(&self, at: DateTime<Utc>) -> Decimal {
        self.grants.iter().filter(|grant| grant.expired_at(at)).map(|g| g.remaining_usd).sum()
    }

    /// Grants that have expired by `at` with something left (the next write removes them).
    pub fn grants_due_to_expire(&self, at: DateTime<Utc>) -> bool {
        self.grants.iter().any(|grant| grant.expired_at(at) && grant.remaining_usd > Decimal::ZERO)
    }
}

/// Draw `amount` from the grants usable at `at`, in draw order: the shares taken (what the grants
/// could not cover is paid funds).
pub(crate) fn draw(
    grants: &mut [CreditGrant],
    amount: Decimal,
    at: DateTime<Utc>,
) -> Vec<GrantShare> {
    let mut order: Vec<usize> = (0..grants.len())
        .filter(|&i| !grants[i].expired_at(at) && grants[i].remaining_usd > Decimal::ZERO)
        .collect();
    order.sort_by(|&a, &b| grants[a].draw_order().cmp(&grants[b].draw_order()));
    let mut left = amount;
    let mut shares = Vec::new();
    for i in order {
        if left <= Decimal::ZERO {
            break;
        }
        let take = left.min(grants[i].remaining_usd);
        grants[i].remaining_usd -= take;
        left -= take;
        shares.push(GrantShare { grant: grants[i].id.clone(), amount_usd: take });
    }
    shares
}

/// Give back `amount` of the debit `debit` (the entry just before a plan credit): the paid part
/// first, then its grant shares in reverse order. The shares given back to grants.
pub(crate) fn give_back(
    grants: &mut [CreditGrant],
    debit: &Entry,
    amount: Decimal,
) -> Vec<GrantShare> {
    let from_grants: Decimal = debit.grants.iter().map(|share| share.amount_usd).sum();
    let paid_part = debit.amount_usd.value() - from_grants;
    let mut left = (amount - paid_part).max(Decimal::ZERO);
    let mut shares = Vec::new();
    for share in debit.grants.iter().rev() {
        if left <= Decimal::ZERO {
            break;
        }
        let back = left.min(share.amount_usd);
        if let Some(grant) = grants.iter_mut().find(|grant| grant.id == share.grant) {
            grant.remaining_usd += back;
            left -= back;
            shares.push(GrantShare { grant: share.grant.clone(), amount_usd: back });
        }
    }
    shares
}

/// Source id of the entry that removes what is left of an expired grant.
pub fn expiry_source_id(grant_id: &str) -> String {
    format!("gx:{grant_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn at(hour: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-01T{hour:02}:00:00Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn grant(id: &str, left: Decimal, expires: Option<u32>, priority: u8) -> CreditGrant {
        CreditGrant {
            id: id.into(),
            category: GrantCategory::Promotional,
            granted_usd: left,
            remaining_usd: left,
            expires_at: expires.map(at),
            priority,
            granted_at: at(0),
        }
    }

    #[test]
    fn earliest_expiry_then_priority_then_never_expiring() {
        let mut grants = vec![
            grant("forever", dec!(5), None, 0),
            grant("late", dec!(1), Some(20), 0),
            grant("soon-low", dec!(1), Some(10), 90),
            grant("soon-high", dec!(1), Some(10), 10),
            grant("gone", dec!(9), Some(1), 0),
        ];
        let shares = draw(&mut grants, dec!(3.5), at(2));
        let order: Vec<(&str, Decimal)> =
            shares.iter().map(|s| (s.grant.as_str(), s.amount_usd)).collect();
        assert_eq!(
            order,
            [
                ("soon-high", dec!(1)),
                ("soon-low", dec!(1)),
                ("late", dec!(1)),
                ("forever", dec!(0.5))
            ]
        );
        assert_eq!(grants[4].remaining_usd, dec!(9), "an expired grant pays for nothing");
    }

    #[test]
    fn a_plan_credit_gives_back_the_paid_part_first() {
        let mut grants = vec![grant("g", dec!(0.30), None, 50)];
        let shares = draw(&mut grants, dec!(1), at(1));
        assert_eq!(grants[0].remaining_usd, dec!(0));
        let debit = Entry {
            account_id: crate::AccountId::parse("a").unwrap(),
            seq: 1,
            kind: crate::EntryKind::Debit,
            item: crate::BillingItem::PhoneCall,
            amount_usd: crate::Amount::new(dec!(1)).unwrap(),
            balance_after_usd: dec!(-1),
            posted_at: at(1),
            occurred_at: at(1),
            source_id: crate::SourceId::parse("c").unwrap(),
            details: serde_json::Value::Null,
            grants: shares,
        };
        // $0.60 of the $1.00 call is included: it comes out of the $0.70 paid part.
        assert!(give_back(&mut grants, &debit, dec!(0.60)).is_empty());
        // All of it included: the grant gets its $0.30 back.
        let back = give_back(&mut grants, &debit, dec!(1));
        assert_eq!(back, [GrantShare { grant: "g".into(), amount_usd: dec!(0.30) }]);
        assert_eq!(grants[0].remaining_usd, dec!(0.30));
    }
}
