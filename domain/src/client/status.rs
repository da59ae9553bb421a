//! Where a client and an email stand, as closed sets of values.
//!
//! Read models store these as text and the API shows them as enums; both go through the types
//! here, so a value this build does not know is an error wherever it is read, never a silent
//! default.

use serde::{Deserialize, Serialize};

use super::Lifecycle;

/// A value read from storage that names no known status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status {value:?}")]
pub struct UnknownStatus {
    /// Which status (`client`, `email`).
    pub kind: &'static str,
    /// What was read.
    pub value: String,
}

/// Declares a status enum with its one spelling in storage and on the wire.
macro_rules! status {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The spelling stored in the read models (and checked by their constraints).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(UnknownStatus { kind: $kind, value: other.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownStatus;

            fn try_from(s: String) -> Result<Self, UnknownStatus> {
                s.parse()
            }
        }

        impl From<$name> for &'static str {
            fn from(status: $name) -> Self {
                status.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status! {
    /// A created client's status.
    ClientStatus, "client" {
        /// Receiving emails.
        Active => "ACTIVE",
        /// Opted out of emails.
        Unsubscribed => "UNSUBSCRIBED",
        /// Deleted: nothing more happens to them.
        Deleted => "DELETED",
        /// Personal data erased for good: nothing more happens to them.
        Erased => "ERASED",
    }
}

status! {
    /// Where a written email stands.
    EmailStatus, "email" {
        /// Written and not sent yet (queued for the sender, or written before delivery existed).
        Generated => "GENERATED",
        /// Ready for delivery, and no delivery is configured (the seed's dry run).
        WouldSend => "WOULD_SEND",
        /// Handed to the mail server.
        Sent => "SENT",
        /// Waits for an operator (`review` delivery).
        PendingReview => "PENDING_REVIEW",
        /// An operator said no; never sent.
        Rejected => "REJECTED",
        /// The client left the audience before it was sent.
        Cancelled => "CANCELLED",
        /// The mail server refused it for good.
        Failed => "FAILED",
        /// The provider reported a hard bounce.
        Bounced => "BOUNCED",
        /// The provider reported a spam complaint.
        Complained => "COMPLAINED",
    }
}

impl ClientStatus {
    /// The status of a client in `lifecycle` (`None` before creation).
    pub fn of(lifecycle: Lifecycle) -> Option<Self> {
        match lifecycle {
            Lifecycle::New => None,
            Lifecycle::Active => Some(Self::Active),
            Lifecycle::Unsubscribed => Some(Self::Unsubscribed),
            Lifecycle::Deleted => Some(Self::Deleted),
            Lifecycle::Erased => Some(Self::Erased),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_its_own_spelling_and_nothing_else_reads() {
        for s in ClientStatus::ALL {
            assert_eq!(s.as_str().parse::<ClientStatus>(), Ok(*s));
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(serde_json::from_str::<ClientStatus>(&json).unwrap(), *s);
        }
        for s in EmailStatus::ALL {
            assert_eq!(s.as_str().parse::<EmailStatus>(), Ok(*s));
        }
        assert_eq!(
            "active".parse::<ClientStatus>(),
            Err(UnknownStatus {
                kind: "client",
                value: "active".into()
            })
        );
        assert!(serde_json::from_str::<EmailStatus>("\"LOST\"").is_err());
    }
}
