//! Consumers of the log: each applies batches of events and moves its checkpoint in the same
//! transaction, so a crash repeats a batch at most and the result is as if every event were
//! applied exactly once.
//!
//! A batch is read outside any transaction, then applied inside one that first locks the
//! consumer's checkpoint row and checks it has not moved: two instances of the same consumer on
//! one database take turns and never apply an event twice. Reading outside the transaction
//! keeps our own transaction id out of every reader's way while we read.
//!
//! What a consumer costs per batch is kept to what buys something: it remembers where it
//! stands (the stored checkpoint is read again only after another instance moved it), a batch
//! that changes nothing in its projection (the emails view and a batch of orders) opens no
//! transaction and its checkpoint is written a moment later with whatever follows, and a
//! mutation waiting to read its own write watches this process's consumer rather than the
//! checkpoint table.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::log::position::LogPosition;
pub use crate::log::signal::LogSignal;
use crate::log::{self, StoredEvent};
use crate::vault::Vault;
use tracing::Instrument as _;

/// Something built from the log: a read model, the process manager.
pub trait Projection: Send + Sync + 'static {
    /// The consumer's name, which keys its checkpoint (`users`, `emails`, ...).
    fn name(&self) -> &str;

    /// Whether [`Projection::apply`] reads each event's metadata (default: no).
    fn wants_metadata(&self) -> bool {
        false
    }

    /// The event types whose payloads [`Projection::apply`] reads (`None`: every type). Events
    /// of other types are still passed, without payload, so the checkpoint moves past them.
    fn payload_types(&self) -> Option<Vec<String>> {
        None
    }

    /// Whether applying `events` would change anything (default: yes). A batch that would not
    /// is passed over without a transaction; its checkpoint is written with a later batch.
    ///
    /// # Errors
    /// An event is unreadable.
    fn touches(&self, events: &[StoredEvent]) -> anyhow::Result<bool> {
        let _ = events;
        Ok(true)
    }

    /// Called after a batch this projection applied has committed.
    fn committed(&self) {}

    /// Called when another instance (or a rebuild) moved the checkpoint: anything the
    /// projection remembers of its table may be out of date.
    fn contended(&self) {}

    /// Applies `events` (in log order) inside the caller's transaction. It must not commit; a
    /// failure rolls back everything it wrote along with the checkpoint.
    fn apply(
        &self,
        tx: &mut PgConnection,
        events: &[StoredEvent],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The result of one attempt at a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// This many events were applied and the checkpoint moved past them.
    Applied(usize),
    /// Nothing to read right now.
    Empty,
    /// Another instance moved the checkpoint first; read again.
    Contended,
}

/// Tuning of a consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Most events per batch (and per transaction).
    pub batch_size: i64,
    /// The safety-net poll when no notification comes.
    pub poll_interval: Duration,
    /// How long a checkpoint moved only past events that changed nothing may wait before it
    /// is written (it is written sooner with the next batch that changes something).
    pub lazy_checkpoint: Duration,
    /// How long to let new events gather after a wake-up before reading, and how often to
    /// look again while committed events wait behind an open transaction. Zero (a view that
    /// mutations wait on) reads at once and looks again within milliseconds; a consumer
    /// nobody waits on reads larger batches less often.
    pub gather: Duration,
    /// Longest wait between attempts while the database is failing.
    pub max_backoff: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_secs(2),
            lazy_checkpoint: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            gather: Duration::ZERO,
        }
    }
}

impl ConsumerSettings {
    /// Settings for a consumer no request waits on (the emails view, the process manager):
    /// events gather for 25 ms before each read.
    pub fn background() -> Self {
        Self {
            gather: Duration::from_millis(25),
            ..Self::default()
        }
    }
}

/// Reads the checkpoint of consumer `name` (creating it at the start of the log if new).
///
/// # Errors
/// The database failed.
pub async fn checkpoint(pool: &PgPool, name: &str) -> anyhow::Result<LogPosition> {
    let mut conn = pool.acquire().await.context("acquiring a connection")?;
    checkpoint_on(&mut conn, name).await
}

