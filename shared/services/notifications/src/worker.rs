//! The notification worker: a batch of queue messages in, the ids of the messages that failed
//! out (Lambda's `ReportBatchItemFailures`).
//!
//! Each message is a [`Notice`] (or a ledger event the outbox relay published) and is handled in
//! its own task, so a panic fails only that message. A notice is sent once per notification id:
//! the worker claims the id in the document store (`DocKind::Notice`, state `sending`) before it
//! sends and marks it `sent` with the mail service's message id after, so a redelivered notice
//! finds `sent` and is skipped. [`deliver_once`] is that protocol for any email with a stable id;
//! statements ([`crate::statement`]) use it too.
//!
//! Delivery is at least once, not exactly once: if the process dies between the send and the
//! `sent` mark, the claim stays `sending`, and once it is older than [`CLAIM_LEASE_SECONDS`] the
//! next delivery takes it over and sends again. A younger claim may still be in flight in
//! another worker, so that delivery fails and the queue retries it later. The function's
//! timeout must stay below the lease, and the queue's visibility timeout times
//! `maxReceiveCount - 1` above it, so a crashed claim is retried before the message reaches the
//! DLQ.
//!
//! Failures: a malformed message fails (and reaches the DLQ after `maxReceiveCount`); a
//! transient send failure releases the claim and fails the message (the queue retries it); a
//! permanent one (an address or the content refused) is logged and recorded as `failed`, and
//! the message succeeds so it is not retried forever. An account without recipients is logged
//! and succeeds: there is nobody to send to.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use ledger::docs::{check_doc_id, DocError, DocKind, DocStore};
use ledger::AccountId;
use messaging::queue::{Failure, Message};
use serde::{Deserialize, Serialize};
use tracing::{info, warn, Instrument};

use crate::error::DeliveryError;
use crate::notice::{Notice, NoticeKind, NoticeSink};
use crate::templates;
use messaging::mail::{Email, Mailer};
use messaging::text::{TextMessage, TextSender};

/// Messages handled concurrently within one batch.
pub const MESSAGE_CONCURRENCY: usize = 10;
/// A `sending` claim older than this was left by a crash and may be taken over.
pub const CLAIM_LEASE_SECONDS: i64 = 120;
/// Attempts at recording `sent` after the email went out.
const MARK_SENT_ATTEMPTS: u32 = 3;

/// Where a notice's delivery stands: the `DocKind::Notice` document, one per notification id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Delivery {
    /// Claimed by a worker that is sending it (or died doing so).
    Sending {
        claimed_at: DateTime<Utc>,
        attempt: u32,
    },
    Sent {
        message_id: String,
        sent_at: DateTime<Utc>,
        attempts: u32,
    },
    /// Refused for good (a bad address, rejected content): not retried.
    Failed {
        reason: String,
        failed_at: DateTime<Utc>,
        attempts: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRecord {
    pub notice_kind: String,
    pub recipients: Vec<String>,
    #[serde(flatten)]
    pub delivery: Delivery,
}

/// A notice's delivery record, if it was ever claimed.
pub async fn delivery_record(
    docs: &dyn DocStore,
    account: &AccountId,
    notice_id: &str,
) -> Result<Option<NoticeRecord>, DeliveryError> {
    let doc =
        docs.get_doc(account, DocKind::Notice, notice_id).await.map_err(DeliveryError::Store)?;
    doc.map(|doc| {
        serde_json::from_str(&doc.body)
            .map_err(|source| DeliveryError::UnreadableRecord { id: notice_id.to_string(), source })
    })
    .transpose()
}

/// Who a notice may go to, from the account's profile (the billing documents' own type):
/// addresses the mail service reported undeliverable are left out, and the critical phone is
/// there only while its holder has not answered STOP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contacts {
    pub billing_emails: Vec<String>,
    pub recharge_failure_email: Option<String>,
    pub critical_phone: Option<String>,
    /// Some address was left out as undeliverable.
    pub undeliverable: bool,
}

impl From<&documents::profile::Profile> for Contacts {
    fn from(profile: &documents::profile::Profile) -> Self {
        let deliverable = |e: &documents::profile::Email| !profile.is_undeliverable(e.as_str());
        Contacts {
            billing_emails: profile
                .billing_emails
                .iter()
                .filter(|e| deliverable(e))
                .map(|e| e.as_str().to_string())
                .collect(),
            recharge_failure_email: profile
                .recharge_failure_email
                .as_ref()
                .filter(|e| deliverable(e))
                .map(|e| e.as_str().to_string()),
            critical_phone: profile
                .critical_phone
                .clone()
                .filter(|_| !profile.critical_sms_opt_out)
                .map(String::from),
            undeliverable: profile.billing_emails.iter().any(|e| !deliverable(e))
                || profile.recharge_failure_email.as_ref().is_some_and(|e| !deliverable(e)),
        }
    }
}

