//! An in-memory card processor for the local default and tests: no network, deterministic ids,
//! Stripe's test tokens, Stripe's idempotency rules.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    check_object_id, CardDetails, CardProcessor, ChargeOutcome, ChargeRequest, CustomerId, Decline,
    DeclineCode, DisputeState, DisputeStatus, MethodKind, ProcessorError, ProcessorRefund,
    RefundOutcome, RefundRequest,
};

/// The simulated processor's dispute fee, as Stripe's: $15.00.
pub const SIMULATED_DISPUTE_FEE_CENTS: u64 = 1_500;

/// Every simulated card expires in December of this year.
pub const SIMULATED_EXP_MONTH: u8 = 12;
pub const SIMULATED_EXP_YEAR: u16 = 2040;

/// Stripe's test payment-method tokens the simulator knows: (token, brand, last 4, the decline
/// every charge of it gets, if any). Any other token is refused at attach.
fn test_token(token: &str) -> Option<(&'static str, &'static str, Option<DeclineCode>)> {
    Some(match token {
        "pm_card_visa" => ("visa", "4242", None),
        "pm_card_mastercard" => ("mastercard", "4444", None),
        "pm_card_chargeDeclined" => ("visa", "0002", Some(DeclineCode::CardDeclined)),
        "pm_card_chargeDeclinedInsufficientFunds" => {
            ("visa", "9995", Some(DeclineCode::InsufficientFunds))
        }
        "pm_card_chargeDeclinedExpiredCard" => ("visa", "0069", Some(DeclineCode::ExpiredCard)),
        "pm_card_chargeDeclinedIncorrectCvc" => ("visa", "0127", Some(DeclineCode::IncorrectCvc)),
        "pm_card_chargeDeclinedProcessingError" => {
            ("visa", "0119", Some(DeclineCode::ProcessingError))
        }
        // Every charge asks for 3-D Secure: on session it waits for the holder
        // (`requires_action`, see `SimulatedProcessor::authenticate`), off session it declines.
        "pm_card_authenticationRequired" => ("visa", "3184", Some(authentication_required())),
        _ => return None,
    })
}

/// Bank-account (ACH) test tokens: the account's last 4, the failure its debits settle to (if
/// any), and whether it is verified at once (instant verification) or waits for microdeposits.
fn bank_token(token: &str) -> Option<(&'static str, Option<DeclineCode>, bool)> {
    Some(match token {
        "pm_usBankAccount" => ("6789", None, true),
        "pm_usBankAccount_microdeposits" => ("1116", None, false),
        "pm_usBankAccount_accountClosed" => {
            ("0003", Some(DeclineCode::Other("account_closed".into())), true)
        }
        "pm_usBankAccount_insufficientFunds" => {
            ("0004", Some(DeclineCode::InsufficientFunds), true)
        }
        _ => return None,
    })
}

/// The bank name test accounts carry.
pub const SIMULATED_BANK: &str = "STRIPE TEST BANK";
/// The microdeposits a test account waiting for verification received, in cents.
pub const SIMULATED_MICRODEPOSITS: [u32; 2] = [32, 45];
/// How long an ACH debit stays `processing` before it is decided (three business days).
pub const ACH_SETTLEMENT_MINUTES: i64 = 3 * 24 * 60;

fn authentication_required() -> DeclineCode {
    DeclineCode::Other("authentication_required".into())
}

/// Stripe's messages for the same declines.
fn processor_message(code: &DeclineCode) -> &'static str {
    match code {
        DeclineCode::InsufficientFunds => "Your card has insufficient funds.",
        DeclineCode::ExpiredCard => "Your card has expired.",
        DeclineCode::IncorrectCvc => "Your card's security code is incorrect.",
        DeclineCode::ProcessingError => {
            "An error occurred while processing your card. Try again in a little bit."
        }
        DeclineCode::CardDeclined | DeclineCode::Other(_) => "Your card was declined.",
    }
}

/// What the simulated processor does with the next charge call (fault injection for tests and
/// the fault simulation; each queued fault is used by one call, replays included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeFault {
    /// The request never reached the processor: nothing recorded, `Err(Unavailable)`.
    Unreachable,
    /// The processor made the payment and the answer was lost: `Err(Unavailable)`.
    AnswerLost,
    /// The payment is `processing` for `minutes`, then succeeds or fails (seen by a replay
    /// under the same key or a [`CardProcessor::find_charge`] after then).
    Processing { succeeds: bool, minutes: i64 },
}

/// What the simulated processor does with the next refund call (each queued fault is used by
/// one call, replays included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundFault {
    /// The request never reached the processor: nothing recorded, `Err(Unavailable)`.
    Unreachable,
    /// The processor made the refund and the answer was lost: `Err(Unavailable)`.
    AnswerLost,
    /// The processor refuses this refund definitely (the card account is closed, ...).
    Fails,
}

