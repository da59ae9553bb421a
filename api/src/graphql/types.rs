//! GraphQL output types over the read models and the log, named as `../shared/API.md` says.
//!
//! Every object here resolves its fields one after another (`serial`): async-graphql's default
//! polls an object's fields as a set of concurrent futures, which for a page of 50 clients with
//! their emails is some 200 small sets whose bookkeeping cost more CPU than the fields
//! themselves (a quarter of the uncached page's throughput). Lists still resolve their items
//! concurrently, so batched loads (a page's emails, its histories) still gather every item's
//! key into one query; what is given up is only overlap between two loaded fields of one
//! object (a client's `emails` and `history` are two rounds, one after the other).

use std::sync::Arc;

use async_graphql::{
    ComplexObject, Context, Enum, Lookahead, SelectionField, SimpleObject, Value as ConstValue, ID,
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize as _;
use serde_json::Value;

use super::cursor;
use super::errors::ApiResult;
use super::loaders::{EmailsAhead, EmailsPageKey, EventsPageKey, Loaders};
use super::serial::Serial;
use projections::engagement::jobs::JobRow;
use projections::log::StoredEvent;
use projections::views::columns::{Column, Columns};
use projections::views::emails::{self, EmailRow};
use projections::views::users::UserRow;

/// Money in cents as an exact decimal.
pub fn money(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// A client's status.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::client::ClientStatus")]
pub enum UserStatus {
    /// Receiving emails.
    Active,
    /// Opted out of emails.
    Unsubscribed,
    /// Deleted.
    Deleted,
    /// Personal data erased for good (`eraseUser`): name and email are empty.
    Erased,
}

/// An email's delivery status.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::client::EmailStatus")]
pub enum EmailStatus {
    /// Written and not sent yet (queued for the sender, or written before delivery existed).
    Generated,
    /// Ready, and no delivery is configured (the seed's "would send"); switching delivery on
    /// never sends this backlog by itself.
    WouldSend,
    /// Accepted by the mail server.
    Sent,
    /// Waits for an operator's `approveEmail` or `rejectEmail`.
    PendingReview,
    /// An operator said no; never sent.
    Rejected,
    /// The client left the audience before it was sent.
    Cancelled,
    /// The mail server refused it for good.
    Failed,
    /// The provider reported a hard bounce.
    Bounced,
    /// The provider reported a spam complaint.
    Complained,
}

/// One reason behind a score.
#[derive(SimpleObject, Clone, Debug, serde::Deserialize)]
#[graphql(serial)]
pub struct ScoreFactor {
    /// Short name (`recency`, `frequency`, ...).
    pub name: String,
    /// Points it added (negative: took away).
    pub points: f64,
    /// A sentence.
    pub detail: String,
}

/// A score with its reasons.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct ScoreBreakdown {
    /// Policy that produced it (`cadence-v2`, `seed-v1`, `manual`).
    pub policy: String,
    /// The score.
    pub score: i32,
    /// `at_risk`, `watch` or `healthy`.
    pub band: String,
    /// Factor by factor.
    pub factors: Vec<ScoreFactor>,
    /// The moment it describes.
    pub as_of: DateTime<Utc>,
    /// When time alone will next change it, if ever.
    pub next_change_at: Option<DateTime<Utc>>,
}

/// A score as the users view holds it: its factors stay JSON until `scoreBreakdown` is asked
/// for (a list of clients rarely shows them, and each is a small tree to copy and parse).
#[derive(Clone, Debug)]
struct StoredScore {
    policy: String,
    band: String,
    factors: Value,
    as_of: DateTime<Utc>,
    next_change_at: Option<DateTime<Utc>>,
}

/// The fields a client has both now (`User`) and as they stood at a moment (`UserState`).
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct ClientFields {
    /// Id.
    pub id: ID,
    /// Name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Preferred categories.
    pub preferred_categories: Vec<String>,
    /// Orders placed.
    pub order_count: i32,
    /// Mean order value.
    pub average_order_value: Decimal,
    /// Sum of all orders.
    pub total_spent: Decimal,
    /// Last order.
    pub last_order_date: Option<DateTime<Utc>>,
    /// Score 0..=100, lower = more at risk.
    pub engagement_score: i32,
    /// In the at-risk band.
    pub at_risk: bool,
    /// Last email written to the client.
    pub last_email_date: Option<DateTime<Utc>>,
    /// Status.
    pub status: UserStatus,
    /// The client's id in the retailer's own systems.
    pub external_id: Option<String>,
    /// Treatment (emailed when at risk) or holdout (never emailed; the uplift report compares).
    pub group: EngagementGroup,
}

/// Which side of the uplift comparison a client is on, decided once at creation.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "domain::client::EngagementGroup")]
pub enum EngagementGroup {
    /// Emailed when at risk.
    Treatment,
    /// Never emailed; their triggers are recorded for the comparison.
    Holdout,
}

/// A client, from the users read model.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex, serial)]
pub struct User {
    /// The client's own fields.
    #[graphql(flatten)]
    pub fields: ClientFields,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The aggregate version (sequence of its last event) this view reflects.
    pub version: i32,
    #[graphql(skip)]
    uuid: uuid::Uuid,
    #[graphql(skip)]
    score: StoredScore,
    /// Pages of emails loaded with the page this client is on, if any.
    #[graphql(skip)]
    emails_ahead: Option<Arc<EmailsAhead>>,
}

impl User {
    /// The same client, answering `emails` from pages loaded with its page where they match.
    #[must_use]
    pub fn with_emails_ahead(mut self, ahead: Option<Arc<EmailsAhead>>) -> Self {
        self.emails_ahead = ahead;
        self
    }
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            uuid: row.id,
            emails_ahead: None,
            score: StoredScore {
                policy: row.score_policy,
                band: row.score_band,
                factors: row.score_factors,
                as_of: row.score_as_of.unwrap_or(row.created_at),
                next_change_at: row.next_score_change_at,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: i32::try_from(row.version).unwrap_or(i32::MAX),
            fields: ClientFields {
                id: ID(row.id.to_string()),
                name: row.name,
                email: row.email,
                preferred_categories: row.preferred_categories,
                order_count: row.order_count,
                average_order_value: money(row.average_order_value_cents),
                total_spent: money(row.total_spent_cents),
                last_order_date: row.last_order_date,
                engagement_score: i32::from(row.engagement_score),
                at_risk: row.at_risk,
                last_email_date: row.last_email_date,
                status: row.status.into(),
                external_id: row.external_id,
                group: row
                    .engagement_group
                    .parse::<domain::client::EngagementGroup>()
                    .unwrap_or_default()
                    .into(),
            },
        }
    }
}

