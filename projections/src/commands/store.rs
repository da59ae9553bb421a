//! The event store under the command path: cqrs-es's `PersistedEventStore` over postgres-es's
//! tables, extended where its costs showed under load.
//!
//! - [`LogRepository`] persists a command's events in one statement (postgres-es inserts them
//!   one by one) that returns where they landed in the log, so the command path needs no
//!   query afterwards to learn the position a reader must pass; and it checks the snapshot's
//!   optimistic lock before committing rather than after (postgres-es commits first, so a lost
//!   race on the snapshot used to leave written events behind an error). It seals each
//!   event's personal fields with the client's key ([`crate::vault`]) and, in the transaction
//!   that appends `UserErased`, deletes that key. Its reads are postgres-es's queries plus the
//!   client's wrapped key in the same statement, so that opening what they read costs no
//!   round trip.
//! - [`CachingStore`] keeps the clients this process loaded or wrote in memory, with the
//!   sequence they stand at. Loading one reads only the events after that sequence (usually
//!   none): one indexed query instead of the snapshot, the events after it, and their
//!   replay. Writes by other instances are those later events, so the cache is never stale;
//!   any error forgets the client.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use cqrs_es::persist::{
    EventStoreAggregateContext, EventUpcaster, PersistedEventRepository, PersistedEventStore,
    PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use domain::client::Client;
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::log::position::LogPosition;
use crate::log::signal::LogSignal;
use crate::log::upcast::upcasters;
use crate::vault::{personal, Vault};

tokio::task_local! {
    /// Where the events of the command running in this task landed, once persisted.
    static LANDED: std::cell::Cell<Option<(i64, LogPosition)>>;
    /// The connection the command running in this task reads and appends on: sqlx tests
    /// every connection given back to its pool with a round trip, so one checkout per
    /// command instead of one per statement saves a round trip.
    static CONNECTION: std::cell::RefCell<Option<PoolConnection<Postgres>>>;
}

/// Runs `command` and returns its output with the client's new version and the log position
/// of its last event, if it persisted any.
pub async fn landing<F: std::future::Future>(
    command: F,
) -> (F::Output, Option<(i64, LogPosition)>) {
    CONNECTION
        .scope(
            std::cell::RefCell::new(None),
            LANDED.scope(std::cell::Cell::new(None), async {
                let output = command.await;
                (output, LANDED.with(std::cell::Cell::get))
            }),
        )
        .await
}

/// The command's connection (taken out while in use), or a fresh one outside a command.
async fn take_connection(pool: &PgPool) -> Result<PoolConnection<Postgres>, PersistenceError> {
    let held = CONNECTION
        .try_with(|cell| cell.borrow_mut().take())
        .ok()
        .flatten();
    match held {
        Some(conn) => Ok(conn),
        None => pool.acquire().await.map_err(persistence),
    }
}

/// Puts the command's connection back for its next statement (outside a command, or after
/// an error, it goes back to the pool).
fn keep_connection(conn: PoolConnection<Postgres>) {
    let _ = CONNECTION.try_with(|cell| *cell.borrow_mut() = Some(conn));
}

/// postgres-es's repository over our tables, persisting with one statement per command and
/// sealing personal fields on the way in, opening them on the way out (see [`crate::vault`]).
pub struct LogRepository {
    pool: PgPool,
    vault: Arc<Vault>,
    signal: LogSignal,
}

impl LogRepository {
    /// A repository over the `events` and `snapshots` tables whose appends are announced by
    /// the events table's trigger.
    pub fn new(pool: PgPool, vault: Arc<Vault>) -> Self {
        Self::announcing(pool, vault, LogSignal::new())
    }

    /// A repository whose appends wake the log's readers through `signal` (and through no
    /// trigger when the signal announces them itself).
    pub fn announcing(pool: PgPool, vault: Arc<Vault>, signal: LogSignal) -> Self {
        Self {
            pool,
            vault,
            signal,
        }
    }
}

