//! Rebuilding a read model from the start of the log into a fresh table, then swapping it in.
//!
//! Reads keep going against the live table for the whole rebuild: the fresh table is filled
//! beside it, and the swap is one short transaction that holds the live consumer's checkpoint
//! lock, applies the last events, moves the live checkpoint and renames the tables.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::PgPool;

use crate::log;
use crate::log::consumer::{set_checkpoint, Consumer, ConsumerSettings, LogSignal, Projection};
use crate::log::position::LogPosition;
use crate::vault::Vault;
use crate::views::emails::EmailsView;
use crate::views::users::UsersView;

/// A read model that can be rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadModel {
    /// The `users` view.
    Users,
    /// The `emails` view.
    Emails,
}

impl ReadModel {
    /// Every read model.
    pub const ALL: [Self; 2] = [Self::Users, Self::Emails];

    /// The live consumer's (and table's) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Emails => "emails",
        }
    }

    fn fresh_table(self) -> &'static str {
        match self {
            Self::Users => "users_rebuild",
            Self::Emails => "emails_rebuild",
        }
    }

    fn create_function(self) -> &'static str {
        match self {
            Self::Users => "create_users_view",
            Self::Emails => "create_emails_view",
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct RebuildReport {
    /// Events applied into the fresh table.
    pub events: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// The live checkpoint after the swap.
    pub position: LogPosition,
}

/// Rebuilds `model` from the start of the log and swaps it in.
///
/// # Errors
/// The database failed, or another rebuild of the same model is running.
pub async fn rebuild(
    pool: &PgPool,
    vault: &Arc<Vault>,
    model: ReadModel,
) -> anyhow::Result<RebuildReport> {
    match model {
        ReadModel::Users => {
            let fresh = UsersView::into_table(rebuild_consumer(model), model.fresh_table());
            run(pool, vault, model, fresh).await
        }
        ReadModel::Emails => {
            let fresh = EmailsView::into_table(rebuild_consumer(model), model.fresh_table());
            run(pool, vault, model, fresh).await
        }
    }
}

fn rebuild_consumer(model: ReadModel) -> String {
    format!("{}:rebuild", model.name())
}

async fn run<P: Projection + Clone>(
    pool: &PgPool,
    vault: &Arc<Vault>,
    model: ReadModel,
    fresh: P,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    // One rebuild of a model at a time, across every process: a session-level advisory lock
    // held on a dedicated connection for the whole rebuild.
    let mut guard = pool
        .acquire()
        .await
        .context("acquiring a connection for the rebuild lock")?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1))")
        .bind(rebuild_consumer(model))
        .fetch_one(&mut *guard)
        .await?;
    anyhow::ensure!(locked, "a rebuild of {} is already running", model.name());

    let result = async {
        sqlx::query(&format!("drop table if exists {}", model.fresh_table()))
            .execute(pool)
            .await?;
        sqlx::query(&format!("select {}($1)", model.create_function()))
            .bind(model.fresh_table())
            .execute(pool)
            .await
            .context("creating the fresh table")?;
        sqlx::query("delete from consumer_checkpoints where name = $1")
            .bind(fresh.name())
            .execute(pool)
            .await?;

        // Fill the fresh table while the live one keeps serving.
        let settings = ConsumerSettings {
            batch_size: 5000,
            ..ConsumerSettings::default()
        };
        let consumer = Consumer::new(
            pool.clone(),
            vault.clone(),
            fresh.clone(),
            settings,
            LogSignal::new(),
        );
        let mut events = consumer.catch_up().await?;

        // Swap: hold the live consumer's lock, apply what arrived meanwhile, move its
        // checkpoint to where the fresh table stands, and rename.
        let mut tx = pool.begin().await?;
        sqlx::query(
            "insert into consumer_checkpoints (name) values ($1) on conflict (name) do nothing",
        )
        .bind(model.name())
        .execute(&mut *tx)
        .await?;
        sqlx::query("select 1 from consumer_checkpoints where name = $1 for update")
            .bind(model.name())
            .execute(&mut *tx)
            .await
            .context("locking the live checkpoint")?;
        let mut position = crate::log::consumer::checkpoint(pool, fresh.name()).await?;
        loop {
            let filter = log::ReadFilter {
                payload_types: fresh.payload_types(),
                with_metadata: false,
            };
            let batch = log::read_after(&mut *tx, vault, position, 5000, &filter).await?;
            let Some(last) = batch.last().map(|e| e.position) else {
                break;
            };
            fresh.apply(&mut tx, &batch).await?;
            events += batch.len();
            position = last;
        }
        set_checkpoint(&mut tx, model.name(), position).await?;
        sqlx::query("select swap_read_model($1, $2)")
            .bind(model.name())
            .bind(model.fresh_table())
            .execute(&mut *tx)
            .await
            .context("swapping the fresh table in")?;
        sqlx::query("delete from consumer_checkpoints where name = $1")
            .bind(fresh.name())
            .execute(&mut *tx)
            .await?;
        tx.commit().await.context("committing the swap")?;
        Ok(RebuildReport {
            events,
            elapsed: started.elapsed(),
            position,
        })
    }
    .await;

    sqlx::query("select pg_advisory_unlock(hashtext($1))")
        .bind(rebuild_consumer(model))
        .execute(&mut *guard)
        .await?;
    result
}
