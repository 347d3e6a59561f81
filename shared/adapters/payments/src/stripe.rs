//! The Stripe adapter: Stripe's HTTP API, form-encoded, authenticated with the secret key.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::{
    check_idempotency_key, check_object_id, redact_card_numbers, CardDetails, CardProcessor,
    ChargeOutcome, ChargeRequest, CustomerId, Decline, DeclineCode, DisputeState, DisputeStatus,
    MethodKind, ProcessorError, ProcessorRefund, RefundOutcome, RefundRequest,
};

pub const DEFAULT_STRIPE_BASE_URL: &str = "https://api.stripe.com";
/// Pinned so the shape of Stripe's answers does not change under us with the account's default.
pub const STRIPE_API_VERSION: &str = "2024-06-20";
/// Stripe's answers are a few kilobytes; anything far larger is not Stripe.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const MAX_ACCOUNT_ID_CHARS: usize = 200;

/// Stripe's secret (`sk_...`) or restricted (`rk_...`) API key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn parse(key: impl Into<String>) -> Result<Self, StripeConfigError> {
        let key = key.into();
        let well_formed = (key.starts_with("sk_") || key.starts_with("rk_"))
            && key.len() > 3
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if well_formed {
            Ok(SecretKey(key))
        } else {
            Err(StripeConfigError::InvalidSecretKey)
        }
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

#[derive(Clone, Debug)]
pub struct StripeConfig {
    /// `https://api.stripe.com`, or localstripe's endpoint in tests.
    pub base_url: String,
    pub secret_key: SecretKey,
    pub connect_timeout_ms: u64,
    /// For the whole request. Stripe's own libraries allow 80 s; a confirmed payment intent
    /// normally answers in a few seconds, and a timeout is retried with the same key.
    pub request_timeout_ms: u64,
}

