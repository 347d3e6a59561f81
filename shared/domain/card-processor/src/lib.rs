//! The card processor port: the trait services charge cards through, and its types. The
//! adapters (Stripe, the simulated processor) live in `ringledger-payments`.
//!
//! Cards are registered with the processor from a payment-method token made client-side; this
//! crate only ever sees that token and the processor's ids, brand, last 4 digits and expiry. No
//! card number or CVC passes through it, and text that comes back from a processor is scrubbed
//! of anything that looks like one before it is put in an error or a decline.

use std::fmt;

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// The smallest charge Stripe accepts in USD ($0.50).
pub const MIN_CHARGE_CENTS: u64 = 50;
/// The largest charge Stripe accepts in USD ($999,999.99).
pub const MAX_CHARGE_CENTS: u64 = 99_999_999;
/// Stripe's limit on the length of an `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// Our own bound on processor object ids and client tokens (Stripe's are far shorter).
pub const MAX_OBJECT_ID_CHARS: usize = 255;

/// The card processor port. Handlers are generic over it: `payments::StripeProcessor` in AWS,
/// `payments::SimulatedProcessor` locally and in tests.
#[async_trait]
pub trait CardProcessor: Send + Sync {
    /// A processor customer for an account (called once; the id is stored on the account's profile).
    async fn create_customer(
        &self,
        account_id: &str,
        email: Option<&str>,
    ) -> Result<CustomerId, ProcessorError>;

    /// Attach a payment-method token made client-side (Stripe.js / test tokens) to the customer.
    /// A card its issuer refuses to register is [`ProcessorError::Declined`].
    async fn attach_card(
        &self,
        customer: &CustomerId,
        payment_method_token: &str,
    ) -> Result<CardDetails, ProcessorError>;

    async fn detach_card(&self, payment_method_id: &str) -> Result<(), ProcessorError>;

    /// Off-session, confirmed charge in whole USD cents with an Idempotency-Key: the same key
    /// yields the same payment for the key's lifetime (Stripe: 24 h), so a retry after a crash
    /// finds it instead of charging twice. Three outcomes, not two: `Ok(Succeeded)`,
    /// `Ok(Declined)` (definite: nothing was charged), and *unknown* — `Ok(Processing)` or
    /// `Err(Unavailable | Unexpected)` — where the card may have been charged: the caller keeps
    /// its claim and settles it later with [`CardProcessor::find_charge`] or a replay under the
    /// same key, never with a new key.
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProcessorError>;

    /// The payment made under `idempotency_key` for `customer` (every charge carries its key in
    /// the processor's metadata), with its current outcome; `Ok(None)` when the processor has
    /// none, i.e. nothing was charged under that key. Works after the key itself has expired:
    /// that is how a replay older than the key's lifetime settles.
    async fn find_charge(
        &self,
        customer: &CustomerId,
        idempotency_key: &str,
    ) -> Result<Option<ChargeOutcome>, ProcessorError>;

    /// Every refund of a payment, as it stands now (ours and the dashboard's).
    async fn refunds_of(
        &self,
        payment_intent_id: &str,
    ) -> Result<Vec<ProcessorRefund>, ProcessorError>;

