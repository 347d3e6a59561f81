//! The environment the template gives each function: one constant per variable, and typed
//! config per capability. A capability a function is built with is required: a missing or
//! empty variable stops the cold start with an error that names it.

use std::sync::Arc;

use payments::{SecretKey, StripeConfig, StripeProcessor};
use rating::RateCards;

/// The DynamoDB table (every function).
pub const TABLE: &str = "RINGLEDGER_TABLE";
/// The recharge queue (usage debits and the outbox relay publish to it; auto-recharge reads it).
pub const RECHARGE_QUEUE_URL: &str = "RINGLEDGER_RECHARGE_QUEUE_URL";
/// The notifications queue (notices and receipts).
pub const NOTIFICATIONS_QUEUE_URL: &str = "RINGLEDGER_NOTIFICATIONS_QUEUE_URL";
/// The statements queue (scheduled and on-demand statements).
pub const STATEMENTS_QUEUE_URL: &str = "RINGLEDGER_STATEMENTS_QUEUE_URL";
/// The tax queue (one job per account and month).
pub const TAX_QUEUE_URL: &str = "RINGLEDGER_TAX_QUEUE_URL";
/// The card processor's secret key (functions that charge cards only).
pub const STRIPE_SECRET_KEY: &str = "RINGLEDGER_STRIPE_SECRET_KEY";
/// Optional: the processor's base URL (default `https://api.stripe.com`; localstripe in tests).
pub const STRIPE_URL: &str = "RINGLEDGER_STRIPE_URL";
/// The sender of every email (`billing@example.com` or `Billing <billing@example.com>`).
pub const MAIL_FROM: &str = "RINGLEDGER_MAIL_FROM";
/// Optional: an SES configuration set (event publishing, dedicated IPs).
pub const SES_CONFIGURATION_SET: &str = "RINGLEDGER_SES_CONFIGURATION_SET";
/// Optional: the SMS sender id critical billing texts carry where the country takes one.
pub const SMS_SENDER_ID: &str = "RINGLEDGER_SMS_SENDER_ID";
/// Optional: a JSON file of rate cards (default: the standard card only).
pub const RATE_CARDS: &str = "RINGLEDGER_RATE_CARDS";
/// The processor webhook's signing secret (`whsec_...`; the webhook function only).
pub const STRIPE_WEBHOOK_SECRET: &str = "RINGLEDGER_STRIPE_WEBHOOK_SECRET";
/// The processor-events queue (the webhook publishes verified events; its worker applies them).
pub const PROCESSOR_EVENTS_QUEUE_URL: &str = "RINGLEDGER_PROCESSOR_EVENTS_QUEUE_URL";
/// The billing portal's signing secret (32+ bytes; the settings and web functions).
pub const PORTAL_SECRET: &str = api::portal::SECRET_VAR;
/// Where the billing page is served (portal links start with it).
pub const PORTAL_BASE_URL: &str = api::portal::BASE_URL_VAR;
/// The processor's publishable key: the billing page's hosted card fields (web function).
pub const STRIPE_PUBLISHABLE_KEY: &str = api::portal::PUBLISHABLE_KEY_VAR;
/// Optional: where the hosted card fields' script is (default `https://js.stripe.com/v3/`).
pub const STRIPE_JS_URL: &str = api::portal::CARD_SCRIPT_VAR;

/// Every variable the functions read.
pub const ALL: &[&str] = &[
    TABLE,
    RECHARGE_QUEUE_URL,
    NOTIFICATIONS_QUEUE_URL,
    STATEMENTS_QUEUE_URL,
    TAX_QUEUE_URL,
    STRIPE_SECRET_KEY,
    STRIPE_URL,
    MAIL_FROM,
    SES_CONFIGURATION_SET,
    SMS_SENDER_ID,
    RATE_CARDS,
    STRIPE_WEBHOOK_SECRET,
    PROCESSOR_EVENTS_QUEUE_URL,
    PORTAL_SECRET,
    PORTAL_BASE_URL,
    STRIPE_PUBLISHABLE_KEY,
    STRIPE_JS_URL,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} must be set (see infra/template.yaml)")]
    Missing(&'static str),
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// A variable this function cannot run without (empty counts as missing).
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    optional(name).ok_or(ConfigError::Missing(name))
}

/// A variable with a default (empty counts as unset).
pub fn optional(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

/// The sender and the SES configuration set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    pub from: String,
    pub configuration_set: Option<String>,
}

impl MailConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let from = required(MAIL_FROM)?;
        let from = messaging::mail::check_sender(&from)
            .map_err(|reason| ConfigError::Invalid { name: MAIL_FROM, reason })?;
        Ok(MailConfig { from, configuration_set: optional(SES_CONFIGURATION_SET) })
    }
}

/// The card processor: Stripe (or localstripe) with the secret key.
pub fn card_processor() -> Result<Arc<dyn payments::CardProcessor>, crate::Error> {
    let key = SecretKey::parse(required(STRIPE_SECRET_KEY)?).map_err(|error| {
        ConfigError::Invalid { name: STRIPE_SECRET_KEY, reason: error.to_string() }
    })?;
    let url = optional(STRIPE_URL).unwrap_or_else(|| "https://api.stripe.com".into());
    Ok(Arc::new(StripeProcessor::new(StripeConfig::new(url, key))?))
}

/// The rate cards: the file [`RATE_CARDS`] names, or the standard card.
pub fn rate_cards() -> Result<RateCards, crate::Error> {
    match optional(RATE_CARDS) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Invalid {
                name: RATE_CARDS,
                reason: format!("cannot read {path}: {error}"),
            })?;
            Ok(RateCards::from_json(&text)?)
        }
        None => Ok(RateCards::standard_only()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_variable_is_named_in_the_error() {
        const UNSET: &str = "RINGLEDGER_TEST_SURELY_UNSET";
        assert_eq!(required(UNSET), Err(ConfigError::Missing(UNSET)));
        assert_eq!(
            ConfigError::Missing(TABLE).to_string(),
            "RINGLEDGER_TABLE must be set (see infra/template.yaml)"
        );
        std::env::set_var("RINGLEDGER_TEST_EMPTY", " ");
        assert_eq!(
            required("RINGLEDGER_TEST_EMPTY"),
            Err(ConfigError::Missing("RINGLEDGER_TEST_EMPTY"))
        );
        std::env::set_var("RINGLEDGER_TEST_SET", "x");
        assert_eq!(required("RINGLEDGER_TEST_SET").as_deref(), Ok("x"));
    }

    #[test]
    fn every_variable_is_a_ringledger_variable_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for name in ALL {
            assert!(name.starts_with("RINGLEDGER_"), "{name}");
            assert!(seen.insert(name), "{name} listed twice");
        }
    }
}
