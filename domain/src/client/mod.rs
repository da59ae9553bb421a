//! The `Client` aggregate (aggregate type `client`): one retail client's whole story.
//!
//! # Layout
//! - [`commands`]: what callers ask (`CreateUser`, `PlaceOrder`, `RecordEmail`, ...).
//! - [`events`]: what happened (`UserCreated`, `OrderPlaced`, `UserScored`, ...).
//! - [`aggregate`]: the rules that turn one into the other, and the state they fold into.
//! - [`delivery`]: an email's life after it is written (review, sending, bounces) and the
//!   client's suppressed address.
//! - [`holdout`]: which clients are held out of emails, for the uplift comparison.
//! - [`errors`]: why a command was refused.
//! - [`status`]: where a client and an email stand (the closed sets the read models store).

pub mod aggregate;
pub mod commands;
pub mod delivery;
pub mod errors;
pub mod events;
pub mod holdout;
pub mod status;

#[cfg(test)]
mod tests;

pub use aggregate::{
    Client, ClientServices, Lifecycle, ScoreState, FUTURE_TOLERANCE_MINUTES, MANUAL_POLICY,
};
pub use commands::*;
pub use delivery::*;
pub use errors::ClientError;
pub use events::*;
pub use holdout::{EngagementGroup, Holdout, MAX_HOLDOUT_PERCENT};
pub use status::{ClientStatus, EmailStatus, UnknownStatus};
