//! Statements through the store port, on the in-process store: a hand-computed month, the
//! edges of the opening balance (no entries in the period, before the first entry, after the
//! last), paging, the limits, and random histories against a brute-force computation.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use ledger::memory::MemoryStore;
use ledger::statement::{
    describe, statement_for, Statement, StatementError, StatementLine, MAX_STATEMENT_LINES,
};
use ledger::store::all_entries;
use ledger::{
    Account, AccountId, Amount, BillingItem, ChainError, Entry, EntryKind, EntryQuery, LedgerStore,
    NewAccount, Posting, PostingRule, SourceId, TermsAcceptance,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;

fn day(value: &str) -> NaiveDate {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").expect("a valid date")
}

fn at(value: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value).expect("a valid time").to_utc()
}

async fn open(store: &MemoryStore, name: &str) -> AccountId {
    let id = AccountId::parse(name).expect("a valid account id");
    let created_at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    store
        .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, created_at)
        .await
        .expect("create the account");
    store
        .modify_account(
            &id,
            Arc::new(move |account: &mut Account| {
                account.terms = Some(TermsAcceptance {
                    version: "2026-01".into(),
                    accepted_by: "owner@example.com".into(),
                    accepted_at: created_at,
                });
                Ok(())
            }),
            created_at,
        )
        .await
        .expect("accept the terms");
    id
}

fn posting(
    source: &str,
    kind: EntryKind,
    item: BillingItem,
    amount: Decimal,
    occurred_at: DateTime<Utc>,
) -> Posting {
    Posting::new(
        SourceId::parse(source).expect("a valid source id"),
        kind,
        item,
        Amount::new(amount).expect("a valid amount"),
        PostingRule::Always,
        occurred_at,
    )
    .expect("a valid posting")
}

async fn post(store: &MemoryStore, id: &AccountId, postings: Vec<Posting>, now: DateTime<Utc>) {
    store.post(id, postings, now).await.expect("post");
}

/// October 2026 by hand, with entries on both edges of the month.
async fn october(store: &MemoryStore) -> AccountId {
    use BillingItem::*;
    use EntryKind::*;
    let id = open(store, "acme").await;
    let call = json!({"event": "call", "direction": "outbound", "to": "+15551230000",
        "seconds": 180, "billed_seconds": 180, "included_seconds": 60});
    let first = at("2026-10-01T00:00:00Z");
    post(store, &id, vec![posting("pay:1", Credit, FundsAdded, dec!(100), first)], first).await;
    let called = at("2026-10-03T14:00:00Z");
    post(
        store,
        &id,
        vec![
            posting("call-1", Debit, PhoneCall, dec!(1.20), called)
                .with_details(call.clone())
                .unwrap(),
            posting("call-1#included", Credit, IncludedMinutes, dec!(0.40), called)
                .with_details(call)
                .unwrap(),
        ],
        called + Duration::seconds(2),
    )
    .await;
    let texted = at("2026-10-10T08:30:00Z");
    post(store, &id, vec![posting("sms-1", Debit, OutgoingSms, dec!(0.0075), texted)], texted)
        .await;
    let refunded = at("2026-10-15T12:00:00Z");
    let refund = posting("adj:refund-1", Credit, Refund, dec!(5), refunded)
        .with_details(json!({"reason": "Dropped call", "by": "ops@ringledger.example"}))
        .unwrap();
    post(store, &id, vec![refund], refunded).await;
    let last_moment = at("2026-10-31T23:59:59.999999Z");
    post(
        store,
        &id,
        vec![posting("adj:fee", Debit, Adjustment, dec!(2), last_moment)],
        last_moment,
    )
    .await;
    let november = at("2026-11-01T00:00:00Z");
    let tax = posting("tax:2026-10", Debit, SalesTax, dec!(3.1416), november)
        .with_details(json!({"month": "2026-10"}))
        .unwrap();
    post(store, &id, vec![tax], november).await;
    let later = at("2026-11-02T10:00:00Z");
    post(store, &id, vec![posting("adj:credit", Credit, Adjustment, dec!(1), later)], later).await;
    id
}

