//! A plan period charged to the card (issue 15, opt-in direct charge) on every store: the
//! daily sweep lists the period as a pending payment, and its `PaymentPending` events
//! (duplicated, as SQS would) charge it once — on the primary, on the backup when the primary
//! declines, and after three failed attempts from the balance — with the balance untouched
//! whenever a card pays.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use documents::payment::{PaymentRecord, PaymentStatus, Trigger};
use documents::plan::{Plan, PlanPeriod, PlanTerms};
use documents::profile::CardRole;
use documents::Store;
use ledger::docs::DocKind;
use ledger::{AccountId, BillingItem, EntryKind, LedgerEventKind, LedgerStore, Posting};
use notifications::notice::{Notice, NoticeKind, NoticeSink};
use payment_flow::{reconcile_pending_payment, PaymentPorts, Reconciled};
use payments::{CardProcessor, ChargeFault, SimulatedProcessor};
use rust_decimal::Decimal;

use crate::cases::{amount, open, primary_card, source, usd};

/// Notices kept in memory.
#[derive(Default)]
struct Kept(Mutex<Vec<Notice>>);

#[async_trait::async_trait]
impl NoticeSink for Kept {
    async fn publish(
        &self,
        notice: &Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(notice.clone());
        Ok(())
    }
}

struct Rig {
    store: Arc<dyn Store>,
    processor: SimulatedProcessor,
    notices: Kept,
    id: AccountId,
    start: NaiveDate,
}

impl Rig {
    /// An account with $100, a $29 monthly plan with direct charge starting today, and the
    /// given cards (test tokens), the first the primary.
    async fn new(store: Arc<dyn Store>, name: &str, tokens: &[&str]) -> Rig {
        let id = open(&*store as &dyn LedgerStore, name, None).await;
        let ledger: &dyn LedgerStore = &*store;
        let funds =
            Posting::credit(source("opening"), BillingItem::FundsAdded, amount("100"), Utc::now())
                .unwrap();
        ledger.post(&id, vec![funds], Utc::now()).await.unwrap();
        let processor = SimulatedProcessor::new();
        let customer = processor.create_customer(id.as_str(), None).await.unwrap();
        let mut cards = Vec::new();
        for (n, token) in tokens.iter().enumerate() {
            let mut card = primary_card(processor.attach_card(&customer, token).await.unwrap());
            if n > 0 {
                card.role = CardRole::Backup;
                card.added_at += Duration::seconds(n as i64);
            }
            cards.push(card);
        }
        let start = Utc::now().date_naive();
        let terms =
            PlanTerms { name: "Pro".into(), price_usd: amount("29"), period: PlanPeriod::Monthly };
        documents::profile::update(&*store, &id, |p| {
            p.processor_customer_id = Some(customer.as_str().to_string());
            p.cards = cards.clone();
            let mut plan = Plan::starting(terms.clone(), start);
            plan.direct_charge = true;
            p.plan = Some(plan);
            Ok(())
        })
        .await
        .unwrap();
        Rig { store, processor, notices: Kept::default(), id, start }
    }

    fn ports(&self) -> PaymentPorts<'_> {
        PaymentPorts {
            store: &*self.store,
            processor: &self.processor,
            notices: Some(&self.notices),
        }
    }

    /// The daily sweep: lists the due period as a pending payment (charges nothing itself).
    async fn sweep(&self) {
        let charged =
            jobs::plans::renew(&*self.store, &*self.store, &self.id, self.start).await.unwrap();
        assert_eq!(charged, 0, "a direct-charge plan is not debited by the sweep");
    }

    /// Deliver the account's `PaymentPending` events twice each at `now`, as a redelivering
    /// queue would: the last answer.
    async fn deliver(&self, now: DateTime<Utc>) -> Reconciled {
        let ledger: &dyn LedgerStore = &*self.store;
        let events = ledger.pending_events(500).await.unwrap();
        let mut keys: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.kind {
                LedgerEventKind::PaymentPending { key } if e.account_id == self.id => {
                    Some(key.clone())
                }
                _ => None,
            })
            .collect();
        // Also what is still listed (its event acknowledged before, redelivered by the queue).
        let account = ledger.account(&self.id).await.unwrap().unwrap();
        keys.extend(account.pending_payments.clone());
        keys.sort();
        keys.dedup();
        let mut last = Reconciled::Final;
        for key in keys {
            for _ in 0..2 {
                last = reconcile_pending_payment(&self.ports(), &self.id, &key, now).await.unwrap();
            }
        }
        last
    }

    async fn balance(&self) -> Decimal {
        let ledger: &dyn LedgerStore = &*self.store;
        ledger.account(&self.id).await.unwrap().unwrap().balance_usd
    }

    async fn plan(&self) -> Plan {
        documents::profile::load(&*self.store, &self.id).await.unwrap().0.plan.unwrap()
    }

    /// The `plan_fee` entries' source ids and the `plan` trigger's credits.
    async fn entries(&self) -> (Vec<String>, Vec<Decimal>) {
        let ledger: &dyn LedgerStore = &*self.store;
        let entries = ledger::store::all_entries(ledger, &self.id, ledger::EntryQuery::default())
            .await
            .unwrap();
        let fees = entries
            .iter()
            .filter(|e| e.item == BillingItem::PlanFee && e.kind == EntryKind::Debit)
            .map(|e| e.source_id.to_string())
            .collect();
        let credits = entries
            .iter()
            .filter(|e| e.details.get("trigger").and_then(|t| t.as_str()) == Some("plan"))
            .map(|e| e.amount_usd.value())
            .collect();
        (fees, credits)
    }

    async fn payments(&self) -> Vec<PaymentRecord> {
        let docs = self
            .store
            .list_docs(&self.id, DocKind::Payment, None, ledger::docs::MAX_DOCS_PER_LIST)
            .await
            .unwrap();
        docs.iter().map(|d| serde_json::from_str(&d.body).unwrap()).collect()
    }

    fn failure_notices(&self) -> Vec<(u32, bool)> {
        let mut seen: Vec<(u32, bool)> = self
            .notices
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|n| match &n.kind {
                NoticeKind::PlanChargeFailed { attempt, next_attempt_at, .. } => {
                    Some((*attempt, next_attempt_at.is_none()))
                }
                _ => None,
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }
}

