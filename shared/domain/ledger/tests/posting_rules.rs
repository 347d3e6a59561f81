//! The posting rules, through the crate's public API: what a batch of postings does to an
//! account's balance, status, entries and events, and the in-process store that persists them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use ledger::memory::MemoryStore;
use ledger::posting::{settle_settings_change, MAX_DETAILS_BYTES, MAX_POSTINGS_PER_CALL};
use ledger::store::{all_entries, MAX_PAGE_SIZE};
use ledger::{
    apply, verify_chain, Account, AccountChange, AccountId, AccountStatus, Amount, Application,
    AppliedEntry, BillingItem, ChainError, Entry, EntryKind, EntryQuery, LedgerError, LedgerEvent,
    LedgerEventKind, LedgerStore, NewAccount, Posting, PostingResult, PostingRule, RechargeMode,
    RechargeSettings, RechargeSettingsError, Refusal, Show, SourceId, StoreError, TermsAcceptance,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const ACCOUNT: &str = "acct_1";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).single().expect("a valid instant")
}

fn minutes(n: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(n)
}

fn account_id() -> AccountId {
    AccountId::parse(ACCOUNT).expect("a valid account id")
}

fn source(id: &str) -> SourceId {
    SourceId::parse(id).expect("a valid source id")
}

fn usd(value: Decimal) -> Amount {
    Amount::new(value).expect("a valid amount")
}

fn terms() -> TermsAcceptance {
    TermsAcceptance {
        version: "2026-01".to_string(),
        accepted_by: "owner@example.com".to_string(),
        accepted_at: t0() - Duration::days(1),
    }
}

/// An account that accepted the terms and opened with `balance`; `credit_limit` makes it postpaid.
fn account_with(balance: Decimal, credit_limit: Option<Decimal>) -> Account {
    let mut account = Account::open(account_id(), credit_limit.map(usd), t0() - Duration::days(1));
    account.terms = Some(terms());
    account.balance_usd = balance;
    account.opening_balance_usd = balance;
    account.status = account.status_for(balance);
    account
}

fn prepaid(balance: Decimal) -> Account {
    account_with(balance, None)
}

fn usage(id: &str, amount: Decimal) -> Posting {
    Posting::usage(source(id), BillingItem::PhoneCall, usd(amount), t0()).expect("a valid usage")
}

fn purchase(id: &str, amount: Decimal) -> Posting {
    Posting::purchase(source(id), BillingItem::PhoneNumber, usd(amount), t0())
        .expect("a valid purchase")
}

fn funds(id: &str, amount: Decimal) -> Posting {
    Posting::credit(source(id), BillingItem::FundsAdded, usd(amount), t0()).expect("a valid credit")
}

fn run(account: &Account, postings: &[Posting]) -> Application {
    apply(account, postings, &HashMap::new(), t0()).expect("the batch is valid")
}

fn event_kinds(events: &[LedgerEvent]) -> Vec<LedgerEventKind> {
    events.iter().map(|e| e.kind.clone()).collect()
}

fn count_kind(events: &[LedgerEvent], name: &str) -> usize {
    events.iter().filter(|e| e.kind.as_str() == name).count()
}

fn recharge(enabled: bool, amount: Decimal, threshold: Decimal) -> RechargeSettings {
    RechargeSettings::new(enabled, usd(amount), usd(threshold), RechargeMode::Add)
        .expect("valid recharge settings")
}

/// A prepaid account with auto-recharge of $50 when the balance is below $20.
fn recharging(balance: Decimal) -> Account {
    let mut account = prepaid(balance);
    account.recharge = Some(recharge(true, dec!(50), dec!(20)));
    account
}

/// Applies batches one after another, feeding already-applied source ids back in like a store.
struct Book {
    account: Account,
    entries: Vec<Entry>,
    by_source: HashMap<SourceId, AppliedEntry>,
}

impl Book {
    fn new(account: Account) -> Self {
        Book { account, entries: Vec::new(), by_source: HashMap::new() }
    }

    fn post(&mut self, postings: &[Posting], now: DateTime<Utc>) -> Application {
        let application =
            apply(&self.account, postings, &self.by_source, now).expect("the batch is valid");
        for entry in &application.entries {
            self.by_source.insert(entry.source_id.clone(), AppliedEntry::of(entry));
        }
        self.entries.extend(application.entries.iter().cloned());
        self.account = application.account.clone();
        application
    }

    fn verify(&self) -> Result<(), ChainError> {
        verify_chain(self.account.opening_balance_usd, &self.entries, self.account.balance_usd)
    }
}

// ---------------------------------------------------------------------------------------------
// Completed usage
// ---------------------------------------------------------------------------------------------

#[test]
fn completed_usage_posts_even_below_the_prepaid_floor() {
    let before = prepaid(dec!(1));
    let application = run(&before, &[usage("call-1", dec!(5.25))]);

    assert_eq!(
        application.results,
        vec![PostingResult::Applied { seq: 1, balance_after_usd: dec!(-4.25) }]
    );
    assert_eq!(application.account.balance_usd, dec!(-4.25));
    assert_eq!(application.account.status, AccountStatus::Suspended);
    assert_eq!(application.entries.len(), 1);
}

#[test]
fn completed_usage_posts_even_below_the_postpaid_credit_limit() {
    let before = account_with(dec!(-8), Some(dec!(10)));
    assert_eq!(before.floor_usd(), dec!(-10));
    assert_eq!(before.status, AccountStatus::Active);

    let application = run(&before, &[usage("call-1", dec!(5))]);

    assert_eq!(
        application.results,
        vec![PostingResult::Applied { seq: 1, balance_after_usd: dec!(-13) }]
    );
    assert_eq!(application.account.status, AccountStatus::Suspended);
}

#[test]
fn completed_usage_posts_on_an_account_that_is_already_suspended() {
    let before = prepaid(dec!(-3));
    assert_eq!(before.status, AccountStatus::Suspended);

    let application = run(&before, &[usage("sms-1", dec!(0.0075))]);

    assert_eq!(application.account.balance_usd, dec!(-3.0075));
    assert!(application.changed());
}

#[test]
fn completed_usage_posts_even_before_terms_are_accepted() {
    let mut before = prepaid(dec!(2));
    before.terms = None;

    let application = run(&before, &[usage("call-1", dec!(3))]);

    assert_eq!(
        application.results,
        vec![PostingResult::Applied { seq: 1, balance_after_usd: dec!(-1) }]
    );
}

#[test]
fn entries_carry_what_the_posting_said() {
    let before = prepaid(dec!(10));
    let posting = Posting::usage(
        source("evt-42"),
        BillingItem::OutgoingSms,
        usd(dec!(0.0079)),
        t0() - Duration::hours(2),
    )
    .and_then(|p| p.with_details(serde_json::json!({"to": "+15550100"})))
    .expect("a valid posting");

    let application = apply(&before, &[posting], &HashMap::new(), minutes(5)).expect("valid");
    let entry = &application.entries[0];

    assert_eq!(entry.account_id, account_id());
    assert_eq!(entry.seq, 1);
    assert_eq!(entry.kind, EntryKind::Debit);
    assert_eq!(entry.item, BillingItem::OutgoingSms);
    assert_eq!(entry.amount_usd, usd(dec!(0.0079)));
    assert_eq!(entry.balance_after_usd, dec!(9.9921));
    assert_eq!(entry.source_id, source("evt-42"));
    assert_eq!(entry.occurred_at, t0() - Duration::hours(2));
    assert_eq!(entry.posted_at, minutes(5));
    assert_eq!(entry.details, serde_json::json!({"to": "+15550100"}));
}

// ---------------------------------------------------------------------------------------------
// Advance purchases
// ---------------------------------------------------------------------------------------------

#[test]
fn a_purchase_landing_exactly_on_the_prepaid_floor_is_allowed() {
    let before = prepaid(dec!(5));
    let application = run(&before, &[purchase("buy-1", dec!(5))]);

    assert_eq!(
        application.results,
        vec![PostingResult::Applied { seq: 1, balance_after_usd: dec!(0) }]
    );
    assert_eq!(application.account.status, AccountStatus::Suspended);
}

#[test]
fn a_purchase_one_ten_thousandth_below_the_prepaid_floor_is_refused() {
    let before = prepaid(dec!(5));
    let application = run(&before, &[purchase("buy-1", dec!(5.0001))]);

    assert_eq!(
        application.results,
        vec![PostingResult::Refused(Refusal::InsufficientBalance {
            balance_usd: dec!(5),
            floor_usd: dec!(0),
        })]
    );
    assert!(application.entries.is_empty());
    // Nothing but the version moves; the refusal is an event for the platform.
    assert_eq!(application.account, Account { version: before.version + 1, ..before.clone() });
    assert_eq!(application.events.len(), 1);
    assert_eq!(application.events[0].kind.as_str(), "purchase_refused");
}

