//! The conformance cases. Each takes a fresh, empty store and panics on a violation.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use ledger::store::all_entries;
use ledger::{
    verify_chain, Account, AccountId, AccountStatus, Amount, BillingItem, EntryKind, EntryQuery,
    LedgerError, LedgerEventKind, LedgerStore, Month, MonthTotals, NewAccount, Posting,
    PostingResult, RechargeMode, RechargeSettings, Refusal, Show, SourceId, StoreError,
    TermsAcceptance,
};

pub fn usd(value: &str) -> Decimal {
    Decimal::from_str_exact(value).expect("test amounts are valid decimals")
}

pub fn amount(value: &str) -> Amount {
    Amount::from_str(value).expect("test amounts are valid")
}

/// 2026-11-01T00:00:00Z plus `seconds`.
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

pub fn account_id(name: &str) -> AccountId {
    AccountId::parse(name).expect("test account ids are valid")
}

pub fn source(name: &str) -> SourceId {
    SourceId::parse(name).expect("test source ids are valid")
}

pub fn usage(id: &str, value: &str) -> Posting {
    Posting::usage(source(id), BillingItem::PhoneCall, amount(value), at(0)).unwrap()
}

pub fn purchase(id: &str, value: &str) -> Posting {
    Posting::purchase(source(id), BillingItem::PhoneNumber, amount(value), at(0)).unwrap()
}

pub fn credit(id: &str, value: &str) -> Posting {
    Posting::credit(source(id), BillingItem::FundsAdded, amount(value), at(0)).unwrap()
}

/// Open an account with terms accepted.
pub async fn open(store: &dyn LedgerStore, name: &str, credit_limit: Option<&str>) -> AccountId {
    let id = account_id(name);
    store
        .create_account(
            NewAccount { id: id.clone(), credit_limit_usd: credit_limit.map(amount) },
            at(0),
        )
        .await
        .expect("create account");
    store
        .modify_account(
            &id,
            Arc::new(|account: &mut Account| {
                account.terms = Some(TermsAcceptance {
                    version: "2026-01".into(),
                    accepted_by: "admin@example.com".into(),
                    accepted_at: at(0),
                });
                Ok(())
            }),
            at(0),
        )
        .await
        .expect("accept terms");
    id
}

pub async fn post(
    store: &dyn LedgerStore,
    id: &AccountId,
    postings: Vec<Posting>,
    now: DateTime<Utc>,
) -> ledger::PostOutcome {
    store.post(id, postings, now).await.expect("post")
}

