//! Email workers: claim due jobs (`for update skip locked`, with a lease, so several instances
//! can run and a job held by a worker that died is picked up again), ask the writer, record the
//! email through the aggregate, and retry failures with backoff and jitter.
//!
//! Toward the LLM: a concurrency limit, a requests-per-minute limit, and a circuit breaker.
//! After repeated failures in a row the breaker opens: workers stop calling the provider for a
//! cool-off and due jobs wait without spending attempts; then one probe tests the provider, and
//! success resumes the flow. An outage of an hour dead-letters nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::{ClientAction, ClientError, EmailTrigger, RecordEmail};
use rand::Rng as _;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commands::{CommandBus, CommandError, CommandMetadata};
use crate::engagement::process_manager::email_id;
use crate::views::users::load_user;
use crate::engagement::writer::template::TemplateWriter;
use crate::engagement::writer::{render, Brief, EmailWriter, WriteError, Written};

/// The actor recorded on emails the workers record.
pub const ACTOR: &str = "process-manager";

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs in flight at once (and so LLM calls at once).
    pub concurrency: usize,
    /// Most LLM calls per minute.
    pub requests_per_minute: u32,
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
            requests_per_minute: 60,
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

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant, cool_off: Duration },
    HalfOpen { probing: bool, cool_off: Duration },
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Call freely.
    Call,
    /// Make one probe call.
    Probe,
    /// Do not call until then.
    WaitUntil(Instant),
}

/// A circuit breaker toward the LLM.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<BreakerState>,
    threshold: u32,
    first_cool_off: Duration,
}

const MAX_COOL_OFF: Duration = Duration::from_secs(600);

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cool_off: Duration) -> Self {
        Self {
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            threshold: threshold.max(1),
            first_cool_off: cool_off,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks to call the provider.
    pub fn permit(&self) -> Permit {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => Permit::Call,
            BreakerState::Open { until, cool_off } if Instant::now() >= until => {
                *state = BreakerState::HalfOpen {
                    probing: true,
                    cool_off,
                };
                Permit::Probe
            }
            BreakerState::Open { until, .. } => Permit::WaitUntil(until),
            BreakerState::HalfOpen {
                probing: false,
                cool_off,
            } => {
                *state = BreakerState::HalfOpen {
                    probing: true,
                    cool_off,
                };
                Permit::Probe
            }
            BreakerState::HalfOpen { probing: true, .. } => {
                Permit::WaitUntil(Instant::now() + Duration::from_millis(200))
            }
        }
    }

    /// A call succeeded.
    pub fn success(&self) {
        *self.lock() = BreakerState::Closed { failures: 0 };
    }

    /// A call failed; returns true if the breaker is (now) open.
    pub fn failure(&self) -> bool {
        let mut state = self.lock();
        let next = match *state {
            BreakerState::Closed { failures } if failures + 1 >= self.threshold => {
                tracing::warn!(failures = failures + 1, "LLM circuit opened");
                BreakerState::Open {
                    until: Instant::now() + self.first_cool_off,
                    cool_off: self.first_cool_off,
                }
            }
            BreakerState::Closed { failures } => BreakerState::Closed {
                failures: failures + 1,
            },
            BreakerState::HalfOpen { cool_off, .. } | BreakerState::Open { cool_off, .. } => {
                let cool_off = (cool_off * 2).min(MAX_COOL_OFF);
                BreakerState::Open {
                    until: Instant::now() + cool_off,
                    cool_off,
                }
            }
        };
        *state = next;
        !matches!(next, BreakerState::Closed { .. })
    }

    /// The state in words, for the health report.
    pub fn describe(&self) -> String {
        match *self.lock() {
            BreakerState::Closed { .. } => "circuit closed".to_owned(),
            BreakerState::Open { until, .. } => {
                format!(
                    "circuit open, next probe in {}s",
                    until.saturating_duration_since(Instant::now()).as_secs()
                )
            }
            BreakerState::HalfOpen { .. } => "circuit half-open, probing".to_owned(),
        }
    }
}

