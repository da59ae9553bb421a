//! Written emails leave: over SMTP, at a global rate, each asked about again just before it
//! goes, and every step recorded on the client's stream.
//!
//! A written email is released for sending when it is written under `auto`, or approved under
//! `review`; the process manager turns that event into a send job (`email_sends`), in the same
//! transaction as its checkpoint. The [`Sender`] claims due jobs (`for update skip locked`,
//! under a lease), loads the client, and cancels the email if the client left the audience
//! (unsubscribed, deleted, address suppressed, or, for an email an at-risk score asked for, no
//! longer at risk). Otherwise it takes the next slot of the global rate, hands the message to
//! the server and records `EmailSent` with its Message-ID; a 4xx or a timeout is retried with
//! backoff, a 5xx records `EmailFailed` (and, when the recipient was refused,
//! `AddressSuppressed`).
//!
//! Delivery is at least once. If the process dies after the server accepted a message and
//! before `EmailSent` is recorded, the job's lease expires and the message is sent again, with
//! the same Message-ID (derived from the email id), which lets receivers and providers drop the
//! duplicate. SMTP offers nothing stronger.
//!
//! # Layout
//! - [`smtp`]: `SMTP_URL`, the pooled transport, the message, the server's verdict.
//! - [`sends`]: the send jobs and the global rate, in PostgreSQL.
//! - [`unsubscribe`]: the one-click tokens.

pub mod sends;
pub mod smtp;
pub mod unsubscribe;

use std::sync::Arc;
use std::time::Duration;

use domain::client::{Client, ClientAction, ClientEvent, DeliveryAction, DeliveryMode, Lifecycle};
use rand::Rng as _;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use self::sends::{ClaimedSend, SendOutcome};
use self::smtp::{Mailer, Outgoing, SendError};
use self::unsubscribe::TokenKey;
use super::writer::Letterhead;
use crate::commands::{CommandBus, CommandMetadata};

/// The actor recorded on what the sender records.
pub const ACTOR: &str = "delivery";

/// How emails leave, for the writers (who record the mode and the unsubscribe link) and the
/// sender.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// `EMAIL_DELIVERY`.
    pub mode: DeliveryMode,
    /// Brand, shop link, postal address.
    pub letterhead: Letterhead,
    /// `PUBLIC_BASE_URL`: where unsubscribe links point.
    pub public_base_url: String,
    /// Signs the unsubscribe tokens.
    pub token_key: TokenKey,
}

impl DeliverySettings {
    /// Settings for tests and tools: delivery off, the default letterhead, links under
    /// `http://localhost:8080`, a fixed key.
    pub fn off() -> Self {
        Self {
            mode: DeliveryMode::Off,
            letterhead: Letterhead::default(),
            public_base_url: "http://localhost:8080".to_owned(),
            token_key: TokenKey::derive(&[0; 32]),
        }
    }

    /// The one-click unsubscribe URL of `email_id`, sent to `user_id`.
    pub fn unsubscribe_url(&self, user_id: Uuid, email_id: Uuid) -> String {
        format!(
            "{}/unsubscribe/{}",
            self.public_base_url.trim_end_matches('/'),
            self.token_key.token(user_id, email_id)
        )
    }
}

/// Sender settings.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// Messages in flight at once.
    pub concurrency: usize,
    /// Attempts before a message that keeps failing transiently is `FAILED`.
    pub max_attempts: i32,
    /// How long a claimed job is held before another worker may take it.
    pub lease: Duration,
    /// First retry delay (doubled each attempt, with jitter).
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How often to look for due jobs when nothing wakes the sender.
    pub poll_interval: Duration,
    /// `SMTP_MAX_PER_SECOND`, across all instances (`None`: unlimited).
    pub max_per_second: Option<f64>,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_attempts: 12,
            lease: Duration::from_secs(120),
            base_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(900),
            poll_interval: Duration::from_millis(500),
            max_per_second: Some(10.0),
        }
    }
}

/// The sender.
#[derive(Clone)]
pub struct Sender {
    pool: PgPool,
    bus: CommandBus,
    mailer: Arc<Mailer>,
    delivery: Arc<DeliverySettings>,
    settings: SenderSettings,
    wake: Arc<Notify>,
}

/// What to do with a job after an attempt.
enum Step {
    Finish(SendOutcome, Option<String>),
    Retry(String),
    /// Back without spending an attempt (the client could not be loaded).
    Release(String),
}