    /// Refunds created at or after `since`, as they stand now: what the scheduled
    /// reconciliation follows, so a refund made at the processor is never missed.
    async fn recent_refunds(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<ProcessorRefund>, ProcessorError>;

    /// Give up on a payment waiting for its holder to authenticate it (3-D Secure abandoned):
    /// cancel it at the processor and answer how it ended, which is `Succeeded` if the holder
    /// authenticated it after all (a cancel loses that race and the payment stands).
    async fn cancel_charge(&self, payment_intent_id: &str)
        -> Result<ChargeOutcome, ProcessorError>;

    /// Verify a bank account by the two microdeposit amounts (in cents) the holder read on
    /// their statement: the account as it stands after (verified), or `InvalidRequest` when the
    /// amounts do not match. Processors that verify in the browser answer `InvalidRequest`.
    async fn verify_bank_account(
        &self,
        _customer: &CustomerId,
        _payment_method_id: &str,
        _amounts_cents: [u32; 2],
    ) -> Result<CardDetails, ProcessorError> {
        Err(ProcessorError::InvalidRequest(
            "this processor verifies bank accounts in the customer's browser".into(),
        ))
    }

    /// Return `amount_cents` of a succeeded payment to its card, with an Idempotency-Key (the
    /// same key yields the same refund). Like [`CardProcessor::charge`], three outcomes:
    /// `Ok(Sent | Pending)` (the processor took it: the money is on its way back),
    /// `Ok(Failed)` (definite: nothing was returned), and unknown — `Err(Unavailable |
    /// Unexpected)` — settled later by [`CardProcessor::find_refund`] or a replay under the
    /// same key. A refund beyond what is left of the payment is `Err(InvalidRequest)`.
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProcessorError>;

    /// The refund made under `idempotency_key` against `payment_intent_id` (every refund
    /// carries its key in the processor's metadata); `Ok(None)` when there is none.
    async fn find_refund(
        &self,
        payment_intent_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<RefundOutcome>, ProcessorError>;

    /// Disputes (chargebacks) created at or after `since`, each as it stands now: what the
    /// scheduled reconciliation applies, so a lost processor event never leaves a chargeback
    /// out of the ledger.
    async fn recent_disputes(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<DisputeState>, ProcessorError>;

    /// The account a payment was made for (every charge carries it in its idempotency key's
    /// metadata); `Ok(None)` for a payment the processor does not know or did not make for us.
    async fn payment_account(
        &self,
        payment_intent_id: &str,
    ) -> Result<Option<String>, ProcessorError>;

    /// The account a customer was made for (its metadata); `Ok(None)` for a customer the
    /// processor does not know or that is not ours. Card events name the customer only.
    async fn customer_account(
        &self,
        customer: &CustomerId,
    ) -> Result<Option<String>, ProcessorError>;
}

/// Where a dispute stands at the processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    /// Opened, waiting for evidence or under review (Stripe's `warning_*`, `needs_response`,
    /// `under_review`).
    Open,
    /// Decided for us: withdrawn funds come back.
    Won,
    /// Decided for the cardholder: the funds stay withdrawn.
    Lost,
}

/// A dispute (chargeback) as the processor reports it: its full state, not a change, so that
/// applying the states of one dispute in any order, any number of times, ends in the same
/// ledger (each money step is posted once, when a state first shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeState {
    pub dispute_id: String,
    /// The disputed payment.
    pub payment_intent_id: String,
    /// Disputed amount, whole USD cents.
    pub amount_cents: u64,
    /// The processor's dispute fee, taken with the funds (Stripe: $15).
    pub fee_cents: u64,
    pub status: DisputeStatus,
    /// The processor has taken the disputed amount and the fee from us.
    pub funds_withdrawn: bool,
    /// The processor has given them back (a won dispute).
    pub funds_reinstated: bool,
}

/// Part or all of a succeeded payment, returned to the card it was paid with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The payment intent that charged the card.
    pub payment_intent_id: String,
    /// Whole USD cents, at least 1 and at most what is left of the payment.
    pub amount_cents: u64,
    /// Stable for one intended refund: never a fresh value per attempt.
    pub idempotency_key: String,
}

impl RefundRequest {
    pub fn validate(&self) -> Result<(), ProcessorError> {
        if !(1..=MAX_CHARGE_CENTS).contains(&self.amount_cents) {
            return Err(ProcessorError::InvalidRequest(format!(
                "a refund's amount_cents must be between 1 and {MAX_CHARGE_CENTS}, got {}",
                self.amount_cents
            )));
        }
        check_object_id("payment_intent_id", &self.payment_intent_id)?;
        check_idempotency_key(&self.idempotency_key)
    }
}

