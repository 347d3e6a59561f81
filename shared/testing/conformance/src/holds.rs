//! Holds (issue 13) on every store: the authorization service's requests are account changes,
//! so what they promise depends on each store's optimistic concurrency being right.
//!
//! Standard rate card: outbound calls 0.014/min in 60/6 increments plus 0.0025 per call, so a
//! five-minute slice holds 0.0725; an outbound SMS segment 0.0079 + 0.003 per message.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ledger::{Account, AccountId, LedgerStore, StoreError};
use rating::{Direction, RateCards};
use rust_decimal::Decimal;
use usage::authorize::{Action, Denial};
use usage::events::UsageEvent;
use usage::holds::{self, HoldAnswer, HoldError};
use usage::source::RatedEvents;

use crate::cases::{amount, at, credit, open};

fn outbound_call() -> Action {
    Action::Call { direction: Direction::Outbound, to: "+15551230000".into() }
}

fn cards() -> RateCards {
    RateCards::standard_only()
}

/// Place a hold, retrying while the store reports contention (as the platform retries a 503).
async fn place_retrying(
    store: &dyn LedgerStore,
    id: &AccountId,
    authorization: &str,
    action: &Action,
    now: DateTime<Utc>,
) -> HoldAnswer {
    for attempt in 0..50u64 {
        match holds::place(store, &cards(), id, authorization, action, now, 14_400).await {
            Ok(answer) => return answer,
            Err(HoldError::Store(StoreError::Contention(_) | StoreError::Throttled)) => {
                tokio::time::sleep(std::time::Duration::from_millis(5 + attempt * 3)).await;
            }
            Err(other) => panic!("placing {authorization}: {other}"),
        }
    }
    panic!("placing {authorization}: still contended after 50 tries");
}

/// A completed outbound call of `seconds` reporting `authorization`.
fn call_report(event: &str, account: &AccountId, authorization: &str, seconds: u32) -> UsageEvent {
    let body = serde_json::json!({
        "version": 1, "event_id": event, "account_id": account.as_str(),
        "occurred_at": "2026-11-01T12:00:00Z", "type": "call",
        "authorization_id": authorization,
        "data": {"direction": "outbound", "from": "+15550000001", "to": "+15551230000",
                 "answered": true, "duration_seconds": seconds},
    });
    UsageEvent::parse(&body.to_string()).expect("a valid call event")
}

async fn report(
    store: &dyn LedgerStore,
    id: &AccountId,
    events: Vec<UsageEvent>,
    now: DateTime<Utc>,
) {
    let card = cards().card(None).expect("the standard card");
    store
        .post_with(id, Arc::new(RatedEvents { card, events }), now)
        .await
        .expect("post the report");
}

async fn account(store: &dyn LedgerStore, id: &AccountId) -> Account {
    store.account(id).await.expect("read").expect("exists")
}

pub async fn concurrent_authorizations_never_grant_more_than_the_available_balance(
    store: Arc<dyn LedgerStore>,
) {
    const REQUESTS: usize = 100;
    let id = open(&*store, "hold-race", None).await;
    store.post(&id, vec![credit("pay", "1")], at(1)).await.unwrap();
    let now = at(2);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..REQUESTS {
        let (store, id) = (store.clone(), id.clone());
        tasks.spawn(async move {
            place_retrying(&*store, &id, &format!("call-{n}"), &outbound_call(), now).await
        });
    }
    let mut granted = Decimal::ZERO;
    let (mut allowed, mut refused) = (0, 0);
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("a request panicked");
        if answer.decision.allowed {
            allowed += 1;
            granted += answer.hold.expect("an allowed request holds").amount_usd;
        } else {
            refused += 1;
            assert_eq!(answer.decision.reason, Some(Denial::InsufficientAvailableBalance));
        }
    }
    // $1.00 covers 13 five-minute slices at 0.0725, and one shorter slice for what is left.
    assert!(granted <= Decimal::ONE, "together they granted {granted} of $1.00");
    assert_eq!(allowed + refused, REQUESTS);
    assert!(allowed >= 13, "only {allowed} granted: the balance covers 13 slices");
    let after = account(&*store, &id).await;
    assert_eq!(after.held_usd(now, None), granted, "every grant is held, nothing else");
    assert!(after.available_usd(now) >= Decimal::ZERO);
    assert_eq!(after.balance_usd, Decimal::ONE, "holds move no money");
}

