//! From "this client is at risk" to a written email.
//!
//! # Layout
//! - [`process_manager`]: a consumer of the log that turns an at-risk `UserScored` into an
//!   email job, once per triggering event.
//! - [`jobs`]: the `email_jobs` table: its statuses and every statement on it.
//! - [`workers`]: jobs become emails: claim, judge again, write, record through the aggregate,
//!   retry; with a circuit breaker toward the writer.
//! - [`delivery`]: written emails leave over SMTP: send jobs, the global rate, the one-click
//!   unsubscribe tokens.
//! - [`writer`]: the LLM and template email writers, the escaping HTML template, and the LLM's
//!   request limit.

pub mod delivery;
pub mod jobs;
pub mod process_manager;
pub mod workers;
pub mod writer;
