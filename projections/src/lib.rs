//! Everything that touches the event log.
//!
//! The domain crate decides; this crate persists and reads. It may depend on `domain`,
//! cqrs-es/postgres-es, sqlx and tokio; it knows nothing of HTTP or GraphQL.
//!
//! # Layout
//! - [`db`]: pools with safe session settings, database creation, the embedded migrations.
//! - [`commands`]: the command path (load, decide, append with metadata, retry on conflict).
//! - [`upcast`]: the one place older event versions become current ones.
//! - [`position`]: a place in the global log.
//! - [`clock`]: time as an input.

pub mod clock;
pub mod commands;
pub mod db;
pub mod position;
pub mod upcast;
