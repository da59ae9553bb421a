//! What happened to a client: facts in the past tense, versioned, carrying the derived values
//! a reader needs (new order count, new average, new score with its reasons), so no reader
//! ever recomputes a business rule.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::delivery::{
    AddressSuppressed, DeliveryMode, EmailApproved, EmailBounced, EmailCancelled, EmailComplained,
    EmailFailed, EmailRejected, EmailSent,
};
use super::holdout::EngagementGroup;
use crate::scoring::{Band, ScoreFactor};

/// The schema version of every event type written by this build.
pub const EVENT_VERSION: &str = "1.0";

/// Every event of the `client` aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // events are built once and moved; boxing buys nothing
pub enum ClientEvent {
    /// The client was created.
    UserCreated(UserCreated),
    /// Profile or imported order summary changed.
    UserUpdated(UserUpdated),
    /// An order was recorded.
    OrderPlaced(OrderPlaced),
    /// A recorded order was cancelled or refunded.
    OrderCancelled(OrderCancelled),
    /// The engagement score or band changed.
    UserScored(UserScored),
    /// A re-engagement email was written for the client.
    EmailGenerated(EmailGenerated),
    /// An operator let an email waiting for review go.
    EmailApproved(EmailApproved),
    /// An operator stopped an email for good.
    EmailRejected(EmailRejected),
    /// The client left the audience before the email was sent.
    EmailCancelled(EmailCancelled),
    /// The mail server accepted an email.
    EmailSent(EmailSent),
    /// The mail server refused an email for good.
    EmailFailed(EmailFailed),
    /// The provider reported a bounce.
    EmailBounced(EmailBounced),
    /// The provider reported a spam complaint.
    EmailComplained(EmailComplained),
    /// The client's address must not be written to until it changes.
    AddressSuppressed(AddressSuppressed),
    /// A client created before the holdout existed was given its group.
    GroupAssigned(GroupAssigned),
    /// The client opted out of emails.
    UserUnsubscribed(UserUnsubscribed),
    /// The client was deleted; nothing more can happen to them.
    UserDeleted(UserDeleted),
    /// The client's personal data was erased for good (GDPR Article 17); nothing more can
    /// happen to them.
    UserErased(UserErased),
}

impl ClientEvent {
    /// When the event happened (the `now` of the command that caused it).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::UserCreated(e) => e.created_at,
            Self::UserUpdated(e) => e.updated_at,
            Self::OrderPlaced(e) => e.recorded_at,
            Self::OrderCancelled(e) => e.cancelled_at,
            Self::UserScored(e) => e.as_of,
            Self::EmailGenerated(e) => e.generated_at,
            Self::EmailApproved(e) => e.approved_at,
            Self::EmailRejected(e) => e.rejected_at,
            Self::EmailCancelled(e) => e.cancelled_at,
            Self::EmailSent(e) => e.sent_at,
            Self::EmailFailed(e) => e.failed_at,
            Self::EmailBounced(e) => e.reported_at,
            Self::EmailComplained(e) => e.reported_at,
            Self::AddressSuppressed(e) => e.suppressed_at,
            Self::GroupAssigned(e) => e.assigned_at,
            Self::UserUnsubscribed(e) => e.unsubscribed_at,
            Self::UserDeleted(e) => e.deleted_at,
            Self::UserErased(e) => e.erased_at,
        }
    }
}

impl DomainEvent for ClientEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserCreated(_) => "UserCreated",
            Self::UserUpdated(_) => "UserUpdated",
            Self::OrderPlaced(_) => "OrderPlaced",
            Self::OrderCancelled(_) => "OrderCancelled",
            Self::UserScored(_) => "UserScored",
            Self::EmailGenerated(_) => "EmailGenerated",
            Self::EmailApproved(_) => "EmailApproved",
            Self::EmailRejected(_) => "EmailRejected",
            Self::EmailCancelled(_) => "EmailCancelled",
            Self::EmailSent(_) => "EmailSent",
            Self::EmailFailed(_) => "EmailFailed",
            Self::EmailBounced(_) => "EmailBounced",
            Self::EmailComplained(_) => "EmailComplained",
            Self::AddressSuppressed(_) => "AddressSuppressed",
            Self::GroupAssigned(_) => "GroupAssigned",
            Self::UserUnsubscribed(_) => "UserUnsubscribed",
            Self::UserDeleted(_) => "UserDeleted",
            Self::UserErased(_) => "UserErased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}

/// The order summary every order-related event carries, as it stands after the event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderSummary {
    /// Orders so far.
    pub order_count: u32,
    /// Sum of all orders, in cents.
    pub total_spent_cents: i64,
    /// Mean order value, in cents, rounded half away from zero.
    pub average_order_value_cents: i64,
    /// The most recent order.
    pub last_order_at: Option<DateTime<Utc>>,
    /// The first order whose date we know.
    pub first_order_at: Option<DateTime<Utc>>,
}