/// Read a consistent snapshot: the account, its entries, and the account again unchanged (a write
/// whose caller gave up may still land at any moment, and two reads are not one snapshot).
pub async fn snapshot(store: &dyn LedgerStore, id: &AccountId) -> (Account, Vec<ledger::Entry>) {
    for _ in 0..100 {
        let before = store.account(id).await.expect("read account").expect("account exists");
        let entries = all_entries(store, id, EntryQuery::default()).await.expect("read entries");
        let after = store.account(id).await.expect("read account").expect("account exists");
        if before == after && entries.len() as u64 == after.last_seq {
            return (after, entries);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("account {id} never held still long enough to read");
}

/// Read everything back and check every invariant the ledger promises.
pub async fn assert_consistent(store: &dyn LedgerStore, id: &AccountId) -> Account {
    let (account, entries) = snapshot(store, id).await;
    verify_chain(account.opening_balance_usd, &entries, account.balance_usd)
        .unwrap_or_else(|e| panic!("chain broken for {id}: {e}"));
    assert_eq!(entries.len() as u64, account.last_seq, "every sequence number has one entry");
    let distinct: HashSet<_> = entries.iter().map(|e| &e.source_id).collect();
    assert_eq!(distinct.len(), entries.len(), "no source id is applied twice");
    assert_eq!(account.status, account.status_for(account.balance_usd));
    assert_grants_are_their_shares(&account, &entries);
    account
}

/// Each credit grant's remainder is what its entries' shares add up to (opened and given back
/// by credits, drawn and removed by debits), and a used-up grant leaves the account.
pub fn assert_grants_are_their_shares(account: &Account, entries: &[ledger::Entry]) {
    let mut left: std::collections::BTreeMap<&str, Decimal> = Default::default();
    for entry in entries {
        for share in &entry.grants {
            let moved = match entry.kind {
                EntryKind::Credit => share.amount_usd,
                EntryKind::Debit => -share.amount_usd,
            };
            *left.entry(share.grant.as_str()).or_default() += moved;
        }
    }
    for (grant, remaining) in &left {
        assert!(*remaining >= Decimal::ZERO, "{}: grant {grant} overdrawn", account.id);
        let held = account.grants.iter().find(|g| g.id == *grant).map(|g| g.remaining_usd);
        assert_eq!(held.unwrap_or(Decimal::ZERO), *remaining, "{}: grant {grant}", account.id);
    }
    assert!(account.grants.iter().all(|g| left.contains_key(g.id.as_str())));
}

fn applied(result: &PostingResult) -> (u64, Decimal) {
    match result {
        PostingResult::Applied { seq, balance_after_usd } => (*seq, *balance_after_usd),
        other => panic!("expected Applied, got {other:?}"),
    }
}

fn event_kinds(events: &[ledger::LedgerEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

pub async fn posted_entries_read_back_exactly_with_an_unbroken_chain(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "readback", None).await;
    let first = post(&*store, &id, vec![credit("pay-1", "100")], at(10)).await;
    assert_eq!(applied(&first.results[0]), (1, usd("100")));

    let call = usage("call-1", "1.2345")
        .with_details(serde_json::json!({"to": "+15550100", "seconds": 61}))
        .unwrap();
    let outcome = post(
        &*store,
        &id,
        vec![call.clone(), usage("sms-1", "0.0001"), purchase("num-1", "10")],
        at(20),
    )
    .await;
    assert_eq!(applied(&outcome.results[0]), (2, usd("98.7655")));
    assert_eq!(applied(&outcome.results[1]), (3, usd("98.7654")));
    assert_eq!(applied(&outcome.results[2]), (4, usd("88.7654")));
    assert_eq!(outcome.account.balance_usd, usd("88.7654"));

    let account = assert_consistent(&*store, &id).await;
    assert_eq!(account, outcome.account, "the account reads back as the post returned it");
    let entries = all_entries(&*store, &id, EntryQuery::default()).await.unwrap();
    assert_eq!(entries.len(), 4);
    let second = &entries[1];
    assert_eq!(second.kind, EntryKind::Debit);
    assert_eq!(second.item, BillingItem::PhoneCall);
    assert_eq!(second.amount_usd, amount("1.2345"));
    assert_eq!(second.source_id, source("call-1"));
    assert_eq!(second.details, call.details);
    assert_eq!(second.posted_at, at(20));
    assert_eq!(second.occurred_at, at(0));
    assert_eq!(entries[0].kind, EntryKind::Credit);
    assert_eq!(entries[0].item, BillingItem::FundsAdded);
}

pub async fn a_redelivered_source_id_changes_nothing_and_says_so(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "redelivery", None).await;
    post(&*store, &id, vec![credit("pay-1", "20")], at(1)).await;
    let first = post(&*store, &id, vec![usage("evt-1", "2.5")], at(2)).await;
    assert_eq!(applied(&first.results[0]), (2, usd("17.5")));

    // The same id again is recognised and changes nothing.
    let again = post(&*store, &id, vec![usage("evt-1", "2.5")], at(3)).await;
    assert_eq!(again.results, vec![PostingResult::Duplicate { seq: 2 }]);
    assert_eq!(again.account.balance_usd, usd("17.5"));
    assert_eq!(again.account.version, first.account.version, "a no-op writes nothing");
    assert!(again.events.is_empty());
    // With another amount, item or kind, it changes nothing either, and says the id holds
    // another charge: what the store recorded is compared, not only the id.
    let reused = PostingResult::SourceIdReused {
        seq: 2,
        kind: EntryKind::Debit,
        item: BillingItem::PhoneCall,
        amount_usd: amount("2.5"),
    };
    for other in [usage("evt-1", "9"), purchase("evt-1", "2.5"), credit("evt-1", "2.5")] {
        let outcome = post(&*store, &id, vec![other], at(3)).await;
        assert_eq!(outcome.results, vec![reused.clone()]);
        assert_eq!(outcome.account.version, first.account.version, "a no-op writes nothing");
        assert!(outcome.events.is_empty());
    }

    // Source ids may contain the store's own key separators.
    let tricky = post(&*store, &id, vec![usage("pay#S#7", "1"), usage("7", "1")], at(4)).await;
    assert!(tricky.results.iter().all(|r| matches!(r, PostingResult::Applied { .. })));
    let tricky_again =
        post(&*store, &id, vec![usage("7", "1"), usage("pay#S#7", "1")], at(4)).await;
    assert_eq!(
        tricky_again.results,
        vec![PostingResult::Duplicate { seq: 4 }, PostingResult::Duplicate { seq: 3 }]
    );
    post(&*store, &id, vec![credit("refill", "2")], at(4)).await;

    let mixed = post(&*store, &id, vec![usage("evt-2", "1"), usage("evt-1", "2.5")], at(4)).await;
    assert_eq!(applied(&mixed.results[0]), (6, usd("16.5")));
    assert_eq!(mixed.results[1], PostingResult::Duplicate { seq: 2 });
    let account = assert_consistent(&*store, &id).await;
    assert_eq!(account.balance_usd, usd("16.5"));
    assert_eq!(account.last_seq, 6);
}

pub async fn duplicates_within_one_batch_apply_once(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "inbatch", None).await;
    let outcome = post(
        &*store,
        &id,
        vec![credit("pay", "5"), usage("e", "1"), usage("e", "1"), credit("pay", "5")],
        at(1),
    )
    .await;
    assert_eq!(applied(&outcome.results[0]), (1, usd("5")));
    assert_eq!(applied(&outcome.results[1]), (2, usd("4")));
    assert_eq!(outcome.results[2], PostingResult::Duplicate { seq: 2 });
    assert_eq!(outcome.results[3], PostingResult::Duplicate { seq: 1 });
    assert_eq!(assert_consistent(&*store, &id).await.balance_usd, usd("4"));
}

/// 8 tasks post 2,000 distinct entries to one account, with 500 more deliveries (a fifth) that
/// repeat a source id another task is delivering at about the same moment.
pub async fn concurrent_posting_with_duplicates_applies_each_source_id_once(
    store: Arc<dyn LedgerStore>,
) {
    const TASKS: usize = 8;
    const UNIQUE: usize = 2_000;
    const DUPLICATES: usize = 500;
    let id = open(&*store, "concurrent", None).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let uniques: Vec<Posting> = (0..UNIQUE)
        .map(|i| {
            let cents = rng.random_range(1..=100_000u32);
            let value = Decimal::new(i64::from(cents), 4).to_string();
            if i % 5 == 0 {
                credit(&format!("c-{i}"), &value)
            } else {
                usage(&format!("u-{i}"), &value)
            }
        })
        .collect();
    let expected: Decimal = uniques.iter().map(|p| p.kind.signed(p.amount_usd)).sum();

    let mut lanes: Vec<Vec<Posting>> = vec![Vec::new(); TASKS];
    for (i, posting) in uniques.iter().enumerate() {
        lanes[i % TASKS].push(posting.clone());
    }
    // Each duplicate goes to the next lane at the same position, so both copies race.
    let mut picks: Vec<usize> = (0..UNIQUE).collect();
    picks.shuffle(&mut rng);
    let mut extras: Vec<Vec<(usize, Posting)>> = vec![Vec::new(); TASKS];
    for &i in picks.iter().take(DUPLICATES) {
        extras[(i + 1) % TASKS].push((i / TASKS, uniques[i].clone()));
    }
    for (lane, mut extra) in lanes.iter_mut().zip(extras) {
        extra.sort_by_key(|(position, _)| std::cmp::Reverse(*position));
        for (position, posting) in extra {
            lane.insert(position.min(lane.len()), posting);
        }
    }
    assert_eq!(lanes.iter().map(Vec::len).sum::<usize>(), UNIQUE + DUPLICATES);

    let mut tasks = Vec::new();
    for (lane_number, lane) in lanes.into_iter().enumerate() {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(lane_number as u64);
            let mut results = Vec::new();
            let mut rest = lane.as_slice();
            while !rest.is_empty() {
                let take = rng.random_range(1..=16).min(rest.len());
                let (batch, tail) = rest.split_at(take);
                let outcome = post_retrying(&*store, &id, batch.to_vec()).await;
                results.extend(batch.iter().cloned().zip(outcome.results));
                rest = tail;
            }
            results
        }));
    }
    let mut applied_ids = HashSet::new();
    let mut duplicate_count = 0;
    for task in tasks {
        for (posting, result) in task.await.expect("task panicked") {
            match result {
                PostingResult::Applied { .. } => {
                    assert!(applied_ids.insert(posting.source_id), "applied twice")
                }
                PostingResult::Duplicate { .. } => duplicate_count += 1,
                PostingResult::Refused(reason) => panic!("usage is never refused: {reason:?}"),
                other => panic!("the same posting twice is a plain duplicate: {other:?}"),
            }
        }
    }
    assert_eq!(applied_ids.len(), UNIQUE);
    assert_eq!(duplicate_count, DUPLICATES);
    let account = assert_consistent(&*store, &id).await;
    assert_eq!(account.balance_usd, expected, "balance equals the sum of the unique entries");
    assert_eq!(account.last_seq, UNIQUE as u64);
}

