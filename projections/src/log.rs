//! Reading the whole event log, gap-free, in `(transaction_id, global_position)` order.
//!
//! An identity value is taken at insert but becomes visible at commit, so a reader ordering by
//! `global_position` alone could move past a smaller position that commits a moment later and
//! lose it for good. So we order by the writing transaction first, and read only transactions
//! below the oldest one still running: everything at or before a returned position is final.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::ClientEvent;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::position::LogPosition;
use crate::upcast::upcast;

/// One event as stored in the log, upcast to the current schema.
#[derive(Debug, Clone, PartialEq)]
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
    /// The payload, upcast to the current schema.
    pub payload: Value,
    /// `actor`, `requestId`, `correlationId`, `causationId`.
    pub metadata: Value,
    /// When the database recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// The typed event.
    ///
    /// # Errors
    /// The payload does not match any event this build knows.
    pub fn event(&self) -> anyhow::Result<ClientEvent> {
        serde_json::from_value(self.payload.clone()).with_context(|| {
            format!(
                "event {} ({} v{}) does not match the current schema",
                self.position.global_position, self.event_type, self.event_version
            )
        })
    }
}

type Row = (
    i64,
    i64,
    String,
    i64,
    String,
    String,
    Value,
    Value,
    DateTime<Utc>,
);

fn from_row(row: Row) -> anyhow::Result<StoredEvent> {
    let (
        transaction_id,
        global_position,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        payload,
        metadata,
        recorded_at,
    ) = row;
    let user_id = Uuid::parse_str(&aggregate_id)
        .with_context(|| format!("event {global_position} has a non-uuid aggregate id"))?;
    let payload = upcast(&event_type, &event_version, payload);
    Ok(StoredEvent {
        position: LogPosition {
            transaction_id,
            global_position,
        },
        user_id,
        sequence,
        event_type,
        event_version,
        payload,
        metadata,
        recorded_at,
    })
}

/// Reads up to `limit` events after `after`, from finished transactions only.
///
/// # Errors
/// The database failed or an event is unreadable.
pub async fn read_after<'e>(
    executor: impl PgExecutor<'e>,
    after: LogPosition,
    limit: i64,
) -> anyhow::Result<Vec<StoredEvent>> {
    // xid8 has no binary codec in sqlx: it crosses the wire as text.
    let rows: Vec<Row> = sqlx::query_as(
        "select transaction_id::text::bigint, global_position, aggregate_id, sequence,
                event_type, event_version, payload, metadata, recorded_at
           from events
          where aggregate_type = 'client'
            and (transaction_id, global_position) > ($1::text::xid8, $2)
            and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          order by transaction_id, global_position
          limit $3",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(limit)
    .fetch_all(executor)
    .await
    .context("reading the event log")?;
    rows.into_iter().map(from_row).collect()
}

/// Every event of one client, oldest first.
///
/// # Errors
/// The database failed or an event is unreadable.
pub async fn read_stream<'e>(
    executor: impl PgExecutor<'e>,
    user_id: Uuid,
) -> anyhow::Result<Vec<StoredEvent>> {
    let rows: Vec<Row> = sqlx::query_as(
        "select transaction_id::text::bigint, global_position, aggregate_id, sequence,
                event_type, event_version, payload, metadata, recorded_at
           from events
          where aggregate_type = 'client' and aggregate_id = $1
          order by sequence",
    )
    .bind(user_id.to_string())
    .fetch_all(executor)
    .await
    .context("reading a user's events")?;
    rows.into_iter().map(from_row).collect()
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
    sqlx::query_scalar(
        "select exists (select 1 from events
                         where (transaction_id, global_position) > ($1::text::xid8, $2))",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .fetch_one(executor)
    .await
    .context("looking for pending events")
}

/// The last position in the log, in reader order (`START` for an empty log).
///
/// # Errors
/// The database failed.
pub async fn head<'e>(executor: impl PgExecutor<'e>) -> anyhow::Result<LogPosition> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "select transaction_id::text::bigint, global_position
           from events
          order by transaction_id desc, global_position desc
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
