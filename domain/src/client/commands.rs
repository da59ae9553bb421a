//! What callers ask of a client. Every command carries already-parsed values and its own
//! `now`: the domain never reads a clock.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::delivery::{DeliveryAction, DeliveryMode};
use super::events::{EmailTrigger, Generator, TokenUsage};
use crate::values::{Categories, EmailAddress, ExternalId, Money, OrderId, Score, UserName};

/// Order history imported from an older system.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImportedHistory {
    /// Orders placed there.
    pub order_count: u32,
    /// Their mean value.
    pub average_order_value: Money,
    /// The most recent one.
    pub last_order_at: Option<DateTime<Utc>>,
}

/// Create a client.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateUser {
    /// The new client's id; the same as the aggregate id it is sent to.
    pub id: Uuid,
    /// Display name.
    pub name: UserName,
    /// Email address.
    pub email: EmailAddress,
    /// Preferred categories.
    pub preferred_categories: Categories,
    /// Imported order summary.
    pub history: ImportedHistory,
    /// The client's id in the retailer's systems (its uniqueness is kept by the caller's
    /// reservation; the stream records it).
    pub external_id: Option<ExternalId>,
    /// Since when the client has been a client there, if before today (an import).
    pub client_since: Option<DateTime<Utc>>,
    /// Brought over from an older system rather than signing up now: the first score is
    /// recorded with cause `imported` and does not trigger an email by itself.
    pub imported: bool,
}

/// Change any of a client's fields; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateUser {
    /// New name.
    pub name: Option<UserName>,
    /// New email.
    pub email: Option<EmailAddress>,
    /// New categories.
    pub preferred_categories: Option<Categories>,
    /// Corrected date of the last order.
    pub last_order_at: Option<DateTime<Utc>>,
    /// Corrected order count.
    pub order_count: Option<u32>,
    /// Corrected average order value.
    pub average_order_value: Option<Money>,
    /// The client's id in the retailer's systems, for a client who has none yet.
    pub external_id: Option<ExternalId>,
}

/// Record an order; the same `order_id` twice records it once.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    /// Idempotency key.
    pub order_id: OrderId,
    /// Amount.
    pub amount: Money,
    /// When the client placed it (defaults to `now` at the edge).
    pub placed_at: DateTime<Utc>,
    /// Categories it touched.
    pub categories: Categories,
}

/// Record many orders of one client at once (an import): the same orders and the same final
/// state as placing them one by one, in one append.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrders {
    /// The orders, in the order given; ids already recorded (or repeated) are skipped.
    pub orders: Vec<PlaceOrder>,
    /// Old history rather than live activity: the new score is recorded with cause
    /// `imported`, which the process manager does not act on (a lapse long past is not a
    /// reason to email today).
    pub history: bool,
}

/// Cancel (or refund) a recorded order: it stops counting toward the order summary and score.
#[derive(Debug, Clone, PartialEq)]
pub struct CancelOrder {
    /// The order to cancel.
    pub order_id: OrderId,
    /// Why (shown in the history).
    pub reason: Option<String>,
}

/// The seed's manual override of the score.
#[derive(Debug, Clone, PartialEq)]
pub struct SetEngagementScore {
    /// The score to set.
    pub score: Score,
    /// Why (shown in the history).
    pub reason: Option<String>,
    /// Who did it.
    pub actor: String,
}

/// The content of an email, as the writer produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailContent {
    /// Subject line.
    pub subject: String,
    /// Preview text.
    pub preheader: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body (already rendered and escaped by our template).
    pub html: String,
    /// Who wrote it.
    pub generator: Generator,
    /// Provider usage, when reported.
    pub usage: Option<TokenUsage>,
}

/// Record a generated email; the same `email_id` twice records it once.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordEmail {
    /// Idempotency key (derived from the email job).
    pub email_id: Uuid,
    /// What was written.
    pub content: EmailContent,
    /// The event that caused it.
    pub trigger: Option<EmailTrigger>,
    /// How it is to leave (the `EMAIL_DELIVERY` in force when it was written).
    pub delivery: DeliveryMode,
}

/// What to do to a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAction {
    /// Create the client.
    CreateUser(CreateUser),
    /// Change profile fields.
    UpdateUser(UpdateUser),
    /// Record an order.
    PlaceOrder(PlaceOrder),
    /// Record many orders at once.
    PlaceOrders(PlaceOrders),
    /// Cancel a recorded order.
    CancelOrder(CancelOrder),
    /// Set the score by hand.
    SetEngagementScore(SetEngagementScore),
    /// Recompute the score as of `now` (time has passed, or the policy changed).
    Rescore,
    /// Record a generated email.
    RecordEmail(RecordEmail),
    /// A step in a written email's delivery, or the client's address.
    Deliver(DeliveryAction),
    /// Record the group of a client created before the holdout existed (no-op once it has one).
    AssignGroup(super::holdout::EngagementGroup),
    /// Opt the client out of emails.
    Unsubscribe,
    /// Delete the client.
    DeleteUser,
    /// Erase the client's personal data for good, with the operator's reason.
    EraseUser {
        /// Why (an operator's reference; no personal data).
        reason: String,
    },
}

/// A command: an action and the moment it is decided at.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCommand {
    /// What to do.
    pub action: ClientAction,
    /// The time the command is decided at (an input; never read from a clock here).
    pub now: DateTime<Utc>,
}

impl ClientCommand {
    /// A command deciding `action` at `now`.
    pub fn new(action: ClientAction, now: DateTime<Utc>) -> Self {
        Self { action, now }
    }

    /// The action's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self.action {
            ClientAction::CreateUser(_) => "create_user",
            ClientAction::UpdateUser(_) => "update_user",
            ClientAction::PlaceOrder(_) => "place_order",
            ClientAction::PlaceOrders(_) => "place_orders",
            ClientAction::CancelOrder(_) => "cancel_order",
            ClientAction::SetEngagementScore(_) => "set_engagement_score",
            ClientAction::Rescore => "rescore",
            ClientAction::RecordEmail(_) => "record_email",
            ClientAction::Deliver(ref d) => match d {
                DeliveryAction::Approve { .. } => "approve_email",
                DeliveryAction::Reject { .. } => "reject_email",
                DeliveryAction::Cancel { .. } => "cancel_email",
                DeliveryAction::Sent { .. } => "record_email_sent",
                DeliveryAction::Failed { .. } => "record_email_failed",
                DeliveryAction::Bounced { .. } => "record_email_bounced",
                DeliveryAction::Complained { .. } => "record_email_complaint",
                DeliveryAction::Unsubscribe { .. } => "one_click_unsubscribe",
                DeliveryAction::Suppress { .. } => "suppress_address",
            },
            ClientAction::AssignGroup(_) => "assign_group",
            ClientAction::Unsubscribe => "unsubscribe",
            ClientAction::DeleteUser => "delete_user",
            ClientAction::EraseUser { .. } => "erase_user",
        }
    }
}
