//! Credit grants through the public API: debits draw on grants before paid funds, each entry
//! says which grant paid, plan credits give back what their call took last, expiry removes what
//! is left exactly once, and paid funds never expire.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger::memory::MemoryStore;
use ledger::{
    apply, verify_chain, Account, AccountId, Amount, BillingItem, EntryKind, GrantCategory,
    GrantShare, GrantTerms, LedgerError, LedgerStore, NewAccount, Posting, PostingResult, SourceId,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).single().unwrap()
}

fn hours(n: i64) -> DateTime<Utc> {
    t0() + Duration::hours(n)
}

fn id() -> AccountId {
    AccountId::parse("acct_g").unwrap()
}

fn usd(value: Decimal) -> Amount {
    Amount::new(value).unwrap()
}

fn account(paid: Decimal) -> Account {
    let mut account = Account::open(id(), None, t0() - Duration::days(1));
    account.balance_usd = paid;
    account.opening_balance_usd = paid;
    account.status = account.status_for(paid);
    account
}

fn grant(source: &str, amount: Decimal, expires: Option<i64>, priority: u8) -> Posting {
    let terms = GrantTerms {
        category: GrantCategory::Promotional,
        expires_at: expires.map(hours),
        priority,
    };
    Posting::grant(SourceId::parse(source).unwrap(), usd(amount), terms, t0()).unwrap()
}

fn call(source: &str, amount: Decimal) -> Posting {
    Posting::usage(SourceId::parse(source).unwrap(), BillingItem::PhoneCall, usd(amount), t0())
        .unwrap()
}

fn shares(pairs: &[(&str, Decimal)]) -> Vec<GrantShare> {
    pairs.iter().map(|(g, a)| GrantShare { grant: (*g).into(), amount_usd: *a }).collect()
}

#[test]
fn a_grant_adds_to_the_balance_and_is_kept_apart_from_paid_funds() {
    let app = apply(&account(dec!(10)), &[grant("cg:a", dec!(5), None, 50)], &HashMap::new(), t0())
        .unwrap();
    assert_eq!(app.account.balance_usd, dec!(15));
    assert_eq!(app.account.granted_usd(), dec!(5));
    assert_eq!(app.account.paid_usd(), dec!(10));
    assert_eq!(app.entries[0].item, BillingItem::CreditGrant);
    assert_eq!(app.entries[0].kind, EntryKind::Credit);
    assert_eq!(app.entries[0].grants, shares(&[("cg:a", dec!(5))]));
}

#[test]
fn debits_draw_on_grants_first_by_expiry_then_priority_and_say_which_paid() {
    let granted = apply(
        &account(dec!(10)),
        &[
            grant("cg:forever", dec!(2), None, 0),
            grant("cg:late", dec!(1), Some(48), 0),
            grant("cg:soon-low", dec!(1), Some(24), 90),
            grant("cg:soon-high", dec!(1), Some(24), 10),
        ],
        &HashMap::new(),
        t0(),
    )
    .unwrap()
    .account;
    let app = apply(&granted, &[call("c1", dec!(4.5)), call("c2", dec!(1))], &HashMap::new(), t0())
        .unwrap();
    assert_eq!(
        app.entries[0].grants,
        shares(&[
            ("cg:soon-high", dec!(1)),
            ("cg:soon-low", dec!(1)),
            ("cg:late", dec!(1)),
            ("cg:forever", dec!(1.5))
        ])
    );
    assert_eq!(app.entries[1].grants, shares(&[("cg:forever", dec!(0.5))]));
    assert_eq!(app.account.granted_usd(), dec!(0));
    assert!(app.account.grants.is_empty(), "used-up grants leave the account");
    assert_eq!(app.account.paid_usd(), dec!(9.5), "paid funds paid only the last $0.50");
}

#[test]
fn card_refunds_and_chargebacks_never_come_out_of_a_grant() {
    let granted =
        apply(&account(dec!(10)), &[grant("cg:a", dec!(5), None, 50)], &HashMap::new(), t0())
            .unwrap()
            .account;
    for item in [BillingItem::CardRefund, BillingItem::Dispute] {
        let posting = Posting::usage(SourceId::parse("x").unwrap(), item, usd(dec!(3)), t0());
        let app = apply(&granted, &[posting.unwrap()], &HashMap::new(), t0()).unwrap();
        assert!(app.entries[0].grants.is_empty(), "{item:?}");
        assert_eq!(app.account.granted_usd(), dec!(5), "{item:?}");
        assert_eq!(app.account.paid_usd(), dec!(7), "{item:?}");
    }
}

