//! `RatedEvents` through `MemoryStore::post_with`: events rated inside the store's atomic write,
//! with included plan minutes used exactly once per event. Every amount is worked out by hand in
//! the comment beside it, from `common::plan_card()`: outbound $0.02/min, 60/6 increments,
//! $0.0025 surcharge per answered call, $0.002 per ring-through attempt, 2 included minutes.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use ledger::memory::MemoryStore;
use ledger::store::all_entries;
use ledger::{
    AccountId, AccountStatus, BillingItem, Entry, EntryKind, EntryQuery, LedgerEventKind,
    LedgerStore, PlanUsage, PostOutcome, PostingResult, Refusal,
};
use rating::RateCard;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use usage::events::UsageEvent;
use usage::source::{charge_source_id, RatedEvents};

fn event(body: &str) -> UsageEvent {
    UsageEvent::parse(body).expect("test event parses")
}

fn rated(card: RateCard, bodies: &[String]) -> Arc<RatedEvents> {
    Arc::new(RatedEvents {
        card: Arc::new(card),
        events: bodies.iter().map(|b| event(b)).collect(),
    })
}

async fn post(store: &MemoryStore, id: &AccountId, source: Arc<RatedEvents>) -> PostOutcome {
    store.post_with(id, source, now()).await.expect("post_with")
}

/// Entries after the account's funding entry.
async fn usage_entries(store: &MemoryStore, id: &AccountId) -> Vec<Entry> {
    all_entries(store, id, EntryQuery::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.item != BillingItem::FundsAdded)
        .collect()
}

fn summary(entries: &[Entry]) -> Vec<(String, EntryKind, BillingItem, Decimal)> {
    entries
        .iter()
        .map(|e| (e.source_id.to_string(), e.kind, e.item, e.amount_usd.value()))
        .collect()
}

fn plan(month: &str, seconds: u64) -> PlanUsage {
    PlanUsage { month: Some(month.parse().unwrap()), included_seconds_used: seconds }
}

fn applied(outcome: &PostOutcome) -> usize {
    outcome.results.iter().filter(|r| matches!(r, PostingResult::Applied { .. })).count()
}

const NOV: &str = "2026-11-03T10:00:00Z";
const NOV_LATER: &str = "2026-11-20T10:00:00Z";
const DEC: &str = "2026-12-02T10:00:00Z";

// ---------------------------------------------------------------------------------------------
// Included minutes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_call_fully_covered_by_included_minutes_posts_its_full_price_and_an_equal_credit() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    // 90 s: 60 + ceil(30/6)*6 = 90 billed seconds, all inside the 120 included.
    // Full price 0.02 * 90/60 = 0.03, credited back in full; the surcharge 0.0025 is still due.
    let outcome = post(&store, &id, rated(plan_card(), &[call("evt-a", "acme", NOV, 90)])).await;

    assert_eq!(applied(&outcome), 3);
    assert_eq!(
        summary(&usage_entries(&store, &id).await),
        vec![
            ("use:evt-a".into(), EntryKind::Debit, BillingItem::PhoneCall, dec!(0.03)),
            (
                "use:evt-a#included".into(),
                EntryKind::Credit,
                BillingItem::IncludedMinutes,
                dec!(0.03)
            ),
            (
                "use:evt-a#surcharge".into(),
                EntryKind::Debit,
                BillingItem::CarrierSurcharge,
                dec!(0.0025)
            ),
        ]
    );
    // 10 - 0.03 + 0.03 - 0.0025
    assert_eq!(outcome.account.balance_usd, dec!(9.9975));
    assert_eq!(outcome.account.plan_usage, plan("2026-11", 90));
    assert_eq!(account(&store, &id).await.plan_usage, plan("2026-11", 90));
}

#[tokio::test]
async fn the_call_entry_details_record_billed_and_included_seconds() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    post(&store, &id, rated(plan_card(), &[call("evt-a", "acme", NOV, 90)])).await;
    let entries = usage_entries(&store, &id).await;
    let details = &entries[0].details;
    assert_eq!(details["event"], "call");
    assert_eq!(details["seconds"], 90);
    assert_eq!(details["billed_seconds"], 90);
    assert_eq!(details["included_seconds"], 90);
    assert_eq!(entries[1].details, *details, "the credit carries the call's details");
    assert_eq!(entries[0].occurred_at, at(NOV));
}

