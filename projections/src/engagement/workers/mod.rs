//! Email workers: claim due jobs (`for update skip locked`, with a lease, so several instances
//! can run and a job held by a worker that died is picked up again), judge each again against
//! the client as they stand now, ask the writer, record the email through the aggregate, and
//! retry failures with backoff and jitter.
//!
//! A job is judged again when it is picked up, by the client's last recorded band (a manual
//! score counts) and eligibility, read from the aggregate itself: a client who ordered or opted
//! out since the trigger gets no email, and the job ends `SKIPPED` with the reason. The brief
//! is built from that same state, never an older one. The aggregate checks once more when the
//! email is recorded, so a change during the writing is caught too.
//!
//! Toward the writer: a concurrency limit and a [`breaker::Breaker`]. The LLM's
//! requests-per-minute limit lives in the LLM client, so the template is never held back.

pub mod breaker;

use std::sync::Arc;
use std::time::Duration;

use domain::client::{Client, ClientAction, ClientError, EmailTrigger, Lifecycle, RecordEmail};
use rand::Rng as _;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use self::breaker::{Breaker, Permit};
use super::delivery::DeliverySettings;
use super::jobs::{self, Claimed, JobStatus, Settlement};
use super::process_manager::email_id;
use super::writer::template::TemplateWriter;
use super::writer::{render, Brief, EmailWriter, WriteError, Written};
use crate::commands::{CommandBus, CommandError, CommandMetadata};

/// The actor recorded on emails the workers record.
pub const ACTOR: &str = "process-manager";

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs in flight at once (and so LLM calls at once).
    pub concurrency: usize,
    /// Attempts before a job is dead.
    pub max_attempts: i32,
    /// How long a claimed job is held before another worker may take it.
    pub lease: Duration,
    /// First retry delay (doubled each attempt, with jitter).
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How often to look for due jobs when nothing wakes the workers.
    pub poll_interval: Duration,
    /// Write with the template when the LLM has failed for good.
    pub fallback_to_template: bool,
    /// Failures in a row that open the breaker.
    pub breaker_threshold: u32,
    /// First cool-off of an open breaker (doubled while probes fail, up to 10 minutes).
    pub breaker_cool_off: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_attempts: 5,
            lease: Duration::from_secs(120),
            base_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            poll_interval: Duration::from_millis(500),
            fallback_to_template: true,
            breaker_threshold: 3,
            breaker_cool_off: Duration::from_secs(30),
        }
    }
}

/// Where a job goes after an attempt.
enum Outcome {
    Done(Uuid),
    Skipped(String),
    /// Back to the queue without spending an attempt (the breaker is open, the view lags).
    Release(String, Duration),
    Failed(WriteError),
}

/// The email workers.
pub struct EmailWorkers<W: EmailWriter> {
    pool: PgPool,
    bus: CommandBus,
    writer: Arc<W>,
    settings: WorkerSettings,
    breaker: Arc<Breaker>,
    wake: Arc<Notify>,
    delivery: Arc<DeliverySettings>,
}

impl<W: EmailWriter> Clone for EmailWorkers<W> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            bus: self.bus.clone(),
            writer: self.writer.clone(),
            settings: self.settings.clone(),
            breaker: self.breaker.clone(),
            wake: self.wake.clone(),
            delivery: self.delivery.clone(),
        }
    }
}