pub async fn a_report_settles_its_hold_once_whatever_is_redelivered(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "hold-settle", None).await;
    store.post(&id, vec![credit("pay", "10")], at(1)).await.unwrap();
    let placed = place_retrying(&*store, &id, "call-1", &outbound_call(), at(2)).await;
    assert!(placed.decision.allowed);
    assert_eq!(placed.hold.as_ref().unwrap().amount_usd, amount("0.0725").value());
    // A replayed authorization changes nothing.
    let again = place_retrying(&*store, &id, "call-1", &outbound_call(), at(3)).await;
    assert!(again.replayed);
    assert_eq!(account(&*store, &id).await.holds.len(), 1);

    // The call lasted 2 minutes: 0.028 + 0.0025, debited once, and the hold is settled.
    let call = call_report("c1", &id, "call-1", 120);
    report(&*store, &id, vec![call.clone()], at(4)).await;
    report(&*store, &id, vec![call], at(5)).await;
    let after = crate::assert_consistent(&*store, &id).await;
    assert_eq!(after.balance_usd, amount("9.9695").value(), "one debit of the rated cost");
    assert!(after.hold("call-1").unwrap().settled);
    assert_eq!(after.available_usd(at(5)), after.balance_usd, "nothing held any more");
    // Replays after settlement are recognised: no second hold, no release of anything.
    let replay = place_retrying(&*store, &id, "call-1", &outbound_call(), at(6)).await;
    assert!(replay.replayed);
    let released = holds::release(&*store, &id, "call-1", at(6)).await.unwrap();
    assert!(released.replayed);
    assert_eq!(account(&*store, &id).await.available_usd(at(6)), after.balance_usd);
}

pub async fn an_unreported_hold_expires_and_a_late_report_still_debits_once(
    store: Arc<dyn LedgerStore>,
) {
    let id = open(&*store, "hold-expiry", None).await;
    store.post(&id, vec![credit("pay", "1")], at(1)).await.unwrap();
    let placed = place_retrying(&*store, &id, "call-1", &outbound_call(), at(2)).await;
    let expires = placed.hold.unwrap().expires_at;
    assert_eq!(expires, at(2) + Duration::seconds(300 + holds::GRACE_SECONDS));
    let held = account(&*store, &id).await;
    assert!(held.available_usd(at(2)) < Decimal::ONE);
    assert_eq!(held.available_usd(expires), Decimal::ONE, "released itself at expiry");

    // A long call reported after the hold expired (an overrun too): debited once, in full.
    let late = call_report("c1", &id, "call-1", 600);
    report(&*store, &id, vec![late.clone()], expires + Duration::seconds(1)).await;
    report(&*store, &id, vec![late], expires + Duration::seconds(2)).await;
    let after = crate::assert_consistent(&*store, &id).await;
    assert_eq!(after.balance_usd, amount("0.8575").value(), "0.14 + 0.0025, once");
    assert_eq!(after.holds.len(), 1, "the expired hold was dropped; the report left its mark");
    assert!(after.holds[0].settled && after.held_usd(expires, None).is_zero());
}

pub async fn extensions_apply_once_in_order_and_stop_at_the_available_balance(
    store: Arc<dyn LedgerStore>,
) {
    let id = open(&*store, "hold-extend", None).await;
    store.post(&id, vec![credit("pay", "0.2")], at(1)).await.unwrap();
    let placed = place_retrying(&*store, &id, "call-1", &outbound_call(), at(2)).await;
    assert_eq!(placed.decision.max_duration_seconds, Some(300));
    let cards = cards();
    let extend = |sequence| holds::extend(&*store, &cards, &id, "call-1", sequence, at(3), 14_400);
    let once = extend(1).await.unwrap();
    assert_eq!(once.decision.max_duration_seconds, Some(600));
    assert_eq!(once.hold.as_ref().unwrap().amount_usd, amount("0.1425").value());
    let replay = extend(1).await.unwrap();
    assert!(replay.replayed, "a retried extension changes nothing");
    assert!(matches!(extend(3).await, Err(HoldError::OutOfOrder { expected: 2, .. })));
    // What is left (0.0575) covers 246 s more, not another full slice.
    let last = extend(2).await.unwrap();
    assert!(last.decision.allowed);
    assert_eq!(last.decision.max_duration_seconds, Some(846));
    assert!(last.available_usd >= Decimal::ZERO);
    let refused = extend(3).await.unwrap();
    assert!(!refused.decision.allowed, "nothing left to grant");
    let after = account(&*store, &id).await;
    assert_eq!(after.hold("call-1").unwrap().extensions, 2);
    assert_eq!(after.balance_usd, amount("0.2").value());
}

pub async fn a_hold_below_the_recharge_threshold_requests_a_recharge_and_a_message_holds_its_price(
    store: Arc<dyn LedgerStore>,
) {
    let id = open(&*store, "hold-recharge", None).await;
    store.post(&id, vec![credit("pay", "10.01")], at(1)).await.unwrap();
    let settings =
        ledger::RechargeSettings::new(true, amount("50"), amount("10"), ledger::RechargeMode::Add)
            .unwrap();
    store
        .modify_account(
            &id,
            Arc::new(move |a| {
                a.recharge = Some(settings.clone());
                Ok(())
            }),
            at(1),
        )
        .await
        .unwrap();
    let pending_before = store.pending_events(100).await.unwrap().len();
    let sms = Action::Sms { direction: Direction::Outbound, segments: 2 };
    let placed = place_retrying(&*store, &id, "sms-1", &sms, at(2)).await;
    assert_eq!(placed.hold.unwrap().amount_usd, amount("0.0188").value());
    // 10.01 less 0.0188 held is below the $10 threshold: one recharge request.
    let after = account(&*store, &id).await;
    assert!(after.recharge_in_flight.is_some(), "the hold raised a recharge request");
    let events = store.pending_events(100).await.unwrap();
    let requested = events
        .iter()
        .filter(|e| e.account_id == id && e.kind.as_str() == "recharge_requested")
        .count();
    assert_eq!(requested, 1, "{} events pending, {pending_before} before", events.len());
    assert_eq!(after.balance_usd, amount("10.01").value());
}