impl LogRepository {
    /// `events` with their personal fields sealed (`None` when none has any), and the
    /// snapshot sealed in place. Fetches (or makes) the client's key only when something needs
    /// it, usually from the vault's cache: the load before the command read it.
    async fn seal(
        &self,
        client: &str,
        events: &[SerializedEvent],
        snapshot: Option<&mut Value>,
    ) -> Result<Option<Vec<SerializedEvent>>, PersistenceError> {
        let personal = events
            .iter()
            .any(|e| personal::has_plain_personal_data(&e.event_type, &e.payload));
        if !personal && snapshot.is_none() {
            return Ok(None);
        }
        let mut conn = take_connection(&self.pool).await?;
        let key = self.vault.key_for_writing(&mut *conn, client).await;
        keep_connection(conn);
        let key = key.map_err(|e| PersistenceError::UnknownError(e.into()))?;
        let sealing = |kind: &str, payload: &mut Value| {
            personal::seal(&key, client, kind, payload)
                .map_err(|e| PersistenceError::UnknownError(e.into()))
        };
        if let Some(snapshot) = snapshot {
            sealing(personal::SNAPSHOT, snapshot)?;
        }
        if !personal {
            return Ok(None);
        }
        let mut sealed = events.to_vec();
        for event in &mut sealed {
            sealing(&event.event_type, &mut event.payload)?;
        }
        Ok(Some(sealed))
    }
}

/// The wrapped key of `client` read in the same statement as their events or snapshot: an
/// uncorrelated subquery, evaluated once.
const CLIENT_KEY: &str = "(select k.wrapped from client_keys k where k.client_id = $2)";

/// Opens the sealed fields of events of `aggregate_id` read with the client's wrapped `key`.
fn open_events(
    vault: &Vault,
    aggregate_id: &str,
    key: Option<&[u8]>,
    events: &mut [SerializedEvent],
) -> Result<(), PersistenceError> {
    let key = match key {
        Some(wrapped) if events.iter().any(|e| personal::is_personal(&e.event_type)) => Some(
            vault
                .unwrap(aggregate_id, wrapped)
                .map_err(|e| PersistenceError::UnknownError(e.into()))?,
        ),
        _ => None,
    };
    for event in events {
        if personal::is_personal(&event.event_type) {
            personal::open(
                key.as_ref(),
                aggregate_id,
                &event.event_type,
                &mut event.payload,
            )
            .map_err(|e| PersistenceError::UnknownError(e.into()))?;
        }
    }
    Ok(())
}

/// An event's sequence, type, version, payload and metadata, with the client's wrapped key.
type EventWithKey = (i64, String, String, Value, Value, Option<Vec<u8>>);

/// Client `aggregate_id`'s events after `sequence`, oldest first, opened.
async fn events_after(
    conn: &mut PgConnection,
    vault: &Vault,
    aggregate_id: &str,
    sequence: usize,
) -> Result<Vec<SerializedEvent>, PersistenceError> {
    let rows: Vec<EventWithKey> = sqlx::query_as(&format!(
        "select sequence, event_type, event_version, payload, metadata, {CLIENT_KEY}
               from events
              where aggregate_type = $1 and aggregate_id = $2 and sequence > $3
              order by sequence"
    ))
    .bind(Client::TYPE)
    .bind(aggregate_id)
    .bind(sequence as i64)
    .fetch_all(&mut *conn)
    .await
    .map_err(persistence)?;
    let key = rows.first().and_then(|row| row.5.clone());
    let mut events: Vec<SerializedEvent> = rows
        .into_iter()
        .map(
            |(sequence, event_type, event_version, payload, metadata, _)| {
                SerializedEvent::new(
                    aggregate_id.to_owned(),
                    sequence as usize,
                    Client::TYPE.to_owned(),
                    event_type,
                    event_version,
                    payload,
                    metadata,
                )
            },
        )
        .collect();
    open_events(vault, aggregate_id, key.as_deref(), &mut events)?;
    Ok(events)
}