#[test]
fn a_refused_purchase_raises_one_event_per_source_id_with_what_was_refused() {
    let before = prepaid(dec!(5));
    let buy = purchase("buy-1", dec!(5.0001))
        .with_details(serde_json::json!({ "number": "+14155550100" }))
        .unwrap();
    let application = run(&before, &[buy.clone(), usage("call-1", dec!(1)), buy]);

    assert_eq!(application.entries.len(), 1, "the call posts");
    assert_eq!(application.events.len(), 1, "{:?}", application.events);
    let event = &application.events[0];
    assert_eq!(event.id, "acct_1:purchase_refused:buy-1");
    assert_eq!((event.seq, event.version, event.balance_usd), (1, 1, dec!(4)));
    assert_eq!(
        event.kind,
        LedgerEventKind::PurchaseRefused {
            source_id: source("buy-1"),
            item: BillingItem::PhoneNumber,
            amount_usd: Amount::new(dec!(5.0001)).unwrap(),
            refusal: Refusal::InsufficientBalance { balance_usd: dec!(5), floor_usd: dec!(0) },
            details: serde_json::json!({ "number": "+14155550100" }),
        }
    );
}

#[test]
fn a_purchase_landing_exactly_on_the_postpaid_floor_is_allowed() {
    let before = account_with(dec!(-90), Some(dec!(100)));
    let application = run(&before, &[purchase("buy-1", dec!(10))]);

    assert_eq!(
        application.results,
        vec![PostingResult::Applied { seq: 1, balance_after_usd: dec!(-100) }]
    );
    assert_eq!(application.account.status, AccountStatus::Suspended);
}

#[test]
fn a_purchase_one_ten_thousandth_below_the_postpaid_floor_is_refused() {
    let before = account_with(dec!(-90), Some(dec!(100)));
    let application = run(&before, &[purchase("buy-1", dec!(10.0001))]);

    assert_eq!(
        application.results,
        vec![PostingResult::Refused(Refusal::InsufficientBalance {
            balance_usd: dec!(-90),
            floor_usd: dec!(-100),
        })]
    );
    assert_eq!(application.account, Account { version: before.version + 1, ..before.clone() });
}

#[test]
fn a_purchase_before_terms_are_accepted_is_refused_however_rich_the_account() {
    let mut before = prepaid(dec!(1000));
    before.terms = None;

    let application = run(&before, &[purchase("buy-1", dec!(1))]);

    assert_eq!(application.results, vec![PostingResult::Refused(Refusal::TermsNotAccepted)]);
    assert!(application.entries.is_empty());
    assert_eq!(application.account, Account { version: before.version + 1, ..before.clone() });
    let LedgerEventKind::PurchaseRefused { refusal, .. } = &application.events[0].kind else {
        panic!("{:?}", application.events);
    };
    assert_eq!(refusal, &Refusal::TermsNotAccepted);
}

#[test]
fn a_refused_purchase_creates_no_entry_and_consumes_no_sequence_number() {
    let before = prepaid(dec!(10));
    let application = run(
        &before,
        &[usage("call-1", dec!(1)), purchase("buy-1", dec!(100)), usage("call-2", dec!(2))],
    );

    assert_eq!(
        application.results,
        vec![
            PostingResult::Applied { seq: 1, balance_after_usd: dec!(9) },
            PostingResult::Refused(Refusal::InsufficientBalance {
                balance_usd: dec!(9),
                floor_usd: dec!(0),
            }),
            PostingResult::Applied { seq: 2, balance_after_usd: dec!(7) },
        ]
    );
    let seqs: Vec<u64> = application.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert!(application.entries.iter().all(|e| e.source_id != source("buy-1")));
    assert_eq!(application.account.last_seq, 2);
    assert_eq!(
        verify_chain(dec!(10), &application.entries, application.account.balance_usd),
        Ok(())
    );
}

#[test]
fn a_purchase_is_judged_against_the_balance_left_by_earlier_postings_in_the_batch() {
    let before = prepaid(dec!(10));
    let application = run(&before, &[usage("call-1", dec!(8)), purchase("buy-1", dec!(5))]);

    assert_eq!(
        application.results[1],
        PostingResult::Refused(Refusal::InsufficientBalance {
            balance_usd: dec!(2),
            floor_usd: dec!(0),
        })
    );
    assert_eq!(application.account.balance_usd, dec!(2));
}

