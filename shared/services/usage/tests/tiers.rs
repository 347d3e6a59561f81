//! Tiered suspension (issue 13): what an account keeps at its floor. Outbound calls, outbound
//! messages and number purchases stop; inbound ones run on the operator's grace (an amount
//! below the floor, or hours after the suspension) and then answer `grace_exhausted`.
//! Standard card: inbound calls 0.0085/min in 60/6 increments plus 0.0025 per call.

mod common;

use std::sync::Arc;

use chrono::Duration;
use common::*;
use ledger::memory::MemoryStore;
use ledger::{AccountStatus, LedgerStore, ServicePolicy};
use rating::{Direction, NumberType, RateCards};
use rust_decimal_macros::dec;
use usage::authorize::{authorize, Action, Denial};
use usage::holds;

fn inbound_call() -> Action {
    Action::Call { direction: Direction::Inbound, to: "+14155550123".into() }
}

fn outbound_call() -> Action {
    Action::Call { direction: Direction::Outbound, to: "+14155550123".into() }
}

/// An account that was active with $1 and was then drained to $0 (its floor) by a debit.
async fn drained(store: &MemoryStore, policy: Option<ServicePolicy>) -> ledger::AccountId {
    let id = open(store, "acme", dec!(1)).await;
    accept_terms(store, &id).await;
    store
        .modify_account(
            &id,
            Arc::new(move |a| {
                a.service = policy.clone();
                Ok(())
            }),
            now(),
        )
        .await
        .unwrap();
    let debit = ledger::Posting::usage(
        ledger::SourceId::parse("use:drain").unwrap(),
        ledger::BillingItem::PhoneCall,
        usd(dec!(1)),
        now(),
    )
    .unwrap();
    store.post(&id, vec![debit], now()).await.unwrap();
    let account = account(store, &id).await;
    assert_eq!(account.status, AccountStatus::Suspended);
    assert_eq!(account.suspended_since, Some(now()), "the crossing records when");
    id
}

#[tokio::test]
async fn at_the_floor_outbound_calls_messages_and_purchases_stop_and_inbound_stops_without_grace() {
    let store = MemoryStore::new();
    let id = drained(&store, None).await;
    let account = account(&store, &id).await;
    let card = RateCards::standard_only().card(None).unwrap();
    for action in [
        outbound_call(),
        Action::Sms { direction: Direction::Outbound, segments: 1 },
        Action::NumberPurchase { number_type: NumberType::Local },
        inbound_call(),
        Action::Sms { direction: Direction::Inbound, segments: 1 },
    ] {
        let decision = authorize(&account, &card, &action, now(), 14_400);
        assert_eq!(decision.reason, Some(Denial::Suspended), "{action:?}");
    }
}

#[tokio::test]
async fn a_grace_amount_keeps_inbound_calls_running_below_the_floor_until_it_is_used_up() {
    let store = MemoryStore::new();
    let policy = ServicePolicy { inbound_grace_usd: dec!(0.05), ..ServicePolicy::default() };
    let id = drained(&store, Some(policy)).await;
    let cards = RateCards::standard_only();
    let card = cards.card(None).unwrap();
    let account = account(&store, &id).await;
    assert_eq!(
        authorize(&account, &card, &outbound_call(), now(), 14_400).reason,
        Some(Denial::Suspended),
        "outbound stops at the floor whatever the grace"
    );
    // 0.05 of grace: 0.05 - 0.0025 buys 0.0475 x 60 / 0.0085 = 335 s -> 60 + 45 x 6 = 330 s.
    let advisory = authorize(&account, &card, &inbound_call(), now(), 14_400);
    assert!(advisory.allowed, "{advisory:?}");
    assert_eq!(advisory.max_duration_seconds, Some(330));
    // A hold takes a 5-minute slice (0.0425 + 0.0025) of the grace; a second call finds too
    // little left, and is told the grace is used up.
    let first =
        holds::place(&store, &cards, &id, "in-1", &inbound_call(), now(), 14_400).await.unwrap();
    assert!(first.decision.allowed, "{first:?}");
    assert_eq!(first.hold.unwrap().amount_usd, dec!(0.045));
    let second =
        holds::place(&store, &cards, &id, "in-2", &inbound_call(), now(), 14_400).await.unwrap();
    assert_eq!(second.decision.reason, Some(Denial::GraceExhausted), "{second:?}");
}

#[tokio::test]
async fn a_grace_period_keeps_inbound_running_for_its_hours_and_then_ends() {
    let store = MemoryStore::new();
    let policy = ServicePolicy { inbound_grace_hours: Some(24), ..ServicePolicy::default() };
    let id = drained(&store, Some(policy)).await;
    let card = RateCards::standard_only().card(None).unwrap();
    let account = account(&store, &id).await;
    let sms = Action::Sms { direction: Direction::Inbound, segments: 2 };
    assert!(authorize(&account, &card, &sms, now() + Duration::hours(23), 14_400).allowed);
    let call = authorize(&account, &card, &inbound_call(), now() + Duration::hours(1), 3_600);
    assert_eq!(call.max_duration_seconds, Some(3_600), "any cost inside the period, capped");
    let after = authorize(&account, &card, &sms, now() + Duration::hours(24), 14_400);
    assert_eq!(after.reason, Some(Denial::GraceExhausted));
}

