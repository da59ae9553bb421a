//! Reading the whole event log, gap-free, in `(transaction_id, global_position)` order.
//!
//! An identity value is taken at insert but becomes visible at commit, so a reader ordering by
//! `global_position` alone could move past a smaller position that commits a moment later and
//! lose it for good. So we order by the writing transaction first, and read only transactions
//! below the oldest one still running: everything at or before a returned position is final.
//!
//! # Layout
//! - this module: the reader ([`read_after`]) and a client's own stream ([`read_stream_pages`]).
//! - [`as_of`]: a client as they stood at a moment, from kept states.
//! - [`position`]: a place in the log.
//! - [`consumer`]: checkpointed consumers, their wake-up signal, read-your-writes, lag.
//! - [`tail`]: the live tail of the log that feeds subscriptions.
//! - [`upcast`](mod@upcast): the one place older event versions become current ones.

pub mod as_of;
pub mod consumer;
pub mod position;
pub mod signal;
pub mod tail;
pub mod upcast;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::{ClientEvent, EVENT_VERSION};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::log::position::LogPosition;
use crate::log::upcast::upcast;
use crate::vault::{personal, Vault};

/// One event as stored in the log. Its payload is kept as the JSON text the database sent and
/// parsed on demand, straight into the typed event when it is of the current version.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Where it sits in the log.
    pub position: LogPosition,
    /// The client.
    pub user_id: Uuid,
    /// The client's version after this event.
    pub sequence: i64,
    /// `UserCreated`, `OrderPlaced`, ...
    pub event_type: String,
    /// The schema version it was written with.
    pub event_version: String,
    /// `actor`, `requestId`, `correlationId`, `causationId` (`Null` when not read).
    pub metadata: Value,
    /// When the database recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The personal fields this event held whose client was erased (they read blank).
    pub erased: Vec<String>,
    payload: Option<Box<RawValue>>,
}

impl PartialEq for StoredEvent {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
            && self.user_id == other.user_id
            && self.sequence == other.sequence
            && self.event_type == other.event_type
            && self.event_version == other.event_version
            && self.metadata == other.metadata
            && self.recorded_at == other.recorded_at
            && self.erased == other.erased
            && self.payload.as_ref().map(|p| p.get()) == other.payload.as_ref().map(|p| p.get())
    }
}

impl StoredEvent {
    fn raw(&self) -> anyhow::Result<&RawValue> {
        self.payload.as_deref().with_context(|| {
            format!(
                "event {} ({}) was read without its payload",
                self.position.global_position, self.event_type
            )
        })
    }

    /// The payload, upcast to the current schema.
    ///
    /// # Errors
    /// The payload was not read, or is not JSON.
    pub fn payload(&self) -> anyhow::Result<Value> {
        let value: Value =
            serde_json::from_str(self.raw()?.get()).context("parsing an event payload")?;
        Ok(if self.event_version == EVENT_VERSION {
            value
        } else {
            upcast(&self.event_type, &self.event_version, value)
        })
    }

    /// The typed event, upcast to the current schema.
    ///
    /// # Errors
    /// The payload was not read, or does not match any event this build knows.
    pub fn event(&self) -> anyhow::Result<ClientEvent> {
        let parsed = if self.event_version == EVENT_VERSION {
            serde_json::from_str(self.raw()?.get()).map_err(anyhow::Error::from)
        } else {
            self.payload()
                .and_then(|v| serde_json::from_value(v).map_err(anyhow::Error::from))
        };
        parsed.with_context(|| {
            format!(
                "event {} ({} v{}) does not match the current schema",
                self.position.global_position, self.event_type, self.event_version
            )
        })
    }
}

/// One row of `events` as the readers select it.
#[derive(sqlx::FromRow)]
struct EventRow {
    transaction_id: i64,
    global_position: i64,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Option<Json<Box<RawValue>>>,
    metadata: Option<Value>,
    recorded_at: DateTime<Utc>,
    /// The client's wrapped data key, read with events that may carry sealed fields (`None`
    /// for the others, and once the client is erased).
    key: Option<Vec<u8>>,
}

/// The column that reads the wrapped key of an event's client, for the events whose payload
/// (as read) carries sealed fields: an index lookup for those rows only (an automatic score,
/// the most common event, has none).
const KEY_COLUMN: &str = "case when e.event_type = any($1) and e.payload -> e.event_type ? 'sealed'
        then (select k.wrapped from client_keys k where k.client_id = e.aggregate_id) end as key";