/// Drain `id` to its floor from above at `at` (so its suspension is dated), after giving it
/// `policy`.
async fn drained(
    store: &dyn LedgerStore,
    name: &str,
    policy: ledger::ServicePolicy,
    at: DateTime<Utc>,
) -> AccountId {
    let id = open(store, name, None).await;
    store
        .modify_account(
            &id,
            Arc::new(move |a| {
                a.service = Some(policy.clone());
                Ok(())
            }),
            at,
        )
        .await
        .unwrap();
    store.post(&id, vec![credit("pay", "1")], at).await.unwrap();
    store.post(&id, vec![crate::cases::usage("use:drain", "1")], at).await.unwrap();
    let account = account(store, &id).await;
    assert_eq!(account.status, ledger::AccountStatus::Suspended);
    assert_eq!(account.suspended_since, Some(at));
    id
}

pub async fn at_the_floor_outbound_stops_and_inbound_runs_on_its_grace_until_it_is_used_up(
    store: Arc<dyn LedgerStore>,
) {
    let policy = ledger::ServicePolicy {
        inbound_grace_usd: amount("0.05").value(),
        ..ledger::ServicePolicy::default()
    };
    let id = drained(&*store, "tiers", policy, at(1)).await;
    let outbound = place_retrying(&*store, &id, "out-1", &outbound_call(), at(2)).await;
    assert_eq!(outbound.decision.reason, Some(Denial::Suspended));
    let inbound = Action::Call { direction: Direction::Inbound, to: "+15551230000".into() };
    // Inbound 0.0085/min: a 5-minute slice holds 0.045 of the 0.05 grace.
    let first = place_retrying(&*store, &id, "in-1", &inbound, at(2)).await;
    assert!(first.decision.allowed, "{first:?}");
    let second = place_retrying(&*store, &id, "in-2", &inbound, at(3)).await;
    assert_eq!(second.decision.reason, Some(Denial::GraceExhausted));
    let after = account(&*store, &id).await;
    assert_eq!(after.holds.len(), 1, "nothing held for the refused ones");
}

pub async fn the_number_release_steps_once_each_and_a_top_up_cancels_it(
    store: Arc<dyn LedgerStore>,
) {
    use jobs::release::{sweep, SweepOutcome};
    use ledger::{LedgerEventKind, ReleaseStage};
    let policy =
        ledger::ServicePolicy { release_after_days: 10, ..ledger::ServicePolicy::default() };
    let id = drained(&*store, "release", policy, at(1)).await;
    let day = |n: i64| at(1) + Duration::days(n);
    assert_eq!(sweep(&*store, &id, day(2)).await.unwrap(), SweepOutcome::NothingDue);
    assert_eq!(
        sweep(&*store, &id, day(3)).await.unwrap(),
        SweepOutcome::Advanced(ReleaseStage::WeekBefore)
    );
    assert_eq!(sweep(&*store, &id, day(3)).await.unwrap(), SweepOutcome::NothingDue, "once");
    assert_eq!(
        sweep(&*store, &id, day(10)).await.unwrap(),
        SweepOutcome::Advanced(ReleaseStage::Due),
        "a missed day catches up to the stage due"
    );
    let raised: Vec<(u32, String)> = store
        .pending_events(1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.account_id == id)
        .filter_map(|e| match e.kind {
            LedgerEventKind::NumbersReleaseWarning { days_left, .. } => Some((days_left, e.id)),
            LedgerEventKind::NumbersReleaseDue { .. } => Some((0, e.id)),
            _ => None,
        })
        .collect();
    // The 1-day notice and the due event came in one change (same time and version).
    let mut steps: Vec<u32> = raised.iter().map(|(d, _)| *d).collect();
    steps.sort_unstable();
    assert_eq!(steps, vec![0, 1, 7], "{raised:?}");

    // A top-up reactivates the account and cancels the release; the next sweep does nothing.
    store.post(&id, vec![credit("pay:top-up", "20")], day(11)).await.unwrap();
    let after = account(&*store, &id).await;
    assert_eq!((after.release_stage, after.suspended_since), (0, None));
    assert_eq!(sweep(&*store, &id, day(40)).await.unwrap(), SweepOutcome::NothingDue);
}
