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
use crate::state::{AppState, Store};

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

/// A card change or a manual payment resets auto-recharge's backoff and lifts a stop: a
/// request that is waiting out its backoff is dropped, a stopped auto-recharge is re-armed, and
/// when the balance is still below the threshold the ledger raises a fresh request at once
/// (`settle_settings_change`). Dropping a waiting request is tied to the version of its
/// write-ahead record: it is marked cancelled only if nobody wrote it since it was read, so a
/// worker that has just written down an attempt is never raced into a second request.
pub async fn reset_recharge_backoff(state: &AppState, id: &AccountId) {
    if let Err(error) = rearm_auto_recharge(&*state.store, id).await {
        tracing::warn!(%error, "auto-recharge backoff not reset");
    }
}

/// See [`reset_recharge_backoff`]: drops only a request waiting out its backoff. `Ok(true)`
/// when something was re-armed.
pub async fn rearm_auto_recharge(
    store: &dyn Store,
    id: &AccountId,
) -> Result<bool, ledger::StoreError> {
    Ok(rearm(store, id, MayDrop::Waiting).await? == Rearm::Rearmed)
}

/// What an operator's re-arm did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rearm {
    /// The stop was lifted and/or the request dropped; the ledger raised a fresh request if the
    /// balance is below the threshold.
    Rearmed,
    /// Auto-recharge is neither stopped nor holding a request it may drop.
    NothingToDo,
    /// An attempt was written down and may have reached the processor: recovery owns it (it is
    /// replayed until its outcome is known), so it is not dropped.
    ChargeInProgress,
}

/// The operator's re-drive: like [`rearm_auto_recharge`], and it also drops a request that has
/// not started charging (never picked up, or its message dead-lettered before its first
/// attempt): nothing can have been charged for it. A request with an attempt that may have
/// reached the processor is never dropped.
pub async fn operator_rearm(
    store: &dyn Store,
    id: &AccountId,
) -> Result<Rearm, ledger::StoreError> {
    rearm(store, id, MayDrop::Unstarted).await
}

/// Which in-flight request a re-arm may drop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MayDrop {
    /// Only one waiting out its backoff or given up (a customer's card change or payment).
    Waiting,
    /// Also one never picked up or between cards (an operator's re-drive).
    Unstarted,
}

async fn rearm(
    store: &dyn Store,
    id: &AccountId,
    may_drop: MayDrop,
) -> Result<Rearm, ledger::StoreError> {
    let Some(account) = store.account(id).await? else { return Ok(Rearm::NothingToDo) };
    let mut dropped = None;
    if let Some(request) = account.recharge_in_flight.clone() {
        match store.get_doc(id, DocKind::Recharge, &request).await? {
            // Raised and not yet picked up: a customer's change leaves it to run; an operator
            // may drop it, as nothing was charged for it.
            None if may_drop == MayDrop::Waiting => return Ok(Rearm::NothingToDo),
            None => {}
            Some(doc) => {
                let mut recharge: Value = serde_json::from_str(&doc.body)
                    .map_err(|e| ledger::StoreError::Corrupt(format!("recharge state: {e}")))?;
                let charging = &recharge["charging"];
                let waiting = charging.is_null()
                    && (recharge["given_up"] == true || recharge["next_attempt_at"].is_string());
                let card = charging["card_id"].as_str().unwrap_or_default();
                let declined = charging["declined"]
                    .as_array()
                    .is_some_and(|cards| cards.iter().any(|c| c.as_str() == Some(card)));
                let sent = !charging.is_null() && charging["sent"].as_bool().unwrap_or(true);
                match may_drop {
                    MayDrop::Waiting if !waiting => return Ok(Rearm::NothingToDo),
                    MayDrop::Unstarted if sent && !declined => return Ok(Rearm::ChargeInProgress),
                    _ => {}
                }
                recharge["cancelled"] = Value::Bool(true);
                let body = recharge.to_string();
                match store.put_doc(id, DocKind::Recharge, &request, &body, Some(doc.version)).await
                {
                    Ok(_) => {}
                    // The worker moved on (an attempt is being charged): leave it alone.
                    Err(DocError::Conflict) => return Ok(Rearm::ChargeInProgress),
                    Err(DocError::TooLarge(size)) => {
                        return Err(ledger::StoreError::Corrupt(format!(
                            "recharge state of {size} bytes"
                        )))
                    }
                    Err(DocError::Store(error)) => return Err(error),
                }
            }
        }
        dropped = Some(request);
    } else if account.recharge_stopped.is_none() {
        return Ok(Rearm::NothingToDo);
    }
    store
        .modify_account(
            id,
            Arc::new(move |a| {
                if dropped.is_some() && a.recharge_in_flight == dropped {
                    a.recharge_in_flight = None;
                }
                a.recharge_stopped = None;
                Ok(())
            }),
            Utc::now(),
        )
        .await?;
    Ok(Rearm::Rearmed)
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
    /// The charge, fixed when the key is claimed (the write-ahead record): whoever settles the
    /// claim later replays exactly this, even if the card was deleted or replaced since.
    #[serde(default)]
    charge: Option<ClaimedCharge>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimedCharge {
    customer: String,
    card_id: String,
    card_brand: String,
    card_last4: String,
}

/// What a client is told while the processor has not answered.
pub const PENDING_MESSAGE: &str = "The card processor has not confirmed this payment yet. It \
    will be credited once (or marked failed) as soon as the processor answers; nothing is \
    charged twice. See the payment history, or retry with the same Idempotency-Key.";

/// The ports a payment is settled with: the HTTP handler and the reconciler share them.
pub struct PaymentPorts<'a> {
    pub store: &'a dyn Store,
    pub processor: &'a dyn payments::CardProcessor,
    pub notices: Option<&'a dyn notifications::notice::NoticeSink>,
}