#[tokio::test]
async fn a_month_by_hand_adds_up_line_by_line() {
    let store = MemoryStore::new();
    let id = october(&store).await;
    let statement = statement_for(&store, &id, day("2026-10-01"), day("2026-10-31")).await.unwrap();
    assert_eq!(statement.opening_balance_usd, dec!(0));
    assert_eq!(statement.card_payments_usd, dec!(100));
    assert_eq!(statement.other_credits_usd, dec!(5));
    assert_eq!(
        statement.usage_by_item,
        BTreeMap::from([
            (BillingItem::PhoneCall, dec!(1.20)),
            (BillingItem::OutgoingSms, dec!(0.0075)),
            (BillingItem::IncludedMinutes, dec!(-0.40)),
        ])
    );
    assert_eq!(statement.usage_usd, dec!(0.8075));
    assert_eq!(statement.taxes_usd, dec!(0));
    assert_eq!(statement.other_debits_usd, dec!(2));
    assert_eq!(statement.closing_balance_usd, dec!(102.1925));
    assert!(statement.reconciles());
    let summary: Vec<(u64, Decimal, Decimal, &str)> = statement
        .lines
        .iter()
        .map(|l| (l.seq, l.amount_usd, l.balance_after_usd, l.description.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, dec!(100), dec!(100), "Payment"),
            (2, dec!(-1.20), dec!(98.80), "Outbound call, 3 min"),
            (3, dec!(0.40), dec!(99.20), "Included plan minutes (1 min): Outbound call, 3 min"),
            (4, dec!(-0.0075), dec!(99.1925), "Outgoing text message"),
            (5, dec!(5), dec!(104.1925), "Refund: Dropped call"),
            (6, dec!(-2), dec!(102.1925), "Adjustment"),
        ]
    );
    let call = &statement.lines[1];
    assert_eq!(call.kind, EntryKind::Debit);
    assert_eq!(call.item, BillingItem::PhoneCall);
    assert_eq!(call.source_id, "call-1");
    assert_eq!(call.occurred_at, at("2026-10-03T14:00:00Z"));
    assert_eq!(call.posted_at, at("2026-10-03T14:00:02Z"));

    // The next month opens where October closed; the tax at midnight belongs to November.
    let november = statement_for(&store, &id, day("2026-11-01"), day("2026-11-30")).await.unwrap();
    assert_eq!(november.opening_balance_usd, dec!(102.1925));
    assert_eq!(november.taxes_usd, dec!(3.1416));
    assert_eq!(november.other_credits_usd, dec!(1));
    assert_eq!(november.closing_balance_usd, dec!(100.0509));
    assert_eq!(november.lines[0].description, "Sales tax for October 2026");
    assert!(november.reconciles());
}

#[tokio::test]
async fn periods_without_entries_open_and_close_at_the_balance_of_their_time() {
    let store = MemoryStore::new();
    let id = october(&store).await;
    let quiet = |statement: &Statement, balance: Decimal| {
        assert!(statement.lines.is_empty());
        assert_eq!(statement.opening_balance_usd, balance);
        assert_eq!(statement.closing_balance_usd, balance);
        assert!(statement.usage_by_item.is_empty());
        assert_eq!(statement.credits_usd() + statement.debits_usd(), dec!(0));
        assert!(statement.reconciles());
    };
    // Before the first entry: the first entry after it says the balance was 0.
    let before = statement_for(&store, &id, day("2026-09-01"), day("2026-09-30")).await.unwrap();
    quiet(&before, dec!(0));
    // Between entries: the next entry (the SMS on the 10th) says what it was.
    let between = statement_for(&store, &id, day("2026-10-04"), day("2026-10-09")).await.unwrap();
    quiet(&between, dec!(99.20));
    // After the last entry: the account's balance.
    let after = statement_for(&store, &id, day("2026-12-01"), day("2026-12-31")).await.unwrap();
    quiet(&after, dec!(100.0509));
    // An account without any entry.
    let empty = open(&store, "empty").await;
    let nothing =
        statement_for(&store, &empty, day("2026-10-01"), day("2026-10-01")).await.unwrap();
    quiet(&nothing, dec!(0));
}

#[tokio::test]
async fn bad_periods_and_unknown_accounts_are_typed_errors() {
    let store = MemoryStore::new();
    let id = october(&store).await;
    let reversed =
        statement_for(&store, &id, day("2026-10-31"), day("2026-10-01")).await.unwrap_err();
    assert!(reversed.is_bad_request() && !reversed.is_not_found(), "{reversed}");
    let too_long =
        statement_for(&store, &id, day("2026-01-01"), day("2027-01-02")).await.unwrap_err();
    assert!(too_long.is_bad_request(), "{too_long}");
    assert!(too_long.to_string().contains("at most 366 days"), "{too_long}");
    let ghost = AccountId::parse("ghost").unwrap();
    let missing =
        statement_for(&store, &ghost, day("2026-10-01"), day("2026-10-31")).await.unwrap_err();
    assert!(missing.is_not_found() && !missing.is_bad_request(), "{missing}");
    assert!(!missing.is_retryable());
}