#[ComplexObject]
impl User {
    /// The score's reasons.
    async fn score_breakdown(&self) -> ScoreBreakdown {
        let score = &self.score;
        ScoreBreakdown {
            policy: score.policy.clone(),
            score: self.fields.engagement_score,
            band: score.band.clone(),
            factors: Vec::<ScoreFactor>::deserialize(&score.factors).unwrap_or_default(),
            as_of: score.as_of,
            next_change_at: score.next_change_at,
        }
    }

    /// The client's emails, newest first.
    #[graphql(
        complexity = "super::cursor::page_size(first).unwrap_or(0) as usize * child_complexity"
    )]
    async fn emails(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EmailConnection> {
        let ahead = ctx.look_ahead();
        let count = ahead.field("totalCount").exists();
        let columns = columns_read(&ahead, &emails::COLUMNS, email_field_columns);
        let key = EmailsPageKey::new(self.uuid, first, after.as_deref(), count, columns)?;
        let limit = key.limit;
        let loaders = ctx.data_unchecked::<Loaders>();
        let ahead = self
            .emails_ahead
            .as_ref()
            .and_then(|ahead| ahead.take(&key));
        let (rows, total) = match ahead {
            Some(page) => {
                loaders.recorder().client(self.uuid);
                page
            }
            None => loaders.emails_page(key).await?,
        };
        Ok(EmailConnection::of_rows(rows, limit, total))
    }

    /// The client's events, oldest first.
    #[graphql(
        complexity = "super::cursor::page_size(first).unwrap_or(0) as usize * child_complexity"
    )]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EventConnection> {
        let count = ctx.look_ahead().field("totalCount").exists();
        let key = EventsPageKey::new(self.uuid, first, after.as_deref(), count)?;
        EventConnection::of_page(ctx, key).await
    }
}