/// [`CardProcessor`] in memory, optionally kept in a JSON file so that local mode survives a
/// restart. Ids are `cus_sim000001`, `pm_sim000002`, `pi_sim000003`, ... in call order, so a
/// test that makes the same calls sees the same ids. Idempotency keys expire after
/// [`crate::KEY_LIFETIME_HOURS`] by the processor's clock, as Stripe's do.
#[derive(Debug, Default)]
pub struct SimulatedProcessor {
    state: Mutex<State>,
    /// Where the state is kept between runs (`None`: memory only).
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    last_id: u64,
    /// Customer id by account id: a second `create_customer` for an account finds the first,
    /// as Stripe does with the adapter's per-account idempotency key.
    customers_by_account: HashMap<String, CustomerId>,
    customers: BTreeMap<CustomerId, Option<String>>,
    payment_methods: BTreeMap<String, PaymentMethod>,
    /// Every payment intent made, in order.
    payments: Vec<SavedCharge>,
    /// Live idempotency keys: the index of the payment they made.
    keys: HashMap<String, usize>,
    attempts_by_payment_method: HashMap<String, u64>,
    successes_by_payment_method: HashMap<String, u64>,
    /// Every refund made, in order.
    #[serde(default)]
    refunds: Vec<SavedRefund>,
    /// Live refund idempotency keys: the index of the refund they made.
    #[serde(default)]
    refund_keys: HashMap<String, usize>,
    #[serde(skip)]
    refund_faults: VecDeque<RefundFault>,
    /// Every dispute opened, in order, with when.
    #[serde(default)]
    disputes: Vec<(DisputeState, DateTime<Utc>)>,
    #[serde(skip)]
    unavailable: bool,
    #[serde(skip)]
    faults: VecDeque<ChargeFault>,
    /// The processor's clock when set (the simulation's virtual time), else the wall clock.
    #[serde(skip)]
    now: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PaymentMethod {
    customer: Option<CustomerId>,
    card: CardDetails,
    decline: Option<DeclineCode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedCharge {
    request: ChargeRequest,
    outcome: ChargeOutcome,
    created_at: DateTime<Utc>,
    /// For a `processing` payment: whether it succeeds, and when it is decided.
    resolution: Option<(bool, DateTime<Utc>)>,
    /// What a failing `processing` payment fails with (an ACH return); a processing error
    /// when none is named.
    #[serde(default)]
    failure: Option<DeclineCode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedRefund {
    request: RefundRequest,
    outcome: RefundOutcome,
    created_at: DateTime<Utc>,
}

impl SavedRefund {
    /// As the processor lists it: our key when we made it (a dashboard refund has none).
    fn listed(&self) -> ProcessorRefund {
        let key = &self.request.idempotency_key;
        ProcessorRefund {
            payment_intent_id: self.request.payment_intent_id.clone(),
            amount_cents: self.request.amount_cents,
            outcome: self.outcome.clone(),
            idempotency_key: (!key.starts_with("dashboard:")).then(|| key.clone()),
        }
    }
}

/// The payment intent an outcome names, if any.
fn payment_intent_of(outcome: &ChargeOutcome) -> Option<&str> {
    match outcome {
        ChargeOutcome::Succeeded { payment_intent_id }
        | ChargeOutcome::Processing { payment_intent_id }
        | ChargeOutcome::RequiresAction { payment_intent_id, .. } => Some(payment_intent_id),
        ChargeOutcome::Declined { payment_intent_id, .. } => payment_intent_id.as_deref(),
    }
}

impl State {
    /// The payment waiting for its holder to authenticate it (3-D Secure), by intent.
    fn waiting_for_holder(&self, payment_intent_id: &str) -> Option<usize> {
        self.payments.iter().position(|p| {
            matches!(&p.outcome, ChargeOutcome::RequiresAction { payment_intent_id: id, .. }
                if id == payment_intent_id)
        })
    }

    /// Cents of the payment intent's succeeded charge, if it has one.
    fn charged_cents(&self, payment_intent_id: &str) -> Option<u64> {
        self.payments.iter().find_map(|p| match &p.outcome {
            ChargeOutcome::Succeeded { payment_intent_id: id } if id == payment_intent_id => {
                Some(p.request.amount_cents)
            }
            _ => None,
        })
    }

    /// What is left to refund of a payment that charged `charged` cents: less what was
    /// returned and what a dispute not won holds (a disputed amount goes back through the
    /// dispute, not as a refund: Stripe refuses to refund it).
    fn refundable_cents(&self, payment_intent_id: &str, charged: u64) -> u64 {
        let disputed: u64 = self
            .disputes
            .iter()
            .filter(|(d, _)| d.payment_intent_id == payment_intent_id)
            .filter(|(d, _)| d.status != DisputeStatus::Won)
            .map(|(d, _)| d.amount_cents)
            .sum();
        charged.saturating_sub(self.refunded_cents(payment_intent_id)).saturating_sub(disputed)
    }

    /// Cents returned (or on their way back) against the payment intent.
    fn refunded_cents(&self, payment_intent_id: &str) -> u64 {
        self.refunds
            .iter()
            .filter(|r| r.request.payment_intent_id == payment_intent_id)
            .filter(|r| !matches!(r.outcome, RefundOutcome::Failed { .. }))
            .map(|r| r.request.amount_cents)
            .sum()
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.last_id += 1;
        format!("{prefix}_sim{:06}", self.last_id)
    }

    fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }

    fn check_available(&self) -> Result<(), ProcessorError> {
        if self.unavailable {
            return Err(ProcessorError::Unavailable(
                "the simulated processor is switched off".into(),
            ));
        }
        Ok(())
    }

    /// Decide a `processing` payment whose time has come.
    fn resolve(&mut self, index: usize) {
        let now = self.now();
        let payment = &mut self.payments[index];
        let Some((succeeds, at)) = payment.resolution else { return };
        if at > now {
            return;
        }
        let ChargeOutcome::Processing { payment_intent_id } = payment.outcome.clone() else {
            return;
        };
        payment.resolution = None;
        let pm = payment.request.payment_method_id.clone();
        let code = payment.failure.clone().unwrap_or(DeclineCode::ProcessingError);
        payment.outcome = if succeeds {
            ChargeOutcome::Succeeded { payment_intent_id }
        } else {
            ChargeOutcome::Declined {
                payment_intent_id: Some(payment_intent_id),
                decline: Decline::new(code.clone(), processor_message(&code)),
            }
        };
        if succeeds {
            *self.successes_by_payment_method.entry(pm).or_default() += 1;
        }
    }

    /// Forget keys older than the processor's key lifetime.
    fn expire_keys(&mut self) {
        let horizon = self.now() - Duration::hours(crate::KEY_LIFETIME_HOURS);
        let payments = &self.payments;
        self.keys.retain(|_, index| payments[*index].created_at > horizon);
        let refunds = &self.refunds;
        self.refund_keys.retain(|_, index| refunds[*index].created_at > horizon);
    }
}

impl SimulatedProcessor {
    pub fn new() -> Self {
        Self::default()
    }

    /// A processor whose customers, cards and payments are kept in the JSON file at `path`
    /// (read now if it exists, rewritten atomically after every change).
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(error) => return Err(error),
        };
        Ok(SimulatedProcessor { state: Mutex::new(state), path: Some(path) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change below is made after all checks, so a panic elsewhere leaves no half state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep the state on disk (write a sibling file, then rename it over the old one).
    fn persist(&self, state: &State) -> Result<(), ProcessorError> {
        let Some(path) = &self.path else { return Ok(()) };
        let unavailable = |e: std::io::Error| ProcessorError::Unavailable(Box::new(e));
        let bytes = serde_json::to_vec(state).map_err(|e| unavailable(e.into()))?;
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, bytes).map_err(unavailable)?;
        std::fs::rename(&temporary, path).map_err(unavailable)
    }

    /// Payment intents created against this payment method (succeeded or declined); a replay
    /// under the same idempotency key does not count.
    pub fn charge_attempts(&self, payment_method_id: &str) -> u64 {
        self.state().attempts_by_payment_method.get(payment_method_id).copied().unwrap_or(0)
    }

    /// Successful charges of this payment method: what "charged once" means.
    pub fn successful_charges(&self, payment_method_id: &str) -> u64 {
        self.state().successes_by_payment_method.get(payment_method_id).copied().unwrap_or(0)
    }

    /// Every payment that has succeeded so far: (the request that made it, its intent id).
    /// Bank-account debits that came back failed (an ACH return).
    pub fn returned_bank_debits(&self) -> usize {
        let state = self.state();
        state
            .payments
            .iter()
            .filter(|p| p.request.method == MethodKind::UsBankAccount)
            .filter(|p| matches!(p.outcome, ChargeOutcome::Declined { .. }))
            .count()
    }

    pub fn succeeded_payments(&self) -> Vec<(ChargeRequest, String)> {
        let mut state = self.state();
        for index in 0..state.payments.len() {
            state.resolve(index);
        }
        state
            .payments
            .iter()
            .filter_map(|p| match &p.outcome {
                ChargeOutcome::Succeeded { payment_intent_id } => {
                    Some((p.request.clone(), payment_intent_id.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The holder answers 3-D Secure for a payment waiting for it: authenticated (the payment
    /// succeeds) or failed (declined). `false` when no payment waits under that intent.
    pub fn authenticate(&self, payment_intent_id: &str, authenticated: bool) -> bool {
        let mut state = self.state();
        let Some(index) = state.waiting_for_holder(payment_intent_id) else { return false };
        let intent = Some(payment_intent_id.to_string());
        state.payments[index].outcome = if authenticated {
            let pm = state.payments[index].request.payment_method_id.clone();
            *state.successes_by_payment_method.entry(pm).or_default() += 1;
            ChargeOutcome::Succeeded { payment_intent_id: payment_intent_id.to_string() }
        } else {
            ChargeOutcome::Declined {
                payment_intent_id: intent,
                decline: Decline::new(
                    DeclineCode::Other("payment_intent_authentication_failure".into()),
                    "The cardholder could not be authenticated.",
                ),
            }
        };
        let _ = self.persist(&state);
        true
    }

    /// Payment intents waiting for their holder to authenticate them.
    pub fn waiting_for_authentication(&self) -> Vec<String> {
        self.state()
            .payments
            .iter()
            .filter_map(|p| match &p.outcome {
                ChargeOutcome::RequiresAction { payment_intent_id, .. } => {
                    Some(payment_intent_id.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The customer the payment method is attached to, if any.
    pub fn attached_to(&self, payment_method_id: &str) -> Option<CustomerId> {
        self.state().payment_methods.get(payment_method_id).and_then(|pm| pm.customer.clone())
    }

    /// While switched off every call fails with [`ProcessorError::Unavailable`], as a network
    /// outage would; nothing is recorded.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state().unavailable = unavailable;
    }

    /// The next charge call (replays included) meets this fault.
    pub fn push_fault(&self, fault: ChargeFault) {
        self.state().faults.push_back(fault);
    }

    /// Drop every queued fault.
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.faults.clear();
        state.refund_faults.clear();
    }

    /// The next refund call (replays included) meets this fault.
    pub fn push_refund_fault(&self, fault: RefundFault) {
        self.state().refund_faults.push_back(fault);
    }

    /// A cardholder disputes `amount_cents` of a succeeded payment: an open dispute, funds not
    /// yet withdrawn. Its id.
    pub fn open_dispute(
        &self,
        payment_intent_id: &str,
        amount_cents: u64,
    ) -> Result<String, ProcessorError> {
        let mut state = self.state();
        let Some(charged) = state.charged_cents(payment_intent_id) else {
            return Err(ProcessorError::InvalidRequest(format!(
                "No succeeded charge for PaymentIntent '{payment_intent_id}'"
            )));
        };
        let dispute_id = state.next_id("dp");
        let now = state.now();
        state.disputes.push((
            DisputeState {
                dispute_id: dispute_id.clone(),
                payment_intent_id: payment_intent_id.to_string(),
                amount_cents: amount_cents.min(charged),
                fee_cents: SIMULATED_DISPUTE_FEE_CENTS,
                status: DisputeStatus::Open,
                funds_withdrawn: false,
                funds_reinstated: false,
            },
            now,
        ));
        self.persist(&state)?;
        Ok(dispute_id)
    }

    /// The processor takes the disputed amount and its fee (no-op when already taken).
    pub fn withdraw_dispute_funds(&self, dispute_id: &str) -> Option<DisputeState> {
        let mut state = self.state();
        let (dispute, _) = state.disputes.iter_mut().find(|(d, _)| d.dispute_id == dispute_id)?;
        dispute.funds_withdrawn = true;
        Some(dispute.clone())
    }

    /// The dispute is decided: won gives withdrawn funds back, lost keeps them (and withdraws
    /// them if that had not happened yet). No-op once decided.
    pub fn decide_dispute(&self, dispute_id: &str, won: bool) -> Option<DisputeState> {
        let mut state = self.state();
        let (dispute, _) = state.disputes.iter_mut().find(|(d, _)| d.dispute_id == dispute_id)?;
        if dispute.status == DisputeStatus::Open {
            if won {
                dispute.status = DisputeStatus::Won;
                dispute.funds_reinstated = dispute.funds_withdrawn;
            } else {
                dispute.status = DisputeStatus::Lost;
                dispute.funds_withdrawn = true;
            }
        }
        Some(dispute.clone())
    }

    /// A refund the processor had taken fails afterwards (the card account was closed): what
    /// Stripe reports with `charge.refund.updated`. The refund made under `idempotency_key`,
    /// if it was sent or pending; `None` otherwise.
    pub fn fail_refund_later(&self, idempotency_key: &str) -> Option<RefundRequest> {
        let mut state = self.state();
        let refund = state.refunds.iter_mut().find(|r| {
            r.request.idempotency_key == idempotency_key
                && !matches!(r.outcome, RefundOutcome::Failed { .. })
        })?;
        let refund_id = match &refund.outcome {
            RefundOutcome::Sent { refund_id } | RefundOutcome::Pending { refund_id } => {
                refund_id.clone()
            }
            RefundOutcome::Failed { .. } => return None,
        };
        refund.outcome = RefundOutcome::Failed {
            refund_id: Some(refund_id),
            reason: "expired_or_canceled_card".into(),
        };
        Some(refund.request.clone())
    }

    /// Someone refunds `amount_cents` of a payment in the processor's dashboard (no key of
    /// ours): the refund's id. Refused beyond what is left of the payment, as Stripe does.
    pub fn refund_outside(
        &self,
        payment_intent_id: &str,
        amount_cents: u64,
    ) -> Result<String, ProcessorError> {
        let mut state = self.state();
        let Some(charged) = state.charged_cents(payment_intent_id) else {
            return Err(ProcessorError::InvalidRequest(format!(
                "No succeeded charge for PaymentIntent '{payment_intent_id}'"
            )));
        };
        let left = state.refundable_cents(payment_intent_id, charged);
        if amount_cents == 0 || amount_cents > left {
            return Err(ProcessorError::InvalidRequest(format!(
                "Refund amount ({amount_cents} cents) is greater than unrefunded amount on \
                 charge ({left} cents)"
            )));
        }
        let refund_id = state.next_id("re");
        let now = state.now();
        state.refunds.push(SavedRefund {
            request: RefundRequest {
                payment_intent_id: payment_intent_id.to_string(),
                amount_cents,
                idempotency_key: format!("dashboard:{refund_id}"),
            },
            outcome: RefundOutcome::Sent { refund_id: refund_id.clone() },
            created_at: now,
        });
        self.persist(&state)?;
        Ok(refund_id)
    }

    /// Every refund the processor has made, with its outcome now.
    pub fn refunds(&self) -> Vec<(RefundRequest, RefundOutcome)> {
        self.state().refunds.iter().map(|r| (r.request.clone(), r.outcome.clone())).collect()
    }

    /// Every dispute as it stands now.
    pub fn disputes(&self) -> Vec<DisputeState> {
        self.state().disputes.iter().map(|(d, _)| d.clone()).collect()
    }

    /// Cents returned to the card (sent or pending) against this payment intent: what
    /// "refunded once" means.
    pub fn refunded_cents(&self, payment_intent_id: &str) -> u64 {
        self.state().refunded_cents(payment_intent_id)
    }

    /// Run the processor on this clock from now on (keys expire and `processing` payments
    /// resolve by it).
    pub fn set_now(&self, now: DateTime<Utc>) {
        self.state().now = Some(now);
    }

    /// The clock [`SimulatedProcessor::set_now`] set, if any.
    pub fn now(&self) -> Option<DateTime<Utc>> {
        self.state().now
    }
}

#[async_trait]
impl CardProcessor for SimulatedProcessor {
    async fn create_customer(
        &self,
        account_id: &str,
        email: Option<&str>,
    ) -> Result<CustomerId, ProcessorError> {
        let mut state = self.state();
        state.check_available()?;
        if account_id.is_empty() {
            return Err(ProcessorError::InvalidRequest("account_id is empty".into()));
        }
        if let Some(existing) = state.customers_by_account.get(account_id) {
            return Ok(existing.clone());
        }
        let id = CustomerId(state.next_id("cus"));
        state.customers.insert(id.clone(), email.map(str::to_owned));
        state.customers_by_account.insert(account_id.to_owned(), id.clone());
        self.persist(&state)?;
        Ok(id)
    }

    async fn attach_card(
        &self,
        customer: &CustomerId,
        payment_method_token: &str,
    ) -> Result<CardDetails, ProcessorError> {
        let mut state = self.state();
        state.check_available()?;
        check_object_id("payment_method_token", payment_method_token)?;
        if !state.customers.contains_key(customer) {
            return Err(ProcessorError::InvalidRequest(format!("No such customer: '{customer}'")));
        }
        // Like Stripe, each attach of a test token makes a new payment method.
        let (card, decline) =
            if let Some((brand, last4, decline)) = test_token(payment_method_token) {
                let card = CardDetails {
                    kind: MethodKind::Card,
                    verified: true,
                    payment_method_id: state.next_id("pm"),
                    brand: brand.to_owned(),
                    last4: last4.to_owned(),
                    exp_month: SIMULATED_EXP_MONTH,
                    exp_year: SIMULATED_EXP_YEAR,
                };
                (card, decline)
            } else if let Some((last4, decline, verified)) = bank_token(payment_method_token) {
                let account = CardDetails {
                    kind: MethodKind::UsBankAccount,
                    verified,
                    payment_method_id: state.next_id("pm"),
                    brand: SIMULATED_BANK.to_owned(),
                    last4: last4.to_owned(),
                    exp_month: 12,
                    exp_year: card_processor::BANK_ACCOUNT_EXP_YEAR,
                };
                (account, decline)
            } else {
                return Err(ProcessorError::InvalidRequest(format!(
                    "No such PaymentMethod: '{payment_method_token}'"
                )));
            };
        let payment_method_id = card.payment_method_id.clone();
        state.payment_methods.insert(
            payment_method_id,
            PaymentMethod { customer: Some(customer.clone()), card: card.clone(), decline },
        );
        self.persist(&state)?;
        Ok(card)
    }

    async fn detach_card(&self, payment_method_id: &str) -> Result<(), ProcessorError> {
        let mut state = self.state();
        state.check_available()?;
        let Some(payment_method) = state.payment_methods.get_mut(payment_method_id) else {
            return Err(ProcessorError::InvalidRequest(format!(
                "No such PaymentMethod: '{payment_method_id}'"
            )));
        };
        if payment_method.customer.take().is_none() {
            return Err(ProcessorError::InvalidRequest(format!(
                "The payment method {payment_method_id} is not attached to a customer"
            )));
        }
        self.persist(&state)?;
        Ok(())
    }

    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProcessorError> {
        let mut state = self.state();
        state.check_available()?;
        let fault = state.faults.pop_front();
        if fault == Some(ChargeFault::Unreachable) {
            return Err(ProcessorError::Unavailable("simulated: request never arrived".into()));
        }
        request.validate()?;
        state.expire_keys();
        if let Some(&index) = state.keys.get(&request.idempotency_key) {
            if state.payments[index].request != *request {
                return Err(ProcessorError::InvalidRequest(
                    "Keys for idempotent requests can only be used with the same parameters they \
                     were first used with."
                        .into(),
                ));
            }
            state.resolve(index);
            let outcome = state.payments[index].outcome.clone();
            self.persist(&state)?;
            if fault == Some(ChargeFault::AnswerLost) {
                return Err(ProcessorError::Unavailable("simulated: answer lost".into()));
            }
            return Ok(outcome);
        }
        // Refusals before a payment intent exists are not saved under the key (Stripe saves no
        // result for a request that failed validation).
        let decline = match state.payment_methods.get(&request.payment_method_id) {
            None => {
                return Err(ProcessorError::InvalidRequest(format!(
                    "No such PaymentMethod: '{}'",
                    request.payment_method_id
                )))
            }
            Some(pm) if pm.customer.as_ref() != Some(&request.customer) => {
                return Err(ProcessorError::InvalidRequest(format!(
                    "The PaymentMethod {} does not belong to the Customer {}",
                    request.payment_method_id, request.customer
                )))
            }
            Some(pm) if pm.card.kind == MethodKind::UsBankAccount && !pm.card.verified => {
                return Err(ProcessorError::InvalidRequest(format!(
                    "The bank account {} has not been verified yet",
                    request.payment_method_id
                )))
            }
            Some(pm) if pm.card.kind != request.method => {
                return Err(ProcessorError::InvalidRequest(format!(
                    "The PaymentMethod {} is not of the payment method type the PaymentIntent allows",
                    request.payment_method_id
                )))
            }
            Some(pm) => {
                debug_assert_eq!(pm.card.payment_method_id, request.payment_method_id);
                pm.decline.clone()
            }
        };
        let bank = request.method == MethodKind::UsBankAccount;
        let payment_intent_id = state.next_id("pi");
        let pm = request.payment_method_id.clone();
        *state.attempts_by_payment_method.entry(pm.clone()).or_default() += 1;
        let now = state.now();
        let mut resolution = None;
        let mut failure = None;
        let outcome = match (decline, &fault) {
            // An ACH debit is `processing` for days, then succeeds or is returned.
            (decline, _) if bank => {
                let settles = now + Duration::minutes(ACH_SETTLEMENT_MINUTES);
                resolution = Some((decline.is_none(), settles));
                failure = decline;
                ChargeOutcome::Processing { payment_intent_id }
            }
            (Some(code), _) if code == authentication_required() && request.on_session() => {
                ChargeOutcome::RequiresAction {
                    client_secret: format!("{payment_intent_id}_secret_sim"),
                    payment_intent_id,
                }
            }
            (Some(code), _) => {
                let message = processor_message(&code);
                ChargeOutcome::Declined {
                    payment_intent_id: Some(payment_intent_id),
                    decline: Decline::new(code, message),
                }
            }
            (None, Some(ChargeFault::Processing { succeeds, minutes })) => {
                resolution = Some((*succeeds, now + Duration::minutes(*minutes)));
                ChargeOutcome::Processing { payment_intent_id }
            }
            (None, _) => {
                *state.successes_by_payment_method.entry(pm).or_default() += 1;
                ChargeOutcome::Succeeded { payment_intent_id }
            }
        };
        state.payments.push(SavedCharge {
            request: request.clone(),
            outcome: outcome.clone(),
            created_at: now,
            resolution,
            failure,
        });
        let index = state.payments.len() - 1;
        state.keys.insert(request.idempotency_key.clone(), index);
        self.persist(&state)?;
        if fault == Some(ChargeFault::AnswerLost) {
            return Err(ProcessorError::Unavailable("simulated: answer lost".into()));
        }
        Ok(outcome)
    }

    async fn find_charge(
        &self,
        customer: &CustomerId,
        idempotency_key: &str,
    ) -> Result<Option<ChargeOutcome>, ProcessorError> {
        let mut state = self.state();
        state.check_available()?;
        let matching: Vec<usize> = (0..state.payments.len())
            .filter(|&i| {
                let request = &state.payments[i].request;
                request.customer == *customer && request.idempotency_key == idempotency_key
            })
            .collect();
        for &index in &matching {
            state.resolve(index);
        }
        // A key that charged twice (a resend after it expired) reports its success first.
        let outcome =
            matching.iter().map(|&i| state.payments[i].outcome.clone()).max_by_key(|o| match o {
                ChargeOutcome::Succeeded { .. } => 2,
                ChargeOutcome::Processing { .. } | ChargeOutcome::RequiresAction { .. } => 1,
                ChargeOutcome::Declined { .. } => 0,
            });
        self.persist(&state)?;
        Ok(outcome)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProcessorError> {
        let mut state = self.state();
        state.check_available()?;
        let fault = state.refund_faults.pop_front();
        if fault == Some(RefundFault::Unreachable) {
            return Err(ProcessorError::Unavailable("simulated: request never arrived".into()));
        }
        request.validate()?;
        state.expire_keys();
        let lost = |outcome: RefundOutcome| match fault {
            Some(RefundFault::AnswerLost) => {
                Err(ProcessorError::Unavailable("simulated: answer lost".into()))
            }
            _ => Ok(outcome),
        };
        if let Some(&index) = state.refund_keys.get(&request.idempotency_key) {
            if state.refunds[index].request != *request {
                return Err(ProcessorError::InvalidRequest(
                    "Keys for idempotent requests can only be used with the same parameters they \
                     were first used with."
                        .into(),
                ));
            }
            return lost(state.refunds[index].outcome.clone());
        }
        let Some(charged) = state.charged_cents(&request.payment_intent_id) else {
            return Err(ProcessorError::InvalidRequest(format!(
                "No succeeded charge for PaymentIntent '{}'",
                request.payment_intent_id
            )));
        };
        let left = state.refundable_cents(&request.payment_intent_id, charged);
        if request.amount_cents > left {
            return Err(ProcessorError::InvalidRequest(format!(
                "Refund amount ({} cents) is greater than unrefunded amount on charge ({left} \
                 cents)",
                request.amount_cents
            )));
        }
        let refund_id = state.next_id("re");
        let outcome = if fault == Some(RefundFault::Fails) {
            RefundOutcome::Failed {
                refund_id: Some(refund_id),
                reason: "the card's account is closed".into(),
            }
        } else {
            RefundOutcome::Sent { refund_id }
        };
        let now = state.now();
        state.refunds.push(SavedRefund {
            request: request.clone(),
            outcome: outcome.clone(),
            created_at: now,
        });
        let index = state.refunds.len() - 1;
        state.refund_keys.insert(request.idempotency_key.clone(), index);
        self.persist(&state)?;
        lost(outcome)
    }

    async fn find_refund(
        &self,
        payment_intent_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<RefundOutcome>, ProcessorError> {
        let state = self.state();
        state.check_available()?;
        // A key that refunded twice (a resend after it expired) reports a sent refund first.
        Ok(state
            .refunds
            .iter()
            .filter(|r| {
                r.request.payment_intent_id == payment_intent_id
                    && r.request.idempotency_key == idempotency_key
            })
            .map(|r| r.outcome.clone())
            .max_by_key(|o| match o {
                RefundOutcome::Sent { .. } | RefundOutcome::Pending { .. } => 1,
                RefundOutcome::Failed { .. } => 0,
            }))
    }

    async fn recent_disputes(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<DisputeState>, ProcessorError> {
        let state = self.state();
        state.check_available()?;
        Ok(state.disputes.iter().filter(|(_, at)| *at >= since).map(|(d, _)| d.clone()).collect())
    }

    async fn verify_bank_account(
        &self,
        customer: &CustomerId,
        payment_method_id: &str,
        amounts_cents: [u32; 2],
    ) -> Result<CardDetails, ProcessorError> {
        let mut state = self.state();
        state.check_available()?;
        let Some(pm) = state.payment_methods.get_mut(payment_method_id) else {
            return Err(ProcessorError::InvalidRequest(format!(
                "No such PaymentMethod: '{payment_method_id}'"
            )));
        };
        if pm.customer.as_ref() != Some(customer) || pm.card.kind != MethodKind::UsBankAccount {
            return Err(ProcessorError::InvalidRequest(format!(
                "{payment_method_id} is not a bank account of this customer"
            )));
        }
        let mut sent = SIMULATED_MICRODEPOSITS;
        let mut given = amounts_cents;
        sent.sort_unstable();
        given.sort_unstable();
        if !pm.card.verified && sent != given {
            return Err(ProcessorError::InvalidRequest(
                "The amounts provided do not match the amounts that were sent to the bank account."
                    .into(),
            ));
        }
        pm.card.verified = true;
        let card = pm.card.clone();
        self.persist(&state)?;
        Ok(card)
    }

    async fn cancel_charge(
        &self,
        payment_intent_id: &str,
    ) -> Result<ChargeOutcome, ProcessorError> {
        let mut state = self.state();
        state.check_available()?;
        let Some(index) = state.waiting_for_holder(payment_intent_id) else {
            // Not waiting (decided, or not ours): how it stands is the answer.
            let outcome = state.payments.iter().find_map(|p| {
                (payment_intent_of(&p.outcome) == Some(payment_intent_id))
                    .then(|| p.outcome.clone())
            });
            return outcome.ok_or_else(|| {
                ProcessorError::InvalidRequest(format!(
                    "No such PaymentIntent: '{payment_intent_id}'"
                ))
            });
        };
        let outcome = ChargeOutcome::Declined {
            payment_intent_id: Some(payment_intent_id.to_string()),
            decline: Decline::new(
                DeclineCode::Other("payment_intent_authentication_failure".into()),
                "The payment was canceled: its holder did not authenticate it.",
            ),
        };
        state.payments[index].outcome = outcome.clone();
        self.persist(&state)?;
        Ok(outcome)
    }

    async fn refunds_of(
        &self,
        payment_intent_id: &str,
    ) -> Result<Vec<ProcessorRefund>, ProcessorError> {
        let state = self.state();
        state.check_available()?;
        Ok(state
            .refunds
            .iter()
            .filter(|r| r.request.payment_intent_id == payment_intent_id)
            .map(SavedRefund::listed)
            .collect())
    }

    async fn recent_refunds(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<ProcessorRefund>, ProcessorError> {
        let state = self.state();
        state.check_available()?;
        Ok(state
            .refunds
            .iter()
            .filter(|r| r.created_at >= since)
            .map(SavedRefund::listed)
            .collect())
    }

    async fn customer_account(
        &self,
        customer: &CustomerId,
    ) -> Result<Option<String>, ProcessorError> {
        let state = self.state();
        state.check_available()?;
        Ok(state
            .customers_by_account
            .iter()
            .find(|(_, id)| *id == customer)
            .map(|(account, _)| account.clone()))
    }

    async fn payment_account(
        &self,
        payment_intent_id: &str,
    ) -> Result<Option<String>, ProcessorError> {
        let state = self.state();
        state.check_available()?;
        Ok(state.payments.iter().find_map(|p| {
            let id = match &p.outcome {
                ChargeOutcome::Succeeded { payment_intent_id }
                | ChargeOutcome::Processing { payment_intent_id }
                | ChargeOutcome::RequiresAction { payment_intent_id, .. } => payment_intent_id,
                ChargeOutcome::Declined { payment_intent_id, .. } => payment_intent_id.as_ref()?,
            };
            (id == payment_intent_id)
                .then(|| crate::account_of_key(&p.request.idempotency_key).map(str::to_owned))
                .flatten()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn customer_with(sim: &SimulatedProcessor, token: &str) -> (CustomerId, CardDetails) {
        let customer =
            sim.create_customer("acme", Some("billing@acme.example")).await.expect("customer");
        let card = sim.attach_card(&customer, token).await.expect("attach");
        (customer, card)
    }

    fn charge_of(
        customer: &CustomerId,
        card: &CardDetails,
        key: &str,
        amount_cents: u64,
    ) -> ChargeRequest {
        ChargeRequest {
            method: Default::default(),
            customer: customer.clone(),
            payment_method_id: card.payment_method_id.clone(),
            amount_cents,
            idempotency_key: key.to_owned(),
            description: "Pay Now".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_bank_account_debit_is_processing_for_days_then_settles_and_needs_verifying_first() {
        let sim = SimulatedProcessor::new();
        let start = Utc::now();
        sim.set_now(start);
        let (customer, account) = customer_with(&sim, "pm_usBankAccount").await;
        assert_eq!((account.kind, account.verified), (MethodKind::UsBankAccount, true));
        let debit = ChargeRequest {
            method: MethodKind::UsBankAccount,
            ..charge_of(&customer, &account, "pay:acme:ach-1", 5_000)
        };
        assert!(matches!(sim.charge(&debit).await, Ok(ChargeOutcome::Processing { .. })));
        // As a card it is refused (the intent does not allow the method).
        let as_card = charge_of(&customer, &account, "pay:acme:ach-2", 5_000);
        assert!(matches!(sim.charge(&as_card).await, Err(ProcessorError::InvalidRequest(_))));
        sim.set_now(start + Duration::days(2));
        let still = sim.find_charge(&customer, "pay:acme:ach-1").await.unwrap();
        assert!(matches!(still, Some(ChargeOutcome::Processing { .. })), "{still:?}");
        sim.set_now(start + Duration::minutes(ACH_SETTLEMENT_MINUTES));
        let settled = sim.find_charge(&customer, "pay:acme:ach-1").await.unwrap();
        assert!(matches!(settled, Some(ChargeOutcome::Succeeded { .. })), "{settled:?}");
        // A returned debit settles failed with its reason.
        let (customer, poor) = customer_with(&sim, "pm_usBankAccount_insufficientFunds").await;
        let debit = ChargeRequest {
            method: MethodKind::UsBankAccount,
            ..charge_of(&customer, &poor, "pay:acme:ach-3", 5_000)
        };
        sim.charge(&debit).await.unwrap();
        sim.set_now(start + Duration::days(7));
        let returned = sim.find_charge(&customer, "pay:acme:ach-3").await.unwrap();
        let Some(ChargeOutcome::Declined { decline, .. }) = returned else {
            panic!("{returned:?}")
        };
        assert_eq!(decline.code, DeclineCode::InsufficientFunds);
        // An account waiting for microdeposits is refused until they are confirmed.
        let (customer, waiting) = customer_with(&sim, "pm_usBankAccount_microdeposits").await;
        assert!(!waiting.verified);
        let debit = ChargeRequest {
            method: MethodKind::UsBankAccount,
            ..charge_of(&customer, &waiting, "pay:acme:ach-4", 5_000)
        };
        assert!(matches!(sim.charge(&debit).await, Err(ProcessorError::InvalidRequest(_))));
        let id = &waiting.payment_method_id;
        let wrong = sim.verify_bank_account(&customer, id, [10, 20]).await;
        assert!(matches!(wrong, Err(ProcessorError::InvalidRequest(_))));
        let verified = sim.verify_bank_account(&customer, id, [45, 32]).await.unwrap();
        assert!(verified.verified);
        assert!(matches!(sim.charge(&debit).await, Ok(ChargeOutcome::Processing { .. })));
    }

    #[tokio::test]
    async fn succeeding_tokens_attach_with_brand_last4_and_expiry_and_charge() {
        for (token, brand, last4) in
            [("pm_card_visa", "visa", "4242"), ("pm_card_mastercard", "mastercard", "4444")]
        {
            let sim = SimulatedProcessor::new();
            let (customer, card) = customer_with(&sim, token).await;
            assert_eq!(customer, CustomerId("cus_sim000001".into()));
            assert_eq!(
                card,
                CardDetails {
                    kind: Default::default(),
                    verified: true,
                    payment_method_id: "pm_sim000002".into(),
                    brand: brand.into(),
                    last4: last4.into(),
                    exp_month: SIMULATED_EXP_MONTH,
                    exp_year: SIMULATED_EXP_YEAR,
                }
            );
            let outcome =
                sim.charge(&charge_of(&customer, &card, "k1", 5000)).await.expect("charge");
            assert_eq!(
                outcome,
                ChargeOutcome::Succeeded { payment_intent_id: "pi_sim000003".into() }
            );
            assert_eq!(sim.successful_charges(&card.payment_method_id), 1);
            assert_eq!(sim.charge_attempts(&card.payment_method_id), 1);
        }
    }

    #[tokio::test]
    async fn declining_tokens_attach_and_every_charge_is_declined_with_its_code() {
        let cases = [
            ("pm_card_chargeDeclined", DeclineCode::CardDeclined),
            ("pm_card_chargeDeclinedInsufficientFunds", DeclineCode::InsufficientFunds),
            ("pm_card_chargeDeclinedExpiredCard", DeclineCode::ExpiredCard),
            ("pm_card_chargeDeclinedIncorrectCvc", DeclineCode::IncorrectCvc),
            ("pm_card_chargeDeclinedProcessingError", DeclineCode::ProcessingError),
        ];
        for (token, code) in cases {
            let sim = SimulatedProcessor::new();
            let (customer, card) = customer_with(&sim, token).await;
            let outcome =
                sim.charge(&charge_of(&customer, &card, "k1", 5000)).await.expect("charge");
            let ChargeOutcome::Declined { payment_intent_id, decline } = outcome else {
                panic!("{token}: expected a decline, got {outcome:?}");
            };
            assert_eq!(payment_intent_id.as_deref(), Some("pi_sim000003"), "{token}");
            assert_eq!(decline.code, code, "{token}");
            assert_eq!(decline.reason(), code.reason());
            assert!(!decline.message.is_empty());
            assert_eq!(sim.successful_charges(&card.payment_method_id), 0);
            assert_eq!(sim.charge_attempts(&card.payment_method_id), 1);
        }
    }

    #[tokio::test]
    async fn unknown_tokens_and_unknown_customers_are_invalid_requests_at_attach() {
        let sim = SimulatedProcessor::new();
        let customer = sim.create_customer("acme", None).await.expect("customer");
        for token in ["pm_card_amex", "tok_visa", "pm_card_visa_chargeDeclined", "", "pm card"] {
            let error = sim.attach_card(&customer, token).await.expect_err("refused");
            assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{token:?}: {error:?}");
        }
        let error = sim
            .attach_card(&CustomerId("cus_nobody".into()), "pm_card_visa")
            .await
            .expect_err("no customer");
        assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_second_customer_for_the_same_account_is_the_first() {
        let sim = SimulatedProcessor::new();
        let first = sim.create_customer("acme", None).await.expect("customer");
        assert_eq!(sim.create_customer("acme", None).await.expect("again"), first);
        assert_ne!(sim.create_customer("other", None).await.expect("other"), first);
    }

    #[tokio::test]
    async fn the_same_idempotency_key_yields_the_same_payment_and_charges_once() {
        let sim = SimulatedProcessor::new();
        let (customer, card) = customer_with(&sim, "pm_card_visa").await;
        let request = charge_of(&customer, &card, "recharge-req-7", 5000);
        let first = sim.charge(&request).await.expect("first");
        let again = sim.charge(&request).await.expect("retry after a crash");
        assert_eq!(first, again);
        assert_eq!(sim.successful_charges(&card.payment_method_id), 1);
        assert_eq!(sim.charge_attempts(&card.payment_method_id), 1);

        let other = sim
            .charge(&charge_of(&customer, &card, "recharge-req-8", 5000))
            .await
            .expect("other key");
        assert_ne!(other, first);
        assert_eq!(sim.successful_charges(&card.payment_method_id), 2);
    }

    #[tokio::test]
    async fn the_same_key_replays_a_decline_without_asking_the_card_again() {
        let sim = SimulatedProcessor::new();
        let (customer, card) = customer_with(&sim, "pm_card_chargeDeclinedInsufficientFunds").await;
        let request = charge_of(&customer, &card, "k", 5000);
        let first = sim.charge(&request).await.expect("first");
        assert_eq!(sim.charge(&request).await.expect("again"), first);
        assert_eq!(sim.charge_attempts(&card.payment_method_id), 1);
    }

    #[tokio::test]
    async fn the_same_key_with_another_amount_is_an_invalid_request() {
        let sim = SimulatedProcessor::new();
        let (customer, card) = customer_with(&sim, "pm_card_visa").await;
        sim.charge(&charge_of(&customer, &card, "k", 5000)).await.expect("first");
        let error =
            sim.charge(&charge_of(&customer, &card, "k", 5001)).await.expect_err("mismatch");
        assert!(
            matches!(&error, ProcessorError::InvalidRequest(m) if m.contains("same parameters")),
            "{error:?}"
        );
        let other_description =
            ChargeRequest { description: "other".into(), ..charge_of(&customer, &card, "k", 5000) };
        assert!(matches!(
            sim.charge(&other_description).await,
            Err(ProcessorError::InvalidRequest(_))
        ));
        assert_eq!(sim.charge_attempts(&card.payment_method_id), 1);
        assert_eq!(sim.successful_charges(&card.payment_method_id), 1);
    }

    #[tokio::test]
    async fn amounts_outside_stripe_limits_are_invalid_requests() {
        let sim = SimulatedProcessor::new();
        let (customer, card) = customer_with(&sim, "pm_card_visa").await;
        for amount_cents in [0, 49, crate::MAX_CHARGE_CENTS + 1] {
            let error = sim
                .charge(&charge_of(&customer, &card, "k", amount_cents))
                .await
                .expect_err("refused");
            assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{amount_cents}");
        }
        assert_eq!(sim.charge_attempts(&card.payment_method_id), 0);
        // A refused request saves nothing under its key.
        assert!(sim.charge(&charge_of(&customer, &card, "k", 50)).await.is_ok());
    }

    #[tokio::test]
    async fn a_detached_card_cannot_be_charged_or_detached_again() {
        let sim = SimulatedProcessor::new();
        let (customer, card) = customer_with(&sim, "pm_card_visa").await;
        assert_eq!(sim.attached_to(&card.payment_method_id), Some(customer.clone()));
        sim.detach_card(&card.payment_method_id).await.expect("detach");
        assert_eq!(sim.attached_to(&card.payment_method_id), None);
        let error =
            sim.charge(&charge_of(&customer, &card, "k", 5000)).await.expect_err("detached");
        assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{error:?}");
        assert!(matches!(
            sim.detach_card(&card.payment_method_id).await,
            Err(ProcessorError::InvalidRequest(_))
        ));
        assert!(matches!(
            sim.detach_card("pm_nothing").await,
            Err(ProcessorError::InvalidRequest(_))
        ));
    }

    #[tokio::test]
    async fn another_customers_card_cannot_be_charged() {
        let sim = SimulatedProcessor::new();
        let (_, card) = customer_with(&sim, "pm_card_visa").await;
        let other = sim.create_customer("other", None).await.expect("other");
        let error = sim.charge(&charge_of(&other, &card, "k", 5000)).await.expect_err("not theirs");
        assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_switched_off_processor_is_unavailable_and_records_nothing() {
        let sim = SimulatedProcessor::new();
        let (customer, card) = customer_with(&sim, "pm_card_visa").await;
        sim.set_unavailable(true);
        let request = charge_of(&customer, &card, "k", 5000);
        assert!(matches!(sim.charge(&request).await, Err(ProcessorError::Unavailable(_))));
        assert!(matches!(
            sim.create_customer("x", None).await,
            Err(ProcessorError::Unavailable(_))
        ));
        sim.set_unavailable(false);
        assert!(matches!(sim.charge(&request).await, Ok(ChargeOutcome::Succeeded { .. })));
        assert_eq!(sim.successful_charges(&card.payment_method_id), 1);
    }

    #[tokio::test]
    async fn the_processor_is_usable_as_a_shared_port() {
        let sim: std::sync::Arc<dyn CardProcessor> = std::sync::Arc::new(SimulatedProcessor::new());
        let customer = sim.create_customer("acme", None).await.expect("customer");
        assert!(sim.attach_card(&customer, "pm_card_visa").await.is_ok());
    }

    fn at(hour: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("time").to_utc()
            + Duration::hours(hour)
    }

    #[tokio::test]
    async fn a_lost_answer_charged_the_card_and_a_replay_or_lookup_finds_it() {
        let sim = SimulatedProcessor::new();
        sim.set_now(at(0));
        let (customer, card) = customer_with(&sim, "pm_card_visa").await;
        let request = charge_of(&customer, &card, "k", 5000);
        sim.push_fault(ChargeFault::AnswerLost);
        assert!(matches!(sim.charge(&request).await, Err(ProcessorError::Unavailable(_))));
        assert_eq!(sim.successful_charges(&card.payment_method_id), 1, "charged all the same");
        let found = sim.find_charge(&customer, "k").await.expect("lookup");
        assert!(matches!(found, Some(ChargeOutcome::Succeeded { .. })), "{found:?}");
        assert!(matches!(sim.charge(&request).await, Ok(ChargeOutcome::Succeeded { .. })));
        assert_eq!(sim.successful_charges(&card.payment_method_id), 1);
        assert_eq!(sim.find_charge(&customer, "never-used").await.expect("lookup"), None);
    }

    #[tokio::test]
    async fn an_unreachable_processor_charges_nothing() {
        let sim = SimulatedProcessor::new();
        let (customer, card) = customer_with(&sim, "pm_card_visa").await;
        sim.push_fault(ChargeFault::Unreachable);
        let request = charge_of(&customer, &card, "k", 5000);
        assert!(matches!(sim.charge(&request).await, Err(ProcessorError::Unavailable(_))));
        assert_eq!(sim.find_charge(&customer, "k").await.expect("lookup"), None);
        assert_eq!(sim.charge_attempts(&card.payment_method_id), 0);
    }

    #[tokio::test]
    async fn a_processing_payment_is_decided_later_either_way() {
        for succeeds in [true, false] {
            let sim = SimulatedProcessor::new();
            sim.set_now(at(0));
            let (customer, card) = customer_with(&sim, "pm_card_visa").await;
            let request = charge_of(&customer, &card, "k", 5000);
            sim.push_fault(ChargeFault::Processing { succeeds, minutes: 30 });
            let first = sim.charge(&request).await.expect("charge");
            assert!(matches!(first, ChargeOutcome::Processing { .. }), "{first:?}");
            assert!(matches!(sim.charge(&request).await, Ok(ChargeOutcome::Processing { .. })));
            assert_eq!(sim.successful_charges(&card.payment_method_id), 0);
            sim.set_now(at(1));
            let later = sim.find_charge(&customer, "k").await.expect("lookup");
            if succeeds {
                assert!(matches!(later, Some(ChargeOutcome::Succeeded { .. })), "{later:?}");
                assert_eq!(sim.successful_charges(&card.payment_method_id), 1);
            } else {
                assert!(matches!(later, Some(ChargeOutcome::Declined { .. })), "{later:?}");
                assert_eq!(sim.successful_charges(&card.payment_method_id), 0);
            }
            assert_eq!(sim.charge(&request).await.expect("replay"), later.expect("outcome"));
        }
    }

    #[tokio::test]
    async fn keys_expire_after_a_day_so_a_late_resend_charges_again_but_a_lookup_does_not() {
        let sim = SimulatedProcessor::new();
        sim.set_now(at(0));
        let (customer, card) = customer_with(&sim, "pm_card_visa").await;
        let request = charge_of(&customer, &card, "k", 5000);
        sim.charge(&request).await.expect("charge");
        sim.set_now(at(23));
        sim.charge(&request).await.expect("replay inside the lifetime");
        assert_eq!(sim.successful_charges(&card.payment_method_id), 1);
        sim.set_now(at(25));
        assert!(matches!(
            sim.find_charge(&customer, "k").await.expect("lookup"),
            Some(ChargeOutcome::Succeeded { .. })
        ));
        assert_eq!(sim.successful_charges(&card.payment_method_id), 1);
        sim.charge(&request).await.expect("resend after expiry");
        assert_eq!(sim.successful_charges(&card.payment_method_id), 2, "Stripe charges again");
    }

    #[tokio::test]
    async fn a_processor_opened_from_a_file_keeps_customers_cards_and_payments() {
        let dir = std::env::temp_dir().join(format!("sim-processor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("processor.json");
        let _ = std::fs::remove_file(&path);
        let (customer, card) = {
            let sim = SimulatedProcessor::open(&path).expect("open");
            let (customer, card) = customer_with(&sim, "pm_card_visa").await;
            sim.charge(&charge_of(&customer, &card, "k", 5000)).await.expect("charge");
            (customer, card)
        };
        let reopened = SimulatedProcessor::open(&path).expect("reopen");
        assert_eq!(reopened.attached_to(&card.payment_method_id), Some(customer.clone()));
        let replay = reopened.charge(&charge_of(&customer, &card, "k", 5000)).await;
        assert!(matches!(replay, Ok(ChargeOutcome::Succeeded { .. })), "{replay:?}");
        assert_eq!(reopened.successful_charges(&card.payment_method_id), 1);
        let next = reopened.create_customer("other", None).await.expect("customer");
        assert_ne!(next, customer, "ids continue after a restart");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
