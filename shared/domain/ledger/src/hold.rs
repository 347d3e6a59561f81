//! Holds: money reserved on an account for a call, message or purchase the platform has
//! authorized and not yet reported.
//!
//! A hold is never debited. It only lowers the *available* balance (balance − active holds −
//! floor) that later authorizations are checked against, so concurrent authorizations can never
//! grant, together, more than the account has. The usage event that reports the call (carrying
//! the authorization id) debits the rated cost as any usage does and, in the same atomic write,
//! settles the hold ([`crate::Posting::settles`]): one debit, never a hold-derived debit beside
//! a full one. A hold that is never reported expires on its own at `expires_at`; an event that
//! arrives after that still debits exactly once (its source ids), and finds nothing to settle.
//!
//! A settled hold stays on the account for a minute (the newest [`MAX_SETTLED_MARKS`] of them),
//! not counted, so a create or an extend replayed after settlement is recognised instead of
//! reserving the money again; a report that finds no hold leaves the same mark.

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Account;

/// Active holds one account may carry at once: a bound on the account item's size, far above
/// the concurrent calls of any one customer.
pub const MAX_HOLDS: usize = 200;

/// Settled holds and report marks kept so a replayed authorization is recognised: the newest
/// few, for a minute (a platform retries within seconds). Few and short-lived, because every
/// write of the account pays for the bytes they take.
pub const MAX_SETTLED_MARKS: usize = 8;
pub const SETTLED_MARK_SECONDS: i64 = 60;

/// What a hold reserves money for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldPurpose {
    Call,
    Sms,
    NumberPurchase,
}

/// One reservation, identified by the platform's authorization id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "p")]
    pub purpose: HoldPurpose,
    /// Reserved now: the cost of what was granted (for a call, every slice so far).
    #[serde(rename = "a")]
    pub amount_usd: Decimal,
    /// Calls: seconds granted so far (first slice plus extensions).
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub granted_seconds: Option<u32>,
    /// Calls: where the call goes, so an extension is rated as the first slice was.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub call: Option<HeldCall>,
    /// Extensions applied (each extend request carries the next number, so a replay changes
    /// nothing).
    #[serde(rename = "x", default, skip_serializing_if = "is_zero")]
    pub extensions: u32,
    /// Whole seconds (holds are kept to the second: the account item pays for every byte).
    #[serde(rename = "t", with = "chrono::serde::ts_seconds")]
    pub created_at: DateTime<Utc>,
    /// It releases itself then, reported or not.
    #[serde(rename = "e", with = "chrono::serde::ts_seconds")]
    pub expires_at: DateTime<Utc>,
    /// Reported (or released by the platform): no longer counted, kept a minute so replays
    /// are recognised.
    #[serde(rename = "s", default, skip_serializing_if = "std::ops::Not::not")]
    pub settled: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The call a hold was granted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCall {
    #[serde(rename = "in", default, skip_serializing_if = "std::ops::Not::not")]
    pub inbound: bool,
    pub to: String,
}

impl HoldPurpose {
    /// What a posting of `item` reports.
    pub fn of_item(item: crate::BillingItem) -> Self {
        use crate::BillingItem::*;
        match item {
            PhoneNumber => HoldPurpose::NumberPurchase,
            OutgoingSms | IncomingSms => HoldPurpose::Sms,
            _ => HoldPurpose::Call,
        }
    }
}

impl Hold {
    /// Counted against the available balance at `at`.
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        !self.settled && self.expires_at > at
    }
}

impl Account {
    /// Money reserved by active holds at `at`, leaving out the hold `except` (the one a posting
    /// settles, so its own reservation does not refuse it).
    pub fn held_usd(&self, at: DateTime<Utc>, except: Option<&str>) -> Decimal {
        self.holds
            .iter()
            .filter(|hold| hold.is_active(at) && Some(hold.id.as_str()) != except)
            .map(|hold| hold.amount_usd)
            .sum()
    }

    /// Balance minus active holds (what auto-recharge and the low-balance notice watch), and
    /// minus grants that have expired but whose expiry entry has not posted yet.
    pub fn unreserved_usd(&self, at: DateTime<Utc>) -> Decimal {
        self.balance_usd - self.held_usd(at, None) - self.expired_grants_usd(at)
    }

    /// What a new authorization may use at `at`: balance − active holds − floor.
    pub fn available_usd(&self, at: DateTime<Utc>) -> Decimal {
        self.unreserved_usd(at) - self.floor_usd()
    }

    /// Seconds of plan minutes that active call holds have already granted.
    pub fn held_call_seconds(&self, at: DateTime<Utc>, except: Option<&str>) -> u64 {
        self.holds
            .iter()
            .filter(|hold| hold.is_active(at) && Some(hold.id.as_str()) != except)
            .filter_map(|hold| hold.granted_seconds)
            .map(u64::from)
            .sum()
    }

    pub fn hold(&self, id: &str) -> Option<&Hold> {
        self.holds.iter().find(|hold| hold.id == id)
    }

