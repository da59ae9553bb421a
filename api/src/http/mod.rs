//! HTTP routes; each module exports its own `router()`.

pub mod dashboard;
pub mod graphql;
pub mod health;
pub mod playground;
pub mod rate_limit;
pub mod response_cache;