fn persistence(error: sqlx::Error) -> PersistenceError {
    match &error {
        // A unique violation on (aggregate_type, aggregate_id, sequence): another writer won.
        sqlx::Error::Database(e) if e.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        _ if super::unreachable_database(&error) => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

/// Whether `error` is the events' primary key refusing a second event at the same sequence of
/// a client: another writer got there first.
pub fn persistence_failed_on_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

impl PersistedEventRepository for LogRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.get_last_events::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut conn = take_connection(&self.pool).await?;
        let events = events_after(&mut conn, &self.vault, aggregate_id, last_sequence).await?;
        keep_connection(conn);
        Ok(events)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let mut conn = take_connection(&self.pool).await?;
        let row: Option<(i64, i64, Value, Option<Vec<u8>>)> = sqlx::query_as(&format!(
            "select last_sequence, current_snapshot, payload, {CLIENT_KEY}
               from snapshots where aggregate_type = $1 and aggregate_id = $2"
        ))
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(persistence)?;
        keep_connection(conn);
        let Some((last_sequence, current_snapshot, mut aggregate, key)) = row else {
            return Ok(None);
        };
        let key = key
            .map(|wrapped| self.vault.unwrap(aggregate_id, &wrapped))
            .transpose()
            .map_err(|e| PersistenceError::UnknownError(e.into()))?;
        personal::open(
            key.as_ref(),
            aggregate_id,
            personal::SNAPSHOT,
            &mut aggregate,
        )
        .map_err(|e| PersistenceError::UnknownError(e.into()))?;
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence: last_sequence as usize,
            current_snapshot: current_snapshot as usize,
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let client = first.aggregate_id.as_str();
        let erases = events.iter().any(|e| e.event_type == "UserErased");
        let mut snapshot_update = snapshot_update;
        let sealed = self
            .seal(client, events, snapshot_update.as_mut().map(|s| &mut s.1))
            .await?;
        let events = sealed.as_deref().unwrap_or(events);
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence as i64).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let versions: Vec<&str> = events.iter().map(|e| e.event_version.as_str()).collect();
        let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
        let metadata: Vec<&Value> = events.iter().map(|e| &e.metadata).collect();
        // `announced` is set for the transaction before the rows go in, so that the table's
        // trigger knows whether to notify (see `crate::log::signal`).
        let insert = sqlx::query_as(
            "with announced as materialized (select set_config('engagement.announced', $8, true))
             insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             select $1, $2, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
               from announced,
                    unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
                    as e(sequence, event_type, event_version, payload, metadata)
             returning sequence, transaction_id::text::bigint, global_position",
        )
        .bind(A::TYPE)
        .bind(first.aggregate_id.as_str())
        .bind(&sequences)
        .bind(&types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .bind(self.signal.announced_setting());
        // The snapshot holds the state after every event of the command (cqrs-es's event sink
        // applied them all to it before its store folded the first ones in again, which our
        // idempotent `apply` absorbs), so it is recorded at the last one.
        let last_sequence = sequences.last().copied().unwrap_or_default();
        let landed: Vec<(i64, i64, i64)> = if snapshot_update.is_some() || erases {
            // The insert is the transaction's first write, so the transaction id it records
            // orders it correctly for the log's readers.
            let mut conn = take_connection(&self.pool).await?;
            let mut tx = sqlx::Connection::begin(&mut *conn)
                .await
                .map_err(persistence)?;
            let landed = insert.fetch_all(&mut *tx).await.map_err(persistence)?;
            if let Some((aggregate_id, aggregate, current_snapshot)) = &snapshot_update {
                let current_snapshot = *current_snapshot;
                let written = if current_snapshot == 1 {
                    sqlx::query(
                        "insert into snapshots (aggregate_type, aggregate_id, last_sequence,
                                            current_snapshot, payload)
                     values ($1, $2, $3, $4, $5)",
                    )
                    .bind(A::TYPE)
                    .bind(aggregate_id.as_str())
                    .bind(last_sequence)
                    .bind(current_snapshot as i64)
                    .bind(aggregate)
                    .execute(&mut *tx)
                    .await
                } else {
                    sqlx::query(
                    "update snapshots set last_sequence = $3, payload = $5, current_snapshot = $4
                      where aggregate_type = $1 and aggregate_id = $2 and current_snapshot = $6",
                )
                .bind(A::TYPE)
                .bind(aggregate_id.as_str())
                .bind(last_sequence)
                .bind(current_snapshot as i64)
                .bind(aggregate)
                .bind(current_snapshot as i64 - 1)
                .execute(&mut *tx)
                .await
                }
                .map_err(persistence)?;
                if written.rows_affected() != 1 {
                    // Another writer moved the snapshot: nothing of this command is kept.
                    return Err(PersistenceError::OptimisticLockError);
                }
            }
            if erases {
                crate::vault::erasure::shred(&mut tx, &self.vault, client)
                    .await
                    .map_err(|e| PersistenceError::UnknownError(e.into()))?;
            }
            tx.commit().await.map_err(persistence)?;
            if erases {
                self.vault.forget(client);
            }
            keep_connection(conn);
            landed
        } else {
            // One statement is its own transaction: no BEGIN and COMMIT round trips.
            let mut conn = take_connection(&self.pool).await?;
            let landed = insert.fetch_all(&mut *conn).await.map_err(persistence)?;
            keep_connection(conn);
            landed
        };
        let last = landed.iter().max_by_key(|(sequence, _, _)| *sequence).map(
            |&(sequence, transaction_id, global_position)| {
                (
                    sequence,
                    LogPosition {
                        transaction_id,
                        global_position,
                    },
                )
            },
        );
        self.signal.appended();
        crate::metrics::events_appended(types);
        // Outside a command run through `landing` there is nobody to tell.
        let _ = LANDED.try_with(|cell| cell.set(last));
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        let (mut feed, stream) = ReplayStream::new(events.len().max(1));
        for event in events {
            feed.push(Ok(event)).await?;
        }
        Ok(stream)
    }

    /// Every client's events, client by client (each opened with its key), fed as they are
    /// read.
    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let clients: Vec<String> = sqlx::query_scalar(
            "select distinct aggregate_id from events where aggregate_type = $1 order by 1",
        )
        .bind(A::TYPE)
        .fetch_all(&self.pool)
        .await
        .map_err(persistence)?;
        let (mut feed, stream) = ReplayStream::new(1_000);
        let (pool, vault) = (self.pool.clone(), self.vault.clone());
        tokio::spawn(async move {
            for client in clients {
                let events = match pool.acquire().await.map_err(persistence) {
                    Ok(mut conn) => events_after(&mut conn, &vault, &client, 0).await,
                    Err(error) => Err(error),
                };
                let failed = events.is_err();
                for event in
                    events.map_or_else(|e| vec![Err(e)], |e| e.into_iter().map(Ok).collect())
                {
                    if feed.push(event).await.is_err() {
                        return;
                    }
                }
                if failed {
                    return;
                }
            }
        });
        Ok(stream)
    }
}