/// What the processor said about a refund.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundOutcome {
    /// Returned to the card.
    Sent { refund_id: String },
    /// Taken by the processor and on its way (Stripe's `pending`): it still counts as returned;
    /// a later failure comes as a processor event.
    Pending { refund_id: String },
    /// Definitely not returned (Stripe's `failed` or `canceled`): nothing left the account.
    Failed { refund_id: Option<String>, reason: String },
}

/// A refund as the processor lists it: ours (its key in the metadata) or made outside this
/// system (the processor's dashboard), which the ledger must follow too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorRefund {
    pub payment_intent_id: String,
    pub amount_cents: u64,
    pub outcome: RefundOutcome,
    /// Our idempotency key (`refund:<account>:...`) when we made it.
    pub idempotency_key: Option<String>,
}

/// Hours a processor remembers an idempotency key (Stripe: 24). A replay of a write-ahead
/// attempt older than this must look the payment up ([`CardProcessor::find_charge`]) instead of
/// resending it, or the resend is a new charge. Replays look up first whatever their age, so
/// this is only the simulated processor's expiry rule and a bound for reconcilers.
pub const KEY_LIFETIME_HOURS: i64 = 24;

/// The processor's id of a customer (`cus_...`), stored on the account's profile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(pub String);

impl CustomerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a payment method is: a card, or a US bank account debited by ACH (which settles in
/// days: its payments are `processing` first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    #[default]
    Card,
    UsBankAccount,
}

impl MethodKind {
    pub fn is_card(&self) -> bool {
        *self == MethodKind::Card
    }
}

fn yes() -> bool {
    true
}

/// What the system keeps about a card (or bank account): the processor's payment method id,
/// brand (the bank's name for an account), last 4 digits and expiry (none for an account: a
/// far date). Never the number or the CVC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardDetails {
    pub payment_method_id: String,
    /// The processor's brand name: `visa`, `mastercard`, `amex`, `discover`, ...
    pub brand: String,
    pub last4: String,
    /// 1 to 12.
    pub exp_month: u8,
    pub exp_year: u16,
    #[serde(default)]
    pub kind: MethodKind,
    /// A bank account the processor has not verified yet (microdeposits) cannot be charged.
    #[serde(default = "yes")]
    pub verified: bool,
}

/// Far enough that a bank account never counts as expired.
pub const BANK_ACCOUNT_EXP_YEAR: u16 = 9999;

impl CardDetails {
    /// A card is good through the last day of its expiry month.
    pub fn is_expired(&self, today: NaiveDate) -> bool {
        self.kind == MethodKind::Card
            && (today.year(), today.month()) > (i32::from(self.exp_year), u32::from(self.exp_month))
    }
}

/// One off-session charge of a registered card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    pub customer: CustomerId,
    pub payment_method_id: String,
    /// Whole USD cents, [`MIN_CHARGE_CENTS`] to [`MAX_CHARGE_CENTS`].
    pub amount_cents: u64,
    /// Stable for one intended payment (a recharge request id, a client's Idempotency-Key):
    /// never a fresh value per attempt, or a retry after a crash charges twice.
    pub idempotency_key: String,
    pub description: String,
    /// A card, or a bank account (an ACH debit: `processing` for days, then decided).
    #[serde(default, skip_serializing_if = "MethodKind::is_card")]
    pub method: MethodKind,
}

impl ChargeRequest {
    /// A customer-present payment (Pay Now, whose keys are `pay:<account>:<key>`): the issuer
    /// may ask for 3-D Secure, which the customer can answer. Everything else (auto-recharge)
    /// is off-session, where a request for authentication is a decline.
    pub fn on_session(&self) -> bool {
        self.idempotency_key.starts_with("pay:")
    }

    /// Checks what both processors would refuse, before anything is sent.
    pub fn validate(&self) -> Result<(), ProcessorError> {
        if !(MIN_CHARGE_CENTS..=MAX_CHARGE_CENTS).contains(&self.amount_cents) {
            return Err(ProcessorError::InvalidRequest(format!(
                "amount_cents must be between {MIN_CHARGE_CENTS} and {MAX_CHARGE_CENTS}, got {}",
                self.amount_cents
            )));
        }
        check_object_id("customer", self.customer.as_str())?;
        check_object_id("payment_method_id", &self.payment_method_id)?;
        check_idempotency_key(&self.idempotency_key)
    }
}

