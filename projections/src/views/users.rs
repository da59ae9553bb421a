//! The `users` read model: one row per client with every `User` field of the API.
//!
//! A batch is applied in two statements whatever its size: the rows of the clients it touches
//! are loaded, the events are folded into them in memory (copying the values the events
//! carry; no business rule is recomputed here), and the results are upserted in one statement.

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::{ClientEvent, OrderSummary};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::log::consumer::Projection;
use crate::log::StoredEvent;

/// One row of the users view (field names are column names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UserRow {
    /// Client id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Preferred categories.
    pub preferred_categories: Vec<String>,
    /// Orders.
    pub order_count: i32,
    /// Sum of orders, cents.
    pub total_spent_cents: i64,
    /// Mean order, cents.
    pub average_order_value_cents: i64,
    /// Last order.
    pub last_order_date: Option<DateTime<Utc>>,
    /// First order whose date is known.
    pub first_order_date: Option<DateTime<Utc>>,
    /// Score 0..=100.
    pub engagement_score: i16,
    /// `at_risk`, `watch`, `healthy`.
    pub score_band: String,
    /// Band is at risk.
    pub at_risk: bool,
    /// Policy that scored it.
    pub score_policy: String,
    /// Threshold in force.
    pub score_threshold: i16,
    /// Factors (JSON list of `{name, points, detail}`).
    pub score_factors: serde_json::Value,
    /// Moment scored.
    pub score_as_of: Option<DateTime<Utc>>,
    /// When time alone would next change the score.
    pub next_score_change_at: Option<DateTime<Utc>>,
    /// Last email written.
    pub last_email_date: Option<DateTime<Utc>>,
    /// `ACTIVE`, `UNSUBSCRIBED`, `DELETED`.
    pub status: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last event's time.
    pub updated_at: DateTime<Utc>,
    /// Aggregate version reflected.
    pub version: i64,
}

impl UserRow {
    fn created(id: Uuid, e: &domain::client::UserCreated, version: i64) -> Self {
        let mut row = Self {
            id,
            name: e.name.clone(),
            email: e.email.clone(),
            preferred_categories: e.preferred_categories.clone(),
            order_count: 0,
            total_spent_cents: 0,
            average_order_value_cents: 0,
            last_order_date: None,
            first_order_date: None,
            engagement_score: 0,
            score_band: "healthy".into(),
            at_risk: false,
            score_policy: String::new(),
            score_threshold: 50,
            score_factors: serde_json::Value::Array(vec![]),
            score_as_of: None,
            next_score_change_at: None,
            last_email_date: None,
            status: "ACTIVE".into(),
            created_at: e.created_at,
            updated_at: e.created_at,
            version,
        };
        row.copy_orders(&e.orders);
        row
    }

    fn copy_orders(&mut self, orders: &OrderSummary) {
        self.order_count = i32::try_from(orders.order_count).unwrap_or(i32::MAX);
        self.total_spent_cents = orders.total_spent_cents;
        self.average_order_value_cents = orders.average_order_value_cents;
        self.last_order_date = orders.last_order_at;
        self.first_order_date = orders.first_order_at;
    }

    /// Folds one event of this client into the row.
    fn apply(&mut self, event: &ClientEvent, version: i64) -> anyhow::Result<()> {
        match event {
            ClientEvent::UserCreated(_) => {}
            ClientEvent::UserUpdated(e) => {
                self.name.clone_from(&e.name);
                self.email.clone_from(&e.email);
                self.preferred_categories
                    .clone_from(&e.preferred_categories);
                self.copy_orders(&e.orders);
            }
            ClientEvent::OrderPlaced(e) => self.copy_orders(&e.orders),
            ClientEvent::UserScored(e) => {
                self.engagement_score = i16::from(e.score);
                self.score_band = e.band.as_str().to_owned();
                self.at_risk = e.is_at_risk();
                self.score_policy.clone_from(&e.policy);
                self.score_threshold = i16::from(e.threshold);
                self.score_factors =
                    serde_json::to_value(&e.factors).context("serializing score factors")?;
                self.score_as_of = Some(e.as_of);
                self.next_score_change_at = e.next_change_at;
            }
            ClientEvent::EmailGenerated(e) => {
                self.last_email_date = Some(
                    self.last_email_date
                        .map_or(e.generated_at, |t| t.max(e.generated_at)),
                );
            }
            ClientEvent::UserUnsubscribed(_) => "UNSUBSCRIBED".clone_into(&mut self.status),
            ClientEvent::UserDeleted(_) => "DELETED".clone_into(&mut self.status),
        }
        self.updated_at = event.occurred_at();
        self.version = version;
        Ok(())
    }
}

