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

/// Mark the notification's addresses undeliverable (once each): an address on the tagged
/// account's profile, or, for a client account, on its agency's profile when that is where the
/// address is listed (a client's notices also go to its agency's billing emails). Returns how
/// many addresses were newly marked.
pub async fn apply(docs: &dyn DocStore, feedback: &Feedback) -> Result<usize, DeliveryError> {
    if feedback.addresses.is_empty() {
        return Ok(0);
    }
    let Some(account) = &feedback.account else {
        warn!(kind = feedback.kind, "a bounce or complaint without our account tag; ignored");
        return Ok(0);
    };
    let unreadable = |account: &AccountId| {
        let account = account.clone();
        move |error| match error {
            documents::DocumentError::Store(error) => DeliveryError::Store(error),
            source => DeliveryError::UnreadableProfile { account, source },
        }
    };
    let (client, _) = documents::profile::load(docs, account).await.map_err(unreadable(account))?;
    let agency_lists = match &client.agency_id {
        Some(agency) => {
            let (profile, _) =
                documents::profile::load(docs, agency).await.map_err(unreadable(agency))?;
            Some((agency.clone(), profile))
        }
        None => None,
    };
    let mut on_client = Vec::new();
    let mut on_agency = Vec::new();
    for (address, reason) in &feedback.addresses {
        let agency_only = agency_lists
            .as_ref()
            .is_some_and(|(_, agency)| lists(agency, address) && !lists(&client, address));
        if agency_only {
            on_agency.push((address, reason));
        } else {
            on_client.push((address, reason));
        }
    }
    let mut marked = mark(docs, account, feedback, &on_client).await?;
    if let Some((agency, _)) = &agency_lists {
        marked += mark(docs, agency, feedback, &on_agency).await?;
    }
    if marked > 0 {
        info!(%account, marked, kind = feedback.kind, "billing addresses marked undeliverable");
        messaging::metrics::count(messaging::metrics::UNDELIVERABLE_ADDRESSES, marked as u64);
    }
    Ok(marked)
}

/// `address` is one of the profile's billing or recharge-failure addresses.
fn lists(profile: &documents::profile::Profile, address: &str) -> bool {
    let address = address.trim();
    profile
        .billing_emails
        .iter()
        .chain(profile.recharge_failure_email.as_ref())
        .any(|e| e.as_str().eq_ignore_ascii_case(address))
}

async fn mark(
    docs: &dyn DocStore,
    account: &AccountId,
    feedback: &Feedback,
    addresses: &[(&String, &String)],
) -> Result<usize, DeliveryError> {
    if addresses.is_empty() {
        return Ok(0);
    }
    let mut marked = 0;
    let result = documents::profile::update(docs, account, |profile| {
        marked = 0;
        for (address, reason) in addresses {
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
        Ok(_) => Ok(marked),
        Err(documents::DocumentError::Store(error)) => Err(DeliveryError::Store(error)),
        Err(source) => Err(DeliveryError::UnreadableProfile { account: account.clone(), source }),
    }
}