/// The view columns a connection's nodes read (under `nodes` and `edges { node }`), by
/// `field_columns` of each field selected on them: a field it does not know reads every
/// column, so a field added later is right before it is fast.
pub fn columns_read(
    connection: &Lookahead<'_>,
    table: &[Column],
    field_columns: fn(&str) -> Option<&'static [&'static str]>,
) -> Columns {
    let nodes = connection.field("nodes");
    let edge_nodes = connection.field("edges").field("node");
    let mut columns = Columns::none();
    for node in nodes
        .selection_fields()
        .into_iter()
        .chain(edge_nodes.selection_fields())
    {
        for field in node.selection_set() {
            match field_columns(field.name()) {
                Some(names) => columns = columns.with(table, names),
                None => return Columns::all(),
            }
        }
    }
    columns
}

/// The pages of emails a connection of clients shows for each client (every `emails` under
/// `nodes` and `edges { node }`), as keys for the nil client, built from each field's arguments
/// and selection exactly as its resolver builds them. A field whose arguments do not read
/// cleanly is left out: its resolver loads it (and reports what is wrong with them).
pub fn emails_shown(connection: &Lookahead<'_>) -> Vec<EmailsPageKey> {
    let nodes = connection.field("nodes");
    let edge_nodes = connection.field("edges").field("node");
    let mut keys: Vec<EmailsPageKey> = Vec::new();
    for node in nodes
        .selection_fields()
        .into_iter()
        .chain(edge_nodes.selection_fields())
    {
        for field in node.selection_set().filter(|f| f.name() == "emails") {
            let Some((first, after)) = page_arguments(&field) else {
                continue;
            };
            let ahead = Lookahead::from(field);
            let count = ahead.field("totalCount").exists();
            let columns = columns_read(&ahead, &emails::COLUMNS, email_field_columns);
            let Ok(key) =
                EmailsPageKey::new(uuid::Uuid::nil(), first, after.as_deref(), count, columns)
            else {
                continue;
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// `first` and `after` of a page field, as its resolver receives them (`None` when a value is
/// not of their type).
fn page_arguments(field: &SelectionField<'_>) -> Option<(Option<i32>, Option<String>)> {
    let (mut first, mut after) = (None, None);
    for (name, value) in field.arguments().ok()? {
        match (name.as_str(), value) {
            (_, ConstValue::Null) => {}
            ("first", ConstValue::Number(n)) => first = Some(i32::try_from(n.as_i64()?).ok()?),
            ("after", ConstValue::String(text)) => after = Some(text),
            _ => return None,
        }
    }
    Some((first, after))
}

/// The users view columns a field of `User` reads (the id and creation time always are).
pub fn user_field_columns(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "id" | "createdAt" | "emails" | "history" | "__typename" => &[],
        "name" => &["name"],
        "email" => &["email"],
        "preferredCategories" => &["preferred_categories"],
        "orderCount" => &["order_count"],
        "averageOrderValue" => &["average_order_value_cents"],
        "totalSpent" => &["total_spent_cents"],
        "lastOrderDate" => &["last_order_date"],
        "engagementScore" => &["engagement_score"],
        "atRisk" => &["at_risk"],
        "lastEmailDate" => &["last_email_date"],
        "status" => &["status"],
        "externalId" => &["external_id"],
        "group" => &["engagement_group"],
        "updatedAt" => &["updated_at"],
        "version" => &["version"],
        "scoreBreakdown" => &[
            "engagement_score",
            "score_policy",
            "score_band",
            "score_factors",
            "score_as_of",
            "next_score_change_at",
        ],
        _ => return None,
    })
}

/// The emails view columns a field of `Email` reads (the id, client, time and status always
/// are).
pub fn email_field_columns(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "id" | "userId" | "user" | "status" | "generatedAt" | "__typename" => &[],
        "subject" => &["subject"],
        "preheader" => &["preheader"],
        "html" => &["html"],
        "text" => &["text"],
        "engagementScoreAtTime" => &["engagement_score_at_time"],
        "generator" => &["generator"],
        "sentAt" => &["sent_at"],
        "messageId" => &["message_id"],
        "deliveryError" => &["delivery_error"],
        "reviewedBy" => &["reviewed_by"],
        "reviewReason" => &["review_reason"],
        "deliveryMode" => &["delivery_mode"],
        _ => return None,
    })
}