/// A client as this process last saw it.
#[derive(Clone)]
struct Cached {
    client: Client,
    sequence: usize,
    snapshot: Option<usize>,
}

/// The snapshotting store with a cache of clients in front.
pub struct CachingStore {
    inner: PersistedEventStore<LogRepository, Client>,
    pool: PgPool,
    vault: Arc<Vault>,
    upcasters: Vec<Box<dyn EventUpcaster>>,
    snapshot_every: usize,
    /// `None`: caching is off.
    cache: Option<Arc<Mutex<lru::LruCache<String, Cached>>>>,
}

impl CachingStore {
    /// A store over `pool` sealing personal data with `vault`, waking the log's readers
    /// through `signal`, writing a snapshot every `snapshot_every` events and keeping up to
    /// `capacity` clients in memory (0: none).
    pub fn new(
        pool: &PgPool,
        vault: Arc<Vault>,
        signal: LogSignal,
        snapshot_every: usize,
        capacity: usize,
    ) -> Self {
        Self {
            inner: PersistedEventStore::new_snapshot_store(
                LogRepository::announcing(pool.clone(), vault.clone(), signal),
                snapshot_every,
            )
            .with_upcasters(upcasters()),
            pool: pool.clone(),
            vault,
            upcasters: upcasters(),
            snapshot_every,
            cache: NonZeroUsize::new(capacity)
                .map(|capacity| Arc::new(Mutex::new(lru::LruCache::new(capacity)))),
        }
    }