/// A client was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    /// The client's id (also the aggregate id).
    pub user_id: Uuid,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Preferred categories.
    pub preferred_categories: Vec<String>,
    /// Order summary, possibly imported from an older system.
    pub orders: OrderSummary,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The client's id in the retailer's systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Since when the client has been a client there (an import), if before `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_since: Option<DateTime<Utc>>,
    /// Treatment or holdout, decided at creation (absent: created before the holdout existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<EngagementGroup>,
}

/// A client created before the holdout existed was given its group (always `TREATMENT`: they
/// were all eligible for emails), by the one-off backfill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupAssigned {
    /// The group.
    pub group: EngagementGroup,
    /// When.
    pub assigned_at: DateTime<Utc>,
}

impl UserCreated {
    /// Since when the person has been a client: the retailer's date for an import, or the
    /// moment we created them.
    pub fn client_since(&self) -> DateTime<Utc> {
        self.client_since.unwrap_or(self.created_at)
    }
}

/// A client's profile or imported order summary was changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdated {
    /// Which input fields changed (`name`, `email`, `preferredCategories`, `orderCount`, ...).
    pub changed: Vec<String>,
    /// Name after the change.
    pub name: String,
    /// Email after the change.
    pub email: String,
    /// Categories after the change.
    pub preferred_categories: Vec<String>,
    /// Order summary after the change.
    pub orders: OrderSummary,
    /// When.
    pub updated_at: DateTime<Utc>,
    /// The client's external id after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// An order was recorded (once per order id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    /// The caller's idempotency key.
    pub order_id: String,
    /// Order amount in cents.
    pub amount_cents: i64,
    /// When the client placed it.
    pub placed_at: DateTime<Utc>,
    /// Categories the order touched.
    pub categories: Vec<String>,
    /// Order summary after this order.
    pub orders: OrderSummary,
    /// When we recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// A recorded order was cancelled or refunded: it no longer counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    /// The order's id.
    pub order_id: String,
    /// Its amount in cents (no longer counted).
    pub amount_cents: i64,
    /// Why, as the caller said.
    pub reason: Option<String>,
    /// Order summary without this order.
    pub orders: OrderSummary,
    /// When we recorded the cancellation.
    pub cancelled_at: DateTime<Utc>,
}

/// Why a score was (re)computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreCause {
    /// Something the client did or we did (order, profile change, email).
    Activity,
    /// Only time passed.
    TimePassed,
    /// An operator set it by hand.
    Manual,
    /// Order history was imported: a past lapse, not a reason to act today.
    Imported,
}

/// The engagement score changed; carries the whole assessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserScored {
    /// New score, 0..=100.
    pub score: u8,
    /// Score before, if any.
    pub previous_score: Option<u8>,
    /// New band.
    pub band: Band,
    /// Band before, if any.
    pub previous_band: Option<Band>,
    /// Scores below this are at risk (the policy's threshold).
    pub threshold: u8,
    /// The policy that produced it (`seed-v1`, `manual`, ...).
    pub policy: String,
    /// Why, factor by factor.
    pub factors: Vec<ScoreFactor>,
    /// The moment the score describes.
    pub as_of: DateTime<Utc>,
    /// What caused the rescore.
    pub cause: ScoreCause,
    /// For a manual score: the operator's reason.
    pub reason: Option<String>,
    /// For a manual score: who set it.
    pub actor: Option<String>,
    /// When time passing alone would next change this score, if ever.
    pub next_change_at: Option<DateTime<Utc>>,
}

impl UserScored {
    /// Whether the client is at risk after this score: the band decides, for the `atRisk`
    /// flag and the process manager alike.
    pub fn is_at_risk(&self) -> bool {
        self.band.is_at_risk()
    }
}

/// Who wrote an email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generator {
    /// `llm` or `template`.
    pub kind: String,
    /// Model or template version (`openai/gpt-4o-mini`, `v1`).
    pub model: String,
}

impl Generator {
    /// The label shown to users: `llm:openai/gpt-4o-mini`, `template:v1`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind, self.model)
    }
}

/// What the LLM provider reported about a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: Option<u32>,
    /// Completion tokens.
    pub completion_tokens: Option<u32>,
    /// Cost in US dollars, as the provider reported it (text, to keep it exact).
    pub cost: Option<String>,
}

/// The event that made the process manager write an email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailTrigger {
    /// Sequence of the triggering event within this client's stream.
    pub sequence: u64,
    /// Its position in the global log.
    pub global_position: i64,
}

/// A re-engagement email was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailGenerated {
    /// The email's id (idempotency key).
    pub email_id: Uuid,
    /// Subject line.
    pub subject: String,
    /// Preview text shown after the subject by mail clients.
    pub preheader: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body, rendered by our own template with escaping.
    pub html: String,
    /// Who wrote it.
    pub generator: Generator,
    /// Provider usage, when reported.
    pub usage: Option<TokenUsage>,
    /// The client's score when it was written.
    pub engagement_score_at_time: u8,
    /// The event that caused it, for emails written by the process manager.
    pub trigger: Option<EmailTrigger>,
    /// When.
    pub generated_at: DateTime<Utc>,
    /// How it leaves (`None`: written before delivery existed; never sent by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryMode>,
}

/// The client opted out of emails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserUnsubscribed {
    /// When.
    pub unsubscribed_at: DateTime<Utc>,
    /// How: `one-click` (an email's link), `complaint` (a spam report); absent when through
    /// the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The email whose link or report it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_id: Option<Uuid>,
}

/// The client was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDeleted {
    /// When.
    pub deleted_at: DateTime<Utc>,
}

/// The client's personal data was erased (their key deleted, the views scrubbed). Carries no
/// personal data itself: who asked is the event's actor, why is an operator's reference (a
/// ticket, "Article 17 request"), never the person's words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserErased {
    /// Why, as the operator recorded it.
    pub reason: String,
    /// When.
    pub erased_at: DateTime<Utc>,
}