/// A generated email, from the emails read model.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex, serial)]
pub struct Email {
    /// Id.
    pub id: ID,
    /// The client.
    pub user_id: ID,
    /// Subject line.
    pub subject: String,
    /// Preview text.
    pub preheader: String,
    /// HTML body (rendered by our template, escaped).
    pub html: String,
    /// Plain-text body.
    pub text: String,
    /// Status.
    pub status: EmailStatus,
    /// When written.
    pub generated_at: DateTime<Utc>,
    /// The client's score then.
    pub engagement_score_at_time: i32,
    /// `llm:<model>` or `template:<version>`.
    pub generator: String,
    /// When the mail server accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// The Message-ID it was sent with (the same on every attempt).
    pub message_id: Option<String>,
    /// The mail server's refusal, the provider's report, or why it was cancelled.
    pub delivery_error: Option<String>,
    /// The operator who approved or rejected it.
    pub reviewed_by: Option<String>,
    /// Why it was rejected.
    pub review_reason: Option<String>,
    /// `off`, `review` or `auto`: the delivery it was written under (none: before delivery).
    pub delivery_mode: Option<String>,
}

impl From<EmailRow> for Email {
    fn from(row: EmailRow) -> Self {
        Self {
            id: ID(row.id.to_string()),
            user_id: ID(row.user_id.to_string()),
            subject: row.subject,
            preheader: row.preheader,
            html: row.html,
            text: row.text,
            status: row.status.into(),
            generated_at: row.generated_at,
            engagement_score_at_time: i32::from(row.engagement_score_at_time),
            generator: row.generator,
            sent_at: row.sent_at,
            message_id: row.message_id,
            delivery_error: row.delivery_error,
            reviewed_by: row.reviewed_by,
            review_reason: row.review_reason,
            delivery_mode: row.delivery_mode,
        }
    }
}

#[ComplexObject]
impl Email {
    /// The client.
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let Ok(id) = self.user_id.parse() else {
            return Ok(None);
        };
        Ok(ctx
            .data_unchecked::<Loaders>()
            .user(id)
            .await?
            .map(User::from))
    }
}

/// One event of the log.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct Event {
    /// Position in the whole log.
    pub global_position: i64,
    /// The client.
    pub user_id: ID,
    /// The client's version after this event.
    pub sequence: i32,
    /// `UserCreated`, `UserScored`, ...
    #[graphql(name = "type")]
    pub event_type: String,
    /// Event schema version.
    pub version: String,
    /// When the database recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The event's fields, upcast to the current schema (`type` says which event it is). The
    /// personal fields of an erased client's events are `null` (listed in `erased`).
    pub payload: async_graphql::Json<Value>,
    /// `actor`, `requestId`, `correlationId`, `causationId`.
    pub metadata: async_graphql::Json<Value>,
    /// The personal fields this event held that were erased with the client (`eraseUser`).
    pub erased: Vec<String>,
}

impl Event {
    /// From a stored event.
    ///
    /// # Errors
    /// The payload cannot be read.
    pub fn from_stored(e: &StoredEvent) -> ApiResult<Self> {
        Ok(Self {
            global_position: e.position.global_position,
            user_id: ID(e.user_id.to_string()),
            sequence: i32::try_from(e.sequence).unwrap_or(i32::MAX),
            event_type: e.event_type.clone(),
            version: e.event_version.clone(),
            recorded_at: e.recorded_at,
            payload: async_graphql::Json(shown_erased(
                untagged(&e.event_type, e.payload()?),
                &e.erased,
            )),
            metadata: async_graphql::Json(e.metadata.clone()),
            erased: e.erased.clone(),
        })
    }
}

/// The log stores an event tagged with its type (`{"UserScored": {...}}`, serde's external
/// tagging); the API gives the fields alone, since `type` already names the event.
/// `payload` with its `erased` fields as `null` (the log reads them blank, for the code that
/// needs a value).
fn shown_erased(mut payload: Value, erased: &[String]) -> Value {
    if let Value::Object(fields) = &mut payload {
        for name in erased {
            fields.insert(name.clone(), Value::Null);
        }
    }
    payload
}