/// [`checkpoint`] on a connection the caller holds.
///
/// # Errors
/// The database failed.
pub async fn checkpoint_on(conn: &mut PgConnection, name: &str) -> anyhow::Result<LogPosition> {
    let read = "select transaction_id::text::bigint, global_position from consumer_checkpoints where name = $1";
    let found: Option<(i64, i64)> = sqlx::query_as(read)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .context("reading a checkpoint")?;
    let (transaction_id, global_position) = match found {
        Some(found) => found,
        None => {
            sqlx::query(
                "insert into consumer_checkpoints (name) values ($1) on conflict (name) do nothing",
            )
            .bind(name)
            .execute(&mut *conn)
            .await
            .context("creating a checkpoint")?;
            sqlx::query_as(read)
                .bind(name)
                .fetch_optional(&mut *conn)
                .await
                .context("reading a checkpoint")?
                .context("a checkpoint vanished as it was created")?
        }
    };
    Ok(LogPosition {
        transaction_id,
        global_position,
    })
}

/// Sets consumer `name`'s checkpoint to `position` in the caller's transaction.
///
/// # Errors
/// The database failed.
pub async fn set_checkpoint(
    tx: &mut PgConnection,
    name: &str,
    position: LogPosition,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into consumer_checkpoints (name, transaction_id, global_position, updated_at)
         values ($1, $2::text::xid8, $3, now())
         on conflict (name) do update
            set transaction_id = excluded.transaction_id,
                global_position = excluded.global_position,
                updated_at = now()",
    )
    .bind(name)
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .execute(&mut *tx)
    .await
    .context("moving a checkpoint")?;
    Ok(())
}

/// A named consumer driving one projection.
pub struct Consumer<P: Projection> {
    pool: PgPool,
    vault: Arc<Vault>,
    projection: Arc<P>,
    settings: ConsumerSettings,
    signal: LogSignal,
    progress: Arc<watch::Sender<LogPosition>>,
    filter: log::ReadFilter,
    cursor: Arc<std::sync::Mutex<Option<Cursor>>>,
    running: Arc<std::sync::atomic::AtomicBool>,
}

/// Where a consumer stands: what it has applied, and what the checkpoint table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// Everything up to here is applied (or changed nothing).
    applied: LogPosition,
    /// The stored checkpoint as this consumer last wrote or read it.
    stored: LogPosition,
    /// Since when `applied` has been ahead of `stored` (a write is owed).
    owed_since: Option<tokio::time::Instant>,
}

impl<P: Projection> Clone for Consumer<P> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            vault: self.vault.clone(),
            projection: self.projection.clone(),
            settings: self.settings.clone(),
            signal: self.signal.clone(),
            progress: self.progress.clone(),
            filter: self.filter.clone(),
            cursor: self.cursor.clone(),
            running: self.running.clone(),
        }
    }
}

impl<P: Projection> std::fmt::Debug for Consumer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.projection.name())
            .finish_non_exhaustive()
    }
}

impl<P: Projection> Consumer<P> {
    /// A consumer of `projection`, woken by `signal`.
    pub fn new(
        pool: PgPool,
        vault: Arc<Vault>,
        projection: P,
        settings: ConsumerSettings,
        signal: LogSignal,
    ) -> Self {
        let filter = log::ReadFilter {
            payload_types: projection.payload_types(),
            with_metadata: projection.wants_metadata(),
        };
        Self {
            filter,
            pool,
            vault,
            projection: Arc::new(projection),
            settings,
            signal,
            progress: Arc::new(watch::channel(LogPosition::START).0),
            cursor: Arc::default(),
            running: Arc::default(),
        }
    }

    /// The projection this consumer drives.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// A handle to wait on this consumer's progress.
    pub fn handle(&self) -> ConsumerHandle {
        ConsumerHandle {
            name: self.projection.name().to_owned(),
            pool: self.pool.clone(),
            progress: self.progress.clone(),
            local: self.running.clone(),
        }
    }

