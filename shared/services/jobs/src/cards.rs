//! The daily card-expiry look: the primary card expiring within a month gets a notice to its
//! manager and the billing contacts, once per card and expiry (the notice id; the notifications
//! rules send an id once, so the daily sweep may ask every day of the month).
//!
//! An expired primary needs nothing here: auto-recharge and Pay Now skip it for the first backup
//! that has not expired, without asking the processor.

use chrono::NaiveDate;
use ledger::docs::DocStore;
use ledger::AccountId;
use messaging::mail::Mailer;

use crate::tax::JobError;

/// How far ahead the notice goes out.
pub const EXPIRY_NOTICE_DAYS: i64 = 31;

/// What the look did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryOutcome {
    /// No primary card, or it does not expire within a month (or already has).
    NothingDue,
    /// The notice was sent now, or had been before.
    Noticed,
}

/// Tell `id`'s contacts, once, that its primary card expires within a month of `today`.
pub async fn expiry_notice(
    docs: &dyn DocStore,
    mailer: &dyn Mailer,
    from: &str,
    id: &AccountId,
    today: NaiveDate,
) -> Result<ExpiryOutcome, JobError> {
    let profile = crate::tax::load_profile(docs, id).await?;
    let Some(card) = profile.primary_card() else { return Ok(ExpiryOutcome::NothingDue) };
    if !card.expires_within(today, EXPIRY_NOTICE_DAYS) {
        return Ok(ExpiryOutcome::NothingDue);
    }
    let at = today.and_time(chrono::NaiveTime::MIN).and_utc();
    let notice = notifications::notice::card_expiring(id, &profile, card, at);
    notifications::worker::send_notice(docs, mailer, None, from, &notice).await?;
    Ok(ExpiryOutcome::Noticed)
}