#[test]
fn a_refused_purchase_can_be_retried_with_the_same_source_id_once_funds_arrive() {
    let mut book = Book::new(prepaid(dec!(1)));

    let first = book.post(&[purchase("buy-1", dec!(3))], minutes(0));
    assert!(matches!(first.results[0], PostingResult::Refused(_)));

    book.post(&[funds("pay-1", dec!(5))], minutes(1));
    let retry = book.post(&[purchase("buy-1", dec!(3))], minutes(2));

    assert_eq!(retry.results, vec![PostingResult::Applied { seq: 2, balance_after_usd: dec!(3) }]);
    assert_eq!(book.verify(), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Suspension and reactivation
// ---------------------------------------------------------------------------------------------

#[test]
fn crossing_the_floor_raises_exactly_one_suspended_event() {
    let before = prepaid(dec!(10));
    assert_eq!(before.status, AccountStatus::Active);

    let application = run(
        &before,
        &[usage("call-1", dec!(4)), usage("call-2", dec!(4)), usage("call-3", dec!(4))],
    );

    assert_eq!(event_kinds(&application.events), vec![LedgerEventKind::Suspended]);
    let event = &application.events[0];
    assert_eq!(event.id, format!("{ACCOUNT}:suspended:3:v1"));
    assert_eq!(event.account_id, account_id());
    assert_eq!(event.seq, 3);
    assert_eq!(event.balance_usd, dec!(-2));
    assert_eq!(event.raised_at, t0());
    assert_eq!(application.account.status, AccountStatus::Suspended);
}

#[test]
fn a_balance_exactly_at_the_floor_counts_as_suspended() {
    let prepaid_account = prepaid(dec!(0));
    assert_eq!(prepaid_account.status_for(dec!(0)), AccountStatus::Suspended);
    assert_eq!(prepaid_account.status_for(dec!(0.0001)), AccountStatus::Active);

    let postpaid = account_with(dec!(0), Some(dec!(25)));
    assert_eq!(postpaid.status_for(dec!(-25)), AccountStatus::Suspended);
    assert_eq!(postpaid.status_for(dec!(-24.9999)), AccountStatus::Active);

    let application = run(&prepaid(dec!(10)), &[usage("call-1", dec!(10))]);
    assert_eq!(application.account.balance_usd, dec!(0));
    assert_eq!(application.account.status, AccountStatus::Suspended);
    assert_eq!(event_kinds(&application.events), vec![LedgerEventKind::Suspended]);
}

#[test]
fn a_new_prepaid_account_starts_suspended_and_a_new_postpaid_account_starts_active() {
    let prepaid_account = Account::open(account_id(), None, t0());
    let postpaid = Account::open(account_id(), Some(usd(dec!(50))), t0());

    assert_eq!(prepaid_account.status, AccountStatus::Suspended);
    assert_eq!(postpaid.status, AccountStatus::Active);
    assert_eq!(postpaid.floor_usd(), dec!(-50));
}

#[test]
fn staying_suspended_raises_nothing_more() {
    let mut book = Book::new(prepaid(dec!(1)));
    let first = book.post(&[usage("call-1", dec!(2))], minutes(0));
    assert_eq!(event_kinds(&first.events), vec![LedgerEventKind::Suspended]);

    let second = book.post(&[usage("call-2", dec!(2)), usage("call-3", dec!(2))], minutes(1));
    assert!(second.events.is_empty(), "{:?}", second.events);
    assert_eq!(second.account.status, AccountStatus::Suspended);

    let partial_credit = book.post(&[funds("pay-1", dec!(5))], minutes(2));
    assert_eq!(partial_credit.account.balance_usd, dec!(0));
    assert!(partial_credit.events.is_empty(), "a credit up to the floor is not enough");
    assert_eq!(partial_credit.account.status, AccountStatus::Suspended);
}

#[test]
fn a_credit_lifting_the_balance_above_the_floor_raises_reactivated() {
    let before = prepaid(dec!(-2));
    let application = run(&before, &[funds("pay-1", dec!(2.0001))]);

    assert_eq!(application.account.status, AccountStatus::Active);
    assert_eq!(event_kinds(&application.events), vec![LedgerEventKind::Reactivated]);
    assert_eq!(application.events[0].id, format!("{ACCOUNT}:reactivated:1:v1"));
    assert_eq!(application.events[0].balance_usd, dec!(0.0001));
}

#[test]
fn a_refund_lifting_a_postpaid_balance_above_the_credit_limit_reactivates() {
    let before = account_with(dec!(-30), Some(dec!(20)));
    let refund = Posting::credit(source("refund-1"), BillingItem::Refund, usd(dec!(15)), t0())
        .expect("a refund is a credit");

    let application = run(&before, &[refund]);

    assert_eq!(application.account.balance_usd, dec!(-15));
    assert_eq!(event_kinds(&application.events), vec![LedgerEventKind::Reactivated]);
}

#[test]
fn a_batch_that_dips_below_the_floor_and_recovers_raises_no_status_event() {
    let before = prepaid(dec!(5));
    let application = run(&before, &[usage("call-1", dec!(10)), funds("pay-1", dec!(20))]);

    assert_eq!(application.account.balance_usd, dec!(15));
    assert_eq!(application.account.status, AccountStatus::Active);
    assert!(application.events.is_empty(), "{:?}", application.events);
}

// ---------------------------------------------------------------------------------------------
// Auto-recharge
// ---------------------------------------------------------------------------------------------

#[test]
fn falling_below_the_recharge_threshold_raises_exactly_one_recharge_request() {
    let before = recharging(dec!(30));
    let application = run(
        &before,
        &[usage("call-1", dec!(6)), usage("call-2", dec!(6)), usage("call-3", dec!(6))],
    );

    assert_eq!(application.account.balance_usd, dec!(12));
    let requests: Vec<&LedgerEvent> = application
        .events
        .iter()
        .filter(|e| matches!(e.kind, LedgerEventKind::RechargeRequested { .. }))
        .collect();
    assert_eq!(requests.len(), 1);
    let expected_id = format!("rch:{ACCOUNT}:3:v1");
    assert_eq!(
        requests[0].kind,
        LedgerEventKind::RechargeRequested { request_id: expected_id.clone() }
    );
    assert_eq!(application.account.recharge_in_flight, Some(expected_id));
}

#[test]
fn postings_while_a_recharge_is_in_flight_raise_no_further_request() {
    let mut book = Book::new(recharging(dec!(25)));
    let first = book.post(&[usage("call-1", dec!(10))], minutes(0));
    assert_eq!(count_kind(&first.events, "recharge_requested"), 1);
    let in_flight = book.account.recharge_in_flight.clone();
    assert!(in_flight.is_some());

    let second = book.post(&[usage("call-2", dec!(1))], minutes(1));
    let third = book.post(&[usage("call-3", dec!(1)), funds("pay-manual", dec!(1))], minutes(2));

    assert_eq!(count_kind(&second.events, "recharge_requested"), 0);
    assert_eq!(count_kind(&third.events, "recharge_requested"), 0);
    assert_eq!(book.account.recharge_in_flight, in_flight, "a manual payment settles nothing");
}

#[test]
fn funds_added_under_the_request_id_settle_the_recharge_in_flight() {
    let mut book = Book::new(recharging(dec!(25)));
    book.post(&[usage("call-1", dec!(10))], minutes(0));
    let request_id = book.account.recharge_in_flight.clone().expect("a recharge is in flight");

    let settled = book.post(&[funds(&request_id, dec!(50))], minutes(1));

    assert_eq!(settled.account.recharge_in_flight, None);
    assert_eq!(settled.account.balance_usd, dec!(65));
    assert!(settled.events.is_empty(), "{:?}", settled.events);

    // The next time the balance drops below the threshold a fresh request is raised.
    let next = book.post(&[usage("call-2", dec!(50))], minutes(2));
    assert_eq!(
        event_kinds(&next.events),
        vec![LedgerEventKind::RechargeRequested { request_id: format!("rch:{ACCOUNT}:3:v3") }]
    );
}

#[test]
fn an_adjustment_under_the_request_id_does_not_settle_the_recharge() {
    let mut account = recharging(dec!(10));
    account.recharge_in_flight = Some("rch:acct_1:7".to_string());
    let adjustment =
        Posting::credit(source("rch:acct_1:7"), BillingItem::Adjustment, usd(dec!(1)), t0())
            .expect("an adjustment may be a credit");

    let application = run(&account, &[adjustment]);

    assert_eq!(application.account.recharge_in_flight, Some("rch:acct_1:7".to_string()));
}

#[test]
fn a_recharge_that_leaves_the_balance_below_the_threshold_raises_no_new_request_until_the_next_debit(
) {
    // One large debit is one crossing and one top-up, never a runaway of them (Lago #6177).
    let mut account = recharging(dec!(-100));
    account.recharge_in_flight = Some("rch:acct_1:7".to_string());

    let application = run(&account, &[funds("rch:acct_1:7", dec!(50))]);

    assert_eq!(application.account.balance_usd, dec!(-50));
    assert!(event_kinds(&application.events)
        .iter()
        .all(|k| !matches!(k, LedgerEventKind::RechargeRequested { .. })));
    assert_eq!(application.account.recharge_in_flight, None);

    let next = run(&application.account, &[usage("call-after", dec!(1))]);
    let new_id = format!("rch:{ACCOUNT}:2:v2");
    assert_eq!(
        event_kinds(&next.events),
        vec![LedgerEventKind::RechargeRequested { request_id: new_id.clone() }]
    );
    assert_eq!(next.account.recharge_in_flight, Some(new_id));
}

#[test]
fn disabled_auto_recharge_never_raises_a_request() {
    let mut account = prepaid(dec!(25));
    account.recharge = Some(recharge(false, dec!(50), dec!(20)));
    let mut book = Book::new(account);

    for (n, amount) in [dec!(10), dec!(10), dec!(10)].into_iter().enumerate() {
        let application = book.post(&[usage(&format!("call-{n}"), amount)], minutes(n as i64));
        assert_eq!(count_kind(&application.events, "recharge_requested"), 0);
    }
    assert_eq!(book.account.balance_usd, dec!(-5));
    assert_eq!(book.account.recharge_in_flight, None);
}

#[test]
fn an_account_without_recharge_settings_never_raises_a_request() {
    let application = run(&prepaid(dec!(25)), &[usage("call-1", dec!(24))]);

    assert_eq!(count_kind(&application.events, "recharge_requested"), 0);
    assert_eq!(application.account.recharge_in_flight, None);
}

#[test]
fn a_balance_exactly_at_the_recharge_threshold_does_not_raise_a_request() {
    let at_threshold = run(&recharging(dec!(30)), &[usage("call-1", dec!(10))]);
    assert_eq!(at_threshold.account.balance_usd, dec!(20));
    assert_eq!(count_kind(&at_threshold.events, "recharge_requested"), 0);
    assert_eq!(at_threshold.account.recharge_in_flight, None);

    let just_below = run(&recharging(dec!(30)), &[usage("call-1", dec!(10.0001))]);
    assert_eq!(count_kind(&just_below.events, "recharge_requested"), 1);
}

#[test]
fn a_posting_that_suspends_and_falls_below_the_threshold_raises_both_events() {
    let application = run(&recharging(dec!(5)), &[usage("call-1", dec!(6))]);

    assert_eq!(
        event_kinds(&application.events),
        vec![
            LedgerEventKind::Suspended,
            LedgerEventKind::RechargeRequested { request_id: format!("rch:{ACCOUNT}:1:v1") },
        ]
    );
    let ids: HashSet<&str> = application.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "event ids must be distinct");
}

// ---------------------------------------------------------------------------------------------
// Recharge settings validation
// ---------------------------------------------------------------------------------------------

fn settings(
    amount: Decimal,
    threshold: Decimal,
) -> Result<RechargeSettings, RechargeSettingsError> {
    RechargeSettings::new(true, usd(amount), usd(threshold), RechargeMode::TopUpTo)
}

#[test]
fn a_recharge_amount_below_fifty_dollars_is_rejected() {
    assert_eq!(settings(dec!(49.99), dec!(10)), Err(RechargeSettingsError::AmountTooSmall));
    let smallest = settings(dec!(50), dec!(10)).expect("$50 is allowed");
    assert_eq!(smallest.amount_usd(), usd(dec!(50)));
    assert_eq!(smallest.threshold_usd(), usd(dec!(10)));
    assert_eq!(smallest.mode(), RechargeMode::TopUpTo);
    assert!(smallest.enabled());
}

#[test]
fn a_recharge_threshold_below_ten_dollars_is_rejected() {
    assert_eq!(settings(dec!(100), dec!(9.99)), Err(RechargeSettingsError::ThresholdTooSmall));
    assert!(settings(dec!(100), dec!(10)).is_ok());
}

#[test]
fn a_recharge_amount_not_above_the_threshold_is_rejected() {
    assert_eq!(settings(dec!(60), dec!(60)), Err(RechargeSettingsError::AmountNotAboveThreshold));
    assert_eq!(settings(dec!(60), dec!(75)), Err(RechargeSettingsError::AmountNotAboveThreshold));
    assert!(settings(dec!(60.01), dec!(60)).is_ok());
}

#[test]
fn recharge_amounts_and_thresholds_must_be_whole_cents() {
    assert_eq!(settings(dec!(50.001), dec!(10)), Err(RechargeSettingsError::NotWholeCents));
    assert_eq!(settings(dec!(50), dec!(10.005)), Err(RechargeSettingsError::NotWholeCents));
    assert!(settings(dec!(50.100), dec!(10.50)).is_ok(), "trailing zeros are not precision");
}

#[test]
fn recharge_settings_errors_convert_into_ledger_errors() {
    let error: LedgerError = RechargeSettingsError::AmountTooSmall.into();
    assert_eq!(error, LedgerError::Recharge(RechargeSettingsError::AmountTooSmall));
    assert_eq!(error.to_string(), "recharge amount must be at least $50");
}

#[test]
fn invalid_recharge_settings_cannot_be_deserialized() {
    let invalid = r#"{"enabled":true,"amount_usd":"40","threshold_usd":"10","mode":"add"}"#;
    assert!(serde_json::from_str::<RechargeSettings>(invalid).is_err());

    let valid = recharge(true, dec!(50), dec!(20));
    let json = serde_json::to_string(&valid).expect("serializable");
    assert_eq!(serde_json::from_str::<RechargeSettings>(&json).expect("round trip"), valid);
}

// ---------------------------------------------------------------------------------------------
// Low balance
// ---------------------------------------------------------------------------------------------

#[test]
fn crossing_the_low_balance_level_raises_one_notice_per_crossing() {
    let mut account = prepaid(dec!(30));
    account.low_balance_usd = Some(usd(dec!(25)));
    let mut book = Book::new(account);

    let crossing = book.post(&[usage("call-1", dec!(3)), usage("call-2", dec!(3))], minutes(0));
    assert_eq!(event_kinds(&crossing.events), vec![LedgerEventKind::LowBalance]);
    assert_eq!(crossing.events[0].id, format!("{ACCOUNT}:low_balance:2:v1"));

    let still_low = book.post(&[usage("call-3", dec!(1))], minutes(1));
    assert!(still_low.events.is_empty(), "{:?}", still_low.events);

    let recovered = book.post(&[funds("pay-1", dec!(20))], minutes(2));
    assert!(recovered.events.is_empty(), "{:?}", recovered.events);
    assert_eq!(book.account.balance_usd, dec!(43));

    let crossing_again = book.post(&[usage("call-4", dec!(20))], minutes(3));
    assert_eq!(event_kinds(&crossing_again.events), vec![LedgerEventKind::LowBalance]);
}

#[test]
fn landing_exactly_on_the_low_balance_level_is_not_a_crossing_but_leaving_it_is() {
    let mut account = prepaid(dec!(30));
    account.low_balance_usd = Some(usd(dec!(25)));
    let mut book = Book::new(account);

    let on_level = book.post(&[usage("call-1", dec!(5))], minutes(0));
    assert_eq!(on_level.account.balance_usd, dec!(25));
    assert!(on_level.events.is_empty(), "{:?}", on_level.events);

    let below = book.post(&[usage("call-2", dec!(0.0001))], minutes(1));
    assert_eq!(event_kinds(&below.events), vec![LedgerEventKind::LowBalance]);
}

// ---------------------------------------------------------------------------------------------
// Duplicates
// ---------------------------------------------------------------------------------------------

#[test]
fn an_already_applied_source_id_is_a_duplicate_that_changes_nothing() {
    let mut before = prepaid(dec!(10));
    before.last_seq = 7;
    before.version = 3;
    let charge = Some((EntryKind::Debit, BillingItem::PhoneCall, Amount::new(dec!(9)).unwrap()));
    let already_applied = HashMap::from([(source("call-1"), AppliedEntry { seq: 5, charge })]);

    let application =
        apply(&before, &[usage("call-1", dec!(9))], &already_applied, t0()).expect("valid");

    assert_eq!(application.results, vec![PostingResult::Duplicate { seq: 5 }]);
    assert!(!application.changed());
    assert!(application.entries.is_empty());
    assert!(application.events.is_empty());
    assert_eq!(application.account, before);
    assert_eq!(application.account.version, 3);
}

#[test]
fn a_duplicate_wins_over_a_refusal() {
    let before = prepaid(dec!(1));
    // Recorded without its charge (an older DynamoDB marker): a duplicate, not compared.
    let already_applied = HashMap::from([(source("buy-1"), AppliedEntry { seq: 1, charge: None })]);

    let application =
        apply(&before, &[purchase("buy-1", dec!(500))], &already_applied, t0()).expect("valid");

    assert_eq!(application.results, vec![PostingResult::Duplicate { seq: 1 }]);
}

#[test]
fn a_source_id_applied_as_another_charge_is_reported_as_reused_and_changes_nothing() {
    let mut before = prepaid(dec!(10));
    before.last_seq = 7;
    let recharge_credit =
        Some((EntryKind::Credit, BillingItem::FundsAdded, Amount::new(dec!(50)).unwrap()));
    let already_applied =
        HashMap::from([(source("rch:acme:5"), AppliedEntry { seq: 6, charge: recharge_credit })]);
    let reused = PostingResult::SourceIdReused {
        seq: 6,
        kind: EntryKind::Credit,
        item: BillingItem::FundsAdded,
        amount_usd: Amount::new(dec!(50)).unwrap(),
    };

    // Another kind and item (a telephony id that collides with a recharge's), another amount,
    // another item with the same kind and amount: each is reused, never a silent duplicate.
    let call = usage("rch:acme:5", dec!(9));
    let other_amount =
        Posting::credit(source("rch:acme:5"), BillingItem::FundsAdded, usd(dec!(49)), t0())
            .unwrap();
    let other_item =
        Posting::credit(source("rch:acme:5"), BillingItem::Refund, usd(dec!(50)), t0()).unwrap();
    for posting in [call, other_amount, other_item] {
        let application = apply(&before, &[posting], &already_applied, t0()).expect("valid");
        assert_eq!(application.results, vec![reused.clone()]);
        assert!(!application.changed());
        assert_eq!(application.account, before);
    }
    // The same charge again is a plain duplicate.
    let same = Posting::credit(source("rch:acme:5"), BillingItem::FundsAdded, usd(dec!(50)), t0())
        .unwrap();
    let application = apply(&before, &[same], &already_applied, t0()).expect("valid");
    assert_eq!(application.results, vec![PostingResult::Duplicate { seq: 6 }]);
}

#[test]
fn the_same_source_id_twice_in_one_batch_applies_once() {
    let before = prepaid(dec!(10));
    let application = run(
        &before,
        &[usage("call-0", dec!(1)), usage("call-1", dec!(2)), usage("call-1", dec!(7))],
    );

    assert_eq!(
        application.results,
        vec![
            PostingResult::Applied { seq: 1, balance_after_usd: dec!(9) },
            PostingResult::Applied { seq: 2, balance_after_usd: dec!(7) },
            PostingResult::SourceIdReused {
                seq: 2,
                kind: EntryKind::Debit,
                item: BillingItem::PhoneCall,
                amount_usd: usd(dec!(2)),
            },
        ]
    );
    assert_eq!(application.entries.len(), 2);
    assert_eq!(application.account.balance_usd, dec!(7));

    let again = run(&before, &[usage("call-1", dec!(2)), usage("call-1", dec!(2))]);
    assert_eq!(again.results[1], PostingResult::Duplicate { seq: 1 });
}

#[test]
fn new_postings_after_duplicates_continue_the_sequence() {
    let mut book = Book::new(prepaid(dec!(10)));
    book.post(&[usage("call-1", dec!(1)), usage("call-2", dec!(1))], minutes(0));
    let version = book.account.version;

    let application = book.post(
        &[usage("call-2", dec!(1)), usage("call-3", dec!(1)), usage("call-1", dec!(1))],
        minutes(1),
    );

    assert_eq!(
        application.results,
        vec![
            PostingResult::Duplicate { seq: 2 },
            PostingResult::Applied { seq: 3, balance_after_usd: dec!(7) },
            PostingResult::Duplicate { seq: 1 },
        ]
    );
    assert_eq!(book.account.version, version + 1, "one write, one version");
    assert_eq!(book.verify(), Ok(()));
}

#[test]
fn a_batch_of_only_duplicates_does_not_bump_the_version() {
    let mut book = Book::new(prepaid(dec!(10)));
    book.post(&[usage("call-1", dec!(1))], minutes(0));
    let before = book.account.clone();

    let replay = book.post(&[usage("call-1", dec!(1)), usage("call-1", dec!(1))], minutes(1));

    assert_eq!(
        replay.results,
        vec![PostingResult::Duplicate { seq: 1 }, PostingResult::Duplicate { seq: 1 }]
    );
    assert_eq!(replay.account, before);
    assert!(!replay.changed());
}

// ---------------------------------------------------------------------------------------------
// The balance chain
// ---------------------------------------------------------------------------------------------

#[test]
fn balance_after_values_chain_unbroken_across_batches() {
    let mut book = Book::new(prepaid(dec!(12.5)));
    book.post(&[usage("call-1", dec!(0.0123)), usage("sms-1", dec!(0.0079))], minutes(0));
    book.post(&[funds("pay-1", dec!(25)), purchase("buy-1", dec!(1.15))], minutes(1));
    book.post(&[usage("call-1", dec!(3))], minutes(2));
    book.post(&[usage("call-2", dec!(40)), usage("call-3", dec!(1))], minutes(3));

    let seqs: Vec<u64> = book.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(book.account.last_seq, 6);
    assert_eq!(book.account.balance_usd, dec!(-4.6702));
    assert_eq!(book.entries.last().map(|e| e.balance_after_usd), Some(dec!(-4.6702)));
    assert_eq!(book.verify(), Ok(()));
    assert_eq!(book.account.version, 3, "the all-duplicate batch wrote nothing");
}

fn sample_entries() -> (Decimal, Vec<Entry>, Decimal) {
    let mut book = Book::new(prepaid(dec!(10)));
    book.post(&[usage("a", dec!(1)), funds("b", dec!(2)), usage("c", dec!(3))], minutes(0));
    book.post(&[usage("d", dec!(4))], minutes(1));
    assert_eq!(book.verify(), Ok(()));
    (book.account.opening_balance_usd, book.entries, book.account.balance_usd)
}

#[test]
fn verify_chain_detects_a_gap_in_the_sequence() {
    let (opening, mut entries, balance) = sample_entries();
    entries.remove(1);

    assert_eq!(
        verify_chain(opening, &entries, balance),
        Err(ChainError::Gap { previous: 1, found: 3 })
    );
}

#[test]
fn verify_chain_detects_a_chain_that_does_not_start_at_one() {
    let (opening, entries, balance) = sample_entries();

    assert_eq!(
        verify_chain(opening, &entries[1..], balance),
        Err(ChainError::Gap { previous: 0, found: 2 })
    );
}

#[test]
fn verify_chain_detects_a_broken_amount() {
    let (opening, mut entries, balance) = sample_entries();
    entries[2].amount_usd = usd(dec!(3.0001));

    assert_eq!(
        verify_chain(opening, &entries, balance),
        Err(ChainError::Broken { seq: 3, expected: dec!(7.9999), found: dec!(8) })
    );
}

#[test]
fn verify_chain_detects_a_flipped_direction() {
    let (opening, mut entries, balance) = sample_entries();
    entries[1].kind = EntryKind::Debit;

    assert!(matches!(
        verify_chain(opening, &entries, balance),
        Err(ChainError::Broken { seq: 2, .. })
    ));
}

#[test]
fn verify_chain_detects_a_final_mismatch_with_the_account() {
    let (opening, entries, balance) = sample_entries();

    assert_eq!(
        verify_chain(opening, &entries, balance + dec!(0.0001)),
        Err(ChainError::AccountMismatch { account: dec!(4.0001), chain: dec!(4) })
    );
    assert_eq!(
        verify_chain(opening + dec!(1), &entries, balance),
        Err(ChainError::Broken { seq: 1, expected: dec!(10), found: dec!(9) })
    );
    assert_eq!(
        verify_chain(dec!(3), &[], dec!(4)),
        Err(ChainError::AccountMismatch { account: dec!(4), chain: dec!(3) })
    );
    assert_eq!(verify_chain(dec!(3), &[], dec!(3)), Ok(()));
}

#[test]
fn verify_chain_detects_an_entry_posted_before_its_predecessor() {
    let (opening, mut entries, balance) = sample_entries();
    entries[3].posted_at = entries[2].posted_at - Duration::microseconds(1);

    assert_eq!(verify_chain(opening, &entries, balance), Err(ChainError::TimeTravel { seq: 4 }));
}

// ---------------------------------------------------------------------------------------------
// Posting time
// ---------------------------------------------------------------------------------------------

#[test]
fn posted_at_never_goes_backwards_when_the_clock_does() {
    let mut book = Book::new(prepaid(dec!(10)));
    book.post(&[usage("call-1", dec!(1))], minutes(10));

    let late = book.post(&[usage("call-2", dec!(1)), usage("call-3", dec!(1))], minutes(3));

    assert!(late.entries.iter().all(|e| e.posted_at == minutes(10)));
    assert_eq!(book.account.last_posted_at, Some(minutes(10)));
    assert_eq!(book.verify(), Ok(()));

    let later = book.post(&[usage("call-4", dec!(1))], minutes(11));
    assert_eq!(later.entries[0].posted_at, minutes(11));
    assert_eq!(book.account.last_posted_at, Some(minutes(11)));
}

#[test]
fn posting_times_are_kept_to_the_microsecond() {
    let now = t0() + Duration::nanoseconds(123_456_789);
    let posting = Posting::usage(source("call-1"), BillingItem::PhoneCall, usd(dec!(1)), now)
        .expect("a valid usage");
    assert_eq!(posting.occurred_at.nanosecond(), 123_456_000);

    let application = apply(&prepaid(dec!(5)), &[posting], &HashMap::new(), now).expect("valid");

    assert_eq!(application.entries[0].posted_at.nanosecond(), 123_456_000);
    assert_eq!(application.account.last_posted_at.map(|at| at.nanosecond()), Some(123_456_000));
}

// ---------------------------------------------------------------------------------------------
// Posting constructors and batch limits
// ---------------------------------------------------------------------------------------------

#[test]
fn a_debit_of_funds_added_is_refused_as_the_wrong_direction() {
    let result = Posting::usage(source("x"), BillingItem::FundsAdded, usd(dec!(1)), t0());
    assert_eq!(
        result,
        Err(LedgerError::WrongDirection { item: BillingItem::FundsAdded, kind: EntryKind::Debit })
    );
    let refund = Posting::purchase(source("x"), BillingItem::Refund, usd(dec!(1)), t0());
    assert_eq!(
        refund,
        Err(LedgerError::WrongDirection { item: BillingItem::Refund, kind: EntryKind::Debit })
    );
}

#[test]
fn a_credit_of_a_phone_call_is_refused_as_the_wrong_direction() {
    let result = Posting::credit(source("x"), BillingItem::PhoneCall, usd(dec!(1)), t0());
    assert_eq!(
        result,
        Err(LedgerError::WrongDirection { item: BillingItem::PhoneCall, kind: EntryKind::Credit })
    );
}

#[test]
fn every_billing_item_posts_only_in_its_documented_direction() {
    for item in BillingItem::ALL {
        let debit = Posting::usage(source("x"), item, usd(dec!(1)), t0()).is_ok();
        let credit = Posting::credit(source("x"), item, usd(dec!(1)), t0()).is_ok();
        let (debit_expected, credit_expected) = match item {
            BillingItem::FundsAdded | BillingItem::Refund | BillingItem::IncludedMinutes => {
                (false, true)
            }
            BillingItem::Adjustment | BillingItem::CardRefund | BillingItem::Dispute => {
                (true, true)
            }
            // Only with the grant's terms (`Posting::grant`); its debits are the ledger's own.
            BillingItem::CreditGrant => (false, false),
            _ => (true, false),
        };
        assert_eq!((debit, credit), (debit_expected, credit_expected), "{item:?}");
        assert_eq!(BillingItem::parse(item.as_str()), Some(item));
    }
}

#[test]
fn a_credit_cannot_be_made_refusable() {
    let result = Posting::new(
        source("x"),
        EntryKind::Credit,
        BillingItem::FundsAdded,
        usd(dec!(1)),
        PostingRule::RefuseBelowFloor,
        t0(),
    );
    assert_eq!(result, Err(LedgerError::CreditsAlwaysPost));
}

#[test]
fn details_larger_than_the_limit_are_refused() {
    // A JSON string of n characters serializes to n + 2 bytes.
    let fits = serde_json::Value::String("x".repeat(MAX_DETAILS_BYTES - 2));
    let too_big = serde_json::Value::String("x".repeat(MAX_DETAILS_BYTES - 1));

    assert!(usage("call-1", dec!(1)).with_details(fits).is_ok());
    assert_eq!(
        usage("call-1", dec!(1)).with_details(too_big),
        Err(LedgerError::DetailsTooLarge { size_bytes: MAX_DETAILS_BYTES + 1 })
    );
}

#[test]
fn validate_catches_a_hand_built_posting_that_breaks_the_rules() {
    let mut wrong_direction = usage("call-1", dec!(1));
    wrong_direction.kind = EntryKind::Credit;
    assert_eq!(
        wrong_direction.validate(),
        Err(LedgerError::WrongDirection { item: BillingItem::PhoneCall, kind: EntryKind::Credit })
    );

    let mut oversized = usage("call-1", dec!(1));
    oversized.details = serde_json::Value::String("x".repeat(MAX_DETAILS_BYTES));
    assert!(matches!(oversized.validate(), Err(LedgerError::DetailsTooLarge { .. })));

    assert_eq!(usage("call-1", dec!(1)).validate(), Ok(()));
}

fn tiny_usages(count: usize) -> Vec<Posting> {
    (0..count).map(|n| usage(&format!("call-{n}"), dec!(0.0001))).collect()
}

#[test]
fn a_batch_over_the_limit_is_refused_whole() {
    let postings = tiny_usages(MAX_POSTINGS_PER_CALL + 1);
    let result = apply(&prepaid(dec!(1)), &postings, &HashMap::new(), t0());

    assert_eq!(result, Err(LedgerError::BatchTooLarge { count: MAX_POSTINGS_PER_CALL + 1 }));
}

#[test]
fn a_batch_at_the_limit_applies() {
    let postings = tiny_usages(MAX_POSTINGS_PER_CALL);
    let application = run(&prepaid(dec!(1)), &postings);

    assert_eq!(application.entries.len(), MAX_POSTINGS_PER_CALL);
    assert_eq!(application.account.balance_usd, dec!(0.9));
    assert_eq!(application.account.last_seq, MAX_POSTINGS_PER_CALL as u64);
}

#[test]
fn an_empty_batch_changes_nothing() {
    let before = prepaid(dec!(1));
    let application = run(&before, &[]);

    assert!(!application.changed());
    assert!(application.results.is_empty());
    assert_eq!(application.account, before);
}

#[test]
fn posting_results_round_trip_through_json() {
    let results = vec![
        PostingResult::Applied { seq: 3, balance_after_usd: dec!(-1.2345) },
        PostingResult::Duplicate { seq: 2 },
        PostingResult::Refused(Refusal::TermsNotAccepted),
        PostingResult::Refused(Refusal::InsufficientBalance {
            balance_usd: dec!(1),
            floor_usd: dec!(-5),
        }),
    ];
    let json = serde_json::to_string(&results).expect("serializable");
    let back: Vec<PostingResult> = serde_json::from_str(&json).expect("deserializable");

    assert_eq!(back, results);
}

// ---------------------------------------------------------------------------------------------
// Settings changes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_settings_change_that_touches_the_balance_sequence_or_version_is_rejected() {
    let before = prepaid(dec!(10));
    let touches: [fn(&mut Account); 4] = [
        |a| a.balance_usd += dec!(1),
        |a| a.last_seq += 1,
        |a| a.version += 1,
        |a| a.opening_balance_usd = dec!(0),
    ];

    for touch in touches {
        let mut after = before.clone();
        touch(&mut after);
        let tampered = after.clone();
        assert_eq!(
            settle_settings_change(&before, &mut after, t0()),
            Err(LedgerError::BalanceFieldsAreLedgerOnly)
        );
        assert_eq!(after, tampered, "a rejected change is left as it was");
    }
}

