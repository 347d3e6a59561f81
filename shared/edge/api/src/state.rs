//! What every router is given.

use std::sync::Arc;

use ledger::docs::DocStore;
use ledger::LedgerStore;
use rating::RateCards;

pub use documents::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub cards: RateCards,
    pub processor: Arc<dyn payments::CardProcessor>,
    /// Where payment receipts go (the notifications queue; the worker in process locally).
    pub notices: Option<Arc<dyn notifications::notice::NoticeSink>>,
    /// Where emailed statements are queued (the statements queue; the job in process locally).
    /// `None`: `POST /v1/statements` answers 503.
    pub statements: Option<Arc<dyn jobs::JobSink>>,
    /// The billing portal's keys (issue 14); `None`: portal links answer 503.
    pub portal: Option<Arc<crate::portal::PortalKeys>>,
}

impl AppState {
    pub fn ledger(&self) -> &dyn LedgerStore {
        &*self.store
    }

    pub fn docs(&self) -> &dyn DocStore {
        &*self.store
    }
}

impl AppState {
    /// One page of an account's documents of `kind` (ids ascending; newest first for kinds
    /// whose ids invert time), parsed, with the cursor of the next page when there may be one.
    pub async fn doc_page<T: serde::de::DeserializeOwned>(
        &self,
        account: &ledger::AccountId,
        kind: ledger::docs::DocKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<T>, Option<String>), crate::error::ApiError> {
        use crate::error::ApiError;
        let docs = self
            .docs()
            .list_docs(account, kind, cursor, limit)
            .await
            .map_err(ApiError::from_store)?;
        let next = (docs.len() == limit as usize).then(|| docs.last().map(|d| d.id.clone()));
        let items = docs
            .iter()
            .map(|d| serde_json::from_str(&d.body))
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::internal(&e))?;
        Ok((items, next.flatten()))
    }
}

/// The account, or the API's 404. (Here rather than in `account`, so that `audit` and
/// `account` do not depend on each other.)
pub async fn account_or_404(
    state: &AppState,
    id: &ledger::AccountId,
) -> Result<ledger::Account, crate::error::ApiError> {
    use crate::error::ApiError;
    state.ledger().account(id).await.map_err(ApiError::from_store)?.ok_or_else(|| {
        ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such account")
    })
}
