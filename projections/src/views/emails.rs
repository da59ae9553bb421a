//! The `emails` read model: one row per generated email, by user and by time, and every query
//! of the `emails` table.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::{ClientEvent, EmailStatus};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use super::columns::{
    column, position, Column, Columns, Narrow,
    Need::{Always, Shown},
};
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
    /// Aggregate version of the last event that changed the row.
    pub version: i64,
    /// When the mail server accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// The Message-ID it was sent with.
    pub message_id: Option<String>,
    /// The mail server's refusal, or why it was cancelled.
    pub delivery_error: Option<String>,
    /// The operator who approved or rejected it.
    pub reviewed_by: Option<String>,
    /// Why it was rejected.
    pub review_reason: Option<String>,
    /// `off`, `review` or `auto`, as written (`None`: before delivery existed).
    pub delivery_mode: Option<String>,
}

impl EmailRow {
    /// Decodes a narrow read of the view (a page's select list).
    fn decode(row: &Narrow<'_>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: column!(row, COLUMNS, "id")?,
            user_id: column!(row, COLUMNS, "user_id")?,
            subject: column!(row, COLUMNS, "subject")?,
            preheader: column!(row, COLUMNS, "preheader")?,
            text: column!(row, COLUMNS, "text")?,
            html: column!(row, COLUMNS, "html")?,
            status: row.parsed_or(
                const { position(&COLUMNS, "status") },
                EmailStatus::Generated,
            )?,
            generated_at: column!(row, COLUMNS, "generated_at")?,
            engagement_score_at_time: column!(row, COLUMNS, "engagement_score_at_time")?,
            generator: column!(row, COLUMNS, "generator")?,
            usage: column!(row, COLUMNS, "usage")?,
            trigger_sequence: column!(row, COLUMNS, "trigger_sequence")?,
            trigger_position: column!(row, COLUMNS, "trigger_position")?,
            version: column!(row, COLUMNS, "version")?,
            sent_at: column!(row, COLUMNS, "sent_at")?,
            message_id: column!(row, COLUMNS, "message_id")?,
            delivery_error: column!(row, COLUMNS, "delivery_error")?,
            reviewed_by: column!(row, COLUMNS, "reviewed_by")?,
            review_reason: column!(row, COLUMNS, "review_reason")?,
            delivery_mode: column!(row, COLUMNS, "delivery_mode")?,
        })
    }
}

/// The event types that change a row of the view.
const EMAIL_EVENTS: &[&str] = &[
    "EmailGenerated",
    "EmailApproved",
    "EmailRejected",
    "EmailCancelled",
    "EmailSent",
    "EmailFailed",
    "EmailBounced",
    "EmailComplained",
    "UserErased",
];

/// The notes this view writes itself into `delivery_error` (not the client's data: an
/// erasure keeps them, as a rebuild would).
const OUR_NOTES: [&str; 3] = [
    "the provider reported a permanent bounce",
    "the provider reported a temporary bounce",
    "the client reported it as spam",
];

/// A change to an existing row: the status and one delivery column.
struct Change {
    id: Uuid,
    status: Option<EmailStatus>,
    column: Option<(&'static str, String)>,
    at: Option<DateTime<Utc>>,
    version: i64,
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
        Some(EMAIL_EVENTS.iter().map(|t| (*t).to_owned()).collect())
    }