#[test]
fn raising_the_credit_limit_of_a_suspended_postpaid_account_reactivates_it() {
    let before = account_with(dec!(-10), Some(dec!(10)));
    assert_eq!(before.status, AccountStatus::Suspended);
    let mut after = before.clone();
    after.credit_limit_usd = Some(usd(dec!(20)));

    let events = settle_settings_change(&before, &mut after, t0()).expect("a settings change");

    assert_eq!(event_kinds(&events), vec![LedgerEventKind::Reactivated]);
    assert_eq!(after.status, AccountStatus::Active);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(events[0].balance_usd, dec!(-10));
}

#[test]
fn lowering_the_credit_limit_below_the_debt_suspends_the_account() {
    let before = account_with(dec!(-10), Some(dec!(20)));
    let mut after = before.clone();
    after.credit_limit_usd = Some(usd(dec!(10)));

    let events = settle_settings_change(&before, &mut after, t0()).expect("a settings change");

    assert_eq!(event_kinds(&events), vec![LedgerEventKind::Suspended]);
    assert_eq!(after.status, AccountStatus::Suspended);
}

#[test]
fn enabling_auto_recharge_below_the_threshold_raises_one_request() {
    let before = prepaid(dec!(5));
    let mut after = before.clone();
    after.recharge = Some(recharge(true, dec!(50), dec!(20)));

    let events = settle_settings_change(&before, &mut after, t0()).expect("a settings change");

    assert_eq!(events.len(), 1);
    let LedgerEventKind::RechargeRequested { request_id } = &events[0].kind else {
        panic!("expected a recharge request, got {:?}", events[0].kind);
    };
    assert_eq!(after.recharge_in_flight.as_ref(), Some(request_id));

    // Settling the same change again while the request is in flight raises nothing.
    let mut again = after.clone();
    assert_eq!(settle_settings_change(&after, &mut again, t0()), Ok(vec![]));
}