/// Contention is a retryable outcome; the caller (a queue worker) retries the batch.
pub async fn post_retrying(
    store: &dyn LedgerStore,
    id: &AccountId,
    postings: Vec<Posting>,
) -> ledger::PostOutcome {
    for _ in 0..50 {
        match store.post(id, postings.clone(), Utc::now()).await {
            Ok(outcome) => return outcome,
            Err(error) if error.is_retryable() => {
                let pause = Duration::from_millis(rand::rng().random_range(1..20));
                tokio::time::sleep(pause).await
            }
            Err(error) => panic!("post failed: {error}"),
        }
    }
    panic!("post kept failing under contention");
}

pub async fn advance_purchases_are_refused_below_the_floor_and_usage_is_not(
    store: Arc<dyn LedgerStore>,
) {
    let id = open(&*store, "floor", None).await;
    post(&*store, &id, vec![credit("pay", "5")], at(1)).await;
    let refused = post(&*store, &id, vec![purchase("num-1", "5.0001")], at(2)).await;
    assert_eq!(
        refused.results,
        vec![PostingResult::Refused(Refusal::InsufficientBalance {
            balance_usd: usd("5"),
            floor_usd: Decimal::ZERO
        })]
    );
    assert_eq!(refused.account.last_seq, 1, "a refusal writes no entry");
    // ... but raises an event for the platform, in the outbox with the refusal (atomically).
    assert_eq!(event_kinds(&refused.events), vec!["purchase_refused"]);
    let pending = store.pending_events(100).await.unwrap();
    assert!(pending.contains(&refused.events[0]), "{pending:?}");
    let LedgerEventKind::PurchaseRefused { source_id, item, amount_usd, .. } =
        &refused.events[0].kind
    else {
        panic!("{:?}", refused.events[0]);
    };
    assert_eq!(
        (source_id.as_str(), *item, *amount_usd),
        ("num-1", BillingItem::PhoneNumber, amount("5.0001"))
    );
    assert_eq!(store.account(&id).await.unwrap().unwrap(), refused.account);

    let exact = post(&*store, &id, vec![purchase("num-2", "5")], at(3)).await;
    assert_eq!(applied(&exact.results[0]), (2, Decimal::ZERO));
    assert_eq!(exact.account.status, AccountStatus::Suspended);

    let call = post(&*store, &id, vec![usage("call", "1.5")], at(4)).await;
    assert_eq!(applied(&call.results[0]), (3, usd("-1.5")), "completed usage always posts");
    // A refused id is not remembered: once funded, the same purchase may go through.
    post(&*store, &id, vec![credit("pay-2", "10")], at(5)).await;
    let retried = post(&*store, &id, vec![purchase("num-1", "5.0001")], at(6)).await;
    assert_eq!(applied(&retried.results[0]), (5, usd("3.4999")));
    assert_consistent(&*store, &id).await;
}

