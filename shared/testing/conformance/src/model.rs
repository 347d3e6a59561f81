//! Random histories of payments, usage, purchases and duplicates, checked against a plain model.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::Decimal;

use ledger::store::all_entries;
use ledger::{
    AccountStatus, Amount, BillingItem, EntryQuery, LedgerStore, Posting, PostingResult, SourceId,
};

use crate::cases::{assert_consistent, at, open};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Usage,
    Purchase,
    Credit,
}

#[derive(Debug, Clone)]
struct Op {
    kind: Kind,
    /// Drawn from a small space so duplicates are common.
    source: u8,
    ten_thousandths: i64,
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![Just(Kind::Usage), Just(Kind::Purchase), Just(Kind::Credit)],
        0u8..40,
        prop_oneof![1i64..100, 1i64..1_000_000, Just(10_000i64)],
    )
        .prop_map(|(kind, source, ten_thousandths)| Op { kind, source, ten_thousandths })
}

fn history() -> impl Strategy<Value = (Option<i64>, Vec<Vec<Op>>)> {
    (
        prop_oneof![Just(None), (1i64..200).prop_map(Some)],
        prop::collection::vec(prop::collection::vec(op(), 1..8), 1..10),
    )
}

fn to_posting(op: &Op) -> Posting {
    let source = SourceId::parse(format!("s{}", op.source)).unwrap();
    let amount = Amount::new(Decimal::new(op.ten_thousandths, 4)).unwrap();
    match op.kind {
        Kind::Usage => Posting::usage(source, BillingItem::PhoneCall, amount, at(0)),
        Kind::Purchase => Posting::purchase(source, BillingItem::PhoneNumber, amount, at(0)),
        Kind::Credit => Posting::credit(source, BillingItem::FundsAdded, amount, at(0)),
    }
    .unwrap()
}

/// The model: a balance, a floor, and the set of source ids already applied.
struct Model {
    balance: Decimal,
    floor: Decimal,
    /// Source id to the entry that applied it: its seq and the posting it was.
    applied: HashMap<u8, (u64, Posting)>,
    seq: u64,
}

impl Model {
    fn step(&mut self, op: &Op) -> PostingResult {
        if let Some((seq, earlier)) = self.applied.get(&op.source) {
            let posting = to_posting(op);
            let same = (posting.kind, posting.item, posting.amount_usd)
                == (earlier.kind, earlier.item, earlier.amount_usd);
            return if same {
                PostingResult::Duplicate { seq: *seq }
            } else {
                PostingResult::SourceIdReused {
                    seq: *seq,
                    kind: earlier.kind,
                    item: earlier.item,
                    amount_usd: earlier.amount_usd,
                }
            };
        }
        let amount = Decimal::new(op.ten_thousandths, 4);
        let next = match op.kind {
            Kind::Credit => self.balance + amount,
            Kind::Usage | Kind::Purchase => self.balance - amount,
        };
        if matches!(op.kind, Kind::Purchase) && next < self.floor {
            return PostingResult::Refused(ledger::Refusal::InsufficientBalance {
                balance_usd: self.balance,
                floor_usd: self.floor,
            });
        }
        self.seq += 1;
        self.balance = next;
        self.applied.insert(op.source, (self.seq, to_posting(op)));
        PostingResult::Applied { seq: self.seq, balance_after_usd: next }
    }
}

async fn check(
    store: Arc<dyn LedgerStore>,
    name: String,
    credit_limit: Option<i64>,
    batches: Vec<Vec<Op>>,
) -> Result<(), TestCaseError> {
    let limit = credit_limit.map(|l| l.to_string());
    let id = open(&*store, &name, limit.as_deref()).await;
    let mut model = Model {
        balance: Decimal::ZERO,
        floor: credit_limit.map(|l| -Decimal::from(l)).unwrap_or_default(),
        applied: HashMap::new(),
        seq: 0,
    };
    for (number, batch) in batches.iter().enumerate() {
        let postings: Vec<Posting> = batch.iter().map(to_posting).collect();
        let before = model.balance;
        let outcome = store
            // Batches spread over months (some months skipped) so month totals close and skip.
            .post(&id, postings, at((number * number) as i64 * 5 * 86_400))
            .await
            .map_err(|e| TestCaseError::fail(format!("post failed: {e}")))?;
        let expected: Vec<PostingResult> = batch.iter().map(|op| model.step(op)).collect();
        prop_assert_eq!(&outcome.results, &expected);
        prop_assert_eq!(outcome.account.balance_usd, model.balance);
        let status = if model.balance > model.floor {
            AccountStatus::Active
        } else {
            AccountStatus::Suspended
        };
        prop_assert_eq!(outcome.account.status, status);
        let was_active = before > model.floor;
        let is_active = model.balance > model.floor;
        let kinds: Vec<&str> = outcome.events.iter().map(|e| e.kind.as_str()).collect();
        let mut expected_kinds: Vec<&str> = match (was_active, is_active) {
            (true, false) => vec!["suspended"],
            (false, true) => vec!["reactivated"],
            _ => vec![],
        };
        // Then one refusal event per refused source id.
        let mut refused_sources = std::collections::HashSet::new();
        for (op, result) in batch.iter().zip(&expected) {
            if matches!(result, PostingResult::Refused(_)) && refused_sources.insert(op.source) {
                expected_kinds.push("purchase_refused");
            }
        }
        prop_assert_eq!(kinds, expected_kinds);
    }
    let account = assert_consistent(&*store, &id).await;
    prop_assert_eq!(account.balance_usd, model.balance);
    prop_assert_eq!(account.last_seq, model.seq);
    let entries = all_entries(&*store, &id, EntryQuery::default()).await.unwrap();
    for (source, (seq, _)) in &model.applied {
        let entry = &entries[(*seq - 1) as usize];
        prop_assert_eq!(entry.source_id.as_str(), format!("s{source}"));
    }
    for month in crate::cases::months("2026-10", 16) {
        let expected = crate::cases::month_totals_of(&entries, month);
        let stored = store
            .month_totals(&id, month)
            .await
            .map_err(|e| TestCaseError::fail(format!("month totals failed: {e}")))?;
        prop_assert_eq!(stored, expected, "month {}", month);
    }
    Ok(())
}

/// Runs `cases` random histories, each on a fresh account of one store made by `factory`.
pub fn random_histories_match_a_plain_model<F, Fut>(factory: F, cases: u32)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LedgerStore>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = runtime.block_on(factory());
    let counter = AtomicU64::new(0);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    runner
        .run(&history(), |(credit_limit, batches)| {
            let name = format!("model-{}", counter.fetch_add(1, Ordering::Relaxed));
            runtime.block_on(check(store.clone(), name, credit_limit, batches))
        })
        .unwrap();
}
