//! HTTP routes; each module exports its own `router()`.

pub mod health;