pub async fn crossing_the_floor_suspends_and_a_credit_above_it_reactivates(
    store: Arc<dyn LedgerStore>,
) {
    let id = open(&*store, "crossing", None).await;
    let funded = post(&*store, &id, vec![credit("pay", "10")], at(1)).await;
    assert_eq!(event_kinds(&funded.events), vec!["reactivated"]);
    assert_eq!(funded.account.status, AccountStatus::Active);

    let down = post(&*store, &id, vec![usage("a", "9.99"), usage("b", "0.01")], at(2)).await;
    assert_eq!(down.account.balance_usd, Decimal::ZERO);
    assert_eq!(down.account.status, AccountStatus::Suspended, "at the floor is suspended");
    assert_eq!(event_kinds(&down.events), vec!["suspended"]);

    let deeper = post(&*store, &id, vec![usage("c", "1")], at(3)).await;
    assert!(deeper.events.is_empty(), "staying suspended raises nothing");
    let partial = post(&*store, &id, vec![credit("pay-2", "1")], at(4)).await;
    assert_eq!(partial.account.status, AccountStatus::Suspended);
    assert!(partial.events.is_empty());
    let up = post(&*store, &id, vec![credit("pay-3", "0.0001")], at(5)).await;
    assert_eq!(up.account.status, AccountStatus::Active);
    assert_eq!(event_kinds(&up.events), vec!["reactivated"]);
    assert_consistent(&*store, &id).await;
}

pub async fn postpaid_accounts_run_down_to_their_credit_limit(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "postpaid", Some("50")).await;
    let account = store.account(&id).await.unwrap().unwrap();
    assert_eq!(account.floor_usd(), usd("-50"));
    assert_eq!(account.status, AccountStatus::Active, "a fresh postpaid account can run");

    post(&*store, &id, vec![usage("a", "30")], at(1)).await;
    let refused = post(&*store, &id, vec![purchase("n", "20.0001")], at(2)).await;
    assert!(matches!(refused.results[0], PostingResult::Refused(_)));
    let limit = post(&*store, &id, vec![purchase("n", "20")], at(3)).await;
    assert_eq!(limit.account.balance_usd, usd("-50"));
    assert_eq!(limit.account.status, AccountStatus::Suspended);
    assert_eq!(event_kinds(&limit.events), vec!["suspended"]);

    // Raising the limit lifts the floor below the balance and reactivates.
    let raised = store
        .modify_account(
            &id,
            Arc::new(|a: &mut Account| {
                a.credit_limit_usd = Some(Amount::from_str("100")?);
                Ok(())
            }),
            at(4),
        )
        .await
        .unwrap();
    assert_eq!(raised.status, AccountStatus::Active);
    assert_eq!(raised.balance_usd, usd("-50"));
    let pending = store.pending_events(100).await.unwrap();
    assert!(pending.iter().any(|e| e.account_id == id && e.kind == LedgerEventKind::Reactivated));
    assert_consistent(&*store, &id).await;
}