impl EventRow {
    /// The stored event, its sealed fields opened with the client's key (blank once erased).
    fn open(self, vault: &Vault) -> anyhow::Result<StoredEvent> {
        let user_id = Uuid::parse_str(&self.aggregate_id).with_context(|| {
            format!("event {} has a non-uuid aggregate id", self.global_position)
        })?;
        let mut erased = Vec::new();
        let mut payload = self.payload.map(|Json(raw)| raw);
        if let Some(raw) = payload.as_ref().filter(|raw| {
            personal::is_personal(&self.event_type) && raw.get().contains(personal::SEALED)
        }) {
            let mut value: Value =
                serde_json::from_str(raw.get()).context("parsing an event payload")?;
            let key = self
                .key
                .as_deref()
                .map(|wrapped| vault.unwrap(&self.aggregate_id, wrapped))
                .transpose()?;
            erased = personal::open(
                key.as_ref(),
                &self.aggregate_id,
                &self.event_type,
                &mut value,
            )
            .with_context(|| format!("event {}", self.global_position))?
            .erased;
            payload =
                Some(serde_json::value::to_raw_value(&value).context("an opened event payload")?);
        }
        Ok(StoredEvent {
            position: LogPosition {
                transaction_id: self.transaction_id,
                global_position: self.global_position,
            },
            user_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            metadata: self.metadata.unwrap_or(Value::Null),
            recorded_at: self.recorded_at,
            erased,
            payload,
        })
    }
}

/// What a reader of the whole log wants of each event.
#[derive(Debug, Clone, Default)]
pub struct ReadFilter {
    /// Read payloads only of these event types (`None`: of all). Events of other types still
    /// come, so that checkpoints move past them, but without the cost of their payload.
    pub payload_types: Option<Vec<String>>,
    /// Read each event's metadata too.
    pub with_metadata: bool,
}

/// Reads up to `limit` events after `after`, from finished transactions only.
///
/// # Errors
/// The database failed or an event is unreadable.
pub async fn read_after<'e>(
    executor: impl PgExecutor<'e>,
    vault: &Vault,
    after: LogPosition,
    limit: i64,
    filter: &ReadFilter,
) -> anyhow::Result<Vec<StoredEvent>> {
    // xid8 has no binary codec in sqlx: it crosses the wire as text. The log holds one
    // aggregate type (`client`), and the query must not say so: with that condition the
    // generic plan a prepared statement settles on after five runs intersects the primary key
    // (every row is a client's) with the log-order index and sorts, a cost that grows with
    // the whole log on every read, where the log-order index alone reads just the batch.
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select transaction_id::text::bigint as transaction_id, global_position, aggregate_id,
                sequence, event_type, event_version, payload, metadata, recorded_at, {KEY_COLUMN}
           from (select transaction_id, global_position, aggregate_id, sequence, event_type,
                        event_version,
                        case when $5::text[] is null or event_type = any($5) then payload end
                            as payload,
                        case when $6 then metadata end as metadata,
                        recorded_at
                   from events
                  where (transaction_id, global_position) > ($2::text::xid8, $3)
                    and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                  order by events.transaction_id, events.global_position
                  limit $4) e
          order by e.transaction_id, e.global_position",
    ))
    .bind(personal_types(filter))
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(limit)
    .bind(filter.payload_types.as_deref())
    .bind(filter.with_metadata)
    .fetch_all(executor)
    .await
    .context("reading the event log")?;
    rows.into_iter().map(|row| row.open(vault)).collect()
}

/// The event types whose rows need their client's key: those with personal fields whose
/// payload is read.
fn personal_types(filter: &ReadFilter) -> Vec<&'static str> {
    personal::PERSONAL_EVENT_TYPES
        .iter()
        .copied()
        .filter(|kind| {
            filter
                .payload_types
                .as_ref()
                .is_none_or(|wanted| wanted.iter().any(|w| w == kind))
        })
        .collect()
}

/// Every event of one client, oldest first.
///
/// # Errors
/// The database failed or an event is unreadable.
pub async fn read_stream<'e>(
    executor: impl PgExecutor<'e>,
    vault: &Vault,
    user_id: Uuid,
) -> anyhow::Result<Vec<StoredEvent>> {
    let page = StreamPage {
        user_id,
        after_sequence: 0,
        limit: i64::MAX,
    };
    let mut pages = read_stream_pages(executor, vault, &[page]).await?;
    Ok(pages.pop().unwrap_or_default())
}

/// The client and type of every event in `(after, upto]` (two positions readers have passed,
/// so nothing in between is still to commit), or `None` if there are more than `most`.
///
/// # Errors
/// The database failed.
pub async fn changed_between<'e>(
    executor: impl PgExecutor<'e>,
    after: LogPosition,
    upto: LogPosition,
    most: i64,
) -> anyhow::Result<Option<Vec<(Uuid, String)>>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select aggregate_id, event_type from events
          where (transaction_id, global_position) > ($1::text::xid8, $2)
            and (transaction_id, global_position) <= ($3::text::xid8, $4)
          order by events.transaction_id, events.global_position
          limit $5",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(upto.transaction_id.to_string())
    .bind(upto.global_position)
    .bind(most.saturating_add(1))
    .fetch_all(executor)
    .await
    .context("reading what changed in the log")?;
    if rows.len() as i64 > most {
        return Ok(None);
    }
    rows.into_iter()
        .map(|(id, event_type)| {
            let id = Uuid::parse_str(&id).context("an event of a non-uuid client")?;
            Ok((id, event_type))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

/// True if committed events after `after` exist that a reader cannot take yet, because an
/// older transaction is still running. A reader that found nothing should then look again
/// shortly rather than wait for the next notification (the transaction holding it back may
/// write no event and so send none).
///
/// # Errors
/// The database failed.
pub async fn has_pending_after<'e>(
    executor: impl PgExecutor<'e>,
    after: LogPosition,
) -> anyhow::Result<bool> {
    // The ORDER BY makes the planner walk the log-order index from `after`; a bare EXISTS gets
    // a generic plan that may scan the whole table to find the newest rows.
    let found: Option<i32> = sqlx::query_scalar(
        "select 1 from events
          where (transaction_id, global_position) > ($1::text::xid8, $2)
          order by events.transaction_id, events.global_position
          limit 1",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .fetch_optional(executor)
    .await
    .context("looking for pending events")?;
    Ok(found.is_some())
}

/// The last position in the log, in reader order (`START` for an empty log).
///
/// # Errors
/// The database failed.
pub async fn head<'e>(executor: impl PgExecutor<'e>) -> anyhow::Result<LogPosition> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "select transaction_id::text::bigint, global_position
           from events
          order by events.transaction_id desc, events.global_position desc
          limit 1",
    )
    .fetch_optional(executor)
    .await
    .context("reading the head of the log")?;
    Ok(
        row.map_or(LogPosition::START, |(transaction_id, global_position)| {
            LogPosition {
                transaction_id,
                global_position,
            }
        }),
    )
}