fn untagged(event_type: &str, payload: Value) -> Value {
    match payload {
        Value::Object(mut tagged) if tagged.len() == 1 && tagged.contains_key(event_type) => {
            tagged.remove(event_type).unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// A client as they stood at a moment or version, replayed from the log.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct UserState {
    /// The client's own fields, as they stood.
    #[graphql(flatten)]
    pub fields: ClientFields,
    /// The score's reasons.
    pub score_breakdown: Option<ScoreBreakdown>,
    /// Created.
    pub created_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: Option<DateTime<Utc>>,
    /// The moment asked about (or the time of the version asked about).
    pub as_of: DateTime<Utc>,
    /// The version the state reflects.
    pub version: i32,
}

impl UserState {
    /// The state of a replayed client.
    pub fn from_client(
        client: &domain::client::Client,
        version: i64,
        as_of: DateTime<Utc>,
    ) -> Self {
        let score = client.score();
        let orders = client.orders();
        Self {
            fields: ClientFields {
                id: ID(client.id().map(|i| i.to_string()).unwrap_or_default()),
                name: client.name().to_owned(),
                email: client.email().to_owned(),
                preferred_categories: client.preferred_categories().to_vec(),
                order_count: i32::try_from(orders.order_count).unwrap_or(i32::MAX),
                average_order_value: money(orders.average_order_value_cents),
                total_spent: money(orders.total_spent_cents),
                last_order_date: orders.last_order_at,
                engagement_score: score.map_or(0, |s| i32::from(s.score)),
                at_risk: client.is_at_risk(),
                last_email_date: client.last_email_at(),
                // A replay that reached the creation always has a status.
                status: domain::client::ClientStatus::of(client.lifecycle())
                    .unwrap_or(domain::client::ClientStatus::Active)
                    .into(),
                external_id: client.external_id().map(str::to_owned),
                group: client.group().into(),
            },
            score_breakdown: score.map(|s| ScoreBreakdown {
                policy: s.policy.clone(),
                score: i32::from(s.score),
                band: s.band.as_str().to_owned(),
                factors: s
                    .factors
                    .iter()
                    .map(|f| ScoreFactor {
                        name: f.name.clone(),
                        points: f.points,
                        detail: f.detail.clone(),
                    })
                    .collect(),
                as_of: s.as_of,
                next_change_at: s.next_change_at,
            }),
            created_at: client.created_at(),
            updated_at: client.updated_at(),
            as_of,
            version: i32::try_from(version).unwrap_or(i32::MAX),
        }
    }
}

/// A durable email job.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct EmailJob {
    /// Id.
    pub id: ID,
    /// The client.
    pub user_id: ID,
    /// Status.
    pub status: EmailJobStatus,
    /// Attempts made.
    pub attempts: i32,
    /// The last failure or skip reason.
    pub last_error: Option<String>,
    /// When it is next due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// The email it recorded, once done.
    pub email_id: Option<ID>,
    /// Global position of the triggering event.
    pub trigger_position: i64,
}

/// Where an email job stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "projections::engagement::jobs::JobStatus")]
pub enum EmailJobStatus {
    /// Waiting to run.
    Pending,
    /// Held by a worker.
    Running,
    /// The email was recorded.
    Done,
    /// Failed on every attempt; retry from here.
    Dead,
    /// The client no longer needed the email (recovered, opted out, deleted, in cooldown).
    Skipped,
    /// A held-out client's trigger: recorded for the uplift report, never run.
    HeldOut,
}

impl From<JobRow> for EmailJob {
    fn from(r: JobRow) -> Self {
        Self {
            id: ID(r.id.to_string()),
            user_id: ID(r.user_id.to_string()),
            status: r.status.into(),
            attempts: r.attempts,
            last_error: r.last_error,
            next_attempt_at: r.status.open().then_some(r.next_attempt_at),
            created_at: r.created_at,
            email_id: r.email_id.map(|id| ID(id.to_string())),
            trigger_position: r.trigger_position,
        }
    }
}

/// Counts for the overview.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct EngagementSummary {
    /// Clients (not deleted).
    pub users: i32,
    /// Of them, at risk.
    pub at_risk: i32,
    /// Their mean score.
    pub average_score: f64,
    /// Emails written.
    pub emails: i32,
    /// Clients per score bucket: 0-9, 10-19, ..., 90-100.
    pub score_histogram: Vec<i32>,
}