pub async fn one_recharge_request_per_threshold_crossing(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "recharge", None).await;
    post(&*store, &id, vec![credit("pay", "20")], at(1)).await;
    store
        .modify_account(
            &id,
            Arc::new(|a: &mut Account| {
                a.recharge = Some(RechargeSettings::new(
                    true,
                    Amount::from_str("50")?,
                    Amount::from_str("15")?,
                    RechargeMode::TopUpTo,
                )?);
                Ok(())
            }),
            at(0),
        )
        .await
        .unwrap();
    assert!(
        store
            .pending_events(100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.account_id != id || e.kind.as_str() != "recharge_requested"),
        "$20 is above the threshold"
    );
    let at_threshold = post(&*store, &id, vec![usage("a", "5")], at(2)).await;
    assert!(at_threshold.events.is_empty(), "exactly at the threshold is not below it");

    let crossed = post(&*store, &id, vec![usage("b", "0.01")], at(3)).await;
    assert_eq!(crossed.account.balance_usd, usd("14.99"));
    let request_id = match &crossed.events[..] {
        [event] => match &event.kind {
            LedgerEventKind::RechargeRequested { request_id } => request_id.clone(),
            other => panic!("expected a recharge request, got {other:?}"),
        },
        other => panic!("expected one event, got {other:?}"),
    };
    assert_eq!(crossed.account.recharge_in_flight.as_deref(), Some(request_id.as_str()));

    let further = post(&*store, &id, vec![usage("c", "1"), usage("d", "1")], at(4)).await;
    assert!(further.events.is_empty(), "never again while one is in flight");

    let settled = post(&*store, &id, vec![credit(&request_id, "37.01")], at(5)).await;
    assert_eq!(settled.account.balance_usd, usd("50"));
    assert_eq!(settled.account.recharge_in_flight, None);
    assert!(settled.events.is_empty());

    let again = post(&*store, &id, vec![usage("e", "40")], at(6)).await;
    assert_eq!(event_kinds(&again.events), vec!["recharge_requested"]);
    let pending: Vec<_> = store
        .pending_events(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.account_id == id && e.kind.as_str() == "recharge_requested")
        .collect();
    assert_eq!(pending.len(), 2, "one request per crossing reached the outbox");
    assert_consistent(&*store, &id).await;
}

pub async fn activity_filters_by_utc_range_and_kind_with_a_cursor(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "activity", None).await;
    let day = 86_400;
    let mut expected_times = Vec::new();
    // 30 entries over 5 days, in several posts; every third is a credit.
    for i in 0..30i64 {
        let when = at(i * day / 6 + 1);
        let posting =
            if i % 3 == 0 { credit(&format!("c{i}"), "3") } else { usage(&format!("u{i}"), "1") };
        post(&*store, &id, vec![posting], when).await;
        expected_times.push((i, when));
    }
    let everything = all_entries(&*store, &id, EntryQuery::default()).await.unwrap();
    assert_eq!(everything.len(), 30);

    let from = at(day);
    let to = at(3 * day);
    for show in [Show::All, Show::Debits, Show::Credits] {
        let expected: Vec<u64> = everything
            .iter()
            .filter(|e| e.posted_at >= from && e.posted_at < to && show.admits(e.kind))
            .map(|e| e.seq)
            .collect();
        assert!(!expected.is_empty());
        for limit in [1u32, 2, 5, 500] {
            let mut query =
                EntryQuery { from: Some(from), to: Some(to), show, cursor: None, limit };
            let mut seen = Vec::new();
            for _ in 0..100 {
                let page = store.entries(&id, &query).await.unwrap();
                assert!(page.entries.len() <= limit as usize);
                seen.extend(page.entries.iter().map(|e| e.seq));
                match page.next_cursor {
                    Some(cursor) => query.cursor = Some(cursor),
                    None => break,
                }
            }
            assert_eq!(seen, expected, "show {show:?} limit {limit}");
        }
    }
    // `to` is exclusive and `from` inclusive, to the microsecond.
    let exact = everything[7].posted_at;
    let query = EntryQuery { from: Some(exact), to: Some(exact), limit: 10, ..Default::default() };
    assert!(store.entries(&id, &query).await.unwrap().entries.is_empty());
    let query = EntryQuery {
        from: Some(exact),
        to: Some(exact + chrono::Duration::microseconds(1)),
        limit: 10,
        ..Default::default()
    };
    let page = store.entries(&id, &query).await.unwrap();
    assert_eq!(page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8]);
}

pub async fn settings_changes_never_touch_the_balance(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "settings", None).await;
    post(&*store, &id, vec![credit("pay", "7")], at(1)).await;
    let before = store.account(&id).await.unwrap().unwrap();
    let sneaky = store
        .modify_account(
            &id,
            Arc::new(|a: &mut Account| {
                a.balance_usd += Decimal::ONE_HUNDRED;
                Ok(())
            }),
            at(2),
        )
        .await;
    assert!(matches!(sneaky, Err(StoreError::Rejected(LedgerError::BalanceFieldsAreLedgerOnly))));
    assert_eq!(store.account(&id).await.unwrap().unwrap(), before, "nothing changed");

    let failing = store
        .modify_account(
            &id,
            Arc::new(|_: &mut Account| Err(LedgerError::Amount(ledger::AmountError::TooLarge))),
            at(2),
        )
        .await;
    assert!(matches!(failing, Err(StoreError::Rejected(_))));
    assert_eq!(store.account(&id).await.unwrap().unwrap(), before, "nothing changed");

    let changed = store
        .modify_account(
            &id,
            Arc::new(|a: &mut Account| {
                a.low_balance_usd = Some(Amount::from_str("5")?);
                Ok(())
            }),
            at(3),
        )
        .await
        .unwrap();
    assert_eq!(changed.version, before.version + 1);
    assert_eq!(changed.balance_usd, before.balance_usd);
    assert_eq!(store.account(&id).await.unwrap().unwrap(), changed);
    let low = post(&*store, &id, vec![usage("a", "2.0001")], at(4)).await;
    assert_eq!(event_kinds(&low.events), vec!["low_balance"]);
}

