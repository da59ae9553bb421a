//! The business of the client engagement engine, as pure logic.
//!
//! This crate knows what a client is, what may happen to one, and how engaged they are. It
//! does no IO: no database, no HTTP, no clock, no randomness. Time comes in with each command,
//! and the scoring policy and email rules come in as the aggregate's services. It depends on
//! cqrs-es (for the `Aggregate` trait), serde, uuid, chrono and thiserror only.
//!
//! # Layout
//! - [`client`]: the `Client` aggregate, its commands, events, errors and statuses.
//! - [`scoring`]: scoring policies (`cadence-v2`, the default, and `seed-v1`), the facts they
//!   read, the verdict they give (a score, a band, the reasons), and the backtest that
//!   measures them against real purchase histories.
//! - [`uplift`]: the uplift report's statistics (Wilson and Newcombe intervals).
//! - [`values`]: value types parsed at the edge (`EmailAddress`, `UserName`, `Money`, `Score`, ...).

pub mod client;
pub mod scoring;
pub mod uplift;
pub mod values;
