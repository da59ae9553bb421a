//! Orders and clients from the retailer's systems, many at a time: the engine under
//! `engagement import`, the `importOrders` mutation and the order webhook.
//!
//! Rows arrive already parsed (see [`files`] for the CSV formats) and carry the retailer's
//! external ids. A chunk of rows becomes one [`Batch`]: the external ids are resolved (orders)
//! or claimed (clients) in one statement, each client's rows become one command (all of a
//! client's orders in the chunk are one `PlaceOrders`, recorded as one-by-one placement would
//! record them, with one score), and every client's events are appended in one transaction.
//! Every command is idempotent, so a chunk that lost a race is run again, and a file imported
//! twice, or again after a crash, records nothing twice.
//!
//! [`stream`] runs chunks on several workers at once, each owning the clients whose external
//! ids hash to it (so two workers never race for one client), with bounded queues between the
//! reader and the workers: memory does not grow with the file.

pub mod files;
pub mod regroup;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::client::{
    ClientAction, ClientError, ClientEvent, CreateUser, ImportedHistory, PlaceOrder, PlaceOrders,
    UpdateUser, FUTURE_TOLERANCE_MINUTES,
};
use domain::values::{Categories, EmailAddress, ExternalId, UserName};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::clock::Clock;
use crate::commands::batch::{Batch, BatchError, BatchOutcome};
use crate::commands::external_ids;
use crate::commands::{CommandBus, CommandError, CommandMetadata};
use crate::log::position::LogPosition;

/// One order row.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    /// Where it came from: the line in a file, the index in a request.
    pub line: u64,
    /// The client, by the retailer's id.
    pub external_id: ExternalId,
    /// The order.
    pub order: PlaceOrder,
}

/// One client row.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    /// Where it came from.
    pub line: u64,
    /// The retailer's id.
    pub external_id: ExternalId,
    /// Name.
    pub name: UserName,
    /// Email address.
    pub email: EmailAddress,
    /// Preferred categories.
    pub preferred_categories: Categories,
    /// Client since (the retailer's date).
    pub created_at: Option<DateTime<Utc>>,
}

/// A row that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Where it came from.
    pub line: u64,
    /// The offending field (`externalId`, `placedAt`, ...), when one is to blame.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Rejected {
    fn new(line: u64, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            line,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    fn refused(line: u64, error: &ClientError) -> Self {
        match error {
            ClientError::Validation(v) => Self::new(line, Some(&v.field), v.message.clone()),
            other => Self::new(line, None, other.to_string()),
        }
    }
}

/// What a chunk (or a whole import) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Rows recorded now.
    pub accepted: u64,
    /// Rows already recorded before (an order id seen before, a client unchanged).
    pub duplicates: u64,
    /// Rows not taken.
    pub rejected: Vec<Rejected>,
    /// Where the last event recorded landed in the log.
    pub position: Option<LogPosition>,
}

impl Report {
    /// Rows looked at.
    pub fn rows(&self) -> u64 {
        self.accepted + self.duplicates + self.rejected.len() as u64
    }

    fn landed(&mut self, position: Option<LogPosition>) {
        self.position = self.position.max(position);
    }

    /// Adds `other`'s counts to these (rejections are the caller's to keep or print).
    pub fn absorb(&mut self, other: &Report) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.landed(other.position);
    }
}

/// Turns rows into commands.
#[derive(Clone)]
pub struct Ingest {
    pool: PgPool,
    batch: Batch,
    bus: CommandBus,
    clock: Arc<dyn Clock>,
    metadata: CommandMetadata,
    history: bool,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

/// How many times one client's command that lost a race with another writer is run again.
const CONFLICT_ATTEMPTS: u32 = 10;

/// After this many lost races a batch of several clients is split in two.
const SPLIT_AFTER: u32 = 2;

impl Ingest {
    /// Rows recorded through `bus`'s rules and clock, stamped with `metadata`. With `history`
    /// the orders are old history: their scores do not trigger emails (see
    /// [`PlaceOrders::history`]).
    pub fn new(bus: &CommandBus, pool: PgPool, metadata: CommandMetadata, history: bool) -> Self {
        Self {
            batch: Batch::new(
                pool.clone(),
                bus.vault().clone(),
                bus.services().clone(),
                bus.signal().clone(),
            ),
            pool,
            bus: bus.clone(),
            clock: bus.clock().clone(),
            metadata,
            history,
        }
    }

