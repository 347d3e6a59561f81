//! SDK errors decoded into typed outcomes. Never stringified into a decision.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;

use ledger::{AccountId, StoreError};

const THROTTLING_CODES: [&str; 5] = [
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
    "ThrottlingError",
];

/// Any other SDK error: throttling stays throttling; the rest is "unavailable" with its source.
pub fn classify<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if error.code().is_some_and(|code| THROTTLING_CODES.contains(&code)) {
        return StoreError::Throttled;
    }
    // A request DynamoDB refuses as invalid will be refused again: never retry it.
    if error.code() == Some("ValidationException") {
        return StoreError::Corrupt(format!(
            "DynamoDB rejected the request: {}",
            error.message().unwrap_or("no message")
        ));
    }
    StoreError::unavailable(error)
}

/// Operation errors that can say "the condition expression was false".
pub trait ConditionalOperationError {
    fn is_conditional_check_failed(&self) -> bool;
}

impl ConditionalOperationError for PutItemError {
    fn is_conditional_check_failed(&self) -> bool {
        matches!(self, PutItemError::ConditionalCheckFailedException(_))
    }
}

impl ConditionalOperationError for DeleteItemError {
    fn is_conditional_check_failed(&self) -> bool {
        matches!(self, DeleteItemError::ConditionalCheckFailedException(_))
    }
}

pub fn is_conditional_check_failed<E: ConditionalOperationError, R>(
    error: &SdkError<E, R>,
) -> bool {
    matches!(error, SdkError::ServiceError(service) if service.err().is_conditional_check_failed())
}

/// Why a ledger transaction did not commit, decoded from `CancellationReasons`.
#[derive(Debug, thiserror::Error)]
pub enum TransactionFailure {
    /// The account item's version moved: someone else committed first. Retry from a fresh read.
    #[error("the account version changed")]
    VersionConflict,
    /// An item the transaction creates already exists (index `item` in the transaction).
    #[error("transaction item {item} already exists")]
    AlreadyExists { item: usize },
    /// Another transaction was touching the same items at the same moment.
    #[error("conflicting concurrent transaction")]
    Conflict,
    #[error("throttled")]
    Throttled,
    /// A malformed request: a bug.
    #[error("DynamoDB rejected the transaction as invalid: {0}")]
    Invalid(String),
    #[error("transaction failed")]
    Other(#[source] StoreError),
}

impl TransactionFailure {
    pub fn from_sdk<R>(error: SdkError<TransactWriteItemsError, R>) -> Self
    where
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        if let SdkError::ServiceError(service) = &error {
            match service.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    return Self::from_reasons(cancelled.cancellation_reasons());
                }
                TransactWriteItemsError::TransactionInProgressException(_) => {
                    return TransactionFailure::Conflict;
                }
                _ => {}
            }
        }
        match classify(error) {
            StoreError::Throttled => TransactionFailure::Throttled,
            other => TransactionFailure::Other(other),
        }
    }

    /// Item 0 of every ledger transaction is the account item.
    pub fn from_reasons(reasons: &[CancellationReason]) -> Self {
        let mut failure = None;
        for (index, reason) in reasons.iter().enumerate() {
            let decoded = match reason.code() {
                None | Some("None") => continue,
                Some("ConditionalCheckFailed") if index == 0 => TransactionFailure::VersionConflict,
                Some("ConditionalCheckFailed") => TransactionFailure::AlreadyExists { item: index },
                Some("TransactionConflict") => TransactionFailure::Conflict,
                Some(code) if THROTTLING_CODES.contains(&code) => TransactionFailure::Throttled,
                Some(code) => TransactionFailure::Invalid(format!(
                    "{code}: {}",
                    reason.message().unwrap_or("no message")
                )),
            };
            // The version conflict explains everything else; prefer it.
            if matches!(decoded, TransactionFailure::VersionConflict) {
                return decoded;
            }
            failure.get_or_insert(decoded);
        }
        failure.unwrap_or(TransactionFailure::Conflict)
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransactionFailure::VersionConflict
                | TransactionFailure::Conflict
                | TransactionFailure::Throttled
                // A page or index item exists only if a racing batch used the same seq, which
                // the version check would also have caught: re-read and retry.
                | TransactionFailure::AlreadyExists { .. }
        )
    }

    pub fn into_store_error(self, id: &AccountId) -> StoreError {
        match self {
            TransactionFailure::VersionConflict
            | TransactionFailure::Conflict
            | TransactionFailure::AlreadyExists { .. } => StoreError::Contention(id.clone()),
            TransactionFailure::Throttled => StoreError::Throttled,
            TransactionFailure::Invalid(message) => StoreError::Corrupt(message),
            TransactionFailure::Other(error) => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(code: &str) -> CancellationReason {
        CancellationReason::builder().code(code).build()
    }

    #[test]
    fn cancellation_reasons_decode_into_distinct_failures() {
        let version =
            TransactionFailure::from_reasons(&[reason("ConditionalCheckFailed"), reason("None")]);
        assert!(matches!(version, TransactionFailure::VersionConflict));
        let exists =
            TransactionFailure::from_reasons(&[reason("None"), reason("ConditionalCheckFailed")]);
        assert!(matches!(exists, TransactionFailure::AlreadyExists { item: 1 }));
        let throttled =
            TransactionFailure::from_reasons(&[reason("None"), reason("ThrottlingError")]);
        assert!(matches!(throttled, TransactionFailure::Throttled));
        let conflict = TransactionFailure::from_reasons(&[reason("TransactionConflict")]);
        assert!(matches!(conflict, TransactionFailure::Conflict));
        let invalid = TransactionFailure::from_reasons(&[reason("ValidationError")]);
        assert!(matches!(invalid, TransactionFailure::Invalid(_)));
        assert!(!invalid.is_retryable());
    }
}
