//! Why a notice or a statement could not be handled now. Every variant is a reason to let the
//! queue deliver the message again (a malformed one reaches the DLQ after `maxReceiveCount`);
//! failures that retrying cannot fix are recorded as `failed` deliveries instead, and are not
//! errors. The display keeps the source's text too: it is the SQS failure's reason and the log
//! line an operator reads.

use chrono::{DateTime, Utc};
use ledger::docs::DocError;
use ledger::statement::StatementError;
use ledger::{AccountId, LedgerError, StoreError};
use messaging::mail::MailError;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The message is neither a notice nor a ledger event.
    #[error("malformed notice: {0}")]
    MalformedNotice(#[source] NotANotice),
    #[error("malformed notice: id {id:?}: {source}")]
    BadNoticeId {
        id: String,
        #[source]
        source: LedgerError,
    },
    #[error("malformed statement request: id {id:?}: {source}")]
    BadStatementId {
        id: String,
        #[source]
        source: LedgerError,
    },
    #[error("document store: {0}")]
    Docs(#[source] DocError),
    #[error("document store: {0}")]
    Store(#[source] StoreError),
    #[error("the profile of account {account} is unreadable: {source}")]
    UnreadableProfile {
        account: AccountId,
        #[source]
        source: documents::DocumentError,
    },
    #[error("notice record {id} is unreadable: {source}")]
    UnreadableRecord {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("notice record: {0}")]
    UnwritableRecord(#[source] serde_json::Error),
    /// A younger claim than the lease may still be sending elsewhere.
    #[error(
        "notice {id} is being sent by another delivery (claimed at {claimed_at}); retry later"
    )]
    ClaimHeld { id: String, claimed_at: DateTime<Utc> },
    #[error("notice {id} was claimed by another delivery first; retry later")]
    ClaimLost { id: String },
    /// The mail service failed for now; the claim was released.
    #[error("sending failed, will retry: {0}")]
    Send(#[source] MailError),
    /// The mail service refused the email for good, and the refusal could not be recorded.
    #[error("{refusal}; recording the failure failed: {source}")]
    RefusalNotRecorded {
        refusal: MailError,
        #[source]
        source: DocError,
    },
    /// The statement could not be built from the ledger.
    #[error("{source}: {}", error_chain(.source))]
    Statement {
        #[source]
        source: StatementError,
    },
    #[error("notice worker panicked: {0}")]
    Panicked(#[source] tokio::task::JoinError),
}

/// A queue message that is neither a [`crate::notice::Notice`] nor a ledger event.
#[derive(Debug, thiserror::Error)]
#[error("neither a notice nor a ledger event: {0}")]
pub struct NotANotice(#[source] pub serde_json::Error);

/// The sources of an error, for the logs and the retry reason.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}
