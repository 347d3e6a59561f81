//! Cards, Pay Now and payment history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ledger::docs::{newest_first_id, DocError, DocKind};
use ledger::{AccountId, Amount, BillingItem, Posting, PostingResult, SourceId};
use payments::{ChargeOutcome, ChargeRequest, CustomerId, ProcessorError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::account::{account_or_404, idempotency_key, require_terms, Params};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::profile::{self, CardRole, Email, StoredCard};
use crate::state::AppState;

/// Pay Now limits (whole cents).
pub const MIN_PAYMENT_USD: rust_decimal::Decimal =
    rust_decimal::Decimal::from_parts(1, 0, 0, false, 0);
pub const MAX_PAYMENT_USD: rust_decimal::Decimal =
    rust_decimal::Decimal::from_parts(10_000, 0, 0, false, 0);
/// An in-progress Pay Now older than this may be taken over by a retry with the same key (the
/// processor's idempotency key and the ledger's source id keep it to one charge, one credit).
const STALE_IN_PROGRESS_SECONDS: i64 = 60;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/cards", get(list_cards).post(add_card))
        .route("/v1/cards/{card_id}/role", put(set_role))
        .route("/v1/cards/{card_id}", axum::routing::delete(delete_card))
        .route("/v1/payments", post(pay_now).get(history))
}

