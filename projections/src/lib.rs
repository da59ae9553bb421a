//! Everything that touches the event log.
//!
//! The domain crate decides; this crate persists and reads. It may depend on `domain`,
//! cqrs-es/postgres-es, sqlx and tokio; it knows nothing of HTTP or GraphQL.
//!
//! # Layout
//! - [`db`]: pools with safe session settings, database creation, the embedded migrations.
//! - [`commands`]: the command path (load, decide, append with metadata, retry on conflict).
//! - [`log`]: the gap-free reader of the whole log, in `(transaction_id, global_position)` order.
//! - [`consumer`]: checkpointed consumers, their wake-up signal, read-your-writes, lag.
//! - [`users`], [`emails`]: the read models.
//! - [`process_manager`]: at-risk scores become email jobs, once per triggering event.
//! - [`email_workers`]: jobs become emails: claim, write, record, retry; breaker and rate limit.
//! - [`writer`]: the LLM and template email writers, and the escaping HTML template.
//! - [`rebuild`]: rebuilding a read model into a fresh table and swapping it in.
//! - [`runtime`]: starting the consumers in a service.
//! - [`tail`]: the live tail of the log that feeds subscriptions.
//! - [`scheduler`]: rescoring users as time passes, and everyone after a policy switch.
//! - [`upcast`]: the one place older event versions become current ones.
//! - [`position`], [`clock`]: a place in the log; time as an input.

pub mod clock;
pub mod commands;
pub mod db;
pub mod engagement;
pub mod log;
pub mod runtime;
pub mod scheduler;
pub mod views;
