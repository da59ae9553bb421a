//! Batched reads: every relation of a page of objects is loaded with a constant number of
//! queries (one lateral join per relation), however many objects the page holds.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use chrono::{DateTime, Utc};
use projections::log::{self, StreamPage};
use projections::views::emails::EmailRow;
use projections::views::users::UserRow;
use sqlx::PgPool;
use uuid::Uuid;

use super::cursor;
use super::errors::{ApiError, ApiResult};
use super::types::{Email, EmailConnection, Event, EventConnection, User};

/// A page of one client's emails, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailsPageKey {
    /// Whose.
    pub user_id: Uuid,
    /// After this (generated_at, id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Page size.
    pub limit: i64,
    /// Whether `totalCount` was asked for (counting is a query of its own).
    pub count: bool,
}

impl EmailsPageKey {
    /// From GraphQL arguments.
    ///
    /// # Errors
    /// `VALIDATION` on `first` or `after`.
    pub fn new(
        user_id: Uuid,
        first: Option<i32>,
        after: Option<&str>,
        count: bool,
    ) -> ApiResult<Self> {
        Ok(Self {
            user_id,
            after: after.map(cursor::decode).transpose()?,
            limit: cursor::page_size(first)?,
            count,
        })
    }
}

/// A page of one client's events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventsPageKey {
    /// Whose.
    pub user_id: Uuid,
    /// After this sequence.
    pub after: i64,
    /// Page size.
    pub limit: i64,
    /// Whether `totalCount` was asked for (counting is a query of its own).
    pub count: bool,
}

impl EventsPageKey {
    /// From GraphQL arguments.
    ///
    /// # Errors
    /// `VALIDATION` on `first` or `after`.
    pub fn new(
        user_id: Uuid,
        first: Option<i32>,
        after: Option<&str>,
        count: bool,
    ) -> ApiResult<Self> {
        Ok(Self {
            user_id,
            after: after.map(cursor::decode).transpose()?.unwrap_or(0),
            limit: cursor::page_size(first)?,
            count,
        })
    }
}

/// A row with the ordinal of the key it answers.
#[derive(sqlx::FromRow)]
struct Ordered<T> {
    ord: i64,
    #[sqlx(flatten)]
    row: T,
}

/// The loader behind every batched read.
pub struct PgLoader {
    pool: PgPool,
}

type LoadError = Arc<anyhow::Error>;

impl Loader<Uuid> for PgLoader {
    type Value = UserRow;
    type Error = LoadError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, UserRow>, LoadError> {
        let rows: Vec<UserRow> = sqlx::query_as("select * from users where id = any($1)")
            .bind(keys)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Arc::new(anyhow::Error::new(e).context("loading users")))?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}

impl Loader<EmailsPageKey> for PgLoader {
    type Value = (Vec<EmailRow>, i64);
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[EmailsPageKey],
    ) -> Result<HashMap<EmailsPageKey, Self::Value>, LoadError> {
        let wrap = |e: sqlx::Error| Arc::new(anyhow::Error::new(e).context("loading emails"));
        let users: Vec<Uuid> = keys.iter().map(|k| k.user_id).collect();
        let after_at: Vec<Option<DateTime<Utc>>> =
            keys.iter().map(|k| k.after.map(|a| a.0)).collect();
        let after_id: Vec<Option<Uuid>> = keys.iter().map(|k| k.after.map(|a| a.1)).collect();
        let limits: Vec<i64> = keys.iter().map(|k| k.limit + 1).collect();
        let rows: Vec<Ordered<EmailRow>> = sqlx::query_as(
            "select k.ord, e.*
               from unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::bigint[])
                    with ordinality as k(user_id, after_at, after_id, lim, ord)
              cross join lateral (
                    select * from emails e
                     where e.user_id = k.user_id
                       and (k.after_at is null or (e.generated_at, e.id) < (k.after_at, k.after_id))
                     order by e.generated_at desc, e.id desc
                     limit k.lim) e
              order by k.ord, e.generated_at desc, e.id desc",
        )
        .bind(&users)
        .bind(&after_at)
        .bind(&after_id)
        .bind(&limits)
        .fetch_all(&self.pool)
        .await
        .map_err(wrap)?;
        let counted: Vec<Uuid> = keys.iter().filter(|k| k.count).map(|k| k.user_id).collect();
        let counts: HashMap<Uuid, i64> = if counted.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as::<_, (Uuid, i64)>(
                "select k.user_id, (select count(*) from emails e where e.user_id = k.user_id)
                   from unnest($1::uuid[]) k(user_id)",
            )
            .bind(&counted)
            .fetch_all(&self.pool)
            .await
            .map_err(wrap)?
            .into_iter()
            .collect()
        };
        let mut pages: Vec<Vec<EmailRow>> = vec![Vec::new(); keys.len()];
        for Ordered { ord, row } in rows {
            pages[usize::try_from(ord - 1).unwrap_or(0)].push(row);
        }
        Ok(keys
            .iter()
            .cloned()
            .zip(pages)
            .map(|(k, rows)| {
                let total = counts.get(&k.user_id).copied().unwrap_or(0);
                (k, (rows, total))
            })
            .collect())
    }
}

