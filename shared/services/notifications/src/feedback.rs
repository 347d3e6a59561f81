//! The mail service's bounce and complaint notifications (SES → SNS → the notifications queue):
//! a billing address that bounced for good, or whose owner marked our mail as spam, is marked
//! undeliverable on the account's profile. No more email goes to it until the contacts are saved
//! again, the settings and the overview show it, and the account's critical notices still reach
//! the critical phone by text (see [`crate::worker`]).
//!
//! The account is the `account_id` tag every email carries (`mailers::SesMailer`). Transient
//! bounces (a full mailbox) change nothing. Applying a notification twice changes nothing.

use chrono::{DateTime, Utc};
use ledger::docs::DocStore;
use ledger::AccountId;
use serde_json::Value;
use tracing::{info, warn};

use crate::error::DeliveryError;
use crate::worker::Outcome;

/// What one notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// `bounce` or `complaint`.
    pub kind: &'static str,
    pub account: Option<AccountId>,
    /// The addresses it names, each with the reason given.
    pub addresses: Vec<(String, String)>,
    pub at: DateTime<Utc>,
}

/// The feedback a queue message carries: `None` when it is not one (a notice); `Some(Err)` for
/// one that cannot be read.
pub fn parse(body: &str) -> Option<Result<Feedback, DeliveryError>> {
    let value: Value = serde_json::from_str(body).ok()?;
    // Through SNS the notification is the envelope's `Message` (a JSON string); with raw
    // message delivery it is the body itself.
    let inner = match value.get("Type").and_then(Value::as_str) {
        Some("Notification") => {
            let text = value.get("Message").and_then(Value::as_str)?;
            serde_json::from_str(text).ok()?
        }
        _ => value,
    };
    let kind =
        inner.get("notificationType").or_else(|| inner.get("eventType")).and_then(Value::as_str)?;
    let kind = match kind {
        "Bounce" => "bounce",
        "Complaint" => "complaint",
        // Deliveries and other events: nothing to mark.
        "Delivery" | "Send" | "Open" | "Click" | "Reject" | "DeliveryDelay" | "Subscription"
        | "RenderingFailure" => "ignored",
        _ => return None,
    };
    Some(read(kind, &inner))
}

fn read(kind: &'static str, inner: &Value) -> Result<Feedback, DeliveryError> {
    let account = inner["mail"]["tags"]["account_id"]
        .as_array()
        .and_then(|values| values.first())
        .and_then(Value::as_str)
        .and_then(|id| AccountId::parse(id).ok());
    let at = inner["mail"]["timestamp"]
        .as_str()
        .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        .unwrap_or_else(Utc::now);
    let mut addresses = Vec::new();
    match kind {
        "bounce" => {
            let bounce = &inner["bounce"];
            // A soft bounce (a full mailbox, a message too large) may deliver next time.
            if bounce["bounceType"].as_str() == Some("Permanent") {
                for recipient in bounce["bouncedRecipients"].as_array().into_iter().flatten() {
                    let Some(address) = recipient["emailAddress"].as_str() else { continue };
                    let reason = recipient["diagnosticCode"]
                        .as_str()
                        .or(bounce["bounceSubType"].as_str())
                        .unwrap_or("permanent bounce");
                    addresses.push((address.to_string(), reason.to_string()));
                }
            }
        }
        "complaint" => {
            let complaint = &inner["complaint"];
            for recipient in complaint["complainedRecipients"].as_array().into_iter().flatten() {
                let Some(address) = recipient["emailAddress"].as_str() else { continue };
                let reason = complaint["complaintFeedbackType"].as_str().unwrap_or("complaint");
                addresses.push((address.to_string(), format!("marked as spam ({reason})")));
            }
        }
        _ => {}
    }
    Ok(Feedback { kind, account, addresses, at })
}

/// Mark the notification's addresses undeliverable on its account's profile (once each).
pub async fn apply(docs: &dyn DocStore, feedback: &Feedback) -> Result<Outcome, DeliveryError> {
    if feedback.addresses.is_empty() {
        return Ok(Outcome::Feedback { marked: 0 });
    }
    let Some(account) = &feedback.account else {
        warn!(kind = feedback.kind, "a bounce or complaint without our account tag; ignored");
        return Ok(Outcome::Feedback { marked: 0 });
    };
    let mut marked = 0;
    let result = documents::profile::update(docs, account, |profile| {
        marked = 0;
        for (address, reason) in &feedback.addresses {
            let mark = documents::profile::Undeliverable {
                address: address.trim().to_string(),
                kind: feedback.kind.to_string(),
                reason: reason.chars().take(300).collect(),
                at: feedback.at,
            };
            if profile.mark_undeliverable(mark) {
                marked += 1;
            }
        }
        Ok(())
    })
    .await;
    match result {
        Ok(_) => {}
        Err(documents::DocumentError::Store(error)) => return Err(DeliveryError::Store(error)),
        Err(source) => {
            return Err(DeliveryError::UnreadableProfile { account: account.clone(), source })
        }
    }
    if marked > 0 {
        info!(%account, marked, kind = feedback.kind, "billing addresses marked undeliverable");
        messaging::metrics::count(messaging::metrics::UNDELIVERABLE_ADDRESSES, marked as u64);
    }
    Ok(Outcome::Feedback { marked })
}
