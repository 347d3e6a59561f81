//! The billing documents, typed: one home for what an account keeps beside its ledger.
//!
//! - [`profile`]: contacts, service address (drives sales tax), tax exemption, statement
//!   schedule, the card processor's customer id and the registered cards;
//! - [`payment`]: the payment history's records;
//! - [`invoice`]: postpaid accounts' monthly invoices and their gapless numbers;
//! - [`spend`]: what auto-recharge (and, if the operator says so, Pay Now) spent per month and
//!   day, for the caps.
//!
//! Every reader and writer (the HTTP API, auto-recharge, the monthly jobs, notifications) goes
//! through these types, so a field renamed here is renamed for all of them.

pub mod invoice;
pub mod payment;
pub mod plan;
pub mod profile;
pub mod spend;

use ledger::docs::DocStore;
use ledger::{LedgerStore, StoreError};

/// A store that keeps both the ledger and the account documents.
pub trait Store: LedgerStore + DocStore {}
impl<T: LedgerStore + DocStore> Store for T {}

/// Why a document could not be read, written or accepted.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// A value the caller gave is not acceptable (`field` names it): the edge's 4xx.
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error("the {0} document is too large")]
    TooLarge(&'static str),
    #[error("the {0} document kept changing under concurrent writers; retry")]
    Busy(&'static str),
    #[error("the stored {what} document cannot be read")]
    Unreadable {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DocumentError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        DocumentError::Invalid { field, message: message.into() }
    }
}
