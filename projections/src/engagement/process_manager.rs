//! The engagement process manager: a consumer of the log that turns "this client is at risk"
//! into an email job, once per triggering event.
//!
//! On a `UserScored` whose band is at risk (the domain's one rule, [`UserScored::is_at_risk`],
//! the same that sets the `atRisk` flag), for a client who is active (not opted out, not
//! deleted), outside the cooldown and without an open job, it records a job keyed by the
//! triggering event, in the same transaction as its checkpoint: a replay or a restart finds
//! the job there and creates no second one. The job is due after a delay, so that a client in
//! the middle of ordering is not emailed; the workers judge it again when they pick it up. It
//! keeps its own record of each client's status and last email (the `process_manager_clients`
//! table), from the log, so each decision is exact at its event's position.
//!
//! It also releases written emails for sending: an email written under `auto`, or approved
//! under `review`, becomes a send job (`email_sends`) in the same transaction, and the sender
//! is woken. It writes no email to a suppressed address (until the client's address changes).
//!
//! A score recorded by an import of old history (cause `imported`) makes no job: importing
//! ten years of orders must not email everyone who lapsed at some point in them. The present
//! decides at the client's next score.
//!
//! [`UserScored::is_at_risk`]: domain::client::UserScored::is_at_risk

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use domain::client::{
    ClientEvent, ClientStatus, DeliveryMode, EngagementGroup, ScoreCause, UserScored,
};
use sqlx::PgConnection;
use tokio::sync::Notify;
use tracing::Instrument as _;
use uuid::Uuid;

use super::delivery::sends::{self, NewSend};
use super::jobs::{self, NewJob};
use crate::log::consumer::Projection;
use crate::log::StoredEvent;
use crate::trace;

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

/// When the process manager writes. Who is at risk is not a setting here: the scoring
/// policy's band decides.
#[derive(Debug, Clone)]
pub struct ProcessManagerSettings {
    /// Minimum time between two emails to one client.
    pub cooldown: Duration,
    /// How long a new trigger waits before it is due (`EMAIL_TRIGGER_DELAY_SECS`).
    pub trigger_delay: Duration,
}

impl Default for ProcessManagerSettings {
    fn default() -> Self {
        Self {
            cooldown: Duration::days(7),
            trigger_delay: Duration::seconds(60),
        }
    }
}

/// Whether a score may make a job: an at-risk score, unless it came from imported history (a
/// lapse long past is no reason to email today; the client's next score, as time passes or
/// they act, judges the present).
fn triggers(scored: &UserScored) -> bool {
    scored.is_at_risk() && scored.cause != ScoreCause::Imported
}

/// The process manager's projection.
#[derive(Debug, Clone, Default)]
pub struct ProcessManager {
    settings: ProcessManagerSettings,
    /// Wakes this process's email workers when a batch recorded a job.
    jobs: Arc<Notify>,
    recorded: Arc<AtomicBool>,
    /// Wakes this process's sender when a batch released an email.
    sends: Arc<Notify>,
    released: Arc<AtomicBool>,
}