#[tokio::test]
async fn a_call_that_runs_out_the_quota_mid_call_is_credited_only_for_the_covered_part() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    // First call: 90 s billed, all included; 30 of the 120 included seconds are left.
    // Second call: 187 s -> 60 + ceil(127/6)*6 = 60 + 132 = 192 billed seconds.
    //   Full price 0.02 * 192/60 = 0.064.
    //   Covered 30 s; charged 162 s = 0.02 * 162/60 = 0.054; credit 0.064 - 0.054 = 0.01.
    let outcome = post(
        &store,
        &id,
        rated(plan_card(), &[call("evt-a", "acme", NOV, 90), call("evt-b", "acme", NOV, 187)]),
    )
    .await;

    let entries = usage_entries(&store, &id).await;
    assert_eq!(
        summary(&entries[3..]),
        vec![
            ("use:evt-b".into(), EntryKind::Debit, BillingItem::PhoneCall, dec!(0.064)),
            (
                "use:evt-b#included".into(),
                EntryKind::Credit,
                BillingItem::IncludedMinutes,
                dec!(0.01)
            ),
            (
                "use:evt-b#surcharge".into(),
                EntryKind::Debit,
                BillingItem::CarrierSurcharge,
                dec!(0.0025)
            ),
        ]
    );
    assert_eq!(entries[3].details["included_seconds"], 30);
    // 10 - (0.03 - 0.03 + 0.0025) - (0.064 - 0.01 + 0.0025) = 10 - 0.0025 - 0.0565
    assert_eq!(outcome.account.balance_usd, dec!(9.941));
    assert_eq!(outcome.account.plan_usage, plan("2026-11", 120));
}

#[tokio::test]
async fn a_single_call_longer_than_the_quota_is_credited_for_the_whole_quota() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    // 187 s -> 192 billed; 120 covered, 72 charged: 0.02 * 72/60 = 0.024.
    // Full price 0.064, credit 0.064 - 0.024 = 0.04.
    let outcome = post(&store, &id, rated(plan_card(), &[call("evt-a", "acme", NOV, 187)])).await;
    assert_eq!(
        summary(&usage_entries(&store, &id).await)[..2],
        [
            ("use:evt-a".into(), EntryKind::Debit, BillingItem::PhoneCall, dec!(0.064)),
            (
                "use:evt-a#included".into(),
                EntryKind::Credit,
                BillingItem::IncludedMinutes,
                dec!(0.04)
            ),
        ]
    );
    // 10 - 0.064 + 0.04 - 0.0025
    assert_eq!(outcome.account.balance_usd, dec!(9.9735));
    assert_eq!(outcome.account.plan_usage, plan("2026-11", 120));
}

#[tokio::test]
async fn a_call_after_the_quota_is_used_up_pays_full_price_with_no_credit() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    post(&store, &id, rated(plan_card(), &[call("evt-a", "acme", NOV, 120)])).await;
    let before = account(&store, &id).await;
    assert_eq!(before.plan_usage, plan("2026-11", 120));
    // 60 s -> 60 billed, 0.02; nothing left to cover it.
    let outcome =
        post(&store, &id, rated(plan_card(), &[call("evt-b", "acme", NOV_LATER, 60)])).await;
    let sources: Vec<String> =
        usage_entries(&store, &id).await.iter().skip(3).map(|e| e.source_id.to_string()).collect();
    assert_eq!(sources, vec!["use:evt-b", "use:evt-b#surcharge"]);
    assert_eq!(outcome.account.balance_usd, before.balance_usd - dec!(0.02) - dec!(0.0025));
    assert_eq!(outcome.account.plan_usage, plan("2026-11", 120));
}

#[tokio::test]
async fn a_card_without_included_minutes_never_credits_or_touches_plan_usage() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    let card = RateCard { included_minutes_per_month: 0, ..plan_card() };
    let outcome = post(&store, &id, rated(card, &[call("evt-a", "acme", NOV, 90)])).await;
    assert!(usage_entries(&store, &id)
        .await
        .iter()
        .all(|e| e.item != BillingItem::IncludedMinutes));
    // 10 - 0.03 - 0.0025
    assert_eq!(outcome.account.balance_usd, dec!(9.9675));
    assert_eq!(outcome.account.plan_usage, PlanUsage::default());
}

// ---------------------------------------------------------------------------------------------
// Redelivery and concurrency
// ---------------------------------------------------------------------------------------------

