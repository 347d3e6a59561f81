//! Card events from the processor: a card the networks' updater changed (a new expiry or
//! number), and a card about to expire. Both name the processor's customer; the account is the
//! customer's (its metadata). Each is state, not a change: applying one twice, late or out of
//! order leaves the stored card as the processor has it (a stale update never moves an expiry
//! back) and sends a notice once (its id).

use chrono::{DateTime, Utc};
use documents::profile;
use ledger::AccountId;

use crate::{rearm_auto_recharge, PaymentPorts};
use card_processor::{CardDetails, CustomerId, ProcessorError};

#[derive(Debug, thiserror::Error)]
pub enum CardEventError {
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    #[error(transparent)]
    Document(#[from] documents::DocumentError),
    #[error(transparent)]
    Store(#[from] ledger::StoreError),
}

/// What a card event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardEvent {
    /// The customer or the card is not one of ours: nothing to do.
    NotOurs,
    /// The stored card already says this (a repeat, or a stale update).
    Unchanged,
    /// The stored card now says what the processor does.
    Updated,
    /// The expiry notice went out (or had before: its id is sent once).
    Noticed,
}

async fn account_of(
    ports: &PaymentPorts<'_>,
    customer: &str,
) -> Result<Option<AccountId>, CardEventError> {
    let account = ports.processor.customer_account(&CustomerId(customer.to_string())).await?;
    Ok(account.and_then(|a| AccountId::parse(a).ok()))
}

/// Bring the stored card up to the processor's details. An update to an earlier expiry than
/// the stored one is stale (events arrive in any order) and changes nothing. A card that got
/// a new expiry or number is a changed card: auto-recharge's backoff is reset as for a new one.
pub async fn card_updated(
    ports: &PaymentPorts<'_>,
    customer: &str,
    card: &CardDetails,
) -> Result<CardEvent, CardEventError> {
    let Some(id) = account_of(ports, customer).await? else { return Ok(CardEvent::NotOurs) };
    let mut outcome = CardEvent::NotOurs;
    profile::update(ports.store, &id, |p| {
        outcome = CardEvent::NotOurs;
        let Some(stored) = p.cards.iter_mut().find(|c| c.id == card.payment_method_id) else {
            return Ok(());
        };
        let stale = (card.exp_year, card.exp_month) < (stored.exp_year, stored.exp_month);
        let same =
            (stored.brand.as_str(), stored.last4.as_str(), stored.exp_month, stored.exp_year)
                == (card.brand.as_str(), card.last4.as_str(), card.exp_month, card.exp_year);
        if stale || same {
            outcome = CardEvent::Unchanged;
            return Ok(());
        }
        stored.brand = card.brand.clone();
        stored.last4 = card.last4.clone();
        stored.exp_month = card.exp_month;
        stored.exp_year = card.exp_year;
        outcome = CardEvent::Updated;
        Ok(())
    })
    .await?;
    if outcome == CardEvent::Updated {
        tracing::info!(account = %id, card = %card.payment_method_id, "card updated by the processor");
        rearm_auto_recharge(ports.store, &id).await?;
    }
    Ok(outcome)
}

/// The processor says a card expires soon: the expiry notice, if it is the account's primary.
pub async fn card_expiring(
    ports: &PaymentPorts<'_>,
    customer: &str,
    card: &CardDetails,
    now: DateTime<Utc>,
) -> Result<CardEvent, CardEventError> {
    let Some(id) = account_of(ports, customer).await? else { return Ok(CardEvent::NotOurs) };
    let (profile, _) = profile::load(ports.store, &id).await?;
    let Some(primary) = profile.primary_card().filter(|c| c.id == card.payment_method_id) else {
        return Ok(CardEvent::NotOurs);
    };
    let notice = notifications::notice::card_expiring(&id, &profile, primary, now);
    if let Some(notices) = ports.notices {
        notices
            .publish(&notice)
            .await
            .map_err(|e| ledger::StoreError::Unavailable(e.to_string().into()))?;
    }
    Ok(CardEvent::Noticed)
}
