//! What every router is given.

use std::sync::Arc;

use ledger::docs::DocStore;
use ledger::LedgerStore;
use usage::worker::RateCards;

/// A store that keeps both the ledger and the account documents.
pub trait Store: LedgerStore + DocStore {}
impl<T: LedgerStore + DocStore> Store for T {}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub cards: RateCards,
    pub processor: Arc<dyn payments::CardProcessor>,
    /// Where payment receipts go (the notifications queue; the worker in process locally).
    pub notices: Option<Arc<dyn notifications::notice::NoticeSink>>,
}

impl AppState {
    pub fn ledger(&self) -> &dyn LedgerStore {
        &*self.store
    }

    pub fn docs(&self) -> &dyn DocStore {
        &*self.store
    }
}