#[tokio::test]
async fn a_broken_chain_is_an_error_never_a_wrong_statement() {
    let store = MemoryStore::new();
    let id = october(&store).await;
    let entries = all_entries(&store, &id, EntryQuery::default()).await.unwrap();
    let october: Vec<Entry> = entries[..6].to_vec();
    let (from, to) = (day("2026-10-01"), day("2026-10-31"));
    let good = Statement::build(id.clone(), from, to, dec!(0), &october).unwrap();
    assert!(good.reconciles());

    let wrong_opening = Statement::build(id.clone(), from, to, dec!(1), &october).unwrap_err();
    assert!(
        matches!(wrong_opening, StatementError::BrokenChain(ChainError::Broken { seq: 1, .. })),
        "{wrong_opening}"
    );
    let mut gap = october.clone();
    gap.remove(2);
    let gap = Statement::build(id.clone(), from, to, dec!(0), &gap).unwrap_err();
    assert!(matches!(gap, StatementError::BrokenChain(ChainError::Gap { .. })), "{gap}");
    let mut tampered = october.clone();
    tampered[3].balance_after_usd += dec!(0.01);
    let tampered = Statement::build(id.clone(), from, to, dec!(0), &tampered).unwrap_err();
    assert!(!tampered.is_bad_request() && !tampered.is_retryable(), "{tampered}");
    let outside =
        Statement::build(id.clone(), from, day("2026-10-30"), dec!(0), &october).unwrap_err();
    assert!(matches!(outside, StatementError::ForeignEntry { seq: 6, .. }), "{outside}");
    let other = AccountId::parse("other").unwrap();
    let foreign = Statement::build(other, from, to, dec!(0), &october).unwrap_err();
    assert!(matches!(foreign, StatementError::ForeignEntry { seq: 1, .. }), "{foreign}");

    // A statement changed after it was built no longer reconciles.
    let mut edited = good.clone();
    edited.card_payments_usd += dec!(1);
    edited.closing_balance_usd += dec!(1);
    assert!(!edited.reconciles(), "the totals no longer match the lines");
    let mut edited = good.clone();
    edited.lines[2].amount_usd = dec!(0.50);
    assert!(!edited.reconciles(), "the running balances no longer chain");
    let mut edited = good.clone();
    edited.usage_usd += dec!(0.01);
    assert!(!edited.reconciles());

    // A statement is a value: it survives a trip through JSON exactly.
    let json = serde_json::to_string(&good).unwrap();
    assert_eq!(serde_json::from_str::<Statement>(&json).unwrap(), good);
    assert!(json.contains("\"phone_call\":\"1.2\""), "{json}");
}