/// The service's health.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    /// Build version.
    pub version: String,
    /// `up` or `down`.
    pub database: String,
    /// The email writer in use and its state.
    pub email_writer: String,
    /// `off`, `review` or `auto` (`EMAIL_DELIVERY`).
    pub email_delivery: String,
    /// The mail server emails leave through (password hidden), when delivery is on.
    pub mail_server: Option<String>,
    /// Events the slowest read model is behind the log.
    pub projection_lag: i32,
}

/// Relay page info.
#[derive(SimpleObject, Clone, Debug, Default)]
#[graphql(serial)]
pub struct PageInfo {
    /// More items follow.
    pub has_next_page: bool,
    /// Cursor of the last item.
    pub end_cursor: Option<String>,
}

macro_rules! connection {
    ($node:ty, $connection:ident, $edge:ident, $key:ty) => {
        /// An item with its cursor.
        #[derive(SimpleObject, Clone, Debug)]
        #[graphql(serial)]
        pub struct $edge {
            /// Where it is.
            pub cursor: String,
            /// The item.
            pub node: Serial<$node>,
        }

        /// A page of items with their sort keys: a cursor is encoded, and an item copied
        /// into an edge, only when `edges` or `pageInfo` is asked for.
        #[derive(Clone, Debug)]
        pub struct $connection {
            items: Vec<($key, $node)>,
            has_next_page: bool,
            total_count: i64,
        }

        impl $connection {
            /// A page of `items` (each with the key its cursor encodes) fetched with one
            /// extra to learn whether more follow.
            pub fn from_page(mut items: Vec<($key, $node)>, limit: i64, total_count: i64) -> Self {
                let has_next_page = items.len() as i64 > limit;
                items.truncate(usize::try_from(limit).unwrap_or(0));
                Self {
                    items,
                    has_next_page,
                    total_count,
                }
            }
        }

        /// A Relay connection.
        #[async_graphql::Object(serial)]
        impl $connection {
            /// Items with cursors.
            async fn edges(&self) -> Vec<$edge> {
                self.items
                    .iter()
                    .map(|(key, node)| $edge {
                        cursor: cursor::encode(key),
                        node: Serial(node.clone()),
                    })
                    .collect()
            }

            /// Items.
            async fn nodes(&self) -> Vec<Serial<&$node>> {
                self.items.iter().map(|(_, node)| Serial(node)).collect()
            }

            /// Paging.
            async fn page_info(&self) -> PageInfo {
                PageInfo {
                    has_next_page: self.has_next_page,
                    end_cursor: self.items.last().map(|(key, _)| cursor::encode(key)),
                }
            }

            /// Items in the whole list.
            async fn total_count(&self) -> i64 {
                self.total_count
            }
        }
    };
}

connection!(User, UserConnection, UserEdge, (String, uuid::Uuid));
connection!(
    Email,
    EmailConnection,
    EmailEdge,
    (DateTime<Utc>, uuid::Uuid)
);
connection!(Event, EventConnection, EventEdge, i64);
connection!(
    EmailJob,
    EmailJobConnection,
    EmailJobEdge,
    (DateTime<Utc>, uuid::Uuid)
);

impl EmailConnection {
    /// A page of emails, newest first (cursors by `(generated_at, id)`).
    pub fn of_rows(rows: Vec<EmailRow>, limit: i64, total: i64) -> Self {
        let items = rows
            .into_iter()
            .map(|row| ((row.generated_at, row.id), Email::from(row)))
            .collect();
        Self::from_page(items, limit, total)
    }
}

impl EventConnection {
    /// A page of one client's events, oldest first (cursors by sequence), through the
    /// request's loader.
    ///
    /// # Errors
    /// The database failed or an event is unreadable.
    pub async fn of_page(ctx: &Context<'_>, key: EventsPageKey) -> async_graphql::Result<Self> {
        let limit = key.limit;
        let (events, total) = ctx.data_unchecked::<Loaders>().events_page(key).await?;
        let items = events
            .iter()
            .map(|e| Ok((e.sequence, Event::from_stored(e)?)))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Self::from_page(items, limit, total))
    }
}