/// A card change or a manual payment resets auto-recharge's backoff: a request that is waiting
/// out its backoff (or has stopped) is dropped, and when the balance is still below the
/// threshold the ledger raises a fresh request at once (`settle_settings_change`). A request
/// being charged right now is left alone, so this can never cause a second charge.
pub async fn reset_recharge_backoff(state: &AppState, id: &AccountId) {
    let Ok(Some(account)) = state.ledger().account(id).await else { return };
    let Some(request) = account.recharge_in_flight.clone() else { return };
    let Ok(Some(doc)) = state.docs().get_doc(id, DocKind::Recharge, &request).await else { return };
    let Ok(recharge) = serde_json::from_str::<Value>(&doc.body) else { return };
    let waiting = recharge["charging"].is_null()
        && (recharge["given_up"] == true || recharge["next_attempt_at"].is_string());
    if !waiting {
        return;
    }
    let result = state
        .ledger()
        .modify_account(
            id,
            Arc::new(move |a| {
                if a.recharge_in_flight.as_deref() == Some(request.as_str()) {
                    a.recharge_in_flight = None;
                }
                Ok(())
            }),
            Utc::now(),
        )
        .await;
    if let Err(error) = result {
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
            profile::update(state.docs(), &id, |p| {
                p.processor_customer_id.get_or_insert_with(|| stored.clone());
                Ok(())
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
    let saved = profile::update(state.docs(), &id, |p| {
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
    let (before, after) = profile::update(state.docs(), &id, |p| {
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
    let (before, after) = profile::update(state.docs(), &id, |p| {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Auto,
}

/// One charge attempt, as the payment history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment_id: String,
    pub amount_usd: Amount,
    pub card_id: String,
    pub card_brand: String,
    pub card_last4: String,
    pub status: PaymentStatus,
    pub trigger: Trigger,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub processor_payment_id: Option<String>,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// The ledger entry that credited it.
    #[serde(default)]
    pub entry_seq: Option<u64>,
    #[serde(default)]
    pub balance_after_usd: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdempotencyRecord {
    state: String,
    amount_usd: Amount,
    payment_id: String,
    started_at: DateTime<Utc>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    response: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayNowBody {
    amount_usd: Amount,
}

pub async fn save_payment(
    docs: &dyn ledger::docs::DocStore,
    id: &AccountId,
    record: &PaymentRecord,
) -> Result<(), ApiError> {
    let body = serde_json::to_string(record).map_err(|e| ApiError::internal(&e))?;
    for _ in 0..8 {
        let current = docs
            .get_doc(id, DocKind::Payment, &record.payment_id)
            .await
            .map_err(ApiError::from_store)?;
        let expected = current.map(|d| d.version);
        match docs.put_doc(id, DocKind::Payment, &record.payment_id, &body, expected).await {
            Ok(_) => return Ok(()),
            Err(DocError::Conflict) => continue,
            Err(DocError::TooLarge(_)) => break,
            Err(DocError::Store(error)) => return Err(ApiError::from_store(error)),
        }
    }
    Err(ApiError::internal(&std::io::Error::other("payment record kept changing")))
}

/// Claim the key, or answer with what it already produced.
enum Claim {
    Mine { record: IdempotencyRecord, version: u64 },
    Done(StatusCode, Value),
}

async fn claim(
    state: &AppState,
    id: &AccountId,
    key: &str,
    amount: Amount,
) -> Result<Claim, ApiError> {
    let now = ledger::truncate_to_micros(Utc::now());
    let fresh = IdempotencyRecord {
        state: "in_progress".into(),
        amount_usd: amount,
        payment_id: newest_first_id(now, &format!("{:016x}", ledger::stable_hash(key))),
        started_at: now,
        status: None,
        response: None,
    };
    for _ in 0..50 {
        let body = serde_json::to_string(&fresh).map_err(|e| ApiError::internal(&e))?;
        match state.docs().put_doc(id, DocKind::Idempotency, key, &body, None).await {
            Ok(version) => return Ok(Claim::Mine { record: fresh, version }),
            Err(DocError::Conflict) => {}
            Err(DocError::TooLarge(_)) => {
                return Err(ApiError::internal(&std::io::Error::other(
                    "idempotency record too large",
                )))
            }
            Err(DocError::Store(error)) => return Err(ApiError::from_store(error)),
        }
        let Some(doc) = state
            .docs()
            .get_doc(id, DocKind::Idempotency, key)
            .await
            .map_err(ApiError::from_store)?
        else {
            continue;
        };
        let existing: IdempotencyRecord =
            serde_json::from_str(&doc.body).map_err(|e| ApiError::internal(&e))?;
        if existing.amount_usd != amount {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different amount",
            ));
        }
        match (existing.state.as_str(), existing.status, &existing.response) {
            ("done", Some(status), Some(response)) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                return Ok(Claim::Done(status, response.clone()));
            }
            _ if (now - existing.started_at).num_seconds() >= STALE_IN_PROGRESS_SECONDS => {
                // Its owner died: take over the same payment (same processor key, same credit).
                let taken = IdempotencyRecord { started_at: now, ..existing };
                let body = serde_json::to_string(&taken).map_err(|e| ApiError::internal(&e))?;
                match state
                    .docs()
                    .put_doc(id, DocKind::Idempotency, key, &body, Some(doc.version))
                    .await
                {
                    Ok(version) => return Ok(Claim::Mine { record: taken, version }),
                    Err(DocError::Conflict) => continue,
                    Err(DocError::TooLarge(_)) => {
                        return Err(ApiError::internal(&std::io::Error::other(
                            "idempotency record too large",
                        )))
                    }
                    Err(DocError::Store(error)) => return Err(ApiError::from_store(error)),
                }
            }
            // Someone is paying with this key right now: wait for their answer.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "in_progress",
        "a payment with this Idempotency-Key is in progress; retry shortly",
    ))
}

async fn finish(
    state: &AppState,
    id: &AccountId,
    key: &str,
    mut record: IdempotencyRecord,
    version: u64,
    status: StatusCode,
    response: &Value,
) -> Result<(), ApiError> {
    record.state = "done".into();
    record.status = Some(status.as_u16());
    record.response = Some(response.clone());
    let body = serde_json::to_string(&record).map_err(|e| ApiError::internal(&e))?;
    match state.docs().put_doc(id, DocKind::Idempotency, key, &body, Some(version)).await {
        Ok(_) | Err(DocError::Conflict) => Ok(()),
        Err(DocError::TooLarge(_)) => Ok(()),
        Err(DocError::Store(error)) => Err(ApiError::from_store(error)),
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
    let (record, version) = match claim(&state, &id, &key, amount).await? {
        Claim::Done(status, response) => return Ok((status, Json(response))),
        Claim::Mine { record, version } => (record, version),
    };
    let mut payment = PaymentRecord {
        payment_id: record.payment_id.clone(),
        amount_usd: amount,
        card_id: card.id.clone(),
        card_brand: card.brand.clone(),
        card_last4: card.last4.clone(),
        status: PaymentStatus::Pending,
        trigger: Trigger::Manual,
        created_at: record.started_at,
        processor_payment_id: None,
        failure_code: None,
        failure_reason: None,
        entry_seq: None,
        balance_after_usd: None,
    };
    save_payment(state.docs(), &id, &payment).await?;
    let cents = (amount.value() * rust_decimal::Decimal::ONE_HUNDRED)
        .trunc()
        .to_string()
        .parse::<u64>()
        .map_err(|e| ApiError::internal(&e))?;
    let charge = ChargeRequest {
        customer: CustomerId(customer),
        payment_method_id: card.id.clone(),
        amount_cents: cents,
        idempotency_key: format!("pay:{id}:{key}"),
        description: format!("ringledger Pay Now {}", payment.payment_id),
    };
    let outcome = match state.processor.charge(&charge).await {
        Ok(outcome) => outcome,
        Err(error) => {
            // Leave the key claimable by a retry; the processor key keeps it to one charge.
            let _ = state.docs().delete_doc(&id, DocKind::Idempotency, &key, version).await;
            return Err(processor_error(error));
        }
    };
    let (status, response) = match outcome {
        ChargeOutcome::Succeeded { payment_intent_id } => {
            let source =
                SourceId::parse(format!("pay:{key}")).map_err(|e| ApiError::internal(&e))?;
            let posting = Posting::credit(source, BillingItem::FundsAdded, amount, Utc::now())
                .and_then(|p| {
                    p.with_details(json!({
                        "payment_id": payment.payment_id,
                        "processor_payment_id": payment_intent_id,
                        "card": format!("{} {}", card.brand, card.last4),
                        "trigger": "manual",
                    }))
                })
                .map_err(|e| ApiError::internal(&e))?;
            let posted = state
                .ledger()
                .post(&id, vec![posting], Utc::now())
                .await
                .map_err(ApiError::from_store)?;
            let seq = match posted.results.first() {
                Some(PostingResult::Applied { seq, .. } | PostingResult::Duplicate { seq }) => {
                    Some(*seq)
                }
                _ => None,
            };
            reset_recharge_backoff(&state, &id).await;
            payment.status = PaymentStatus::Succeeded;
            payment.processor_payment_id = Some(payment_intent_id);
            payment.entry_seq = seq;
            payment.balance_after_usd = Some(posted.account.balance_usd.normalize().to_string());
            if let Some(notices) = &state.notices {
                let receipt = notifications::notice::Notice {
                    id: format!("receipt:{id}:{}", payment.payment_id),
                    account_id: id.clone(),
                    raised_at: ledger::truncate_to_micros(Utc::now()),
                    kind: notifications::notice::NoticeKind::PaymentReceipt {
                        payment_id: payment.payment_id.clone(),
                        amount_usd: amount,
                        card_brand: card.brand.clone(),
                        card_last4: card.last4.clone(),
                        balance_after_usd: posted.account.balance_usd,
                        trigger: notifications::notice::PaymentTrigger::Manual,
                        paid_at: ledger::truncate_to_micros(Utc::now()),
                    },
                };
                // The payment stands either way; a lost receipt is logged, never a failed payment.
                if let Err(error) = notices.publish(&receipt).await {
                    tracing::warn!(%error, payment = %payment.payment_id, "receipt not queued");
                }
            }
            (StatusCode::CREATED, json!({ "payment": payment }))
        }
        ChargeOutcome::Declined { payment_intent_id, decline } => {
            payment.status = PaymentStatus::Failed;
            payment.processor_payment_id = payment_intent_id;
            payment.failure_code = Some(decline.code.as_str().to_string());
            payment.failure_reason = Some(decline.code.reason().to_string());
            (
                StatusCode::PAYMENT_REQUIRED,
                json!({
                    "code": "card_declined",
                    "message": decline.code.reason(),
                    "payment": payment,
                }),
            )
        }
    };
    save_payment(state.docs(), &id, &payment).await?;
    finish(&state, &id, &key, record, version, status, &response).await?;
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