pub async fn outbox_events_stay_pending_until_acknowledged(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "outbox", None).await;
    post(&*store, &id, vec![credit("pay", "1")], at(1)).await;
    let down = post(&*store, &id, vec![usage("a", "1")], at(2)).await;
    let suspended = down.events[0].clone();
    let pending = store.pending_events(100).await.unwrap();
    assert!(pending.contains(&suspended));
    assert_eq!(pending.iter().filter(|e| e.account_id == id).count(), 2);

    store.ack_event(&suspended).await.unwrap();
    store.ack_event(&suspended).await.unwrap();
    let pending = store.pending_events(100).await.unwrap();
    assert!(!pending.contains(&suspended));
    assert_eq!(pending.iter().filter(|e| e.account_id == id).count(), 1);
}

pub async fn the_outbox_reads_in_pages_after_a_position_and_acknowledges_in_batches(
    store: Arc<dyn LedgerStore>,
) {
    // Each account's first credit reactivates it: one event each, at distinct times.
    for (index, name) in ["ob-a", "ob-b", "ob-c", "ob-d", "ob-e"].into_iter().enumerate() {
        let id = open(&*store, name, None).await;
        post(&*store, &id, vec![credit("pay", "1")], at(index as i64 + 1)).await;
    }
    let all = store.pending_events(100).await.unwrap();
    assert_eq!(all.len(), 5, "{all:?}");

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let page = store.outbox_page(after.as_deref(), 2).await.unwrap();
        assert!(page.unreadable.is_empty(), "{:?}", page.unreadable);
        sizes.push(page.events.len());
        if let Some(next) = &page.next_after {
            assert_eq!(next, &ledger::store::outbox_position(page.events.last().unwrap()));
        }
        paged.extend(page.events);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(paged, all, "pages in outbox order, each event once");

    store.ack_events(&all[..3]).await.unwrap();
    store.ack_events(&all[..3]).await.unwrap();
    assert_eq!(store.pending_events(100).await.unwrap(), all[3..].to_vec());
    let last = ledger::store::outbox_position(&all[4]);
    let past_the_end = store.outbox_page(Some(&last), 10).await.unwrap();
    assert_eq!(past_the_end, ledger::OutboxPage::default());
    assert!(matches!(
        store.outbox_page(Some("not-a-position"), 10).await,
        Err(StoreError::Rejected(ledger::LedgerError::BadCursor))
    ));
}

pub async fn unknown_accounts_and_duplicate_creation_are_typed_errors(store: Arc<dyn LedgerStore>) {
    let ghost = account_id("ghost");
    assert_eq!(store.account(&ghost).await.unwrap(), None);
    assert!(matches!(
        store.post(&ghost, vec![usage("a", "1")], at(1)).await,
        Err(StoreError::AccountNotFound(_))
    ));
    assert!(matches!(
        store.entries(&ghost, &EntryQuery { limit: 10, ..Default::default() }).await,
        Err(StoreError::AccountNotFound(_))
    ));
    assert!(matches!(
        store.modify_account(&ghost, Arc::new(|_: &mut Account| Ok(())), at(1)).await,
        Err(StoreError::AccountNotFound(_))
    ));
    let id = open(&*store, "twice", None).await;
    post(&*store, &id, vec![credit("pay", "3")], at(1)).await;
    let again = store.create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, at(2));
    assert!(matches!(again.await, Err(StoreError::AccountExists(_))));
    assert_eq!(assert_consistent(&*store, &id).await.balance_usd, usd("3"), "untouched");
}

pub async fn bad_queries_are_rejected_and_change_nothing(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "badinput", None).await;
    post(&*store, &id, vec![credit("pay", "3")], at(1)).await;
    let before = store.account(&id).await.unwrap().unwrap();
    for query in [
        EntryQuery { limit: 0, ..Default::default() },
        EntryQuery { limit: 501, ..Default::default() },
        EntryQuery { limit: 5, cursor: Some("not-a-cursor".into()), ..Default::default() },
    ] {
        assert!(matches!(store.entries(&id, &query).await, Err(StoreError::Rejected(_))));
    }
    let too_many: Vec<Posting> = (0..=ledger::posting::MAX_POSTINGS_PER_CALL)
        .map(|i| usage(&format!("x{i}"), "1"))
        .collect();
    assert!(matches!(
        store.post(&id, too_many, at(2)).await,
        Err(StoreError::Rejected(LedgerError::BatchTooLarge { .. }))
    ));
    assert_eq!(store.account(&id).await.unwrap().unwrap(), before);
}