// ---------------------------------------------------------------------------------------------
// MemoryStore, end to end
// ---------------------------------------------------------------------------------------------

fn change(f: impl Fn(&mut Account) + Send + Sync + 'static) -> AccountChange {
    Arc::new(move |account: &mut Account| {
        f(account);
        Ok(())
    })
}

async fn funded_store(balance: Decimal) -> MemoryStore {
    let store = MemoryStore::new();
    store
        .create_account(NewAccount { id: account_id(), credit_limit_usd: None }, t0())
        .await
        .expect("a new account");
    store
        .modify_account(&account_id(), change(|a| a.terms = Some(terms())), t0())
        .await
        .expect("terms accepted");
    store.post(&account_id(), vec![funds("pay-0", balance)], t0()).await.expect("funded");
    store
}

#[tokio::test]
async fn the_memory_store_posts_and_reads_back_an_unbroken_chain() {
    let store = funded_store(dec!(20)).await;
    let id = account_id();

    let outcome = store
        .post(
            &id,
            vec![
                usage("call-1", dec!(1.5)),
                purchase("buy-1", dec!(100)),
                usage("call-1", dec!(1.5)),
            ],
            minutes(1),
        )
        .await
        .expect("posted");

    assert_eq!(
        outcome.results,
        vec![
            PostingResult::Applied { seq: 2, balance_after_usd: dec!(18.5) },
            PostingResult::Refused(Refusal::InsufficientBalance {
                balance_usd: dec!(18.5),
                floor_usd: dec!(0),
            }),
            PostingResult::Duplicate { seq: 2 },
        ]
    );
    let account = store.account(&id).await.expect("read").expect("exists");
    assert_eq!(account, outcome.account);
    assert_eq!(account.balance_usd, dec!(18.5));

    let entries = all_entries(&store, &id, EntryQuery::default()).await.expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(verify_chain(account.opening_balance_usd, &entries, account.balance_usd), Ok(()));
}