    fn lock_cursor(&self) -> std::sync::MutexGuard<'_, Option<Cursor>> {
        self.cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where this consumer stands, from memory, or from the checkpoint table (on `conn`, so
    /// that a consumer never holds one connection while waiting for another) the first time.
    async fn cursor(&self, conn: &mut PgConnection) -> anyhow::Result<Cursor> {
        if let Some(cursor) = *self.lock_cursor() {
            return Ok(cursor);
        }
        let stored = checkpoint_on(conn, self.projection.name()).await?;
        Ok(self.reset(stored))
    }

    /// Forgets what was in memory: the checkpoint table says `stored`.
    fn reset(&self, stored: LogPosition) -> Cursor {
        let cursor = Cursor {
            applied: stored,
            stored,
            owed_since: None,
        };
        *self.lock_cursor() = Some(cursor);
        self.advance_progress(stored);
        cursor
    }

    fn advance_progress(&self, to: LogPosition) {
        self.progress.send_if_modified(|p| {
            let moved = *p < to;
            if moved {
                *p = to;
            }
            moved
        });
    }

    /// Reads one batch after where the consumer stands and applies it, moving the checkpoint in
    /// the same transaction (or, for a batch that changes nothing, in memory only).
    ///
    /// # Errors
    /// The database or the projection failed; nothing of the batch was kept.
    pub async fn run_once(&self) -> anyhow::Result<BatchOutcome> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection")?;
        self.step(&mut conn).await
    }

