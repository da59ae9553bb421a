//! The `email_jobs` table: durable email work, one job per triggering event. Every statement
//! on the table lives here; the process manager records jobs, the workers claim and settle
//! them, the API lists and retries them.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::UnknownStatus;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

/// Where an email job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting until it is due.
    Pending,
    /// Held by a worker under a lease.
    Running,
    /// The email was recorded.
    Done,
    /// Failed on every attempt; an operator may put it back.
    Dead,
    /// The client no longer needed the email (recovered, opted out, deleted, in cooldown).
    Skipped,
    /// The client is in the holdout: the trigger is recorded for the uplift report and never
    /// runs.
    HeldOut,
}

impl JobStatus {
    /// Every status.
    pub const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Running,
        Self::Done,
        Self::Dead,
        Self::Skipped,
        Self::HeldOut,
    ];

    /// The table's spelling (checked by its constraint).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Done => "DONE",
            Self::Dead => "DEAD",
            Self::Skipped => "SKIPPED",
            Self::HeldOut => "HELD_OUT",
        }
    }

    /// Whether an operator may put the job back in the queue.
    pub fn retryable(self) -> bool {
        matches!(self, Self::Dead | Self::Skipped)
    }

    /// Whether the job may still run.
    pub fn open(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

impl std::str::FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .iter()
            .copied()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus {
                kind: "email job",
                value: s.to_owned(),
            })
    }
}

impl TryFrom<String> for JobStatus {
    type Error = UnknownStatus;

    fn try_from(s: String) -> Result<Self, UnknownStatus> {
        s.parse()
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobRow {
    /// Id (derived from the trigger's position).
    pub id: Uuid,
    /// The client.
    pub user_id: Uuid,
    /// Status.
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    /// Attempts spent.
    pub attempts: i32,
    /// The last failure or skip reason.
    pub last_error: Option<String>,
    /// When it is next due (meaningful while open).
    pub next_attempt_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// The email it recorded, once done.
    pub email_id: Option<Uuid>,
    /// Log position of the triggering event.
    pub trigger_position: i64,
}

/// The columns of a [`JobRow`].
const JOB_COLUMNS: &str = "id, user_id, status, attempts, last_error, next_attempt_at, created_at, email_id, trigger_position";

/// A job the process manager records.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Id (derived from the trigger's position).
    pub id: Uuid,
    /// The client.
    pub user_id: Uuid,
    /// Log position of the triggering `UserScored`.
    pub trigger_position: i64,
    /// Its sequence in the client's stream.
    pub trigger_sequence: i64,
    /// The score it carried.
    pub score: u8,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When a worker may first pick it up.
    pub due_at: DateTime<Utc>,
    /// A held-out client's trigger: recorded as `HELD_OUT`, never run.
    pub held_out: bool,
    /// The trace the job's work continues: that of the process manager's decision to record
    /// it (none when tracing is off).
    pub traceparent: Option<String>,
}

/// Records `job` unless its trigger already made one (a replay). Returns whether it was new.
///
/// # Errors
/// The database failed.
pub async fn record(tx: &mut PgConnection, job: &NewJob) -> anyhow::Result<bool> {
    let inserted = sqlx::query(
        "insert into email_jobs (id, user_id, trigger_position, trigger_sequence, score, status,
                                 next_attempt_at, created_at, updated_at, traceparent)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
         on conflict (trigger_position) do nothing",
    )
    .bind(job.id)
    .bind(job.user_id)
    .bind(job.trigger_position)
    .bind(job.trigger_sequence)
    .bind(i16::from(job.score))
    .bind(
        if job.held_out {
            JobStatus::HeldOut
        } else {
            JobStatus::Pending
        }
        .as_str(),
    )
    .bind(job.due_at)
    .bind(job.created_at)
    .bind(job.traceparent.as_deref())
    .execute(tx)
    .await
    .context("recording an email job")?;
    Ok(inserted.rows_affected() == 1)
}

/// Whether the client has a job that may still run (pending or running).
///
/// # Errors
/// The database failed.
pub async fn has_open(tx: &mut PgConnection, user_id: Uuid) -> anyhow::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from email_jobs where user_id = $1 and status in ($2, $3))",
    )
    .bind(user_id)
    .bind(JobStatus::Pending.as_str())
    .bind(JobStatus::Running.as_str())
    .fetch_one(tx)
    .await
    .context("looking for an open email job")
}

/// A job a worker holds.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Claimed {
    /// Id.
    pub id: Uuid,
    /// The client.
    pub user_id: Uuid,
    /// Log position of the triggering event.
    pub trigger_position: i64,
    /// Its sequence in the client's stream.
    pub trigger_sequence: i64,
    /// Attempts spent before this one.
    pub attempts: i32,
    /// The lease: only its holder may settle the job.
    pub lease_until: DateTime<Utc>,
    /// The trace to continue.
    pub traceparent: Option<String>,
}

