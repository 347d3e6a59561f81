//! Cards, Pay Now and payment history.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use ledger::docs::DocKind;
use ledger::{AccountId, Amount};
use payments::{CustomerId, ProcessorError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::account::{account_or_404, idempotency_key, require_terms, Params};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::profile::{self, CardRole, Email, StoredCard};
use crate::state::AppState;
use payment_flow::{pay_now_with, PayNowAnswer, PayNowError, PaymentPorts};

/// Pay Now limits (whole cents).
pub const MIN_PAYMENT_USD: rust_decimal::Decimal =
    rust_decimal::Decimal::from_parts(1, 0, 0, false, 0);
pub const MAX_PAYMENT_USD: rust_decimal::Decimal =
    rust_decimal::Decimal::from_parts(10_000, 0, 0, false, 0);
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/cards", get(list_cards).post(add_card))
        .route("/v1/cards/{card_id}/role", put(set_role))
        .route("/v1/cards/{card_id}", axum::routing::delete(delete_card))
        .route("/v1/payments", post(pay_now).get(history))
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

#[derive(Serialize)]
struct CardView<'a> {
    id: &'a str,
    brand: &'a str,
    last4: &'a str,
    exp_month: u8,
    exp_year: u16,
    role: CardRole,
    expired: bool,
    card_manager_email: &'a Email,
}

fn card_view(card: &StoredCard) -> CardView<'_> {
    CardView {
        id: &card.id,
        brand: &card.brand,
        last4: &card.last4,
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        role: card.role,
        expired: card.expired(Utc::now().date_naive()),
        card_manager_email: &card.card_manager_email,
    }
}

async fn list_cards(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<Value>, ApiError> {
    let id = identity.account()?;
    account_or_404(&state, id).await?;
    let (profile, _) = profile::load(state.docs(), id).await?;
    let cards: Vec<CardView<'_>> = profile.cards.iter().map(card_view).collect();
    Ok(Json(json!({ "cards": cards, "max_cards": profile::MAX_CARDS })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddCard {
    payment_method_token: String,
    card_manager_email: Email,
    role: CardRole,
}

/// Keep exactly one primary: `new_primary` becomes it and any other primary becomes a backup.
fn promote(cards: &mut [StoredCard], new_primary: &str) {
    for card in cards.iter_mut() {
        card.role = if card.id == new_primary { CardRole::Primary } else { CardRole::Backup };
    }
}

async fn add_card(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = identity.admin_account()?.clone();
    let request: AddCard = crate::body::json(&raw)?;
    let token = request.payment_method_token.trim();
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
    let account = account_or_404(&state, &id).await?;
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
    let details = state.processor.attach_card(&customer, token).await.map_err(processor_error)?;
    let card = StoredCard {
        id: details.payment_method_id.clone(),
        brand: details.brand.clone(),
        last4: details.last4.clone(),
        exp_month: details.exp_month,
        exp_year: details.exp_year,
        role: request.role,
        card_manager_email: request.card_manager_email,
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
    reset_recharge_backoff(&state, &id).await;
    let stored = after.cards.iter().find(|c| c.id == card.id).unwrap_or(&card);
    crate::audit::record(
        state.docs(),
        &id,
        &identity.user,
        "card_added",
        Value::Null,
        json!({ "card": stored.id, "brand": stored.brand, "last4": stored.last4, "role": stored.role }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "card": card_view(stored) }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: CardRole,
}

async fn set_role(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(card_id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: RoleBody = crate::body::json(&raw)?;
    account_or_404(&state, &id).await?;
    let (before, after) = profile::update_with(state.docs(), &id, |p| {
        let Some(card) = p.cards.iter_mut().find(|c| c.id == card_id) else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such card"));
        };
        match request.role {
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
    let cards: Vec<CardView<'_>> = after.cards.iter().map(card_view).collect();
    Ok(Json(json!({ "cards": cards })))
}

async fn delete_card(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(card_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = identity.admin_account()?.clone();
    account_or_404(&state, &id).await?;
    let (before, after) = profile::update_with(state.docs(), &id, |p| {
        let Some(index) = p.cards.iter().position(|c| c.id == card_id) else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such card"));
        };
        let removed = p.cards.remove(index);
        if removed.role == CardRole::Primary {
            if let Some(next) = p.cards.first().map(|c| c.id.clone()) {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayNowBody {
    amount_usd: Amount,
}

/// What a client is told while the processor has not answered.
pub const PENDING_MESSAGE: &str = "The card processor has not confirmed this payment yet. It \
    will be credited once (or marked failed) as soon as the processor answers; nothing is \
    charged twice. See the payment history, or retry with the same Idempotency-Key.";

/// A Pay Now answer as HTTP: 201 credited, 402 declined, 400 refused by the processor, 202
/// pending.
pub fn answer_response(answer: &PayNowAnswer) -> (StatusCode, Value) {
    match answer {
        PayNowAnswer::Credited { payment } => (StatusCode::CREATED, json!({ "payment": payment })),
        PayNowAnswer::Declined { message, payment } => (
            StatusCode::PAYMENT_REQUIRED,
            json!({ "code": "card_declined", "message": message, "payment": payment }),
        ),
        PayNowAnswer::Rejected { message, payment } => (
            StatusCode::BAD_REQUEST,
            json!({ "code": "processor_rejected", "message": message, "payment": payment }),
        ),
        PayNowAnswer::Pending { payment } => {
            (StatusCode::ACCEPTED, json!({ "payment": payment, "message": PENDING_MESSAGE }))
        }
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

async fn pay_now(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = identity.admin_account()?.clone();
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
    let (profile, _) = profile::load(state.docs(), &id).await?;
    let (Some(card), Some(customer)) =
        (profile.primary_card().cloned(), profile.processor_customer_id.clone())
    else {
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
    let answer = pay_now_with(&ports, &id, &key, amount, &card, &customer, Utc::now()).await?;
    let (status, response) = answer_response(&answer);
    Ok((status, Json(response)))
}

async fn history(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = identity.account()?;
    account_or_404(&state, id).await?;
    let params = Params::new(raw, &["cursor", "limit"])?;
    let limit = params.limit(50, 200)?;
    let (payments, next_cursor) =
        state.doc_page::<PaymentRecord>(id, DocKind::Payment, params.get("cursor"), limit).await?;
    Ok(Json(json!({ "payments": payments, "next_cursor": next_cursor })))
}
