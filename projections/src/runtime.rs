//! Running the consumers of the log in the background of a service.

use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::log::consumer::{Consumer, ConsumerHandle, ConsumerSettings, LogSignal};
use crate::views::emails::EmailsView;
use crate::views::users::{RecentUsers, UsersView};

/// Handles on the running read models, for read-your-writes.
#[derive(Debug, Clone)]
pub struct ReadModels {
    /// The `users` view's consumer.
    pub users: ConsumerHandle,
    /// The rows the `users` consumer of this process wrote most recently.
    pub recent_users: RecentUsers,
    /// The `emails` view's consumer.
    pub emails: ConsumerHandle,
    /// Wakes every consumer (also fed by the database's notifications).
    pub signal: LogSignal,
}

/// Starts the notification listener and the users and emails consumers on `tasks`; they run
/// until `stop`. `signal` wakes them: give the command bus the same one, so that its appends
/// wake them at once.
pub fn start(
    pool: &PgPool,
    vault: &std::sync::Arc<crate::vault::Vault>,
    settings: &ConsumerSettings,
    signal: &LogSignal,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> ReadModels {
    let signal = signal.clone();
    tasks.spawn(signal.clone().listen(pool.clone(), stop.clone()));
    let view = UsersView::live();
    let recent_users = view.recent();
    let users = Consumer::new(
        pool.clone(),
        vault.clone(),
        view,
        settings.clone(),
        signal.clone(),
    );
    // No request waits on the emails view: it reads larger batches less often.
    let emails = Consumer::new(
        pool.clone(),
        vault.clone(),
        EmailsView::live(),
        ConsumerSettings {
            gather: ConsumerSettings::background().gather,
            ..settings.clone()
        },
        signal.clone(),
    );
    let signal_for_trend = signal.clone();
    let models = ReadModels {
        users: users.handle(),
        recent_users,
        emails: emails.handle(),
        signal,
    };
    tasks.spawn(users.run(stop.clone()));
    tasks.spawn(emails.run(stop.clone()));
    // The daily trend: read by the dashboard, never waited on, so it lets events gather for
    // two seconds and folds them in one transaction (at most one every two seconds, whatever
    // the rate of commands, instead of one per command).
    let trend = Consumer::new(
        pool.clone(),
        vault.clone(),
        crate::views::trend::TrendView,
        crate::views::trend::TrendView::settings(),
        signal_for_trend,
    );
    tasks.spawn(trend.run(stop.clone()));
    models
}

/// Email settings of a service.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The writer.
    pub writer: crate::engagement::writer::ConfiguredWriter,
    /// Worker limits and retries.
    pub workers: crate::engagement::workers::WorkerSettings,
    /// When to write.
    pub process_manager: crate::engagement::process_manager::ProcessManagerSettings,
    /// How written emails leave (mode, letterhead, unsubscribe links).
    pub delivery: crate::engagement::delivery::DeliverySettings,
    /// The mail server and the sender's limits, when delivery is on.
    pub sender: Option<SenderParts>,
}

/// The sender's half of [`EmailSettings`].
#[derive(Debug, Clone)]
pub struct SenderParts {
    /// The mail server's client (built from its settings at start-up, where a bad setting
    /// stops the service with its name).
    pub mailer: std::sync::Arc<crate::engagement::delivery::smtp::Mailer>,
    /// Concurrency, retries, rate.
    pub settings: crate::engagement::delivery::SenderSettings,
}

/// What runs for emails, for health reports and the API.
#[derive(Clone)]
pub struct EmailRuntime {
    /// The writer and its breaker, in words.
    pub describe_writer: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
    /// The delivery in force.
    pub delivery: std::sync::Arc<crate::engagement::delivery::DeliverySettings>,
    /// The mail server (password hidden), when delivery is on.
    pub mail_server: Option<String>,
}

/// Starts the process manager, the email workers and (when delivery is on) the sender on
/// `tasks`.
///
pub fn start_emails(
    pool: &PgPool,
    bus: crate::commands::CommandBus,
    settings: EmailSettings,
    models: &ReadModels,
    wake: std::sync::Arc<tokio::sync::Notify>,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> EmailRuntime {
    let sends = std::sync::Arc::new(tokio::sync::Notify::new());
    let sender = settings.sender.as_ref().map(|parts| {
        (
            parts.mailer.clone(),
            parts.settings.clone(),
            parts.mailer.server().to_owned(),
        )
    });
    let manager = Consumer::new(
        pool.clone(),
        bus.vault().clone(),
        crate::engagement::process_manager::ProcessManager::new(settings.process_manager)
            .waking(wake.clone())
            .waking_sender(sends.clone()),
        ConsumerSettings::background(),
        models.signal.clone(),
    );
    tasks.spawn(manager.run(stop.clone()));
    let workers = crate::engagement::workers::EmailWorkers::new(
        pool.clone(),
        bus.clone(),
        settings.writer,
        settings.workers,
        wake,
    )
    .delivering(settings.delivery.clone());
    let breaker = workers.breaker();
    let label = workers.writer_label();
    tasks.spawn(workers.run(stop.clone()));
    let mut mail_server = None;
    if let Some((mailer, sender_settings, server)) = sender {
        let sender = crate::engagement::delivery::Sender::new(
            pool.clone(),
            bus,
            mailer,
            settings.delivery.clone(),
            sender_settings,
            sends,
        );
        tasks.spawn(sender.run(stop.clone()));
        mail_server = Some(server);
    }
    EmailRuntime {
        describe_writer: std::sync::Arc::new(move || format!("{label} ({})", breaker.describe())),
        delivery: std::sync::Arc::new(settings.delivery),
        mail_server,
    }
}