#[tokio::test]
async fn the_memory_store_applies_a_redelivered_batch_only_once() {
    let store = funded_store(dec!(20)).await;
    let id = account_id();
    let batch = vec![usage("call-1", dec!(19)), usage("call-2", dec!(2))];

    let first = store.post(&id, batch.clone(), minutes(1)).await.expect("posted");
    let second = store.post(&id, batch, minutes(2)).await.expect("posted");

    assert_eq!(
        second.results,
        vec![PostingResult::Duplicate { seq: 2 }, PostingResult::Duplicate { seq: 3 }]
    );
    assert!(second.events.is_empty());
    assert_eq!(second.account, first.account);
    assert_eq!(all_entries(&store, &id, EntryQuery::default()).await.expect("entries").len(), 3);
}

#[tokio::test]
async fn the_memory_store_refuses_an_oversized_batch_and_changes_nothing() {
    let store = funded_store(dec!(20)).await;
    let id = account_id();
    let before = store.account(&id).await.expect("read");

    let result = store.post(&id, tiny_usages(MAX_POSTINGS_PER_CALL + 1), minutes(1)).await;

    assert!(matches!(
        result,
        Err(StoreError::Rejected(LedgerError::BatchTooLarge { count })) if count == MAX_POSTINGS_PER_CALL + 1
    ));
    assert_eq!(store.account(&id).await.expect("read"), before);
}

