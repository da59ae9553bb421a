//! An email's life after it is written: review, sending, the mail server's and the provider's
//! verdicts, and the client's address being suppressed.
//!
//! Every step is an event on the client's stream, so the audit trail shows who let which email
//! go, when it left and what the server said. The rules live here; the aggregate folds the
//! events into [`EmailDelivery`] per email and the client's suppressed address.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::status::EmailStatus;

/// How a written email leaves (`EMAIL_DELIVERY`), recorded on the email when it is written, so
/// a later change of the setting never moves an email already written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// No delivery: the email is ready and stays `WOULD_SEND` (the seed's dry run).
    Off,
    /// Waits for an operator's approval.
    Review,
    /// Sent as soon as it is written.
    Auto,
}

impl DeliveryMode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Review => "review",
            Self::Auto => "auto",
        }
    }
}

impl std::str::FromStr for DeliveryMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "review" => Ok(Self::Review),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown delivery mode {other:?}: expected off, review or auto"
            )),
        }
    }
}

impl std::fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one email stands, as the client's stream tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailDelivery {
    /// Its status.
    pub status: EmailStatus,
    /// Released for sending (written in `auto`, or approved) and not yet settled.
    pub queued: bool,
}

impl EmailDelivery {
    /// An email just written in `mode` (`None`: written before delivery existed; it is never
    /// sent by itself).
    pub fn written(mode: Option<DeliveryMode>) -> Self {
        let (status, queued) = match mode {
            None => (EmailStatus::Generated, false),
            Some(DeliveryMode::Off) => (EmailStatus::WouldSend, false),
            Some(DeliveryMode::Review) => (EmailStatus::PendingReview, false),
            Some(DeliveryMode::Auto) => (EmailStatus::Generated, true),
        };
        Self { status, queued }
    }
}

/// What happens to a written email or to the client's address.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryAction {
    /// An operator lets an email waiting for review go.
    Approve {
        /// The email.
        email_id: Uuid,
        /// Who.
        actor: String,
    },
    /// An operator stops an email waiting for review for good.
    Reject {
        /// The email.
        email_id: Uuid,
        /// Who.
        actor: String,
        /// Why (required).
        reason: String,
    },
    /// The sender found the client no longer in the audience.
    Cancel {
        /// The email.
        email_id: Uuid,
        /// Why.
        reason: String,
    },
    /// The mail server accepted the message.
    Sent {
        /// The email.
        email_id: Uuid,
        /// Its Message-ID.
        message_id: String,
    },
    /// The mail server refused the message for good.
    Failed {
        /// The email.
        email_id: Uuid,
        /// The server's reply (or the last transient one, when retries ran out).
        reply: String,
        /// The refusal was of the recipient (5xx to RCPT): the address is undeliverable.
        recipient_refused: bool,
    },
    /// The provider reported a bounce of a sent email.
    Bounced {
        /// The email.
        email_id: Uuid,
        /// A hard bounce: the address is undeliverable.
        permanent: bool,
    },
    /// The provider reported that the client marked the email as spam: they are unsubscribed.
    Complained {
        /// The email.
        email_id: Uuid,
    },
    /// The client unsubscribed through an email's link (RFC 8058 one-click).
    Unsubscribe {
        /// The email whose link it was.
        email_id: Option<Uuid>,
        /// `one-click`, ...
        source: String,
    },
    /// The client's current address must not be used (`suppressAddress`).
    Suppress {
        /// Why.
        reason: String,
        /// `manual`, `smtp`, `bounce`.
        source: String,
    },
}

/// An operator let an email go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailApproved {
    /// The email.
    pub email_id: Uuid,
    /// Who.
    pub reviewed_by: String,
    /// When.
    pub approved_at: DateTime<Utc>,
}

/// An operator stopped an email for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailRejected {
    /// The email.
    pub email_id: Uuid,
    /// Who.
    pub reviewed_by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub rejected_at: DateTime<Utc>,
}

/// The client left the audience before the email was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailCancelled {
    /// The email.
    pub email_id: Uuid,
    /// Why.
    pub reason: String,
    /// When.
    pub cancelled_at: DateTime<Utc>,
}

/// The mail server accepted the email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailSent {
    /// The email.
    pub email_id: Uuid,
    /// The Message-ID it carried.
    pub message_id: String,
    /// When.
    pub sent_at: DateTime<Utc>,
}

/// The mail server refused the email for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailFailed {
    /// The email.
    pub email_id: Uuid,
    /// The server's reply.
    pub reply: String,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// The provider reported a bounce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailBounced {
    /// The email.
    pub email_id: Uuid,
    /// A hard bounce.
    pub permanent: bool,
    /// When it was reported.
    pub reported_at: DateTime<Utc>,
}

/// The provider reported a spam complaint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailComplained {
    /// The email.
    pub email_id: Uuid,
    /// When it was reported.
    pub reported_at: DateTime<Utc>,
}

/// The client's address must not be written to until it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressSuppressed {
    /// The address suppressed (the client's address then).
    pub address: String,
    /// Why.
    pub reason: String,
    /// `manual`, `smtp` (refused by the server), `bounce` (reported by the provider).
    pub source: String,
    /// When.
    pub suppressed_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_their_setting_and_a_new_email_starts_where_its_mode_says() {
        assert_eq!("Review".parse::<DeliveryMode>(), Ok(DeliveryMode::Review));
        assert!("send".parse::<DeliveryMode>().unwrap_err().contains("off"));
        assert_eq!(
            EmailDelivery::written(Some(DeliveryMode::Off)).status,
            EmailStatus::WouldSend
        );
        assert!(EmailDelivery::written(Some(DeliveryMode::Auto)).queued);
        assert!(!EmailDelivery::written(None).queued);
    }
}