fn november_batch() -> Vec<String> {
    vec![
        call("evt-a", "acme", NOV, 90),
        call("evt-b", "acme", NOV, 187),
        envelope(
            "evt-sms",
            "acme",
            NOV,
            "sms_out",
            r#"{"from": "+14155550100", "to": "+14155550123", "segments": 3}"#,
        ),
    ]
}

#[tokio::test]
async fn redelivering_the_same_events_changes_neither_balance_nor_plan_usage() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    let first = post(&store, &id, rated(plan_card(), &november_batch())).await;
    // Calls as above (9.941), then the SMS: 3 * 0.006 + 0.001 = 0.019.
    assert_eq!(first.account.balance_usd, dec!(9.922));
    let entries_before = usage_entries(&store, &id).await;

    let again = post(&store, &id, rated(plan_card(), &november_batch())).await;
    assert!(again.results.iter().all(|r| matches!(r, PostingResult::Duplicate { .. })));
    assert!(again.events.is_empty());
    let after = account(&store, &id).await;
    assert_eq!(after.balance_usd, dec!(9.922));
    assert_eq!(after.plan_usage, plan("2026-11", 120));
    assert_eq!(after.last_seq, first.account.last_seq);
    assert_eq!(usage_entries(&store, &id).await, entries_before);
}

#[tokio::test]
async fn redelivering_one_event_alongside_a_new_one_gives_the_new_one_the_remaining_quota() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    post(&store, &id, rated(plan_card(), &[call("evt-a", "acme", NOV, 90)])).await;
    // evt-a again (duplicate, must not use quota again) with evt-b, which gets the 30 s left:
    // as in the mid-call test, credit 0.01.
    let outcome = post(
        &store,
        &id,
        rated(plan_card(), &[call("evt-a", "acme", NOV, 90), call("evt-b", "acme", NOV, 187)]),
    )
    .await;
    let entries = usage_entries(&store, &id).await;
    assert_eq!(entries.len(), 6);
    assert_eq!(
        summary(&entries[4..5]),
        vec![(
            "use:evt-b#included".into(),
            EntryKind::Credit,
            BillingItem::IncludedMinutes,
            dec!(0.01)
        )]
    );
    assert_eq!(outcome.account.plan_usage, plan("2026-11", 120));
    assert_eq!(outcome.account.balance_usd, dec!(9.941));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_posted_concurrently_from_many_tasks_are_applied_exactly_once() {
    let store = Arc::new(MemoryStore::new());
    let id = open(&store, "acme", dec!(10)).await;
    let source = rated(plan_card(), &november_batch());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, id, source) = (store.clone(), id.clone(), source.clone());
            tokio::spawn(async move { store.post_with(&id, source, now()).await.unwrap() })
        })
        .collect();
    let mut applied_total = 0;
    for task in tasks {
        applied_total += applied(&task.await.unwrap());
    }
    // 3 + 3 call postings, 2 SMS postings: applied once across all the tasks.
    assert_eq!(applied_total, 8);
    let after = account(&store, &id).await;
    assert_eq!(after.balance_usd, dec!(9.922));
    assert_eq!(after.plan_usage, plan("2026-11", 120));
    assert_eq!(usage_entries(&store, &id).await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeliveries_after_a_first_post_change_nothing() {
    let store = Arc::new(MemoryStore::new());
    let id = open(&store, "acme", dec!(10)).await;
    post(&store, &id, rated(plan_card(), &november_batch())).await;
    let before = account(&store, &id).await;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                store.post_with(&id, rated(plan_card(), &november_batch()), now()).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(applied(&task.await.unwrap()), 0);
    }
    assert_eq!(account(&store, &id).await, before);
}

#[tokio::test]
async fn the_same_event_id_twice_in_one_batch_is_rated_and_charged_once() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    // 90 s inside the quota: if the copy were rated separately it would use 30 more seconds
    // (and try to credit them), leaving 120 used instead of 90.
    let outcome = post(
        &store,
        &id,
        rated(plan_card(), &[call("evt-a", "acme", NOV, 90), call("evt-a", "acme", NOV, 90)]),
    )
    .await;
    assert_eq!(applied(&outcome), 3);
    assert!(outcome.results[3..].iter().all(|r| matches!(r, PostingResult::Duplicate { .. })));
    assert_eq!(usage_entries(&store, &id).await.len(), 3);
    assert_eq!(outcome.account.balance_usd, dec!(9.9975));
    assert_eq!(outcome.account.plan_usage, plan("2026-11", 90));
}