pub async fn load_contacts(
    docs: &dyn DocStore,
    account: &AccountId,
) -> Result<Contacts, DeliveryError> {
    Ok(load_contacts_and_profile(docs, account).await?.0)
}

/// The contacts and the profile they came from. A client account's billing emails also hear of
/// it through its agency's billing emails (after its own).
pub async fn load_contacts_and_profile(
    docs: &dyn DocStore,
    account: &AccountId,
) -> Result<(Contacts, documents::profile::Profile), DeliveryError> {
    let read = |id: AccountId| async move {
        documents::profile::load(docs, &id).await.map(|(p, _)| p).map_err(|error| match error {
            documents::DocumentError::Store(error) => DeliveryError::Store(error),
            source => DeliveryError::UnreadableProfile { account: id.clone(), source },
        })
    };
    let profile = read(account.clone()).await?;
    let mut contacts = Contacts::from(&profile);
    if let Some(agency) = profile.agency_id.clone() {
        let agency = Contacts::from(&read(agency).await?);
        contacts.billing_emails.extend(agency.billing_emails);
    }
    Ok((contacts, profile))
}

/// Who gets a notice: the billing contacts; for a failed recharge the recharge-failure address
/// first, then the billing contacts. Without duplicates (compared without case), in that order.
pub fn recipients(kind: &NoticeKind, contacts: &Contacts) -> Vec<String> {
    let recharge_failure = match kind {
        NoticeKind::RechargeFailed { .. }
        | NoticeKind::PlanChargeFailed { .. }
        | NoticeKind::InvoicePaymentFailed { .. } => contacts.recharge_failure_email.as_deref(),
        // The card's manager first: the person who can replace it.
        NoticeKind::CardExpiring { card_manager_email, .. } => card_manager_email.as_deref(),
        _ => None,
    };
    dedupe_addresses(
        recharge_failure.into_iter().chain(contacts.billing_emails.iter().map(String::as_str)),
    )
}

/// Addresses trimmed, without blanks and without duplicates (compared without case), in order.
pub fn dedupe_addresses<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for address in addresses {
        let address = address.trim();
        if !address.is_empty() && !out.iter().any(|a| a.eq_ignore_ascii_case(address)) {
            out.push(address.to_string());
        }
    }
    out
}

/// What became of one message (all of these delete it from the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        message_id: String,
    },
    AlreadySent,
    /// Refused for good earlier: recorded, not retried.
    AlreadyFailed,
    /// Refused for good now: recorded.
    Rejected {
        reason: String,
    },
    NoRecipients,
    /// A ledger event that calls for no notice (a recharge request on the wrong queue).
    NotANotice,
    /// The request can never be served (a statement of an unknown account or a bad period):
    /// recorded as failed, not retried. An API maps it to a 4xx.
    Invalid {
        reason: String,
    },
    /// A bounce or complaint notification: this many addresses newly marked undeliverable.
    Feedback {
        marked: usize,
    },
}

impl Outcome {
    /// A short name for logs and run reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::AlreadySent => "already_sent",
            Outcome::AlreadyFailed => "already_failed",
            Outcome::Rejected { .. } => "rejected",
            Outcome::NoRecipients => "no_recipients",
            Outcome::NotANotice => "not_a_notice",
            Outcome::Invalid { .. } => "invalid",
            Outcome::Feedback { .. } => "feedback",
        }
    }
}