/// The result of a charge the processor answered. Transport failures are [`ProcessorError`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChargeOutcome {
    Succeeded {
        payment_intent_id: String,
    },
    /// The processor took the charge and has not decided yet (Stripe's `processing`): the
    /// outcome is unknown and may still become a success. Settle it later by asking again.
    Processing {
        payment_intent_id: String,
    },
    /// The card's issuer asks its holder to authenticate the payment (3-D Secure): nothing is
    /// charged until they do. Only an on-session payment (Pay Now, the customer present) gets
    /// here; the client completes it with `client_secret` (Stripe.js `handleNextAction`), and
    /// the payment is then settled like any other, by its event or by asking again.
    RequiresAction {
        payment_intent_id: String,
        client_secret: String,
    },
    /// `payment_intent_id` is the processor's record of the failed attempt, when it made one.
    Declined {
        payment_intent_id: Option<String>,
        decline: Decline,
    },
}

/// Why the issuer or processor refused a card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    pub code: DeclineCode,
    /// The processor's own message, for payment records and logs (scrubbed of card numbers).
    /// Show customers [`Decline::reason`] instead.
    pub message: String,
}

impl Decline {
    pub fn new(code: DeclineCode, message: impl AsRef<str>) -> Self {
        Decline { code, message: redact_card_numbers(message.as_ref()) }
    }

    /// The customer-facing sentence.
    pub fn reason(&self) -> &'static str {
        self.code.reason()
    }
}

/// The processor's decline code, with the ones the product treats specially named.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum DeclineCode {
    CardDeclined,
    InsufficientFunds,
    ExpiredCard,
    IncorrectCvc,
    ProcessingError,
    /// Any other code (`authentication_required`, `lost_card`, `do_not_honor`, ...).
    Other(String),
}

impl DeclineCode {
    /// Stripe reports a decline with a `code` (`card_declined`, `expired_card`, ...) and, for
    /// issuer declines, a more specific `decline_code` (`insufficient_funds`, ...): the specific
    /// one wins unless it is Stripe's `generic_decline`.
    pub fn from_processor_codes(code: Option<&str>, decline_code: Option<&str>) -> Self {
        let specific = decline_code.filter(|c| !c.is_empty() && *c != "generic_decline");
        match specific.or(code) {
            Some(code) => DeclineCode::from_code(code),
            None => DeclineCode::CardDeclined,
        }
    }

    pub fn from_code(code: &str) -> Self {
        match code {
            "card_declined" | "generic_decline" => DeclineCode::CardDeclined,
            "insufficient_funds" => DeclineCode::InsufficientFunds,
            "expired_card" => DeclineCode::ExpiredCard,
            "incorrect_cvc" | "invalid_cvc" => DeclineCode::IncorrectCvc,
            "processing_error" => DeclineCode::ProcessingError,
            other => {
                // Codes are short snake_case identifiers; anything else is not worth keeping.
                let plausible = !other.is_empty()
                    && other.len() <= 64
                    && other.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                DeclineCode::Other(if plausible { other.to_owned() } else { "unknown".to_owned() })
            }
        }
    }

    /// The processor's code, as stored on payment records.
    pub fn as_str(&self) -> &str {
        match self {
            DeclineCode::CardDeclined => "card_declined",
            DeclineCode::InsufficientFunds => "insufficient_funds",
            DeclineCode::ExpiredCard => "expired_card",
            DeclineCode::IncorrectCvc => "incorrect_cvc",
            DeclineCode::ProcessingError => "processing_error",
            DeclineCode::Other(code) => code,
        }
    }