// ---------------------------------------------------------------------------------------------
// Plan months
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_event_from_a_new_month_resets_the_plan_month_and_gets_a_full_quota() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    post(&store, &id, rated(plan_card(), &[call("evt-nov", "acme", NOV, 120)])).await;
    assert_eq!(account(&store, &id).await.plan_usage, plan("2026-11", 120));
    // December: 90 s billed, all covered by December's fresh 120 s; credit 0.03.
    let outcome = post(&store, &id, rated(plan_card(), &[call("evt-dec", "acme", DEC, 90)])).await;
    assert_eq!(outcome.account.plan_usage, plan("2026-12", 90));
    let entries = usage_entries(&store, &id).await;
    assert_eq!(
        summary(&entries[4..5]),
        vec![(
            "use:evt-dec#included".into(),
            EntryKind::Credit,
            BillingItem::IncludedMinutes,
            dec!(0.03)
        )]
    );
}

#[tokio::test]
async fn an_event_from_a_month_before_the_plan_month_uses_no_included_minutes() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    // December first: 30 s -> 60 billed, covered; 60 of December's seconds used.
    post(&store, &id, rated(plan_card(), &[call("evt-dec", "acme", DEC, 30)])).await;
    let before = account(&store, &id).await;
    assert_eq!(before.plan_usage, plan("2026-12", 60));
    // A late November call: November's quota is never touched again, so it pays in full:
    // 60 s -> 0.02, + 0.0025 surcharge.
    let outcome = post(&store, &id, rated(plan_card(), &[call("evt-nov", "acme", NOV, 60)])).await;
    let entries = usage_entries(&store, &id).await;
    assert!(entries.iter().all(|e| e.source_id.as_str() != "use:evt-nov#included"));
    assert_eq!(outcome.account.balance_usd, before.balance_usd - dec!(0.0225));
    assert_eq!(outcome.account.plan_usage, plan("2026-12", 60));
}

#[tokio::test]
async fn within_one_batch_a_late_event_after_a_new_month_event_uses_no_included_minutes() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    let outcome = post(
        &store,
        &id,
        rated(plan_card(), &[call("evt-dec", "acme", DEC, 30), call("evt-nov", "acme", NOV, 60)]),
    )
    .await;
    let included: Vec<String> = usage_entries(&store, &id)
        .await
        .iter()
        .filter(|e| e.item == BillingItem::IncludedMinutes)
        .map(|e| e.source_id.to_string())
        .collect();
    assert_eq!(included, vec!["use:evt-dec#included"]);
    assert_eq!(outcome.account.plan_usage, plan("2026-12", 60));
}

// ---------------------------------------------------------------------------------------------
// Source ids
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_charge_of_an_event_has_its_own_suffixed_source_id() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    let body = envelope(
        "evt-full",
        "acme",
        NOV,
        "call",
        r#"{"direction": "outbound", "from": "+14155550100", "to": "+14155550123", "answered": true, "duration_seconds": 30, "ring_through_attempts": 1, "premium": ["transcription", "call_recording", "enhanced_caller_id"]}"#,
    );
    post(&store, &id, rated(plan_card(), &[body])).await;
    // 30 s -> 60 billed (covered): call 0.02 credited back; 1 attempt 0.002; surcharge 0.0025;
    // premium per billed minute: transcription 0.05, recording 0.0025, caller id 0.01.
    let mut entries = summary(&usage_entries(&store, &id).await);
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        entries,
        vec![
            ("use:evt-full".into(), EntryKind::Debit, BillingItem::PhoneCall, dec!(0.02)),
            (
                "use:evt-full#call_recording".into(),
                EntryKind::Debit,
                BillingItem::PremiumService,
                dec!(0.0025)
            ),
            (
                "use:evt-full#enhanced_caller_id".into(),
                EntryKind::Debit,
                BillingItem::PremiumService,
                dec!(0.01)
            ),
            (
                "use:evt-full#included".into(),
                EntryKind::Credit,
                BillingItem::IncludedMinutes,
                dec!(0.02)
            ),
            (
                "use:evt-full#ring".into(),
                EntryKind::Debit,
                BillingItem::RingThroughAttempt,
                dec!(0.002)
            ),
            (
                "use:evt-full#surcharge".into(),
                EntryKind::Debit,
                BillingItem::CarrierSurcharge,
                dec!(0.0025)
            ),
            (
                "use:evt-full#transcription".into(),
                EntryKind::Debit,
                BillingItem::PremiumService,
                dec!(0.05)
            ),
        ]
    );
    // 10 - 0.002 - 0.0025 - 0.05 - 0.0025 - 0.01
    assert_eq!(account(&store, &id).await.balance_usd, dec!(9.933));
}