#[tokio::test]
async fn long_periods_are_read_a_page_at_a_time() {
    let store = MemoryStore::new();
    let id = open(&store, "busy").await;
    let start = at("2026-10-01T00:00:00Z");
    for batch in 0..3 {
        let postings = (0..450)
            .map(|n| {
                let occurred = start + Duration::minutes(batch * 450 + n);
                posting(
                    &format!("sms-{batch}-{n}"),
                    EntryKind::Debit,
                    BillingItem::OutgoingSms,
                    dec!(0.0079),
                    occurred,
                )
            })
            .collect();
        post(&store, &id, postings, start + Duration::days(batch)).await;
    }
    let statement = statement_for(&store, &id, day("2026-10-01"), day("2026-10-31")).await.unwrap();
    assert_eq!(statement.lines.len(), 1_350);
    assert!(statement.lines.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(statement.usage_usd, dec!(0.0079) * Decimal::from(1_350));
    assert_eq!(statement.closing_balance_usd, -statement.usage_usd);
    assert!(statement.reconciles());
    let second_day =
        statement_for(&store, &id, day("2026-10-02"), day("2026-10-02")).await.unwrap();
    assert_eq!(second_day.lines.len(), 450);
    assert_eq!(second_day.opening_balance_usd, dec!(-0.0079) * Decimal::from(450));
}

#[tokio::test]
async fn more_lines_than_a_statement_holds_ask_for_a_shorter_range() {
    let store = MemoryStore::new();
    let id = open(&store, "flood").await;
    let start = at("2026-10-01T00:00:00Z");
    let total = MAX_STATEMENT_LINES + 1;
    for (batch, chunk) in
        (0..total).collect::<Vec<_>>().chunks(ledger::posting::MAX_POSTINGS_PER_CALL).enumerate()
    {
        let postings = chunk
            .iter()
            .map(|n| {
                posting(
                    &format!("s{n}"),
                    EntryKind::Debit,
                    BillingItem::IncomingSms,
                    dec!(0.001),
                    start,
                )
            })
            .collect();
        post(&store, &id, postings, start + Duration::hours(batch as i64)).await;
    }
    let error = statement_for(&store, &id, day("2026-10-01"), day("2026-10-31")).await.unwrap_err();
    assert!(matches!(error, StatementError::TooManyLines { .. }), "{error}");
    assert!(error.is_bad_request());
    assert!(error.to_string().ends_with("choose a shorter range"), "{error}");
    // The first few days still fit.
    let fits = statement_for(&store, &id, day("2026-10-01"), day("2026-10-02")).await.unwrap();
    assert_eq!(fits.lines.len(), 48 * ledger::posting::MAX_POSTINGS_PER_CALL);
}

// ---------------------------------------------------------------------------------------------
// Random histories against a brute-force computation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Payment(Decimal),
    Usage(BillingItem, Decimal),
    /// A call partly covered by the plan: the call's debit and the included-minutes credit.
    CallWithIncluded(Decimal, Decimal),
    Tax(Decimal),
    AdjustmentCredit(Decimal),
    AdjustmentDebit(Decimal),
    Refund(Decimal),
}

/// 0.0001 to 99.9999 with any number of decimals up to four.
fn money() -> impl Strategy<Value = Decimal> {
    (1i64..1_000_000, 0u32..=4).prop_map(|(units, scale)| {
        let value = Decimal::new(units, 4);
        value.round_dp(scale).max(Decimal::new(1, 4))
    })
}

fn op() -> impl Strategy<Value = Op> {
    let usage_items = prop::sample::select(vec![
        BillingItem::PhoneNumber,
        BillingItem::PhoneCall,
        BillingItem::OutgoingSms,
        BillingItem::IncomingSms,
        BillingItem::RingThroughAttempt,
        BillingItem::CarrierSurcharge,
        BillingItem::PremiumService,
        BillingItem::PlanFee,
    ]);
    prop_oneof![
        2 => money().prop_map(Op::Payment),
        6 => (usage_items, money()).prop_map(|(item, amount)| Op::Usage(item, amount)),
        2 => (money(), 1u32..=100).prop_map(|(gross, percent)| {
            let covered = (gross * Decimal::from(percent) / Decimal::from(100)).round_dp(4);
            Op::CallWithIncluded(gross, covered)
        }),
        1 => money().prop_map(Op::Tax),
        1 => money().prop_map(Op::AdjustmentCredit),
        1 => money().prop_map(Op::AdjustmentDebit),
        1 => money().prop_map(Op::Refund),
    ]
}

/// Postings at random times over about four months from 2026-09-01 (several may share a time).
fn history() -> impl Strategy<Value = Vec<(i64, Op)>> {
    prop::collection::vec((0i64..4 * 24 * 3600, op()), 0..60)
}

/// Ranges from before the history to after it, one to ~70 days long (some of them empty).
fn ranges() -> impl Strategy<Value = Vec<(i64, i64)>> {
    prop::collection::vec((-30i64..150, 0i64..70), 1..8)
}

fn postings_of(n: usize, op: &Op, occurred_at: DateTime<Utc>) -> Vec<Posting> {
    use BillingItem::*;
    use EntryKind::*;
    let p = |suffix: &str, kind, item, amount| {
        posting(&format!("op-{n}{suffix}"), kind, item, amount, occurred_at)
    };
    match *op {
        Op::Payment(amount) => vec![p("", Credit, FundsAdded, amount)],
        Op::Usage(item, amount) => vec![p("", Debit, item, amount)],
        Op::CallWithIncluded(gross, covered) => {
            let mut postings = vec![p("", Debit, PhoneCall, gross)];
            if covered > Decimal::ZERO {
                postings.push(p("#included", Credit, IncludedMinutes, covered));
            }
            postings
        }
        Op::Tax(amount) => vec![p("", Debit, SalesTax, amount)],
        Op::AdjustmentCredit(amount) => vec![p("", Credit, Adjustment, amount)],
        Op::AdjustmentDebit(amount) => vec![p("", Debit, Adjustment, amount)],
        Op::Refund(amount) => vec![p("", Credit, Refund, amount)],
    }
}