    /// Drop holds past their expiry (active ones released themselves; settled ones have
    /// outlived any replay). Returns whether any was dropped.
    pub fn prune_holds(&mut self, at: DateTime<Utc>) -> bool {
        let before = self.holds.len();
        self.holds.retain(|hold| hold.expires_at > at);
        self.holds.len() != before
    }

    /// A report of `id` at `at`: settle its hold, or, when there is none to settle, leave a
    /// settled mark so a replayed authorization finds it.
    pub fn report_hold(&mut self, id: &str, purpose: HoldPurpose, at: DateTime<Utc>) {
        if self.settle_hold(id, at) || self.hold(id).is_some() {
            return;
        }
        let at = at.trunc_subsecs(0);
        self.holds.push(Hold {
            id: id.to_string(),
            purpose,
            amount_usd: Decimal::ZERO,
            granted_seconds: None,
            call: None,
            extensions: 0,
            created_at: at,
            expires_at: at + chrono::Duration::seconds(SETTLED_MARK_SECONDS),
            settled: true,
        });
        self.trim_settled_marks();
    }

    /// Active holds (not settled, whether or not expired: expired ones go with the next write).
    pub fn unsettled_holds(&self) -> usize {
        self.holds.iter().filter(|hold| !hold.settled).count()
    }

    /// Keep only the newest [`MAX_SETTLED_MARKS`] settled holds.
    fn trim_settled_marks(&mut self) {
        let settled = self.holds.iter().filter(|hold| hold.settled).count();
        if settled <= MAX_SETTLED_MARKS {
            return;
        }
        let mut times: Vec<DateTime<Utc>> =
            self.holds.iter().filter(|hold| hold.settled).map(|hold| hold.expires_at).collect();
        times.sort();
        let mut drop = settled - MAX_SETTLED_MARKS;
        let cutoff = times[drop - 1];
        self.holds.retain(|hold| {
            if drop > 0 && hold.settled && hold.expires_at <= cutoff {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Settle the hold `id` if it is still active (a report or a release). Returns whether it
    /// was.
    pub fn settle_hold(&mut self, id: &str, at: DateTime<Utc>) -> bool {
        match self.holds.iter_mut().find(|hold| hold.id == id && hold.is_active(at)) {
            Some(hold) => {
                hold.settled = true;
                hold.call = None;
                hold.amount_usd = Decimal::ZERO;
                let mark = at.trunc_subsecs(0) + chrono::Duration::seconds(SETTLED_MARK_SECONDS);
                hold.expires_at = hold.expires_at.min(mark);
                self.trim_settled_marks();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountId, Amount};
    use chrono::Duration;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn hold(id: &str, usd: i64, expires: i64) -> Hold {
        Hold {
            id: id.into(),
            purpose: HoldPurpose::Call,
            amount_usd: Decimal::from(usd),
            granted_seconds: Some(300),
            call: None,
            extensions: 0,
            created_at: at(0),
            expires_at: at(expires),
            settled: false,
        }
    }

    #[test]
    fn available_is_balance_less_active_holds_less_floor() {
        let limit = Amount::new(Decimal::from(5)).unwrap();
        let mut account = Account::open(AccountId::parse("a").unwrap(), Some(limit), at(0));
        account.balance_usd = Decimal::from(10);
        account.holds = vec![hold("h1", 3, 100), hold("h2", 4, 50)];
        assert_eq!(account.available_usd(at(10)), Decimal::from(10 - 3 - 4 + 5));
        assert_eq!(account.held_usd(at(10), Some("h1")), Decimal::from(4));
        // h2 expired: it no longer counts, and pruning drops it.
        assert_eq!(account.available_usd(at(60)), Decimal::from(10 - 3 + 5));
        assert!(account.prune_holds(at(60)));
        assert_eq!(account.holds.len(), 1);
        assert!(!account.prune_holds(at(60)));
    }

    #[test]
    fn a_settled_hold_is_not_counted_and_settles_once() {
        let mut account = Account::open(AccountId::parse("a").unwrap(), None, at(0));
        account.balance_usd = Decimal::from(10);
        account.holds = vec![hold("h1", 3, 100)];
        assert!(account.settle_hold("h1", at(5)));
        assert!(!account.settle_hold("h1", at(6)), "only once");
        assert!(!account.settle_hold("nope", at(6)));
        assert_eq!(account.available_usd(at(6)), Decimal::from(10));
        assert!(account.hold("h1").is_some(), "kept for replays for a minute");
        assert!(account.prune_holds(at(5) + Duration::seconds(SETTLED_MARK_SECONDS)));
    }

    #[test]
    fn only_the_newest_settled_marks_are_kept() {
        let mut account = Account::open(AccountId::parse("a").unwrap(), None, at(0));
        for n in 0..20 {
            account.holds.push(hold(&format!("h{n}"), 1, 1_000));
            assert!(account.settle_hold(&format!("h{n}"), at(n)));
        }
        account.report_hold("late", HoldPurpose::Sms, at(30));
        assert_eq!(account.holds.len(), MAX_SETTLED_MARKS);
        assert!(account.hold("late").is_some_and(|h| h.settled), "the report left its mark");
        assert!(account.hold("h19").is_some() && account.hold("h11").is_none());
    }
}
