//! The operator's rate cards, by id; accounts without one use the standard card.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{RateCard, RateCardError};

/// The rate cards the system knows, by id. Every card is validated when loaded: the engine
/// assumes valid cards.
#[derive(Debug, Clone)]
pub struct RateCards {
    cards: HashMap<String, Arc<RateCard>>,
    standard: Arc<RateCard>,
}

/// Why an operator's rate-card file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RateCardsError {
    #[error("rate cards: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("rate cards: {0}")]
    Invalid(#[from] RateCardError),
}

impl RateCards {
    pub fn new(
        cards: HashMap<String, RateCard>,
        standard: RateCard,
    ) -> Result<Self, RateCardError> {
        standard.validate()?;
        for card in cards.values() {
            card.validate()?;
        }
        Ok(RateCards {
            cards: cards.into_iter().map(|(id, card)| (id, Arc::new(card))).collect(),
            standard: Arc::new(standard),
        })
    }

    pub fn standard_only() -> Self {
        Self::new(HashMap::new(), RateCard::standard()).expect("the standard card is valid")
    }

    /// Load `{"standard": card?, "cards": {"id": card, ...}}` (the operator's rate-card file).
    pub fn from_json(json: &str) -> Result<Self, RateCardsError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            standard: Option<RateCard>,
            #[serde(default)]
            cards: HashMap<String, RateCard>,
        }
        let file: File = serde_json::from_str(json)?;
        Ok(Self::new(file.cards, file.standard.unwrap_or_else(RateCard::standard))?)
    }

    pub fn card(&self, id: Option<&str>) -> Option<Arc<RateCard>> {
        match id {
            None => Some(self.standard.clone()),
            Some(id) => self.cards.get(id).cloned(),
        }
    }
}