impl ProcessManager {
    /// A process manager with these settings.
    pub fn new(settings: ProcessManagerSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// Also wakes `jobs` (the email workers) after committing a batch that recorded a job.
    #[must_use]
    pub fn waking(mut self, jobs: Arc<Notify>) -> Self {
        self.jobs = jobs;
        self
    }

    /// Also wakes `sends` (the sender) after committing a batch that released an email.
    #[must_use]
    pub fn waking_sender(mut self, sends: Arc<Notify>) -> Self {
        self.sends = sends;
        self
    }

    async fn release(
        &self,
        tx: &mut PgConnection,
        stored: &StoredEvent,
        email_id: Uuid,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let send = NewSend {
            email_id,
            user_id: stored.user_id,
            at,
            // The decision's span (see `apply`): the job continues the trace from it.
            traceparent: trace::current_traceparent(),
        };
        if sends::record(tx, &send).await? {
            self.released.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn consider(
        &self,
        tx: &mut PgConnection,
        stored: &StoredEvent,
        scored: &UserScored,
    ) -> anyhow::Result<()> {
        if !triggers(scored) {
            return Ok(());
        }
        let at = scored.as_of;
        let client: Option<(String, Option<DateTime<Utc>>, bool, bool)> = sqlx::query_as(
            "select status, last_email_at, suppressed, holdout
               from process_manager_clients where user_id = $1",
        )
        .bind(stored.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((status, last_email_at, suppressed, held_out)) = client else {
            return Ok(());
        };
        let status: ClientStatus = status.parse()?;
        let cooled = last_email_at.is_none_or(|last| last + self.settings.cooldown <= at);
        if status != ClientStatus::Active || !cooled || suppressed {
            return Ok(());
        }
        // One open job per client: two low scores in a row make one email.
        if jobs::has_open(tx, stored.user_id).await? {
            return Ok(());
        }
        let job = NewJob {
            id: job_id(stored.position.global_position),
            user_id: stored.user_id,
            trigger_position: stored.position.global_position,
            trigger_sequence: stored.sequence,
            score: scored.score,
            created_at: at,
            due_at: at + self.settings.trigger_delay,
            held_out,
            // The decision's span (see `apply`): the job continues the trace from it.
            traceparent: trace::current_traceparent(),
        };
        if held_out {
            // The same rule decided, so the comparison is fair; the client is not emailed,
            // and the trigger counts toward the cooldown as an email would.
            if jobs::record(tx, &job).await? {
                sqlx::query(
                    "update process_manager_clients
                        set last_email_at = greatest(coalesce(last_email_at, $2), $2)
                      where user_id = $1",
                )
                .bind(stored.user_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                tracing::info!(user_id = %stored.user_id, trigger = job.trigger_position, "held-out trigger recorded");
            }
            return Ok(());
        }
        if jobs::record(tx, &job).await? {
            self.recorded.store(true, Ordering::SeqCst);
            tracing::info!(user_id = %stored.user_id, score = scored.score, trigger = job.trigger_position, "email job recorded");
        }
        Ok(())
    }
}

impl Projection for ProcessManager {
    fn name(&self) -> &str {
        "process-manager"
    }

    fn touches(&self, events: &[StoredEvent]) -> anyhow::Result<bool> {
        for stored in events {
            let touches = match stored.event_type.as_str() {
                "UserCreated" | "UserUnsubscribed" | "UserDeleted" | "UserErased"
                | "EmailGenerated" | "EmailApproved" | "AddressSuppressed" | "UserUpdated" => true,
                // Only an at-risk score may make a job.
                "UserScored" => {
                    matches!(stored.event()?, ClientEvent::UserScored(e) if triggers(&e))
                }
                _ => false,
            };
            if touches {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn committed(&self) {
        if self.recorded.swap(false, Ordering::SeqCst) {
            self.jobs.notify_one();
        }
        if self.released.swap(false, Ordering::SeqCst) {
            self.sends.notify_one();
        }
    }

    fn wants_metadata(&self) -> bool {
        // Each event's traceparent: the decisions and jobs continue its trace.
        true
    }

    fn payload_types(&self) -> Option<Vec<String>> {
        Some(
            [
                "UserCreated",
                "UserUpdated",
                "UserScored",
                "EmailGenerated",
                "EmailApproved",
                "AddressSuppressed",
                "UserUnsubscribed",
                "UserDeleted",
            ]
            .map(str::to_owned)
            .to_vec(),
        )
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        // Status changes are written together, in one statement, but always before anything
        // that reads or updates the clients' rows, so every decision still sees the status as
        // of its own event (an import creates thousands of clients in one batch).
        let mut statuses: Vec<ClientChange> = Vec::new();
        for stored in events {
            let status = match stored.event_type.as_str() {
                "UserCreated" => {
                    // The group decides whether the client's triggers write emails.
                    let ClientEvent::UserCreated(e) = stored.event()? else {
                        continue;
                    };
                    let held_out = e.group == Some(EngagementGroup::Holdout);
                    statuses.push((stored.user_id, ClientStatus::Active, Some(held_out)));
                    continue;
                }
                "UserUnsubscribed" => Some(ClientStatus::Unsubscribed),
                "UserDeleted" => Some(ClientStatus::Deleted),
                "UserErased" => {
                    // Nothing more is written or sent to them, and the jobs forget what their
                    // failures said (an LLM or SMTP error may quote the client).
                    statuses.push((stored.user_id, ClientStatus::Erased, None));
                    record_statuses(tx, &mut statuses).await?;
                    crate::vault::erasure::scrub_jobs(tx, stored.user_id).await?;
                    continue;
                }
                "UserScored" | "EmailGenerated" | "EmailApproved" | "AddressSuppressed"
                | "UserUpdated" => None,
                _ => continue,
            };
            if let Some(status) = status {
                statuses.push((stored.user_id, status, None));
                continue;
            }
            match stored.event()? {
                ClientEvent::UserScored(e) if triggers(&e) => {
                    record_statuses(tx, &mut statuses).await?;
                    self.consider(tx, stored, &e)
                        .instrument(decision_span(stored))
                        .await?;
                }
                ClientEvent::EmailGenerated(e) => {
                    record_statuses(tx, &mut statuses).await?;
                    sqlx::query(
                        "update process_manager_clients
                            set last_email_at = greatest(coalesce(last_email_at, $2), $2)
                          where user_id = $1",
                    )
                    .bind(stored.user_id)
                    .bind(e.generated_at)
                    .execute(&mut *tx)
                    .await?;
                    if e.delivery == Some(DeliveryMode::Auto) {
                        self.release(tx, stored, e.email_id, e.generated_at)
                            .instrument(decision_span(stored))
                            .await?;
                    }
                }
                ClientEvent::EmailApproved(e) => {
                    self.release(tx, stored, e.email_id, e.approved_at)
                        .instrument(decision_span(stored))
                        .await?;
                }
                ClientEvent::AddressSuppressed(_) => {
                    record_statuses(tx, &mut statuses).await?;
                    set_suppressed(tx, stored.user_id, true).await?;
                }
                ClientEvent::UserUpdated(e) if e.changed.iter().any(|c| c == "email") => {
                    record_statuses(tx, &mut statuses).await?;
                    set_suppressed(tx, stored.user_id, false).await?;
                }
                _ => {}
            }
        }
        record_statuses(tx, &mut statuses).await
    }
}

/// The span of a decision about `stored`, continuing the trace of the command that wrote it.
fn decision_span(stored: &StoredEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "process manager decision",
        event = %stored.event_type,
        user_id = %stored.user_id,
        position = stored.position.global_position,
    );
    trace::follow(&span, trace::from_metadata(&stored.metadata));
    span
}

/// Records whether the client's current address is suppressed.
async fn set_suppressed(
    tx: &mut PgConnection,
    user_id: Uuid,
    suppressed: bool,
) -> anyhow::Result<()> {
    sqlx::query("update process_manager_clients set suppressed = $2 where user_id = $1")
        .bind(user_id)
        .bind(suppressed)
        .execute(&mut *tx)
        .await
        .context("recording a suppressed address")?;
    Ok(())
}

/// A client's new status, and whether they are held out when the event says (creation).
type ClientChange = (Uuid, ClientStatus, Option<bool>);

/// Writes the status changes gathered so far (the last status of each client wins, and the
/// group once known is kept) and forgets them.
async fn record_statuses(
    tx: &mut PgConnection,
    statuses: &mut Vec<ClientChange>,
) -> anyhow::Result<()> {
    if statuses.is_empty() {
        return Ok(());
    }
    let mut last: std::collections::HashMap<Uuid, (ClientStatus, Option<bool>)> =
        std::collections::HashMap::with_capacity(statuses.len());
    for (id, status, held_out) in statuses.drain(..) {
        let entry = last.entry(id).or_insert((status, held_out));
        entry.0 = status;
        entry.1 = held_out.or(entry.1);
    }
    // Creations carry the group; other changes leave it as it is.
    let (created, changed): (Vec<_>, Vec<_>) =
        last.into_iter().partition(|(_, (_, h))| h.is_some());
    for (rows, set) in [
        (
            created,
            "status = excluded.status, holdout = excluded.holdout",
        ),
        (changed, "status = excluded.status"),
    ] {
        if rows.is_empty() {
            continue;
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len());
        let mut held = Vec::with_capacity(rows.len());
        for (id, (status, held_out)) in rows {
            ids.push(id);
            values.push(status.as_str());
            held.push(held_out.unwrap_or(false));
        }
        // `set` is one of the two constants above.
        sqlx::query(&format!(
            "insert into process_manager_clients (user_id, status, holdout)
             select * from unnest($1::uuid[], $2::text[], $3::bool[])
             on conflict (user_id) do update set {set}"
        ))
        .bind(&ids)
        .bind(&values)
        .bind(&held)
        .execute(&mut *tx)
        .await
        .context("recording clients' statuses")?;
    }
    Ok(())
}