/// The statement computed the plain way: every entry of the account, filtered by time, and the
/// opening balance as the sum of everything before.
fn brute_force(id: &AccountId, all: &[Entry], from: NaiveDate, to: NaiveDate) -> Statement {
    let start = from.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let end = to.and_hms_opt(0, 0, 0).unwrap().and_utc() + Duration::days(1);
    let opening: Decimal =
        all.iter().filter(|e| e.posted_at < start).map(Entry::signed_amount_usd).sum();
    let in_range: Vec<&Entry> =
        all.iter().filter(|e| e.posted_at >= start && e.posted_at < end).collect();
    let mut statement = Statement {
        account_id: id.clone(),
        from,
        to,
        opening_balance_usd: opening,
        card_payments_usd: Decimal::ZERO,
        other_credits_usd: Decimal::ZERO,
        usage_by_item: BTreeMap::new(),
        usage_usd: Decimal::ZERO,
        taxes_usd: Decimal::ZERO,
        other_debits_usd: Decimal::ZERO,
        closing_balance_usd: opening,
        grants_used_usd: Decimal::ZERO,
        lines: Vec::new(),
    };
    for entry in in_range {
        let amount = entry.amount_usd.value();
        match (entry.kind, entry.item) {
            (EntryKind::Credit, BillingItem::FundsAdded) => statement.card_payments_usd += amount,
            (EntryKind::Credit, BillingItem::Refund | BillingItem::Adjustment) => {
                statement.other_credits_usd += amount
            }
            (EntryKind::Credit, BillingItem::IncludedMinutes) => {
                *statement.usage_by_item.entry(entry.item).or_default() -= amount;
                statement.usage_usd -= amount;
            }
            (EntryKind::Debit, BillingItem::SalesTax) => statement.taxes_usd += amount,
            (EntryKind::Debit, BillingItem::Adjustment) => statement.other_debits_usd += amount,
            (EntryKind::Debit, item) => {
                *statement.usage_by_item.entry(item).or_default() += amount;
                statement.usage_usd += amount;
            }
            (EntryKind::Credit, item) => panic!("the ledger credited {item:?}"),
        }
        statement.closing_balance_usd += entry.signed_amount_usd();
        statement.lines.push(StatementLine {
            seq: entry.seq,
            posted_at: entry.posted_at,
            occurred_at: entry.occurred_at,
            kind: entry.kind,
            item: entry.item,
            amount_usd: entry.signed_amount_usd(),
            balance_after_usd: entry.balance_after_usd,
            source_id: entry.source_id.to_string(),
            description: describe(entry),
            grants_usd: entry.grants_usd(),
        });
    }
    statement
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn statements_of_random_histories_match_a_brute_force_computation(
        history in history(),
        ranges in ranges(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let store = MemoryStore::new();
            let id = open(&store, "random").await;
            let origin = at("2026-09-01T00:00:00Z");
            let mut now = origin;
            for (n, (gap_seconds, op)) in history.iter().enumerate() {
                // Every other step keeps the time: several entries may share a posting time.
                if n % 2 == 0 {
                    now += Duration::seconds(*gap_seconds);
                }
                post(&store, &id, postings_of(n, op, now), now).await;
            }
            let all = all_entries(&store, &id, EntryQuery::default()).await.unwrap();
            let account = store.account(&id).await.unwrap().unwrap();
            let total: Decimal = all.iter().map(Entry::signed_amount_usd).sum();
            prop_assert_eq!(total, account.balance_usd);
            for (offset_days, length_days) in ranges {
                let from = origin.date_naive() + Duration::days(offset_days);
                let to = from + Duration::days(length_days);
                let statement = statement_for(&store, &id, from, to).await.unwrap();
                let expected = brute_force(&id, &all, from, to);
                prop_assert!(statement.reconciles(), "{from} to {to} does not reconcile");
                prop_assert_eq!(&statement, &expected, "{} to {}", from, to);
            }
            Ok(())
        })?;
    }
}