/// Process one batch; returns the messages that failed and why (already logged).
pub async fn process_batch(
    docs: Arc<dyn DocStore>,
    mailer: Arc<dyn Mailer>,
    texts: Option<Arc<dyn TextSender>>,
    from: &str,
    messages: Vec<Message>,
) -> Vec<Failure> {
    let from: Arc<str> = Arc::from(from);
    let tasks = messages.into_iter().map(|message| {
        let (docs, mailer, from) = (docs.clone(), mailer.clone(), from.clone());
        let texts = texts.clone();
        let span = tracing::info_span!(
            "notice_message",
            message_id = %message.id,
            notice_id = tracing::field::Empty,
            account_id = tracing::field::Empty,
            kind = tracing::field::Empty,
        );
        async move {
            let Message { id: message_id, body } = message;
            let task =
                tokio::spawn(
                    async move {
                        handle_message(&*docs, &*mailer, texts.as_deref(), &from, &body).await
                    }
                    .instrument(span.clone()),
                );
            let result =
                task.await.unwrap_or_else(|join_error| Err(DeliveryError::Panicked(join_error)));
            match result {
                Ok(outcome) => {
                    info!(parent: &span, ?outcome, "notice handled");
                    None
                }
                Err(error) => {
                    let reason = error.to_string();
                    warn!(parent: &span, %reason, "notice failed; the queue will retry it");
                    Some(Failure { message_id, reason })
                }
            }
        }
    });
    futures::stream::iter(tasks)
        .buffer_unordered(MESSAGE_CONCURRENCY)
        .filter_map(|failure| async move { failure })
        .collect()
        .await
}

/// Handle one message body. `Err` is a reason to retry (or, for a malformed message, to let it
/// reach the DLQ).
pub async fn handle_message(
    docs: &dyn DocStore,
    mailer: &dyn Mailer,
    texts: Option<&dyn TextSender>,
    from: &str,
    body: &str,
) -> Result<Outcome, DeliveryError> {
    // The mail service's bounce and complaint notifications share the queue (through SNS).
    if let Some(feedback) = crate::feedback::parse(body) {
        let marked = crate::feedback::apply(docs, &feedback?).await?;
        return Ok(Outcome::Feedback { marked });
    }
    let notice = match Notice::parse_message(body) {
        Ok(Some(notice)) => notice,
        Ok(None) => {
            warn!("a ledger event that calls for no notice reached the notifications queue");
            return Ok(Outcome::NotANotice);
        }
        Err(error) => return Err(DeliveryError::MalformedNotice(error)),
    };
    check_doc_id(&notice.id)
        .map_err(|source| DeliveryError::BadNoticeId { id: notice.id.clone(), source })?;
    send_notice(docs, mailer, texts, from, &notice).await
}

/// Send one notice once per notification id (see the module documentation).
pub async fn send_notice(
    docs: &dyn DocStore,
    mailer: &dyn Mailer,
    texts: Option<&dyn TextSender>,
    from: &str,
    notice: &Notice,
) -> Result<Outcome, DeliveryError> {
    let span = tracing::Span::current();
    span.record("notice_id", notice.id.as_str());
    span.record("account_id", notice.account_id.as_str());
    span.record("kind", notice.kind.as_str());
    let account = &notice.account_id;

    let contacts = load_contacts(docs, account).await?;
    let to = recipients(&notice.kind, &contacts);
    // A critical notice also goes by text to the critical phone (once per notice id, on its
    // own delivery record), whatever becomes of the email: a dead mailbox never means a
    // silent suspension.
    let texted = match (texts, contacts.critical_phone.as_deref()) {
        (Some(texts), Some(phone)) => {
            let bounced = to.is_empty() && contacts.undeliverable;
            match templates::critical_text(notice, bounced) {
                Some(body) => Some(send_text_once(docs, texts, notice, phone, body).await),
                None => None,
            }
        }
        _ => None,
    };
    if to.is_empty() {
        return match texted {
            Some(outcome) => outcome,
            None => {
                warn!("the account has no billing contact for this notice; nothing to send");
                Ok(Outcome::NoRecipients)
            }
        };
    }
    let rendered = templates::render(notice);
    let email = Email {
        notice_id: notice.id.clone(),
        account_id: Some(account.to_string()),
        from: from.to_string(),
        to,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        attachments: vec![],
    };
    let emailed = deliver_once(docs, mailer, account, notice.kind.as_str(), email).await;
    // A text that must be retried retries the message (the email, sent, is not sent again).
    if let Some(Err(error)) = texted {
        emailed?;
        return Err(error);
    }
    emailed
}

/// The critical text of `notice` to `phone`, once per notice id (`sms:<notice id>`).
async fn send_text_once(
    docs: &dyn DocStore,
    texts: &dyn TextSender,
    notice: &Notice,
    phone: &str,
    body: String,
) -> Result<Outcome, DeliveryError> {
    let text = TextMessage {
        id: format!("sms:{}", notice.id),
        to: phone.to_string(),
        body: messaging::text::fit(&body),
    };
    let kind = format!("{}_text", notice.kind.as_str());
    let to = [text.to.clone()];
    let outcome =
        deliver_once_via(docs, &notice.account_id, &text.id, &kind, &to, texts.send_text(&text))
            .await?;
    if matches!(outcome, Outcome::Sent { .. }) {
        messaging::metrics::count(messaging::metrics::TEXTS_SENT, 1);
    }
    Ok(outcome)
}