#[tokio::test]
async fn a_top_up_lifts_the_suspension_and_clears_its_start() {
    let store = MemoryStore::new();
    let id = drained(&store, None).await;
    let credit = ledger::Posting::credit(
        ledger::SourceId::parse("pay:top-up").unwrap(),
        ledger::BillingItem::FundsAdded,
        usd(dec!(10)),
        now(),
    )
    .unwrap();
    store.post(&id, vec![credit], now() + Duration::hours(2)).await.unwrap();
    let account = account(&store, &id).await;
    assert_eq!(account.status, AccountStatus::Active);
    assert_eq!(account.suspended_since, None);
    assert_eq!(account.release_at(), None);
}

#[tokio::test]
async fn an_open_dispute_stops_outbound_service_only_where_the_operator_says_so() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(50)).await;
    accept_terms(&store, &id).await;
    let card = RateCards::standard_only().card(None).unwrap();
    let base = account(&store, &id).await;
    let with = |policy: bool, disputes: Vec<String>| {
        let mut account = base.clone();
        account.service =
            Some(ServicePolicy { suspend_while_disputed: policy, ..ServicePolicy::default() });
        account.open_disputes = disputes;
        account
    };
    let outbound = [
        outbound_call(),
        Action::Sms { direction: Direction::Outbound, segments: 1 },
        Action::NumberPurchase { number_type: NumberType::Local },
    ];
    let disputed = with(true, vec!["dp_1".into()]);
    for action in &outbound {
        let decision = authorize(&disputed, &card, action, now(), 14_400);
        assert_eq!(decision.reason, Some(Denial::DisputeOpen), "{action:?}");
    }
    assert!(authorize(&disputed, &card, &inbound_call(), now(), 14_400).allowed, "inbound runs");
    // The policy off, or no dispute open: service as usual, whatever the balance says.
    for account in [with(false, vec!["dp_1".into()]), with(true, Vec::new())] {
        for action in &outbound {
            assert!(authorize(&account, &card, action, now(), 14_400).allowed, "{action:?}");
        }
    }
}

#[tokio::test]
async fn an_account_living_on_an_expired_grant_is_suspended_from_the_expiry() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(0)).await;
    accept_terms(&store, &id).await;
    let mut account = account(&store, &id).await;
    account.balance_usd = dec!(5);
    account.status = AccountStatus::Active;
    account.grants = vec![ledger::CreditGrant {
        id: "cg:promo".into(),
        category: ledger::GrantCategory::Promotional,
        granted_usd: dec!(5),
        remaining_usd: dec!(5),
        expires_at: Some(now() - Duration::hours(1)),
        priority: 50,
        granted_at: now() - Duration::days(1),
    }];
    let card = RateCards::standard_only().card(None).unwrap();
    let decision = authorize(&account, &card, &outbound_call(), now(), 14_400);
    assert_eq!(decision.reason, Some(Denial::Suspended), "the balance left is only expired credit");
}

/// A postpaid account blocked for an overdue invoice (issue 17) stops like one at its floor,
/// whatever its balance: outbound answers `invoice_overdue`, inbound runs only on the grace.
#[tokio::test]
async fn an_account_blocked_for_an_overdue_invoice_stops_as_at_its_floor() {
    let store = MemoryStore::new();
    let id = open(&store, "acme", dec!(50)).await;
    accept_terms(&store, &id).await;
    let card = RateCards::standard_only().card(None).unwrap();
    let block = ledger::OverdueBlock {
        month: "2026-10".parse().unwrap(),
        since: now(),
        until_paid_in_usd: dec!(80),
    };
    let blocked = |policy: Option<ServicePolicy>| {
        let store = &store;
        let id = id.clone();
        let block = block.clone();
        async move {
            let change = Arc::new(move |a: &mut ledger::Account| {
                a.service = policy.clone();
                a.overdue_block = Some(block.clone());
                Ok(())
            });
            let after = store.modify_account(&id, change, now()).await.unwrap();
            assert_eq!(after.status, AccountStatus::Suspended, "$50 above the floor, and blocked");
            after
        }
    };
    let account = blocked(None).await;
    for action in [
        outbound_call(),
        Action::Sms { direction: Direction::Outbound, segments: 1 },
        Action::NumberPurchase { number_type: NumberType::Local },
    ] {
        let decision = authorize(&account, &card, &action, now(), 14_400);
        assert_eq!(decision.reason, Some(Denial::InvoiceOverdue), "{action:?}");
    }
    let inbound = authorize(&account, &card, &inbound_call(), now(), 14_400);
    assert_eq!(inbound.reason, Some(Denial::Suspended), "no grace: inbound stops too");
    let grace = ServicePolicy { inbound_grace_hours: Some(24), ..ServicePolicy::default() };
    let account = blocked(Some(grace)).await;
    assert!(authorize(&account, &card, &inbound_call(), now(), 14_400).allowed, "inside the grace");
}