/// The primary pays the period once: the balance does not move, the fee is on the ledger with
/// the payment's credit beside it, the plan moves on, and redelivery changes nothing.
pub async fn a_direct_plan_period_is_charged_to_the_card_once(store: Arc<dyn Store>) {
    let rig = Rig::new(store, "plan-direct-once", &["pm_card_visa"]).await;
    rig.sweep().await;
    rig.sweep().await;
    assert_eq!(rig.deliver(Utc::now()).await, Reconciled::Final);
    assert_eq!(rig.deliver(Utc::now()).await, Reconciled::Final);
    assert_eq!(rig.balance().await, usd("100"), "a card-paid plan never touches the balance");
    let (fees, credits) = rig.entries().await;
    assert_eq!(fees, vec![documents::plan::fee_source_id(rig.start)]);
    assert_eq!(credits, vec![usd("29")]);
    assert_eq!(rig.processor.successful_charges(&rig.processor_card(0).await), 1);
    let payments = rig.payments().await;
    assert_eq!(payments.len(), 1);
    assert_eq!(
        (payments[0].trigger, payments[0].status),
        (Trigger::Plan, PaymentStatus::Succeeded)
    );
    let plan = rig.plan().await;
    assert!(plan.next_renewal > rig.start && plan.direct_attempts.is_none());
    let ledger: &dyn LedgerStore = &*rig.store;
    assert!(ledger.account(&rig.id).await.unwrap().unwrap().pending_payments.is_empty());
    assert!(rig.notices.0.lock().unwrap().iter().any(|n| n.kind.as_str() == "payment_receipt"));
}

/// A declined primary falls through to the backup in the same attempt.
pub async fn a_declined_primary_falls_through_to_the_backup(store: Arc<dyn Store>) {
    let rig =
        Rig::new(store, "plan-direct-backup", &["pm_card_chargeDeclined", "pm_card_mastercard"])
            .await;
    rig.sweep().await;
    assert_eq!(rig.deliver(Utc::now()).await, Reconciled::Final);
    assert_eq!(rig.balance().await, usd("100"));
    let (fees, credits) = rig.entries().await;
    assert_eq!((fees.len(), credits), (1, vec![usd("29")]));
    assert_eq!(rig.processor.successful_charges(&rig.processor_card(1).await), 1);
    assert!(rig.failure_notices().is_empty(), "one card paid: no failure notice");
}