/// The users view, written to `table` (`users`, or a fresh table during a rebuild).
#[derive(Debug, Clone)]
pub struct UsersView {
    consumer: String,
    table: &'static str,
}

impl UsersView {
    /// The live view: consumer `users`, table `users`.
    pub fn live() -> Self {
        Self {
            consumer: "users".into(),
            table: "users",
        }
    }

    /// A view written by consumer `consumer` into `table` (rebuilds).
    pub fn into_table(consumer: impl Into<String>, table: &'static str) -> Self {
        Self {
            consumer: consumer.into(),
            table,
        }
    }

    /// The table it writes.
    pub fn table(&self) -> &'static str {
        self.table
    }
}

impl Projection for UsersView {
    fn name(&self) -> &str {
        &self.consumer
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.user_id).collect();
        ids.sort_unstable();
        ids.dedup();
        // `table` is one of our own static names, never input.
        let existing: Vec<(serde_json::Value,)> = sqlx::query_as(&format!(
            "select to_jsonb(t) from {} t where id = any($1)",
            self.table
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .context("loading users rows")?;
        let mut rows: HashMap<Uuid, UserRow> = HashMap::with_capacity(ids.len());
        for (json,) in existing {
            let row: UserRow = serde_json::from_value(json).context("reading a users row")?;
            rows.insert(row.id, row);
        }
        let mut touched = Vec::with_capacity(ids.len());
        for stored in events {
            let event = stored.event()?;
            match (rows.get_mut(&stored.user_id), &event) {
                // Already reflected (a replay over a row that has it): nothing to do.
                (Some(row), _) if stored.sequence <= row.version => continue,
                (Some(row), _) => row.apply(&event, stored.sequence)?,
                (None, ClientEvent::UserCreated(created)) => {
                    rows.insert(
                        stored.user_id,
                        UserRow::created(stored.user_id, created, stored.sequence),
                    );
                }
                (None, _) => anyhow::bail!(
                    "event {} ({}) for user {} precedes the user's creation",
                    stored.position.global_position,
                    stored.event_type,
                    stored.user_id
                ),
            }
            touched.push(stored.user_id);
        }
        touched.sort_unstable();
        touched.dedup();
        if touched.is_empty() {
            return Ok(());
        }
        let batch: Vec<&UserRow> = touched.iter().filter_map(|id| rows.get(id)).collect();
        let payload = serde_json::to_value(&batch).context("serializing users rows")?;
        sqlx::query(&format!(
            "insert into {t} select * from jsonb_populate_recordset(null::{t}, $1)
             on conflict (id) do update set
                name = excluded.name, email = excluded.email,
                preferred_categories = excluded.preferred_categories,
                order_count = excluded.order_count, total_spent_cents = excluded.total_spent_cents,
                average_order_value_cents = excluded.average_order_value_cents,
                last_order_date = excluded.last_order_date, first_order_date = excluded.first_order_date,
                engagement_score = excluded.engagement_score, score_band = excluded.score_band,
                at_risk = excluded.at_risk, score_policy = excluded.score_policy,
                score_threshold = excluded.score_threshold, score_factors = excluded.score_factors,
                score_as_of = excluded.score_as_of, next_score_change_at = excluded.next_score_change_at,
                last_email_date = excluded.last_email_date, status = excluded.status,
                created_at = excluded.created_at, updated_at = excluded.updated_at,
                version = excluded.version",
            t = self.table
        ))
        .bind(payload)
        .execute(&mut *tx)
        .await
        .context("upserting users rows")?;
        Ok(())
    }
}

/// Loads one user row.
///
/// # Errors
/// The database failed.
pub async fn load_user(pool: &sqlx::PgPool, id: Uuid) -> anyhow::Result<Option<UserRow>> {
    let row: Option<(serde_json::Value,)> =
        sqlx::query_as("select to_jsonb(t) from users t where id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .context("loading a user")?;
    row.map(|(json,)| serde_json::from_value(json).context("reading a users row"))
        .transpose()
}