    fn cache(&self) -> Option<std::sync::MutexGuard<'_, lru::LruCache<String, Cached>>> {
        self.cache.as_ref().map(|cache| {
            cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    fn forget(&self, aggregate_id: &str) {
        if let Some(mut cache) = self.cache() {
            cache.pop(aggregate_id);
        }
    }

    fn envelope(&self, event: SerializedEvent) -> Result<EventEnvelope<Client>, PersistenceError> {
        let event = self.upcasters.iter().fold(event, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        });
        EventEnvelope::try_from(event)
    }

    async fn load_after(
        &self,
        aggregate_id: &str,
        cached: Cached,
    ) -> Result<EventStoreAggregateContext<Client>, PersistenceError> {
        let mut conn = take_connection(&self.pool).await?;
        let later = events_after(&mut conn, &self.vault, aggregate_id, cached.sequence).await?;
        keep_connection(conn);
        let mut context = EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: cached.client,
            current_sequence: cached.sequence,
            current_snapshot: cached.snapshot,
        };
        for event in later {
            let envelope = self.envelope(event)?;
            context.current_sequence = envelope.sequence;
            context.aggregate.apply(envelope.payload);
        }
        Ok(context)
    }
}

impl EventStore<Client> for CachingStore {
    type AC = EventStoreAggregateContext<Client>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<Client>>, AggregateError<<Client as Aggregate>::Error>> {
        self.inner.load_events(aggregate_id).await
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<<Client as Aggregate>::Error>> {
        let cached = self
            .cache()
            .and_then(|mut cache| cache.get(aggregate_id).cloned());
        let Some(cached) = cached else {
            return self.inner.load_aggregate(aggregate_id).await;
        };
        match self.load_after(aggregate_id, cached).await {
            Ok(context) => Ok(context),
            Err(error) => {
                self.forget(aggregate_id);
                Err(error.into())
            }
        }
    }

    async fn commit(
        &self,
        events: Vec<<Client as Aggregate>::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<Client>>, AggregateError<<Client as Aggregate>::Error>> {
        let aggregate_id = context.aggregate_id.clone();
        let before = context.current_sequence;
        let after = before + events.len();
        // A commit that crosses a snapshot boundary writes a snapshot; the next load reads it
        // rather than trusting a snapshot version kept here.
        let snapshots = self.snapshot_every.max(1);
        let keep = after / snapshots == before / snapshots;
        // cqrs-es's event sink has already applied the events to the context's aggregate.
        let next = keep.then(|| Cached {
            client: context.aggregate.clone(),
            sequence: after,
            snapshot: context.current_snapshot,
        });
        match self.inner.commit(events, context, metadata).await {
            Ok(envelopes) => {
                match next {
                    Some(cached) => {
                        if let Some(mut cache) = self.cache() {
                            cache.put(aggregate_id, cached);
                        }
                    }
                    None => self.forget(&aggregate_id),
                }
                Ok(envelopes)
            }
            Err(error) => {
                self.forget(&aggregate_id);
                Err(error)
            }
        }
    }
}