impl Sender {
    /// A sender recording through `bus`, sending with `mailer`, woken by `wake` (the process
    /// manager notifies it when it records a send job).
    pub fn new(
        pool: PgPool,
        bus: CommandBus,
        mailer: Arc<Mailer>,
        delivery: DeliverySettings,
        settings: SenderSettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            bus,
            mailer,
            delivery: Arc::new(delivery),
            settings,
            wake,
        }
    }

    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<ClaimedSend>> {
        let now = self.bus.clock().now();
        let lease = chrono::Duration::from_std(self.settings.lease)
            .unwrap_or_else(|_| chrono::Duration::minutes(2));
        sends::claim(&self.pool, now, limit as i64, now + lease).await
    }

    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut running = tokio::task::JoinSet::new();
        tracing::info!(concurrency = self.settings.concurrency, rate = ?self.settings.max_per_second, "sender started");
        while !stop.is_cancelled() {
            while running.try_join_next().is_some() {}
            let wanted = slots.available_permits();
            let claimed = if wanted == 0 {
                Ok(Vec::new())
            } else {
                self.claim(wanted).await
            };
            let claimed = claimed.unwrap_or_else(|error| {
                tracing::warn!(error = %format!("{error:#}"), "claiming send jobs failed");
                Vec::new()
            });
            if claimed.is_empty() {
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
                let sender = self.clone();
                running.spawn(async move {
                    sender.process(job).await;
                    drop(slot);
                });
            }
        }
        while running.join_next().await.is_some() {}
        tracing::info!("sender stopped");
    }

    /// Runs due jobs until none is left (tests and one-shot use); returns how many ran.
    ///
    /// # Errors
    /// The database failed.
    pub async fn drain_once(&self) -> anyhow::Result<usize> {
        let mut ran = 0;
        loop {
            let jobs = self.claim(self.settings.concurrency.max(1)).await?;
            if jobs.is_empty() {
                return Ok(ran);
            }
            ran += jobs.len();
            futures::future::join_all(jobs.into_iter().map(|job| self.process(job))).await;
        }
    }

    fn metadata(job: &ClaimedSend) -> CommandMetadata {
        CommandMetadata {
            actor: ACTOR.to_owned(),
            request_id: Some(job.email_id.to_string()),
            correlation_id: Some(job.email_id.to_string()),
            causation_id: None,
        }
    }

    /// Records `action` on the client's stream.
    async fn record(&self, job: &ClaimedSend, action: DeliveryAction) -> anyhow::Result<()> {
        self.bus
            .execute(
                job.user_id,
                ClientAction::Deliver(action),
                &Self::metadata(job),
            )
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The email as written, from its `EmailGenerated` event.
    async fn written(
        &self,
        user_id: Uuid,
        email_id: Uuid,
    ) -> anyhow::Result<Option<domain::client::EmailGenerated>> {
        for stored in crate::log::read_stream(&self.pool, self.bus.vault(), user_id).await? {
            if stored.event_type != "EmailGenerated" {
                continue;
            }
            if let ClientEvent::EmailGenerated(e) = stored.event()? {
                if e.email_id == email_id {
                    return Ok(Some(e));
                }
            }
        }
        Ok(None)
    }

    async fn attempt(&self, job: &ClaimedSend) -> anyhow::Result<Step> {
        let client = self.bus.load(job.user_id).await?;
        let Some(delivery) = client.email_delivery(job.email_id) else {
            return Ok(Step::Finish(
                SendOutcome::Gone,
                Some("no such email".into()),
            ));
        };
        if !delivery.queued {
            // Sent, rejected or cancelled since it was queued.
            return Ok(Step::Finish(
                SendOutcome::Gone,
                Some(delivery.status.to_string()),
            ));
        }
        if matches!(client.lifecycle(), Lifecycle::Deleted | Lifecycle::Erased) {
            // Their stream takes no more events (not even a cancellation): nothing is sent.
            let reason = left_the_audience(&client, false).unwrap_or("the user is gone");
            return Ok(Step::Finish(SendOutcome::Gone, Some(reason.to_owned())));
        }
        let Some(written) = self.written(job.user_id, job.email_id).await? else {
            return Ok(Step::Finish(
                SendOutcome::Gone,
                Some("no such email".into()),
            ));
        };
        if let Some(reason) = left_the_audience(&client, written.trigger.is_some()) {
            self.record(
                job,
                DeliveryAction::Cancel {
                    email_id: job.email_id,
                    reason: reason.to_owned(),
                },
            )
            .await?;
            return Ok(Step::Finish(
                SendOutcome::Cancelled,
                Some(reason.to_owned()),
            ));
        }
        if let Some(rate) = self.settings.max_per_second {
            let wait = sends::reserve_slot(&self.pool, rate).await?;
            tokio::time::sleep(wait).await;
        }
        let outgoing = Outgoing {
            email_id: job.email_id,
            to_name: client.name().to_owned(),
            to: client.email().to_owned(),
            subject: written.subject,
            text: written.text,
            html: written.html,
            unsubscribe_url: self.delivery.unsubscribe_url(job.user_id, job.email_id),
        };
        let sent = self.mailer.send(&outgoing).await;
        match &sent {
            Ok(()) => crate::metrics::email_sent(),
            Err(SendError::Transient(_)) => crate::metrics::email_send_failed(false),
            Err(SendError::Permanent { .. }) => crate::metrics::email_send_failed(true),
        }
        match sent {
            Ok(()) => {
                let message_id = self.mailer.message_id(job.email_id);
                // The message has left: if this cannot be recorded, the lease expires and it
                // is sent again with the same Message-ID (at least once).
                self.record(
                    job,
                    DeliveryAction::Sent {
                        email_id: job.email_id,
                        message_id,
                    },
                )
                .await?;
                Ok(Step::Finish(SendOutcome::Sent, None))
            }
            Err(SendError::Transient(reply)) => {
                if job.attempts + 1 >= self.settings.max_attempts {
                    self.fail(job, &reply, false).await
                } else {
                    Ok(Step::Retry(reply))
                }
            }
            Err(SendError::Permanent { reply, recipient }) => {
                self.fail(job, &reply, recipient).await
            }
        }
    }

    async fn fail(&self, job: &ClaimedSend, reply: &str, recipient: bool) -> anyhow::Result<Step> {
        self.record(
            job,
            DeliveryAction::Failed {
                email_id: job.email_id,
                reply: reply.to_owned(),
                recipient_refused: recipient,
            },
        )
        .await?;
        Ok(Step::Finish(SendOutcome::Failed, Some(reply.to_owned())))
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let exp = self
            .settings
            .base_backoff
            .saturating_mul(1 << attempts.clamp(0, 16))
            .min(self.settings.max_backoff);
        exp / 2 + exp.mul_f64(rand::thread_rng().gen_range(0.0..0.5))
    }

    async fn process(&self, job: ClaimedSend) {
        // The send continues the trace of the decision that released it.
        let span = tracing::info_span!(
            "email send",
            email = %job.email_id,
            user_id = %job.user_id,
            attempt = job.attempts + 1
        );
        crate::trace::follow(&span, job.traceparent.as_deref());
        self.work_on(job).instrument(span).await;
    }

    async fn work_on(&self, job: ClaimedSend) {
        let step = match self.attempt(&job).await {
            Ok(step) => step,
            Err(e) => Step::Release(format!("{e:#}")),
        };
        let now = self.bus.clock().now();
        let after = |d: Duration| {
            now + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::minutes(10))
        };
        let settled = match step {
            Step::Finish(outcome, error) => {
                if outcome == SendOutcome::Failed {
                    tracing::warn!(email = %job.email_id, "the mail server refused an email for good");
                }
                sends::finish(
                    &self.pool,
                    &job,
                    outcome,
                    job.attempts + 1,
                    error.as_deref(),
                    now,
                )
                .await
            }
            Step::Retry(reply) => {
                let attempts = job.attempts + 1;
                tracing::info!(email = %job.email_id, attempts, reply = %reply, "sending failed; will retry");
                sends::put_back(
                    &self.pool,
                    &job,
                    attempts,
                    &reply,
                    after(self.backoff(attempts)),
                    now,
                )
                .await
            }
            Step::Release(error) => {
                tracing::warn!(email = %job.email_id, error = %error, "send job released");
                sends::put_back(
                    &self.pool,
                    &job,
                    job.attempts,
                    &error,
                    after(self.settings.base_backoff),
                    now,
                )
                .await
            }
        };
        if let Err(e) = settled {
            tracing::error!(email = %job.email_id, error = %format!("{e:#}"), "could not settle a send job");
        }
    }
}

/// Why the client is no longer someone to send this email to, if so.
fn left_the_audience(client: &Client, triggered: bool) -> Option<&'static str> {
    match client.lifecycle() {
        Lifecycle::New => Some("the user does not exist"),
        Lifecycle::Deleted => Some("the user was deleted"),
        Lifecycle::Erased => Some("the user was erased"),
        Lifecycle::Unsubscribed => Some("the user unsubscribed"),
        Lifecycle::Active if client.is_suppressed() => Some("the user's address is suppressed"),
        Lifecycle::Active if triggered && !client.is_at_risk() => {
            Some("the user is no longer at risk")
        }
        Lifecycle::Active => None,
    }
}