/// Where a delivery record leaves the next attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Sent, or refused for good, before: nothing to do.
    Done(Outcome),
    /// Nobody holds it: claim it at `expected_version` (`None`: create the record). A version
    /// means a claim left by an interrupted delivery is being taken over.
    Free { expected_version: Option<u64>, attempt: u32 },
}

/// Read the delivery record of `id` and say whether it may be claimed now. A `sending` claim
/// younger than [`CLAIM_LEASE_SECONDS`] may still be in flight elsewhere: an `Err`, so the queue
/// retries later.
pub async fn claim_state(
    docs: &dyn DocStore,
    account: &AccountId,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Claim, DeliveryError> {
    let doc = match docs.get_doc(account, DocKind::Notice, id).await {
        Err(error) => return Err(DeliveryError::Store(error)),
        Ok(None) => return Ok(Claim::Free { expected_version: None, attempt: 1 }),
        Ok(Some(doc)) => doc,
    };
    let record: NoticeRecord = serde_json::from_str(&doc.body)
        .map_err(|source| DeliveryError::UnreadableRecord { id: id.to_string(), source })?;
    match record.delivery {
        Delivery::Sent { .. } => Ok(Claim::Done(Outcome::AlreadySent)),
        Delivery::Failed { .. } => Ok(Claim::Done(Outcome::AlreadyFailed)),
        Delivery::Sending { claimed_at, .. }
            if (now - claimed_at).num_seconds() < CLAIM_LEASE_SECONDS =>
        {
            Err(DeliveryError::ClaimHeld { id: id.to_string(), claimed_at })
        }
        Delivery::Sending { attempt, .. } => Ok(Claim::Free {
            expected_version: Some(doc.version),
            attempt: attempt.saturating_add(1),
        }),
    }
}

fn record_body(kind: &str, to: &[String], delivery: Delivery) -> Result<String, DeliveryError> {
    serde_json::to_string(&NoticeRecord {
        notice_kind: kind.to_string(),
        recipients: to.to_vec(),
        delivery,
    })
    .map_err(DeliveryError::UnwritableRecord)
}

/// Send `email` once per `email.notice_id`, recording it as a `kind` delivery: claim the id in
/// the document store (`sending`, with a lease), send, then record `sent` with the mail
/// service's message id. A permanent refusal is recorded as `failed` and returned as
/// `Rejected`; a transient one releases the claim and is an `Err` (retry). See the module
/// documentation for the at-least-once edge. The recipients recorded are `email.to`.
pub async fn deliver_once(
    docs: &dyn DocStore,
    mailer: &dyn Mailer,
    account: &AccountId,
    kind: &str,
    email: Email,
) -> Result<Outcome, DeliveryError> {
    let outcome =
        deliver_once_via(docs, account, &email.notice_id, kind, &email.to, mailer.send(&email))
            .await?;
    if let Outcome::Sent { message_id } = &outcome {
        info!(%message_id, recipients = email.to.len(), "notice sent");
        messaging::metrics::count(messaging::metrics::NOTICES_SENT, 1);
    }
    Ok(outcome)
}

/// The once-per-id protocol of [`deliver_once`] for any message: `send` runs only once the id
/// is claimed (it is a future not yet polled), and its message id is recorded as `sent`.
pub async fn deliver_once_via(
    docs: &dyn DocStore,
    account: &AccountId,
    id: &str,
    kind: &str,
    to: &[String],
    send: impl std::future::Future<Output = Result<String, messaging::mail::MailError>>,
) -> Result<Outcome, DeliveryError> {
    let (expected_version, attempt) = match claim_state(docs, account, id, Utc::now()).await? {
        Claim::Done(outcome) => return Ok(outcome),
        Claim::Free { expected_version, attempt } => (expected_version, attempt),
    };
    if expected_version.is_some() {
        warn!(
            attempt,
            "taking over a claim left by an interrupted delivery: the email may have gone out \
             already and is sent again (at least once)"
        );
    }
    let record = |delivery: Delivery| record_body(kind, to, delivery);

    let claim = record(Delivery::Sending { claimed_at: Utc::now(), attempt })?;
    let claimed_version =
        match docs.put_doc(account, DocKind::Notice, id, &claim, expected_version).await {
            Ok(version) => version,
            Err(DocError::Conflict) => return Err(DeliveryError::ClaimLost { id: id.to_string() }),
            Err(error) => return Err(DeliveryError::Docs(error)),
        };

    match send.await {
        Ok(message_id) => {
            let sent = record(Delivery::Sent {
                message_id: message_id.clone(),
                sent_at: Utc::now(),
                attempts: attempt,
            })?;
            mark_sent(docs, account, id, &sent, claimed_version).await;
            Ok(Outcome::Sent { message_id })
        }
        Err(error) if error.is_permanent() => {
            let reason = error.to_string();
            warn!(%reason, "the mail service refused the notice for good; recorded, not retried");
            let failed = record(Delivery::Failed {
                reason: reason.clone(),
                failed_at: Utc::now(),
                attempts: attempt,
            })?;
            match docs.put_doc(account, DocKind::Notice, id, &failed, Some(claimed_version)).await {
                Ok(_) => Ok(Outcome::Rejected { reason }),
                Err(source) => {
                    release(docs, account, id, claimed_version).await;
                    Err(DeliveryError::RefusalNotRecorded { refusal: error, source })
                }
            }
        }
        Err(error) => {
            release(docs, account, id, claimed_version).await;
            Err(DeliveryError::Send(error))
        }
    }
}

/// Record a request that can never be served (nothing was sent) as `failed` under `id`, once.
/// Returns `Invalid` with the reason, or what an earlier delivery of `id` already did.
pub async fn refuse_once(
    docs: &dyn DocStore,
    account: &AccountId,
    id: &str,
    kind: &str,
    to: Vec<String>,
    reason: String,
) -> Result<Outcome, DeliveryError> {
    let (expected_version, attempt) = match claim_state(docs, account, id, Utc::now()).await? {
        Claim::Done(outcome) => return Ok(outcome),
        Claim::Free { expected_version, attempt } => (expected_version, attempt),
    };
    let failed = record_body(
        kind,
        &to,
        Delivery::Failed { reason: reason.clone(), failed_at: Utc::now(), attempts: attempt },
    )?;
    match docs.put_doc(account, DocKind::Notice, id, &failed, expected_version).await {
        Ok(_) => Ok(Outcome::Invalid { reason }),
        Err(DocError::Conflict) => Err(DeliveryError::ClaimLost { id: id.to_string() }),
        Err(error) => Err(DeliveryError::Docs(error)),
    }
}

/// Record `sent`, a few times if the store hiccups. The email is out either way, so a store that
/// stays down is logged and the message still succeeds: failing it would send the email again.
async fn mark_sent(
    docs: &dyn DocStore,
    account: &AccountId,
    id: &str,
    body: &str,
    claimed_version: u64,
) {
    for attempt in 1..=MARK_SENT_ATTEMPTS {
        match docs.put_doc(account, DocKind::Notice, id, body, Some(claimed_version)).await {
            Ok(_) => return,
            Err(DocError::Conflict) => {
                warn!("another delivery took the claim over while this one was sending");
                return;
            }
            Err(error) if attempt < MARK_SENT_ATTEMPTS => {
                warn!(%error, attempt, "recording the sent notice failed; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
            }
            Err(error) => {
                warn!(
                    %error,
                    "the notice was sent but could not be recorded; its claim stays `sending`"
                );
            }
        }
    }
}

/// Drop our claim after a failed send so the queue's retry can claim it again at once. If this
/// fails too, the lease lets a later delivery take it over.
async fn release(docs: &dyn DocStore, account: &AccountId, id: &str, claimed_version: u64) {
    if let Err(error) = docs.delete_doc(account, DocKind::Notice, id, claimed_version).await {
        warn!(%error, "could not release the notice's claim; it expires after the lease");
    }
}

/// Sends notices in process, without a queue (the local runner): the same once-per-id rules.
pub struct DirectSink {
    pub docs: Arc<dyn DocStore>,
    pub mailer: Arc<dyn Mailer>,
    pub texts: Option<Arc<dyn TextSender>>,
    pub from: String,
}

#[async_trait::async_trait]
impl NoticeSink for DirectSink {
    async fn publish(
        &self,
        notice: &Notice,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        check_doc_id(&notice.id)?;
        send_notice(&*self.docs, &*self.mailer, self.texts.as_deref(), &self.from, notice)
            .await
            .map(|_| ())
            .map_err(Into::into)
    }
}
