//! Many clients' commands in one transaction: the write path of imports.
//!
//! The command bus appends one client's events per transaction, which is right for requests
//! and far too slow for ten years of order history. A [`Batch`] loads every client it touches
//! in two statements (their snapshots, then the events after them), decides each client's
//! command with the same aggregate, and appends every resulting event in one `insert`, with
//! the snapshots of the clients that crossed a snapshot boundary, in one transaction. The
//! per-client optimistic lock is the same as the bus's (the events' primary key on
//! `(aggregate_type, aggregate_id, sequence)`): if another writer got to any of the clients
//! first, nothing of the batch is kept and [`BatchError::Conflict`] says so; the commands are
//! idempotent, so the caller runs the batch again.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use domain::client::{
    Client, ClientAction, ClientCommand, ClientError, ClientEvent, ClientServices,
};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::store::persistence_failed_on_conflict;
use super::{unreachable_database, CommandMetadata, SNAPSHOT_EVERY};
use crate::log::position::LogPosition;
use crate::log::signal::LogSignal;
use crate::log::upcast::upcasters;
use crate::vault::{personal, Vault};

/// A client a batch writes to is snapshotted once this many events have followed its last
/// snapshot.
const EAGER_SNAPSHOT_EVERY: usize = 24;

/// Why a batch wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Another writer changed one of the clients meanwhile: run the batch again.
    #[error("a user in the batch was changed by another writer at the same time")]
    Conflict,
    /// The database cannot be reached.
    #[error("the database cannot be reached")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

fn failed(error: sqlx::Error, doing: &'static str) -> BatchError {
    if unreachable_database(&error) {
        BatchError::Unavailable(error)
    } else if persistence_failed_on_conflict(&error) {
        BatchError::Conflict
    } else {
        BatchError::Unexpected(anyhow::Error::new(error).context(doing))
    }
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Per command, in the order given: the events it recorded, or why it was refused.
    pub results: Vec<Result<Vec<ClientEvent>, ClientError>>,
    /// Where the batch's last event landed, if it recorded any: a reader that has passed it
    /// sees the whole batch.
    pub position: Option<LogPosition>,
}

/// A client loaded for a batch.
struct Loaded {
    client: Client,
    sequence: usize,
    snapshot: Option<usize>,
    /// The sequence the stored snapshot describes (0: none).
    snapshot_at: usize,
}