/// Postings whose futures are dropped at random moments (a Lambda timeout, a client gone) leave
/// either all or nothing of each batch, and redelivering everything afterwards lands each
/// source id exactly once.
pub async fn interrupted_postings_leave_nothing_half_applied(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "interrupted", None).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let batches: Vec<Vec<Posting>> = (0..40)
        .map(|b| {
            (0..rng.random_range(1..=12))
                .map(|i| {
                    usage(&format!("b{b}-{i}"), &format!("0.{:04}", rng.random_range(1..9999)))
                })
                .collect()
        })
        .collect();
    for batch in &batches {
        let budget = Duration::from_micros(rng.random_range(0..15_000));
        let _ = tokio::time::timeout(budget, store.post(&id, batch.clone(), Utc::now())).await;
        assert_consistent(&*store, &id).await;
        let (account, entries) = snapshot(&*store, &id).await;
        // Whole batches only: every batch is either fully present or fully absent.
        let present: HashSet<_> = entries.iter().map(|e| e.source_id.clone()).collect();
        for earlier in &batches {
            let count = earlier.iter().filter(|p| present.contains(&p.source_id)).count();
            assert!(count == 0 || count == earlier.len(), "a batch was half applied");
        }
        assert_eq!(account.last_seq as usize, entries.len());
    }
    // Let any write still in flight (a blocking task, an unacknowledged request) settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for batch in &batches {
        post_retrying(&*store, &id, batch.clone()).await;
    }
    let expected: Decimal = batches.iter().flatten().map(|p| -p.amount_usd.value()).sum();
    let account = assert_consistent(&*store, &id).await;
    assert_eq!(account.balance_usd, expected);
    assert_eq!(account.last_seq as usize, batches.iter().map(Vec::len).sum::<usize>());
}

pub async fn accounts_are_isolated_from_each_other(store: Arc<dyn LedgerStore>) {
    let a = open(&*store, "alice", None).await;
    let b = open(&*store, "bob", None).await;
    post(&*store, &a, vec![credit("same-id", "10")], at(1)).await;
    let for_b = post(&*store, &b, vec![credit("same-id", "4")], at(1)).await;
    assert_eq!(applied(&for_b.results[0]), (1, usd("4")), "source ids are per account");
    let entries_b = all_entries(&*store, &b, EntryQuery::default()).await.unwrap();
    assert_eq!(entries_b.len(), 1);
    assert!(entries_b.iter().all(|e| e.account_id == b));
    assert_eq!(assert_consistent(&*store, &a).await.balance_usd, usd("10"));
    assert_eq!(assert_consistent(&*store, &b).await.balance_usd, usd("4"));
}

/// A posting source that, like the rating engine, uses 60 plan seconds per new event.
struct PlanMinutes(Vec<String>);

impl ledger::PostingSource for PlanMinutes {
    fn candidate_source_ids(&self) -> Vec<SourceId> {
        self.0.iter().map(|s| source(s)).collect()
    }

    fn postings(
        &self,
        account: &Account,
        already_applied: &std::collections::HashMap<SourceId, ledger::AppliedEntry>,
    ) -> Result<(Vec<Posting>, ledger::PlanUsage), LedgerError> {
        let mut plan = account.plan_usage.clone();
        plan.month = Some(m("2026-11"));
        let mut seen = HashSet::new();
        let mut postings = Vec::new();
        for id in &self.0 {
            let sid = source(id);
            if !already_applied.contains_key(&sid) && seen.insert(sid.clone()) {
                plan.included_seconds_used += 60;
            }
            postings.push(usage(id, "0.01"));
        }
        Ok((postings, plan))
    }
}

