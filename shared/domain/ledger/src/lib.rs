//! The ringledger domain. Knows nothing of AWS: money, accounts, entries, the posting rules and
//! the store port that the DynamoDB and embedded stores implement.

pub mod account;
pub mod docs;
pub mod entry;
pub mod grant;
pub mod hold;
pub mod ids;
pub mod memory;
pub mod money;
pub mod month;
pub mod posting;
pub mod service;
pub mod statement;
pub mod store;

use chrono::{DateTime, SubsecRound, Utc};

pub use account::{
    Account, AccountStatus, MonthTotals, OverdueBlock, PlanUsage, RechargeMode, RechargeSettings,
    RechargeSettingsError, RechargeStop, TermsAcceptance, MAX_FAILED_ATTEMPTS,
    MAX_PENDING_PAYMENTS,
};
pub use entry::{
    verify_chain, BillingItem, ChainError, Entry, EntryKind, GrantShare, CREDIT_NOTE_SOURCE_PREFIX,
};
pub use grant::{
    CreditGrant, GrantCategory, GrantTerms, DEFAULT_GRANT_PRIORITY, MAX_GRANTS, MAX_GRANT_PRIORITY,
};
pub use hold::{HeldCall, Hold, HoldPurpose, MAX_HOLDS};
pub use ids::{AccountId, IdError, SourceId};
pub use money::{display_usd, Amount, AmountError, Rounding};
pub use month::{Month, MonthError};
pub use posting::{
    apply, Application, AppliedEntry, LedgerEvent, LedgerEventKind, Posting, PostingResult,
    PostingRule, Refusal,
};
pub use service::{InboundGrace, ReleaseStage, ServicePolicy};
pub use store::{
    AccountChange, EntryPage, EntryQuery, FixedPostings, LedgerStore, NewAccount, OutboxPage,
    PostOutcome, PostingSource, Show, StoreError, UnreadableOutboxItem,
};

/// A request that breaks a ledger rule. Always a client error: nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("{item:?} cannot be a {kind:?}")]
    WrongDirection { item: BillingItem, kind: EntryKind },
    #[error("credits always post; they cannot be refused below the floor")]
    CreditsAlwaysPost,
    #[error("details are {size_bytes} bytes of JSON; the limit is {}", posting::MAX_DETAILS_BYTES)]
    DetailsTooLarge { size_bytes: usize },
    #[error("{count} postings in one call; the limit is {}", posting::MAX_POSTINGS_PER_CALL)]
    BatchTooLarge { count: usize },
    #[error("page size must be between 1 and {max}")]
    BadPageSize { max: u32 },
    #[error("times are kept to the microsecond; this one has finer precision")]
    SubMicrosecondTime,
    #[error("posting source id {0} was not declared for the duplicate lookup")]
    UndeclaredSourceId(String),
    #[error("the event cannot be rated: {0}")]
    Unrateable(String),
    #[error("the cursor is not one this API returned")]
    BadCursor,
    #[error(
        "document id must be 1 to {} printable ASCII characters without spaces",
        docs::MAX_DOC_ID_LEN
    )]
    BadDocumentId,
    #[error("settings changes cannot touch the balance, sequence or version")]
    BalanceFieldsAreLedgerOnly,
    #[error(
        "{} payments and refunds are already waiting for the card processor's answer; wait for them to settle",
        account::MAX_PENDING_PAYMENTS
    )]
    TooManyPendingPayments,
    #[error("{} holds are already on the account; wait for calls to end", hold::MAX_HOLDS)]
    TooManyHolds,
    /// An account change found nothing to do (a replayed or refused hold request): the store
    /// writes nothing.
    #[error("nothing to change")]
    Unchanged,
    #[error("a credit grant is a credit with the grant's terms; its debits are the ledger's own")]
    GrantTerms,
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Recharge(#[from] RechargeSettingsError),
}

/// Stores keep microseconds; truncating once at the edge keeps round trips exact.
pub fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// FNV-1a: a hash that is stable across builds and platforms (std's hasher is neither), for
/// ids and shard numbers that must come out the same every time.
pub fn stable_hash(value: &str) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
