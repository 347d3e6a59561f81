//! Cards, Pay Now and payment history.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use ledger::docs::DocKind;
use ledger::{AccountId, Amount};
use payments::{CustomerId, ProcessorError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::{account_or_404, idempotency_key, require_terms, Params};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::openapi::{self as doc, EmailAddress, SignedUsd, Usd};
use crate::profile::{self, CardRole, Email, StoredCard};
use crate::state::AppState;
use payment_flow::{pay_now_with, PayNowAnswer, PayNowError, PaymentPorts};

/// Pay Now limits (whole cents).
pub const MIN_PAYMENT_USD: rust_decimal::Decimal =
    rust_decimal::Decimal::from_parts(1, 0, 0, false, 0);
pub const MAX_PAYMENT_USD: rust_decimal::Decimal =
    rust_decimal::Decimal::from_parts(10_000, 0, 0, false, 0);
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default()
        .routes(routes!(list_cards, add_card))
        .routes(routes!(add_bank_account))
        .routes(routes!(verify_bank_account))
        .routes(routes!(set_role))
        .routes(routes!(delete_card))
        .routes(routes!(pay_now, history))
}

/// A card change or a manual payment resets auto-recharge's backoff and lifts a stop: a
/// request that is waiting out its backoff is dropped, a stopped auto-recharge is re-armed, and
/// when the balance is still below the threshold the ledger raises a fresh request at once
/// (`settle_settings_change`). Dropping a waiting request is tied to the version of its
/// write-ahead record: it is marked cancelled only if nobody wrote it since it was read, so a
/// worker that has just written down an attempt is never raced into a second request.
pub async fn reset_recharge_backoff(state: &AppState, id: &AccountId) {
    if let Err(error) = payment_flow::rearm_auto_recharge(&*state.store, id).await {
        tracing::warn!(%error, "auto-recharge backoff not reset");
    }
}

fn processor_error(error: ProcessorError) -> ApiError {
    match error {
        ProcessorError::InvalidRequest(message) => {
            ApiError::bad_request("processor_rejected", message)
        }
        other => {
            tracing::warn!(error = %other, "card processor unavailable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "processor_unavailable",
                "the card processor is unavailable; nothing was charged or credited, retry",
            )
        }
    }
}

/// A registered card: the processor's id, brand, last 4 digits, expiry and role (never a
/// card number).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Card)]
pub struct CardView {
    /// The processor's payment-method id.
    pub id: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub role: doc::CardRole,
    pub expired: bool,
    #[schema(value_type = EmailAddress)]
    pub card_manager_email: Email,
    /// `card`, or `us_bank_account` (ACH: its payments settle in a few business days; `brand`
    /// is the bank's name, and it never expires).
    pub kind: PaymentMethodKind,
    /// A bank account waiting for its microdeposit amounts (`POST
    /// /v1/bank-accounts/{id}/verify`) is never charged; cards are always verified.
    pub verified: bool,
}

/// `card` or `us_bank_account`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethodKind {
    Card,
    UsBankAccount,
}

impl From<profile::MethodKind> for PaymentMethodKind {
    fn from(kind: profile::MethodKind) -> Self {
        match kind {
            profile::MethodKind::Card => PaymentMethodKind::Card,
            profile::MethodKind::UsBankAccount => PaymentMethodKind::UsBankAccount,
        }
    }
}

fn card_view(card: &StoredCard) -> CardView {
    let StoredCard {
        id,
        brand,
        last4,
        exp_month,
        exp_year,
        role,
        card_manager_email,
        added_at: _,
        kind,
        verified,
    } = card;
    CardView {
        kind: (*kind).into(),
        verified: *verified,
        id: id.clone(),
        brand: brand.clone(),
        last4: last4.clone(),
        exp_month: *exp_month,
        exp_year: *exp_year,
        role: (*role).into(),
        expired: card.expired(Utc::now().date_naive()),
        card_manager_email: card_manager_email.clone(),
    }
}

/// The account's cards, and how many it may keep.
#[derive(Debug, Serialize, ToSchema)]
pub struct CardList {
    pub cards: Vec<CardView>,
    pub max_cards: usize,
}

impl CardList {
    fn of(profile: &profile::Profile) -> Self {
        CardList {
            cards: profile.cards.iter().map(card_view).collect(),
            max_cards: profile::MAX_CARDS,
        }
    }
}