/// Every card declining: a notice per attempt, waits of 1 h and 6 h, and after the third
/// attempt the fee is taken from the balance once; nothing was charged to a card.
pub async fn a_period_every_card_declines_is_paid_from_the_balance_after_three_attempts(
    store: Arc<dyn Store>,
) {
    let rig = Rig::new(
        store,
        "plan-direct-declines",
        &["pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"],
    )
    .await;
    rig.sweep().await;
    let now = Utc::now();
    let first = rig.deliver(now).await;
    assert_eq!(
        first,
        Reconciled::NotYet(rig.plan().await.direct_attempts.unwrap().next_attempt_at)
    );
    // Too early: nothing is tried again.
    assert!(matches!(rig.deliver(now + Duration::minutes(30)).await, Reconciled::NotYet(_)));
    assert_eq!(rig.failure_notices(), vec![(1, false)]);
    assert!(matches!(rig.deliver(now + Duration::hours(1)).await, Reconciled::NotYet(_)));
    assert_eq!(rig.plan().await.direct_attempts.unwrap().failed, 2);
    assert_eq!(rig.balance().await, usd("100"));
    assert_eq!(rig.deliver(now + Duration::hours(8)).await, Reconciled::Final);
    assert_eq!(rig.deliver(now + Duration::hours(9)).await, Reconciled::Final);
    assert_eq!(rig.failure_notices(), vec![(1, false), (2, false), (3, true)]);
    assert_eq!(rig.balance().await, usd("71"), "the fee came from the balance, once");
    let (fees, credits) = rig.entries().await;
    assert_eq!((fees.len(), credits.len()), (1, 0));
    assert!(rig.processor.succeeded_payments().is_empty());
    let plan = rig.plan().await;
    assert!(plan.next_renewal > rig.start && plan.direct_attempts.is_none());
}

/// An answer lost on the way back: the period waits for that card's outcome (no backup is
/// tried meanwhile) and is paid once when the payment is looked up.
pub async fn an_unknown_direct_charge_outcome_pays_the_period_once(store: Arc<dyn Store>) {
    let rig = Rig::new(store, "plan-direct-unknown", &["pm_card_visa", "pm_card_mastercard"]).await;
    rig.processor.push_fault(ChargeFault::AnswerLost);
    rig.sweep().await;
    let now = Utc::now();
    assert!(matches!(rig.deliver(now).await, Reconciled::NotYet(_)));
    assert_eq!(rig.processor.charge_attempts(&rig.processor_card(1).await), 0);
    assert_eq!(rig.deliver(now + Duration::minutes(20)).await, Reconciled::Final);
    assert_eq!(rig.processor.succeeded_payments().len(), 1, "charged once in all");
    assert_eq!(rig.balance().await, usd("100"));
    let (fees, credits) = rig.entries().await;
    assert_eq!((fees.len(), credits), (1, vec![usd("29")]));
}

/// A change of plan made while a period is being charged (its first card's outcome unknown,
/// then its attempts declining) waits for the next renewal: the period is charged on the terms
/// its first claim fixed, and the plan moves on by that period, the change still pending.
pub async fn a_change_made_while_a_period_is_charged_waits_for_the_next_renewal(
    store: Arc<dyn Store>,
) {
    let rig = Rig::new(store, "plan-direct-change", &["pm_card_chargeDeclined"]).await;
    rig.processor.push_fault(ChargeFault::Processing { succeeds: false, minutes: 30 });
    rig.sweep().await;
    let now = Utc::now();
    assert!(matches!(rig.deliver(now).await, Reconciled::NotYet(_)));
    let team =
        PlanTerms { name: "Team".into(), price_usd: amount("99"), period: PlanPeriod::Annual };
    documents::profile::update(&*rig.store, &rig.id, |p| {
        p.plan.as_mut().unwrap().change = Some(team.clone());
        Ok(())
    })
    .await
    .unwrap();
    // The unknown outcome settles as declined; then two more attempts decline.
    rig.processor.set_now(now + Duration::hours(1));
    for at in [1, 2, 9] {
        rig.deliver(now + Duration::hours(at)).await;
    }
    assert_eq!(rig.deliver(now + Duration::hours(10)).await, Reconciled::Final);
    let (fees, _) = rig.entries().await;
    assert_eq!(fees.len(), 1);
    assert_eq!(rig.balance().await, usd("71"), "the period's $29, not the change's $99");
    let plan = rig.plan().await;
    assert_eq!(plan.terms.price_usd, amount("29"));
    assert_eq!(plan.change, Some(team), "the change waits for the next renewal");
    assert_eq!(plan.next_renewal, plan.period_end(rig.start, PlanPeriod::Monthly));
}

impl Rig {
    /// The processor's id of the profile's `n`-th card (in charge order).
    async fn processor_card(&self, n: usize) -> String {
        let (profile, _) = documents::profile::load(&*self.store, &self.id).await.unwrap();
        profile.charge_order()[n].id.clone()
    }
}

/// Generate one `#[tokio::test]` per direct-charge case for a store that keeps ledger and
/// documents.
#[macro_export]
macro_rules! plan_charge_suite {
    ($factory:path) => {
        $crate::plan_charge_suite!(@case $factory,
            a_direct_plan_period_is_charged_to_the_card_once,
            a_declined_primary_falls_through_to_the_backup,
            a_period_every_card_declines_is_paid_from_the_balance_after_three_attempts,
            an_unknown_direct_charge_outcome_pays_the_period_once,
            a_change_made_while_a_period_is_charged_waits_for_the_next_renewal,
        );
    };
    (@case $factory:path, $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::plan_charges::$name($factory().await).await;
            }
        )+
    };
}