#[tokio::test]
async fn an_sms_posts_its_segments_under_the_event_id_and_its_surcharge_under_surcharge() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    post(&store, &id, rated(plan_card(), &[SMS_OUT.to_string(), SMS_IN.to_string()])).await;
    assert_eq!(
        summary(&usage_entries(&store, &id).await),
        vec![
            // 2 segments * 0.006, then the 0.001 surcharge per message.
            ("use:evt-sms-out-1".into(), EntryKind::Debit, BillingItem::OutgoingSms, dec!(0.012)),
            (
                "use:evt-sms-out-1#surcharge".into(),
                EntryKind::Debit,
                BillingItem::CarrierSurcharge,
                dec!(0.001)
            ),
            ("use:evt-sms-in-1".into(), EntryKind::Debit, BillingItem::IncomingSms, dec!(0.005)),
            (
                "use:evt-sms-in-1#surcharge".into(),
                EntryKind::Debit,
                BillingItem::CarrierSurcharge,
                dec!(0.001)
            ),
        ]
    );
}

#[test]
fn the_longest_suffix_on_the_longest_event_id_still_makes_a_valid_source_id() {
    let long_id = "e".repeat(96);
    let event = event(&CALL_OUTBOUND.replace("evt-call-out-1", &long_id));
    let id = charge_source_id(&event, "enhanced_caller_id");
    assert_eq!(id.as_str(), format!("use:{long_id}#enhanced_caller_id"));
    assert!(id.as_str().len() <= ledger::ids::MAX_SOURCE_ID_LEN);
    assert_eq!(charge_source_id(&event, "").as_str(), format!("use:{long_id}"));
}

// ---------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_number_purchase_beyond_the_balance_is_refused_and_a_renewal_always_posts() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(0.50)).await;
    accept_terms(&store, &id).await;
    // A local number costs 1.00 to buy: more than the 0.50 balance, floor 0.
    let purchase = post(&store, &id, rated(plan_card(), &[NUMBER_PURCHASE.to_string()])).await;
    assert_eq!(
        purchase.results,
        vec![PostingResult::Refused(Refusal::InsufficientBalance {
            balance_usd: dec!(0.50),
            floor_usd: dec!(0)
        })]
    );
    assert_eq!(account(&store, &id).await.balance_usd, dec!(0.50));
    assert!(usage_entries(&store, &id).await.is_empty());

    // The toll-free renewal (2.15) is completed usage: it posts and suspends the account.
    let renewal = post(&store, &id, rated(plan_card(), &[NUMBER_RENEWAL.to_string()])).await;
    assert!(matches!(renewal.results[..], [PostingResult::Applied { .. }]));
    assert_eq!(renewal.account.balance_usd, dec!(-1.65));
    assert_eq!(renewal.account.status, AccountStatus::Suspended);
    assert_eq!(renewal.events.len(), 1);
    assert_eq!(renewal.events[0].kind, LedgerEventKind::Suspended);
    assert_eq!(
        summary(&usage_entries(&store, &id).await),
        vec![(
            "use:evt-num-renew-1".into(),
            EntryKind::Debit,
            BillingItem::PhoneNumber,
            dec!(2.15)
        )]
    );
}

#[tokio::test]
async fn a_number_purchase_within_the_balance_posts() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(1.00)).await;
    accept_terms(&store, &id).await;
    // Exactly the balance: 1.00 - 1.00 = 0, not below the floor of 0.
    let outcome = post(&store, &id, rated(plan_card(), &[NUMBER_PURCHASE.to_string()])).await;
    assert_eq!(applied(&outcome), 1);
    assert_eq!(outcome.account.balance_usd, dec!(0));
}

#[tokio::test]
async fn a_refused_purchase_leaves_the_rest_of_its_batch_posted() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(0.50)).await;
    accept_terms(&store, &id).await;
    let outcome =
        post(&store, &id, rated(plan_card(), &[NUMBER_PURCHASE.to_string(), SMS_OUT.to_string()]))
            .await;
    assert!(matches!(outcome.results[0], PostingResult::Refused(_)));
    assert_eq!(applied(&outcome), 2);
    // 0.50 - 0.012 - 0.001
    assert_eq!(outcome.account.balance_usd, dec!(0.487));
    let sources: BTreeSet<String> =
        usage_entries(&store, &id).await.iter().map(|e| e.source_id.to_string()).collect();
    assert!(!sources.contains("use:evt-num-buy-1"));
}