#[utoipa::path(
    get, path = "/v1/cards", summary = "Registered cards",
    responses(
        (status = 200, description = "Cards", body = CardList),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn list_cards(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<CardList>, ApiError> {
    let id = identity.account()?;
    account_or_404(&state, id).await?;
    // A client account pays with its agency's cards: its agency's users see them; the
    // client's own users see none (the cards, and their managers' addresses, are the agency's).
    let payer = profile::load_payer(state.docs(), id).await?;
    if payer.account != *id && identity.agency.as_ref() != Some(&payer.account) {
        return Ok(Json(CardList::of(&profile::Profile::default())));
    }
    Ok(Json(CardList::of(&payer.profile)))
}

/// Cards are changed on the account that holds them: a client account's are its agency's.
async fn own_cards(state: &AppState, id: &ledger::AccountId) -> Result<(), ApiError> {
    let (profile, _) = profile::load(state.docs(), id).await?;
    match profile.agency_id {
        Some(agency) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "agency_cards",
            format!("this client account pays with the cards of its agency {agency}: change them on the agency's account"),
        )),
        None => Ok(()),
    }
}

/// Register a card by the token the processor's card form gave (never a card number).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCard {
    #[schema(min_length = 1, max_length = 255)]
    pub payment_method_token: String,
    #[schema(value_type = EmailAddress)]
    pub card_manager_email: Email,
    pub role: doc::CardRole,
}

/// The registered card.
#[derive(Debug, Serialize, ToSchema)]
pub struct CardAdded {
    pub card: CardView,
}

/// Keep exactly one primary: `new_primary` becomes it and any other primary becomes a backup.
fn promote(cards: &mut [StoredCard], new_primary: &str) {
    for card in cards.iter_mut() {
        card.role = if card.id == new_primary { CardRole::Primary } else { CardRole::Backup };
    }
}