impl StripeConfig {
    pub fn new(base_url: impl Into<String>, secret_key: SecretKey) -> Self {
        StripeConfig {
            base_url: base_url.into(),
            secret_key,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StripeConfigError {
    #[error("the Stripe secret key must look like sk_... or rk_...")]
    InvalidSecretKey,
    #[error("the Stripe base URL {0:?} is not an http(s) URL")]
    InvalidBaseUrl(String),
    #[error("timeouts must be between 1 ms and 10 minutes")]
    InvalidTimeout,
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// [`CardProcessor`] over Stripe's HTTP API.
#[derive(Clone, Debug)]
pub struct StripeProcessor {
    base_url: String,
    secret_key: SecretKey,
    http: reqwest::Client,
}

impl StripeProcessor {
    pub fn new(config: StripeConfig) -> Result<Self, StripeConfigError> {
        let url = reqwest::Url::parse(&config.base_url)
            .map_err(|_| StripeConfigError::InvalidBaseUrl(config.base_url.clone()))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(StripeConfigError::InvalidBaseUrl(config.base_url));
        }
        let bounded = |ms: u64| (1..=600_000).contains(&ms);
        if !bounded(config.connect_timeout_ms) || !bounded(config.request_timeout_ms) {
            return Err(StripeConfigError::InvalidTimeout);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .user_agent(concat!("ringledger-payments/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(StripeConfigError::Client)?;
        Ok(StripeProcessor {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            secret_key: config.secret_key,
            http,
        })
    }

    /// One form-encoded POST; the status and body of whatever Stripe answered, or
    /// `Unavailable` when no answer came.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Vec<u8>), ProcessorError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(self.secret_key.expose())
            .header("Stripe-Version", STRIPE_API_VERSION)
            .form(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let mut response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ProcessorError::Unexpected(format!(
                    "answer to POST {path} is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

impl StripeProcessor {
    /// One GET with query parameters; the status and body of whatever Stripe answered.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(StatusCode, Vec<u8>), ProcessorError> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base_url), query)
            .map_err(|e| ProcessorError::Unexpected(format!("cannot build the URL: {e}")))?;
        let mut response = self
            .http
            .get(url)
            .bearer_auth(self.secret_key.expose())
            .header("Stripe-Version", STRIPE_API_VERSION)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ProcessorError::Unexpected(format!(
                    "answer to GET {path} is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// One of Stripe's list pages.
#[derive(Deserialize)]
struct ListPage<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

/// A listed object's id, the cursor of the next page.
trait Listed {
    fn id(&self) -> &str;
}

impl StripeProcessor {
    /// Read a Stripe list (`limit=100`, `starting_after` the last id) and hand each object to
    /// `visit`, at most [`MAX_LOOKUP_PAGES`] pages. `Ok(false)` when there were more pages
    /// than that (the caller decides whether what it found is enough).
    async fn for_each_listed<T: serde::de::DeserializeOwned + Listed>(
        &self,
        path: &str,
        filter: &[(&str, &str)],
        what: &str,
        mut visit: impl FnMut(T) -> Result<(), ProcessorError>,
    ) -> Result<bool, ProcessorError> {
        let mut starting_after: Option<String> = None;
        for _ in 0..MAX_LOOKUP_PAGES {
            let mut query = filter.to_vec();
            query.push(("limit", "100"));
            if let Some(after) = &starting_after {
                query.push(("starting_after", after.as_str()));
            }
            let (status, body) = self.get(path, &query).await?;
            if !status.is_success() {
                return Err(error_from_answer(status, &body));
            }
            let page: ListPage<T> = parse(&body, what)?;
            let has_more = page.has_more;
            starting_after = page.data.last().map(|item| item.id().to_owned());
            for item in page.data {
                visit(item)?;
            }
            if !has_more || starting_after.is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn transport_error(error: reqwest::Error) -> ProcessorError {
    if error.is_builder() {
        ProcessorError::Unexpected(format!("cannot build the request: {error}"))
    } else {
        // Connection refused or reset, DNS, timeouts: nothing (or not all) came back.
        ProcessorError::Unavailable(Box::new(error.without_url()))
    }
}

#[async_trait]
impl CardProcessor for StripeProcessor {
    #[tracing::instrument(skip_all, fields(account_id = %account_id), err(Debug))]
    async fn create_customer(
        &self,
        account_id: &str,
        email: Option<&str>,
    ) -> Result<CustomerId, ProcessorError> {
        if account_id.is_empty()
            || account_id.len() > MAX_ACCOUNT_ID_CHARS
            || !account_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ProcessorError::InvalidRequest(format!(
                "account_id must be 1 to {MAX_ACCOUNT_ID_CHARS} printable ASCII characters"
            )));
        }
        let mut form = vec![("metadata[account_id]", account_id)];
        if let Some(email) = email {
            form.push(("email", email));
        }
        // Keyed by account, so a retry after a lost answer (within Stripe's 24 h key lifetime)
        // finds the customer instead of making a second one.
        let key = format!("ringledger-customer-{account_id}");
        let (status, body) = self.post("/v1/customers", &form, Some(&key)).await?;
        if !status.is_success() {
            return Err(error_from_answer(status, &body));
        }
        let customer: CustomerBody = parse(&body, "customer")?;
        check_object_id("customer id", &customer.id)
            .map_err(|_| ProcessorError::Unexpected("malformed customer id".into()))?;
        Ok(CustomerId(customer.id))
    }

    #[tracing::instrument(skip_all, fields(customer = %customer, payment_method = %payment_method_token), err(Debug))]
    async fn attach_card(
        &self,
        customer: &CustomerId,
        payment_method_token: &str,
    ) -> Result<CardDetails, ProcessorError> {
        check_object_id("customer", customer.as_str())?;
        check_object_id("payment_method_token", payment_method_token)?;
        let path = format!("/v1/payment_methods/{payment_method_token}/attach");
        let (status, body) = self.post(&path, &[("customer", customer.as_str())], None).await?;
        if status == StatusCode::PAYMENT_REQUIRED {
            return Err(ProcessorError::Declined(decline_from_error(&body)));
        }
        if !status.is_success() {
            return Err(error_from_answer(status, &body));
        }
        let payment_method: PaymentMethodBody = parse(&body, "payment method")?;
        card_details(payment_method)
    }

    #[tracing::instrument(skip_all, fields(payment_method = %payment_method_id), err(Debug))]
    async fn detach_card(&self, payment_method_id: &str) -> Result<(), ProcessorError> {
        check_object_id("payment_method_id", payment_method_id)?;
        let path = format!("/v1/payment_methods/{payment_method_id}/detach");
        let (status, body) = self.post(&path, &[], None).await?;
        if !status.is_success() {
            return Err(error_from_answer(status, &body));
        }
        let _: PaymentMethodBody = parse(&body, "payment method")?;
        Ok(())
    }

    #[tracing::instrument(
        skip_all,
        fields(
            customer = %request.customer,
            payment_method = %request.payment_method_id,
            amount_cents = request.amount_cents,
            idempotency_key = %request.idempotency_key,
        ),
        err(Debug)
    )]
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProcessorError> {
        request.validate()?;
        let amount = request.amount_cents.to_string();
        let mut form = vec![
            ("amount", amount.as_str()),
            ("currency", "usd"),
            ("customer", request.customer.as_str()),
            ("payment_method", request.payment_method_id.as_str()),
            // Without this Stripe enables the Dashboard's payment methods, and confirming then
            // asks for a return_url; a charge of a saved card needs none (3-D Secure, on
            // session, comes back as `use_stripe_sdk` for the page to handle).
            // A bank account is debited by ACH: `processing` for days, then succeeded or
            // failed (its mandate was given when the account was collected).
            (
                "payment_method_types[]",
                match request.method {
                    MethodKind::Card => "card",
                    MethodKind::UsBankAccount => "us_bank_account",
                },
            ),
        ];
        // Auto-recharge charges without the customer: Stripe then answers a card that wants
        // authentication with a 402 `authentication_required` instead of waiting for it.
        if !request.on_session() {
            form.push(("off_session", "true"));
        }
        form.extend([
            ("confirm", "true"),
            ("description", request.description.as_str()),
            // Lets a reconciliation find the payment after the key's 24 h lifetime.
            ("metadata[idempotency_key]", request.idempotency_key.as_str()),
        ]);
        let (status, body) =
            self.post("/v1/payment_intents", &form, Some(&request.idempotency_key)).await?;
        if status == StatusCode::PAYMENT_REQUIRED {
            let error = parse_error(&body);
            let payment_intent_id = error.payment_intent.as_ref().map(|pi| pi.id.clone());
            return Ok(ChargeOutcome::Declined {
                payment_intent_id,
                decline: decline_from_body(&error),
            });
        }
        if !status.is_success() {
            return Err(error_from_answer(status, &body));
        }
        let intent: PaymentIntentBody = parse(&body, "payment intent")?;
        outcome_of(intent, request.amount_cents)
    }

    /// Lists the customer's payment intents (newest first, strongly consistent, unlike the
    /// search API) and picks the ones whose metadata carries the key.
    #[tracing::instrument(skip_all, fields(customer = %customer, idempotency_key), err(Debug))]
    async fn find_charge(
        &self,
        customer: &CustomerId,
        idempotency_key: &str,
    ) -> Result<Option<ChargeOutcome>, ProcessorError> {
        check_object_id("customer", customer.as_str())?;
        check_idempotency_key(idempotency_key)?;
        let mut found: Option<ChargeOutcome> = None;
        let filter = [("customer", customer.as_str())];
        let complete = self
            .for_each_listed(
                "/v1/payment_intents",
                &filter,
                "payment intent list",
                |intent: PaymentIntentBody| {
                    if intent.metadata.get("idempotency_key").map(String::as_str)
                        != Some(idempotency_key)
                    {
                        return Ok(());
                    }
                    let amount = intent.amount.unwrap_or_default();
                    let outcome = outcome_of(intent, amount)?;
                    // A success outranks anything else made under the key.
                    let better = match (&found, &outcome) {
                        (None, _) => true,
                        (Some(ChargeOutcome::Succeeded { .. }), _) => false,
                        (_, ChargeOutcome::Succeeded { .. }) => true,
                        (
                            Some(ChargeOutcome::Declined { .. }),
                            ChargeOutcome::Processing { .. },
                        ) => true,
                        _ => false,
                    };
                    if better {
                        found = Some(outcome);
                    }
                    Ok(())
                },
            )
            .await?;
        match found {
            Some(outcome) => Ok(Some(outcome)),
            None if complete => Ok(None),
            None => Err(ProcessorError::Unexpected(format!(
                "more than {MAX_LOOKUP_PAGES} pages of payment intents for {customer}"
            ))),
        }
    }

    #[tracing::instrument(
        skip_all,
        fields(
            payment_intent = %request.payment_intent_id,
            amount_cents = request.amount_cents,
            idempotency_key = %request.idempotency_key,
        ),
        err(Debug)
    )]
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProcessorError> {
        self.stripe_refund(request).await
    }

    #[tracing::instrument(skip_all, err(Debug))]
    async fn recent_disputes(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<DisputeState>, ProcessorError> {
        let since = since.timestamp().to_string();
        let mut found = Vec::new();
        let filter = [("created[gte]", since.as_str())];
        let complete = self
            .for_each_listed("/v1/disputes", &filter, "dispute list", |dispute: DisputeBody| {
                found.push(dispute_state(dispute)?);
                Ok(())
            })
            .await?;
        if !complete {
            return Err(ProcessorError::Unexpected(format!(
                "more than {MAX_LOOKUP_PAGES} pages of disputes since {since}"
            )));
        }
        Ok(found)
    }

    #[tracing::instrument(skip_all, fields(payment_intent = %payment_intent_id), err(Debug))]
    async fn refunds_of(
        &self,
        payment_intent_id: &str,
    ) -> Result<Vec<ProcessorRefund>, ProcessorError> {
        check_object_id("payment_intent_id", payment_intent_id)?;
        self.listed_refunds(&[("payment_intent", payment_intent_id)]).await
    }

    async fn recent_refunds(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<ProcessorRefund>, ProcessorError> {
        let since = since.timestamp().to_string();
        self.listed_refunds(&[("created[gte]", since.as_str())]).await
    }

    #[tracing::instrument(skip_all, fields(payment_intent = %payment_intent_id), err(Debug))]
    async fn payment_account(
        &self,
        payment_intent_id: &str,
    ) -> Result<Option<String>, ProcessorError> {
        check_object_id("payment_intent_id", payment_intent_id)?;
        let (status, body) =
            self.get(&format!("/v1/payment_intents/{payment_intent_id}"), &[]).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(error_from_answer(status, &body));
        }
        let intent: PaymentIntentBody = parse(&body, "payment intent")?;
        Ok(intent
            .metadata
            .get("idempotency_key")
            .and_then(|key| crate::account_of_key(key))
            .map(str::to_owned))
    }

    #[tracing::instrument(skip_all, fields(payment_intent = %payment_intent_id), err(Debug))]
    async fn cancel_charge(
        &self,
        payment_intent_id: &str,
    ) -> Result<ChargeOutcome, ProcessorError> {
        check_object_id("payment_intent_id", payment_intent_id)?;
        let path = format!("/v1/payment_intents/{payment_intent_id}/cancel");
        let form: [(&str, &str); 0] = [];
        let key = format!("ringledger-cancel-{payment_intent_id}");
        let (status, body) = self.post(&path, &form, Some(&key)).await?;
        let (status, body) = if status.is_success() {
            (status, body)
        } else if status == StatusCode::BAD_REQUEST {
            // Not cancelable any more (the holder authenticated it, or it was canceled
            // already): how it stands is the answer.
            self.get(&format!("/v1/payment_intents/{payment_intent_id}"), &[]).await?
        } else {
            return Err(error_from_answer(status, &body));
        };
        if !status.is_success() {
            return Err(error_from_answer(status, &body));
        }
        let intent: PaymentIntentBody = parse(&body, "payment intent")?;
        let amount = intent.amount.unwrap_or_default();
        outcome_of(intent, amount)
    }

    async fn customer_account(
        &self,
        customer: &CustomerId,
    ) -> Result<Option<String>, ProcessorError> {
        check_object_id("customer", customer.as_str())?;
        let (status, body) = self.get(&format!("/v1/customers/{}", customer.as_str()), &[]).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(error_from_answer(status, &body));
        }
        let customer: CustomerBody = parse(&body, "customer")?;
        Ok(customer.metadata.get("account_id").filter(|a| !a.is_empty()).cloned())
    }

    #[tracing::instrument(skip_all, fields(payment_intent = %payment_intent_id), err(Debug))]
    async fn find_refund(
        &self,
        payment_intent_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<RefundOutcome>, ProcessorError> {
        self.stripe_find_refund(payment_intent_id, idempotency_key).await
    }
}

impl StripeProcessor {
    /// `POST /v1/refunds` against the payment intent, with the key as `Idempotency-Key` and in
    /// the refund's metadata (so [`CardProcessor::find_refund`] finds it after 24 h).
    async fn stripe_refund(
        &self,
        request: &RefundRequest,
    ) -> Result<RefundOutcome, ProcessorError> {
        request.validate()?;
        let amount = request.amount_cents.to_string();
        let form = [
            ("payment_intent", request.payment_intent_id.as_str()),
            ("amount", amount.as_str()),
            ("metadata[idempotency_key]", request.idempotency_key.as_str()),
        ];
        let (status, body) =
            self.post("/v1/refunds", &form, Some(&request.idempotency_key)).await?;
        if !status.is_success() {
            return Err(error_from_answer(status, &body));
        }
        let refund: RefundBody = parse(&body, "refund")?;
        refund_outcome_of(refund, request.amount_cents)
    }

    /// The payment intent's refunds (newest first), picking the ones whose metadata carries
    /// the key; a sent or pending one outranks a failed one.
    /// Every refund the filter lists, as [`ProcessorRefund`]s (refunds of no payment intent,
    /// which a card charge always has, are skipped).
    async fn listed_refunds(
        &self,
        filter: &[(&str, &str)],
    ) -> Result<Vec<ProcessorRefund>, ProcessorError> {
        let mut found = Vec::new();
        let complete = self
            .for_each_listed("/v1/refunds", filter, "refund list", |refund: RefundBody| {
                let Some(payment_intent_id) = refund.payment_intent.clone() else { return Ok(()) };
                let idempotency_key = refund.metadata.get("idempotency_key").cloned();
                let amount_cents = refund.amount.unwrap_or_default();
                let outcome = refund_outcome_of(refund, amount_cents)?;
                found.push(ProcessorRefund {
                    payment_intent_id,
                    amount_cents,
                    outcome,
                    idempotency_key,
                });
                Ok(())
            })
            .await?;
        if !complete {
            return Err(ProcessorError::Unexpected(format!(
                "more than {MAX_LOOKUP_PAGES} pages of refunds"
            )));
        }
        Ok(found)
    }

    async fn stripe_find_refund(
        &self,
        payment_intent_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<RefundOutcome>, ProcessorError> {
        check_object_id("payment_intent_id", payment_intent_id)?;
        check_idempotency_key(idempotency_key)?;
        let mut found: Option<RefundOutcome> = None;
        let filter = [("payment_intent", payment_intent_id)];
        let complete = self
            .for_each_listed("/v1/refunds", &filter, "refund list", |refund: RefundBody| {
                if refund.metadata.get("idempotency_key").map(String::as_str)
                    != Some(idempotency_key)
                {
                    return Ok(());
                }
                let amount = refund.amount.unwrap_or_default();
                let outcome = refund_outcome_of(refund, amount)?;
                if !matches!(
                    found,
                    Some(RefundOutcome::Sent { .. } | RefundOutcome::Pending { .. })
                ) {
                    found = Some(outcome);
                }
                Ok(())
            })
            .await?;
        match found {
            Some(outcome) => Ok(Some(outcome)),
            None if complete => Ok(None),
            None => Err(ProcessorError::Unexpected(format!(
                "more than {MAX_LOOKUP_PAGES} pages of refunds for {payment_intent_id}"
            ))),
        }
    }
}

/// A Stripe dispute object as a [`DisputeState`]: funds withdrawn when a balance transaction
/// took money (negative amount), reinstated when one gave it back; the fee is what the
/// withdrawal's transactions charged.
pub fn dispute_state(dispute: DisputeBody) -> Result<DisputeState, ProcessorError> {
    let status = match dispute.status.as_str() {
        "won" => DisputeStatus::Won,
        "lost" => DisputeStatus::Lost,
        // `warning_closed`: an inquiry closed without a chargeback; nothing moved.
        "warning_closed" => DisputeStatus::Won,
        "warning_needs_response" | "warning_under_review" | "needs_response" | "under_review" => {
            DisputeStatus::Open
        }
        other => {
            return Err(ProcessorError::Unexpected(format!(
                "dispute {} has the unknown status {other:?}",
                dispute.id
            )))
        }
    };
    let Some(payment_intent_id) = dispute.payment_intent else {
        return Err(ProcessorError::Unexpected(format!(
            "dispute {} names no payment intent",
            dispute.id
        )));
    };
    let withdrawals = dispute.balance_transactions.iter().filter(|t| t.amount < 0);
    let fee_cents = withdrawals.map(|t| t.fee.max(0) as u64).sum();
    Ok(DisputeState {
        dispute_id: dispute.id,
        payment_intent_id,
        amount_cents: dispute.amount,
        fee_cents,
        status,
        funds_withdrawn: dispute.balance_transactions.iter().any(|t| t.amount < 0),
        funds_reinstated: dispute.balance_transactions.iter().any(|t| t.amount > 0),
    })
}

fn refund_outcome_of(
    refund: RefundBody,
    amount_cents: u64,
) -> Result<RefundOutcome, ProcessorError> {
    if refund.amount.is_some_and(|amount| amount != amount_cents) {
        return Err(ProcessorError::Unexpected(format!(
            "refund {} is for {:?} cents, not the {amount_cents} asked for",
            refund.id, refund.amount
        )));
    }
    match refund.status.as_str() {
        "succeeded" => Ok(RefundOutcome::Sent { refund_id: refund.id }),
        // Taken, on its way (some card networks), or waiting on the customer's bank details.
        "pending" | "requires_action" => Ok(RefundOutcome::Pending { refund_id: refund.id }),
        "failed" | "canceled" => Ok(RefundOutcome::Failed {
            reason: refund
                .failure_reason
                .map(|r| redact_card_numbers(&r))
                .unwrap_or_else(|| format!("the processor {} the refund", refund.status)),
            refund_id: Some(refund.id),
        }),
        other => Err(ProcessorError::Unexpected(format!(
            "refund {} has the unknown status {other:?}",
            refund.id
        ))),
    }
}

fn outcome_of(
    intent: PaymentIntentBody,
    amount_cents: u64,
) -> Result<ChargeOutcome, ProcessorError> {
    if intent.amount.is_some_and(|amount| amount != amount_cents) {
        return Err(ProcessorError::Unexpected(format!(
            "payment intent {} is for {:?} cents, not the {amount_cents} asked for",
            intent.id, intent.amount
        )));
    }
    match intent.status.as_str() {
        "succeeded" => Ok(ChargeOutcome::Succeeded { payment_intent_id: intent.id }),
        // Decided later by the processor (some card networks, async methods): unknown for now.
        "processing" => Ok(ChargeOutcome::Processing { payment_intent_id: intent.id }),
        // A customer-present payment the issuer wants authenticated: the page completes it.
        // (Off session, Stripe declines these with a 402; one left waiting is a decline.)
        "requires_action" if intent.client_secret.is_some() && intent.on_session() => {
            Ok(ChargeOutcome::RequiresAction {
                payment_intent_id: intent.id,
                client_secret: intent.client_secret.unwrap_or_default(),
            })
        }
        "requires_payment_method" | "canceled" => {
            let decline =
                intent.last_payment_error.as_ref().map(decline_from_body).unwrap_or_else(|| {
                    Decline::new(DeclineCode::CardDeclined, "Your card was declined.")
                });
            Ok(ChargeOutcome::Declined { payment_intent_id: Some(intent.id), decline })
        }
        // Stripe answers an off-session confirm that needs 3-D Secure with a 402
        // `authentication_required`; a fake may leave the intent waiting for the customer.
        "requires_action" | "requires_confirmation" => Ok(ChargeOutcome::Declined {
            payment_intent_id: Some(intent.id),
            decline: Decline::new(
                DeclineCode::Other("authentication_required".into()),
                "The card requires authentication by its holder.",
            ),
        }),
        other => Err(ProcessorError::Unexpected(format!(
            "payment intent {} is {other:?} after an automatic-capture confirm",
            intent.id
        ))),
    }
}

pub(crate) fn card_details(
    payment_method: PaymentMethodBody,
) -> Result<CardDetails, ProcessorError> {
    // A US bank account (ACH): collected and verified by Stripe.js (Financial Connections, or
    // microdeposits confirmed there) with its mandate, so the account that reaches us is
    // chargeable; it has no expiry.
    if payment_method.kind == "us_bank_account" {
        let Some(account) = payment_method.us_bank_account else {
            return Err(ProcessorError::Unexpected(format!(
                "payment method {} has no bank account details",
                payment_method.id
            )));
        };
        let well_formed = account.last4.len() == 4
            && account.last4.bytes().all(|b| b.is_ascii_digit())
            && check_object_id("payment method id", &payment_method.id).is_ok();
        if !well_formed {
            return Err(ProcessorError::Unexpected(format!(
                "payment method {} has malformed bank account details",
                payment_method.id
            )));
        }
        let bank = account.bank_name.filter(|b| !b.is_empty()).unwrap_or_else(|| "bank".into());
        return Ok(CardDetails {
            kind: MethodKind::UsBankAccount,
            verified: true,
            payment_method_id: payment_method.id,
            brand: bank.chars().take(32).collect(),
            last4: account.last4,
            exp_month: 12,
            exp_year: crate::BANK_ACCOUNT_EXP_YEAR,
        });
    }
    let Some(card) = payment_method.card.filter(|_| payment_method.kind == "card") else {
        return Err(ProcessorError::InvalidRequest(format!(
            "payment method {} is a {}, not a card",
            payment_method.id, payment_method.kind
        )));
    };
    let well_formed = card.last4.len() == 4
        && card.last4.bytes().all(|b| b.is_ascii_digit())
        && (1..=12).contains(&card.exp_month)
        && !card.brand.is_empty()
        && card.brand.len() <= 32
        && check_object_id("payment method id", &payment_method.id).is_ok();
    if !well_formed {
        return Err(ProcessorError::Unexpected(format!(
            "payment method {} has malformed card details",
            payment_method.id
        )));
    }
    Ok(CardDetails {
        kind: Default::default(),
        verified: true,
        payment_method_id: payment_method.id,
        brand: card.brand,
        last4: card.last4,
        exp_month: card.exp_month,
        exp_year: card.exp_year,
    })
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, ProcessorError> {
    serde_json::from_slice(body)
        .map_err(|error| ProcessorError::Unexpected(format!("cannot read the {what}: {error}")))
}

fn parse_error(body: &[u8]) -> ErrorBody {
    serde_json::from_slice::<ErrorEnvelope>(body).map(|envelope| envelope.error).unwrap_or_default()
}

fn decline_from_error(body: &[u8]) -> Decline {
    decline_from_body(&parse_error(body))
}

fn decline_from_body(error: &ErrorBody) -> Decline {
    Decline::new(
        DeclineCode::from_processor_codes(error.code.as_deref(), error.decline_code.as_deref()),
        error.message.as_deref().unwrap_or("Your card was declined."),
    )
}

/// Maps a non-2xx answer other than a card decline.
fn error_from_answer(status: StatusCode, body: &[u8]) -> ProcessorError {
    let error = parse_error(body);
    let detail = error.describe(status);
    match status {
        // 402 outside a charge or attach; 400 invalid_request_error / idempotency_error;
        // 404 no such customer or payment method.
        StatusCode::BAD_REQUEST | StatusCode::PAYMENT_REQUIRED | StatusCode::NOT_FOUND => {
            ProcessorError::InvalidRequest(detail)
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProcessorError::Unexpected(format!(
            "the processor refused our credentials (check the secret key): {detail}"
        )),
        // 409: a request with the same idempotency key is still running; 429: rate limited.
        StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => {
            ProcessorError::Unavailable(Box::new(ServiceError(detail)))
        }
        status if status.is_server_error() => {
            ProcessorError::Unavailable(Box::new(ServiceError(detail)))
        }
        _ => ProcessorError::Unexpected(detail),
    }
}

/// A processor answer that means "try again later".
#[derive(Debug)]
struct ServiceError(String);

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServiceError {}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    decline_code: Option<String>,
    message: Option<String>,
    param: Option<String>,
    payment_intent: Option<IdOnly>,
}

impl ErrorBody {
    /// `HTTP 400 invalid_request_error resource_missing (param customer): No such customer`,
    /// scrubbed of anything that looks like a card number.
    fn describe(&self, status: StatusCode) -> String {
        let mut text = format!("HTTP {}", status.as_u16());
        for part in [&self.kind, &self.code].into_iter().flatten() {
            text.push(' ');
            text.push_str(part);
        }
        if let Some(param) = &self.param {
            text.push_str(&format!(" (param {param})"));
        }
        if let Some(message) = &self.message {
            text.push_str(": ");
            text.push_str(message);
        }
        const MAX_DETAIL_CHARS: usize = 500;
        redact_card_numbers(&text.chars().take(MAX_DETAIL_CHARS).collect::<String>())
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct CustomerBody {
    id: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
pub(crate) struct PaymentMethodBody {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    card: Option<CardBody>,
    #[serde(default)]
    us_bank_account: Option<BankAccountBody>,
}

#[derive(Deserialize)]
struct BankAccountBody {
    #[serde(default)]
    bank_name: Option<String>,
    last4: String,
}

#[derive(Deserialize)]
struct CardBody {
    brand: String,
    last4: String,
    exp_month: u8,
    exp_year: u16,
}

#[derive(Deserialize)]
struct PaymentIntentBody {
    id: String,
    status: String,
    amount: Option<u64>,
    last_payment_error: Option<ErrorBody>,
    /// For the customer's browser to complete 3-D Secure (Stripe.js); never logged or stored.
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

impl PaymentIntentBody {
    /// Made for a customer-present payment (a Pay Now key; see `ChargeRequest::on_session`).
    fn on_session(&self) -> bool {
        self.metadata.get("idempotency_key").is_some_and(|key| key.starts_with("pay:"))
    }
}

impl Listed for PaymentIntentBody {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Stripe's dispute object (the fields a [`DisputeState`] needs).
#[derive(Deserialize)]
pub struct DisputeBody {
    id: String,
    amount: u64,
    status: String,
    payment_intent: Option<String>,
    #[serde(default)]
    balance_transactions: Vec<DisputeTransaction>,
}

#[derive(Deserialize)]
struct DisputeTransaction {
    amount: i64,
    #[serde(default)]
    fee: i64,
}

impl Listed for DisputeBody {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Deserialize)]
struct RefundBody {
    id: String,
    status: String,
    amount: Option<u64>,
    #[serde(default)]
    payment_intent: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

impl Listed for RefundBody {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Pages of the customer's payment intents a lookup reads before it gives up (100 each).
const MAX_LOOKUP_PAGES: usize = 10;

#[cfg(test)]
mod tests {
    //! The adapter against canned Stripe answers served from a loopback socket: the request it
    //! sends, and every error shape localstripe cannot produce (issuer decline codes, 5xx, 429,
    //! credentials, timeouts). tests/tests/stripe_localstripe.rs runs it against localstripe.

    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[derive(Debug, Clone)]
    struct Seen {
        request_line: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
        fn form(&self) -> Vec<(String, String)> {
            self.body
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(k), decode(v))
                })
                .collect()
        }
    }

    fn decode(text: &str) -> String {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    /// Serves `answers` (status, JSON body) in order, one per connection, recording requests.
    async fn canned(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            for (status, body) in answers {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let (head_end, content_length) = loop {
                    let n = socket.read(&mut buf).await.expect("read");
                    assert!(n > 0, "client closed early");
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..pos]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().expect("length"));
                        break (pos + 4, length);
                    }
                };
                while raw.len() < head_end + content_length {
                    let n = socket.read(&mut buf).await.expect("read body");
                    raw.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&raw[..head_end - 4]).to_string();
                let mut lines = head.lines();
                let request_line = lines.next().unwrap_or_default().to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let body_text = String::from_utf8_lossy(&raw[head_end..]).to_string();
                log.lock().expect("log").push(Seen { request_line, headers, body: body_text });
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.expect("write");
                socket.shutdown().await.ok();
            }
        });
        (url, seen)
    }

    fn processor(url: &str) -> StripeProcessor {
        let key = SecretKey::parse("sk_test_unit").expect("key");
        StripeProcessor::new(StripeConfig::new(url, key)).expect("processor")
    }

    fn request() -> ChargeRequest {
        ChargeRequest {
            method: Default::default(),
            customer: CustomerId("cus_1".into()),
            payment_method_id: "pm_1".into(),
            amount_cents: 2500,
            idempotency_key: "recharge-42".into(),
            description: "Auto-recharge for acme".into(),
        }
    }

    const PI_OK: &str =
        r#"{"id":"pi_ok","object":"payment_intent","status":"succeeded","amount":2500}"#;

    #[tokio::test]
    async fn a_charge_is_an_off_session_confirmed_payment_intent_with_the_idempotency_key() {
        let (url, seen) = canned(vec![(200, PI_OK)]).await;
        let outcome = processor(&url).charge(&request()).await.expect("charge");
        assert_eq!(outcome, ChargeOutcome::Succeeded { payment_intent_id: "pi_ok".into() });
        let seen = seen.lock().expect("seen")[0].clone();
        assert_eq!(seen.request_line, "POST /v1/payment_intents HTTP/1.1");
        assert_eq!(seen.header("idempotency-key"), Some("recharge-42"));
        assert_eq!(seen.header("authorization"), Some("Bearer sk_test_unit"));
        assert_eq!(seen.header("stripe-version"), Some(STRIPE_API_VERSION));
        assert_eq!(seen.header("content-type"), Some("application/x-www-form-urlencoded"));
        let form = seen.form();
        for (key, value) in [
            ("amount", "2500"),
            ("currency", "usd"),
            ("customer", "cus_1"),
            ("payment_method", "pm_1"),
            ("off_session", "true"),
            ("confirm", "true"),
            ("description", "Auto-recharge for acme"),
            ("metadata[idempotency_key]", "recharge-42"),
        ] {
            assert!(
                form.contains(&(key.into(), value.into())),
                "{key}={value} missing from {form:?}"
            );
        }
    }

    #[tokio::test]
    async fn issuer_declines_map_to_their_decline_codes_with_the_payment_intent() {
        let cases = [
            (
                r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds.","payment_intent":{"id":"pi_1","status":"requires_payment_method"}}}"#,
                DeclineCode::InsufficientFunds,
            ),
            (
                r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"generic_decline","message":"Your card was declined.","payment_intent":{"id":"pi_1"}}}"#,
                DeclineCode::CardDeclined,
            ),
            (
                r#"{"error":{"type":"card_error","code":"expired_card","decline_code":"expired_card","message":"Your card has expired.","payment_intent":{"id":"pi_1"}}}"#,
                DeclineCode::ExpiredCard,
            ),
            (
                r#"{"error":{"type":"card_error","code":"incorrect_cvc","message":"Your card's security code is incorrect.","payment_intent":{"id":"pi_1"}}}"#,
                DeclineCode::IncorrectCvc,
            ),
            (
                r#"{"error":{"type":"card_error","code":"processing_error","message":"An error occurred while processing your card.","payment_intent":{"id":"pi_1"}}}"#,
                DeclineCode::ProcessingError,
            ),
            (
                r#"{"error":{"type":"card_error","code":"authentication_required","decline_code":"authentication_required","message":"Your card was declined. This transaction requires authentication.","payment_intent":{"id":"pi_1"}}}"#,
                DeclineCode::Other("authentication_required".into()),
            ),
        ];
        for (body, code) in cases {
            let (url, _) = canned(vec![(402, body)]).await;
            match processor(&url).charge(&request()).await.expect("an outcome") {
                ChargeOutcome::Declined { payment_intent_id, decline } => {
                    assert_eq!(payment_intent_id.as_deref(), Some("pi_1"));
                    assert_eq!(decline.code, code);
                    assert!(!decline.message.is_empty());
                }
                other => panic!("expected a decline, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_decline_without_a_payment_intent_still_is_a_decline() {
        let body = r#"{"error":{"type":"invalid_request_error","code":"card_declined","charge":"ch_1","message":"Your card was declined."}}"#;
        let (url, _) = canned(vec![(402, body)]).await;
        let outcome = processor(&url).charge(&request()).await.expect("outcome");
        let ChargeOutcome::Declined { payment_intent_id: None, decline } = outcome else {
            panic!("expected a decline without an intent, got {outcome:?}");
        };
        assert_eq!(decline.code, DeclineCode::CardDeclined);
    }

    #[tokio::test]
    async fn a_failed_intent_answered_with_200_is_a_decline() {
        let body = r#"{"id":"pi_2","status":"requires_payment_method","amount":2500,"last_payment_error":{"code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds."}}"#;
        let (url, _) = canned(vec![(200, body)]).await;
        let outcome = processor(&url).charge(&request()).await.expect("outcome");
        let ChargeOutcome::Declined { payment_intent_id, decline } = outcome else {
            panic!("expected a decline, got {outcome:?}");
        };
        assert_eq!(payment_intent_id.as_deref(), Some("pi_2"));
        assert_eq!(decline.code, DeclineCode::InsufficientFunds);
    }

    #[tokio::test]
    async fn an_intent_for_another_amount_is_unexpected() {
        let body = r#"{"id":"pi_3","status":"succeeded","amount":999}"#;
        let (url, _) = canned(vec![(200, body)]).await;
        let error = processor(&url).charge(&request()).await.expect_err("mismatch");
        assert!(matches!(error, ProcessorError::Unexpected(_)), "{error:?}");
    }

    #[tokio::test]
    async fn request_errors_server_errors_and_credentials_map_to_distinct_variants() {
        type Expected = fn(&ProcessorError) -> bool;
        let cases: [(u16, &str, Expected); 7] = [
            (
                400,
                r#"{"error":{"type":"invalid_request_error","code":"resource_missing","param":"customer","message":"No such customer: 'cus_1'"}}"#,
                |e| matches!(e, ProcessorError::InvalidRequest(m) if m.contains("No such customer")),
            ),
            (
                400,
                r#"{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters they were first used with."}}"#,
                |e| matches!(e, ProcessorError::InvalidRequest(m) if m.contains("idempotency_error")),
            ),
            (404, r#"{"error":{"type":"invalid_request_error","message":"Not Found"}}"#, |e| {
                matches!(e, ProcessorError::InvalidRequest(_))
            }),
            (
                401,
                r#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****unit"}}"#,
                |e| matches!(e, ProcessorError::Unexpected(m) if m.contains("secret key")),
            ),
            (500, r#"{"error":{"type":"api_error","message":"Something went wrong"}}"#, |e| {
                matches!(e, ProcessorError::Unavailable(_))
            }),
            (503, "not json at all", |e| matches!(e, ProcessorError::Unavailable(_))),
            (429, r#"{"error":{"type":"invalid_request_error","code":"rate_limit"}}"#, |e| {
                matches!(e, ProcessorError::Unavailable(_))
            }),
        ];
        for (status, body, expected) in cases {
            let (url, _) = canned(vec![(status, body)]).await;
            let error = processor(&url).charge(&request()).await.expect_err("an error");
            assert!(expected(&error), "HTTP {status} gave {error:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_processor_is_unavailable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let error = processor(&url).charge(&request()).await.expect_err("refused");
        assert!(matches!(error, ProcessorError::Unavailable(_)), "{error:?}");
        assert!(std::error::Error::source(&error).is_some(), "the cause is kept for the logs");
    }

    #[tokio::test]
    async fn a_processor_that_never_answers_times_out_as_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let hold = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let mut config = StripeConfig::new(url, SecretKey::parse("sk_test_unit").expect("key"));
        config.request_timeout_ms = 300;
        let started = std::time::Instant::now();
        let error = StripeProcessor::new(config)
            .expect("processor")
            .charge(&request())
            .await
            .expect_err("timeout");
        assert!(matches!(error, ProcessorError::Unavailable(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        hold.abort();
    }

    #[tokio::test]
    async fn attach_reads_the_card_and_a_refused_card_is_declined() {
        let ok = r#"{"id":"pm_9","object":"payment_method","type":"card","customer":"cus_1","card":{"brand":"mastercard","last4":"4444","exp_month":8,"exp_year":2031,"country":"US"}}"#;
        let refused = r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds."}}"#;
        let (url, seen) = canned(vec![(200, ok), (402, refused)]).await;
        let stripe = processor(&url);
        let card = stripe
            .attach_card(&CustomerId("cus_1".into()), "pm_card_mastercard")
            .await
            .expect("attach");
        assert_eq!(
            card,
            CardDetails {
                kind: Default::default(),
                verified: true,
                payment_method_id: "pm_9".into(),
                brand: "mastercard".into(),
                last4: "4444".into(),
                exp_month: 8,
                exp_year: 2031
            }
        );
        let error =
            stripe.attach_card(&CustomerId("cus_1".into()), "pm_x").await.expect_err("declined");
        assert!(
            matches!(&error, ProcessorError::Declined(d) if d.code == DeclineCode::InsufficientFunds),
            "{error:?}"
        );
        let seen = seen.lock().expect("seen");
        assert_eq!(
            seen[0].request_line,
            "POST /v1/payment_methods/pm_card_mastercard/attach HTTP/1.1"
        );
        assert_eq!(seen[0].form(), vec![("customer".to_owned(), "cus_1".to_owned())]);
    }

    #[tokio::test]
    async fn a_customers_account_is_read_from_its_metadata() {
        let (url, seen) = canned(vec![
            (200, r#"{"id":"cus_42","object":"customer","metadata":{"account_id":"acme"}}"#),
            (200, r#"{"id":"cus_43","object":"customer","metadata":{}}"#),
            (404, r#"{"error":{"type":"invalid_request_error","message":"No such customer"}}"#),
        ])
        .await;
        let stripe = processor(&url);
        let ids = ["cus_42", "cus_43", "cus_44"].map(|id| CustomerId(id.into()));
        assert_eq!(stripe.customer_account(&ids[0]).await.unwrap(), Some("acme".into()));
        assert_eq!(stripe.customer_account(&ids[1]).await.unwrap(), None, "not one of ours");
        assert_eq!(stripe.customer_account(&ids[2]).await.unwrap(), None, "unknown");
        let line = seen.lock().expect("seen")[0].request_line.clone();
        assert!(line.starts_with("GET /v1/customers/cus_42"), "{line}");
    }

    #[tokio::test]
    async fn recent_refunds_list_by_creation_time_with_their_keys() {
        let page = r#"{"object":"list","has_more":false,"data":[
            {"id":"re_1","object":"refund","status":"succeeded","amount":300,"payment_intent":"pi_1"},
            {"id":"re_2","object":"refund","status":"failed","amount":500,"payment_intent":"pi_2",
             "failure_reason":"expired_or_canceled_card",
             "metadata":{"idempotency_key":"refund:acme:00ff:r-1"}},
            {"id":"re_3","object":"refund","status":"succeeded","amount":100}]}"#;
        let (url, seen) = canned(vec![(200, page)]).await;
        let since = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let listed = processor(&url).recent_refunds(since).await.expect("listed");
        assert_eq!(
            listed,
            vec![
                ProcessorRefund {
                    payment_intent_id: "pi_1".into(),
                    amount_cents: 300,
                    outcome: RefundOutcome::Sent { refund_id: "re_1".into() },
                    idempotency_key: None,
                },
                ProcessorRefund {
                    payment_intent_id: "pi_2".into(),
                    amount_cents: 500,
                    outcome: RefundOutcome::Failed {
                        refund_id: Some("re_2".into()),
                        reason: "expired_or_canceled_card".into(),
                    },
                    idempotency_key: Some("refund:acme:00ff:r-1".into()),
                },
            ],
            "a refund of no payment intent is not a card payment's"
        );
        let line = seen.lock().expect("seen")[0].request_line.clone();
        assert!(line.starts_with("GET /v1/refunds?"), "{line}");
        assert!(line.contains("created%5Bgte%5D=1700000000"), "{line}");
    }

    #[tokio::test]
    async fn create_customer_keys_the_request_by_account() {
        let (url, seen) = canned(vec![(200, r#"{"id":"cus_42","object":"customer"}"#)]).await;
        let customer = processor(&url)
            .create_customer("acme", Some("billing@acme.example"))
            .await
            .expect("customer");
        assert_eq!(customer, CustomerId("cus_42".into()));
        let seen = seen.lock().expect("seen")[0].clone();
        assert_eq!(seen.request_line, "POST /v1/customers HTTP/1.1");
        assert_eq!(seen.header("idempotency-key"), Some("ringledger-customer-acme"));
        let form = seen.form();
        assert!(form.contains(&("metadata[account_id]".into(), "acme".into())), "{form:?}");
        assert!(form.contains(&("email".into(), "billing@acme.example".into())), "{form:?}");
    }

    #[tokio::test]
    async fn bad_ids_are_refused_before_anything_is_sent() {
        let stripe = processor("http://127.0.0.1:9");
        let customer = CustomerId("cus_1".into());
        for token in ["", "pm/../../v1/charges", "pm_1?x=y", "pm 1"] {
            let error = stripe.attach_card(&customer, token).await.expect_err("refused");
            assert!(matches!(error, ProcessorError::InvalidRequest(_)), "{token:?}: {error:?}");
        }
        let error = stripe.detach_card("pm_1/x").await.expect_err("refused");
        assert!(matches!(error, ProcessorError::InvalidRequest(_)));
        let error = stripe.create_customer("", None).await.expect_err("refused");
        assert!(matches!(error, ProcessorError::InvalidRequest(_)));
    }

    /// A US bank account payment method as Stripe returns it (shape recorded from
    /// docs.stripe.com/api/payment_methods/object, type `us_bank_account`): localstripe has no
    /// bank accounts, so the reading is tested on the recorded object.
    #[test]
    fn a_us_bank_account_payment_method_reads_as_a_bank_account() {
        let recorded = serde_json::json!({
            "id": "pm_1Q0PsIJvEtkwdCNYMSaVuRz6", "object": "payment_method",
            "type": "us_bank_account", "customer": "cus_QsAQRpS8b4QdvA", "livemode": false,
            "billing_details": {"email": null, "name": "John Doe", "phone": null},
            "us_bank_account": {
                "account_holder_type": "individual", "account_type": "checking",
                "bank_name": "STRIPE TEST BANK", "financial_connections_account": null,
                "fingerprint": "LstWJFsCK7P349Bg", "last4": "6789",
                "networks": {"preferred": "ach", "supported": ["ach"]},
                "routing_number": "110000000", "status_details": {}
            }
        });
        let body: PaymentMethodBody = serde_json::from_value(recorded).expect("a payment method");
        let account = card_details(body).expect("a bank account");
        assert_eq!(account.kind, MethodKind::UsBankAccount);
        assert_eq!((account.brand.as_str(), account.last4.as_str()), ("STRIPE TEST BANK", "6789"));
        assert!(account.verified && !account.is_expired(chrono::NaiveDate::MAX));
        let broken = serde_json::json!({
            "id": "pm_2", "type": "us_bank_account", "us_bank_account": {"last4": "67"}
        });
        let body: PaymentMethodBody = serde_json::from_value(broken).expect("a payment method");
        assert!(matches!(card_details(body), Err(ProcessorError::Unexpected(_))));
    }

    #[test]
    fn the_secret_key_never_shows_in_debug_output() {
        let key = SecretKey::parse("sk_test_supersecret").expect("key");
        let stripe = StripeProcessor::new(StripeConfig::new(DEFAULT_STRIPE_BASE_URL, key))
            .expect("processor");
        let debug = format!("{stripe:?}");
        assert!(!debug.contains("supersecret"), "{debug}");
        assert!(SecretKey::parse("pk_test_x").is_err());
        assert!(SecretKey::parse("sk_").is_err());
        let bad_url = StripeConfig::new("ftp://x", SecretKey::parse("sk_x").expect("key"));
        assert!(matches!(StripeProcessor::new(bad_url), Err(StripeConfigError::InvalidBaseUrl(_))));
    }

    /// Stripe's dispute objects (shapes from docs.stripe.com/api/disputes/object): a withdrawal
    /// is a balance transaction of minus the amount with the fee; a won dispute adds one
    /// giving both back.
    #[test]
    fn dispute_objects_read_as_their_money_steps() {
        let read = |body: serde_json::Value| {
            dispute_state(serde_json::from_value::<DisputeBody>(body).expect("a dispute"))
        };
        let opened = read(serde_json::json!({
            "id": "dp_1", "object": "dispute", "amount": 4000, "currency": "usd",
            "status": "needs_response", "payment_intent": "pi_1", "balance_transactions": []
        }))
        .expect("state");
        assert_eq!(
            opened,
            DisputeState {
                dispute_id: "dp_1".into(),
                payment_intent_id: "pi_1".into(),
                amount_cents: 4000,
                fee_cents: 0,
                status: DisputeStatus::Open,
                funds_withdrawn: false,
                funds_reinstated: false,
            }
        );
        let withdrawn = serde_json::json!({"amount": -4000, "fee": 1500, "net": -5500});
        let won = read(serde_json::json!({
            "id": "dp_1", "amount": 4000, "status": "won", "payment_intent": "pi_1",
            "balance_transactions": [withdrawn, {"amount": 4000, "fee": -1500, "net": 5500}]
        }))
        .expect("state");
        assert_eq!((won.status, won.fee_cents), (DisputeStatus::Won, 1500));
        assert!(won.funds_withdrawn && won.funds_reinstated);
        let lost = read(serde_json::json!({
            "id": "dp_2", "amount": 4000, "status": "lost", "payment_intent": "pi_1",
            "balance_transactions": [withdrawn]
        }))
        .expect("state");
        assert_eq!(
            (lost.status, lost.funds_withdrawn, lost.funds_reinstated),
            (DisputeStatus::Lost, true, false)
        );
        assert!(read(serde_json::json!({"id": "dp_3", "amount": 1, "status": "charge_refunded", "payment_intent": "pi_1"})).is_err());
        assert!(read(
            serde_json::json!({"id": "dp_4", "amount": 1, "status": "won", "payment_intent": null})
        )
        .is_err());
    }

    #[test]
    fn our_idempotency_keys_name_their_account() {
        assert_eq!(crate::account_of_key("pay:acme:order-1"), Some("acme"));
        assert_eq!(crate::account_of_key("rch:acme:12:v3:a1:pm_1"), Some("acme"));
        assert_eq!(crate::account_of_key("refund:acme:00ff:r-1"), Some("acme"));
        assert_eq!(crate::account_of_key("plan:acme:2026-12-01/1/pm_1"), Some("acme"));
        assert_eq!(crate::account_of_key("someone-else:acme:x"), None);
        assert_eq!(crate::account_of_key("pay::x"), None);
        assert_eq!(crate::account_of_key("pay:acme"), None);
    }
}
