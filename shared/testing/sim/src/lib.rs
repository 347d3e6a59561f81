//! A seeded, deterministic simulation of the money pipeline, in the spirit of TigerBeetle's
//! VOPR: the real Pay Now, auto-recharge and reconciliation code runs against the in-process
//! ports (memory store, simulated card processor, a modelled SQS queue, a recording notice
//! sink) on a virtual clock, while a seeded random number generator picks what happens next and
//! which faults strike:
//!
//! - the store: a write that fails before it is applied (an outage, throttling or contention
//!   past the retries, a condition failure), or is applied and then reported as failed (the
//!   caller cannot tell: "applied but timed out"), which is also how a worker crash between two
//!   steps looks to everything after it;
//! - the queue: at-least-once delivery, redelivery after the visibility timeout, random order,
//!   duplicated relays, dead-lettering after `MAX_RECEIVES` receives;
//! - the card processor: unreachable, charged-but-answer-lost, `processing` then decided
//!   either way, declining cards, and idempotency keys that expire after 24 h of virtual time;
//! - the clock: minutes to days pass between steps, so backoffs, key expiry and months roll.
//!
//! Holds (issue 13) join it: the platform authorizes calls with ids (new, replayed after an
//! unknown outcome), extends and releases them, and reports calls with their authorization id,
//! redelivered at random, while usage without holds drains the same balances.
//!
//! 3-D Secure joins it: one card in five asks for authentication; Pay Now waits for the holder,
//! who authenticates (most), fails, or walks away (cancelled after the window), and
//! auto-recharge, off session, takes it as a decline. Half the accounts stop outbound service
//! while one of their payments is disputed.
//!
//! The auto-recharge caps join it: half the accounts have a daily cap of one to three
//! recharges, and some count their Pay Now payments toward it.
//!
//! Credit grants join it: the operator grants promotional and goodwill credit (some expiring
//! within hours, some never; resent after an unknown outcome) and voids some, while usage,
//! holds, refunds and disputes draw on the same balances; the daily sweep removes what is left
//! of expired grants, and so does any write past an expiry.
//!
//! After the chaos the faults stop and the system is driven to quiescence; then the invariants
//! are checked (see [`check`]). A failure names the seed; `ringledger-sim --seed N` replays it
//! exactly.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use documents::payment::{PaymentRecord, PaymentStatus, RefundStatus};
use documents::profile::{self, CardRole, Email, StoredCard};
use documents::Store;
use ledger::docs::{Doc, DocError, DocKind, DocStore};
use ledger::memory::MemoryStore;
use ledger::store::OutboxPage;
use ledger::{
    Account, AccountChange, AccountId, Amount, BillingItem, EntryKind, EntryQuery, LedgerEvent,
    LedgerEventKind, LedgerStore, MonthTotals, NewAccount, PostOutcome, Posting, PostingSource,
    RechargeMode, RechargeSettings, SourceId, StoreError,
};
use notifications::notice::{Notice, NoticeSink};
use payment_flow::{PayNowAnswer, PayNowError, PaymentPorts};
use payments::{CardProcessor, ChargeFault, RefundFault, SimulatedProcessor};
use rating::{Direction, RateCards};
use recharge::{Outcome, RechargeWorker};
use rust_decimal::Decimal;
use usage::authorize::Action;
use usage::events::UsageEvent;
use usage::holds::{self, HoldAnswer, HoldError};
use usage::source::RatedEvents;

/// SplitMix64: small, fast and the same on every platform and version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0 to `n - 1`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What one seed's run is allowed to do.
#[derive(Debug, Clone)]
pub struct Config {
    pub accounts: usize,
    pub steps: usize,
    /// Percent of store writes that fail (half before, half after being applied).
    pub store_fault_percent: u64,
    /// Percent of charge calls that meet a processor fault.
    pub processor_fault_percent: u64,
    /// Print the whole log of a failing seed, not only its tail.
    pub full_log: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            accounts: 3,
            steps: 120,
            store_fault_percent: 4,
            processor_fault_percent: 15,
            full_log: false,
        }
    }
}

/// What a seed's run did, for the soak's totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub steps: usize,
    pub charges_succeeded: usize,
    pub credits: usize,
    pub store_faults: usize,
    pub processor_faults: usize,
    pub deliveries: usize,
    pub dead_letters: usize,
    /// Holds granted (first answers, not replays) and call reports posted.
    pub holds_granted: usize,
    pub hold_reports: usize,
    /// Number-release steps the daily sweep took (notices and due events).
    pub release_steps: usize,
    /// Refunds asked for (repeats included), and refunds returned to a card at the end.
    pub refund_calls: usize,
    pub refunds_returned: usize,
    /// Disputes the processor opened, and how many of them withdrew funds.
    pub disputes: usize,
    pub disputes_withdrawn: usize,
    /// Credit grants opened, voided, and expired with something left (removed by an entry).
    pub grants_opened: usize,
    pub grants_voided: usize,
    pub grants_expired: usize,
    /// Days on which an account's daily auto-recharge cap stopped auto-recharge.
    pub daily_cap_stops: usize,
    /// Outbound calls refused because a dispute was open on an account that stops for one.
    pub dispute_denials: usize,
    /// Pay Now payments whose holder completed 3-D Secure.
    pub authenticated: usize,
    /// Refunds made in the processor's dashboard (outside the system).
    pub dashboard_refunds: usize,
    /// Plan periods charged (from the balance or to a card), counted at rest.
    pub plan_fees: usize,
    /// Plan periods paid by a card (opt-in direct charge).
    pub plan_card_paid: usize,
    /// Direct-charge periods taken from the balance after every card declined three times.
    pub plan_fallbacks: usize,
    /// Worlds with a client account paying with its agency's cards, and that client's
    /// payments charged to the agency's cards.
    pub agency_clients: usize,
    pub agency_charges: usize,
    /// Postpaid invoices issued, paid by the pre-authorized cards, and left for a payment by
    /// hand after every attempt failed.
    pub invoices: usize,
    pub invoices_card_paid: usize,
    pub invoices_autopay_exhausted: usize,
    /// Postpaid accounts blocked for an overdue invoice, and blocks lifted (by a payment in
    /// its own write, or by the sweep).
    pub overdue_blocks: usize,
    pub overdue_blocks_lifted: usize,
    /// Invoices paid (in part) by a Pay Now or an auto-recharge, not by their own charge.
    pub invoices_paid_by_pay_now: usize,
    /// Credit notes issued against invoices.
    pub credit_notes: usize,
    /// Bank-account (ACH) debits that settled, and those that came back.
    pub ach_settled: usize,
    pub ach_returned: usize,
}

/// The faulty store: the memory store behind writes that may fail before or after applying.
pub struct FaultyStore {
    inner: MemoryStore,
    faults: Mutex<FaultState>,
}

struct FaultState {
    rng: Rng,
    percent: u64,
    injected: usize,
    /// Conditional document writes that lost to another writer (`DocError::Conflict`).
    conflicts: usize,
}

#[derive(Debug)]
struct Injected(&'static str);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "simulated store fault: {}", self.0)
    }
}

impl std::error::Error for Injected {}

/// Where a write fails, if it does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteFault {
    None,
    Before,
    After,
}

impl FaultyStore {
    /// A memory store whose writes fail `percent` % of the time (0: never).
    pub fn new(seed: u64, percent: u64) -> Self {
        FaultyStore {
            inner: MemoryStore::new(),
            faults: Mutex::new(FaultState {
                rng: Rng::new(seed),
                percent,
                injected: 0,
                conflicts: 0,
            }),
        }
    }

    /// Conditional document writes that lost a race so far.
    pub fn conflicts(&self) -> usize {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).conflicts
    }

    fn set_percent(&self, percent: u64) {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).percent = percent;
    }

    fn injected(&self) -> usize {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).injected
    }

    fn roll(&self) -> (WriteFault, u64) {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let percent = faults.percent;
        if !faults.rng.chance(percent) {
            return (WriteFault::None, 0);
        }
        faults.injected += 1;
        let dice = faults.rng.next_u64();
        if faults.rng.chance(50) {
            (WriteFault::Before, dice)
        } else {
            (WriteFault::After, dice)
        }
    }
}

/// The error a failed write reports: an outage, throttling past the retries, or contention
/// past the retries (what a hot account's losers see), chosen by the write's own dice.
fn store_fault(what: &'static str, id: &AccountId, dice: u64) -> StoreError {
    match dice % 3 {
        0 => StoreError::Throttled,
        1 => StoreError::Contention(id.clone()),
        _ => StoreError::unavailable(Injected(what)),
    }
}

#[async_trait]
impl LedgerStore for FaultyStore {
    async fn create_account(
        &self,
        account: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        self.inner.create_account(account, now).await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.inner.account(id).await
    }

    async fn modify_account(
        &self,
        id: &AccountId,
        change: AccountChange,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        let (fault, dice) = self.roll();
        if fault == WriteFault::Before {
            return Err(store_fault("modify_account before", id, dice));
        }
        let result = self.inner.modify_account(id, change, now).await;
        if fault == WriteFault::After && result.is_ok() {
            return Err(store_fault("modify_account after", id, dice));
        }
        result
    }

    async fn post_with(
        &self,
        id: &AccountId,
        source: Arc<dyn PostingSource>,
        now: DateTime<Utc>,
    ) -> Result<PostOutcome, StoreError> {
        let (fault, dice) = self.roll();
        if fault == WriteFault::Before {
            return Err(store_fault("post before", id, dice));
        }
        let result = self.inner.post_with(id, source, now).await;
        if fault == WriteFault::After && result.is_ok() {
            return Err(store_fault("post after", id, dice));
        }
        result
    }

    async fn entries(
        &self,
        id: &AccountId,
        query: &EntryQuery,
    ) -> Result<ledger::EntryPage, StoreError> {
        self.inner.entries(id, query).await
    }

    async fn closed_month(
        &self,
        id: &AccountId,
        month: ledger::Month,
    ) -> Result<Option<MonthTotals>, StoreError> {
        self.inner.closed_month(id, month).await
    }

    async fn account_ids(
        &self,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        self.inner.account_ids(after, limit).await
    }

    async fn outbox_page(&self, after: Option<&str>, limit: u32) -> Result<OutboxPage, StoreError> {
        self.inner.outbox_page(after, limit).await
    }

    async fn ack_event(&self, event: &LedgerEvent) -> Result<(), StoreError> {
        self.inner.ack_event(event).await
    }
}

#[async_trait]
impl DocStore for FaultyStore {
    async fn get_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
    ) -> Result<Option<Doc>, StoreError> {
        self.inner.get_doc(account, kind, id).await
    }

    async fn put_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        body: &str,
        expected_version: Option<u64>,
    ) -> Result<u64, DocError> {
        let (fault, dice) = self.roll();
        if fault == WriteFault::Before {
            // Now and then the write loses a race it did not have (a condition failure).
            if dice % 4 == 3 {
                return Err(DocError::Conflict);
            }
            return Err(DocError::Store(store_fault("put_doc before", account, dice)));
        }
        let result = self.inner.put_doc(account, kind, id, body, expected_version).await;
        if matches!(result, Err(DocError::Conflict)) {
            self.faults.lock().unwrap_or_else(|p| p.into_inner()).conflicts += 1;
        }
        if fault == WriteFault::After && result.is_ok() {
            return Err(DocError::Store(store_fault("put_doc after", account, dice)));
        }
        result
    }

    async fn delete_doc(
        &self,
        account: &AccountId,
        kind: DocKind,
        id: &str,
        expected_version: u64,
    ) -> Result<(), DocError> {
        self.inner.delete_doc(account, kind, id, expected_version).await
    }

    async fn list_docs(
        &self,
        account: &AccountId,
        kind: DocKind,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Doc>, StoreError> {
        self.inner.list_docs(account, kind, after, limit).await
    }
}

/// Notices as published (at least once each; the notifications worker sends once per id).
#[derive(Default)]
pub struct RecordedNotices(Mutex<Vec<Notice>>);

#[async_trait]
impl NoticeSink for RecordedNotices {
    async fn publish(
        &self,
        notice: &Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(notice.clone());
        Ok(())
    }
}