/// What the reconciler did with a pending payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Final (credited, failed, or settled by someone else): nothing more to do.
    Final,
    /// Still unknown, or its owner may still be working on it: ask again then.
    NotYet(DateTime<Utc>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayNowBody {
    amount_usd: Amount,
}

/// Claim the key, or answer with what it already produced.
enum Claim {
    /// Ours to charge; `replay` when it was started before (its owner died): the recorded
    /// charge is looked up / replayed, never a new one.
    Mine {
        record: IdempotencyRecord,
        version: u64,
        replay: bool,
    },
    Done(StatusCode, Value),
    /// Someone else is working on it right now and has not finished.
    Busy {
        payment_id: String,
    },
}

fn too_large() -> ApiError {
    ApiError::internal(&std::io::Error::other("idempotency record too large"))
}

async fn claim(
    store: &dyn Store,
    id: &AccountId,
    key: &str,
    amount: Amount,
    charge: ClaimedCharge,
    now: DateTime<Utc>,
) -> Result<Claim, ApiError> {
    let now = ledger::truncate_to_micros(now);
    let fresh = IdempotencyRecord {
        state: "in_progress".into(),
        amount_usd: amount,
        payment_id: newest_first_id(now, &format!("{:016x}", ledger::stable_hash(key))),
        started_at: now,
        status: None,
        response: None,
        charge: Some(charge.clone()),
    };
    for round in 0..50 {
        let body = serde_json::to_string(&fresh).map_err(|e| ApiError::internal(&e))?;
        match store.put_doc(id, DocKind::Idempotency, key, &body, None).await {
            Ok(version) => return Ok(Claim::Mine { record: fresh, version, replay: false }),
            Err(DocError::Conflict) => {}
            Err(DocError::TooLarge(_)) => return Err(too_large()),
            Err(DocError::Store(error)) => return Err(ApiError::from_store(error)),
        }
        let Some(doc) =
            store.get_doc(id, DocKind::Idempotency, key).await.map_err(ApiError::from_store)?
        else {
            continue;
        };
        let existing: IdempotencyRecord =
            serde_json::from_str(&doc.body).map_err(|e| ApiError::internal(&e))?;
        if existing.amount_usd != amount {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different amount; nothing was charged",
            ));
        }
        match (existing.state.as_str(), existing.status, &existing.response) {
            ("done", Some(status), Some(response)) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                return Ok(Claim::Done(status, response.clone()));
            }
            _ if (now - existing.started_at).num_seconds() >= STALE_IN_PROGRESS_SECONDS => {
                // Its owner died or the outcome is unknown: take over the same payment (the
                // recorded charge, looked up first), never a new one.
                let taken = IdempotencyRecord {
                    started_at: now,
                    charge: existing.charge.clone().or(Some(charge.clone())),
                    ..existing
                };
                let body = serde_json::to_string(&taken).map_err(|e| ApiError::internal(&e))?;
                match store.put_doc(id, DocKind::Idempotency, key, &body, Some(doc.version)).await {
                    Ok(version) => return Ok(Claim::Mine { record: taken, version, replay: true }),
                    Err(DocError::Conflict) => continue,
                    Err(DocError::TooLarge(_)) => return Err(too_large()),
                    Err(DocError::Store(error)) => return Err(ApiError::from_store(error)),
                }
            }
            // Someone is paying with this key right now: wait a little for their answer.
            _ if round < 20 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return Ok(Claim::Busy { payment_id: existing.payment_id }),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "in_progress",
        "a payment with this Idempotency-Key is in progress; retry shortly",
    ))
}

