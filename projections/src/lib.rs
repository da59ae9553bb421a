//! Everything that touches the event log.
//!
//! The domain crate decides; this crate persists and reads. It may depend on `domain`,
//! cqrs-es/postgres-es, sqlx and tokio; it knows nothing of HTTP or GraphQL.
//!
//! # How data flows
//! A caller's command goes through [`commands`]: the client is loaded, the domain decides, and
//! the events are appended to the log with their metadata. The [`log`] is read gap-free by
//! checkpointed consumers ([`log::consumer`]): the [`views`] fold events into the `users` and
//! `emails` tables, and the [`engagement`] process manager turns an at-risk score into an
//! email job, which its workers turn into an email through one more command. The
//! [`scheduler`] issues rescore commands as time passes; [`runtime`] starts the consumers and
//! workers in a service.
//!
//! # Layout
//! - [`commands`]: the command path (load, decide, append with metadata, retry on conflict).
//! - [`log`]: the gap-free reader of the whole log and of one client's stream; positions,
//!   checkpointed consumers, the live tail, upcasting.
//! - [`views`]: the `users` and `emails` read models, every query of their tables, rebuilds.
//! - [`engagement`]: the process manager, the `email_jobs` table, the workers and the writers.
//! - [`scheduler`]: rescoring users as time passes, and everyone after a policy switch.
//! - [`runtime`]: starting the consumers and workers in a service.
//! - [`metrics`]: what the service measures (names, known labels, recording).
//! - [`observe`]: the gauges `/metrics` reads from the database when scraped.
//! - [`trace`]: traces that cross the log (a `traceparent` kept with events and jobs).
//! - [`vault`]: personal data sealed with a key per client; erasure, the ledger, key rotation.
//! - [`db`]: pools with safe session settings, database creation, the embedded migrations.
//! - [`clock`]: time as an input.

pub mod clock;
pub mod commands;
pub mod db;
pub mod engagement;
pub mod ingest;
pub mod log;
pub mod metrics;
pub mod observe;
pub mod runtime;
pub mod scheduler;
pub mod trace;
pub mod vault;
pub mod views;