// ---------------------------------------------------------------------------------------------
// Source-id namespaces
// ---------------------------------------------------------------------------------------------

/// Post a credit under a bare source id (a recharge's, or an event posted before the prefix).
async fn post_raw(store: &MemoryStore, id: &AccountId, posting: ledger::Posting) {
    let outcome = store.post(id, vec![posting], now()).await.unwrap();
    assert!(matches!(outcome.results[0], PostingResult::Applied { .. }), "{outcome:?}");
}

#[tokio::test]
async fn a_telephony_id_that_looks_like_a_recharge_request_id_is_billed_under_its_own_namespace() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    // A charged auto-recharge credited under its request id.
    let recharge = ledger::Posting::credit(
        ledger::SourceId::parse("rch:acme:5").unwrap(),
        BillingItem::FundsAdded,
        usd(dec!(50)),
        now(),
    )
    .unwrap();
    post_raw(&store, &id, recharge).await;

    let outcome =
        post(&store, &id, rated(plan_card(), &[call("rch:acme:5", "acme", NOV, 90)])).await;
    assert_eq!(applied(&outcome), 3, "{:?}", outcome.results);
    assert_eq!(
        summary(&usage_entries(&store, &id).await),
        vec![
            ("use:rch:acme:5".into(), EntryKind::Debit, BillingItem::PhoneCall, dec!(0.03)),
            (
                "use:rch:acme:5#included".into(),
                EntryKind::Credit,
                BillingItem::IncludedMinutes,
                dec!(0.03)
            ),
            (
                "use:rch:acme:5#surcharge".into(),
                EntryKind::Debit,
                BillingItem::CarrierSurcharge,
                dec!(0.0025)
            ),
        ]
    );
    // 10 + 50 - 0.0025
    assert_eq!(account(&store, &id).await.balance_usd, dec!(59.9975));
}

#[tokio::test]
async fn an_event_posted_under_its_bare_id_before_the_prefix_is_still_a_duplicate() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(10)).await;
    // What the worker wrote before the prefix: an SMS out, two segments, and its surcharge.
    let sms = event(SMS_OUT);
    for (source, item, amount) in [
        ("evt-sms-out-1", BillingItem::OutgoingSms, dec!(0.012)),
        ("evt-sms-out-1#surcharge", BillingItem::CarrierSurcharge, dec!(0.001)),
    ] {
        let posting = ledger::Posting::usage(
            ledger::SourceId::parse(source).unwrap(),
            item,
            usd(amount),
            sms.occurred_at,
        )
        .unwrap();
        post_raw(&store, &id, posting).await;
    }
    let before = account(&store, &id).await;

    let outcome = post(&store, &id, rated(plan_card(), &[SMS_OUT.to_string()])).await;
    assert_eq!(
        outcome.results,
        vec![PostingResult::Duplicate { seq: 2 }, PostingResult::Duplicate { seq: 3 }]
    );
    assert_eq!(account(&store, &id).await, before);
}

#[test]
fn only_events_before_the_cutover_and_outside_other_namespaces_are_looked_up_bare() {
    let source = |bodies: &[String]| rated(plan_card(), bodies);
    let ids = |rated: &RatedEvents| -> Vec<String> {
        ledger::PostingSource::candidate_source_ids(rated)
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    };
    let before = source(&[SMS_OUT.to_string()]);
    assert_eq!(
        ids(&before),
        vec![
            "use:evt-sms-out-1",
            "evt-sms-out-1",
            "use:evt-sms-out-1#surcharge",
            "evt-sms-out-1#surcharge"
        ]
    );
    let after = source(&[SMS_OUT.replace("2026-11-03T16:00:00Z", "2027-01-01T00:00:00Z")]);
    assert_eq!(ids(&after), vec!["use:evt-sms-out-1", "use:evt-sms-out-1#surcharge"]);
    let recharge_like = source(&[SMS_OUT.replace("evt-sms-out-1", "rch:acme:5")]);
    assert_eq!(ids(&recharge_like), vec!["use:rch:acme:5", "use:rch:acme:5#surcharge"]);
}
