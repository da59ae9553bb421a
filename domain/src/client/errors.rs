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
    /// The client's personal data was erased; nothing more can happen to them.
    #[error("user has been erased")]
    Erased,
    /// The client opted out of emails.
    #[error("user has unsubscribed from emails")]
    Unsubscribed,
    /// An email the process manager asked for, for a client who is no longer in the at-risk
    /// band (they ordered, or someone set their score, since the trigger).
    #[error("user is no longer at risk")]
    NotAtRisk,
    /// The client's address is suppressed (undeliverable, or by hand) until it changes.
    #[error("the user's email address is suppressed")]
    AddressSuppressed,
    /// No email with this id was written to this client.
    #[error("this user has no email with this id")]
    EmailNotFound,
    /// The email is not where the action needs it to be.
    #[error("the email is {status}; it cannot be {action}")]
    EmailNotAllowed {
        /// Where it stands.
        status: super::status::EmailStatus,
        /// What was asked (`approved`, `rejected`).
        action: &'static str,
    },
    /// An email was written too recently.
    #[error(
        "an email was written within the cooldown; the next may be written at {next_allowed_at}"
    )]
    EmailCooldown {
        /// When the cooldown ends.
        next_allowed_at: DateTime<Utc>,
    },
}