    /// [`Consumer::run_once`] on `conn`. One connection serves the read, the batch's
    /// transaction and what follows: sqlx tests every connection given back to the pool with
    /// a round trip, so each checkout saved is one round trip fewer.
    async fn step(&self, conn: &mut PgConnection) -> anyhow::Result<BatchOutcome> {
        let name = self.projection.name();
        let cursor = self.cursor(conn).await?;
        let events = log::read_after(
            &mut *conn,
            &self.vault,
            cursor.applied,
            self.settings.batch_size,
            &self.filter,
        )
        .await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(BatchOutcome::Empty);
        };
        if !self.projection.touches(&events)? {
            let mut guard = self.lock_cursor();
            if *guard == Some(cursor) {
                *guard = Some(Cursor {
                    applied: last,
                    owed_since: cursor
                        .owed_since
                        .or_else(|| Some(tokio::time::Instant::now())),
                    ..cursor
                });
            }
            drop(guard);
            self.advance_progress(last);
            return Ok(BatchOutcome::Applied(events.len()));
        }
        let mut tx = conn.begin().await.context("beginning a batch")?;
        // The lock makes instances of this consumer (and a rebuild's swap) take turns; the
        // comparison makes the loser of a race drop the batch it read.
        let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
            "select transaction_id::text::bigint, global_position
               from consumer_checkpoints where name = $1 for update",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .context("locking the checkpoint")?;
        let stored = LogPosition {
            transaction_id,
            global_position,
        };
        if stored != cursor.stored {
            drop(tx);
            self.reset(stored);
            self.projection.contended();
            return Ok(BatchOutcome::Contended);
        }
        let span = tracing::info_span!("consumer batch", consumer = name, events = events.len());
        self.projection
            .apply(&mut tx, &events)
            .instrument(span)
            .await
            .with_context(|| {
                format!(
                    "consumer {name} applying {} events after {:?}",
                    events.len(),
                    cursor.applied
                )
            })?;
        set_checkpoint(&mut tx, name, last).await?;
        tx.commit().await.context("committing a batch")?;
        *self.lock_cursor() = Some(Cursor {
            applied: last,
            stored: last,
            owed_since: None,
        });
        self.advance_progress(last);
        self.projection.committed();
        Ok(BatchOutcome::Applied(events.len()))
    }

    /// Writes the checkpoint owed for batches that changed nothing, unless another instance
    /// moved it meanwhile (then this consumer takes the stored one).
    ///
    /// # Errors
    /// The database failed.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let Some(cursor) = *self.lock_cursor() else {
            return Ok(());
        };
        if cursor.owed_since.is_none() {
            return Ok(());
        }
        let moved = sqlx::query(
            "update consumer_checkpoints
                set transaction_id = $2::text::xid8, global_position = $3, updated_at = now()
              where name = $1 and transaction_id = $4::text::xid8 and global_position = $5",
        )
        .bind(self.projection.name())
        .bind(cursor.applied.transaction_id.to_string())
        .bind(cursor.applied.global_position)
        .bind(cursor.stored.transaction_id.to_string())
        .bind(cursor.stored.global_position)
        .execute(&self.pool)
        .await
        .context("writing an owed checkpoint")?
        .rows_affected()
            == 1;
        if moved {
            let mut guard = self.lock_cursor();
            if *guard == Some(cursor) {
                *guard = Some(Cursor {
                    stored: cursor.applied,
                    owed_since: None,
                    ..cursor
                });
            }
        } else {
            let stored = checkpoint(&self.pool, self.projection.name()).await?;
            self.reset(stored);
        }
        Ok(())
    }

    /// When the owed checkpoint write is due, if one is owed.
    fn flush_due(&self) -> Option<tokio::time::Instant> {
        (*self.lock_cursor())
            .and_then(|c| c.owed_since)
            .map(|since| since + self.settings.lazy_checkpoint)
    }

    /// Applies batches until the consumer has reached the head of the log as it stood when
    /// called. Events can be committed yet not readable for a moment (an older transaction,
    /// in any database of the cluster, is still open); this waits them out rather than taking
    /// "nothing readable now" for "caught up".
    ///
    /// # Errors
    /// As [`Consumer::run_once`], or the head was not reached within a minute.
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        let target = log::head(&self.pool).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut applied = 0;
        loop {
            match self.run_once().await? {
                BatchOutcome::Applied(n) => applied += n,
                BatchOutcome::Contended => {}
                BatchOutcome::Empty => {
                    let mut conn = self
                        .pool
                        .acquire()
                        .await
                        .context("acquiring a connection")?;
                    let reached = self.cursor(&mut conn).await?.applied;
                    drop(conn);
                    if reached >= target {
                        self.flush().await?;
                        return Ok(applied);
                    }
                    anyhow::ensure!(
                        tokio::time::Instant::now() < deadline,
                        "consumer {} could not reach the head of the log: a transaction has been open for a minute",
                        self.projection.name()
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// Runs until `stop`: applies what there is, then waits for a notification (or the poll).
    /// Database failures are logged and retried with backoff; nothing stops it but `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let name = self.projection.name().to_owned();
        let mut wake = self.signal.subscribe_changes();
        let mut failure_backoff = Duration::from_millis(100);
        let mut pending_backoff = Duration::from_millis(1);
        self.running
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(consumer = %name, "consumer started");
        while !stop.is_cancelled() {
            wake.borrow_and_update();
            let mut conn = match self.pool.acquire().await {
                Ok(conn) => Some(conn),
                Err(error) => {
                    tracing::error!(consumer = %name, error = %error, "no connection for a batch");
                    None
                }
            };
            let outcome = match conn.as_mut() {
                Some(conn) => self.step(conn).await,
                None => Err(anyhow::anyhow!("no connection")),
            };
            let idle = match outcome {
                // A full batch: more is likely waiting.
                Ok(BatchOutcome::Applied(n)) if n as i64 >= self.settings.batch_size => false,
                Ok(BatchOutcome::Contended) => false,
                // A short batch took everything readable, as an empty read would have said.
                Ok(BatchOutcome::Applied(_) | BatchOutcome::Empty) => true,
                Err(error) => {
                    tracing::error!(consumer = %name, error = %format!("{error:#}"), retry_in_ms = failure_backoff.as_millis() as u64, "batch failed");
                    let pause = failure_backoff;
                    failure_backoff = (failure_backoff * 2).min(self.settings.max_backoff);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => break,
                    }
                    continue;
                }
            };
            failure_backoff = Duration::from_millis(100);
            if !idle {
                pending_backoff = Duration::from_millis(1);
                continue;
            }
            let position = *self.progress.borrow();
            let pending = match conn.as_mut() {
                Some(conn) => log::has_pending_after(&mut **conn, position).await,
                None => log::has_pending_after(&self.pool, position).await,
            };
            drop(conn);
            let pause = match pending {
                // Committed events wait behind an older open transaction, which may send no
                // notification when it ends: look again soon.
                Ok(true) if !self.settings.gather.is_zero() => self.settings.gather,
                Ok(true) => {
                    let pause = pending_backoff;
                    pending_backoff = (pending_backoff * 2).min(Duration::from_millis(8));
                    pause
                }
                Ok(false) => {
                    pending_backoff = Duration::from_millis(1);
                    self.settings.poll_interval
                }
                Err(error) => {
                    tracing::warn!(consumer = %name, error = %format!("{error:#}"), "checking for pending events failed");
                    self.settings.poll_interval
                }
            };
            let flush_at = self.flush_due();
            let flush = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wake.changed() => {
                    if !self.settings.gather.is_zero() {
                        tokio::select! {
                            () = tokio::time::sleep(self.settings.gather) => {}
                            () = stop.cancelled() => break,
                        }
                    }
                }
                () = tokio::time::sleep(pause) => {}
                () = flush => {
                    if let Err(error) = self.flush().await {
                        tracing::warn!(consumer = %name, error = %format!("{error:#}"), "writing a checkpoint failed");
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        if let Err(error) = self.flush().await {
            tracing::warn!(consumer = %name, error = %format!("{error:#}"), "writing the last checkpoint failed");
        }
        self.running
            .store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(consumer = %name, "consumer stopped");
    }
}

/// Waits on one consumer's progress (read-your-writes).
#[derive(Debug, Clone)]
pub struct ConsumerHandle {
    name: String,
    pool: PgPool,
    progress: Arc<watch::Sender<LogPosition>>,
    /// Whether this process runs the consumer (then its progress is authoritative).
    local: Arc<std::sync::atomic::AtomicBool>,
}

/// The consumer did not reach a position in time.
#[derive(Debug, thiserror::Error)]
#[error("the {consumer} view has not caught up within {waited:?}")]
pub struct NotCaughtUp {
    /// Which consumer.
    pub consumer: String,
    /// How long we waited.
    pub waited: Duration,
}

impl ConsumerHandle {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until the consumer has applied everything up to `position`, for at most
    /// `timeout`. Progress made by this process is seen at once. When this process runs the
    /// consumer, that is all it watches: a batch another instance applied first is seen by our
    /// own consumer too (it finds the checkpoint moved and takes it), so the checkpoint row is
    /// read only as a slow safety net. Otherwise the row is polled every few milliseconds.
    ///
    /// # Errors
    /// [`NotCaughtUp`] after `timeout`.
    pub async fn wait_for(
        &self,
        position: LogPosition,
        timeout: Duration,
    ) -> Result<(), NotCaughtUp> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress = self.progress.subscribe();
        loop {
            if *progress.borrow_and_update() >= position {
                return Ok(());
            }
            let poll = if self.local.load(std::sync::atomic::Ordering::SeqCst) {
                Duration::from_millis(500)
            } else {
                Duration::from_millis(20)
            };
            tokio::select! {
                _ = progress.changed() => continue,
                () = tokio::time::sleep(poll) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            if let Ok(stored) = checkpoint(&self.pool, &self.name).await {
                if stored >= position {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NotCaughtUp {
                    consumer: self.name.clone(),
                    waited: timeout,
                });
            }
        }
    }
}

/// How far each consumer is behind the head of the log, in events.
///
/// # Errors
/// The database failed.
pub async fn lag(pool: &PgPool) -> anyhow::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        // Walks the log-order index from each checkpoint; counting stops at a million (a lag
        // that large is an outage either way, and the count must stay cheap for health checks).
        "select c.name,
                (select count(*) from (select 1 from events e
                   where (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)
                   order by e.transaction_id, e.global_position
                   limit 1000000) behind)
           from consumer_checkpoints c
          order by c.name",
    )
    .fetch_all(pool)
    .await
    .context("measuring consumer lag")
}
/// How far each consumer is behind, in events, and for how many seconds it has not moved while
/// events wait for it (0 when it is caught up).
///
/// # Errors
/// The database failed.
pub async fn lag_with_age(pool: &PgPool) -> anyhow::Result<Vec<(String, i64, f64)>> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "select name, behind,
                case when behind > 0
                     then greatest(extract(epoch from now() - updated_at), 0)::float8
                     else 0 end
           from (select c.name, c.updated_at,
                        (select count(*) from (select 1 from events e
                           where (e.transaction_id, e.global_position)
                                 > (c.transaction_id, c.global_position)
                           order by e.transaction_id, e.global_position
                           limit 1000000) waiting) as behind
                   from consumer_checkpoints c) lag
          order by name",
    )
    .fetch_all(pool)
    .await
    .context("measuring consumer lag")?;
    Ok(rows)
}

/// Where the `users` and `emails` views stand, as one opaque text that changes whenever
/// either consumer moves (or a rebuild swaps one in): answers computed from the views stay
/// valid while it stays the same.
///
/// # Errors
/// The database failed.
pub async fn views_token(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce(string_agg(
                    name || '@' || transaction_id::text || '/' || global_position
                         || '/' || extract(epoch from updated_at)::text, ',' order by name), '')
           from consumer_checkpoints where name in ('users', 'emails')",
    )
    .fetch_one(pool)
    .await
}
