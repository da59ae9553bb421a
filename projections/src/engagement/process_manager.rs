//! The engagement process manager: a consumer of the log that turns "this client is at risk"
//! into an email job, once per triggering event.
//!
//! On `UserScored` below the threshold for a client who is active (not opted out, not
//! deleted) and outside the cooldown, it records a job keyed by the triggering event, in the
//! same transaction as its checkpoint: a replay or a restart finds the job there and creates
//! no second one. It keeps its own record of each client's status and last email, from the
//! log, so each decision is exact at its event's position.

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use domain::client::ClientEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::log::consumer::Projection;
use crate::log::StoredEvent;

/// Namespace of the ids derived from log positions and jobs.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6e67_6167_656d_656e_742d_656e_6769_6e65);

/// The job created for the event at `trigger_position` (the same event always gives the same
/// job).
pub fn job_id(trigger_position: i64) -> Uuid {
    Uuid::new_v5(
        &ID_NAMESPACE,
        format!("email-job:{trigger_position}").as_bytes(),
    )
}

/// The email a job records (the same job always records the same email).
pub fn email_id(job_id: Uuid) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("email:{job_id}").as_bytes())
}

/// When the process manager writes.
#[derive(Debug, Clone)]
pub struct ProcessManagerSettings {
    /// Scores below this trigger an email.
    pub threshold: u8,
    /// Minimum time between two emails to one client.
    pub cooldown: Duration,
}

impl Default for ProcessManagerSettings {
    fn default() -> Self {
        Self {
            threshold: 50,
            cooldown: Duration::days(7),
        }
    }
}

/// The process manager's projection.
#[derive(Debug, Clone, Default)]
pub struct ProcessManager {
    settings: ProcessManagerSettings,
}

impl ProcessManager {
    /// A process manager with these settings.
    pub fn new(settings: ProcessManagerSettings) -> Self {
        Self { settings }
    }

    async fn consider(
        &self,
        tx: &mut PgConnection,
        stored: &StoredEvent,
        score: u8,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if score >= self.settings.threshold {
            return Ok(());
        }
        let client: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "select status, last_email_at from process_manager_clients where user_id = $1",
        )
        .bind(stored.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((status, last_email_at)) = client else {
            return Ok(());
        };
        let cooled = last_email_at.is_none_or(|last| last + self.settings.cooldown <= at);
        if status != "ACTIVE" || !cooled {
            return Ok(());
        }
        // One open job per client: two low scores in a row make one email.
        let open: bool = sqlx::query_scalar(
            "select exists (select 1 from email_jobs where user_id = $1 and status in ('PENDING', 'RUNNING'))",
        )
        .bind(stored.user_id)
        .fetch_one(&mut *tx)
        .await?;
        if open {
            return Ok(());
        }
        sqlx::query(
            "insert into email_jobs (id, user_id, trigger_position, trigger_sequence, score, status,
                                     next_attempt_at, created_at, updated_at)
             values ($1, $2, $3, $4, $5, 'PENDING', $6, $6, $6)
             on conflict (trigger_position) do nothing",
        )
        .bind(job_id(stored.position.global_position))
        .bind(stored.user_id)
        .bind(stored.position.global_position)
        .bind(stored.sequence)
        .bind(i16::from(score))
        .bind(at)
        .execute(&mut *tx)
        .await
        .context("recording an email job")?;
        tracing::info!(user_id = %stored.user_id, score, trigger = stored.position.global_position, "email job recorded");
        Ok(())
    }
}

impl Projection for ProcessManager {
    fn name(&self) -> &str {
        "process-manager"
    }

    fn payload_types(&self) -> Option<Vec<String>> {
        Some(
            [
                "UserCreated",
                "UserScored",
                "EmailGenerated",
                "UserUnsubscribed",
                "UserDeleted",
            ]
            .map(str::to_owned)
            .to_vec(),
        )
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for stored in events {
            let status = match stored.event_type.as_str() {
                "UserCreated" => Some("ACTIVE"),
                "UserUnsubscribed" => Some("UNSUBSCRIBED"),
                "UserDeleted" => Some("DELETED"),
                "UserScored" | "EmailGenerated" => None,
                _ => continue,
            };
            if let Some(status) = status {
                sqlx::query(
                    "insert into process_manager_clients (user_id, status) values ($1, $2)
                     on conflict (user_id) do update set status = excluded.status",
                )
                .bind(stored.user_id)
                .bind(status)
                .execute(&mut *tx)
                .await?;
                continue;
            }
            match stored.event()? {
                ClientEvent::UserScored(e) => self.consider(tx, stored, e.score, e.as_of).await?,
                ClientEvent::EmailGenerated(e) => {
                    sqlx::query(
                        "update process_manager_clients
                            set last_email_at = greatest(coalesce(last_email_at, $2), $2)
                          where user_id = $1",
                    )
                    .bind(stored.user_id)
                    .bind(e.generated_at)
                    .execute(&mut *tx)
                    .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