    fn touches(&self, events: &[StoredEvent]) -> anyhow::Result<bool> {
        Ok(events
            .iter()
            .any(|e| EMAIL_EVENTS.contains(&e.event_type.as_str())))
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        let mut changes = Vec::new();
        let mut erased = Vec::new();
        for stored in events {
            // Skip the events this view does not show without parsing them.
            if !EMAIL_EVENTS.contains(&stored.event_type.as_str()) {
                continue;
            }
            let change = |id, status, column: Option<(&'static str, String)>| Change {
                id,
                status,
                column,
                at: None,
                version: stored.sequence,
            };
            let e = match stored.event()? {
                ClientEvent::EmailGenerated(e) => e,
                ClientEvent::EmailApproved(e) => {
                    changes.push(change(
                        e.email_id,
                        Some(EmailStatus::Generated),
                        Some(("reviewed_by", e.reviewed_by)),
                    ));
                    continue;
                }
                ClientEvent::EmailRejected(e) => {
                    changes.push(change(
                        e.email_id,
                        Some(EmailStatus::Rejected),
                        Some(("reviewed_by", e.reviewed_by)),
                    ));
                    changes.push(change(e.email_id, None, Some(("review_reason", e.reason))));
                    continue;
                }
                ClientEvent::EmailCancelled(e) => {
                    changes.push(change(
                        e.email_id,
                        Some(EmailStatus::Cancelled),
                        Some(("delivery_error", e.reason)),
                    ));
                    continue;
                }
                ClientEvent::EmailSent(e) => {
                    changes.push(Change {
                        at: Some(e.sent_at),
                        ..change(
                            e.email_id,
                            Some(EmailStatus::Sent),
                            Some(("message_id", e.message_id)),
                        )
                    });
                    continue;
                }
                ClientEvent::EmailFailed(e) => {
                    changes.push(change(
                        e.email_id,
                        Some(EmailStatus::Failed),
                        Some(("delivery_error", e.reply)),
                    ));
                    continue;
                }
                ClientEvent::EmailBounced(e) => {
                    let status = e.permanent.then_some(EmailStatus::Bounced);
                    let note = if e.permanent {
                        "the provider reported a permanent bounce"
                    } else {
                        "the provider reported a temporary bounce"
                    };
                    changes.push(change(
                        e.email_id,
                        status,
                        Some(("delivery_error", note.to_owned())),
                    ));
                    continue;
                }
                ClientEvent::UserErased(_) => {
                    erased.push(stored.user_id);
                    continue;
                }
                ClientEvent::EmailComplained(e) => {
                    changes.push(change(
                        e.email_id,
                        Some(EmailStatus::Complained),
                        Some((
                            "delivery_error",
                            "the client reported it as spam".to_owned(),
                        )),
                    ));
                    continue;
                }
                _ => continue,
            };
            let status = domain::client::EmailDelivery::written(e.delivery).status;
            rows.push(EmailRow {
                id: e.email_id,
                user_id: stored.user_id,
                subject: e.subject,
                preheader: e.preheader,
                text: e.text,
                html: e.html,
                status,
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
                sent_at: None,
                message_id: None,
                delivery_error: None,
                reviewed_by: None,
                review_reason: None,
                delivery_mode: e.delivery.map(|m| m.as_str().to_owned()),
            });
        }
        self.insert(tx, &rows).await?;
        for change in changes {
            self.change(tx, change).await?;
        }
        self.scrub(tx, &erased).await?;
        Ok(())
    }
}

