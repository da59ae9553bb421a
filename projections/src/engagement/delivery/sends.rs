//! The `email_sends` table (durable send jobs) and `email_send_rate` (the global send rate).
//! Every statement on them lives here.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A send job the process manager records.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSend {
    /// The email.
    pub email_id: Uuid,
    /// The client.
    pub user_id: Uuid,
    /// When it was released.
    pub at: DateTime<Utc>,
    /// The trace the send continues: that of the process manager's decision to release it
    /// (none when tracing is off).
    pub traceparent: Option<String>,
}

/// Records `send` unless the email has one already (a replay). Returns whether it was new.
///
/// # Errors
/// The database failed.
pub async fn record(tx: &mut PgConnection, send: &NewSend) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "insert into email_sends (email_id, user_id, next_attempt_at, created_at, updated_at,
                                  traceparent)
         values ($1, $2, $3, $3, $3, $4)
         on conflict (email_id) do nothing",
    )
    .bind(send.email_id)
    .bind(send.user_id)
    .bind(send.at)
    .bind(send.traceparent.as_deref())
    .execute(tx)
    .await
    .context("recording a send job")?;
    Ok(done.rows_affected() == 1)
}

/// How many send jobs wait for the mail server (pending, or running under a lease).
///
/// # Errors
/// The database failed.
pub async fn waiting<'e>(executor: impl PgExecutor<'e>) -> anyhow::Result<i64> {
    sqlx::query_scalar("select count(*) from email_sends where status in ('PENDING', 'RUNNING')")
        .fetch_one(executor)
        .await
        .context("counting waiting send jobs")
}

/// A send job a worker holds.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ClaimedSend {
    /// The email.
    pub email_id: Uuid,
    /// The client.
    pub user_id: Uuid,
    /// Attempts spent before this one.
    pub attempts: i32,
    /// The lease: only its holder may settle the job.
    pub lease_until: DateTime<Utc>,
    /// The trace to continue.
    pub traceparent: Option<String>,
}

/// Claims up to `limit` due send jobs (pending and due, or running under an expired lease)
/// until `lease_until`, skipping jobs other workers hold.
///
/// # Errors
/// The database failed.
pub async fn claim<'e>(
    executor: impl PgExecutor<'e>,
    now: DateTime<Utc>,
    limit: i64,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<Vec<ClaimedSend>> {
    sqlx::query_as(
        "with due as (
             select email_id from email_sends
              where (status = 'PENDING' and next_attempt_at <= $1)
                 or (status = 'RUNNING' and lease_until < $1)
              order by next_attempt_at, email_id
              limit $2
              for update skip locked)
         update email_sends s
            set status = 'RUNNING', lease_until = $3, updated_at = $1
           from due
          where s.email_id = due.email_id
         returning s.email_id, s.user_id, s.attempts, s.lease_until, s.traceparent",
    )
    .bind(now)
    .bind(limit)
    .bind(lease_until)
    .fetch_all(executor)
    .await
    .context("claiming send jobs")
}

/// How a send job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The server accepted it.
    Sent,
    /// Refused for good.
    Failed,
    /// The client left the audience.
    Cancelled,
    /// The email was settled elsewhere (rejected, already sent, or unknown).
    Gone,
}

impl SendOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "SENT",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Gone => "GONE",
        }
    }
}

/// Settles a held job for good. Returns whether the lease was still this worker's.
///
/// # Errors
/// The database failed.
pub async fn finish<'e>(
    executor: impl PgExecutor<'e>,
    job: &ClaimedSend,
    outcome: SendOutcome,
    attempts: i32,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "update email_sends
            set status = 'DONE', outcome = $3, attempts = $4, last_error = $5,
                lease_until = null, updated_at = $6
          where email_id = $1 and status = 'RUNNING' and lease_until = $2",
    )
    .bind(job.email_id)
    .bind(job.lease_until)
    .bind(outcome.as_str())
    .bind(attempts)
    .bind(error)
    .bind(now)
    .execute(executor)
    .await
    .context("settling a send job")?;
    Ok(done.rows_affected() == 1)
}

/// Puts a held job back, due at `due` (a retry spends an attempt; a release does not).
///
/// # Errors
/// The database failed.
pub async fn put_back<'e>(
    executor: impl PgExecutor<'e>,
    job: &ClaimedSend,
    attempts: i32,
    error: &str,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "update email_sends
            set status = 'PENDING', attempts = $3, last_error = $4, next_attempt_at = $5,
                lease_until = null, updated_at = $6
          where email_id = $1 and status = 'RUNNING' and lease_until = $2",
    )
    .bind(job.email_id)
    .bind(job.lease_until)
    .bind(attempts)
    .bind(error)
    .bind(due)
    .bind(now)
    .execute(executor)
    .await
    .context("putting a send job back")?;
    Ok(done.rows_affected() == 1)
}

/// The client an email of ours was sent to, from its send job.
///
/// # Errors
/// The database failed.
pub async fn recipient<'e>(
    executor: impl PgExecutor<'e>,
    email_id: Uuid,
) -> anyhow::Result<Option<Uuid>> {
    sqlx::query_scalar("select user_id from email_sends where email_id = $1")
        .bind(email_id)
        .fetch_optional(executor)
        .await
        .context("finding an email's recipient")
}

/// Reserves the next send slot under a global rate of `per_second` and returns how long to
/// wait for it. One row, one statement, the database's clock: every instance shares it.
///
/// # Errors
/// The database failed.
pub async fn reserve_slot<'e>(
    executor: impl PgExecutor<'e>,
    per_second: f64,
) -> anyhow::Result<std::time::Duration> {
    let interval = 1.0 / per_second.max(0.001);
    let wait: f64 = sqlx::query_scalar(
        "update email_send_rate
            set next_slot = greatest(next_slot, clock_timestamp()) + make_interval(secs => $1)
          returning extract(epoch from (next_slot - make_interval(secs => $1) - clock_timestamp()))::float8",
    )
    .bind(interval)
    .fetch_one(executor)
    .await
    .context("reserving a send slot")?;
    Ok(std::time::Duration::from_secs_f64(wait.max(0.0)))
}