/// Spaces LLM calls evenly to stay within a requests-per-minute limit.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    /// At most `per_minute` calls a minute.
    pub fn new(per_minute: u32) -> Self {
        Self {
            interval: Duration::from_secs(60) / per_minute.max(1),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// A claimed job.
#[derive(Debug, Clone)]
struct Claimed {
    id: Uuid,
    user_id: Uuid,
    trigger_position: i64,
    trigger_sequence: i64,
    attempts: i32,
    lease_until: DateTime<Utc>,
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
    limiter: Arc<RateLimiter>,
    wake: Arc<Notify>,
    log_signal: Option<crate::log::consumer::LogSignal>,
}

impl<W: EmailWriter> Clone for EmailWorkers<W> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            bus: self.bus.clone(),
            writer: self.writer.clone(),
            settings: self.settings.clone(),
            breaker: self.breaker.clone(),
            limiter: self.limiter.clone(),
            wake: self.wake.clone(),
            log_signal: self.log_signal.clone(),
        }
    }
}

impl<W: EmailWriter> EmailWorkers<W> {
    /// Workers recording through `bus`, writing with `writer`, woken by `wake` (and by new
    /// events in the log, after which the process manager may have recorded a job).
    pub fn new(
        pool: PgPool,
        bus: CommandBus,
        writer: W,
        settings: WorkerSettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            log_signal: None,
            breaker: Arc::new(Breaker::new(
                settings.breaker_threshold,
                settings.breaker_cool_off,
            )),
            limiter: Arc::new(RateLimiter::new(settings.requests_per_minute)),
            pool,
            bus,
            writer: Arc::new(writer),
            settings,
            wake,
        }
    }

    /// Also wakes on new events in the log.
    #[must_use]
    pub fn woken_by(mut self, signal: crate::log::consumer::LogSignal) -> Self {
        self.log_signal = Some(signal);
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
        let lease_until = now
            + chrono::Duration::from_std(self.settings.lease)
                .unwrap_or_else(|_| chrono::Duration::minutes(2));
        let rows: Vec<(Uuid, Uuid, i64, i64, i32)> = sqlx::query_as(
            "with due as (
                 select id from email_jobs
                  where (status = 'PENDING' and next_attempt_at <= $1)
                     or (status = 'RUNNING' and lease_until < $1)
                  order by next_attempt_at, id
                  limit $2
                  for update skip locked)
             update email_jobs j
                set status = 'RUNNING', lease_until = $3, updated_at = $1
               from due
              where j.id = due.id
             returning j.id, j.user_id, j.trigger_position, j.trigger_sequence, j.attempts",
        )
        .bind(now)
        .bind(limit)
        .bind(lease_until)
        .fetch_all(&self.pool)
        .await
        .context("claiming email jobs")?;
        Ok(rows
            .into_iter()
            .map(
                |(id, user_id, trigger_position, trigger_sequence, attempts)| Claimed {
                    id,
                    user_id,
                    trigger_position,
                    trigger_sequence,
                    attempts,
                    lease_until,
                },
            )
            .collect())
    }

    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut log_wake = self
            .log_signal
            .as_ref()
            .map(crate::log::consumer::LogSignal::subscribe_changes);
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
                let log_changed = async {
                    match log_wake.as_mut() {
                        // The process manager needs a moment to turn the event into a job.
                        Some(rx) => {
                            let _ = rx.changed().await;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = log_changed => {}
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

    async fn brief(&self, user_id: Uuid) -> anyhow::Result<Result<Brief, Outcome>> {
        let Some(user) = load_user(&self.pool, user_id).await? else {
            return Ok(Err(Outcome::Release(
                "the users view has not caught up yet".into(),
                Duration::from_secs(1),
            )));
        };
        match user.status.as_str() {
            "DELETED" => return Ok(Err(Outcome::Skipped("the user was deleted".into()))),
            "UNSUBSCRIBED" => return Ok(Err(Outcome::Skipped("the user unsubscribed".into()))),
            _ => {}
        }
        let now = self.bus.clock().now();
        Ok(Ok(Brief {
            name: user.name,
            order_count: user.order_count,
            average_order_value: domain::values::Money::from_cents(
                user.average_order_value_cents,
                "aov",
            )
            .unwrap_or(domain::values::Money::ZERO)
            .to_string(),
            last_order_date: user.last_order_date,
            days_since_last_order: user.last_order_date.map(|t| (now - t).num_days().max(0)),
            preferred_categories: user.preferred_categories,
            engagement_score: i32::from(user.engagement_score),
        }))
    }

    async fn record(&self, job: &Claimed, written: Written) -> Outcome {
        let email = email_id(job.id);
        let action = ClientAction::RecordEmail(RecordEmail {
            email_id: email,
            content: render(written),
            trigger: Some(EmailTrigger {
                sequence: u64::try_from(job.trigger_sequence).unwrap_or_default(),
                global_position: job.trigger_position,
            }),
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
                | ClientError::Deleted
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
        self.limiter.acquire().await;
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
        // (status, attempts, last error, next attempt, email)
        let (status, attempts, last_error, next_attempt, email): (
            &str,
            i32,
            Option<String>,
            Option<DateTime<Utc>>,
            Option<Uuid>,
        ) = match outcome {
            Outcome::Done(email) => ("DONE", job.attempts, None, None, Some(email)),
            Outcome::Skipped(reason) => ("SKIPPED", job.attempts, Some(reason), None, None),
            Outcome::Release(reason, wait) => (
                "PENDING",
                job.attempts,
                Some(reason),
                Some(after(wait)),
                None,
            ),
            Outcome::Failed(error) => {
                let attempts = job.attempts + 1;
                let dead = !error.retryable || attempts >= self.settings.max_attempts;
                if dead {
                    tracing::warn!(job = %job.id, attempts, error = %error.message, "email job dead");
                    ("DEAD", attempts, Some(error.message), None, None)
                } else {
                    let wait = self.backoff(attempts, error.retry_after);
                    (
                        "PENDING",
                        attempts,
                        Some(error.message),
                        Some(after(wait)),
                        None,
                    )
                }
            }
        };
        // Only the holder of the current lease may settle the job.
        let query = sqlx::query(
            "update email_jobs
                set status = $3, attempts = $4, last_error = $5,
                    next_attempt_at = coalesce($6, next_attempt_at), email_id = coalesce($7, email_id),
                    lease_until = null, updated_at = $8
              where id = $1 and status = 'RUNNING' and lease_until = $2",
        )
        .bind(job.id)
        .bind(job.lease_until)
        .bind(status)
        .bind(attempts)
        .bind(last_error)
        .bind(next_attempt)
        .bind(email)
        .bind(now);
        query
            .execute(&self.pool)
            .await
            .context("settling an email job")?;
        Ok(())
    }
}

impl Breaker {
    /// Gives back a probe permit that found no job to probe with.
    pub fn release_probe(&self) {
        let mut state = self.lock();
        if let BreakerState::HalfOpen { cool_off, .. } = *state {
            *state = BreakerState::HalfOpen {
                probing: false,
                cool_off,
            };
        }
    }
}

/// The writer chosen at start-up: the LLM when a key is configured, else the template.
#[derive(Debug, Clone)]
pub enum ConfiguredWriter {
    /// The chat-completions client.
    Llm(crate::engagement::writer::openai::OpenAiWriter),
    /// The offline template.
    Template(TemplateWriter),
}

impl EmailWriter for ConfiguredWriter {
    fn label(&self) -> String {
        match self {
            Self::Llm(w) => w.label(),
            Self::Template(w) => w.label(),
        }
    }

    async fn write(&self, brief: &Brief) -> Result<Written, WriteError> {
        match self {
            Self::Llm(w) => w.write(brief).await,
            Self::Template(w) => w.write(brief).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_failures_in_a_row_and_one_probe_closes_it() {
        let breaker = Breaker::new(3, Duration::from_secs(30));
        assert_eq!(breaker.permit(), Permit::Call);
        assert!(!breaker.failure());
        assert!(!breaker.failure());
        assert!(breaker.failure(), "the third failure in a row opens it");
        assert!(matches!(breaker.permit(), Permit::WaitUntil(_)));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        assert!(
            matches!(breaker.permit(), Permit::WaitUntil(_)),
            "one probe at a time"
        );
        assert!(breaker.failure(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(
            matches!(breaker.permit(), Permit::WaitUntil(_)),
            "for twice as long"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        breaker.success();
        assert_eq!(breaker.permit(), Permit::Call);
        assert_eq!(breaker.describe(), "circuit closed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_calls() {
        let limiter = RateLimiter::new(600);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
