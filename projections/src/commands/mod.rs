//! The command path: load a client, decide, append its events with metadata in one
//! transaction, retry on a concurrent write.
//!
//! Built on cqrs-es's `CqrsFramework` over postgres-es's tables with snapshots, through the
//! extensions in [`store`] (one statement per append that returns the log position, and a
//! cache of clients). It registers no in-memory queries: read models are built from the log
//! (see [`crate::log::consumer`]), which survives crashes and orders events across clients.

pub mod batch;
pub mod external_ids;
pub mod groups;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::{AggregateContext as _, AggregateError, CqrsFramework, EventStore as _};
use domain::client::{Client, ClientAction, ClientCommand, ClientError, ClientServices};
use rand::Rng as _;
use sqlx::PgPool;
use uuid::Uuid;

use self::store::CachingStore;
use crate::clock::Clock;
use crate::log::position::LogPosition;
use crate::log::signal::LogSignal;
use crate::metrics::CommandOutcome;
use crate::vault::Vault;

/// A snapshot is written every this many events of a client.
pub const SNAPSHOT_EVERY: usize = 50;

/// Clients kept in memory by the command path (the most recently used).
pub const CACHED_CLIENTS: usize = 10_000;

/// Who issued a command and why; stored on every event it appends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandMetadata {
    /// The caller (`admin`, `operator:alice`, `process-manager`, ...).
    pub actor: String,
    /// The request that carried the command.
    pub request_id: Option<String>,
    /// The conversation the request belongs to (from `X-Correlation-Id`, or the request id).
    pub correlation_id: Option<String>,
    /// The event that caused the command, for commands issued by the process manager.
    pub causation_id: Option<String>,
}

impl CommandMetadata {
    /// Metadata for `actor` with a fresh request id that is also the correlation id.
    pub fn for_actor(actor: impl Into<String>) -> Self {
        let request_id = Uuid::new_v4().to_string();
        Self {
            actor: actor.into(),
            correlation_id: Some(request_id.clone()),
            request_id: Some(request_id),
            causation_id: None,
        }
    }

    /// The map stored as each event's `metadata` (keys as the GraphQL `Event.metadata` shows
    /// them: `actor`, `requestId`, `correlationId`, `causationId`, and `traceparent` when the
    /// command runs in a traced span: the work the events cause continues that trace).
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([("actor".to_owned(), self.actor.clone())]);
        if let Some(traceparent) = crate::trace::current_traceparent() {
            map.insert(crate::trace::METADATA_KEY.to_owned(), traceparent);
        }
        let optional = [
            ("requestId", &self.request_id),
            ("correlationId", &self.correlation_id),
            ("causationId", &self.causation_id),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value.clone());
            }
        }
        map
    }
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The client's rules refused it (validation, not found, deleted, cooldown, ...).
    #[error(transparent)]
    Rejected(#[from] ClientError),
    /// Other writers kept changing the client; the caller may try again.
    #[error("the user was changed by others at the same time; try again")]
    Conflict,
    /// The database cannot be reached now; the caller may try again later.
    #[error("the database cannot be reached")]
    Unavailable(#[source] anyhow::Error),
    /// The database or the event store failed.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Whether a database error says the server cannot be reached (rather than that a statement
/// failed).
///
/// Besides failing to connect at all, a server that is going down or not yet up says so with
/// an SQLSTATE: class 08 (connection exception), 57P01-57P03 (shut down by an administrator,
/// crashed, cannot connect now: a restart) and 53300 (too many connections).
pub fn unreachable_database(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// What a successful command left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The client.
    pub user_id: Uuid,
    /// The client's version (sequence of its last event) after the command.
    pub version: i64,
    /// Where the client's last event sits in the log: wait for a consumer to pass it to read
    /// this command's writes.
    pub position: LogPosition,
}

type ClientCqrs = CqrsFramework<Client, CachingStore>;

/// Executes client commands against the event store.
#[derive(Clone)]
pub struct CommandBus {
    cqrs: Arc<ClientCqrs>,
    /// A store over the same tables, for reading a client without a command.
    store: Arc<CachingStore>,
    vault: Arc<Vault>,
    services: ClientServices,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    signal: LogSignal,
    max_attempts: u32,
    turns: Turns,
}

/// Commands for one client take turns within this process. Two at once would both load the
/// same version and one would lose at the append, be retried after a backoff and load again;
/// waiting for the other to finish costs nothing of that. (Instances still race each other,
/// and the version check at the append still decides.)
#[derive(Clone, Default)]
struct Turns(Arc<std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>);

impl Turns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for client `id`'s turn.
    async fn take(&self, id: Uuid) -> Turn {
        let line = self.lock().entry(id).or_default().clone();
        let guard = line.clone().lock_owned().await;
        Turn {
            turns: self.clone(),
            id,
            line,
            guard: Some(guard),
        }
    }
}

/// A client's turn; the line is forgotten when nobody else waits in it.
struct Turn {
    turns: Turns,
    id: Uuid,
    line: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.guard.take();
        let mut lines = self.turns.lock();
        // Ours and the map's are the only references: nobody is waiting.
        if Arc::strong_count(&self.line) == 2 {
            lines.remove(&self.id);
        }
    }
}