/// Runs commands of many clients in one transaction.
#[derive(Clone)]
pub struct Batch {
    pool: PgPool,
    vault: Arc<Vault>,
    services: ClientServices,
    signal: LogSignal,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl Batch {
    /// A batch writer over `pool`, sealing personal data with `vault`, deciding with
    /// `services`, waking the log's readers through `signal`.
    pub fn new(
        pool: PgPool,
        vault: Arc<Vault>,
        services: ClientServices,
        signal: LogSignal,
    ) -> Self {
        Self {
            pool,
            vault,
            services,
            signal,
        }
    }

    /// Decides `commands` (at most one per client) at `now` and records all their events
    /// in one transaction, with `metadata` on each.
    ///
    /// # Errors
    /// See [`BatchError`]; a refused command is not an error (it is in the outcome).
    ///
    /// # Panics
    /// A client appears twice in `commands`.
    pub async fn run(
        &self,
        commands: Vec<(Uuid, ClientAction)>,
        now: DateTime<Utc>,
        metadata: &CommandMetadata,
    ) -> Result<BatchOutcome, BatchError> {
        assert!(
            !commands
                .iter()
                .any(|(_, action)| matches!(action, ClientAction::EraseUser { .. })),
            "erasures go through the command bus, whose append deletes the key"
        );
        let ids: Vec<String> = commands.iter().map(|(id, _)| id.to_string()).collect();
        let mut loaded = self.load(&ids).await?;
        assert_eq!(loaded.len(), ids.len(), "one command per user in a batch");
        let mut rows = Rows {
            // The same for every event of the batch: bound once.
            metadata: serde_json::to_value(metadata.to_map()).context("serializing metadata")?,
            ..Rows::default()
        };
        let mut results = Vec::with_capacity(commands.len());
        let mut snapshots = Vec::new();
        for ((_, action), id) in commands.into_iter().zip(&ids) {
            let state = loaded.get_mut(id).expect("every user was loaded");
            let events = match state
                .client
                .decide(ClientCommand::new(action, now), &self.services)
            {
                Ok(events) => events,
                Err(error) => {
                    results.push(Err(error));
                    continue;
                }
            };
            let before = state.sequence;
            for event in &events {
                state.sequence += 1;
                rows.push(id, state.sequence, event)?;
                state.client.apply(event.clone());
            }
            // Besides the bus's boundaries, a client an import keeps coming back to (a file in
            // date order touches each client once per chunk) is snapshotted every few events,
            // so that loading it never replays more than that.
            if before / SNAPSHOT_EVERY != state.sequence / SNAPSHOT_EVERY
                || state.sequence - state.snapshot_at >= EAGER_SNAPSHOT_EVERY
            {
                snapshots.push((
                    id.clone(),
                    state.sequence as i64,
                    state.snapshot.map_or(0, |s| s as i64),
                    serde_json::to_value(&state.client).context("serializing a snapshot")?,
                ));
            }
            results.push(Ok(events));
        }
        if rows.ids.is_empty() {
            return Ok(BatchOutcome {
                results,
                position: None,
            });
        }
        self.seal(&mut rows, &mut snapshots).await?;
        let position = self.append(&rows, &snapshots).await?;
        Ok(BatchOutcome {
            results,
            position: Some(position),
        })
    }

    /// Seals the personal fields of the batch's events and snapshots, with every key they need
    /// fetched (or made) in one statement.
    async fn seal(
        &self,
        rows: &mut Rows,
        snapshots: &mut [(String, i64, i64, Value)],
    ) -> Result<(), BatchError> {
        let mut clients: Vec<String> = rows
            .personal
            .iter()
            .map(|&i| rows.ids[i].clone())
            .chain(snapshots.iter().map(|s| s.0.clone()))
            .collect();
        clients.sort_unstable();
        clients.dedup();
        if clients.is_empty() {
            return Ok(());
        }
        let keys = self
            .vault
            .keys_for_writing(&self.pool, &clients)
            .await
            .map_err(|e| match e.downcast::<sqlx::Error>() {
                Ok(e) => failed(e, "storing data keys"),
                Err(e) => BatchError::Unexpected(e),
            })?;
        for &i in &rows.personal {
            let client = &rows.ids[i];
            let mut payload: Value =
                serde_json::from_str(&rows.payloads[i]).context("re-reading an event")?;
            personal::seal(&keys[client], client, &rows.types[i], &mut payload)?;
            rows.payloads[i] = payload.to_string();
        }
        for (client, _, _, payload) in snapshots.iter_mut() {
            personal::seal(&keys[client.as_str()], client, personal::SNAPSHOT, payload)?;
        }
        Ok(())
    }

    async fn append(
        &self,
        rows: &Rows,
        snapshots: &[(String, i64, i64, Value)],
    ) -> Result<LogPosition, BatchError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| failed(e, "beginning"))?;
        // The first write of the transaction, so its transaction id orders it for readers.
        // `announced` tells the events table's trigger whether to notify (see
        // `crate::log::signal`).
        let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
            "with announced as materialized (select set_config('engagement.announced', $8, true)),
             landed as (
                insert into events (aggregate_type, aggregate_id, sequence, event_type,
                                    event_version, payload, metadata)
                select $1, e.aggregate_id, e.sequence, e.event_type, e.event_version,
                       e.payload::jsonb, $7
                  from announced,
                       unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
                       as e(aggregate_id, sequence, event_type, event_version, payload)
                returning transaction_id, global_position)
             select max(transaction_id::text::bigint), max(global_position) from landed",
        )
        .bind(Client::TYPE)
        .bind(&rows.ids)
        .bind(&rows.sequences)
        .bind(&rows.types)
        .bind(&rows.versions)
        .bind(&rows.payloads)
        .bind(&rows.metadata)
        .bind(self.signal.announced_setting())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| failed(e, "appending a batch"))?;
        let (fresh, moved): (Vec<_>, Vec<_>) = snapshots.iter().partition(|s| s.2 == 0);
        for (list, sql) in [
            (
                fresh,
                "insert into snapshots (aggregate_type, aggregate_id, last_sequence,
                                        current_snapshot, payload)
                 select $1, s.id, s.seq, 1, s.payload
                   from unnest($2::text[], $3::bigint[], $4::bigint[], $5::jsonb[])
                        as s(id, seq, current, payload)
                 on conflict do nothing",
            ),
            (
                moved,
                "update snapshots t
                    set last_sequence = s.seq, current_snapshot = s.current + 1,
                        payload = s.payload
                   from unnest($2::text[], $3::bigint[], $4::bigint[], $5::jsonb[])
                        as s(id, seq, current, payload)
                  where t.aggregate_type = $1 and t.aggregate_id = s.id
                    and t.current_snapshot = s.current",
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            let ids: Vec<&str> = list.iter().map(|s| s.0.as_str()).collect();
            let sequences: Vec<i64> = list.iter().map(|s| s.1).collect();
            let currents: Vec<i64> = list.iter().map(|s| s.2).collect();
            let payloads: Vec<&Value> = list.iter().map(|s| &s.3).collect();
            let written = sqlx::query(sql)
                .bind(Client::TYPE)
                .bind(&ids)
                .bind(&sequences)
                .bind(&currents)
                .bind(&payloads)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(e, "writing snapshots"))?;
            if written.rows_affected() != list.len() as u64 {
                // Another writer moved a snapshot: nothing of this batch is kept.
                return Err(BatchError::Conflict);
            }
        }
        tx.commit()
            .await
            .map_err(|e| failed(e, "committing a batch"))?;
        self.signal.appended();
        crate::metrics::events_appended(rows.types.iter().map(String::as_str));
        Ok(LogPosition {
            transaction_id,
            global_position,
        })
    }

    /// Loads clients `ids` as their snapshots and later events tell them (a client never
    /// created comes back new).
    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Loaded>, BatchError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| failed(e, "connecting"))?;
        let snapshots: Vec<(String, i64, i64, Value)> = sqlx::query_as(
            "select aggregate_id, last_sequence, current_snapshot, payload
               from snapshots where aggregate_type = $1 and aggregate_id = any($2)",
        )
        .bind(Client::TYPE)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| failed(e, "loading snapshots"))?;
        let keys = self
            .vault
            .keys(&mut *conn, ids)
            .await
            .context("loading data keys")?;
        let mut loaded: HashMap<String, Loaded> = ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    Loaded {
                        client: Client::default(),
                        sequence: 0,
                        snapshot: None,
                        snapshot_at: 0,
                    },
                )
            })
            .collect();
        for (id, sequence, current, mut payload) in snapshots {
            personal::open(keys.get(&id), &id, personal::SNAPSHOT, &mut payload)?;
            let client: Client =
                serde_json::from_value(payload).context("reading a user's snapshot")?;
            loaded.insert(
                id,
                Loaded {
                    client,
                    sequence: sequence as usize,
                    snapshot: Some(current as usize),
                    snapshot_at: sequence as usize,
                },
            );
        }
        let after: Vec<i64> = ids.iter().map(|id| loaded[id].sequence as i64).collect();
        let events: Vec<(String, i64, String, String, Value)> = sqlx::query_as(
            // A lateral subquery per client: an index range scan each, where a join let the
            // planner (which guesses a hundred rows for any unnest) scan the whole log.
            "select w.id, e.sequence, e.event_type, e.event_version, e.payload
               from unnest($2::text[], $3::bigint[]) as w(id, after)
              cross join lateral (
                    select sequence, event_type, event_version, payload from events
                     where aggregate_type = $1 and aggregate_id = w.id and sequence > w.after
                     order by sequence) e
              order by w.id, e.sequence",
        )
        .bind(Client::TYPE)
        .bind(ids)
        .bind(&after)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| failed(e, "loading events"))?;
        let upcasters = upcasters();
        for (id, sequence, event_type, event_version, mut payload) in events {
            if personal::is_personal(&event_type) {
                personal::open(keys.get(&id), &id, &event_type, &mut payload)?;
            }
            let mut event = SerializedEvent::new(
                id.clone(),
                sequence as usize,
                Client::TYPE.to_owned(),
                event_type,
                event_version,
                payload,
                Value::Object(serde_json::Map::new()),
            );
            for upcaster in &upcasters {
                if upcaster.can_upcast(&event.event_type, &event.event_version) {
                    event = upcaster.upcast(event);
                }
            }
            let envelope = EventEnvelope::<Client>::try_from(event)
                .map_err(|e| anyhow::anyhow!("{e}").context("reading a user's event"))?;
            let state = loaded.get_mut(&id).expect("only requested users are read");
            state.sequence = envelope.sequence;
            state.client.apply(envelope.payload);
        }
        Ok(loaded)
    }
}

/// The columns of the events a batch appends.
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    /// As JSON text: serialized once, straight from the event, where a `Value` tree per
    /// event was the import's largest allocator.
    payloads: Vec<String>,
    /// The rows whose events have personal fields to seal.
    personal: Vec<usize>,
    metadata: Value,
}

impl Rows {
    fn push(&mut self, id: &str, sequence: usize, event: &ClientEvent) -> anyhow::Result<()> {
        if personal::carries_personal_data(event) {
            self.personal.push(self.ids.len());
        }
        self.ids.push(id.to_owned());
        self.sequences.push(sequence as i64);
        self.types.push(event.event_type());
        self.versions.push(event.event_version());
        self.payloads
            .push(serde_json::to_string(event).context("serializing an event")?);
        Ok(())
    }
}
