//! The read models: tables folded from the log by checkpointed consumers, and rebuilt from it.
//!
//! # Layout
//! - [`users`]: one row per client with every `User` field of the API, and its queries.
//! - [`emails`]: one row per written email, and its queries.
//! - [`trend`]: per day, clients at risk, average score, emails and reactivations.
//! - [`uplift`]: the triggers of the uplift report and the orders that followed them.
//! - [`rebuild`]: rebuilding a view into a fresh table and swapping it in.
//! - [`columns`]: reading only the columns a query needs.

pub mod columns;
pub mod emails;
pub mod rebuild;
pub mod trend;
pub mod uplift;
pub mod users;
