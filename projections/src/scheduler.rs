//! Time passing: scores fall as days go by with no order. The policy records in each
//! `UserScored` when time alone will next change the score; the users view keeps that moment
//! (`next_score_change_at`), and the scheduler rescores, in bounded batches, exactly the users
//! whose moment has come.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use domain::client::{ClientAction, ClientError};
use futures::StreamExt as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commands::{CommandBus, CommandError, CommandMetadata};
use crate::log::consumer::ConsumerHandle;

/// The actor recorded on rescores the scheduler issues.
pub const SCHEDULER_ACTOR: &str = "scheduler";

/// Rescoring settings.
#[derive(Debug, Clone)]
pub struct RescoreSettings {
    /// Most users per batch.
    pub batch_size: i64,
    /// Pause between sweeps when nothing is due.
    pub interval: Duration,
    /// Commands in flight at once.
    pub concurrency: usize,
}

impl Default for RescoreSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            interval: Duration::from_secs(60),
            concurrency: 4,
        }
    }
}

/// Rescores the users whose score is due to change.
#[derive(Debug, Clone)]
pub struct Rescorer {
    pool: PgPool,
    bus: CommandBus,
    users: ConsumerHandle,
    settings: RescoreSettings,
}

impl Rescorer {
    /// A rescorer issuing commands on `bus`, reading due users from the view behind `users`.
    pub fn new(
        pool: PgPool,
        bus: CommandBus,
        users: ConsumerHandle,
        settings: RescoreSettings,
    ) -> Self {
        Self {
            pool,
            bus,
            users,
            settings,
        }
    }

    /// Rescores one batch of due users (as of the bus's clock) and waits until the users view
    /// shows the results, so the next sweep does not pick the same users again.
    ///
    /// # Errors
    /// The database failed.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        let now = self.bus.clock().now();
        let due =
            crate::views::users::due_for_rescore(&self.pool, now, self.settings.batch_size).await?;
        let meta = CommandMetadata::for_actor(SCHEDULER_ACTOR);
        let heads = futures::stream::iter(due.iter().copied())
            .map(|id| {
                let meta = meta.clone();
                async move { (id, self.bus.execute(id, ClientAction::Rescore, &meta).await) }
            })
            .buffer_unordered(self.settings.concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut last = None;
        for (id, result) in heads {
            match result {
                Ok(committed) => last = last.max(Some(committed.position)),
                Err(CommandError::Rejected(
                    ClientError::Deleted | ClientError::Erased | ClientError::NotFound,
                )) => {}
                Err(error) => {
                    tracing::warn!(user_id = %id, error = %format!("{error:#}"), "scheduled rescore failed")
                }
            }
        }
        if let Some(position) = last {
            self.users
                .wait_for(position, Duration::from_secs(30))
                .await?;
        }
        Ok(due.len())
    }

    /// Sweeps until `stop`: batch after batch while users are due, then every `interval`.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let pause = match self.sweep_once().await {
                Ok(n) if n as i64 >= self.settings.batch_size => Duration::ZERO,
                Ok(_) => self.settings.interval,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "rescore sweep failed");
                    self.settings.interval
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break,
            }
        }
    }
}

/// Rescores every client in the log with the bus's policy (after switching policy). Reads the
/// ids from the log, not a view, so it works while views are rebuilt. Returns how many clients
/// were rescored.
///
/// # Errors
/// The database failed.
pub async fn rescore_all(
    pool: &PgPool,
    bus: &CommandBus,
    concurrency: usize,
) -> anyhow::Result<usize> {
    let ids: Vec<String> = sqlx::query_scalar(
        "select distinct aggregate_id from events where aggregate_type = 'client' order by 1",
    )
    .fetch_all(pool)
    .await
    .context("listing clients")?;
    let meta = CommandMetadata::for_actor(SCHEDULER_ACTOR);
    let bus = Arc::new(bus.clone());
    let results = futures::stream::iter(ids.iter().filter_map(|id| Uuid::parse_str(id).ok()))
        .map(|id| {
            let (bus, meta) = (bus.clone(), meta.clone());
            async move { bus.execute(id, ClientAction::Rescore, &meta).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut rescored = 0;
    for result in results {
        match result {
            Ok(_) => rescored += 1,
            Err(CommandError::Rejected(
                ClientError::Deleted | ClientError::Erased | ClientError::NotFound,
            )) => {}
            Err(error) => return Err(anyhow::Error::new(error).context("rescoring a client")),
        }
    }
    Ok(rescored)
}
