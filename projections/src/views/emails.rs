//! The `emails` read model: one row per generated email, by user and by time.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::ClientEvent;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::log::consumer::Projection;
use crate::log::StoredEvent;

/// One row of the emails view (field names are column names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct EmailRow {
    /// Email id.
    pub id: Uuid,
    /// Client.
    pub user_id: Uuid,
    /// Subject.
    pub subject: String,
    /// Preview text.
    pub preheader: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
    /// `GENERATED`, `WOULD_SEND`, `SENT`.
    pub status: String,
    /// When written.
    pub generated_at: DateTime<Utc>,
    /// The client's score then.
    pub engagement_score_at_time: i16,
    /// `llm:<model>` or `template:<version>`.
    pub generator: String,
    /// Provider usage, when reported.
    pub usage: Option<serde_json::Value>,
    /// Sequence of the triggering event.
    pub trigger_sequence: Option<i64>,
    /// Log position of the triggering event.
    pub trigger_position: Option<i64>,
    /// Aggregate version of the recording event.
    pub version: i64,
}

/// The emails view, written to `table` (`emails`, or a fresh table during a rebuild).
#[derive(Debug, Clone)]
pub struct EmailsView {
    consumer: String,
    table: &'static str,
}

impl EmailsView {
    /// The live view: consumer `emails`, table `emails`.
    pub fn live() -> Self {
        Self {
            consumer: "emails".into(),
            table: "emails",
        }
    }

    /// A view written by consumer `consumer` into `table` (rebuilds).
    pub fn into_table(consumer: impl Into<String>, table: &'static str) -> Self {
        Self {
            consumer: consumer.into(),
            table,
        }
    }
}

impl Projection for EmailsView {
    fn name(&self) -> &str {
        &self.consumer
    }

    fn payload_types(&self) -> Option<Vec<String>> {
        Some(vec!["EmailGenerated".to_owned()])
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        for stored in events {
            // Only one event type concerns this view; skip the rest without parsing them.
            if stored.event_type != "EmailGenerated" {
                continue;
            }
            let ClientEvent::EmailGenerated(e) = stored.event()? else {
                continue;
            };
            rows.push(EmailRow {
                id: e.email_id,
                user_id: stored.user_id,
                subject: e.subject,
                preheader: e.preheader,
                text: e.text,
                html: e.html,
                status: "GENERATED".into(),
                generated_at: e.generated_at,
                engagement_score_at_time: i16::from(e.engagement_score_at_time),
                generator: e.generator.label(),
                usage: e.usage.map(|u| serde_json::to_value(u).unwrap_or_default()),
                trigger_sequence: e
                    .trigger
                    .as_ref()
                    .and_then(|t| i64::try_from(t.sequence).ok()),
                trigger_position: e.trigger.as_ref().map(|t| t.global_position),
                version: stored.sequence,
            });
        }
        if rows.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_value(&rows).context("serializing emails rows")?;
        // `table` is one of our own static names, never input. An email id is recorded once by
        // the aggregate, so a conflict can only be a replay of the same event.
        sqlx::query(&format!(
            "insert into {t} select * from jsonb_populate_recordset(null::{t}, $1)
             on conflict (id) do nothing",
            t = self.table
        ))
        .bind(payload)
        .execute(&mut *tx)
        .await
        .context("inserting emails rows")?;
        Ok(())
    }
}
