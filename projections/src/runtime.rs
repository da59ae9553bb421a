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
/// until `stop`.
pub fn start(
    pool: &PgPool,
    settings: &ConsumerSettings,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> ReadModels {
    let signal = LogSignal::new();
    tasks.spawn(signal.clone().listen(pool.clone(), stop.clone()));
    let view = UsersView::live();
    let recent_users = view.recent();
    let users = Consumer::new(pool.clone(), view, settings.clone(), signal.clone());
    // No request waits on the emails view: it reads larger batches less often.
    let emails = Consumer::new(
        pool.clone(),
        EmailsView::live(),
        ConsumerSettings {
            gather: ConsumerSettings::background().gather,
            ..settings.clone()
        },
        signal.clone(),
    );
    let models = ReadModels {
        users: users.handle(),
        recent_users,
        emails: emails.handle(),
        signal,
    };
    tasks.spawn(users.run(stop.clone()));
    tasks.spawn(emails.run(stop.clone()));
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
}

/// Starts the process manager and the email workers on `tasks`; returns a function describing
/// the writer and its breaker for health reports.
pub fn start_emails(
    pool: &PgPool,
    bus: crate::commands::CommandBus,
    settings: EmailSettings,
    models: &ReadModels,
    wake: std::sync::Arc<tokio::sync::Notify>,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> std::sync::Arc<dyn Fn() -> String + Send + Sync> {
    let manager = Consumer::new(
        pool.clone(),
        crate::engagement::process_manager::ProcessManager::new(settings.process_manager)
            .waking(wake.clone()),
        ConsumerSettings::background(),
        models.signal.clone(),
    );
    tasks.spawn(manager.run(stop.clone()));
    let workers = crate::engagement::workers::EmailWorkers::new(
        pool.clone(),
        bus,
        settings.writer,
        settings.workers,
        wake,
    );
    let breaker = workers.breaker();
    let label = workers.writer_label();
    tasks.spawn(workers.run(stop.clone()));
    std::sync::Arc::new(move || format!("{label} ({})", breaker.describe()))
}