#[utoipa::path(
    post, path = "/v1/cards", summary = "Register a card by processor token (admin)",
    request_body = AddCard,
    responses(
        (status = 201, description = "Registered", body = CardAdded),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 409, description = "Conflict with the current state (too many cards)", body = ApiError),
        (status = 429, description = "Card-testing limit: 10 card registrations per account and hour; `Retry-After` says when to try again", body = ApiError),
        (status = 502, description = "Card processor unavailable", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn add_card(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<(StatusCode, Json<CardAdded>), ApiError> {
    let id = identity.admin_account()?.clone();
    own_cards(&state, &id).await?;
    let request: AddCard = crate::body::json(&raw)?;
    let method = NewMethod {
        token: &request.payment_method_token,
        manager_email: request.card_manager_email,
        role: request.role,
        kind: profile::MethodKind::Card,
    };
    register(&state, &identity, &id, method).await
}

/// A payment method to register: a card, or a bank account.
struct NewMethod<'a> {
    token: &'a str,
    manager_email: Email,
    role: doc::CardRole,
    kind: profile::MethodKind,
}

/// Attach a token at the processor and keep what it is (a card or a bank account: the one
/// the route registers; the other kind is refused and detached).
async fn register(
    state: &AppState,
    identity: &Identity,
    id: &AccountId,
    method: NewMethod<'_>,
) -> Result<(StatusCode, Json<CardAdded>), ApiError> {
    let id = id.clone();
    let token = method.token.trim();
    if token.is_empty() || token.len() > 255 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request("invalid_field", "payment_method_token is not a token")
            .on_field("payment_method_token"));
    }
    // A raw card number is never accepted, stored or logged.
    if token.bytes().filter(u8::is_ascii_digit).count() >= 12
        && token.bytes().all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            "send a payment-method token from the card form, never a card number",
        )
        .on_field("payment_method_token"));
    }
    let account = account_or_404(state, &id).await?;
    require_terms(&account)?;
    let (current, _) = profile::load(state.docs(), &id).await?;
    if current.cards.len() >= profile::MAX_CARDS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_cards",
            format!("an account keeps at most {} cards; delete one first", profile::MAX_CARDS),
        ));
    }
    let customer = match current.processor_customer_id.clone() {
        Some(customer) => CustomerId(customer),
        None => {
            let email = current.billing_emails.first().map(|e| e.as_str().to_string());
            let customer = state
                .processor
                .create_customer(id.as_str(), email.as_deref())
                .await
                .map_err(processor_error)?;
            let stored = customer.0.clone();
            profile::update_with(state.docs(), &id, |p| {
                p.processor_customer_id.get_or_insert_with(|| stored.clone());
                Ok::<(), ApiError>(())
            })
            .await?;
            // Another request may have created one first: use whichever was stored.
            let (reloaded, _) = profile::load(state.docs(), &id).await?;
            CustomerId(reloaded.processor_customer_id.unwrap_or(customer.0))
        }
    };
    // Card-testing defence: every registration that reaches the processor counts.
    crate::limits::check(state.docs(), &id, crate::limits::Limited::CardRegistration, Utc::now())
        .await?;
    crate::limits::record(state.docs(), &id, crate::limits::Limited::CardRegistration, Utc::now())
        .await;
    let details = state.processor.attach_card(&customer, token).await.map_err(processor_error)?;
    let kind = match details.kind {
        payments::MethodKind::Card => profile::MethodKind::Card,
        payments::MethodKind::UsBankAccount => profile::MethodKind::UsBankAccount,
    };
    if kind != method.kind {
        // Not kept: detached, unless it is a method the account already holds (a saved card's
        // id sent to the wrong route must keep working).
        if !current.cards.iter().any(|c| c.id == details.payment_method_id) {
            let _ = state.processor.detach_card(&details.payment_method_id).await;
        }
        let message = match kind {
            profile::MethodKind::Card => "this token is a card: register it with POST /v1/cards",
            profile::MethodKind::UsBankAccount => {
                "this token is a bank account: register it with POST /v1/bank-accounts"
            }
        };
        return Err(
            ApiError::bad_request("invalid_field", message).on_field("payment_method_token")
        );
    }
    // A bank account waiting for verification cannot pay: it is kept as a backup until then,
    // so the primary stays a method that pays (and whose expiry is watched).
    let role = if details.verified { method.role.into() } else { CardRole::Backup };
    let card = StoredCard {
        kind,
        verified: details.verified,
        id: details.payment_method_id.clone(),
        brand: details.brand.clone(),
        last4: details.last4.clone(),
        exp_month: details.exp_month,
        exp_year: details.exp_year,
        role,
        card_manager_email: method.manager_email,
        added_at: ledger::truncate_to_micros(Utc::now()),
    };
    let saved = profile::update_with(state.docs(), &id, |p| {
        if p.cards.iter().any(|c| c.id == card.id) {
            return Ok(());
        }
        if p.cards.len() >= profile::MAX_CARDS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_cards",
                "card limit reached",
            ));
        }
        p.cards.push(card.clone());
        if card.role == CardRole::Primary || p.primary_card().is_none() {
            promote(&mut p.cards, &card.id);
        }
        Ok(())
    })
    .await;
    let (_, after) = match saved {
        Ok(saved) => saved,
        Err(error) => {
            // Not kept: do not leave it attached at the processor either.
            let _ = state.processor.detach_card(&card.id).await;
            return Err(error);
        }
    };
    reset_recharge_backoff(state, &id).await;
    let stored = after.cards.iter().find(|c| c.id == card.id).unwrap_or(&card);
    crate::audit::record(
        state.docs(),
        &id,
        &identity.user,
        if kind.is_card() { "card_added" } else { "bank_account_added" },
        Value::Null,
        json!({
            "card": stored.id, "brand": stored.brand, "last4": stored.last4, "role": stored.role,
            // The holder's authorization to debit (ACH), by this user, now.
            "mandate_accepted": (!kind.is_card()).then_some(true),
        }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(CardAdded { card: card_view(stored) })))
}

/// A card's new role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CardRole)]
pub struct RoleBody {
    pub role: doc::CardRole,
}

#[utoipa::path(
    put, path = "/v1/cards/{card_id}/role", summary = "Change a card's role (admin)",
    params(("card_id" = String, Path, min_length = 1, max_length = 255, description = "The card's id")),
    request_body = RoleBody,
    responses(
        (status = 200, description = "Cards", body = CardList),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 409, description = "Conflict with the current state (an account keeps one primary card)", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn set_role(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(card_id): Path<String>,
    raw: Bytes,
) -> Result<Json<CardList>, ApiError> {
    let id = identity.admin_account()?.clone();
    own_cards(&state, &id).await?;
    let request: RoleBody = crate::body::json(&raw)?;
    let role: CardRole = request.role.into();
    account_or_404(&state, &id).await?;
    let (before, after) = profile::update_with(state.docs(), &id, |p| {
        let Some(card) = p.cards.iter_mut().find(|c| c.id == card_id) else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such card"));
        };
        match role {
            CardRole::Primary if !card.verified => return Err(ApiError::new(
                StatusCode::CONFLICT,
                "unverified_bank_account",
                "verify the bank account (POST /v1/bank-accounts/{id}/verify) before making it \
                     primary",
            )),
            CardRole::Primary => promote(&mut p.cards, &card_id),
            CardRole::Backup if card.role == CardRole::Primary => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "primary_required",
                    "make another card primary instead; an account keeps one primary card",
                ))
            }
            CardRole::Backup => card.role = CardRole::Backup,
        }
        Ok(())
    })
    .await?;
    let roles = |p: &profile::Profile| {
        p.cards.iter().map(|c| json!({ "card": c.id, "role": c.role })).collect::<Vec<_>>()
    };
    crate::audit::record(
        state.docs(),
        &id,
        &identity.user,
        "card_roles",
        json!(roles(&before)),
        json!(roles(&after)),
    )
    .await?;
    reset_recharge_backoff(&state, &id).await;
    Ok(Json(CardList::of(&after)))
}

