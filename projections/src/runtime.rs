//! Running the consumers of the log in the background of a service.

use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consumer::{Consumer, ConsumerHandle, ConsumerSettings, LogSignal};
use crate::emails::EmailsView;
use crate::users::UsersView;

/// Handles on the running read models, for read-your-writes.
#[derive(Debug, Clone)]
pub struct ReadModels {
    /// The `users` view's consumer.
    pub users: ConsumerHandle,
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
    let users = Consumer::new(
        pool.clone(),
        UsersView::live(),
        settings.clone(),
        signal.clone(),
    );
    let emails = Consumer::new(
        pool.clone(),
        EmailsView::live(),
        settings.clone(),
        signal.clone(),
    );
    let models = ReadModels {
        users: users.handle(),
        emails: emails.handle(),
        signal,
    };
    tasks.spawn(users.run(stop.clone()));
    tasks.spawn(emails.run(stop.clone()));
    models
}