async fn finish(
    store: &dyn Store,
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
    match store.put_doc(id, DocKind::Idempotency, key, &body, Some(version)).await {
        Ok(_) | Err(DocError::Conflict) => Ok(()),
        Err(DocError::TooLarge(_)) => Ok(()),
        Err(DocError::Store(error)) => Err(ApiError::from_store(error)),
    }
}

/// Announce (once) that this key's payment may be pending, so the reconciler will settle it.
async fn mark_pending(store: &dyn Store, id: &AccountId, key: &str) -> Result<(), ApiError> {
    let account = store.account(id).await.map_err(ApiError::from_store)?;
    if account.is_some_and(|a| a.pending_payments.iter().any(|k| k == key)) {
        return Ok(());
    }
    let key = key.to_string();
    store
        .modify_account(
            id,
            Arc::new(move |a| {
                if !a.pending_payments.contains(&key) {
                    a.pending_payments.push(key.clone());
                }
                Ok(())
            }),
            Utc::now(),
        )
        .await
        .map_err(|error| match error {
            ledger::StoreError::Rejected(ledger::LedgerError::TooManyPendingPayments) => {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_pending_payments",
                    ledger::LedgerError::TooManyPendingPayments.to_string(),
                )
            }
            other => ApiError::from_store(other),
        })?;
    Ok(())
}

async fn clear_pending(store: &dyn Store, id: &AccountId, key: &str) -> Result<(), ApiError> {
    let account = store.account(id).await.map_err(ApiError::from_store)?;
    if !account.is_some_and(|a| a.pending_payments.iter().any(|k| k == key)) {
        return Ok(());
    }
    let key = key.to_string();
    store
        .modify_account(
            id,
            Arc::new(move |a| {
                a.pending_payments.retain(|k| *k != key);
                Ok(())
            }),
            Utc::now(),
        )
        .await
        .map_err(ApiError::from_store)?;
    Ok(())
}

fn pending_answer(payment: &PaymentRecord) -> (StatusCode, Value) {
    (StatusCode::ACCEPTED, json!({ "payment": payment, "message": PENDING_MESSAGE }))
}

/// Pay Now, after the request was checked: one charge and at most one credit per key,
/// whatever is retried, crashes or goes unanswered.
///
/// Failure model: the claim (with the charge it will make) is written before the processor
/// is called; the account then lists the key as pending, which raises a `PaymentPending`
/// event for the reconciler. A definite answer (success, decline, refusal) settles the claim;
/// an unknown one (timeout, 5xx, `processing`) leaves it pending and answers 202, and a retry
/// with the same key or the reconciler settles it later by looking the payment up (after the
/// processor's key lifetime a resend would be a new charge) or replaying the same key.
#[allow(clippy::too_many_arguments)]
pub async fn pay_now_with(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    key: &str,
    amount: Amount,
    card: &StoredCard,
    customer: &str,
    now: DateTime<Utc>,
) -> Result<(StatusCode, Value), ApiError> {
    let charge = ClaimedCharge {
        customer: customer.to_string(),
        card_id: card.id.clone(),
        card_brand: card.brand.clone(),
        card_last4: card.last4.clone(),
    };
    let (record, version, replay) = match claim(ports.store, id, key, amount, charge, now).await? {
        Claim::Done(status, response) => return Ok((status, response)),
        Claim::Busy { payment_id } => {
            return match load_payment(ports.store, id, &payment_id).await? {
                Some(payment) => Ok(pending_answer(&payment)),
                None => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "in_progress",
                    "a payment with this Idempotency-Key is in progress; retry shortly",
                )),
            };
        }
        Claim::Mine { record, version, replay } => (record, version, replay),
    };
    if let Err(error) = mark_pending(ports.store, id, key).await {
        if !replay {
            // Nothing was charged under this claim: let the key be used again.
            let _ = ports.store.delete_doc(id, DocKind::Idempotency, key, version).await;
        }
        return Err(error);
    }
    settle_claim(ports, id, key, record, version, replay, now).await
}

