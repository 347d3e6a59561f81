//! Card processor adapters: Stripe's HTTP API and an in-memory simulated processor (kept in a
//! file for local mode). The port they implement, and its types, is `card_processor`,
//! re-exported here so wiring code can name everything from one place.

pub use card_processor::*;

mod simulated;
mod stripe;
pub mod stripe_events;

pub use simulated::{
    ChargeFault, RefundFault, SimulatedProcessor, ACH_SETTLEMENT_MINUTES, SIMULATED_BANK,
    SIMULATED_DISPUTE_FEE_CENTS, SIMULATED_EXP_MONTH, SIMULATED_EXP_YEAR, SIMULATED_MICRODEPOSITS,
};
pub use stripe::{
    SecretKey, StripeConfig, StripeConfigError, StripeProcessor, DEFAULT_STRIPE_BASE_URL,
    STRIPE_API_VERSION,
};