impl std::fmt::Debug for CommandBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandBus")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl CommandBus {
    /// A command bus over `pool`, sealing personal data with `vault`, deciding with `services`
    /// and stamping commands with `clock`; its appends are announced by the events table's
    /// trigger.
    pub fn new(
        pool: PgPool,
        vault: Arc<Vault>,
        services: ClientServices,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::announcing(pool, vault, services, clock, LogSignal::new())
    }

    /// A command bus like [`CommandBus::new`]'s whose appends (commands and batches) wake the
    /// log's readers through `signal`.
    pub fn announcing(
        pool: PgPool,
        vault: Arc<Vault>,
        services: ClientServices,
        clock: Arc<dyn Clock>,
        signal: LogSignal,
    ) -> Self {
        let store = |capacity| {
            CachingStore::new(
                &pool,
                vault.clone(),
                signal.clone(),
                SNAPSHOT_EVERY,
                capacity,
            )
        };
        Self {
            cqrs: Arc::new(CqrsFramework::new(
                store(CACHED_CLIENTS),
                vec![],
                services.clone(),
            )),
            store: Arc::new(store(0)),
            vault,
            services,
            clock,
            signal,
            pool,
            max_attempts: 12,
            turns: Turns::default(),
        }
    }

    /// The clock commands are stamped with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// What this bus's appends wake.
    pub fn signal(&self) -> &LogSignal {
        &self.signal
    }

    /// The keys personal data is sealed with.
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// The policy and rules commands are decided with.
    pub fn services(&self) -> &ClientServices {
        &self.services
    }

    /// Client `user_id` as their events tell it now (snapshot plus later events; a client who
    /// was never created comes back in [`domain::client::Lifecycle::New`]).
    ///
    /// # Errors
    /// The database failed or an event is unreadable.
    pub async fn load(&self, user_id: Uuid) -> anyhow::Result<Client> {
        let mut context = self
            .store
            .load_aggregate(&user_id.to_string())
            .await
            .map_err(|e| anyhow::anyhow!("{e}").context("loading a user"))?;
        Ok(std::mem::take(context.aggregate()))
    }

    /// Runs `action` on client `user_id` at the clock's current time.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub async fn execute(
        &self,
        user_id: Uuid,
        action: ClientAction,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        self.execute_at(
            user_id,
            ClientCommand::new(action, self.clock.now()),
            metadata,
        )
        .await
    }

    /// Runs `command` on client `user_id`. A concurrent write to the same client is retried
    /// with jittered backoff; commands are idempotent, so a retry after a commit whose
    /// acknowledgement was lost (postgres-es checks its snapshot update only after the commit)
    /// finds the effect in place and appends nothing.
    ///
    /// # Errors
    /// See [`CommandError`].
    #[tracing::instrument(name = "command", skip_all, fields(user_id = %user_id, command = command.name(), actor = %metadata.actor, otel.name = command.name()))]
    pub async fn execute_at(
        &self,
        user_id: Uuid,
        command: ClientCommand,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let started = std::time::Instant::now();
        let name = command.name();
        let result = self.attempt_until_settled(user_id, command, metadata).await;
        let outcome = match &result {
            Ok(_) => CommandOutcome::Ok,
            Err(CommandError::Rejected(_)) => CommandOutcome::Rejected,
            Err(CommandError::Conflict) => CommandOutcome::Conflict,
            Err(CommandError::Unavailable(_)) => CommandOutcome::Unavailable,
            Err(CommandError::Unexpected(_)) => CommandOutcome::Error,
        };
        crate::metrics::command_finished(name, outcome, started.elapsed());
        result
    }

    async fn attempt_until_settled(
        &self,
        user_id: Uuid,
        command: ClientCommand,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let aggregate_id = user_id.to_string();
        let metadata_map = metadata.to_map();
        let _turn = self.turns.take(user_id).await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (result, landed) = store::landing(self.cqrs.execute_with_metadata(
                &aggregate_id,
                command.clone(),
                metadata_map.clone(),
            ))
            .await;
            match result {
                Ok(()) => {
                    if let Some((version, position)) = landed {
                        return Ok(Committed {
                            user_id,
                            version,
                            position,
                        });
                    }
                    // Nothing new was appended (the effect was already there): the client's
                    // last event is the one to wait for.
                    break;
                }
                Err(AggregateError::UserError(e)) => return Err(CommandError::Rejected(e)),
                Err(AggregateError::AggregateConflict) if attempt < self.max_attempts => {
                    tracing::debug!(attempt, "concurrent write, retrying");
                    crate::metrics::command_retried(command.name());
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(AggregateError::AggregateConflict) => {
                    tracing::warn!(attempt, "giving up after repeated concurrent writes");
                    return Err(CommandError::Conflict);
                }
                Err(AggregateError::DatabaseConnectionError(error)) => {
                    return Err(CommandError::Unavailable(anyhow::anyhow!("{error}")));
                }
                Err(AggregateError::UnexpectedError(error))
                    if error
                        .downcast_ref::<sqlx::Error>()
                        .is_some_and(unreachable_database) =>
                {
                    return Err(CommandError::Unavailable(anyhow::anyhow!("{error}")));
                }
                Err(other) => {
                    return Err(CommandError::Unexpected(
                        anyhow::Error::msg(other.to_string())
                            .context("executing a command in the event store"),
                    ))
                }
            }
        }
        self.head_of(user_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a command succeeded but the user has no events").into())
    }

    /// The version and log position of client `user_id`'s last event, if it has any.
    ///
    /// # Errors
    /// The database failed.
    pub async fn head_of(&self, user_id: Uuid) -> anyhow::Result<Option<Committed>> {
        let head = crate::log::stream_head(&self.pool, user_id).await?;
        Ok(head.map(|(version, position)| Committed {
            user_id,
            version,
            position,
        }))
    }
}

/// Full jitter over an exponential ceiling: 5 ms, 10 ms, ... capped at 250 ms.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = (5u64 << attempt.min(6)).min(250);
    Duration::from_millis(rand::thread_rng().gen_range(1..=ceiling_ms))
}