#[tokio::test]
async fn the_memory_store_rejects_a_settings_change_that_touches_the_balance() {
    let store = funded_store(dec!(20)).await;
    let id = account_id();
    let before = store.account(&id).await.expect("read");

    let result =
        store.modify_account(&id, change(|a| a.balance_usd = dec!(1_000)), minutes(1)).await;

    assert!(matches!(result, Err(StoreError::Rejected(LedgerError::BalanceFieldsAreLedgerOnly))));
    assert_eq!(store.account(&id).await.expect("read"), before);
}

#[tokio::test]
async fn the_memory_store_knows_no_unknown_account() {
    let store = MemoryStore::new();
    let stranger = AccountId::parse("nobody").expect("valid");

    assert!(matches!(
        store.post(&stranger, vec![usage("call-1", dec!(1))], t0()).await,
        Err(StoreError::AccountNotFound(id)) if id == stranger
    ));
    assert!(store.account(&stranger).await.expect("read").is_none());
    let created = store
        .create_account(NewAccount { id: account_id(), credit_limit_usd: None }, t0())
        .await
        .expect("a new account");
    assert_eq!(created.id, account_id());
    assert!(matches!(
        store.create_account(NewAccount { id: account_id(), credit_limit_usd: None }, t0()).await,
        Err(StoreError::AccountExists(_))
    ));
}

/// Seven entries: pay-0 at t0 (credit), then at minutes 1, 2, 3 a debit and a credit or two.
async fn store_with_history() -> MemoryStore {
    let store = funded_store(dec!(100)).await;
    let id = account_id();
    store
        .post(&id, vec![usage("call-1", dec!(1)), funds("pay-1", dec!(5))], minutes(1))
        .await
        .expect("posted");
    store.post(&id, vec![usage("call-2", dec!(2))], minutes(2)).await.expect("posted");
    store
        .post(
            &id,
            vec![usage("call-3", dec!(3)), funds("pay-2", dec!(5)), usage("call-4", dec!(4))],
            minutes(3),
        )
        .await
        .expect("posted");
    store
}

fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

#[tokio::test]
async fn entries_are_read_back_by_a_half_open_date_range() {
    let store = store_with_history().await;
    let id = account_id();
    let range = EntryQuery {
        from: Some(minutes(1)),
        to: Some(minutes(3)),
        limit: MAX_PAGE_SIZE,
        ..EntryQuery::default()
    };

    let page = store.entries(&id, &range).await.expect("page");

    assert_eq!(seqs(&page.entries), vec![2, 3, 4], "from is inclusive, to is exclusive");
    assert!(page.entries.iter().all(|e| e.posted_at >= minutes(1) && e.posted_at < minutes(3)));
    assert_eq!(page.next_cursor, None);

    let empty = EntryQuery { from: Some(minutes(4)), limit: 10, ..EntryQuery::default() };
    assert!(store.entries(&id, &empty).await.expect("page").entries.is_empty());
}

#[tokio::test]
async fn entries_can_be_filtered_to_debits_or_credits() {
    let store = store_with_history().await;
    let id = account_id();

    let debits =
        all_entries(&store, &id, EntryQuery { show: Show::Debits, ..EntryQuery::default() })
            .await
            .expect("debits");
    let credits =
        all_entries(&store, &id, EntryQuery { show: Show::Credits, ..EntryQuery::default() })
            .await
            .expect("credits");

    assert_eq!(seqs(&debits), vec![2, 4, 5, 7]);
    assert!(debits.iter().all(|e| e.kind == EntryKind::Debit));
    assert_eq!(seqs(&credits), vec![1, 3, 6]);
    assert!(credits.iter().all(|e| e.kind == EntryKind::Credit));
}

#[tokio::test]
async fn cursor_pagination_returns_every_entry_exactly_once() {
    let store = store_with_history().await;
    let id = account_id();
    let cases = [
        (Show::All, None, None, vec![1, 2, 3, 4, 5, 6, 7]),
        (Show::Debits, None, None, vec![2, 4, 5, 7]),
        (Show::Credits, None, None, vec![1, 3, 6]),
        (Show::All, Some(minutes(1)), Some(minutes(3)), vec![2, 3, 4]),
        (Show::Debits, Some(minutes(2)), None, vec![4, 5, 7]),
    ];

    for (show, from, to, expected) in cases {
        for limit in 1..=8u32 {
            let mut query = EntryQuery { from, to, show, cursor: None, limit };
            let mut seen = Vec::new();
            for _page in 0..=expected.len() + 1 {
                let page = store.entries(&id, &query).await.expect("page");
                assert!(page.entries.len() <= limit as usize);
                seen.extend(seqs(&page.entries));
                match page.next_cursor {
                    Some(cursor) => {
                        assert!(!page.entries.is_empty(), "a cursor after an empty page loops");
                        query.cursor = Some(cursor);
                    }
                    None => break,
                }
            }
            assert_eq!(seen, expected, "show {show:?}, from {from:?}, to {to:?}, limit {limit}");
        }
    }
}

#[tokio::test]
async fn bad_page_sizes_and_cursors_are_rejected() {
    let store = store_with_history().await;
    let id = account_id();

    for limit in [0, MAX_PAGE_SIZE + 1] {
        let query = EntryQuery { limit, ..EntryQuery::default() };
        assert!(matches!(
            store.entries(&id, &query).await,
            Err(StoreError::Rejected(LedgerError::BadPageSize { max: MAX_PAGE_SIZE }))
        ));
    }
    let forged =
        EntryQuery { cursor: Some("seq-3".to_string()), limit: 5, ..EntryQuery::default() };
    assert!(matches!(
        store.entries(&id, &forged).await,
        Err(StoreError::Rejected(LedgerError::BadCursor))
    ));
}