/// The sequence and log position of client `user_id`'s last event, if they have any.
///
/// # Errors
/// The database failed.
pub async fn stream_head<'e>(
    executor: impl PgExecutor<'e>,
    user_id: Uuid,
) -> anyhow::Result<Option<(i64, LogPosition)>> {
    let row: Option<(i64, i64, i64)> = sqlx::query_as(
        "select sequence, transaction_id::text::bigint, global_position
           from events
          where aggregate_type = 'client' and aggregate_id = $1
          order by sequence desc
          limit 1",
    )
    .bind(user_id.to_string())
    .fetch_optional(executor)
    .await
    .context("reading the head of a user's stream")?;
    Ok(row.map(|(sequence, transaction_id, global_position)| {
        (
            sequence,
            LogPosition {
                transaction_id,
                global_position,
            },
        )
    }))
}

/// One page of a client's stream: events with sequence above `after_sequence`, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamPage {
    /// The client.
    pub user_id: Uuid,
    /// Events after this sequence (0: from the start).
    pub after_sequence: i64,
    /// Most events returned.
    pub limit: i64,
}

/// Reads several stream pages in one query (one lateral index scan per page); the result has
/// one list per page, in the order asked.
///
/// # Errors
/// The database failed or an event is unreadable.
pub async fn read_stream_pages<'e>(
    executor: impl PgExecutor<'e>,
    vault: &Vault,
    pages: &[StreamPage],
) -> anyhow::Result<Vec<Vec<StoredEvent>>> {
    let ids: Vec<String> = pages.iter().map(|p| p.user_id.to_string()).collect();
    let afters: Vec<i64> = pages.iter().map(|p| p.after_sequence).collect();
    let limits: Vec<i64> = pages.iter().map(|p| p.limit).collect();
    /// A row with the ordinal of the page it answers.
    #[derive(sqlx::FromRow)]
    struct PageRow {
        ord: i64,
        #[sqlx(flatten)]
        row: EventRow,
    }
    let rows: Vec<PageRow> = sqlx::query_as(&format!(
            "select p.ord, e.transaction_id::text::bigint as transaction_id, e.global_position,
                    e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload,
                    e.metadata, e.recorded_at, {KEY_COLUMN}
               from unnest($2::text[], $3::bigint[], $4::bigint[]) with ordinality as p(id, after_seq, lim, ord)
              cross join lateral (
                    select * from events
                     where aggregate_type = 'client' and aggregate_id = p.id and sequence > p.after_seq
                     order by sequence
                     limit p.lim) e
              order by p.ord, e.sequence",
        ))
        .bind(personal::PERSONAL_EVENT_TYPES)
        .bind(&ids)
        .bind(&afters)
        .bind(&limits)
        .fetch_all(executor)
        .await
        .context("reading pages of users' events")?;
    let mut out: Vec<Vec<StoredEvent>> = vec![Vec::new(); pages.len()];
    for PageRow { ord, row } in rows {
        let index = usize::try_from(ord - 1).context("page ordinal")?;
        out[index].push(row.open(vault)?);
    }
    Ok(out)
}

/// How many events each client has (by stream length), in one query.
///
/// # Errors
/// The database failed.
pub async fn stream_lengths<'e>(
    executor: impl PgExecutor<'e>,
    users: &[Uuid],
) -> anyhow::Result<std::collections::HashMap<Uuid, i64>> {
    let ids: Vec<String> = users.iter().map(Uuid::to_string).collect();
    // A stream's length is its last sequence (sequences are 1, 2, 3, ... per client).
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select k.id, coalesce((select max(sequence) from events
                                 where aggregate_type = 'client' and aggregate_id = k.id), 0)
           from unnest($1::text[]) k(id)",
    )
    .bind(&ids)
    .fetch_all(executor)
    .await
    .context("counting users' events")?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, n)| Uuid::parse_str(&id).ok().map(|id| (id, n)))
        .collect())
}