#[utoipa::path(
    delete, path = "/v1/cards/{card_id}", summary = "Delete a card (admin)",
    params(("card_id" = String, Path, min_length = 1, max_length = 255, description = "The card's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn delete_card(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(card_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = identity.admin_account()?.clone();
    own_cards(&state, &id).await?;
    account_or_404(&state, &id).await?;
    let (before, after) = profile::update_with(state.docs(), &id, |p| {
        let Some(index) = p.cards.iter().position(|c| c.id == card_id) else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such card"));
        };
        let removed = p.cards.remove(index);
        if removed.role == CardRole::Primary {
            // The next method that can pay becomes primary (not a bank account still waiting
            // for its verification).
            let next = p.charge_order().first().map(|c| c.id.clone());
            if let Some(next) = next.or_else(|| p.cards.first().map(|c| c.id.clone())) {
                promote(&mut p.cards, &next);
            }
        }
        Ok(())
    })
    .await?;
    if let Err(error) = state.processor.detach_card(&card_id).await {
        // The card is gone from the account either way; a stale attachment is harmless.
        tracing::warn!(%error, "detach failed");
    }
    let removed = before.cards.iter().find(|c| c.id == card_id);
    crate::audit::record(
        state.docs(),
        &id,
        &identity.user,
        "card_deleted",
        json!(removed.map(|c| json!({ "card": c.id, "last4": c.last4, "role": c.role }))),
        json!({ "cards_left": after.cards.len() }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub use documents::payment::{load_payment, save_payment, PaymentRecord, PaymentStatus, Trigger};

/// A one-time payment from the primary card.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PayNow)]
pub struct PayNowBody {
    /// Whole cents, $1.00 to $10,000.00.
    #[schema(value_type = String, pattern = r"^[0-9]{1,5}(\.[0-9]{1,2})?$", example = "25.00")]
    pub amount_usd: Amount,
}

/// One charge attempt (Pay Now or auto-recharge) as the payment history shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    pub payment_id: String,
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    pub card_id: String,
    pub card_brand: String,
    pub card_last4: String,
    pub status: doc::PaymentStatus,
    pub trigger: doc::Trigger,
    pub created_at: DateTime<Utc>,
    pub processor_payment_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    /// The ledger entry that credited it, once it did.
    pub entry_seq: Option<u64>,
    #[schema(value_type = Option<SignedUsd>)]
    pub balance_after_usd: Option<String>,
    /// While pending: why (the processor has not answered yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// Refunds to the card, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<RefundView>,
    /// Disputes (chargebacks) of this payment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disputes: Vec<DisputeView>,
    /// What is left to refund (succeeded payments).
    #[schema(value_type = Option<Usd>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refundable_usd: Option<String>,
}

impl From<&PaymentRecord> for PaymentView {
    fn from(record: &PaymentRecord) -> Self {
        // Every field named: a new one does not compile until the API decides to show it.
        let PaymentRecord {
            payment_id,
            amount_usd,
            card_id,
            card_brand,
            card_last4,
            status,
            trigger,
            created_at,
            processor_payment_id,
            failure_code,
            failure_reason,
            entry_seq,
            balance_after_usd,
            pending_reason,
            refunds,
            disputes,
        } = record.clone();
        let refundable_usd = (status == PaymentStatus::Succeeded)
            .then(|| record.refundable_usd().normalize().to_string());
        PaymentView {
            payment_id,
            amount_usd,
            card_id,
            card_brand,
            card_last4,
            status: status.into(),
            trigger: trigger.into(),
            created_at,
            processor_payment_id,
            failure_code,
            failure_reason,
            entry_seq,
            balance_after_usd,
            pending_reason,
            refunds: refunds.iter().map(Into::into).collect(),
            disputes: disputes.iter().map(Into::into).collect(),
            refundable_usd,
        }
    }
}

/// Where a refund stands: `requested` (the processor has not answered yet: it is finished
/// once, in the background), `sent`, `pending` (taken by the processor, on its way: counts as
/// returned) or `failed` (refused by the processor: the amount went back to the balance).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    Requested,
    Sent,
    Pending,
    Failed,
}

impl From<documents::payment::RefundStatus> for RefundState {
    fn from(status: documents::payment::RefundStatus) -> Self {
        use documents::payment::RefundStatus;
        match status {
            RefundStatus::Requested => RefundState::Requested,
            RefundStatus::Sent => RefundState::Sent,
            RefundStatus::Pending => RefundState::Pending,
            RefundStatus::Failed => RefundState::Failed,
        }
    }
}

/// One refund of a payment.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Refund)]
pub struct RefundView {
    /// The Idempotency-Key it was asked for with.
    pub refund_id: String,
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    pub reason: String,
    pub status: RefundState,
    pub requested_at: DateTime<Utc>,
    pub by: Option<String>,
    pub processor_refund_id: Option<String>,
    /// The ledger entry that debited it.
    pub entry_seq: Option<u64>,
    /// The ledger entry that returned it to the balance when the processor refused it.
    pub reversal_seq: Option<u64>,
    pub failure_reason: Option<String>,
}

impl From<&documents::payment::RefundLine> for RefundView {
    fn from(line: &documents::payment::RefundLine) -> Self {
        let documents::payment::RefundLine {
            refund_id,
            amount_usd,
            reason,
            status,
            requested_at,
            by,
            processor_refund_id,
            entry_seq,
            reversal_seq,
            failure_reason,
        } = line.clone();
        RefundView {
            refund_id,
            amount_usd,
            reason,
            status: status.into(),
            requested_at,
            by,
            processor_refund_id,
            entry_seq,
            reversal_seq,
            failure_reason,
        }
    }
}

/// Where a dispute stands: `open` (the amount is held by the processor, or will be), `won`
/// (withdrawn funds and fee credited back) or `lost`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStanding {
    Open,
    Won,
    Lost,
}