#[tokio::test]
async fn events_wait_in_the_outbox_until_acknowledged() {
    let store = MemoryStore::new();
    let id = account_id();
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, t0())
        .await
        .expect("a new account");
    let modified = store
        .modify_account(
            &id,
            change(|a| {
                a.terms = Some(terms());
                a.recharge = Some(recharge(true, dec!(50), dec!(20)));
            }),
            t0(),
        )
        .await
        .expect("settings");
    let request_id = modified.recharge_in_flight.clone().expect("balance 0 is below $20");

    let funded = store.post(&id, vec![funds(&request_id, dec!(50))], minutes(1)).await.expect("ok");
    assert_eq!(funded.account.recharge_in_flight, None);
    assert_eq!(event_kinds(&funded.events), vec![LedgerEventKind::Reactivated]);

    let drained = store.post(&id, vec![usage("call-1", dec!(55))], minutes(2)).await.expect("ok");
    assert_eq!(count_kind(&drained.events, "suspended"), 1);
    assert_eq!(count_kind(&drained.events, "recharge_requested"), 1);

    let pending = store.pending_events(100).await.expect("pending");
    let kinds: Vec<&str> = pending.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(pending.len(), 4, "{kinds:?}");
    assert_eq!(kinds[0], "recharge_requested", "the settings change came first");
    assert_eq!(kinds[1], "reactivated");
    assert!(pending.windows(2).all(|w| w[0].raised_at <= w[1].raised_at), "oldest first");
    assert_eq!(store.pending_events(2).await.expect("pending").len(), 2);

    store.ack_event(&pending[0]).await.expect("ack");
    store.ack_event(&pending[0]).await.expect("acking twice is fine");
    let after_ack = store.pending_events(100).await.expect("pending");
    assert_eq!(after_ack, pending[1..].to_vec());

    for event in &after_ack {
        store.ack_event(event).await.expect("ack");
    }
    assert!(store.pending_events(100).await.expect("pending").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Property: the balance is opening + credits - debits of what was applied, and the chain holds
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Op {
    Usage,
    Purchase,
    Credit,
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    /// Ten-thousandths of a dollar.
    amount_units: i64,
    /// A small pool of ids so duplicates, within and across batches, happen often.
    source: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (prop_oneof![Just(Op::Usage), Just(Op::Purchase), Just(Op::Credit)], 1i64..=2_000_000, 0u8..24)
        .prop_map(|(op, amount_units, source)| Step { op, amount_units, source })
}

fn to_posting(step: &Step) -> Posting {
    let id = format!("src-{}", step.source);
    let amount = Decimal::new(step.amount_units, 4);
    match step.op {
        Op::Usage => usage(&id, amount),
        Op::Purchase => purchase(&id, amount),
        Op::Credit => funds(&id, amount),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_balance_is_opening_plus_credits_minus_debits_of_what_applied(
        opening_units in -1_000_000i64..=1_000_000,
        credit_limit_units in prop::option::of(1i64..=1_000_000),
        terms_accepted in any::<bool>(),
        batches in prop::collection::vec(prop::collection::vec(step(), 0..12), 1..8),
    ) {
        let opening = Decimal::new(opening_units, 4);
        let credit_limit = credit_limit_units.map(|units| Decimal::new(units, 4));
        let mut account = account_with(opening, credit_limit);
        if !terms_accepted {
            account.terms = None;
        }
        let floor = credit_limit.map(|limit| -limit).unwrap_or(Decimal::ZERO);
        let mut book = Book::new(account);

        // The independent model: a running balance, applied ids and the sums of what applied.
        let mut model_balance = opening;
        let mut model_seq = 0u64;
        let mut model_applied: HashMap<u8, (u64, Posting)> = HashMap::new();
        let mut credits = Decimal::ZERO;
        let mut debits = Decimal::ZERO;

        for (n, batch) in batches.iter().enumerate() {
            let postings: Vec<Posting> = batch.iter().map(to_posting).collect();
            let application = book.post(&postings, minutes(n as i64));
            prop_assert_eq!(application.results.len(), batch.len());

            for (step, result) in batch.iter().zip(&application.results) {
                let amount = Decimal::new(step.amount_units, 4);
                let expected = if let Some((seq, earlier)) = model_applied.get(&step.source) {
                    let posting = to_posting(step);
                    if (posting.kind, posting.item, posting.amount_usd)
                        == (earlier.kind, earlier.item, earlier.amount_usd)
                    {
                        PostingResult::Duplicate { seq: *seq }
                    } else {
                        PostingResult::SourceIdReused {
                            seq: *seq,
                            kind: earlier.kind,
                            item: earlier.item,
                            amount_usd: earlier.amount_usd,
                        }
                    }
                } else if matches!(step.op, Op::Purchase) && !terms_accepted {
                    PostingResult::Refused(Refusal::TermsNotAccepted)
                } else if matches!(step.op, Op::Purchase) && model_balance - amount < floor {
                    PostingResult::Refused(Refusal::InsufficientBalance {
                        balance_usd: model_balance,
                        floor_usd: floor,
                    })
                } else {
                    match step.op {
                        Op::Credit => {
                            credits += amount;
                            model_balance += amount;
                        }
                        Op::Usage | Op::Purchase => {
                            debits += amount;
                            model_balance -= amount;
                        }
                    }
                    model_seq += 1;
                    model_applied.insert(step.source, (model_seq, to_posting(step)));
                    PostingResult::Applied { seq: model_seq, balance_after_usd: model_balance }
                };
                prop_assert_eq!(result, &expected);
            }
        }

        prop_assert_eq!(book.account.balance_usd, opening + credits - debits);
        prop_assert_eq!(book.account.last_seq, model_seq);
        prop_assert_eq!(book.entries.len() as u64, model_seq);
        let expected_status =
            if book.account.balance_usd > floor { AccountStatus::Active } else { AccountStatus::Suspended };
        prop_assert_eq!(book.account.status, expected_status);
        prop_assert_eq!(book.verify(), Ok(()));
        let distinct: HashSet<&SourceId> = book.entries.iter().map(|e| &e.source_id).collect();
        prop_assert_eq!(distinct.len(), book.entries.len(), "each source id applied once");
    }
}

// ---------------------------------------------------------------------------------------------
// Holds (issue 13): reserved money lowers what purchases, notices and auto-recharge see
// ---------------------------------------------------------------------------------------------

fn call_hold(id: &str, amount: Decimal, expires: DateTime<Utc>) -> ledger::Hold {
    ledger::Hold {
        id: id.to_string(),
        purpose: ledger::HoldPurpose::Call,
        amount_usd: amount,
        granted_seconds: Some(300),
        call: None,
        extensions: 0,
        created_at: t0(),
        expires_at: expires,
        settled: false,
    }
}

/// Place `hold` on `account` as a settings change does (what the authorization service runs).
fn place(account: &Account, hold: ledger::Hold) -> (Account, Vec<LedgerEvent>) {
    let mut after = account.clone();
    after.holds.push(hold);
    let events = settle_settings_change(account, &mut after, t0()).expect("a valid change");
    (after, events)
}

#[test]
fn a_purchase_is_refused_when_other_holds_reserve_the_balance_but_may_use_its_own_hold() {
    let mut account = prepaid(dec!(10));
    account.holds = vec![call_hold("call-1", dec!(8), minutes(10))];
    let refused = run(&account, &[purchase("num-1", dec!(5))]);
    assert!(matches!(refused.results[..], [PostingResult::Refused(_)]), "{:?}", refused.results);

    account.holds.push(ledger::Hold {
        purpose: ledger::HoldPurpose::NumberPurchase,
        ..call_hold("buy-1", dec!(2), minutes(10))
    });
    let own = run(&account, &[purchase("num-2", dec!(2)).settling(Some("buy-1".into()))]);
    assert!(matches!(own.results[..], [PostingResult::Applied { .. }]), "{:?}", own.results);
    assert!(own.account.hold("buy-1").unwrap().settled, "the purchase settled its hold");
    assert!(!own.account.hold("call-1").unwrap().settled);
    assert_eq!(own.account.available_usd(t0()), dec!(0));
}

#[test]
fn a_usage_posting_settles_its_hold_once_and_debits_the_rated_cost_not_the_hold() {
    let mut book = Book::new(prepaid(dec!(10)));
    book.account.holds = vec![call_hold("call-1", dec!(3), minutes(10))];
    let report = usage("use:call-1#call", dec!(1.25)).settling(Some("call-1".into()));
    let first = book.post(std::slice::from_ref(&report), t0());
    assert_eq!(first.account.balance_usd, dec!(8.75), "the rated cost, once");
    assert!(first.account.hold("call-1").unwrap().settled);
    assert_eq!(first.account.available_usd(t0()), dec!(8.75), "nothing reserved any more");
    // The report redelivered: a duplicate, nothing changes.
    let again = book.post(&[report], minutes(1));
    assert!(!again.changed());
    assert_eq!(book.account.balance_usd, dec!(8.75));
    book.verify().expect("the chain holds");
}

#[test]
fn a_report_after_its_hold_expired_still_debits_once_and_the_expired_hold_is_dropped() {
    let mut book = Book::new(prepaid(dec!(10)));
    book.account.holds = vec![call_hold("call-1", dec!(3), minutes(5))];
    assert_eq!(book.account.available_usd(minutes(6)), dec!(10), "expired: released itself");
    let report = usage("use:call-1#call", dec!(4)).settling(Some("call-1".into()));
    let late = book.post(&[report], minutes(6));
    assert_eq!(late.account.balance_usd, dec!(6), "an overrun is debited in full");
    let marks: Vec<_> = late.account.holds.iter().map(|h| (h.settled, h.amount_usd)).collect();
    assert_eq!(marks, vec![(true, dec!(0))], "the expired hold dropped, the report's mark left");
}

#[test]
fn placing_a_hold_below_the_recharge_threshold_requests_a_recharge() {
    let account = recharging(dec!(25));
    let (after, events) = place(&account, call_hold("call-1", dec!(6), minutes(10)));
    assert_eq!(count_kind(&events, "recharge_requested"), 1, "{events:?}");
    assert!(after.recharge_in_flight.is_some());
    assert_eq!(after.balance_usd, dec!(25), "a hold moves no money");
}

#[test]
fn the_low_balance_notice_goes_out_once_while_holds_come_and_go_until_a_credit_lifts_it() {
    let mut account = prepaid(dec!(12));
    account.low_balance_usd = Some(usd(dec!(10)));
    let (held, events) = place(&account, call_hold("call-1", dec!(3), minutes(10)));
    assert_eq!(count_kind(&events, "low_balance"), 1, "available 9 < 10: {events:?}");

    // The call is reported ($1) and its hold settles: available 11. The next call's hold takes
    // it below 10 again, and no second notice goes out.
    let mut book = Book::new(held);
    book.post(&[usage("use:call-1#call", dec!(1)).settling(Some("call-1".into()))], t0());
    let (again, events) = place(&book.account, call_hold("call-2", dec!(3), minutes(10)));
    assert_eq!(count_kind(&events, "low_balance"), 0, "latched: {events:?}");

    // A top-up lifts it above the level: the latch opens, and the next crossing notices.
    let mut book = Book::new(again);
    book.post(&[funds("pay:top-up", dec!(20))], t0());
    assert!(!book.account.low_balance_noticed);
    let (_, events) = place(&book.account, call_hold("call-3", dec!(25), minutes(10)));
    assert_eq!(count_kind(&events, "low_balance"), 1, "{events:?}");
}

#[test]
fn an_account_cannot_carry_more_than_the_hold_limit() {
    let mut account = prepaid(dec!(1000));
    account.holds =
        (0..ledger::MAX_HOLDS).map(|i| call_hold(&format!("c{i}"), dec!(1), minutes(10))).collect();
    let mut after = account.clone();
    after.holds.push(call_hold("one-more", dec!(1), minutes(10)));
    assert_eq!(settle_settings_change(&account, &mut after, t0()), Err(LedgerError::TooManyHolds));
}