    /// A clear sentence for the customer. Lost, stolen and fraud codes deliberately read as a
    /// plain decline, as Stripe recommends.
    pub fn reason(&self) -> &'static str {
        match self {
            DeclineCode::CardDeclined => {
                "Your card was declined by its issuer. Please contact your bank or use another card."
            }
            DeclineCode::InsufficientFunds => {
                "Your card has insufficient funds. Please use another card or add funds to this one."
            }
            DeclineCode::ExpiredCard => {
                "Your card has expired. Please update its expiry date or add another card."
            }
            DeclineCode::IncorrectCvc => {
                "Your card's security code (CVC) is incorrect. Please re-enter the card and try again."
            }
            DeclineCode::ProcessingError => {
                "An error occurred while processing your card. Please try again in a few minutes."
            }
            DeclineCode::Other(code) if code == "authentication_required" => {
                "Your bank asked to confirm this payment, which cannot be done automatically. \
                 Please pay by hand or use another card."
            }
            DeclineCode::Other(_) => {
                "Your card was declined. Please contact your bank or use another card."
            }
        }
    }
}

impl fmt::Display for DeclineCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for DeclineCode {
    fn from(code: String) -> Self {
        DeclineCode::from_code(&code)
    }
}

impl From<DeclineCode> for String {
    fn from(code: DeclineCode) -> Self {
        code.as_str().to_owned()
    }
}

/// Why a processor call did not produce an answer the caller can act on as a payment result.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A bad token, no such customer or payment method, a reused idempotency key with other
    /// parameters: the caller's 4xx, with the processor's message.
    #[error("the card processor refused the request: {0}")]
    InvalidRequest(String),
    /// The issuer refused to register the card (attach). Charges report declines as
    /// [`ChargeOutcome::Declined`] instead.
    #[error("the card was declined: {}", .0.code)]
    Declined(Decline),
    /// Network failure, timeout, rate limit or processor 5xx: retry later with the same key.
    #[error("the card processor is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An answer that makes no sense (bad credentials, an unknown shape): a bug or a
    /// misconfiguration, not the customer's fault.
    #[error("unexpected answer from the card processor: {0}")]
    Unexpected(String),
}

/// Processor ids and tokens go into URL paths and form fields: ASCII letters, digits and `_`.
#[doc(hidden)]
pub fn check_object_id(what: &str, id: &str) -> Result<(), ProcessorError> {
    if id.is_empty()
        || id.len() > MAX_OBJECT_ID_CHARS
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ProcessorError::InvalidRequest(format!(
            "{what} must be 1 to {MAX_OBJECT_ID_CHARS} ASCII letters, digits or underscores"
        )));
    }
    Ok(())
}

#[doc(hidden)]
pub fn check_idempotency_key(key: &str) -> Result<(), ProcessorError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ProcessorError::InvalidRequest(format!(
            "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
        )));
    }
    Ok(())
}