impl RecordedNotices {
    /// Every notice published so far, in order.
    pub fn published(&self) -> Vec<Notice> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The processor as the recharge worker sees it: the simulated one, watched. A *fresh*
/// auto-recharge charge (one not preceded by a lookup of its key, which is how every replay
/// starts) must only be sent while auto-recharge is on and the balance is below the threshold;
/// anything else is recorded as a violation.
pub struct WatchedProcessor {
    inner: Arc<SimulatedProcessor>,
    store: Arc<FaultyStore>,
    looked_up: Mutex<std::collections::HashSet<String>>,
    violations: Mutex<Vec<String>>,
}

impl WatchedProcessor {
    fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl CardProcessor for WatchedProcessor {
    async fn create_customer(
        &self,
        account_id: &str,
        email: Option<&str>,
    ) -> Result<payments::CustomerId, payments::ProcessorError> {
        self.inner.create_customer(account_id, email).await
    }

    async fn attach_card(
        &self,
        customer: &payments::CustomerId,
        token: &str,
    ) -> Result<payments::CardDetails, payments::ProcessorError> {
        self.inner.attach_card(customer, token).await
    }

    async fn detach_card(&self, id: &str) -> Result<(), payments::ProcessorError> {
        self.inner.detach_card(id).await
    }

    async fn charge(
        &self,
        request: &payments::ChargeRequest,
    ) -> Result<payments::ChargeOutcome, payments::ProcessorError> {
        let key = &request.idempotency_key;
        let replay = self.looked_up.lock().unwrap_or_else(|p| p.into_inner()).contains(key);
        if let (false, Some(account)) = (replay, key.strip_prefix("rch:")) {
            let account = account.split(':').next().unwrap_or_default();
            if let Ok(id) = AccountId::parse(account) {
                let store: &dyn LedgerStore = &*self.store;
                if let Ok(Some(a)) = store.account(&id).await {
                    // Below the threshold once active holds are counted, as the request was.
                    let now = self.inner.now().unwrap_or_else(Utc::now);
                    let below = a
                        .recharge
                        .as_ref()
                        .filter(|r| r.enabled())
                        .is_some_and(|r| a.unreserved_usd(now) < r.threshold_usd().value());
                    if !below {
                        self.violations.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                            "{key}: a fresh auto-recharge charge at balance {} less {} held (not needed)",
                            a.balance_usd,
                            a.held_usd(now, None)
                        ));
                    }
                }
            }
        }
        self.inner.charge(request).await
    }