impl EmailsView {
    async fn insert(&self, tx: &mut PgConnection, rows: &[EmailRow]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_value(rows).context("serializing emails rows")?;
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

    /// Applies one delivery step to its row. The row's version guards replays: a step at or
    /// below the row's version was applied already. (Several changes of one event share its
    /// version, so they compare with `<=` against the version before the event.)
    /// Blanks what the emails of erased clients `users` said, and what was written about them
    /// (a refusal quoting the address, a reviewer's reason), exactly as a rebuild reading their
    /// sealed events without a key does.
    async fn scrub(&self, tx: &mut PgConnection, users: &[Uuid]) -> anyhow::Result<()> {
        if users.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "update {t}
                set subject = '', preheader = '', text = '', html = '',
                    delivery_error = case when delivery_error is null or delivery_error = any($2)
                                          then delivery_error else '' end,
                    review_reason = case when review_reason is null then null else '' end
              where user_id = any($1)",
            t = self.table
        ))
        .bind(users)
        .bind(&OUR_NOTES[..])
        .execute(&mut *tx)
        .await
        .context("scrubbing erased users' emails")?;
        Ok(())
    }

    async fn change(&self, tx: &mut PgConnection, change: Change) -> anyhow::Result<()> {
        // Column names are our own constants, never input.
        let (column, value) = change
            .column
            .map_or(("delivery_error", None), |(c, v)| (c, Some(v)));
        sqlx::query(&format!(
            "update {t}
                set status = coalesce($2, status),
                    {column} = coalesce($3, {column}),
                    sent_at = coalesce($4, sent_at),
                    version = $5
              where id = $1 and version <= $5",
            t = self.table
        ))
        .bind(change.id)
        .bind(change.status.map(EmailStatus::as_str))
        .bind(value)
        .bind(change.at)
        .bind(change.version)
        .execute(&mut *tx)
        .await
        .context("updating an email's delivery")?;
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

/// Every column of the view, and whether a page may leave it out. The key, the
/// client, the time (pages are ordered by it, cursors encode it) and the status (a row must
/// parse) are always read.
pub const COLUMNS: [Column; 20] = [
    ("id", Always),
    ("user_id", Always),
    ("subject", Shown),
    ("preheader", Shown),
    ("text", Shown),
    ("html", Shown),
    ("status", Always),
    ("generated_at", Always),
    ("engagement_score_at_time", Shown),
    ("generator", Shown),
    ("usage", Shown),
    ("trigger_sequence", Shown),
    ("trigger_position", Shown),
    ("version", Shown),
    ("sent_at", Shown),
    ("message_id", Shown),
    ("delivery_error", Shown),
    ("reviewed_by", Shown),
    ("review_reason", Shown),
    ("delivery_mode", Shown),
];
const _: () = assert!(COLUMNS.len() <= 64, "Columns has a bit per column");

/// Several clients' pages in one statement (one ordered index scan per page, each starting
/// after its cursor); one list per page, in the order asked. Columns outside `columns` are not
/// read: they hold their types' empty values ([`COLUMNS`]).
///
/// # Errors
/// The database failed or a row is unreadable.
pub async fn pages_of_users<'e>(
    executor: impl PgExecutor<'e>,
    pages: &[UserEmailsPage],
    columns: Columns,
) -> anyhow::Result<Vec<Vec<EmailRow>>> {
    let users: Vec<Uuid> = pages.iter().map(|k| k.user_id).collect();
    let after_at: Vec<Option<DateTime<Utc>>> = pages.iter().map(|k| k.after.map(|a| a.0)).collect();
    let after_id: Vec<Option<Uuid>> = pages.iter().map(|k| k.after.map(|a| a.1)).collect();
    let limits: Vec<i64> = pages.iter().map(|k| k.limit).collect();
    // A page without a cursor starts after (infinity, the greatest id): one bound the index
    // scan starts from for every page, where `after is null or ...` made PostgreSQL fetch
    // each client's rows by bitmap and sort them. `generated_at` is never infinite (it is a
    // clock's reading). The rows come in the scans' order; the pages are put in order here
    // rather than by one more sort.
    let read = columns.read(&COLUMNS);
    let columns = columns.select_list("e", &COLUMNS);
    let sql = format!(
        "select k.ord, {columns}
           from unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::bigint[])
                with ordinality as k(user_id, after_at, after_id, lim, ord)
          cross join lateral (
                select * from emails e
                 where e.user_id = k.user_id
                   and (e.generated_at, e.id)
                       < (coalesce(k.after_at, 'infinity'),
                          coalesce(k.after_id, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
                 order by e.generated_at desc, e.id desc
                 limit k.lim) e"
    );
    let rows = sqlx::query(&sql)
        .bind(&users)
        .bind(&after_at)
        .bind(&after_id)
        .bind(&limits)
        .fetch_all(executor)
        .await
        .context("loading pages of users' emails")?;
    let mut out: Vec<Vec<EmailRow>> = vec![Vec::new(); pages.len()];
    for row in &rows {
        let ord: i64 = sqlx::Row::try_get(row, 0)?;
        let index = usize::try_from(ord - 1).context("page ordinal")?;
        let email =
            EmailRow::decode(&Narrow::new(row, 1, read)).context("reading a page of emails")?;
        out.get_mut(index).context("page ordinal")?.push(email);
    }
    for page in &mut out {
        page.sort_unstable_by_key(|row| std::cmp::Reverse((row.generated_at, row.id)));
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