/// A dispute (chargeback) of a payment, as the ledger followed it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Dispute)]
pub struct DisputeView {
    pub dispute_id: String,
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    /// The processor's dispute fee.
    #[schema(value_type = SignedUsd)]
    pub fee_usd: rust_decimal::Decimal,
    pub status: DisputeStanding,
    /// The entries that debited the funds and the fee.
    pub withdrawn_seqs: Vec<u64>,
    /// The entries that credited them back.
    pub reinstated_seqs: Vec<u64>,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&documents::payment::DisputeLine> for DisputeView {
    fn from(line: &documents::payment::DisputeLine) -> Self {
        use documents::payment::DisputeOutcome;
        let documents::payment::DisputeLine {
            dispute_id,
            amount_usd,
            fee_usd,
            status,
            withdrawn_seqs,
            reinstated_seqs,
            opened_at,
            updated_at,
        } = line.clone();
        DisputeView {
            dispute_id,
            amount_usd,
            fee_usd,
            status: match status {
                DisputeOutcome::Open => DisputeStanding::Open,
                DisputeOutcome::Won => DisputeStanding::Won,
                DisputeOutcome::Lost => DisputeStanding::Lost,
            },
            withdrawn_seqs,
            reinstated_seqs,
            opened_at,
            updated_at,
        }
    }
}

/// Pay Now charged and credited.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentCredited {
    pub payment: PaymentView,
}

/// Pay Now is waiting for the processor's answer, or for the cardholder to authenticate it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPending {
    pub payment: PaymentView,
    pub message: String,
    /// The card's issuer asks its holder to authenticate the payment (3-D Secure): complete it
    /// in the customer's browser with Stripe.js (`stripe.handleNextAction({clientSecret})`).
    /// Nothing is credited until it succeeds; a payment not authenticated within an hour is
    /// cancelled and marked failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_action: Option<NextActionView>,
}

/// What the client does next for a pending payment.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NextAction)]
pub struct NextActionView {
    /// `use_stripe_sdk`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The processor's client secret of the payment, for its script in the customer's
    /// browser; not a credential of this API.
    pub client_secret: String,
}