/// Replaces every run of 12 or more digits (single spaces or dashes between them allowed) with
/// `[redacted]`, so a card number echoed by a processor never reaches an error or a log.
#[doc(hidden)]
pub fn redact_card_numbers(text: &str) -> String {
    const MIN_DIGITS: usize = 12;
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut end = i;
        let mut digits = 0;
        while end < chars.len() {
            if chars[end].is_ascii_digit() {
                digits += 1;
                end += 1;
            } else if matches!(chars[end], ' ' | '-')
                && chars.get(end + 1).is_some_and(char::is_ascii_digit)
            {
                end += 1;
            } else {
                break;
            }
        }
        if digits >= MIN_DIGITS {
            out.push_str("[redacted]");
        } else {
            out.extend(&chars[i..end]);
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(exp_month: u8, exp_year: u16) -> CardDetails {
        CardDetails {
            kind: Default::default(),
            verified: true,
            payment_method_id: "pm_1".into(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month,
            exp_year,
        }
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    #[test]
    fn a_card_is_good_through_the_last_day_of_its_expiry_month() {
        assert!(!card(11, 2026).is_expired(day(2026, 11, 30)));
        assert!(card(11, 2026).is_expired(day(2026, 12, 1)));
        assert!(!card(12, 2026).is_expired(day(2026, 1, 1)));
        assert!(card(12, 2025).is_expired(day(2026, 1, 1)));
        assert!(!card(1, 2027).is_expired(day(2026, 12, 31)));
    }

    #[test]
    fn the_specific_decline_code_wins_over_the_generic_one() {
        let from = DeclineCode::from_processor_codes;
        assert_eq!(
            from(Some("card_declined"), Some("insufficient_funds")),
            DeclineCode::InsufficientFunds
        );
        assert_eq!(from(Some("card_declined"), Some("generic_decline")), DeclineCode::CardDeclined);
        assert_eq!(from(Some("expired_card"), None), DeclineCode::ExpiredCard);
        assert_eq!(from(Some("incorrect_cvc"), Some("incorrect_cvc")), DeclineCode::IncorrectCvc);
        assert_eq!(from(Some("processing_error"), None), DeclineCode::ProcessingError);
        assert_eq!(from(None, None), DeclineCode::CardDeclined);
        assert_eq!(
            from(Some("card_declined"), Some("lost_card")),
            DeclineCode::Other("lost_card".into())
        );
        assert_eq!(DeclineCode::from_code("card declined!"), DeclineCode::Other("unknown".into()));
    }

    #[test]
    fn every_decline_code_has_a_customer_facing_sentence() {
        let codes = [
            DeclineCode::CardDeclined,
            DeclineCode::InsufficientFunds,
            DeclineCode::ExpiredCard,
            DeclineCode::IncorrectCvc,
            DeclineCode::ProcessingError,
            DeclineCode::Other("authentication_required".into()),
            DeclineCode::Other("lost_card".into()),
        ];
        for code in &codes {
            let reason = code.reason();
            assert!(reason.starts_with("Your") || reason.starts_with("An"), "{reason}");
            assert!(reason.ends_with('.'), "{reason}");
            assert_eq!(DeclineCode::from_code(code.as_str()), *code);
        }
        assert_ne!(DeclineCode::InsufficientFunds.reason(), DeclineCode::CardDeclined.reason());
        // A lost card reads as a plain decline to the customer.
        assert!(!DeclineCode::Other("lost_card".into()).reason().contains("lost"));
    }

    #[test]
    fn decline_codes_round_trip_through_serde_as_strings() {
        let json = serde_json::to_string(&DeclineCode::InsufficientFunds).expect("serialize");
        assert_eq!(json, "\"insufficient_funds\"");
        let back: DeclineCode = serde_json::from_str("\"do_not_honor\"").expect("deserialize");
        assert_eq!(back, DeclineCode::Other("do_not_honor".into()));
    }

    #[test]
    fn card_numbers_are_redacted_from_processor_text() {
        // Built at runtime so that no card number, even a public test one, sits in the source.
        let groups = ["4242"; 4];
        let pan = groups.concat();
        assert_eq!(redact_card_numbers(&format!("card {pan} refused")), "card [redacted] refused");
        let spaced = groups.join(" ");
        assert_eq!(redact_card_numbers(&format!("card {spaced}.")), "card [redacted].");
        assert_eq!(redact_card_numbers(&groups.join("-")), "[redacted]");
        assert_eq!(
            redact_card_numbers("amount 1234 on 2026-11-22, pm_1Nabc"),
            "amount 1234 on 2026-11-22, pm_1Nabc"
        );
        assert_eq!(redact_card_numbers("Ünïcode 12"), "Ünïcode 12");
    }

    #[test]
    fn charge_requests_are_checked_before_anything_is_sent() {
        let good = ChargeRequest {
            method: Default::default(),
            customer: CustomerId("cus_1".into()),
            payment_method_id: "pm_1".into(),
            amount_cents: 5000,
            idempotency_key: "recharge-req-1".into(),
            description: "Auto-recharge".into(),
        };
        assert!(good.validate().is_ok());
        let bad = [
            ChargeRequest { amount_cents: 0, ..good.clone() },
            ChargeRequest { amount_cents: MIN_CHARGE_CENTS - 1, ..good.clone() },
            ChargeRequest { amount_cents: MAX_CHARGE_CENTS + 1, ..good.clone() },
            ChargeRequest { idempotency_key: String::new(), ..good.clone() },
            ChargeRequest { idempotency_key: "k".repeat(256), ..good.clone() },
            ChargeRequest { idempotency_key: "with space".into(), ..good.clone() },
            ChargeRequest { payment_method_id: "pm_1/../x".into(), ..good.clone() },
            ChargeRequest { customer: CustomerId(String::new()), ..good.clone() },
        ];
        for request in bad {
            assert!(
                matches!(request.validate(), Err(ProcessorError::InvalidRequest(_))),
                "{request:?}"
            );
        }
    }
}

/// For functions that serve no card routes (settings, activity): any call is an outage, never
/// a charge. Keeps the processor's secret out of functions that do not need it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProcessor;

#[derive(Debug, thiserror::Error)]
#[error("no card processor is configured for this function")]
struct NotConfigured;

#[async_trait]
impl CardProcessor for NoProcessor {
    async fn create_customer(
        &self,
        _account_id: &str,
        _email: Option<&str>,
    ) -> Result<CustomerId, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn attach_card(
        &self,
        _customer: &CustomerId,
        _payment_method_token: &str,
    ) -> Result<CardDetails, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn detach_card(&self, _payment_method_id: &str) -> Result<(), ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn charge(&self, _request: &ChargeRequest) -> Result<ChargeOutcome, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn find_charge(
        &self,
        _customer: &CustomerId,
        _idempotency_key: &str,
    ) -> Result<Option<ChargeOutcome>, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn refund(&self, _request: &RefundRequest) -> Result<RefundOutcome, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn find_refund(
        &self,
        _payment_intent_id: &str,
        _idempotency_key: &str,
    ) -> Result<Option<RefundOutcome>, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn recent_disputes(
        &self,
        _since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<DisputeState>, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn payment_account(
        &self,
        _payment_intent_id: &str,
    ) -> Result<Option<String>, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn customer_account(
        &self,
        _customer: &CustomerId,
    ) -> Result<Option<String>, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn cancel_charge(
        &self,
        _payment_intent_id: &str,
    ) -> Result<ChargeOutcome, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn refunds_of(
        &self,
        _payment_intent_id: &str,
    ) -> Result<Vec<ProcessorRefund>, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }

    async fn recent_refunds(
        &self,
        _since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<ProcessorRefund>, ProcessorError> {
        Err(ProcessorError::Unavailable(Box::new(NotConfigured)))
    }
}

/// The account named by one of our idempotency keys (`pay:<account>:<key>`,
/// `rch:<account>:...`, `refund:<account>:...`, `plan:<account>:<period>/...`), if it is one.
pub fn account_of_key(key: &str) -> Option<&str> {
    let mut parts = key.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("pay" | "rch" | "refund" | "plan"), Some(account), Some(_))
            if !account.is_empty() =>
        {
            Some(account)
        }
        _ => None,
    }
}

impl ProcessorError {
    /// True when the card may have been charged although no definite answer came back
    /// (timeouts, 5xx, unreadable answers): the caller must keep its claim and ask again.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ProcessorError::Unavailable(_) | ProcessorError::Unexpected(_))
    }
}

/// Count a charge's outcome as a business metric: a success, a decline (a definite refusal
/// included), or an unknown outcome to be recovered later.
pub fn count_outcome(outcome: &Result<ChargeOutcome, ProcessorError>) {
    use messaging::metrics::{count, CHARGES, DECLINES, UNKNOWN_OUTCOMES};
    let name = match outcome {
        Ok(ChargeOutcome::Succeeded { .. }) => CHARGES,
        Ok(ChargeOutcome::Declined { .. })
        | Err(ProcessorError::Declined(_) | ProcessorError::InvalidRequest(_)) => DECLINES,
        Ok(ChargeOutcome::Processing { .. } | ChargeOutcome::RequiresAction { .. }) | Err(_) => {
            UNKNOWN_OUTCOMES
        }
    };
    count(name, 1);
}