#[test]
fn a_plan_credit_gives_back_what_its_call_took_last() {
    let granted =
        apply(&account(dec!(10)), &[grant("cg:a", dec!(0.30), None, 50)], &HashMap::new(), t0())
            .unwrap()
            .account;
    let included = |amount| {
        Posting::credit(
            SourceId::parse("c1:included").unwrap(),
            BillingItem::IncludedMinutes,
            usd(amount),
            t0(),
        )
        .unwrap()
    };
    // $0.60 of a $1.00 call is included: the grant pays $0.30 and paid funds $0.10.
    let app = apply(&granted, &[call("c1", dec!(1)), included(dec!(0.60))], &HashMap::new(), t0())
        .unwrap();
    assert!(app.entries[1].grants.is_empty());
    assert_eq!(app.account.granted_usd(), dec!(0));
    assert_eq!(app.account.paid_usd(), dec!(9.90));
    // All of it included: the grant is whole again and paid funds untouched.
    let app =
        apply(&granted, &[call("c1", dec!(1)), included(dec!(1))], &HashMap::new(), t0()).unwrap();
    assert_eq!(app.entries[1].grants, shares(&[("cg:a", dec!(0.30))]));
    assert_eq!(app.account.granted_usd(), dec!(0.30));
    assert_eq!(app.account.paid_usd(), dec!(10));
}

#[test]
fn an_expired_grant_pays_for_nothing_and_its_remainder_is_removed_once() {
    let granted = apply(
        &account(dec!(10)),
        &[grant("cg:a", dec!(5), Some(1), 50), grant("cg:b", dec!(2), None, 50)],
        &HashMap::new(),
        t0(),
    )
    .unwrap()
    .account;
    let used = apply(&granted, &[call("c1", dec!(1))], &HashMap::new(), t0()).unwrap().account;
    assert_eq!(used.grants.iter().find(|g| g.id == "cg:a").unwrap().remaining_usd, dec!(4));
    // Expired, not yet written: the balance still holds it, the available balance does not.
    assert_eq!(used.balance_usd, dec!(16));
    assert_eq!(used.available_usd(hours(2)), dec!(12));
    // The next write removes it first: the call is paid by the other grant.
    let after = apply(&used, &[call("c2", dec!(1))], &HashMap::new(), hours(2)).unwrap();
    assert_eq!(after.entries.len(), 2);
    let expiry = &after.entries[0];
    assert_eq!((expiry.kind, expiry.item), (EntryKind::Debit, BillingItem::CreditGrant));
    assert_eq!(expiry.amount_usd.value(), dec!(4));
    assert_eq!(expiry.source_id.as_str(), "gx:cg:a");
    assert_eq!(expiry.occurred_at, hours(1), "dated at the expiry");
    assert_eq!(after.entries[1].grants, shares(&[("cg:b", dec!(1))]));
    assert_eq!(after.results, [PostingResult::Applied { seq: 5, balance_after_usd: dec!(11) }]);
    assert_eq!(after.account.paid_usd(), dec!(10), "paid funds never expire");
    // Nothing more to remove.
    let again = apply(&after.account, &[], &HashMap::new(), hours(3)).unwrap();
    assert!(!again.changed());
}

#[test]
fn grant_terms_are_the_ledgers_own() {
    let bad = Posting::credit(
        SourceId::parse("x").unwrap(),
        BillingItem::CreditGrant,
        usd(dec!(1)),
        t0(),
    );
    assert_eq!(bad, Err(LedgerError::GrantTerms));
    let too_high =
        GrantTerms { category: GrantCategory::Goodwill, expires_at: None, priority: 101 };
    assert_eq!(
        Posting::grant(SourceId::parse("x").unwrap(), usd(dec!(1)), too_high, t0()),
        Err(LedgerError::GrantTerms)
    );
    // Terms on anything else are refused too, however the posting was built.
    let mut smuggled = call("c", dec!(1));
    smuggled.grant =
        Some(GrantTerms { category: GrantCategory::Goodwill, expires_at: None, priority: 1 });
    assert_eq!(
        apply(&account(dec!(1)), &[smuggled], &HashMap::new(), t0()),
        Err(LedgerError::GrantTerms)
    );
}