    /// Runs `commands` as one batch; a batch that keeps losing races with other writers (the
    /// email workers, requests) is halved until the halves go through, down to one client at
    /// a time, so a busy client holds up only itself.
    async fn run_batch(
        &self,
        commands: &[(Uuid, ClientAction)],
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, CommandError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.batch.run(commands.to_vec(), now, &self.metadata).await {
                Ok(outcome) => return Ok(outcome),
                Err(BatchError::Conflict) if commands.len() > 1 && attempt >= SPLIT_AFTER => {
                    let (left, right) = commands.split_at(commands.len() / 2);
                    let mut first = Box::pin(self.run_batch(left, now)).await?;
                    let second = Box::pin(self.run_batch(right, now)).await?;
                    first.results.extend(second.results);
                    first.position = first.position.max(second.position);
                    return Ok(first);
                }
                Err(BatchError::Conflict) if attempt < CONFLICT_ATTEMPTS => {
                    let ceiling = 10u64 << attempt.min(5);
                    tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % ceiling + 1))
                        .await;
                }
                Err(BatchError::Conflict) => return Err(CommandError::Conflict),
                Err(BatchError::Unavailable(e)) => return Err(CommandError::Unavailable(e.into())),
                Err(BatchError::Unexpected(e)) => return Err(CommandError::Unexpected(e)),
            }
        }
    }

    /// Records a chunk of orders: one command per client, one transaction for the chunk.
    ///
    /// # Errors
    /// The database failed, or other writers kept changing the same clients.
    pub async fn orders(&self, rows: Vec<OrderRecord>) -> Result<Report, CommandError> {
        let mut report = Report::default();
        if rows.is_empty() {
            return Ok(report);
        }
        let now = self.clock.now();
        let latest = now + chrono::Duration::minutes(FUTURE_TOLERANCE_MINUTES);
        let wanted: Vec<&str> = {
            let mut ids: Vec<&str> = rows.iter().map(|r| r.external_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let owners = external_ids::resolve_many(&self.pool, &wanted).await?;
        let mut by_client: Vec<(Uuid, Vec<OrderRecord>)> = Vec::new();
        let mut slot: HashMap<Uuid, usize> = HashMap::new();
        for row in rows {
            if row.order.placed_at > latest {
                report.rejected.push(Rejected::new(
                    row.line,
                    Some("placedAt"),
                    "must not be in the future",
                ));
                continue;
            }
            let Some(&user_id) = owners.get(row.external_id.as_str()) else {
                report.rejected.push(Rejected::new(
                    row.line,
                    Some("externalId"),
                    format!("no user has the external id {:?}", row.external_id.as_str()),
                ));
                continue;
            };
            let index = *slot.entry(user_id).or_insert_with(|| {
                by_client.push((user_id, Vec::new()));
                by_client.len() - 1
            });
            by_client[index].1.push(row);
        }
        let commands: Vec<(Uuid, ClientAction)> = by_client
            .iter()
            .map(|(user_id, rows)| {
                (
                    *user_id,
                    ClientAction::PlaceOrders(PlaceOrders {
                        orders: rows.iter().map(|r| r.order.clone()).collect(),
                        history: self.history,
                    }),
                )
            })
            .collect();
        let outcome = self.run_batch(&commands, now).await?;
        for ((_, rows), result) in by_client.iter().zip(outcome.results) {
            match result {
                Ok(events) => {
                    let mut new: HashSet<String> = events
                        .into_iter()
                        .filter_map(|e| match e {
                            ClientEvent::OrderPlaced(o) => Some(o.order_id),
                            _ => None,
                        })
                        .collect();
                    for row in rows {
                        if new.remove(row.order.order_id.as_str()) {
                            report.accepted += 1;
                        } else {
                            report.duplicates += 1;
                        }
                    }
                }
                Err(error) => report
                    .rejected
                    .extend(rows.iter().map(|r| Rejected::refused(r.line, &error))),
            }
        }
        report.landed(outcome.position);
        Ok(report)
    }

    /// Records a chunk of clients: each external id is claimed (or found), a new client is
    /// created, a known one is updated with the row's name, email and categories.
    ///
    /// # Errors
    /// The database failed, or other writers kept changing the same clients.
    pub async fn clients(&self, rows: Vec<ClientRecord>) -> Result<Report, CommandError> {
        let mut report = Report::default();
        // A second row for the same external id waits for the next round, as it would
        // after the first in a one-by-one import.
        let mut pending = rows;
        while !pending.is_empty() {
            let mut seen = HashSet::new();
            let (now_rows, later): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|r| seen.insert(r.external_id.clone()));
            pending = later;
            let round = self.clients_once(now_rows).await?;
            report.absorb(&round);
            report.rejected.extend(round.rejected);
        }
        Ok(report)
    }

    async fn clients_once(&self, rows: Vec<ClientRecord>) -> Result<Report, CommandError> {
        let mut report = Report::default();
        let now = self.clock.now();
        let pairs: Vec<(String, Uuid)> = rows
            .iter()
            .map(|r| (r.external_id.as_str().to_owned(), Uuid::new_v4()))
            .collect();
        let owners = external_ids::claim_many(&self.pool, &pairs).await?;
        let mut creates = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(&id) = owners.get(row.external_id.as_str()) else {
                report.rejected.push(Rejected::new(
                    row.line,
                    Some("externalId"),
                    "the external id could not be claimed",
                ));
                continue;
            };
            creates.push((id, row));
        }
        let commands: Vec<(Uuid, ClientAction)> = creates
            .iter()
            .map(|(id, row)| {
                (
                    *id,
                    ClientAction::CreateUser(create(*id, row, self.history)),
                )
            })
            .collect();
        let outcome = self.run_batch(&commands, now).await?;
        report.landed(outcome.position);
        let mut updates = Vec::new();
        let mut recreate = Vec::new();
        for ((id, row), result) in creates.into_iter().zip(outcome.results) {
            match result {
                Ok(events) if events.is_empty() => report.duplicates += 1,
                Ok(_) => report.accepted += 1,
                Err(ClientError::AlreadyExists) => updates.push((id, row)),
                Err(ClientError::Deleted | ClientError::Erased) => recreate.push(row),
                Err(error) => report.rejected.push(Rejected::refused(row.line, &error)),
            }
        }
        if !updates.is_empty() {
            let commands: Vec<(Uuid, ClientAction)> = updates
                .iter()
                .map(|(id, row)| {
                    (
                        *id,
                        ClientAction::UpdateUser(UpdateUser {
                            name: Some(row.name.clone()),
                            email: Some(row.email.clone()),
                            preferred_categories: Some(row.preferred_categories.clone()),
                            ..UpdateUser::default()
                        }),
                    )
                })
                .collect();
            let outcome = self.run_batch(&commands, now).await?;
            report.landed(outcome.position);
            for ((_, row), result) in updates.iter().zip(outcome.results) {
                match result {
                    Ok(events) if events.is_empty() => report.duplicates += 1,
                    Ok(_) => report.accepted += 1,
                    Err(error) => report.rejected.push(Rejected::refused(row.line, &error)),
                }
            }
        }
        // A deleted client's external id names a new client: rare, so one by one.
        for row in recreate {
            let id = Uuid::new_v4();
            match self
                .bus
                .create_user(create(id, &row, self.history), &self.metadata)
                .await
            {
                Ok(committed) => {
                    report.accepted += 1;
                    report.landed(Some(committed.position));
                }
                Err(CommandError::Rejected(error)) => {
                    report.rejected.push(Rejected::refused(row.line, &error));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(report)
    }
}

fn create(id: Uuid, row: &ClientRecord, history: bool) -> CreateUser {
    CreateUser {
        id,
        name: row.name.clone(),
        email: row.email.clone(),
        preferred_categories: row.preferred_categories.clone(),
        history: ImportedHistory::default(),
        external_id: Some(row.external_id.clone()),
        client_since: row.created_at,
        imported: history,
    }
}

/// A row that knows which client it is about.
pub trait Keyed {
    /// The client's external id.
    fn key(&self) -> &ExternalId;
}

impl Keyed for OrderRecord {
    fn key(&self) -> &ExternalId {
        &self.external_id
    }
}

impl Keyed for ClientRecord {
    fn key(&self) -> &ExternalId {
        &self.external_id
    }
}

/// How [`stream`] runs.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// Workers writing at once.
    pub workers: usize,
    /// Rows per chunk (per transaction).
    pub chunk: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            workers: 4,
            // Memory in flight is about workers x chunk x 4 rows; past a thousand rows a
            // chunk buys no speed.
            chunk: 1_000,
        }
    }
}

