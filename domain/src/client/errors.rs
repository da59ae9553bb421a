//! Why a command was refused.

use chrono::{DateTime, Utc};

use crate::values::ValidationError;

/// A command the client's state does not allow. Every variant is an expected outcome that the
/// caller can act on; none of them means the system is broken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// An input value is not acceptable.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// No client with this id was ever created.
    #[error("user not found")]
    NotFound,
    /// A client with this id exists and has different data.
    #[error("a user with this id already exists with different data")]
    AlreadyExists,
    /// The client was deleted; nothing more can happen to them.
    #[error("user has been deleted")]
    Deleted,
    /// The client opted out of emails.
    #[error("user has unsubscribed from emails")]
    Unsubscribed,
    /// An email the process manager asked for, for a client who is no longer in the at-risk
    /// band (they ordered, or someone set their score, since the trigger).
    #[error("user is no longer at risk")]
    NotAtRisk,
    /// An email was written too recently.
    #[error(
        "an email was written within the cooldown; the next may be written at {next_allowed_at}"
    )]
    EmailCooldown {
        /// When the cooldown ends.
        next_allowed_at: DateTime<Utc>,
    },
}