#[tokio::test]
async fn the_store_expires_a_quiet_accounts_grant_with_an_empty_write_once() {
    let store = MemoryStore::new();
    store.create_account(NewAccount { id: id(), credit_limit_usd: None }, t0()).await.unwrap();
    store.post(&id(), vec![grant("cg:a", dec!(5), Some(1), 50)], t0()).await.unwrap();
    let swept = store.post(&id(), vec![], hours(2)).await.unwrap();
    assert_eq!(swept.account.balance_usd, dec!(0));
    assert!(swept.account.grants.is_empty());
    let again = store.post(&id(), vec![], hours(3)).await.unwrap();
    assert_eq!(again.account.last_seq, 2, "removed once");
    let entries =
        ledger::store::all_entries(&store, &id(), ledger::EntryQuery::default()).await.unwrap();
    verify_chain(Decimal::ZERO, &entries, again.account.balance_usd).unwrap();
}

proptest! {
    /// Whatever mix of grants, calls, plan credits, payments and time: each grant's remainder is
    /// its entries' shares, no debit draws on a grant expired at its posting, and paid funds
    /// move only by paid money.
    #[test]
    fn grant_remainders_are_their_shares(ops in proptest::collection::vec((0u8..5, 1u32..500, 0u8..3), 1..40)) {
        let mut account = account(dec!(3));
        let mut expected_paid = dec!(3);
        let mut all = Vec::new();
        for (n, (op, cents, hour)) in ops.into_iter().enumerate() {
            let at = t0() + Duration::hours(n as i64 / 4);
            let amount = Decimal::new(i64::from(cents), 2);
            let postings = match op {
                0 => vec![grant(&format!("cg:{n}"), amount, (hour > 0).then(|| n as i64 / 4 + i64::from(hour)), hour * 40)],
                1 => vec![call(&format!("c{n}"), amount)],
                2 => vec![
                    call(&format!("c{n}"), amount),
                    Posting::credit(SourceId::parse(format!("c{n}:inc")).unwrap(), BillingItem::IncludedMinutes, usd(amount * dec!(0.5)), at).unwrap(),
                ],
                3 => vec![Posting::credit(SourceId::parse(format!("f{n}")).unwrap(), BillingItem::FundsAdded, usd(amount), at).unwrap()],
                _ => vec![Posting::usage(SourceId::parse(format!("r{n}")).unwrap(), BillingItem::CardRefund, usd(amount), at).unwrap()],
            };
            let app = apply(&account, &postings, &HashMap::new(), at).unwrap();
            for entry in &app.entries {
                let from_grants = entry.grants_usd();
                prop_assert!(from_grants <= entry.amount_usd.value());
                if entry.item != BillingItem::CreditGrant {
                    expected_paid += entry.signed_amount_usd()
                        - if entry.kind == EntryKind::Credit { from_grants } else { -from_grants };
                }
                if entry.kind == EntryKind::Debit && entry.item != BillingItem::CreditGrant {
                    for share in &entry.grants {
                        let grant = account.grants.iter().find(|g| g.id == share.grant);
                        prop_assert!(grant.is_none_or(|g| !g.expired_at(entry.posted_at)));
                    }
                }
            }
            all.extend(app.entries.clone());
            account = app.account;
            prop_assert_eq!(account.paid_usd(), expected_paid);
        }
        let mut left: HashMap<String, Decimal> = HashMap::new();
        for entry in &all {
            for share in &entry.grants {
                *left.entry(share.grant.clone()).or_default() += if entry.kind == EntryKind::Credit { share.amount_usd } else { -share.amount_usd };
            }
        }
        for grant in &account.grants {
            prop_assert_eq!(left.get(&grant.id).copied(), Some(grant.remaining_usd));
        }
        prop_assert!(left.values().all(|v| *v >= Decimal::ZERO));
        prop_assert_eq!(left.values().copied().sum::<Decimal>(), account.granted_usd());
    }
}

#[test]
fn an_expiry_that_takes_the_balance_under_the_low_balance_level_says_so() {
    let mut account = account(dec!(2));
    account.low_balance_usd = Some(usd(dec!(5)));
    let granted =
        apply(&account, &[grant("cg:a", dec!(10), Some(1), 50)], &HashMap::new(), t0()).unwrap();
    assert!(granted.events.is_empty(), "$12 is above the $5 level");
    let expired = apply(&granted.account, &[], &HashMap::new(), hours(2)).unwrap();
    let kinds: Vec<&str> = expired.events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"low_balance"), "{kinds:?}");
}