impl Loader<EventsPageKey> for PgLoader {
    type Value = (Vec<log::StoredEvent>, i64);
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[EventsPageKey],
    ) -> Result<HashMap<EventsPageKey, Self::Value>, LoadError> {
        let pages: Vec<StreamPage> = keys
            .iter()
            .map(|k| StreamPage {
                user_id: k.user_id,
                after_sequence: k.after,
                limit: k.limit + 1,
            })
            .collect();
        let events = log::read_stream_pages(&self.pool, &pages)
            .await
            .map_err(Arc::new)?;
        let counted: Vec<Uuid> = keys.iter().filter(|k| k.count).map(|k| k.user_id).collect();
        let lengths = if counted.is_empty() {
            HashMap::new()
        } else {
            log::stream_lengths(&self.pool, &counted)
                .await
                .map_err(Arc::new)?
        };
        Ok(keys
            .iter()
            .cloned()
            .zip(events)
            .map(|(k, events)| {
                let total = lengths.get(&k.user_id).copied().unwrap_or(0);
                (k, (events, total))
            })
            .collect())
    }
}

/// The per-request loaders (results are cached for the request only).
pub struct Loaders {
    inner: DataLoader<PgLoader>,
}

impl Loaders {
    /// Loaders over `pool`, for one request.
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: DataLoader::new(PgLoader { pool }, tokio::spawn),
        }
    }

    /// One user from the view.
    ///
    /// # Errors
    /// The database failed.
    pub async fn user(&self, id: Uuid) -> ApiResult<Option<User>> {
        let row = self.inner.load_one(id).await.map_err(internal)?;
        Ok(row.map(User::from))
    }

    /// A page of emails.
    ///
    /// # Errors
    /// The database failed.
    pub async fn emails_page(&self, key: EmailsPageKey) -> ApiResult<EmailConnection> {
        let limit = key.limit;
        let (rows, total) = self
            .inner
            .load_one(key)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        let items = rows
            .into_iter()
            .map(|row| {
                (
                    cursor::encode(&(row.generated_at, row.id)),
                    Email::from(row),
                )
            })
            .collect();
        Ok(EmailConnection::from_page(items, limit, total))
    }

    /// A page of one user's events.
    ///
    /// # Errors
    /// The database failed or an event is unreadable.
    pub async fn events_page(&self, key: EventsPageKey) -> ApiResult<EventConnection> {
        let limit = key.limit;
        let (events, total) = self
            .inner
            .load_one(key)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        let items = events
            .iter()
            .map(|e| Ok((cursor::encode(&e.sequence), Event::from_stored(e)?)))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(EventConnection::from_page(items, limit, total))
    }
}

fn internal(e: Arc<anyhow::Error>) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("{e:#}"))
}