impl<W: EmailWriter> EmailWorkers<W> {
    /// Workers recording through `bus`, writing with `writer`, woken by `wake` (the process
    /// manager and the API notify it when a job is recorded or put back), and looking for due
    /// jobs every `poll_interval` (jobs wait out the trigger delay, and other instances'
    /// process managers record jobs too).
    pub fn new(
        pool: PgPool,
        bus: CommandBus,
        writer: W,
        settings: WorkerSettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(
                settings.breaker_threshold,
                settings.breaker_cool_off,
            )),
            pool,
            bus,
            writer: Arc::new(writer),
            settings,
            wake,
            delivery: Arc::new(DeliverySettings::off()),
        }
    }

    /// Records emails under `delivery`'s mode, signed with its letterhead and carrying its
    /// unsubscribe links (the default: delivery off).
    #[must_use]
    pub fn delivering(mut self, delivery: DeliverySettings) -> Self {
        self.delivery = Arc::new(delivery);
        self
    }

    /// The breaker (its state shows in the health report).
    pub fn breaker(&self) -> Arc<Breaker> {
        self.breaker.clone()
    }

    /// The writer's label.
    pub fn writer_label(&self) -> String {
        self.writer.label()
    }

    async fn claim(&self, limit: i64) -> anyhow::Result<Vec<Claimed>> {
        let now = self.bus.clock().now();
        let lease = chrono::Duration::from_std(self.settings.lease)
            .unwrap_or_else(|_| chrono::Duration::minutes(2));
        jobs::claim(&self.pool, now, limit, now + lease).await
    }

    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut running = tokio::task::JoinSet::new();
        tracing::info!(writer = %self.writer.label(), concurrency = self.settings.concurrency, "email workers started");
        while !stop.is_cancelled() {
            while running.try_join_next().is_some() {}
            let permit = self.breaker.permit();
            let wanted = match permit {
                Permit::WaitUntil(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = stop.cancelled() => break,
                    }
                    continue;
                }
                Permit::Probe => 1,
                Permit::Call => slots.available_permits(),
            };
            let claimed = if wanted == 0 {
                Ok(Vec::new())
            } else {
                self.claim(wanted as i64).await
            };
            let claimed = match claimed {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "claiming email jobs failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                if permit == Permit::Probe {
                    // Nothing to probe with: let the next call probe.
                    self.breaker.release_probe();
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                    () = stop.cancelled() => break,
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                }
                continue;
            }
            for job in claimed {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let worker = self.clone();
                let probe = permit == Permit::Probe;
                running.spawn(async move {
                    worker.process(job, probe).await;
                    drop(slot);
                });
            }
            if permit == Permit::Probe {
                // Wait for the probe's verdict before claiming more.
                while running.join_next().await.is_some() {}
            }
        }
        while running.join_next().await.is_some() {}
        tracing::info!("email workers stopped");
    }

    /// Runs claimed jobs until none is due (tests and one-shot use); returns how many ran.
    ///
    /// # Errors
    /// The database failed.
    pub async fn drain_once(&self) -> anyhow::Result<usize> {
        let mut ran = 0;
        loop {
            let probe = match self.breaker.permit() {
                Permit::WaitUntil(_) => return Ok(ran),
                Permit::Probe => true,
                Permit::Call => false,
            };
            let jobs = self
                .claim(if probe {
                    1
                } else {
                    self.settings.concurrency.max(1) as i64
                })
                .await?;
            if jobs.is_empty() {
                if probe {
                    self.breaker.release_probe();
                }
                return Ok(ran);
            }
            ran += jobs.len();
            futures::future::join_all(jobs.into_iter().map(|job| self.process(job, probe))).await;
        }
    }

    /// Judges the job again against the client as they stand now, and builds the brief from
    /// that same state.
    async fn brief(&self, user_id: Uuid) -> anyhow::Result<Result<Brief, Outcome>> {
        let client = self.bus.load(user_id).await?;
        let now = self.bus.clock().now();
        if let Some(reason) = no_email_now(&client, now, self.bus.services().email_cooldown) {
            return Ok(Err(Outcome::Skipped(reason.to_owned())));
        }
        let orders = client.orders();
        Ok(Ok(Brief {
            name: client.name().to_owned(),
            order_count: i32::try_from(orders.order_count).unwrap_or(i32::MAX),
            average_order_value: domain::values::Money::from_cents(
                orders.average_order_value_cents,
                "aov",
            )
            .unwrap_or(domain::values::Money::ZERO)
            .to_string(),
            last_order_date: orders.last_order_at,
            days_since_last_order: orders.last_order_at.map(|t| (now - t).num_days().max(0)),
            preferred_categories: client.preferred_categories().to_vec(),
            engagement_score: client.score().map_or(0, |s| i32::from(s.score)),
        }))
    }

    async fn record(&self, job: &Claimed, written: Written) -> Outcome {
        let email = email_id(job.id);
        let action = ClientAction::RecordEmail(RecordEmail {
            email_id: email,
            content: render(
                written,
                &self.delivery.letterhead,
                Some(&self.delivery.unsubscribe_url(job.user_id, email)),
            ),
            trigger: Some(EmailTrigger {
                sequence: u64::try_from(job.trigger_sequence).unwrap_or_default(),
                global_position: job.trigger_position,
            }),
            delivery: self.delivery.mode,
        });
        let metadata = CommandMetadata {
            actor: ACTOR.to_owned(),
            request_id: Some(job.id.to_string()),
            correlation_id: Some(job.id.to_string()),
            causation_id: Some(job.trigger_position.to_string()),
        };
        match self.bus.execute(job.user_id, action, &metadata).await {
            Ok(_) => Outcome::Done(email),
            Err(CommandError::Rejected(
                e @ (ClientError::Unsubscribed
                | ClientError::AddressSuppressed
                | ClientError::Deleted
                | ClientError::Erased
                | ClientError::NotAtRisk
                | ClientError::EmailCooldown { .. }
                | ClientError::NotFound),
            )) => Outcome::Skipped(e.to_string()),
            Err(e) => Outcome::Failed(WriteError::retryable(format!(
                "recording the email failed: {e}"
            ))),
        }
    }

    async fn attempt(&self, job: &Claimed, probe: bool) -> Outcome {
        let brief = match self.brief(job.user_id).await {
            Ok(Ok(brief)) => brief,
            Ok(Err(outcome)) => return outcome,
            Err(e) => return Outcome::Release(format!("{e:#}"), Duration::from_secs(1)),
        };
        match self.writer.write(&brief).await {
            Ok(written) => {
                self.breaker.success();
                self.record(job, written).await
            }
            Err(error) => {
                let open = self.breaker.failure();
                if error.retryable && (probe || open) {
                    // The provider is down: wait for the breaker, spending no attempt.
                    return Outcome::Release(error.message, self.settings.breaker_cool_off);
                }
                Outcome::Failed(error)
            }
        }
    }

    async fn process(&self, job: Claimed, probe: bool) {
        // The job continues the trace of the decision that recorded it.
        let span = tracing::info_span!(
            "email job",
            job = %job.id,
            user_id = %job.user_id,
            attempt = job.attempts + 1
        );
        crate::trace::follow(&span, job.traceparent.as_deref());
        self.work_on(job, probe).instrument(span).await;
    }

    async fn work_on(&self, job: Claimed, probe: bool) {
        let outcome = self.attempt(&job, probe).await;
        let outcome = match outcome {
            Outcome::Failed(error) => {
                let attempts = job.attempts + 1;
                if (!error.retryable || attempts >= self.settings.max_attempts)
                    && self.settings.fallback_to_template
                {
                    tracing::warn!(job = %job.id, error = %error.message, "LLM failed for good; writing with the template");
                    match self.fallback(&job).await {
                        Some(outcome) => outcome,
                        None => Outcome::Failed(error),
                    }
                } else {
                    Outcome::Failed(error)
                }
            }
            other => other,
        };
        if let Err(e) = self.settle(&job, outcome).await {
            // The lease will expire and another worker will take the job again.
            tracing::error!(job = %job.id, error = %format!("{e:#}"), "could not settle an email job");
        }
    }

    async fn fallback(&self, job: &Claimed) -> Option<Outcome> {
        let brief = match self.brief(job.user_id).await {
            Ok(Ok(brief)) => brief,
            Ok(Err(outcome)) => return Some(outcome),
            Err(_) => return None,
        };
        let written = TemplateWriter.write(&brief).await.ok()?;
        Some(self.record(job, written).await)
    }

    fn backoff(&self, attempts: i32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .settings
            .base_backoff
            .saturating_mul(1 << attempts.clamp(0, 16))
            .min(self.settings.max_backoff);
        // Half fixed, half jitter, so retries of many jobs spread out.
        let jittered = exp / 2 + exp.mul_f64(rand::thread_rng().gen_range(0.0..0.5));
        jittered.max(retry_after.unwrap_or_default())
    }

    async fn settle(&self, job: &Claimed, outcome: Outcome) -> anyhow::Result<()> {
        let now = self.bus.clock().now();
        let after = |d: Duration| {
            now + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::minutes(10))
        };
        let settlement = match outcome {
            Outcome::Done(email) => Settlement {
                status: JobStatus::Done,
                attempts: job.attempts,
                last_error: None,
                next_attempt_at: None,
                email_id: Some(email),
            },
            Outcome::Skipped(reason) => {
                tracing::info!(job = %job.id, reason = %reason, "email job skipped");
                Settlement {
                    status: JobStatus::Skipped,
                    attempts: job.attempts,
                    last_error: Some(reason),
                    next_attempt_at: None,
                    email_id: None,
                }
            }
            Outcome::Release(reason, wait) => Settlement {
                status: JobStatus::Pending,
                attempts: job.attempts,
                last_error: Some(reason),
                next_attempt_at: Some(after(wait)),
                email_id: None,
            },
            Outcome::Failed(error) => {
                let attempts = job.attempts + 1;
                let dead = !error.retryable || attempts >= self.settings.max_attempts;
                if dead {
                    tracing::warn!(job = %job.id, attempts, error = %error.message, "email job dead");
                }
                Settlement {
                    status: if dead {
                        JobStatus::Dead
                    } else {
                        JobStatus::Pending
                    },
                    attempts,
                    next_attempt_at: (!dead)
                        .then(|| after(self.backoff(attempts, error.retry_after))),
                    last_error: Some(error.message),
                    email_id: None,
                }
            }
        };
        jobs::settle(&self.pool, job, &settlement, now).await?;
        Ok(())
    }
}

/// Why the client should get no email at `now`, if so: the one check made when a job is
/// picked up (and again by the aggregate when the email is recorded).
fn no_email_now(
    client: &Client,
    now: chrono::DateTime<chrono::Utc>,
    cooldown: chrono::Duration,
) -> Option<&'static str> {
    match client.lifecycle() {
        Lifecycle::New => Some("the user does not exist"),
        Lifecycle::Deleted => Some("the user was deleted"),
        Lifecycle::Erased => Some("the user was erased"),
        Lifecycle::Unsubscribed => Some("the user unsubscribed"),
        Lifecycle::Active if client.is_suppressed() => Some("the user's address is suppressed"),
        Lifecycle::Active if !client.is_at_risk() => Some("the user is no longer at risk"),
        Lifecycle::Active if !client.may_be_emailed(now, cooldown) => {
            Some("an email was written within the cooldown")
        }
        Lifecycle::Active => None,
    }
}