pub async fn plan_usage_changes_with_its_postings_exactly_once(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "plan", None).await;
    let first = PlanMinutes(vec!["c1".into(), "c2".into(), "c1".into()]);
    let outcome = store.post_with(&id, Arc::new(first), at(1)).await.unwrap();
    assert_eq!(outcome.account.plan_usage.included_seconds_used, 120);
    let again = PlanMinutes(vec!["c2".into(), "c1".into()]);
    let outcome = store.post_with(&id, Arc::new(again), at(2)).await.unwrap();
    assert_eq!(outcome.account.plan_usage.included_seconds_used, 120, "redelivery uses nothing");

    // Concurrent deliveries of overlapping events use each event's seconds once.
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let events = (0..5).map(|i| format!("e{}", (lane + round + i) % 30)).collect();
                let source: Arc<dyn ledger::PostingSource> = Arc::new(PlanMinutes(events));
                for _ in 0..50 {
                    match store.post_with(&id, source.clone(), Utc::now()).await {
                        Ok(_) => break,
                        Err(error) if error.is_retryable() => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        Err(error) => panic!("post failed: {error}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let account = assert_consistent(&*store, &id).await;
    assert_eq!(account.plan_usage.included_seconds_used, 60 * account.last_seq);
    assert_eq!(account.plan_usage, store.account(&id).await.unwrap().unwrap().plan_usage);
}

/// A month written `YYYY-MM`.
pub fn m(text: &str) -> Month {
    text.parse().expect("YYYY-MM")
}

/// `count` consecutive months from `first` (`YYYY-MM`).
pub fn months(first: &str, count: usize) -> Vec<Month> {
    std::iter::successors(Some(m(first)), |month| Some(month.next())).take(count).collect()
}

/// Month totals computed the slow way, from every entry.
pub fn month_totals_of(entries: &[ledger::Entry], month: Month) -> MonthTotals {
    let mut totals = MonthTotals::empty(month);
    for entry in entries.iter().filter(|e| month.contains(e.posted_at)) {
        totals.add(entry);
    }
    totals
}

pub async fn month_totals_add_up_each_months_entries_and_close_once(store: Arc<dyn LedgerStore>) {
    let id = open(&*store, "months", None).await;
    let oct = |day: u32| Utc.with_ymd_and_hms(2026, 10, day, 12, 0, 0).unwrap();
    let usage = |name: &str, item: BillingItem, value: &str| {
        Posting::usage(source(name), item, amount(value), oct(1)).unwrap()
    };
    let credit = |name: &str, item: BillingItem, value: &str| {
        Posting::credit(source(name), item, amount(value), oct(1)).unwrap()
    };
    post(&*store, &id, vec![credit("pay1", BillingItem::FundsAdded, "100")], oct(1)).await;
    post(
        &*store,
        &id,
        vec![
            usage("call1", BillingItem::PhoneCall, "1.2345"),
            credit("call1#included", BillingItem::IncludedMinutes, "0.5"),
            usage("sms1", BillingItem::OutgoingSms, "0.0075"),
        ],
        oct(2),
    )
    .await;
    post(&*store, &id, vec![usage("call2", BillingItem::PhoneCall, "2")], oct(31)).await;
    let october = store.month_totals(&id, m("2026-10")).await.unwrap();
    assert_eq!(october.month.to_string(), "2026-10");
    assert_eq!(october.net(BillingItem::PhoneCall), usd("3.2345"));
    assert_eq!(october.net(BillingItem::IncludedMinutes), usd("-0.5"));
    assert_eq!(october.net(BillingItem::OutgoingSms), usd("0.0075"));
    assert_eq!(october.net(BillingItem::FundsAdded), usd("-100"));
    assert_eq!(october.net(BillingItem::SalesTax), Decimal::ZERO);

    // December opens a new month (November has none); October is closed and stays exact.
    let dec = Utc.with_ymd_and_hms(2026, 12, 3, 0, 0, 0).unwrap();
    post(&*store, &id, vec![usage("num1", BillingItem::PhoneNumber, "1.15")], dec).await;
    // A redelivery of an October event in December changes no month.
    let again = post(&*store, &id, vec![usage("call2", BillingItem::PhoneCall, "2")], dec).await;
    assert!(matches!(again.results[0], PostingResult::Duplicate { .. }));
    post(&*store, &id, vec![usage("tax:2026-10", BillingItem::SalesTax, "0.23")], dec).await;
    assert_eq!(store.month_totals(&id, m("2026-10")).await.unwrap(), october);
    assert_eq!(
        store.month_totals(&id, m("2026-11")).await.unwrap(),
        MonthTotals::empty(m("2026-11"))
    );
    let december = store.month_totals(&id, m("2026-12")).await.unwrap();
    assert_eq!(december.net(BillingItem::PhoneNumber), usd("1.15"));
    assert_eq!(december.net(BillingItem::SalesTax), usd("0.23"));
    assert_eq!(december.net(BillingItem::PhoneCall), Decimal::ZERO);
    assert_eq!(
        store.month_totals(&id, m("2027-01")).await.unwrap(),
        MonthTotals::empty(m("2027-01"))
    );
    assert_eq!(
        store.month_totals(&id, m("2026-09")).await.unwrap(),
        MonthTotals::empty(m("2026-09"))
    );

    // Every month agrees with the slow way.
    let (_, entries) = snapshot(&*store, &id).await;
    for month in months("2026-09", 6) {
        assert_eq!(store.month_totals(&id, month).await.unwrap(), month_totals_of(&entries, month));
    }
    // A month that is not `YYYY-MM` cannot be asked for: it does not parse.
    assert!("2026-13".parse::<Month>().is_err());
    assert!(matches!(
        store.month_totals(&account_id("nobody"), m("2026-10")).await,
        Err(StoreError::AccountNotFound(_))
    ));
}

pub async fn account_ids_list_every_account_in_order(store: Arc<dyn LedgerStore>) {
    let mut expected: Vec<AccountId> = Vec::new();
    for name in ["acct-c", "acct-a", "acct-e", "acct-b", "acct-d"] {
        expected.push(open(&*store, name, None).await);
    }
    expected.sort();
    let mut listed = Vec::new();
    let mut after: Option<AccountId> = None;
    loop {
        let page = store.account_ids(after.as_ref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        listed.extend(page);
    }
    assert_eq!(listed, expected, "every account once, ascending");
    let rest = store.account_ids(Some(&account_id("acct-b")), 500).await.unwrap();
    assert_eq!(rest, expected[2..].to_vec());
    assert!(matches!(
        store.account_ids(None, 0).await,
        Err(StoreError::Rejected(LedgerError::BadPageSize { .. }))
    ));
}

/// A card the processor attached, as the profile keeps it: the primary.
pub fn primary_card(card: payments::CardDetails) -> documents::profile::StoredCard {
    documents::profile::StoredCard {
        kind: Default::default(),
        verified: true,
        id: card.payment_method_id,
        brand: card.brand,
        last4: card.last4,
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        role: documents::profile::CardRole::Primary,
        card_manager_email: "billing@example.com".to_string().try_into().unwrap(),
        added_at: chrono::Utc::now(),
    }
}