/// The processor declined the card or refused the request: nothing was credited; the payment
/// record says why.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRefused {
    /// `card_declined` or `processor_rejected`.
    #[schema(value_type = String)]
    pub code: &'static str,
    pub message: String,
    pub payment: PaymentView,
}

/// A Pay Now 400: the request was invalid (nothing was sent to the processor), or the
/// processor refused it (a failed payment was recorded).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Documents the 400; the answers are built as their own types.
pub enum PayNowBadRequest {
    Invalid(ApiError),
    Refused(Box<PaymentRefused>),
}

/// Every answer Pay Now gives with a payment.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PayNowReply {
    Credited(PaymentCredited),
    Refused(PaymentRefused),
    Pending(PaymentPending),
}

/// A page of payments, newest first; `next_cursor` continues.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPage {
    pub payments: Vec<PaymentView>,
    pub next_cursor: Option<String>,
}

/// What a client is told while the processor has not answered.
pub const PENDING_MESSAGE: &str = "The card processor has not confirmed this payment yet. It \
    will be credited once (or marked failed) as soon as the processor answers; nothing is \
    charged twice. See the payment history, or retry with the same Idempotency-Key.";

/// A Pay Now answer as HTTP: 201 credited, 402 declined, 400 refused by the processor, 202
/// pending.
/// What a client is told while the holder's authentication is awaited.
pub const AUTHENTICATION_MESSAGE: &str = "The card's issuer asks the cardholder to authenticate \
    this payment (3-D Secure). Complete it with next_action in the customer's browser; the \
    payment is credited once it succeeds, and cancelled if it is not authenticated within an \
    hour.";

pub fn answer_response(answer: &PayNowAnswer) -> (StatusCode, PayNowReply) {
    match answer {
        PayNowAnswer::Credited { payment } => (
            StatusCode::CREATED,
            PayNowReply::Credited(PaymentCredited { payment: payment.into() }),
        ),
        PayNowAnswer::Declined { message, payment } => (
            StatusCode::PAYMENT_REQUIRED,
            PayNowReply::Refused(PaymentRefused {
                code: "card_declined",
                message: message.clone(),
                payment: payment.into(),
            }),
        ),
        PayNowAnswer::Rejected { message, payment } => (
            StatusCode::BAD_REQUEST,
            PayNowReply::Refused(PaymentRefused {
                code: "processor_rejected",
                message: message.clone(),
                payment: payment.into(),
            }),
        ),
        PayNowAnswer::Pending { payment, next_action } => (
            StatusCode::ACCEPTED,
            PayNowReply::Pending(PaymentPending {
                payment: payment.into(),
                message: match next_action {
                    Some(_) => AUTHENTICATION_MESSAGE.to_string(),
                    None => PENDING_MESSAGE.to_string(),
                },
                next_action: next_action.as_ref().map(|action| NextActionView {
                    kind: action.kind.clone(),
                    client_secret: action.client_secret.clone(),
                }),
            }),
        ),
    }
}

impl From<PayNowError> for ApiError {
    fn from(error: PayNowError) -> Self {
        match error {
            PayNowError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                error.to_string(),
            ),
            PayNowError::InProgress => {
                ApiError::new(StatusCode::CONFLICT, "in_progress", error.to_string())
            }
            PayNowError::TooManyPending => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_pending_payments",
                error.to_string(),
            ),
            PayNowError::Document(error) => error.into(),
            PayNowError::Store(error) => ApiError::from_store(error),
            internal @ PayNowError::Internal(_) => ApiError::internal(&internal),
        }
    }
}