/// Claims up to `limit` due jobs (pending and due, or running with an expired lease, whose
/// worker died) until `lease_until`. Jobs other workers hold are skipped, not waited for.
///
/// # Errors
/// The database failed.
pub async fn claim<'e>(
    executor: impl PgExecutor<'e>,
    now: DateTime<Utc>,
    limit: i64,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<Vec<Claimed>> {
    sqlx::query_as(
        "with due as (
             select id from email_jobs
              where (status = $4 and next_attempt_at <= $1)
                 or (status = $5 and lease_until < $1)
              order by next_attempt_at, id
              limit $2
              for update skip locked)
         update email_jobs j
            set status = $5, lease_until = $3, updated_at = $1
           from due
          where j.id = due.id
         returning j.id, j.user_id, j.trigger_position, j.trigger_sequence, j.attempts, j.lease_until,
                   j.traceparent",
    )
    .bind(now)
    .bind(limit)
    .bind(lease_until)
    .bind(JobStatus::Pending.as_str())
    .bind(JobStatus::Running.as_str())
    .fetch_all(executor)
    .await
    .context("claiming email jobs")
}

/// How an attempt ended, as the table records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The new status.
    pub status: JobStatus,
    /// Attempts spent now.
    pub attempts: i32,
    /// The failure or skip reason.
    pub last_error: Option<String>,
    /// When it is due again (kept as it was when `None`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The email recorded.
    pub email_id: Option<Uuid>,
}

/// Settles a claimed job, if `claimed`'s lease is still the current one (a worker whose lease
/// expired and was taken over settles nothing). Returns whether it did.
///
/// # Errors
/// The database failed.
pub async fn settle<'e>(
    executor: impl PgExecutor<'e>,
    claimed: &Claimed,
    settlement: &Settlement,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "update email_jobs
            set status = $3, attempts = $4, last_error = $5,
                next_attempt_at = coalesce($6, next_attempt_at), email_id = coalesce($7, email_id),
                lease_until = null, updated_at = $8
          where id = $1 and status = $9 and lease_until = $2",
    )
    .bind(claimed.id)
    .bind(claimed.lease_until)
    .bind(settlement.status.as_str())
    .bind(settlement.attempts)
    .bind(&settlement.last_error)
    .bind(settlement.next_attempt_at)
    .bind(settlement.email_id)
    .bind(now)
    .bind(JobStatus::Running.as_str())
    .execute(executor)
    .await
    .context("settling an email job")?;
    Ok(done.rows_affected() == 1)
}

/// A page of jobs, newest first, optionally in one status, after a `(created_at, id)` cursor.
/// Fetches `limit` rows.
///
/// # Errors
/// The database failed or a row is unreadable.
pub async fn page<'e>(
    executor: impl PgExecutor<'e>,
    status: Option<JobStatus>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> anyhow::Result<Vec<JobRow>> {
    let mut q =
        QueryBuilder::<Postgres>::new(format!("select {JOB_COLUMNS} from email_jobs where true"));
    // Conditions only when present, so the status index serves the filtered list.
    if let Some(status) = status {
        q.push(" and status = ").push_bind(status.as_str());
    }
    if let Some((at, id)) = after {
        q.push(" and (created_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    // The limit is written into the SQL, not bound, so the plan knows the page is small.
    q.push(format!(" order by created_at desc, id desc limit {limit}"));
    q.build_query_as()
        .fetch_all(executor)
        .await
        .context("listing email jobs")
}

/// How many jobs there are, optionally in one status.
///
/// # Errors
/// The database failed.
pub async fn count<'e>(
    executor: impl PgExecutor<'e>,
    status: Option<JobStatus>,
) -> anyhow::Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("select count(*) from email_jobs where true");
    if let Some(status) = status {
        q.push(" and status = ").push_bind(status.as_str());
    }
    q.build_query_scalar()
        .fetch_one(executor)
        .await
        .context("counting email jobs")
}

/// How many jobs there are in each status that has any.
///
/// # Errors
/// The database failed.
pub async fn count_by_status<'e>(
    executor: impl PgExecutor<'e>,
) -> anyhow::Result<Vec<(String, i64)>> {
    sqlx::query_as("select status, count(*) from email_jobs group by status")
        .fetch_all(executor)
        .await
        .context("counting email jobs by status")
}

/// What putting a job back in the queue did.
#[derive(Debug, Clone, PartialEq)]
pub enum Retry {
    /// It is pending again, due now, with its attempts reset.
    Retried(JobRow),
    /// No such job.
    NotFound,
    /// The job is in a status that cannot be retried.
    NotRetryable(JobStatus),
}

/// Puts a dead or skipped job back in the queue, due at `now`.
///
/// # Errors
/// The database failed or a row is unreadable.
pub async fn retry(pool: &sqlx::PgPool, id: Uuid, now: DateTime<Utc>) -> anyhow::Result<Retry> {
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "update email_jobs
            set status = $3, attempts = 0, next_attempt_at = $2, lease_until = null, updated_at = $2
          where id = $1 and status in ($4, $5)
          returning {JOB_COLUMNS}"
    ))
    .bind(id)
    .bind(now)
    .bind(JobStatus::Pending.as_str())
    .bind(JobStatus::Dead.as_str())
    .bind(JobStatus::Skipped.as_str())
    .fetch_optional(pool)
    .await
    .context("retrying an email job")?;
    if let Some(row) = row {
        return Ok(Retry::Retried(row));
    }
    let status: Option<String> = sqlx::query_scalar("select status from email_jobs where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .context("reading an email job's status")?;
    Ok(match status {
        None => Retry::NotFound,
        Some(status) => Retry::NotRetryable(status.parse()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_and_unknown_ones_are_errors() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(*status));
        }
        assert!("pending".parse::<JobStatus>().is_err());
        assert!(JobStatus::Dead.retryable() && !JobStatus::Done.retryable());
    }
}