    async fn find_charge(
        &self,
        customer: &payments::CustomerId,
        key: &str,
    ) -> Result<Option<payments::ChargeOutcome>, payments::ProcessorError> {
        self.looked_up.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string());
        self.inner.find_charge(customer, key).await
    }

    async fn refund(
        &self,
        request: &payments::RefundRequest,
    ) -> Result<payments::RefundOutcome, payments::ProcessorError> {
        self.inner.refund(request).await
    }

    async fn find_refund(
        &self,
        payment_intent_id: &str,
        key: &str,
    ) -> Result<Option<payments::RefundOutcome>, payments::ProcessorError> {
        self.inner.find_refund(payment_intent_id, key).await
    }
    async fn recent_disputes(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<payments::DisputeState>, payments::ProcessorError> {
        self.inner.recent_disputes(since).await
    }

    async fn payment_account(
        &self,
        payment_intent_id: &str,
    ) -> Result<Option<String>, payments::ProcessorError> {
        self.inner.payment_account(payment_intent_id).await
    }

    async fn cancel_charge(
        &self,
        payment_intent_id: &str,
    ) -> Result<payments::ChargeOutcome, payments::ProcessorError> {
        self.inner.cancel_charge(payment_intent_id).await
    }

    async fn refunds_of(
        &self,
        payment_intent_id: &str,
    ) -> Result<Vec<payments::ProcessorRefund>, payments::ProcessorError> {
        self.inner.refunds_of(payment_intent_id).await
    }

    async fn recent_refunds(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<payments::ProcessorRefund>, payments::ProcessorError> {
        self.inner.recent_refunds(since).await
    }

    async fn customer_account(
        &self,
        customer: &payments::CustomerId,
    ) -> Result<Option<String>, payments::ProcessorError> {
        self.inner.customer_account(customer).await
    }
}

/// Register a card as the API does: attach the token at the processor, keep its ids, brand,
/// last 4 and expiry on the profile (with the customer), and make it the primary when asked
/// (the others become backups). `Ok(None)` when the processor or the store refused.
pub async fn register_card(
    store: &dyn Store,
    processor: &dyn CardProcessor,
    id: &AccountId,
    customer: &payments::CustomerId,
    token: &str,
    primary: bool,
    added_at: DateTime<Utc>,
) -> Option<StoredCard> {
    let details = processor.attach_card(customer, token).await.ok()?;
    let card = StoredCard {
        kind: match details.kind {
            payments::MethodKind::Card => documents::profile::MethodKind::Card,
            payments::MethodKind::UsBankAccount => documents::profile::MethodKind::UsBankAccount,
        },
        verified: details.verified,
        id: details.payment_method_id,
        brand: details.brand,
        last4: details.last4,
        exp_month: details.exp_month,
        exp_year: details.exp_year,
        role: if primary { CardRole::Primary } else { CardRole::Backup },
        card_manager_email: Email::try_from(format!("cards@{id}.example")).ok()?,
        added_at,
    };
    let customer_id = customer.0.clone();
    profile::update(store, id, |p| {
        p.processor_customer_id = Some(customer_id.clone());
        if primary {
            for other in p.cards.iter_mut() {
                other.role = CardRole::Backup;
            }
        }
        p.cards.push(card.clone());
        Ok(())
    })
    .await
    .ok()?;
    Some(card)
}

/// SQS as the recharge queue's consumer sees it.
#[derive(Debug, Clone)]
struct Message {
    event: LedgerEvent,
    visible_at: DateTime<Utc>,
    receives: u32,
}

/// The recharge queue's `maxReceiveCount` (infra/template.yaml).
pub const MAX_RECEIVES: u32 = 8;
/// The recharge queue's visibility timeout.
const VISIBILITY_SECONDS: i64 = 60;

/// A Pay Now the simulation made, and what it was told.
#[derive(Debug, Clone)]
struct PayNowCall {
    account: usize,
    key: String,
    amount: Amount,
    last_status: Option<u16>,
}

/// A refund an operator asked for, and what the call answered.
#[derive(Debug, Clone)]
struct RefundCall {
    account: usize,
    payment_id: String,
    key: String,
    amount: Amount,
}

/// An authorization the simulated platform asked for, and what became of it.
#[derive(Debug, Clone)]
struct SimHold {
    account: usize,
    id: String,
    /// The call's report (its event id and duration), once the platform sent one.
    report: Option<(String, u32)>,
    /// The extension the platform asks for next.
    next_extension: u32,
}

/// One run's world.
pub struct World {
    seed: u64,
    rng: Rng,
    config: Config,
    now: DateTime<Utc>,
    store: Arc<FaultyStore>,
    processor: Arc<SimulatedProcessor>,
    notices: Arc<RecordedNotices>,
    worker: RechargeWorker,
    watched: Arc<WatchedProcessor>,
    accounts: Vec<AccountId>,
    queue: Vec<Message>,
    dead_letters: Vec<Message>,
    pay_nows: Vec<PayNowCall>,
    refunds: Vec<RefundCall>,
    /// Every dispute state the processor has shown (its events, some of them never delivered).
    dispute_events: Vec<payments::DisputeState>,
    /// Refunds the processor failed after taking them: (payment intent, key), each event
    /// delivered at least once (Stripe retries until acknowledged), some late or twice.
    refund_failures: Vec<(String, String)>,
    started: DateTime<Utc>,
    holds: Vec<SimHold>,
    /// Each account's daily auto-recharge cap, and whether its Pay Now payments count toward
    /// the caps (set when it is opened).
    daily_caps: Vec<Option<Amount>>,
    /// When the daily sweep last ran.
    swept_at: DateTime<Utc>,
    /// Each account's plan as it was set (a third of them have one).
    plans: Vec<Option<documents::plan::Plan>>,
    /// Which accounts are postpaid (invoiced monthly by the daily sweep's run).
    postpaid: Vec<bool>,
    count_manual: Vec<bool>,
    /// Refunds made in the processor's dashboard: (payment intent, refund id).
    dashboard_refunds: Vec<(String, String)>,
    /// Credit grants asked for: (account, grant id, amount, terms); resent with the same ones.
    grants: Vec<(usize, String, Amount, ledger::GrantTerms)>,
    /// Number-release events relayed, by id.
    release_events: BTreeMap<String, LedgerEvent>,
    /// Broken hold promises seen while running (an answer granting more than was available).
    hold_violations: Vec<String>,
    next_id: u64,
    stats: Stats,
    log: Vec<String>,
}

/// A broken invariant, with the seed that replays it.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub message: String,
    pub log_tail: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {}: {}", self.seed, self.message)?;
        writeln!(f, "replay: cargo run -p ringledger-sim -- --seed {}", self.seed)?;
        for line in &self.log_tail {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

const CARD_TOKENS: [&str; 7] = [
    "pm_card_visa",
    "pm_card_mastercard",
    "pm_card_chargeDeclined",
    "pm_card_visa",
    // Asks for 3-D Secure on every charge: Pay Now waits for the holder, auto-recharge declines.
    "pm_card_authenticationRequired",
    // US bank accounts (ACH): every debit is processing for three days, then succeeds or comes
    // back for insufficient funds.
    "pm_usBankAccount",
    "pm_usBankAccount_insufficientFunds",
];

fn amount(text: &str) -> Amount {
    Amount::from_str(text).expect("simulation amounts are valid")
}

fn cents(rng: &mut Rng, low_usd: u64, high_usd: u64) -> Amount {
    let value = low_usd * 100 + rng.below((high_usd - low_usd) * 100);
    Amount::new(Decimal::new(value as i64, 2)).expect("positive")
}

fn describe(result: &Result<HoldAnswer, HoldError>) -> String {
    match result {
        Ok(answer) if answer.replayed => "replayed".into(),
        Ok(answer) if answer.decision.allowed => format!(
            "granted {:?} s, available {}",
            answer.decision.max_duration_seconds, answer.available_usd
        ),
        Ok(answer) => format!("refused {:?}", answer.decision.reason),
        Err(error) => format!("error {error}"),
    }
}

/// An answered outbound call of `seconds` reporting `authorization`.
fn call_event(
    event: &str,
    account: &AccountId,
    authorization: &str,
    seconds: u32,
    now: DateTime<Utc>,
) -> UsageEvent {
    let body = serde_json::json!({
        "version": 1, "event_id": event, "account_id": account.as_str(),
        "occurred_at": now.to_rfc3339(), "type": "call", "authorization_id": authorization,
        "data": {"direction": "outbound", "from": "+15550000001", "to": "+15551230000",
                 "answered": true, "duration_seconds": seconds},
    });
    UsageEvent::parse(&body.to_string()).expect("a valid call event")
}

/// The simulation's rate card: the standard one with outbound calls at $2.00 a minute, so a
/// five-minute slice ($10) often meets the edge of an account's available balance.
fn sim_cards() -> RateCards {
    let mut card = rating::RateCard::standard();
    card.calls.outbound.per_minute_usd = Decimal::new(200, 2);
    RateCards::new(std::collections::HashMap::new(), card).expect("a valid card")
}

/// What one reported call costs on the simulation's card: what the ledger must have debited
/// for it, once, whatever its hold was.
fn rated_cost(seconds: u32) -> Decimal {
    let card = sim_cards().card(None).expect("the standard card");
    let usage = rating::Usage::Call {
        direction: Direction::Outbound,
        to: "+15551230000",
        answered: true,
        duration_seconds: seconds,
        ring_through_attempts: 0,
        premium: &[],
        internal: false,
    };
    rating::rate(&card, &usage, 0).expect("rateable").charges.iter().map(|c| c.amount.value()).sum()
}

impl World {
    async fn new(seed: u64, config: Config) -> Self {
        let mut rng = Rng::new(seed);
        let store = Arc::new(FaultyStore::new(rng.next_u64(), 0));
        let processor = Arc::new(SimulatedProcessor::new());
        let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("date")
            + Duration::hours(rng.below(24 * 60) as i64);
        processor.set_now(now);
        let notices = Arc::new(RecordedNotices::default());
        let dyn_store: Arc<dyn Store> = store.clone();
        let watched = Arc::new(WatchedProcessor {
            inner: processor.clone(),
            store: store.clone(),
            looked_up: Mutex::new(Default::default()),
            violations: Mutex::new(Vec::new()),
        });
        let worker = RechargeWorker::new(dyn_store, watched.clone(), notices.clone());
        let mut world = World {
            seed,
            rng,
            config,
            now,
            store,
            processor,
            notices,
            worker,
            watched,
            accounts: Vec::new(),
            queue: Vec::new(),
            dead_letters: Vec::new(),
            pay_nows: Vec::new(),
            refunds: Vec::new(),
            dispute_events: Vec::new(),
            refund_failures: Vec::new(),
            started: now,
            holds: Vec::new(),
            grants: Vec::new(),
            dashboard_refunds: Vec::new(),
            daily_caps: Vec::new(),
            swept_at: now,
            plans: Vec::new(),
            postpaid: Vec::new(),
            count_manual: Vec::new(),
            release_events: BTreeMap::new(),
            hold_violations: Vec::new(),
            next_id: 0,
            stats: Stats::default(),
            log: Vec::new(),
        };
        for index in 0..world.config.accounts {
            world.open_account(index).await;
        }
        // In two worlds of five the last account is a client of the first (an agency): it
        // keeps its own balance and pays with the agency's cards (its own are dropped).
        if world.accounts.len() > 1 && world.rng.chance(40) {
            let agency = world.accounts[0].clone();
            let client = world.accounts[world.accounts.len() - 1].clone();
            profile::update(&*world.store, &client, |p| {
                p.agency_id = Some(agency.clone());
                p.cards.clear();
                p.processor_customer_id = None;
                Ok(())
            })
            .await
            .expect("client of an agency");
            profile::update(&*world.store, &agency, |p| {
                p.agency_clients.push(client.clone());
                Ok(())
            })
            .await
            .expect("agency");
            world.stats.agency_clients += 1;
            world.note(format!("{client} is a client of the agency {agency}"));
        }
        world.store.set_percent(world.config.store_fault_percent);
        world
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn note(&mut self, line: String) {
        self.log.push(format!("{} {line}", self.now.format("%Y-%m-%dT%H:%M")));
    }

    async fn open_account(&mut self, index: usize) {
        let id = AccountId::parse(format!("sim{index}")).expect("account id");
        let store: &dyn LedgerStore = &*self.store;
        store
            .create_account(NewAccount { id: id.clone(), credit_limit_usd: None }, self.now)
            .await
            .expect("open");
        // Short releases on some accounts, so suspensions reach them within a run.
        let days = [7, 8, 30][self.rng.below(3) as usize];
        // Half the accounts stop outbound service while a dispute is open.
        let policy = ledger::ServicePolicy {
            release_after_days: days,
            suspend_while_disputed: index.is_multiple_of(2),
            ..Default::default()
        };
        store
            .modify_account(
                &id,
                Arc::new(move |a| {
                    a.service = Some(policy.clone());
                    Ok(())
                }),
                self.now,
            )
            .await
            .expect("service policy");
        let customer = self.processor.create_customer(id.as_str(), None).await.expect("customer");
        let cards = 1 + self.rng.below(2) as usize;
        for n in 0..cards {
            let token = CARD_TOKENS[self.rng.below(CARD_TOKENS.len() as u64) as usize];
            register_card(
                &*self.store,
                &*self.processor,
                &id,
                &customer,
                token,
                n == 0,
                self.now + Duration::seconds(n as i64),
            )
            .await
            .expect("card");
        }
        let opening = cents(&mut self.rng, 20, 120);
        store
            .post(
                &id,
                vec![Posting::credit(
                    SourceId::parse(format!("adj:open:{index}")).expect("source"),
                    BillingItem::Adjustment,
                    opening,
                    self.now,
                )
                .expect("credit")],
                self.now,
            )
            .await
            .expect("opening credit");
        let mode = if self.rng.chance(50) { RechargeMode::Add } else { RechargeMode::TopUpTo };
        let threshold = 10 + self.rng.below(30);
        let recharge_amount = threshold + 40 + self.rng.below(60);
        // A quarter of the accounts are postpaid (invoiced monthly, auto-recharge off at first),
        // most of them with their invoices charged to their cards on the issue date.
        let postpaid = self.rng.chance(25);
        let pre_authorized = postpaid && self.rng.chance(70);
        let settings = RechargeSettings::new(
            !postpaid,
            amount(&recharge_amount.to_string()),
            amount(&threshold.to_string()),
            mode,
        )
        .expect("settings");
        // Half the accounts cap auto-recharge per day (room for one to three recharges); some
        // count their Pay Now payments toward it.
        let daily_cap = self.rng.chance(50).then(|| {
            amount(&(recharge_amount + self.rng.below(2 * recharge_amount + 1)).to_string())
        });
        let count_manual = self.rng.chance(30);
        self.daily_caps.push(daily_cap);
        self.count_manual.push(count_manual);
        // A third of the accounts pay a monthly plan, charged by the daily sweep.
        let plan = self.rng.chance(33).then(|| {
            let terms = documents::plan::PlanTerms {
                name: "Pro".into(),
                price_usd: cents(&mut self.rng, 5, 20),
                period: documents::plan::PlanPeriod::Monthly,
            };
            let mut plan = documents::plan::Plan::starting(terms, self.now.date_naive());
            // Half of them charge each period to the cards instead of the balance.
            plan.direct_charge = self.rng.chance(50);
            plan
        });
        self.plans.push(plan.clone());
        self.postpaid.push(postpaid);
        // Postpaid accounts are blocked a few days into an invoice's overdue (the default, 21,
        // is longer than most worlds run past a due date).
        let block_after = postpaid.then(|| 1 + self.rng.below(10) as u32);
        profile::update(&*self.store, &id, |p| {
            p.auto_recharge_daily_cap_usd = daily_cap;
            p.caps_count_manual_payments = count_manual;
            p.plan = plan.clone();
            if postpaid {
                p.billing_mode = documents::invoice::BillingMode::Postpaid;
                p.pre_authorized_payment = pre_authorized;
            }
            Ok(())
        })
        .await
        .expect("caps");
        store
            .modify_account(
                &id,
                Arc::new(move |a: &mut Account| {
                    a.terms = Some(ledger::TermsAcceptance {
                        version: "2026-01".into(),
                        accepted_by: "sim".into(),
                        accepted_at: a.created_at,
                    });
                    a.recharge = Some(settings.clone());
                    if let Some(days) = block_after {
                        let mut policy = a.service_policy();
                        policy.block_after_days_overdue = days;
                        a.service = Some(policy);
                    }
                    Ok(())
                }),
                self.now,
            )
            .await
            .expect("settings");
        self.accounts.push(id);
    }

    fn account(&mut self) -> (usize, AccountId) {
        let index = self.rng.below(self.accounts.len() as u64) as usize;
        (index, self.accounts[index].clone())
    }

    fn maybe_processor_fault(&mut self) {
        if !self.rng.chance(self.config.processor_fault_percent) {
            return;
        }
        self.stats.processor_faults += 1;
        let fault = match self.rng.below(3) {
            0 => ChargeFault::Unreachable,
            1 => ChargeFault::AnswerLost,
            _ => ChargeFault::Processing {
                succeeds: self.rng.chance(70),
                minutes: 1 + self.rng.below(180) as i64,
            },
        };
        self.note(format!("processor fault armed: {fault:?}"));
        self.processor.push_fault(fault);
    }

    async fn step(&mut self) {
        self.stats.steps += 1;
        match self.rng.below(100) {
            0..=19 => self.usage().await,
            20..=29 => self.hold().await,
            30..=44 => self.pay_now().await,
            45..=49 => self.card_change().await,
            50..=54 => self.settings_change().await,
            55..=64 => self.relay().await,
            65..=67 => self.refund().await,
            68..=69 => self.dispute().await,
            70..=72 => self.grant().await,
            73..=74 => self.dashboard_refund().await,
            75..=89 => self.deliver().await,
            _ => {
                self.advance();
                self.holders_authenticate();
                self.sweep_releases().await;
            }
        }
    }

    fn advance(&mut self) {
        let minutes = match self.rng.below(10) {
            0..=5 => 1 + self.rng.below(30),
            6..=8 => 60 + self.rng.below(12 * 60),
            _ => 24 * 60 + self.rng.below(10 * 24 * 60),
        };
        self.now += Duration::minutes(minutes as i64);
        self.processor.set_now(self.now);
    }

    /// Cardholders asked for 3-D Secure answer, or not: each waiting payment is authenticated
    /// (most), failed, or left for the window to cancel it.
    fn holders_authenticate(&mut self) {
        for intent in self.processor.waiting_for_authentication() {
            match self.rng.below(10) {
                0..=5 => {
                    self.processor.authenticate(&intent, true);
                    self.stats.authenticated += 1;
                    self.note(format!("holder authenticated {intent}"));
                }
                6..=7 => {
                    self.processor.authenticate(&intent, false);
                    self.note(format!("holder failed to authenticate {intent}"));
                }
                _ => self.note(format!("holder left {intent} waiting")),
            }
        }
    }

    /// The daily sweep, run whenever time moves on (it is idempotent): expired credit grants,
    /// then the number release.
    async fn sweep_releases(&mut self) {
        self.swept_at = self.now;
        for id in self.accounts.clone() {
            if let Ok(true) = jobs::release::expire_grants(&*self.store, &id, self.now).await {
                self.note(format!("grant sweep {id}: expired grants removed"));
            }
            let today = self.now.date_naive();
            match jobs::plans::renew_at(&*self.store, &*self.store, &id, today, self.now).await {
                Ok(0) => {}
                Ok(n) => self.note(format!("plan sweep {id}: {n} periods charged")),
                Err(error) => self.note(format!("plan sweep {id} failed: {error}")),
            }
            self.invoice(&id).await;
            if self.rng.chance(15) {
                self.credit_note(&id).await;
            }
            // The daily dunning (`jobs::invoices::dun`, less its emails): credit notes a
            // failure left uncredited, then the block.
            if let Err(error) =
                jobs::invoices::credit_notes_due(&*self.store, &*self.store, &id, self.now).await
            {
                self.note(format!("credit notes {id} failed: {error}"));
            }
            let dunning =
                jobs::invoices::block_or_lift(&*self.store, &*self.store, &id, self.now).await;
            if dunning.is_ok() {
                self.check_dunning(&id).await;
            }
            match dunning {
                Ok(jobs::invoices::BlockOutcome::Blocked(month)) => {
                    self.stats.overdue_blocks += 1;
                    self.note(format!("dunning {id}: blocked for {month}"));
                }
                Ok(jobs::invoices::BlockOutcome::Lifted) => {
                    self.stats.overdue_blocks_lifted += 1;
                    self.note(format!("dunning {id}: block lifted"));
                }
                Ok(jobs::invoices::BlockOutcome::Unchanged) => {}
                Err(error) => self.note(format!("dunning {id} failed: {error}")),
            }
            let result = jobs::release::sweep(&*self.store, &id, self.now).await;
            if let Ok(jobs::release::SweepOutcome::Advanced(stage)) = result {
                self.stats.release_steps += 1;
                self.note(format!("release sweep {id} -> {stage:?}"));
            }
        }
    }

    /// Right after the sweep's dunning (when it ran without a store fault): an account whose balance
    /// owes something and with an invoice overdue past its limit is blocked.
    async fn check_dunning(&mut self, id: &AccountId) {
        let store = &self.store.inner;
        let Ok(Some(account)) = store.account(id).await else { return };
        let Ok(invoices) = documents::invoice::list(store, id).await else { return };
        let limit = i64::from(account.service_policy().block_after_days_overdue);
        let today = self.now.date_naive();
        let overdue = account.balance_usd < Decimal::ZERO
            && !jobs::invoices::overdue_past(&invoices, today, limit).is_empty();
        if overdue && account.overdue_block.is_none() {
            self.hold_violations.push(format!(
                "{id}: an invoice overdue past {limit} days and no block after the sweep"
            ));
        }
    }

    /// An operator's credit note against the account's latest invoice: a random part of what
    /// it still allows (sometimes more, refused), under a key that is sometimes one used
    /// before (a resend), through the faulty store (a failure after the note is written leaves
    /// its credit to the resend or the daily sweep).
    async fn credit_note(&mut self, id: &AccountId) {
        let invoices = match documents::invoice::list(&*self.store, id).await {
            Ok(invoices) => invoices,
            Err(_) => return,
        };
        let Some(invoice) = invoices.iter().rev().find(|i| i.number.is_some()) else { return };
        let room = invoice.amount_due_usd - invoice.credited_usd();
        let room_cents =
            (room * Decimal::ONE_HUNDRED).trunc().to_string().parse::<u64>().unwrap_or(0);
        let cents = 1 + self.rng.below(room_cents + 2);
        let key = if self.rng.chance(30) && !invoice.credit_notes.is_empty() {
            invoice.credit_notes[self.rng.below(invoice.credit_notes.len() as u64) as usize]
                .key
                .clone()
        } else {
            format!("cn-{}", self.next())
        };
        let amount = invoice
            .credit_notes
            .iter()
            .find(|n| n.key == key)
            .map_or(Decimal::new(cents as i64, 2), |n| n.amount_usd);
        let request = documents::invoice::CreditNoteRequest {
            key: key.clone(),
            amount_usd: amount,
            reason: "sim correction".into(),
            issued_by: "sim".into(),
        };
        let result = jobs::invoices::credit_note(
            &*self.store,
            &*self.store,
            id,
            invoice.month,
            &request,
            self.now,
        )
        .await;
        match result {
            Ok((note, new)) => {
                if new {
                    self.stats.credit_notes += 1;
                }
                self.note(format!("credit note {id} {key} {amount} -> {} (new {new})", note.number))
            }
            Err(error) => self.note(format!("credit note {id} {key} {amount} -> {error}")),
        }
    }

    /// The monthly run's invoice of a postpaid account for the month before (idempotent: run
    /// by every sweep, as a redelivered job would).
    async fn invoice(&mut self, id: &AccountId) {
        let Some(index) = self.accounts.iter().position(|a| a == id) else { return };
        if !self.postpaid[index] {
            return;
        }
        let month = ledger::Month::of(self.now).previous();
        match jobs::invoices::issue(&*self.store, &*self.store, id, month, self.now).await {
            Ok(Some(invoice)) => self.note(format!(
                "invoice {id} {month}: {} due {}",
                invoice.number.unwrap_or_default(),
                invoice.amount_due_usd
            )),
            Ok(None) => {}
            Err(error) => self.note(format!("invoice {id} {month} failed: {error}")),
        }
    }

    /// Remember a relayed number-release event (by id: a relay may publish one twice).
    fn saw(&mut self, event: &LedgerEvent) {
        if matches!(
            event.kind,
            LedgerEventKind::NumbersReleaseWarning { .. }
                | LedgerEventKind::NumbersReleaseDue { .. }
                | LedgerEventKind::Reactivated
        ) {
            self.release_events.insert(event.id.clone(), event.clone());
        }
    }

    async fn usage(&mut self) {
        let (_, id) = self.account();
        let n = self.next();
        let debit = cents(&mut self.rng, 1, 45);
        let posting = Posting::usage(
            SourceId::parse(format!("use:sim:{n}")).expect("source"),
            BillingItem::PhoneCall,
            debit,
            self.now,
        )
        .expect("usage");
        let store: &dyn LedgerStore = &*self.store;
        let result = store.post(&id, vec![posting], self.now).await;
        self.note(format!("usage {id} {} -> {}", debit.value(), result.is_ok()));
    }

    /// Someone refunds a payment in the processor's dashboard (or a refund made there fails
    /// later); its event reaches the webhook four times in five.
    async fn dashboard_refund(&mut self) {
        let succeeded = self.processor.succeeded_payments();
        if succeeded.is_empty() {
            return;
        }
        let (request, intent) = succeeded[self.rng.below(succeeded.len() as u64) as usize].clone();
        if !self.dashboard_refunds.is_empty() && self.rng.chance(25) {
            let pick = self.rng.below(self.dashboard_refunds.len() as u64) as usize;
            let (intent, refund) = self.dashboard_refunds[pick].clone();
            let failed = self.processor.fail_refund_later(&format!("dashboard:{refund}"));
            self.note(format!(
                "dashboard refund {refund} of {intent} failed later: {}",
                failed.is_some()
            ));
            if failed.is_some() && self.rng.chance(80) {
                self.sync_refunds(&intent).await;
            }
            return;
        }
        let cents = 1 + self.rng.below(request.amount_cents / 3 + 1);
        match self.processor.refund_outside(&intent, cents) {
            Ok(refund) => {
                self.stats.dashboard_refunds += 1;
                self.note(format!("dashboard refund {refund} of {cents} cents of {intent}"));
                self.dashboard_refunds.push((intent.clone(), refund));
                if self.rng.chance(80) {
                    self.sync_refunds(&intent).await;
                }
            }
            Err(error) => self.note(format!("dashboard refund of {intent} refused: {error}")),
        }
    }

    /// The webhook's `charge.refunded` / `charge.refund.updated` for a refund not ours.
    async fn sync_refunds(&mut self, intent: &str) {
        let ports = PaymentPorts {
            store: &*self.store,
            processor: &*self.processor,
            notices: Some(&*self.notices),
        };
        let result = payment_flow::refund::sync_external_refunds(&ports, intent, self.now).await;
        self.note(format!("refund event of {intent} -> {result:?}"));
    }

    /// The operator's side of credit grants: open one (or resend one whose answer was lost, as
    /// the API's Idempotency-Key allows), or void one (the API's two writes, either of which
    /// may fail).
    async fn grant(&mut self) {
        let shared = self.store.clone();
        let store: &dyn LedgerStore = &*shared;
        if !self.grants.is_empty() && self.rng.chance(25) {
            let pick = self.rng.below(self.grants.len() as u64) as usize;
            let (index, grant_id, _, _) = self.grants[pick].clone();
            let id = self.accounts[index].clone();
            let now = ledger::truncate_to_micros(self.now);
            let target = grant_id.clone();
            let voided = store
                .modify_account(
                    &id,
                    Arc::new(move |a: &mut Account| {
                        if let Some(grant) = a.grants.iter_mut().find(|g| g.id == target) {
                            if grant.expires_at.is_none_or(|at| at > now) {
                                grant.expires_at = Some(now);
                            }
                        }
                        Ok(())
                    }),
                    self.now,
                )
                .await;
            let removed = match voided {
                Ok(_) => store.post(&id, Vec::new(), self.now).await.is_ok(),
                Err(_) => false,
            };
            if voided.is_ok() {
                self.stats.grants_voided += 1;
            }
            self.note(format!("void grant {grant_id} of {id}: {} / {removed}", voided.is_ok()));
            return;
        }
        let (id, grant_id, amount, terms) = if !self.grants.is_empty() && self.rng.chance(20) {
            // A resend after an unknown outcome: the same id and terms.
            let pick = self.rng.below(self.grants.len() as u64) as usize;
            let (index, grant_id, amount, terms) = self.grants[pick].clone();
            (self.accounts[index].clone(), grant_id, amount, terms)
        } else {
            let (index, id) = self.account();
            let n = self.next();
            let amount = cents(&mut self.rng, 1, 30);
            let expires_at = match self.rng.below(3) {
                0 => None,
                1 => Some(self.now + Duration::minutes(1 + self.rng.below(24 * 60) as i64)),
                _ => Some(self.now + Duration::days(1 + self.rng.below(20) as i64)),
            };
            let terms = ledger::GrantTerms {
                category: ledger::GrantCategory::Promotional,
                expires_at: expires_at.map(ledger::truncate_to_micros),
                priority: (self.rng.below(3) * 50) as u8,
            };
            let grant_id = format!("cg:sim-{n}");
            self.grants.push((index, grant_id.clone(), amount, terms.clone()));
            (id, grant_id, amount, terms)
        };
        let posting = Posting::grant(
            SourceId::parse(grant_id.clone()).expect("source"),
            amount,
            terms,
            self.now,
        )
        .expect("grant");
        let result = store.post(&id, vec![posting], self.now).await;
        if matches!(
            result.as_ref().map(|o| &o.results[0]),
            Ok(ledger::PostingResult::Applied { .. })
        ) {
            self.stats.grants_opened += 1;
        }
        self.note(format!("grant {grant_id} {} to {id}: {}", amount.value(), result.is_ok()));
    }

    /// The platform's side of holds: authorize (new or replayed), extend, release, report.
    async fn hold(&mut self) {
        let cards = sim_cards();
        let shared = self.store.clone();
        let store: &dyn LedgerStore = &*shared;
        let pick = if self.holds.is_empty() { 0 } else { self.rng.below(100) };
        match pick {
            0..=34 => {
                let (index, id) = self.account();
                let authorization = format!("auth-{}", self.next());
                let action = Action::Call {
                    direction: Direction::Outbound,
                    to: format!("+1555{:07}", self.rng.below(10_000_000)),
                };
                let before = store.account(&id).await.ok().flatten();
                let result =
                    holds::place(store, &cards, &id, &authorization, &action, self.now, 14_400)
                        .await;
                self.check_grant(&authorization, &result);
                if result.as_ref().is_ok_and(|a| a.decision.allowed) {
                    self.stats.holds_granted += 1;
                    if before.as_ref().is_some_and(|a| a.overdue_block.is_some()) {
                        self.hold_violations.push(format!(
                            "{authorization}: an outbound call granted on {id}, blocked for an overdue invoice"
                        ));
                    }
                    // The operator's policy: no outbound call while a dispute is open.
                    if before.is_some_and(|a| {
                        a.service_policy().suspend_while_disputed && !a.open_disputes.is_empty()
                    }) {
                        self.hold_violations.push(format!(
                            "{authorization}: an outbound call granted on {id} with a dispute open"
                        ));
                    }
                }
                if result
                    .as_ref()
                    .is_ok_and(|a| a.decision.reason == Some(usage::authorize::Denial::DisputeOpen))
                {
                    self.stats.dispute_denials += 1;
                }
                self.note(format!("authorize {id} {authorization} -> {}", describe(&result)));
                self.holds.push(SimHold {
                    account: index,
                    id: authorization,
                    report: None,
                    next_extension: 1,
                });
            }
            35..=49 => {
                // A retry after an unknown outcome (or a late duplicate): the same id again.
                let hold = self.holds[self.rng.below(self.holds.len() as u64) as usize].clone();
                let id = self.accounts[hold.account].clone();
                let existed =
                    store.account(&id).await.ok().flatten().and_then(|a| a.hold(&hold.id).cloned());
                let action =
                    Action::Call { direction: Direction::Outbound, to: "+15550000000".into() };
                let result =
                    holds::place(store, &cards, &id, &hold.id, &action, self.now, 14_400).await;
                if let (Some(_), Ok(answer)) = (&existed, &result) {
                    if !answer.replayed {
                        self.hold_violations
                            .push(format!("{}: replay of {} placed again", id, hold.id));
                    }
                }
                self.check_grant(&hold.id, &result);
                self.note(format!("re-authorize {id} {} -> {}", hold.id, describe(&result)));
            }
            50..=64 => {
                let at = self.rng.below(self.holds.len() as u64) as usize;
                let hold = self.holds[at].clone();
                let id = self.accounts[hold.account].clone();
                // Now and then a retry of the last extension instead of the next.
                let sequence = if hold.next_extension > 1 && self.rng.chance(30) {
                    hold.next_extension - 1
                } else {
                    hold.next_extension
                };
                let result =
                    holds::extend(store, &cards, &id, &hold.id, sequence, self.now, 14_400).await;
                if let Ok(answer) = &result {
                    if answer.decision.allowed
                        && !answer.replayed
                        && answer.available_usd < Decimal::ZERO
                    {
                        self.hold_violations.push(format!(
                            "{id}: extension of {} left {} available",
                            hold.id, answer.available_usd
                        ));
                    }
                    if answer.decision.allowed && sequence == hold.next_extension {
                        self.holds[at].next_extension += 1;
                    }
                }
                self.note(format!("extend {id} {} #{sequence} -> {}", hold.id, describe(&result)));
            }
            65..=72 => {
                let hold = self.holds[self.rng.below(self.holds.len() as u64) as usize].clone();
                let id = self.accounts[hold.account].clone();
                let result = holds::release(store, &id, &hold.id, self.now).await;
                self.note(format!("release {id} {} -> {}", hold.id, describe(&result)));
            }
            _ => {
                let at = self.rng.below(self.holds.len() as u64) as usize;
                let report = match self.holds[at].report.clone() {
                    Some(report) => report,
                    None => {
                        let seconds = 1 + self.rng.below(900) as u32;
                        let report = (format!("rep-{}", self.holds[at].id), seconds);
                        self.holds[at].report = Some(report.clone());
                        report
                    }
                };
                let hold = self.holds[at].clone();
                let id = self.accounts[hold.account].clone();
                let before = store.account(&id).await.ok().flatten();
                let was_active = before
                    .and_then(|a| a.hold(&hold.id).cloned())
                    .is_some_and(|h| h.is_active(self.now));
                let result = self.report(&hold, &report).await;
                if was_active && result.is_ok() {
                    // An active hold and its report meet in one write: it is settled now.
                    let store: &dyn LedgerStore = &*self.store;
                    let after = store.account(&id).await.ok().flatten();
                    if after.and_then(|a| a.hold(&hold.id).cloned()).is_some_and(|h| !h.settled) {
                        self.hold_violations
                            .push(format!("{id}: the report of {} left its hold active", hold.id));
                    }
                }
                if result.is_ok() {
                    self.stats.hold_reports += 1;
                }
                self.note(format!("report {} -> {}", hold.id, result.is_ok()));
            }
        }
    }

    /// Post (or redeliver) the report `(event id, seconds)` of `hold`: an answered outbound
    /// call with its authorization id.
    async fn report(
        &mut self,
        hold: &SimHold,
        (event, seconds): &(String, u32),
    ) -> Result<PostOutcome, StoreError> {
        let id = self.accounts[hold.account].clone();
        let event = call_event(event, &id, &hold.id, *seconds, self.now);
        let card = sim_cards().card(None).expect("the standard card");
        let store: &dyn LedgerStore = &*self.store;
        store.post_with(&id, Arc::new(RatedEvents { card, events: vec![event] }), self.now).await
    }

    /// A granted hold never leaves the account's available balance below zero.
    fn check_grant(&mut self, authorization: &str, result: &Result<HoldAnswer, HoldError>) {
        if let Ok(answer) = result {
            if answer.decision.allowed && !answer.replayed && answer.available_usd < Decimal::ZERO {
                self.hold_violations.push(format!(
                    "{authorization} granted with {} available afterwards",
                    answer.available_usd
                ));
            }
        }
    }

    async fn pay_now(&mut self) {
        // A retry of an earlier key (same amount, or now and then another one), or a new key.
        let retry = !self.pay_nows.is_empty() && self.rng.chance(40);
        // Retries reuse a key with the amount of one of its calls (whichever the claim kept).
        let (index, key, mut amount) = if retry {
            let call = self.pay_nows[self.rng.below(self.pay_nows.len() as u64) as usize].clone();
            (call.account, call.key, call.amount)
        } else {
            let (index, _) = self.account();
            let n = self.next();
            (index, format!("k{n}"), cents(&mut self.rng, 5, 150))
        };
        let mismatched = retry && self.rng.chance(10);
        if mismatched {
            amount = Amount::new(amount.value() + Decimal::ONE).expect("positive");
        }
        let id = self.accounts[index].clone();
        // A client account pays with its agency's cards.
        let Ok(payer) = profile::load_payer(&*self.store, &id).await else { return };
        let profile = payer.profile;
        let (Some(card), Some(customer)) =
            (profile.primary_card().cloned(), profile.processor_customer_id.clone())
        else {
            return;
        };
        self.maybe_processor_fault();
        let ports = PaymentPorts {
            store: &*self.store,
            processor: &*self.processor,
            notices: Some(&*self.notices),
        };
        let result =
            payment_flow::pay_now_with(&ports, &id, &key, amount, &card, &customer, self.now).await;
        let status = Some(http_status(&result));
        self.note(format!("pay_now {id} {key} {} -> {status:?}", amount.value()));
        self.pay_nows.push(PayNowCall { account: index, key, amount, last_status: status });
    }

    /// An operator refunds part of a succeeded payment (now and then more than is left), or
    /// repeats an earlier refund (now and then with another amount), with processor faults.
    async fn refund(&mut self) {
        self.stats.refund_calls += 1;
        let call = if !self.refunds.is_empty() && self.rng.chance(30) {
            let mut call = self.refunds[self.rng.below(self.refunds.len() as u64) as usize].clone();
            if self.rng.chance(10) {
                call.amount = Amount::new(call.amount.value() + Decimal::ONE).expect("positive");
            }
            call
        } else {
            let (index, id) = self.account();
            let Ok(docs) = self
                .store
                .list_docs(&id, DocKind::Payment, None, ledger::docs::MAX_DOCS_PER_LIST)
                .await
            else {
                return;
            };
            let succeeded: Vec<PaymentRecord> = docs
                .iter()
                .filter_map(|d| serde_json::from_str::<PaymentRecord>(&d.body).ok())
                .filter(|p| p.status == PaymentStatus::Succeeded)
                .collect();
            if succeeded.is_empty() {
                return;
            }
            let payment = &succeeded[self.rng.below(succeeded.len() as u64) as usize];
            // Up to a little more than what is left: some are refused as too much.
            let left_cents = (payment.refundable_usd() * Decimal::ONE_HUNDRED).trunc();
            let high = left_cents.to_string().parse::<u64>().unwrap_or(0) + 200;
            let cents = 1 + self.rng.below(high.max(1));
            let n = self.next();
            RefundCall {
                account: index,
                payment_id: payment.payment_id.clone(),
                key: format!("rf{n}"),
                amount: Amount::new(Decimal::new(cents as i64, 2)).expect("positive"),
            }
        };
        if self.rng.chance(self.config.processor_fault_percent) {
            self.stats.processor_faults += 1;
            let fault = match self.rng.below(3) {
                0 => RefundFault::Unreachable,
                1 => RefundFault::AnswerLost,
                _ => RefundFault::Fails,
            };
            self.note(format!("refund fault armed: {fault:?}"));
            self.processor.push_refund_fault(fault);
        }
        let id = self.accounts[call.account].clone();
        let ports = PaymentPorts {
            store: &*self.store,
            processor: &*self.processor,
            notices: Some(&*self.notices),
        };
        let ask = payment_flow::refund::RefundAsk {
            payment_id: call.payment_id.clone(),
            refund_id: call.key.clone(),
            amount: call.amount,
            reason: "simulated".into(),
            by: Some("sim".into()),
        };
        let result = payment_flow::refund::refund_payment(&ports, &id, ask, self.now).await;
        let said = match &result {
            Ok(answer) => format!("{:?}", answer.refund.status),
            Err(error) => error.to_string(),
        };
        self.note(format!(
            "refund {id} {} {} {} -> {said}",
            call.payment_id,
            call.key,
            call.amount.value()
        ));
        self.refunds.push(call);
    }

    /// A cardholder disputes a payment, or a dispute moves (funds withdrawn, won, lost); the
    /// processor's events for it are delivered late, duplicated, out of order or not at all.
    async fn dispute(&mut self) {
        let roll = self.rng.below(100);
        let open: Vec<String> = self
            .processor
            .disputes()
            .into_iter()
            .filter(|d| d.status == payments::DisputeStatus::Open)
            .map(|d| d.dispute_id)
            .collect();
        let moved = if roll < 35 || open.is_empty() {
            let payments = self.processor.succeeded_payments();
            if payments.is_empty() {
                return;
            }
            let (request, intent) = &payments[self.rng.below(payments.len() as u64) as usize];
            let cents = 1 + self.rng.below(request.amount_cents);
            self.processor
                .open_dispute(intent, cents)
                .ok()
                .and_then(|id| self.processor.disputes().into_iter().find(|d| d.dispute_id == id))
        } else {
            let id = &open[self.rng.below(open.len() as u64) as usize];
            match roll {
                35..=64 => self.processor.withdraw_dispute_funds(id),
                65..=84 => self.processor.decide_dispute(id, true),
                _ => self.processor.decide_dispute(id, false),
            }
        };
        if let Some(state) = moved {
            self.note(format!("dispute {} now {:?}", state.dispute_id, state));
            // One in five events is lost; the reconciliation at rest must catch it up.
            if !self.rng.chance(20) {
                self.dispute_events.push(state);
            }
        }
        // Now and then a refund the processor took fails afterwards.
        if self.rng.chance(15) {
            let sent: Vec<_> = self
                .processor
                .refunds()
                .into_iter()
                .filter(|(_, outcome)| !matches!(outcome, payments::RefundOutcome::Failed { .. }))
                .collect();
            if !sent.is_empty() {
                let (request, _) = &sent[self.rng.below(sent.len() as u64) as usize];
                if self.processor.fail_refund_later(&request.idempotency_key).is_some() {
                    self.note(format!(
                        "refund {} failed at the processor",
                        request.idempotency_key
                    ));
                    self.refund_failures
                        .push((request.payment_intent_id.clone(), request.idempotency_key.clone()));
                }
            }
        }
        if !self.refund_failures.is_empty() && self.rng.chance(50) {
            let (intent, key) = self.refund_failures
                [self.rng.below(self.refund_failures.len() as u64) as usize]
                .clone();
            self.deliver_refund_failure(&intent, &key).await;
        }
        // Deliver a few events, any of them, stale ones included, some twice.
        for _ in 0..self.rng.below(3) {
            if self.dispute_events.is_empty() {
                break;
            }
            let event = self.dispute_events
                [self.rng.below(self.dispute_events.len() as u64) as usize]
                .clone();
            let ports = PaymentPorts {
                store: &*self.store,
                processor: &*self.processor,
                notices: Some(&*self.notices),
            };
            let result = payment_flow::dispute::apply_dispute(&ports, &event, self.now).await;
            self.note(format!(
                "dispute event {} {:?} -> {}",
                event.dispute_id,
                event.status,
                match result {
                    Ok(applied) => format!("{} posted", applied.posted),
                    Err(error) => error.to_string(),
                }
            ));
        }
    }

    async fn deliver_refund_failure(&mut self, intent: &str, key: &str) {
        let ports = PaymentPorts {
            store: &*self.store,
            processor: &*self.processor,
            notices: Some(&*self.notices),
        };
        let result = payment_flow::refund::refund_failed_later(
            &ports,
            intent,
            key,
            "expired_or_canceled_card",
            self.now,
        )
        .await;
        let said = match &result {
            Ok(Some(answer)) => format!("{:?}", answer.refund.status),
            Ok(None) => "not ours".to_string(),
            Err(error) => error.to_string(),
        };
        self.note(format!("refund-failed event {key} -> {said}"));
    }

    async fn card_change(&mut self) {
        let (_, client) = self.account();
        // A client's cards are its agency's: they change there.
        let Ok(payer) = profile::load_payer(&*self.store, &client).await else { return };
        let (id, profile) = (payer.account, payer.profile);
        if profile.cards.len() > 1 && self.rng.chance(50) {
            // Delete the primary (the backup takes over), as a customer replacing a card would.
            let removed = profile.primary_card().map(|c| c.id.clone()).unwrap_or_default();
            let updated = profile::update(&*self.store, &id, |p| {
                p.cards.retain(|c| c.id != removed);
                if let Some(first) = p.cards.first_mut() {
                    first.role = CardRole::Primary;
                }
                Ok(())
            })
            .await;
            if updated.is_ok() {
                let _ = self.processor.detach_card(&removed).await;
            }
            self.note(format!("card {removed} deleted from {id}: {}", updated.is_ok()));
        } else if profile.cards.len() < 3 {
            let Some(customer) = profile.processor_customer_id.clone() else { return };
            let token = CARD_TOKENS[self.rng.below(CARD_TOKENS.len() as u64) as usize];
            let customer = payments::CustomerId(customer);
            let added = register_card(
                &*self.store,
                &*self.processor,
                &id,
                &customer,
                token,
                true,
                self.now,
            )
            .await;
            self.note(format!("card ({token}) added to {id}: {:?}", added.map(|c| c.id)));
        }
        let _ = payment_flow::rearm_auto_recharge(&*self.store, &client).await;
    }

    async fn settings_change(&mut self) {
        let (index, id) = self.account();
        // Sometimes the customer switches the plan's direct charge instead.
        if self.plans[index].is_some() && self.rng.chance(25) {
            let direct = self.rng.chance(50);
            let result = profile::update(&*self.store, &id, |p| {
                if let Some(plan) = p.plan.as_mut() {
                    plan.direct_charge = direct;
                }
                Ok(())
            })
            .await;
            self.note(format!("plan direct charge {id} -> {direct}: {}", result.is_ok()));
            return;
        }
        let enable = self.rng.chance(70);
        let store: &dyn LedgerStore = &*self.store;
        let result = store
            .modify_account(
                &id,
                Arc::new(move |a: &mut Account| {
                    if let Some(settings) = a.recharge.clone() {
                        a.recharge = Some(RechargeSettings::new(
                            enable,
                            settings.amount_usd(),
                            settings.threshold_usd(),
                            settings.mode(),
                        )?);
                    }
                    Ok(())
                }),
                self.now,
            )
            .await;
        self.note(format!("auto-recharge {id} enabled={enable}: {}", result.is_ok()));
    }

    /// The outbox relay: publish pending events to the queue, then acknowledge them (a crash
    /// in between publishes them again).
    async fn relay(&mut self) {
        let shared = self.store.clone();
        let store: &dyn LedgerStore = &*shared;
        let Ok(events) = store.pending_events(50).await else { return };
        for event in events {
            self.saw(&event);
            let wanted = event.kind.for_payments_worker();
            if wanted {
                let copies = if self.rng.chance(5) { 2 } else { 1 };
                for _ in 0..copies {
                    self.queue.push(Message {
                        event: event.clone(),
                        visible_at: self.now,
                        receives: 0,
                    });
                }
            }
            if !self.rng.chance(5) {
                let _ = store.ack_event(&event).await;
            }
        }
    }

    /// Receive one visible message, in random order, and work it as the Lambda would.
    async fn deliver(&mut self) {
        let visible: Vec<usize> =
            (0..self.queue.len()).filter(|&i| self.queue[i].visible_at <= self.now).collect();
        if visible.is_empty() {
            return;
        }
        let index = visible[self.rng.below(visible.len() as u64) as usize];
        self.maybe_processor_fault();
        self.stats.deliveries += 1;
        let mut message = self.queue.remove(index);
        message.receives += 1;
        let outcome = self.worker.handle(&message.event, self.now).await;
        self.note(format!(
            "deliver {} (receive {}) -> {outcome:?}",
            message.event.id, message.receives
        ));
        let hold_until = match outcome {
            Ok(Outcome::RetryAt(at) | Outcome::NotYet(at)) => {
                Some(at.min(self.now + Duration::seconds(messaging::queue::MAX_HOLD_SECONDS)))
            }
            Ok(_) => None,
            Err(_) => Some(self.now + Duration::seconds(VISIBILITY_SECONDS)),
        };
        let Some(until) = hold_until else { return };
        if message.receives >= recharge::REQUEUE_AFTER_RECEIVES {
            // The consumer sends a fresh copy and deletes this one (`sqs::requeue`): the
            // request lives on with its durable state instead of dead-lettering.
            message.receives = 0;
        }
        if message.receives >= MAX_RECEIVES {
            self.stats.dead_letters += 1;
            self.dead_letters.push(message);
            return;
        }
        message.visible_at = until.max(self.now + Duration::seconds(1));
        self.queue.push(message);
    }

    /// Stop the faults and drive everything to rest: relay, deliver, let time pass.
    async fn quiesce(&mut self) {
        self.store.set_percent(0);
        self.processor.clear_faults();
        self.config.processor_fault_percent = 0;
        // The platform's queue redelivers every report until it is acknowledged: once more
        // each, now that nothing fails.
        for hold in self.holds.clone() {
            let Some(report) = &hold.report else { continue };
            if let Err(error) = self.report(&hold, report).await {
                self.hold_violations.push(format!("report of {} failed at rest: {error}", hold.id));
            }
        }
        // The monthly run once more, now that nothing fails: it finishes an invoice whose
        // numbering a fault interrupted (and raises its pre-authorized charge).
        for id in self.accounts.clone() {
            self.invoice(&id).await;
        }
        self.drain().await;
        // Stripe redelivers a refund's failure until it is acknowledged: each at least once more.
        for (intent, key) in self.refund_failures.clone() {
            self.deliver_refund_failure(&intent, &key).await;
        }
        // Once every payment has settled, the scheduled reconciliation applies every dispute as
        // the processor has it now (and what its postings raise is drained).
        let ports = PaymentPorts {
            store: &*self.store,
            processor: &*self.processor,
            notices: Some(&*self.notices),
        };
        if let Err(error) =
            payment_flow::dispute::reconcile_disputes(&ports, self.started, self.now).await
        {
            self.hold_violations.push(format!("dispute reconciliation failed at rest: {error}"));
        }
        // And every refund made at the processor outside the system.
        if let Err(error) =
            payment_flow::refund::reconcile_external_refunds(&ports, self.started, self.now).await
        {
            self.hold_violations.push(format!("refund reconciliation failed at rest: {error}"));
        }
        self.drain().await;
        // The daily sweep once more: nothing expired may be left on an account.
        self.sweep_releases().await;
        self.drain().await;
    }

    /// Relay and deliver until the outbox and the queue are empty.
    async fn drain(&mut self) {
        // Up to about 24 weeks of simulated time: a plan period paid from three bank accounts
        // whose debits all come back takes three attempts of nine days each (three days a
        // debit), and periods falling due meanwhile are charged too, each after the one
        // before: a backlog of such periods shrinks by only a few days a month.
        for _ in 0..8_000 {
            self.relay_all().await;
            let mut worked = false;
            while self.queue.iter().any(|m| m.visible_at <= self.now) {
                self.deliver().await;
                worked = true;
            }
            let store: &dyn LedgerStore = &*self.store;
            let outbox_empty = store.pending_events(1).await.map(|e| e.is_empty()).unwrap_or(false);
            if self.queue.is_empty() && outbox_empty && !worked {
                break;
            }
            self.now += Duration::minutes(30);
            self.processor.set_now(self.now);
        }
    }

    async fn relay_all(&mut self) {
        let shared = self.store.clone();
        let store: &dyn LedgerStore = &*shared;
        for _ in 0..100 {
            let Ok(events) = store.pending_events(50).await else { return };
            if events.is_empty() {
                return;
            }
            for event in events {
                self.saw(&event);
                if event.kind.for_payments_worker() {
                    self.queue.push(Message {
                        event: event.clone(),
                        visible_at: self.now,
                        receives: 0,
                    });
                }
                let _ = store.ack_event(&event).await;
            }
        }
    }

    fn violation(&self, message: String) -> Violation {
        let start = if self.config.full_log { 0 } else { self.log.len().saturating_sub(40) };
        Violation { seed: self.seed, message, log_tail: self.log[start..].to_vec() }
    }
}

/// The status the HTTP API answers a Pay Now with (`api::payments::answer_response` and the
/// API's error mapping): what a client is told is what the invariants hold it to.
pub fn http_status(result: &Result<PayNowAnswer, PayNowError>) -> u16 {
    match result {
        Ok(PayNowAnswer::Credited { .. }) => 201,
        Ok(PayNowAnswer::Pending { .. }) => 202,
        Ok(PayNowAnswer::Rejected { .. }) => 400,
        Ok(PayNowAnswer::Declined { .. }) => 402,
        Err(PayNowError::KeyReused) => 422,
        Err(PayNowError::InProgress) => 409,
        Err(PayNowError::TooManyPending) => 429,
        Err(_) => 500,
    }
}

/// Everything every account's ledger says, in one pass.
async fn all_entries(store: &dyn LedgerStore, id: &AccountId) -> Vec<ledger::Entry> {
    let query = EntryQuery {
        from: None,
        to: None,
        show: ledger::Show::All,
        cursor: None,
        limit: ledger::store::MAX_PAGE_SIZE,
    };
    ledger::store::all_entries(store, id, query).await.expect("entries")
}

/// The invariants, at quiescence (and one watched as it happens: a fresh auto-recharge charge
/// is only sent while auto-recharge is on and the balance is below its threshold):
/// 1. every successful processor charge is credited exactly once, for its amount, and no
///    credit of funds exists without a successful charge;
/// 2. every account's entries form an unbroken chain that adds up to its balance;
/// 3. every payment record is final (none stays pending);
/// 4. nothing is wedged: no queue message dead-lettered, no recharge left in flight with
///    nothing working on it, no account with auto-recharge on below its threshold unless it
///    stopped (and said so) this month, no Pay Now left pending on the account;
/// 5. a Pay Now answered with a refusal (4xx) charged nothing under its key, and one answered
///    201 was credited;
/// 6. every successful payment has its receipt published.
pub async fn check(world: &World) -> Result<(), Violation> {
    let store: &dyn LedgerStore = &*world.store;
    if let Some(violation) = world.watched.violations().first() {
        return Err(world.violation(violation.clone()));
    }
    if let Some(violation) = world.hold_violations.first() {
        return Err(world.violation(violation.clone()));
    }
    check_holds(world).await?;
    check_releases(world).await?;
    check_disputes(world).await?;
    check_grants(world).await?;
    check_caps(world).await?;
    check_plans(world).await?;
    check_invoices(world).await?;
    let succeeded = world.processor.succeeded_payments();
    let mut charged: BTreeMap<String, (Decimal, String)> = BTreeMap::new();
    for (request, payment_intent_id) in &succeeded {
        charged.insert(
            payment_intent_id.clone(),
            (Decimal::new(request.amount_cents as i64, 2), request.idempotency_key.clone()),
        );
    }
    // A client account's payments are charged to its agency's cards, never to cards of its own.
    for id in &world.accounts {
        let (client, _) = profile::load(&*world.store, id).await.expect("profile");
        let Some(agency) = client.agency_id else { continue };
        let (agency_profile, _) = profile::load(&*world.store, &agency).await.expect("profile");
        for (request, _) in &succeeded {
            if payments::account_of_key(&request.idempotency_key) != Some(id.as_str()) {
                continue;
            }
            if agency_profile.processor_customer_id.as_deref() != Some(request.customer.0.as_str())
            {
                return Err(world.violation(format!(
                    "{id}: payment {} charged to {}, not to its agency {agency}'s cards",
                    request.idempotency_key, request.customer.0
                )));
            }
        }
    }
    let mut credited: HashMap<String, Decimal> = HashMap::new();
    for id in &world.accounts {
        let account = store.account(id).await.expect("read").expect("account");
        let entries = all_entries(store, id).await;
        if let Err(error) =
            ledger::verify_chain(account.opening_balance_usd, &entries, account.balance_usd)
        {
            return Err(world.violation(format!("{id}: broken chain: {error:?}")));
        }
        let sum: Decimal = entries.iter().map(|e| e.signed_amount_usd()).sum();
        if account.opening_balance_usd + sum != account.balance_usd {
            return Err(world.violation(format!("{id}: balance is not the sum of its entries")));
        }
        for entry in entries.iter().filter(|e| e.item == BillingItem::FundsAdded) {
            if entry.kind != EntryKind::Credit {
                continue;
            }
            let Some(pi) = entry.details.get("processor_payment_id").and_then(|v| v.as_str())
            else {
                return Err(world.violation(format!("{id}: funds added without a payment")));
            };
            if credited.insert(pi.to_string(), entry.amount_usd.value()).is_some() {
                return Err(world.violation(format!("{id}: payment {pi} credited twice")));
            }
            match charged.get(pi) {
                None => {
                    return Err(
                        world.violation(format!("{id}: payment {pi} credited but never charged"))
                    )
                }
                Some((cents, _)) if *cents != entry.amount_usd.value() => {
                    return Err(world.violation(format!(
                        "{id}: payment {pi} charged {cents} but credited {}",
                        entry.amount_usd.value()
                    )))
                }
                Some(_) => {}
            }
        }
        if !account.pending_payments.is_empty() {
            return Err(world.violation(format!(
                "{id}: payments left pending: {:?}",
                account.pending_payments
            )));
        }
        if let Some(request) = &account.recharge_in_flight {
            return Err(world.violation(format!("{id}: recharge {request} wedged in flight")));
        }
        if let Some(settings) = account.recharge.as_ref().filter(|s| s.enabled()) {
            // A stop (this month's, or an earlier month's not yet lifted by a posting) said so.
            let stopped = account.recharge_stopped.is_some();
            // One top-up per crossing: a recharge credited after the last debit may leave the
            // balance below the threshold (Add mode after one large debit); the next debit
            // raises the next request.
            let last_debit =
                entries.iter().rev().find(|e| e.kind == EntryKind::Debit).map(|e| e.seq);
            let recharged_since = entries.iter().any(|e| {
                e.item == BillingItem::FundsAdded
                    && e.source_id.as_str().starts_with("rch:")
                    && last_debit.is_none_or(|seq| e.seq > seq)
            });
            if account.balance_usd < settings.threshold_usd().value()
                && !stopped
                && !recharged_since
            {
                return Err(world.violation(format!(
                    "{id}: auto-recharge on, balance {} below {}, nothing in flight, not stopped",
                    account.balance_usd,
                    settings.threshold_usd().value()
                )));
            }
        }
        let docs = world
            .store
            .list_docs(id, DocKind::Payment, None, ledger::docs::MAX_DOCS_PER_LIST)
            .await
            .expect("payments");
        if !account.pending_refunds.is_empty() {
            return Err(world
                .violation(format!("{id}: refunds left pending: {:?}", account.pending_refunds)));
        }
        // Card-refund entries by (payment, refund id): debits and credits.
        type Moves = (Vec<Decimal>, Vec<Decimal>);
        let mut refund_entries: BTreeMap<(String, String), Moves> = BTreeMap::new();
        for entry in entries.iter().filter(|e| e.item == BillingItem::CardRefund) {
            let text = |key: &str| {
                entry.details.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string()
            };
            let moves = refund_entries.entry((text("payment_id"), text("refund_id"))).or_default();
            match entry.kind {
                EntryKind::Debit => moves.0.push(entry.amount_usd.value()),
                EntryKind::Credit => moves.1.push(entry.amount_usd.value()),
            }
        }
        for doc in docs {
            let record: PaymentRecord = serde_json::from_str(&doc.body).expect("payment record");
            if record.status == PaymentStatus::Pending {
                return Err(
                    world.violation(format!("{id}: payment {} left pending", record.payment_id))
                );
            }
            let intent = record.processor_payment_id.as_deref().unwrap_or_default();
            let at_processor = Decimal::new(world.processor.refunded_cents(intent) as i64, 2);
            if record.refunds.is_empty() && at_processor.is_zero() {
                continue;
            }
            let pid = &record.payment_id;
            let refunded: Decimal = record
                .refunds
                .iter()
                .filter(|r| r.status != RefundStatus::Failed)
                .map(|r| r.amount_usd.value())
                .sum();
            if refunded > record.amount_usd.value() {
                return Err(world.violation(format!("{id}: payment {pid} refunded beyond itself")));
            }
            let mut returned = Decimal::ZERO;
            for line in &record.refunds {
                let key = (pid.clone(), line.refund_id.clone());
                let (debits, credits) = refund_entries.remove(&key).unwrap_or_default();
                let failed = line.status == RefundStatus::Failed;
                let want_credits = if failed { vec![line.amount_usd.value()] } else { vec![] };
                if line.status == RefundStatus::Requested
                    || debits != vec![line.amount_usd.value()]
                    || credits != want_credits
                {
                    return Err(world.violation(format!(
                        "{id}: refund {} of {pid} is {:?} with debits {debits:?} and credits \
                         {credits:?}",
                        line.refund_id, line.status
                    )));
                }
                if !failed {
                    returned += line.amount_usd.value();
                }
            }
            if at_processor != returned {
                return Err(world.violation(format!(
                    "{id}: payment {pid}: {returned} refunded in the ledger, {at_processor} at \
                     the processor"
                )));
            }
        }
        if let Some(((pid, refund), _)) = refund_entries.into_iter().next() {
            return Err(world.violation(format!(
                "{id}: card-refund entries for refund {refund} of {pid}, which has no record"
            )));
        }
    }
    for (pi, (_, key)) in &charged {
        if !credited.contains_key(pi) {
            return Err(
                world.violation(format!("payment {pi} (key {key}) charged, never credited"))
            );
        }
    }
    if let Some(message) = world.dead_letters.first() {
        return Err(world.violation(format!("dead-lettered: {}", message.event.id)));
    }
    for call in &world.pay_nows {
        let id = &world.accounts[call.account];
        let processor_key = format!("pay:{id}:{}", call.key);
        let cents = (call.amount.value() * Decimal::ONE_HUNDRED).trunc();
        let charged_this = succeeded.iter().any(|(r, _)| {
            r.idempotency_key == processor_key && Decimal::from(r.amount_cents) == cents
        });
        match call.last_status {
            // A refusal changes nothing: this request's payment was never charged.
            Some(400 | 402 | 422) if charged_this => {
                return Err(world.violation(format!(
                    "Pay Now {} of {} was refused ({:?}) but charged",
                    call.key,
                    call.amount.value(),
                    call.last_status
                )));
            }
            Some(201) if !charged_this => {
                return Err(world
                    .violation(format!("Pay Now {} said 201 but nothing was charged", call.key)));
            }
            _ => {}
        }
    }
    let receipts: Vec<String> = world
        .notices
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|n| n.kind.as_str() == "payment_receipt")
        .map(|n| n.id.clone())
        .collect();
    let successful_records = {
        let mut ids = Vec::new();
        for id in &world.accounts {
            for doc in world
                .store
                .list_docs(id, DocKind::Payment, None, ledger::docs::MAX_DOCS_PER_LIST)
                .await
                .expect("payments")
            {
                let record: PaymentRecord = serde_json::from_str(&doc.body).expect("record");
                if record.status == PaymentStatus::Succeeded {
                    ids.push(format!("receipt:{id}:{}", record.payment_id));
                }
            }
        }
        ids
    };
    for receipt in successful_records {
        if !receipts.contains(&receipt) {
            return Err(world.violation(format!("no receipt published: {receipt}")));
        }
    }
    Ok(())
}

/// Disputes at rest, after the reconciliation: each dispute's money steps are in the ledger
/// exactly as far as the processor took them (funds and fee debited once if withdrawn, credited
/// back once if reinstated, nothing else), and its payment's record says how it ended.
async fn check_disputes(world: &World) -> Result<(), Violation> {
    let store: &dyn LedgerStore = &*world.store;
    let mut entries_by_source: HashMap<String, Vec<ledger::Entry>> = HashMap::new();
    for id in &world.accounts {
        for entry in all_entries(store, id).await {
            if entry.item == BillingItem::Dispute {
                entries_by_source
                    .entry(entry.source_id.as_str().to_string())
                    .or_default()
                    .push(entry);
            }
        }
    }
    for dispute in world.processor.disputes() {
        let withdrawn = dispute.funds_withdrawn || dispute.funds_reinstated;
        let steps = [
            ("funds", EntryKind::Debit, withdrawn, dispute.amount_cents),
            ("fee", EntryKind::Debit, withdrawn, dispute.fee_cents),
            ("funds-back", EntryKind::Credit, dispute.funds_reinstated, dispute.amount_cents),
            ("fee-back", EntryKind::Credit, dispute.funds_reinstated, dispute.fee_cents),
        ];
        for (part, kind, due, cents) in steps {
            let source = format!("dsp:{}:{part}", dispute.dispute_id);
            let found = entries_by_source.remove(&source).unwrap_or_default();
            let want = if due && cents > 0 { 1 } else { 0 };
            let right = found.len() == want
                && found.iter().all(|e| {
                    e.kind == kind && e.amount_usd.value() == Decimal::new(cents as i64, 2)
                });
            if !right {
                return Err(world.violation(format!(
                    "dispute {} ({:?}): {} entries for {source}, expected {want}",
                    dispute.dispute_id,
                    dispute,
                    found.len()
                )));
            }
        }
    }
    if let Some(source) = entries_by_source.keys().next() {
        return Err(world.violation(format!("dispute entry {source} for no processor dispute")));
    }
    // Each account lists exactly its disputes that are open at the processor (all applied by
    // the reconciliation at rest).
    let mut open: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for dispute in world.processor.disputes() {
        if dispute.status != payments::DisputeStatus::Open {
            continue;
        }
        let account = world.processor.payment_account(&dispute.payment_intent_id).await;
        if let Ok(Some(account)) = account {
            open.entry(account).or_default().insert(dispute.dispute_id.clone());
        }
    }
    for id in &world.accounts {
        let account = store.account(id).await.expect("read").expect("account");
        let listed: std::collections::BTreeSet<String> =
            account.open_disputes.iter().cloned().collect();
        let expected = open.remove(id.as_str()).unwrap_or_default();
        if listed != expected {
            return Err(world.violation(format!(
                "{id}: lists open disputes {listed:?}, the processor has {expected:?}"
            )));
        }
    }
    Ok(())
}

/// Plans at rest: every period started by the last sweep charged exactly once, at the plan's
/// price, and nothing else; the plan's next renewal is the first period not charged.
async fn check_plans(world: &World) -> Result<(), Violation> {
    let store: &dyn LedgerStore = &*world.store;
    for (index, id) in world.accounts.iter().enumerate() {
        let fees: Vec<ledger::Entry> = all_entries(store, id)
            .await
            .into_iter()
            .filter(|e| e.item == BillingItem::PlanFee)
            .collect();
        let Some(plan) = &world.plans[index] else {
            if !fees.is_empty() {
                return Err(world.violation(format!("{id}: plan fees without a plan")));
            }
            continue;
        };
        // Every period from the first to the plan's next renewal charged once (the balance's
        // sweep charges all that are due; a card-paid period that paid chains to the next one
        // due, so a drain that ran past a renewal may have paid one more), and nothing that
        // the last sweep saw due is left unpaid.
        let (profile, _) = profile::load(&*world.store, id).await.expect("profile");
        let Some(next) = profile.plan.as_ref().map(|p| p.next_renewal) else {
            return Err(world.violation(format!("{id}: the plan is gone")));
        };
        let mut expected = Vec::new();
        let mut start = plan.next_renewal;
        while start < next {
            expected.push(documents::plan::fee_source_id(start));
            start = plan.period_end(start, plan.terms.period);
        }
        let charged: Vec<String> = fees.iter().map(|e| e.source_id.to_string()).collect();
        if charged != expected
            || start != next
            || next <= world.swept_at.date_naive()
            || fees.iter().any(|e| e.amount_usd != plan.terms.price_usd)
        {
            return Err(world.violation(format!(
                "{id}: plan fees {charged:?}, next renewal {next}, last sweep {} at {}",
                world.swept_at.date_naive(),
                plan.terms.price_usd.value()
            )));
        }
        // A period is charged to one card at most (an unknown outcome is settled before any
        // other card is tried).
        let mut periods: Vec<String> = world
            .processor
            .succeeded_payments()
            .iter()
            .filter_map(|(request, _)| {
                let rest = request.idempotency_key.strip_prefix(&format!("plan:{id}:"))?;
                Some(rest.split('/').next().unwrap_or_default().to_string())
            })
            .collect();
        let paid = periods.len();
        periods.sort();
        periods.dedup();
        if periods.len() != paid {
            return Err(world.violation(format!("{id}: a plan period charged to two cards")));
        }
        if profile.plan.as_ref().is_some_and(|p| p.direct_attempts.is_some()) {
            return Err(world.violation(format!("{id}: direct-charge attempts left at rest")));
        }
        // A period a card paid has the payment's credit of the same amount beside it (the
        // balance did not move), and that payment is the plan's.
        for fee in &fees {
            if fee.details.get("paid_by").and_then(|v| v.as_str()) != Some("card") {
                continue;
            }
            let payment = fee.details.get("payment_id").and_then(|v| v.as_str());
            let beside = all_entries(store, id).await.into_iter().any(|e| {
                e.item == BillingItem::FundsAdded
                    && e.details.get("payment_id").and_then(|v| v.as_str()) == payment
                    && e.details.get("trigger").and_then(|v| v.as_str()) == Some("plan")
                    && e.amount_usd == fee.amount_usd
            });
            if !beside {
                return Err(world.violation(format!(
                    "{id}: plan fee {} paid by card without its payment's credit",
                    fee.source_id
                )));
            }
        }
    }
    Ok(())
}

/// Postpaid invoices at rest:
/// - numbered `RL-000001` onwards without a gap or a number given twice (one issuer);
/// - each one what its month's ledger says (an issued invoice never changes): the month's
///   entries by billing item, the balances, the amount due;
/// - never paid beyond its amount due, each payment applied once and backed by a credit of
///   the same amount under the same source id;
/// - charged to a card at most once, and each card charge applied to it;
/// - a pre-authorized invoice still owing something has had every attempt, and no invoice
///   charge is left pending on the account.
async fn check_invoices(world: &World) -> Result<(), Violation> {
    let store: &dyn LedgerStore = &*world.store;
    let mut numbers = Vec::new();
    let succeeded = world.processor.succeeded_payments();
    for (index, id) in world.accounts.iter().enumerate() {
        let invoices = documents::invoice::list(&*world.store, id).await.expect("invoices");
        if !world.postpaid[index] && !invoices.is_empty() {
            return Err(world.violation(format!("{id}: a prepaid account was invoiced")));
        }
        let (profile, _) = profile::load(&*world.store, id).await.expect("profile");
        let entries = all_entries(store, id).await;
        for invoice in &invoices {
            let Some(number) = invoice.number.clone() else {
                return Err(
                    world.violation(format!("{id}: invoice {} left unnumbered", invoice.month))
                );
            };
            numbers.push(number.clone());
            let expected =
                jobs::invoices::draft(store, &*world.store, id, invoice.month, world.now)
                    .await
                    .map_err(|e| {
                        world.violation(format!("{id}: {number} cannot be recomputed: {e}"))
                    })?;
            if (
                &expected.lines,
                expected.opening_balance_usd,
                expected.closing_balance_usd,
                expected.amount_due_usd,
                expected.previous_unpaid_usd,
                expected.first_seq,
                expected.last_seq,
            ) != (
                &invoice.lines,
                invoice.opening_balance_usd,
                invoice.closing_balance_usd,
                invoice.amount_due_usd,
                invoice.previous_unpaid_usd,
                invoice.first_seq,
                invoice.last_seq,
            ) {
                return Err(world.violation(format!(
                    "{id}: {number} differs from its month's ledger: {invoice:?} against {expected:?}"
                )));
            }
            // Credit notes: numbered per invoice without gaps, never more than it asked for,
            // each credited to the ledger once, for its amount (the sweep posted any a fault
            // left behind).
            let mut credited = Decimal::ZERO;
            for (n, note) in invoice.credit_notes.iter().enumerate() {
                credited += note.amount_usd;
                if note.number != format!("{number}-CN-{:02}", n + 1) || !note.credited {
                    return Err(world.violation(format!("{id}: {number} credit note {note:?}")));
                }
                let posted: Vec<_> =
                    entries.iter().filter(|e| e.source_id.as_str() == note.source_id()).collect();
                if posted.len() != 1
                    || posted[0].amount_usd.value() != note.amount_usd
                    || posted[0].kind != ledger::EntryKind::Credit
                {
                    return Err(world.violation(format!(
                        "{id}: credit note {} posted as {posted:?}",
                        note.number
                    )));
                }
            }
            if credited > invoice.amount_due_usd {
                return Err(
                    world.violation(format!("{id}: {number} credited beyond its amount due"))
                );
            }
            // (A note may credit an invoice already paid: the credit stays on the balance.)
            if invoice.paid_usd() > invoice.amount_due_usd {
                return Err(world.violation(format!("{id}: {number} paid beyond its amount due")));
            }
            let mut sources: Vec<&str> =
                invoice.payments.iter().map(|p| p.source_id.as_str()).collect();
            let applied = sources.len();
            sources.sort();
            sources.dedup();
            if sources.len() != applied {
                return Err(world.violation(format!("{id}: {number} has a payment applied twice")));
            }
            for payment in &invoice.payments {
                let credit = entries.iter().find(|e| e.source_id.as_str() == payment.source_id);
                if credit.is_none_or(|e| e.amount_usd.value() < payment.amount_usd) {
                    return Err(world.violation(format!(
                        "{id}: {number} has {} applied without its credit",
                        payment.source_id
                    )));
                }
            }
            // Card charges of this invoice: at most one succeeded, and it is applied.
            let prefix = format!("pay:{id}:inv:{}/", invoice.month);
            let charged: Vec<String> = succeeded
                .iter()
                .filter(|(request, _)| request.idempotency_key.starts_with(&prefix))
                .map(|(request, _)| {
                    format!(
                        "pay:{}",
                        request.idempotency_key.trim_start_matches(&format!("pay:{id}:"))
                    )
                })
                .collect();
            if charged.len() > 1 {
                return Err(world.violation(format!(
                    "{id}: {number} charged to cards {} times",
                    charged.len()
                )));
            }
            // Applied to it, unless other payments (a Pay Now made while the charge's outcome
            // was unknown) paid it in full first: then its credit stays on the balance.
            if let Some(source) = charged.first() {
                let credited = entries.iter().any(|e| e.source_id.as_str() == source);
                let paid_without = invoice.outstanding_usd().is_zero() && credited;
                if !invoice.payments.iter().any(|p| &p.source_id == source) && !paid_without {
                    return Err(world
                        .violation(format!("{id}: {number}'s card payment {source} not applied")));
                }
            }
            let failed = invoice.autopay.as_ref().map_or(0, |a| a.failed);
            if profile.pre_authorized_payment
                && invoice.outstanding_usd() > Decimal::ZERO
                && failed < documents::invoice::MAX_AUTOPAY_ATTEMPTS
                && charged.is_empty()
            {
                return Err(world.violation(format!(
                    "{id}: {number} owes {} with {failed} failed attempts and no charge",
                    invoice.outstanding_usd()
                )));
            }
        }
        let account = store.account(id).await.expect("account").expect("exists");
        if let Some(key) = account.pending_payments.iter().find(|k| k.starts_with("inv:")) {
            return Err(world.violation(format!("{id}: invoice charge {key} left pending")));
        }
        // Dunning at rest, after the final sweep: a blocked account is suspended and has an
        // invoice overdue past the limit (nobody stays blocked for an invoice that is paid).
        // (That every such invoice blocks its account is checked as each sweep runs.)
        let limit = i64::from(account.service_policy().block_after_days_overdue);
        let today = world.now.date_naive();
        let overdue = |invoices: &[documents::invoice::Invoice], balance: Decimal| {
            balance < Decimal::ZERO
                && !jobs::invoices::overdue_past(invoices, today, limit).is_empty()
        };
        if let Some(block) = &account.overdue_block {
            if account.status != ledger::AccountStatus::Suspended {
                return Err(
                    world.violation(format!("{id}: blocked for {} yet active", block.month))
                );
            }
            if !overdue(&invoices, account.balance_usd) {
                return Err(world.violation(format!(
                    "{id}: blocked for {} with nothing overdue that long: {invoices:?}",
                    block.month
                )));
            }
        }
    }
    numbers.sort();
    let expected: Vec<String> =
        (1..=numbers.len() as u64).map(|n| documents::invoice::format_number("RL", n)).collect();
    if numbers != expected {
        return Err(world.violation(format!("invoice numbers {numbers:?}: gaps or repeats")));
    }
    Ok(())
}

/// The auto-recharge caps' record at rest: every settled recharge (and, where the operator says
/// so, every Pay Now) counted exactly once, and no day of an account that counts only
/// auto-recharge past its daily cap.
async fn check_caps(world: &World) -> Result<(), Violation> {
    let store: &dyn LedgerStore = &*world.store;
    for (index, id) in world.accounts.iter().enumerate() {
        let mut counted = Decimal::ZERO;
        let mut month = ledger::Month::of(world.started);
        while month <= ledger::Month::of(world.now) {
            let spend = documents::spend::load(&*world.store, id, month).await.expect("spend");
            counted += spend.total_usd;
            if let (Some(cap), false) = (world.daily_caps[index], world.count_manual[index]) {
                if let Some((day, spent)) = spend.by_day.iter().find(|(_, v)| **v > cap.value()) {
                    return Err(world.violation(format!(
                        "{id}: auto-recharge spent {spent} on {day}, past the daily cap {}",
                        cap.value()
                    )));
                }
            }
            month = month.next();
        }
        let paid: Decimal = all_entries(store, id)
            .await
            .iter()
            .filter(|e| e.item == BillingItem::FundsAdded && e.kind == EntryKind::Credit)
            .filter(|e| {
                let trigger = e.details.get("trigger").and_then(|t| t.as_str());
                trigger == Some("auto") || (trigger == Some("manual") && world.count_manual[index])
            })
            .map(|e| e.amount_usd.value())
            .sum();
        if counted != paid {
            return Err(world.violation(format!(
                "{id}: the caps' record counts {counted}, the ledger's counted payments {paid}"
            )));
        }
    }
    Ok(())
}

/// Credit grants at rest:
/// - each grant opened at most once, for what was asked, and removed at most once;
/// - each grant's remainder on the account is what its entries' shares add up to, never below
///   zero, and a grant with nothing left is gone from the account;
/// - no debit drew on a grant at or after its expiry (the asked one, or a void's, which the
///   removal entry is dated at), and money bound for the card processor (card refunds,
///   chargebacks) never came out of a grant;
/// - a removal takes only from its own grant, all of what was left: paid funds never expire;
/// - after the final sweep, no expired grant is left on any account.
async fn check_grants(world: &World) -> Result<(), Violation> {
    let store: &dyn LedgerStore = &*world.store;
    let asked: HashMap<&str, (&Amount, &ledger::GrantTerms)> =
        world.grants.iter().map(|(_, id, amount, terms)| (id.as_str(), (amount, terms))).collect();
    for id in &world.accounts {
        let account = store.account(id).await.expect("read").expect("account");
        let entries = all_entries(store, id).await;
        let mut left: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut opened: BTreeMap<String, usize> = BTreeMap::new();
        let mut removed_at: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for entry in &entries {
            if entry.item == BillingItem::CreditGrant && entry.kind == EntryKind::Credit {
                let grant = entry.source_id.as_str();
                *opened.entry(grant.to_string()).or_default() += 1;
                match asked.get(grant) {
                    Some((amount, _)) if **amount == entry.amount_usd => {}
                    _ => return Err(world.violation(format!("{id}: grant {grant} not as asked"))),
                }
            }
            if entry.item == BillingItem::CreditGrant && entry.kind == EntryKind::Debit {
                let [share] = entry.grants.as_slice() else {
                    return Err(world.violation(format!(
                        "{id}: removal {} takes from several grants",
                        entry.seq
                    )));
                };
                if share.amount_usd != entry.amount_usd.value()
                    || entry.source_id.as_str() != ledger::grant::expiry_source_id(&share.grant)
                {
                    return Err(
                        world.violation(format!("{id}: removal {} is not its grant's", entry.seq))
                    );
                }
                if removed_at.insert(share.grant.clone(), entry.occurred_at).is_some() {
                    return Err(
                        world.violation(format!("{id}: grant {} removed twice", share.grant))
                    );
                }
            }
            if matches!(entry.item, BillingItem::CardRefund | BillingItem::Dispute)
                && !entry.grants.is_empty()
            {
                return Err(world.violation(format!(
                    "{id}: entry {} sent a grant to the processor",
                    entry.seq
                )));
            }
            for share in &entry.grants {
                let moved = match entry.kind {
                    EntryKind::Credit => share.amount_usd,
                    EntryKind::Debit => -share.amount_usd,
                };
                let now_left = *left.entry(share.grant.clone()).or_default() + moved;
                left.insert(share.grant.clone(), now_left);
                if now_left < Decimal::ZERO {
                    return Err(world.violation(format!(
                        "{id}: grant {} overdrawn at entry {}",
                        share.grant, entry.seq
                    )));
                }
                let drew = entry.kind == EntryKind::Debit && entry.item != BillingItem::CreditGrant;
                let expiry = asked.get(share.grant.as_str()).and_then(|(_, t)| t.expires_at);
                if drew && expiry.is_some_and(|at| entry.posted_at >= at) {
                    return Err(world.violation(format!(
                        "{id}: entry {} drew on expired grant {}",
                        entry.seq, share.grant
                    )));
                }
            }
        }
        if let Some((grant, n)) = opened.iter().find(|(_, n)| **n > 1) {
            return Err(world.violation(format!("{id}: grant {grant} opened {n} times")));
        }
        // A draw after a void's removal date would show as a share after the removal: the
        // remainder went to zero there, so any later debit share overdraws (checked above).
        for (grant, remaining) in &left {
            let held = account.grants.iter().find(|g| &g.id == grant).map(|g| g.remaining_usd);
            if held.unwrap_or(Decimal::ZERO) != *remaining {
                return Err(world.violation(format!(
                    "{id}: grant {grant} holds {held:?} but its shares leave {remaining}"
                )));
            }
        }
        if let Some(grant) = account.grants.iter().find(|g| g.expired_at(world.swept_at)) {
            return Err(
                world.violation(format!("{id}: expired grant {} left after the sweep", grant.id))
            );
        }
        if account.paid_usd() != account.balance_usd - account.granted_usd() {
            return Err(world.violation(format!("{id}: paid funds are not balance less grants")));
        }
    }
    Ok(())
}

/// Holds at rest: every reported call debited exactly its rated cost, once, and nothing else
/// carrying its authorization id; no hold twice; and once every hold's time has passed,
/// nothing is held.
async fn check_holds(world: &World) -> Result<(), Violation> {
    let store: &dyn LedgerStore = &*world.store;
    let later = world.now + Duration::hours(5);
    for (index, id) in world.accounts.iter().enumerate() {
        let account = store.account(id).await.expect("read").expect("account");
        let mut seen = std::collections::HashSet::new();
        for hold in &account.holds {
            if !seen.insert(hold.id.as_str()) {
                return Err(world.violation(format!("{id}: hold {} twice", hold.id)));
            }
        }
        if account.held_usd(later, None) != Decimal::ZERO {
            return Err(world.violation(format!("{id}: holds outlive their expiry")));
        }
        let entries = all_entries(store, id).await;
        for hold in world.holds.iter().filter(|h| h.account == index) {
            let debited: Decimal = entries
                .iter()
                .filter(|e| {
                    e.details.get("authorization_id").and_then(|v| v.as_str()) == Some(&hold.id)
                })
                .map(|e| e.amount_usd.value())
                .sum();
            let expected = hold.report.as_ref().map_or(Decimal::ZERO, |(_, s)| rated_cost(*s));
            if debited != expected {
                return Err(world.violation(format!(
                    "{id}: call {} debited {debited}, its rated cost is {expected}",
                    hold.id
                )));
            }
        }
    }
    Ok(())
}

/// Number releases: each step of a suspension raised at most once and never early, and an
/// active account carries no release stage.
async fn check_releases(world: &World) -> Result<(), Violation> {
    let store: &dyn LedgerStore = &*world.store;
    // Each suspension raises each step once. Two suspensions may begin at the same instant (a
    // grant reactivates the account and its void suspends it again without the clock moving):
    // a step raised again is right only with a reactivation between the two.
    let reactivations: Vec<(&AccountId, u64)> = world
        .release_events
        .values()
        .filter(|e| e.kind == LedgerEventKind::Reactivated)
        .map(|e| (&e.account_id, e.seq))
        .collect();
    let mut steps: BTreeMap<(AccountId, DateTime<Utc>, u32), Vec<u64>> = BTreeMap::new();
    for event in world.release_events.values() {
        let (release_at, days) = match &event.kind {
            LedgerEventKind::NumbersReleaseWarning { release_at, days_left } => {
                (*release_at, *days_left)
            }
            LedgerEventKind::NumbersReleaseDue { release_at } => (*release_at, 0),
            _ => continue,
        };
        if event.raised_at < release_at - Duration::days(i64::from(days)) {
            return Err(world.violation(format!("{} raised early", event.id)));
        }
        steps.entry((event.account_id.clone(), release_at, days)).or_default().push(event.seq);
    }
    for ((id, at, days), seqs) in &mut steps {
        seqs.sort_unstable();
        for pair in seqs.windows(2) {
            let between = reactivations
                .iter()
                .any(|(account, seq)| *account == id && *seq > pair[0] && *seq <= pair[1]);
            if !between {
                return Err(
                    world.violation(format!("{id}: release step {days} for {at} raised twice"))
                );
            }
        }
    }
    for id in &world.accounts {
        let account = store.account(id).await.expect("read").expect("account");
        if account.status == ledger::AccountStatus::Active
            && (account.release_stage != 0 || account.suspended_since.is_some())
        {
            return Err(world.violation(format!("{id}: active with a release under way")));
        }
    }
    Ok(())
}

/// Run one seed: chaos, quiescence, invariants.
pub async fn run_seed(seed: u64, config: Config) -> Result<Stats, Violation> {
    let mut world = World::new(seed, config).await;
    for _ in 0..world.config.steps {
        world.step().await;
    }
    world.quiesce().await;
    world.stats.store_faults = world.store.injected();
    world.stats.dead_letters = world.dead_letters.len();
    world.stats.charges_succeeded = world.processor.succeeded_payments().len();
    for dispute in world.processor.disputes() {
        world.stats.disputes += 1;
        if dispute.funds_withdrawn {
            world.stats.disputes_withdrawn += 1;
        }
    }
    for id in &world.accounts {
        for invoice in documents::invoice::list(&*world.store, id).await.expect("invoices") {
            world.stats.invoices += 1;
            if invoice.payments.iter().any(|p| p.source_id.starts_with("pay:inv:")) {
                world.stats.invoices_card_paid += 1;
            }
            if invoice
                .payments
                .iter()
                .any(|p| !p.source_id.starts_with("pay:inv:") && !p.source_id.starts_with("man:"))
            {
                world.stats.invoices_paid_by_pay_now += 1;
            }
            if invoice
                .autopay
                .as_ref()
                .is_some_and(|a| a.failed >= documents::invoice::MAX_AUTOPAY_ATTEMPTS)
            {
                world.stats.invoices_autopay_exhausted += 1;
            }
        }
    }
    for (_, intent) in world.processor.succeeded_payments() {
        if world.processor.refunded_cents(&intent) > 0 {
            world.stats.refunds_returned += 1;
        }
    }
    for id in &world.accounts {
        let store: &dyn LedgerStore = &*world.store;
        world.stats.grants_expired += all_entries(store, id)
            .await
            .iter()
            .filter(|e| e.item == BillingItem::CreditGrant && e.kind == EntryKind::Debit)
            .count();
    }
    for id in &world.accounts {
        let store: &dyn LedgerStore = &*world.store;
        for fee in all_entries(store, id).await.iter().filter(|e| e.item == BillingItem::PlanFee) {
            world.stats.plan_fees += 1;
            match fee.details.get("paid_by").and_then(|v| v.as_str()) {
                Some("card") => world.stats.plan_card_paid += 1,
                Some("balance") => world.stats.plan_fallbacks += 1,
                _ => {}
            }
        }
    }
    for id in &world.accounts {
        let (client, _) = profile::load(&*world.store, id).await.expect("profile");
        if client.agency_id.is_some() {
            world.stats.agency_charges += world
                .processor
                .succeeded_payments()
                .iter()
                .filter(|(r, _)| payments::account_of_key(&r.idempotency_key) == Some(id.as_str()))
                .count();
        }
    }
    for (request, _) in world.processor.succeeded_payments() {
        if request.method == payments::MethodKind::UsBankAccount {
            world.stats.ach_settled += 1;
        }
    }
    world.stats.ach_returned = world.processor.returned_bank_debits();
    let mut capped: Vec<String> = world
        .notices
        .published()
        .into_iter()
        .filter(|n| n.kind.as_str() == "recharge_daily_cap_reached")
        .map(|n| n.id)
        .collect();
    capped.sort();
    capped.dedup();
    world.stats.daily_cap_stops = capped.len();
    check(&world).await?;
    world.stats.credits = world.stats.charges_succeeded;
    Ok(world.stats)
}

/// Run one seed on a current-thread runtime with paused time (sleeps pass instantly).
pub fn run_seed_blocking(seed: u64, config: Config) -> Result<Stats, Violation> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(run_seed(seed, config))
}