#[utoipa::path(
    post, path = "/v1/payments",
    summary = "Pay Now: charge the primary card, or the first backup that has not expired when the primary has (admin; Idempotency-Key required)",
    params(
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 100, pattern = "^[!-~]+$",
            description = "Makes a resend charge nothing twice: the same key answers the same payment"),
    ),
    request_body = PayNowBody,
    responses(
        (status = 201, description = "Charged and credited", body = PaymentCredited),
        (status = 202, description = "Pending: the card processor has not answered (timeout, processing). The payment will be credited once or marked failed when it does; retry with the same Idempotency-Key to learn the outcome. Nothing is charged twice.", body = PaymentPending),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed (or the processor refused the request: the failed payment is included)", body = PayNowBadRequest),
        (status = 402, description = "Card declined: nothing was credited; the failed payment is included", body = PaymentRefused),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 409, description = "Conflict with the current state (no primary card, every card expired, or the same key is in progress)", body = ApiError),
        (status = 422, description = "Idempotency-Key reused with a different request", body = ApiError),
        (status = 429, description = "Too many payments are still pending, or the card-testing limit (5 declined payments per account and hour) is reached (`Retry-After` says when): nothing was charged", body = ApiError),
        (status = 502, description = "Card processor unavailable", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn pay_now(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let id = crate::auth::billing_admin(&state, &identity).await?;
    let key = idempotency_key(&headers)?;
    let request: PayNowBody = crate::body::json(&raw)?;
    let amount = request.amount_usd;
    if amount.value().scale() > 2 {
        return Err(ApiError::bad_request("invalid_field", "amount must be whole cents")
            .on_field("amount_usd"));
    }
    if amount.value() < MIN_PAYMENT_USD || amount.value() > MAX_PAYMENT_USD {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("amount must be between ${MIN_PAYMENT_USD} and ${MAX_PAYMENT_USD}"),
        )
        .on_field("amount_usd"));
    }
    let account = account_or_404(&state, &id).await?;
    require_terms(&account)?;
    // The cards: the account's own, or its agency's for a client account.
    let profile = profile::load_payer(state.docs(), &id).await?.profile;
    // An expired primary falls through to the first backup that has not expired, without
    // asking the processor (it would only decline).
    let today = Utc::now().date_naive();
    let (Some(card), Some(customer)) =
        (profile.payable_card(today).cloned(), profile.processor_customer_id.clone())
    else {
        if profile.cards.iter().any(|c| !c.verified) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "unverified_bank_account",
                "the bank account on file is not verified yet: verify it with its two \
                 microdeposit amounts (POST /v1/bank-accounts/{id}/verify) or add a card",
            ));
        }
        if profile.primary_card().is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "cards_expired",
                "every card on file has expired; add a card before paying",
            ));
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_primary_card",
            "register a primary card before paying",
        ));
    };
    let ports = PaymentPorts {
        store: &*state.store,
        processor: &*state.processor,
        notices: state.notices.as_deref(),
    };
    crate::limits::check(state.docs(), &id, crate::limits::Limited::DeclinedPayment, Utc::now())
        .await?;
    let answer = pay_now_with(&ports, &id, &key, amount, &card, &customer, Utc::now()).await?;
    if matches!(answer, PayNowAnswer::Declined { .. } | PayNowAnswer::Rejected { .. }) {
        crate::limits::record(
            state.docs(),
            &id,
            crate::limits::Limited::DeclinedPayment,
            Utc::now(),
        )
        .await;
    }
    let (status, response) = answer_response(&answer);
    Ok((status, Json(response)).into_response())
}