/// What `importOrders` did.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct ImportResult {
    /// Orders recorded now.
    pub accepted: i32,
    /// Orders recorded before (the same client and order id).
    pub duplicates: i32,
    /// Orders not taken, with why.
    pub rejected: Vec<ImportRejection>,
}

/// An order `importOrders` did not take.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct ImportRejection {
    /// Its index in the request.
    pub index: i32,
    /// The offending field, when one is to blame.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// How far `serve --demo` is with filling in its data.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct DemoStatus {
    /// Clients to make.
    pub clients_total: i32,
    /// Clients made so far.
    pub clients: i32,
    /// Orders to record.
    pub orders_total: i32,
    /// Orders recorded so far.
    pub orders: i32,
    /// The fill has ended.
    pub done: bool,
    /// Why it stopped, if it failed.
    pub error: Option<String>,
}

impl From<&crate::demo::DemoProgress> for DemoStatus {
    fn from(p: &crate::demo::DemoProgress) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let count =
            |a: &std::sync::atomic::AtomicU64| i32::try_from(a.load(Relaxed)).unwrap_or(i32::MAX);
        Self {
            clients_total: count(&p.clients_total),
            clients: count(&p.clients),
            orders_total: count(&p.orders_total),
            orders: count(&p.orders),
            done: p.done.load(Relaxed),
            error: p
                .error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

/// Did emailing help? Treated against held-out at-risk clients.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct UpliftReport {
    /// Days after a trigger in which an order counts as a reactivation.
    pub window_days: i32,
    /// Clients emailed when at risk.
    pub treatment: UpliftGroup,
    /// Clients held out.
    pub holdout: UpliftGroup,
    /// Treatment rate minus holdout rate, with a 95% Newcombe (method 10) interval.
    pub difference: f64,
    /// Lower bound of the difference.
    pub difference_low: f64,
    /// Upper bound of the difference.
    pub difference_high: f64,
}

/// One group of the uplift report. `triggered` is the process manager's decision that the
/// client should be emailed (intention to treat), whatever happened after.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct UpliftGroup {
    /// Triggers in the period.
    pub triggered: i32,
    /// Of them, followed by an order within the window.
    pub reactivated: i32,
    /// `reactivated / triggered` (0 with no triggers).
    pub rate: f64,
    /// Lower bound of the rate's 95% Wilson interval.
    pub rate_low: f64,
    /// Upper bound.
    pub rate_high: f64,
    /// The value of the reactivating orders.
    pub revenue: Decimal,
}

impl UpliftGroup {
    fn new(o: &domain::uplift::GroupOutcome) -> Self {
        let int = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            triggered: int(o.triggered),
            reactivated: int(o.reactivated),
            rate: o.rate.rate,
            rate_low: o.rate.low,
            rate_high: o.rate.high,
            revenue: money(o.revenue_cents),
        }
    }
}

impl UpliftReport {
    /// The report of `uplift` over a window of `window_days`.
    pub fn new(window_days: i32, uplift: &domain::uplift::Uplift) -> Self {
        Self {
            window_days,
            treatment: UpliftGroup::new(&uplift.treatment),
            holdout: UpliftGroup::new(&uplift.holdout),
            difference: uplift.difference.rate,
            difference_low: uplift.difference.low,
            difference_high: uplift.difference.high,
        }
    }
}

/// One day of the trend, as it stood at the day's end (UTC).
#[derive(SimpleObject, Clone, Debug)]
#[graphql(serial)]
pub struct TrendDay {
    /// The day.
    pub day: chrono::NaiveDate,
    /// Clients at risk.
    pub at_risk: i32,
    /// The average of current scores.
    pub average_score: f64,
    /// Emails written that day.
    pub emails: i32,
    /// At-risk clients whose own activity took them out of the band that day.
    pub reactivations: i32,
}

impl From<projections::views::trend::TrendDay> for TrendDay {
    fn from(d: projections::views::trend::TrendDay) -> Self {
        let int = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            day: d.day,
            at_risk: int(d.at_risk),
            average_score: d.average_score,
            emails: int(d.emails),
            reactivations: int(d.reactivations),
        }
    }
}