/// Feeds rows (or rows refused while reading) from `rows` through `record` on
/// `settings.workers` workers, telling `progress` after every chunk, and returns the totals.
/// Rows of one client always go to the same worker, in file order. Rejections reach only
/// `progress` (to print or keep as the caller likes); the totals count what went in.
///
/// # Errors
/// A chunk failed (the database, or endless conflicts); the chunks before it are recorded.
pub async fn stream<R, F, Fut>(
    mut rows: mpsc::Receiver<Result<R, Rejected>>,
    settings: StreamSettings,
    record: F,
    progress: impl Fn(&Report) + Send + Sync + 'static,
) -> Result<Report, CommandError>
where
    R: Keyed + Send + 'static,
    F: Fn(Vec<R>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Report, CommandError>> + Send,
{
    let workers = settings.workers.max(1);
    let chunk = settings.chunk.max(1);
    let progress = Arc::new(progress);
    let mut senders = Vec::with_capacity(workers);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (tx, mut rx) = mpsc::channel::<Vec<R>>(1);
        senders.push(tx);
        let record = record.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut total = Report::default();
            while let Some(rows) = rx.recv().await {
                let done = record(rows).await?;
                progress(&done);
                total.absorb(&done);
            }
            Ok::<_, CommandError>(total)
        });
    }
    let mut buffers: Vec<Vec<R>> = (0..workers).map(|_| Vec::with_capacity(chunk)).collect();
    let mut total = Report::default();
    let mut failure = None;
    'read: while let Some(row) = rows.recv().await {
        let row = match row {
            Ok(row) => row,
            Err(rejected) => {
                let done = Report {
                    rejected: vec![rejected],
                    ..Report::default()
                };
                progress(&done);
                continue;
            }
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        row.key().hash(&mut hasher);
        let worker = (hasher.finish() % workers as u64) as usize;
        buffers[worker].push(row);
        if buffers[worker].len() >= chunk {
            let full = std::mem::replace(&mut buffers[worker], Vec::with_capacity(chunk));
            if senders[worker].send(full).await.is_err() {
                // The worker stopped on an error: its result says which.
                break 'read;
            }
        }
    }
    for (sender, rest) in senders.iter().zip(buffers) {
        if !rest.is_empty() {
            let _ = sender.send(rest).await;
        }
    }
    drop(senders);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(report)) => total.absorb(&report),
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(panic) => {
                failure = failure.or(Some(CommandError::Unexpected(anyhow::anyhow!(
                    "an import worker failed: {panic}"
                ))))
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(total),
    }
}