#[utoipa::path(
    get, path = "/v1/payments", summary = "Payment history, newest first",
    params(
        ("cursor" = Option<String>, Query, max_length = 200, description = "The previous page's next_cursor"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Payments per page (default 50)"),
    ),
    responses(
        (status = 200, description = "Payments", body = PaymentPage),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn history(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<PaymentPage>, ApiError> {
    let id = identity.account()?;
    account_or_404(&state, id).await?;
    let params = Params::new(raw, &["cursor", "limit"])?;
    let limit = params.limit(50, 200)?;
    let (payments, next_cursor) =
        state.doc_page::<PaymentRecord>(id, DocKind::Payment, params.get("cursor"), limit).await?;
    let payments = payments.iter().map(PaymentView::from).collect();
    Ok(Json(PaymentPage { payments, next_cursor }))
}

/// Register a US bank account by the processor's token (from its bank-account form: Stripe.js
/// collects it with Financial Connections or by hand for microdeposits; never an account
/// number). The holder's authorization to debit it (the ACH mandate) is required.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBankAccount {
    #[schema(min_length = 1, max_length = 255)]
    pub payment_method_token: String,
    /// Who manages the account's billing details (receives its notices).
    #[schema(value_type = EmailAddress)]
    pub manager_email: Email,
    pub role: doc::CardRole,
    /// The holder authorized ringledger to debit the account for payments and auto-recharge
    /// (the ACH mandate shown beside the form). Must be `true`.
    pub mandate_accepted: bool,
}

#[utoipa::path(
    post, path = "/v1/bank-accounts",
    summary = "Register a US bank account (ACH) by processor token, with the holder's mandate (admin)",
    description = "Usable like a card for Pay Now and as primary or backup for auto-recharge once verified. An account the processor verified at once (instant verification) is chargeable now; one waiting for microdeposits is kept with `verified: false` and never charged until `POST /v1/bank-accounts/{id}/verify`. ACH payments settle in a few business days: they are `pending` first and credited only when they succeed (or marked failed, with a `payment_failed` email).",
    request_body = AddBankAccount,
    responses(
        (status = 201, description = "Registered (see `verified`)", body = CardAdded),
        (status = 409, description = "Conflict with the current state (too many payment methods)", body = ApiError),
        (status = 429, description = "Card-testing limit: 10 registrations per account and hour; `Retry-After` says when to try again", body = ApiError),
        (status = 502, description = "Card processor unavailable", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn add_bank_account(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<(StatusCode, Json<CardAdded>), ApiError> {
    let id = identity.admin_account()?.clone();
    own_cards(&state, &id).await?;
    let request: AddBankAccount = crate::body::json(&raw)?;
    if !request.mandate_accepted {
        return Err(ApiError::bad_request(
            "invalid_field",
            "the account holder must authorize the debits (mandate_accepted: true)",
        )
        .on_field("mandate_accepted"));
    }
    let method = NewMethod {
        token: &request.payment_method_token,
        manager_email: request.manager_email,
        role: request.role,
        kind: profile::MethodKind::UsBankAccount,
    };
    register(&state, &identity, &id, method).await
}

/// The two microdeposit amounts, in cents, as the holder read them on their statement.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBankAccount {
    #[schema(min_items = 2, max_items = 2)]
    pub amounts_cents: [u32; 2],
}

#[utoipa::path(
    post, path = "/v1/bank-accounts/{card_id}/verify",
    summary = "Verify a bank account by its two microdeposits (admin)",
    params(("card_id" = String, Path, description = "The bank account's payment-method id")),
    request_body = VerifyBankAccount,
    responses(
        (status = 200, description = "Verified: chargeable from now on", body = CardAdded),
        (status = 400, description = "The amounts do not match (nothing changed), or a bad request", body = ApiError),
        (status = 404, description = "No such bank account on the account", body = ApiError),
        (status = 429, description = "Three wrong pairs of amounts this hour: `Retry-After` says when to try again", body = ApiError),
        (status = 502, description = "Card processor unavailable", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn verify_bank_account(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(card_id): Path<String>,
    raw: Bytes,
) -> Result<Json<CardAdded>, ApiError> {
    let id = identity.admin_account()?.clone();
    own_cards(&state, &id).await?;
    let request: VerifyBankAccount = crate::body::json(&raw)?;
    let (current, _) = profile::load(state.docs(), &id).await?;
    let Some(account) = current
        .cards
        .iter()
        .find(|c| c.id == card_id && c.kind == profile::MethodKind::UsBankAccount)
        .cloned()
    else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such bank account"));
    };
    if !account.verified {
        let limited = crate::limits::Limited::BankVerification;
        crate::limits::check(state.docs(), &id, limited, Utc::now()).await?;
        let customer = CustomerId(current.processor_customer_id.clone().unwrap_or_default());
        let answer =
            state.processor.verify_bank_account(&customer, &card_id, request.amounts_cents).await;
        let verified = match answer {
            Ok(verified) => verified,
            Err(ProcessorError::InvalidRequest(message)) => {
                // A wrong guess counts: a few an hour (the pairs are few enough to guess).
                crate::limits::record(state.docs(), &id, limited, Utc::now()).await;
                return Err(
                    ApiError::bad_request("invalid_field", message).on_field("amounts_cents")
                );
            }
            Err(other) => return Err(processor_error(other)),
        };
        if !verified.verified {
            return Err(ApiError::bad_request(
                "invalid_field",
                "the processor has not verified the account",
            )
            .on_field("amounts_cents"));
        }
        profile::update_with(state.docs(), &id, |p| {
            for card in p.cards.iter_mut().filter(|c| c.id == card_id) {
                card.verified = true;
            }
            Ok::<(), ApiError>(())
        })
        .await?;
        reset_recharge_backoff(&state, &id).await;
        crate::audit::record(
            state.docs(),
            &id,
            &identity.user,
            "bank_account_verified",
            Value::Null,
            json!({ "card": card_id }),
        )
        .await?;
    }
    let (after, _) = profile::load(state.docs(), &id).await?;
    let stored = after.cards.iter().find(|c| c.id == card_id).unwrap_or(&account);
    Ok(Json(CardAdded { card: card_view(stored) }))
}
