//! The `emails` read model: one row per generated email, by user and by time, and every query
//! of the `emails` table.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::{ClientEvent, EmailStatus};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
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
    /// Where it stands.
    #[sqlx(try_from = "String")]
    pub status: EmailStatus,
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

    fn touches(&self, events: &[StoredEvent]) -> anyhow::Result<bool> {
        Ok(events.iter().any(|e| e.event_type == "EmailGenerated"))
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
                status: EmailStatus::Generated,
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

/// Loads one email.
///
/// # Errors
/// The database failed or the row is unreadable.
pub async fn load<'e>(executor: impl PgExecutor<'e>, id: Uuid) -> anyhow::Result<Option<EmailRow>> {
    sqlx::query_as("select * from emails where id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await
        .context("loading an email")
}

/// Which emails to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmailFilter {
    /// Only this client's.
    pub user_id: Option<Uuid>,
    /// Only in this status.
    pub status: Option<EmailStatus>,
}

impl EmailFilter {
    /// Conditions are added only when present, so each shape of query gets a plan that uses
    /// its index (a `$1 is null or ...` condition would not).
    fn push(self, q: &mut QueryBuilder<'_, Postgres>) {
        if let Some(user_id) = self.user_id {
            q.push(" and user_id = ").push_bind(user_id);
        }
        if let Some(status) = self.status {
            q.push(" and status = ").push_bind(status.as_str());
        }
    }
}

/// A page of emails, newest first, after a `(generated_at, id)` cursor; fetches `limit` rows.
///
/// # Errors
/// The database failed or a row is unreadable.
pub async fn page<'e>(
    executor: impl PgExecutor<'e>,
    filter: EmailFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> anyhow::Result<Vec<EmailRow>> {
    let mut q = QueryBuilder::<Postgres>::new("select * from emails where true");
    filter.push(&mut q);
    if let Some((at, id)) = after {
        q.push(" and (generated_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    // The limit is written into the SQL, not bound, so the plan knows the page is small.
    q.push(format!(
        " order by generated_at desc, id desc limit {limit}"
    ));
    q.build_query_as()
        .fetch_all(executor)
        .await
        .context("listing emails")
}

/// How many emails `filter` matches.
///
/// # Errors
/// The database failed.
pub async fn count<'e>(executor: impl PgExecutor<'e>, filter: EmailFilter) -> anyhow::Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("select count(*) from emails where true");
    filter.push(&mut q);
    q.build_query_scalar()
        .fetch_one(executor)
        .await
        .context("counting emails")
}

/// One page of one client's emails, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserEmailsPage {
    /// Whose.
    pub user_id: Uuid,
    /// After this (generated_at, id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Rows to fetch.
    pub limit: i64,
}

/// A row with the ordinal of the page it answers.
#[derive(sqlx::FromRow)]
struct Ordered {
    ord: i64,
    #[sqlx(flatten)]
    row: EmailRow,
}

/// Several clients' pages in one statement (one lateral index scan per page); one list per
/// page, in the order asked.
///
/// # Errors
/// The database failed or a row is unreadable.
pub async fn pages_of_users<'e>(
    executor: impl PgExecutor<'e>,
    pages: &[UserEmailsPage],
) -> anyhow::Result<Vec<Vec<EmailRow>>> {
    let users: Vec<Uuid> = pages.iter().map(|k| k.user_id).collect();
    let after_at: Vec<Option<DateTime<Utc>>> = pages.iter().map(|k| k.after.map(|a| a.0)).collect();
    let after_id: Vec<Option<Uuid>> = pages.iter().map(|k| k.after.map(|a| a.1)).collect();
    let limits: Vec<i64> = pages.iter().map(|k| k.limit).collect();
    let rows: Vec<Ordered> = sqlx::query_as(
        "select k.ord, e.*
           from unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::bigint[])
                with ordinality as k(user_id, after_at, after_id, lim, ord)
          cross join lateral (
                select * from emails e
                 where e.user_id = k.user_id
                   and (k.after_at is null or (e.generated_at, e.id) < (k.after_at, k.after_id))
                 order by e.generated_at desc, e.id desc
                 limit k.lim) e
          order by k.ord, e.generated_at desc, e.id desc",
    )
    .bind(&users)
    .bind(&after_at)
    .bind(&after_id)
    .bind(&limits)
    .fetch_all(executor)
    .await
    .context("loading pages of users' emails")?;
    let mut out: Vec<Vec<EmailRow>> = vec![Vec::new(); pages.len()];
    for Ordered { ord, row } in rows {
        let index = usize::try_from(ord - 1).context("page ordinal")?;
        out[index].push(row);
    }
    Ok(out)
}

/// How many emails each of `users` has, in one statement.
///
/// # Errors
/// The database failed.
pub async fn counts_of_users<'e>(
    executor: impl PgExecutor<'e>,
    users: &[Uuid],
) -> anyhow::Result<std::collections::HashMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "select k.user_id, (select count(*) from emails e where e.user_id = k.user_id)
           from unnest($1::uuid[]) k(user_id)",
    )
    .bind(users)
    .fetch_all(executor)
    .await
    .context("counting users' emails")?;
    Ok(rows.into_iter().collect())
}