/// Charge (or, for a replay, look up and then replay) the claim's recorded charge and act on
/// the answer. Final answers finish the claim; an unknown one leaves it in progress.
async fn settle_claim(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    key: &str,
    record: IdempotencyRecord,
    version: u64,
    replay: bool,
    now: DateTime<Utc>,
) -> Result<(StatusCode, Value), ApiError> {
    let Some(charge) = record.charge.clone() else {
        return Err(ApiError::internal(&std::io::Error::other("a claim without its charge")));
    };
    let amount = record.amount_usd;
    let mut payment = match load_payment(ports.store, id, &record.payment_id).await? {
        Some(payment) => payment,
        None => PaymentRecord {
            payment_id: record.payment_id.clone(),
            amount_usd: amount,
            card_id: charge.card_id.clone(),
            card_brand: charge.card_brand.clone(),
            card_last4: charge.card_last4.clone(),
            status: PaymentStatus::Pending,
            trigger: Trigger::Manual,
            created_at: record.started_at,
            processor_payment_id: None,
            failure_code: None,
            failure_reason: None,
            entry_seq: None,
            balance_after_usd: None,
            pending_reason: Some("waiting for the card processor".into()),
        },
    };
    if payment.status != PaymentStatus::Pending {
        // Settled before the claim was finished (a crash in between): finish it the same way.
        let status = match payment.status {
            PaymentStatus::Succeeded => StatusCode::CREATED,
            _ => StatusCode::PAYMENT_REQUIRED,
        };
        let response = json!({ "payment": payment });
        finish(ports.store, id, key, record, version, status, &response).await?;
        clear_pending(ports.store, id, key).await?;
        return Ok((status, response));
    }
    save_payment(ports.store, id, &payment).await?;
    let cents = (amount.value() * rust_decimal::Decimal::ONE_HUNDRED)
        .trunc()
        .to_string()
        .parse::<u64>()
        .map_err(|e| ApiError::internal(&e))?;
    let request = ChargeRequest {
        customer: CustomerId(charge.customer.clone()),
        payment_method_id: charge.card_id.clone(),
        amount_cents: cents,
        idempotency_key: format!("pay:{id}:{key}"),
        description: format!("ringledger Pay Now {}", payment.payment_id),
    };
    let outcome = if replay {
        match ports.processor.find_charge(&request.customer, &request.idempotency_key).await {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => ports.processor.charge(&request).await,
            // A lookup that failed says nothing about the payment: unknown, never a decline.
            Err(error) => {
                Err(ProcessorError::Unexpected(format!("payment lookup failed: {error}")))
            }
        }
    } else {
        ports.processor.charge(&request).await
    };
    let (status, response) = match outcome {
        Ok(ChargeOutcome::Succeeded { payment_intent_id }) => {
            let source =
                SourceId::parse(format!("pay:{key}")).map_err(|e| ApiError::internal(&e))?;
            let posting = Posting::credit(source, BillingItem::FundsAdded, amount, now)
                .and_then(|p| {
                    p.with_details(json!({
                        "payment_id": payment.payment_id,
                        "processor_payment_id": payment_intent_id,
                        "card": format!("{} {}", charge.card_brand, charge.card_last4),
                        "trigger": "manual",
                    }))
                })
                .map_err(|e| ApiError::internal(&e))?;
            let posted =
                ports.store.post(id, vec![posting], now).await.map_err(ApiError::from_store)?;
            let seq = match posted.results.first() {
                Some(PostingResult::Applied { seq, .. } | PostingResult::Duplicate { seq }) => {
                    Some(*seq)
                }
                _ => None,
            };
            if let Err(error) = rearm_auto_recharge(ports.store, id).await {
                tracing::warn!(%error, "auto-recharge backoff not reset");
            }
            payment.status = PaymentStatus::Succeeded;
            payment.pending_reason = None;
            payment.processor_payment_id = Some(payment_intent_id);
            payment.entry_seq = seq;
            payment.balance_after_usd = Some(posted.account.balance_usd.normalize().to_string());
            if let Some(notices) = ports.notices {
                let receipt = notifications::notice::Notice {
                    id: format!("receipt:{id}:{}", payment.payment_id),
                    account_id: id.clone(),
                    raised_at: ledger::truncate_to_micros(now),
                    kind: notifications::notice::NoticeKind::PaymentReceipt {
                        payment_id: payment.payment_id.clone(),
                        amount_usd: amount,
                        card_brand: charge.card_brand.clone(),
                        card_last4: charge.card_last4.clone(),
                        balance_after_usd: posted.account.balance_usd,
                        trigger: notifications::notice::PaymentTrigger::Manual,
                        paid_at: ledger::truncate_to_micros(now),
                    },
                };
                // The payment stands either way; a lost receipt is logged, never a failed payment.
                if let Err(error) = notices.publish(&receipt).await {
                    tracing::warn!(%error, payment = %payment.payment_id, "receipt not queued");
                }
            }
            (StatusCode::CREATED, json!({ "payment": payment }))
        }
        Ok(ChargeOutcome::Declined { payment_intent_id, decline }) => {
            payment.status = PaymentStatus::Failed;
            payment.pending_reason = None;
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
        // A definite refusal: nothing was charged. Said in the record, not left pending.
        Err(ProcessorError::InvalidRequest(message))
        | Err(ProcessorError::Declined(payments::Decline { message, .. })) => {
            payment.status = PaymentStatus::Failed;
            payment.pending_reason = None;
            payment.failure_code = Some("processor_rejected".into());
            payment.failure_reason = Some(message.clone());
            (
                StatusCode::BAD_REQUEST,
                json!({
                    "code": "processor_rejected",
                    "message": message,
                    "payment": payment,
                }),
            )
        }
        // Unknown: the card may have been charged. The claim stays; the reconciler or a retry
        // with the same key settles it.
        Ok(ChargeOutcome::Processing { .. }) | Err(_) => {
            let reason = match &outcome {
                Ok(_) => "the card processor is still processing the payment".to_string(),
                Err(error) => {
                    tracing::warn!(%error, payment = %payment.payment_id, "payment outcome unknown");
                    "the card processor did not answer; the payment will be checked again".into()
                }
            };
            payment.pending_reason = Some(reason);
            save_payment(ports.store, id, &payment).await?;
            return Ok(pending_answer(&payment));
        }
    };
    save_payment(ports.store, id, &payment).await?;
    finish(ports.store, id, key, record, version, status, &response).await?;
    clear_pending(ports.store, id, key).await?;
    Ok((status, response))
}

/// Settle a Pay Now announced by a `PaymentPending` event: nothing if it is final, wait if its
/// owner may still be working on it, otherwise take it over and replay it.
pub async fn reconcile_pending_payment(
    ports: &PaymentPorts<'_>,
    id: &AccountId,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Reconciled, ApiError> {
    let now = ledger::truncate_to_micros(now);
    let Some(doc) =
        ports.store.get_doc(id, DocKind::Idempotency, key).await.map_err(ApiError::from_store)?
    else {
        // Never claimed (or the claim was released before anything was charged).
        clear_pending(ports.store, id, key).await?;
        return Ok(Reconciled::Final);
    };
    let record: IdempotencyRecord =
        serde_json::from_str(&doc.body).map_err(|e| ApiError::internal(&e))?;
    if record.state == "done" {
        clear_pending(ports.store, id, key).await?;
        return Ok(Reconciled::Final);
    }
    let stale_at = record.started_at + chrono::Duration::seconds(STALE_IN_PROGRESS_SECONDS);
    if now < stale_at {
        return Ok(Reconciled::NotYet(stale_at));
    }
    let taken = IdempotencyRecord { started_at: now, ..record };
    let body = serde_json::to_string(&taken).map_err(|e| ApiError::internal(&e))?;
    let version =
        match ports.store.put_doc(id, DocKind::Idempotency, key, &body, Some(doc.version)).await {
            Ok(version) => version,
            Err(DocError::Conflict) => {
                return Ok(Reconciled::NotYet(
                    now + chrono::Duration::seconds(STALE_IN_PROGRESS_SECONDS),
                ))
            }
            Err(DocError::TooLarge(_)) => return Err(too_large()),
            Err(DocError::Store(error)) => return Err(ApiError::from_store(error)),
        };
    let (status, _) = settle_claim(ports, id, key, taken, version, true, now).await?;
    if status == StatusCode::ACCEPTED {
        return Ok(Reconciled::NotYet(now + chrono::Duration::minutes(RECONCILE_RETRY_MINUTES)));
    }
    Ok(Reconciled::Final)
}

/// How long a payment whose outcome is still unknown waits before the processor is asked again.
pub const RECONCILE_RETRY_MINUTES: i64 = 15;

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
    let (status, response) =
        pay_now_with(&ports, &id, &key, amount, &card, &customer, Utc::now()).await?;
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
