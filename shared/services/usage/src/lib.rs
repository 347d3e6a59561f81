//! Usage debits: telephony events become money here.
//!
//! - [`events`]: the versioned event schema, parsed strictly;
//! - [`source`]: events rated into postings inside the ledger's atomic write;
//! - [`worker`]: the queue batch worker (grouping, failures, panics contained; the outbox's
//!   fast path through `messaging::outbox`);
//! - [`authorize`]: may this account place this call / send this SMS / buy this number;
//! - [`holds`]: the reservations an authorization places, extends and releases;

pub mod authorize;
pub mod events;
pub mod holds;
pub mod source;
pub mod worker;
