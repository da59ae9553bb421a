//! Batched reads: every relation of a page of objects is loaded with a constant number of
//! queries (one lateral join per relation), however many objects the page holds.

use std::collections::HashMap;
use std::sync::Arc;

use projections::vault::Vault;

use async_graphql::dataloader::{DataLoader, Loader};
use chrono::{DateTime, Utc};
use projections::log::{self, StreamPage};
use projections::views::columns::Columns;
use projections::views::emails::{self, EmailRow, UserEmailsPage};
use projections::views::users::{self, UserRow};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::cursor;
use super::dependencies::Recorder;
use super::errors::{ApiError, ApiResult};

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
    /// The view's columns the page shows.
    pub columns: Columns,
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
        columns: Columns,
    ) -> ApiResult<Self> {
        Ok(Self {
            user_id,
            after: after.map(cursor::decode).transpose()?,
            limit: cursor::page_size(first)?,
            count,
            columns,
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

/// The loader behind every batched read.
pub struct PgLoader {
    pool: PgPool,
    vault: Arc<Vault>,
}

type LoadError = Arc<anyhow::Error>;

impl Loader<Uuid> for PgLoader {
    type Value = UserRow;
    type Error = LoadError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, UserRow>, LoadError> {
        let rows = users::load_users(&self.pool, keys)
            .await
            .map_err(Arc::new)?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}

/// A key for one client's page that may ask for the client's total too.
trait PageKey: Clone + Eq + std::hash::Hash {
    fn user_id(&self) -> Uuid;
    fn counted(&self) -> bool;
}

impl PageKey for EmailsPageKey {
    fn user_id(&self) -> Uuid {
        self.user_id
    }
    fn counted(&self) -> bool {
        self.count
    }
}

impl PageKey for EventsPageKey {
    fn user_id(&self) -> Uuid {
        self.user_id
    }
    fn counted(&self) -> bool {
        self.count
    }
}

/// The clients whose totals were asked for (none: no count query at all).
fn counted_users<K: PageKey>(keys: &[K]) -> Vec<Uuid> {
    keys.iter()
        .filter(|k| k.counted())
        .map(PageKey::user_id)
        .collect()
}

/// Pairs each key with its page (in key order) and its client's total (0 when not asked).
fn answers<K: PageKey, R>(
    keys: &[K],
    pages: Vec<Vec<R>>,
    totals: &HashMap<Uuid, i64>,
) -> HashMap<K, (Vec<R>, i64)> {
    keys.iter()
        .cloned()
        .zip(pages)
        .map(|(k, rows)| {
            let total = totals.get(&k.user_id()).copied().unwrap_or(0);
            (k, (rows, total))
        })
        .collect()
}

/// Pages of clients' emails (rows fetched: each page's size plus one), each with its client's
/// total when asked: at most two statements whatever the number of pages, on one connection.
///
/// # Errors
/// The database failed.
pub async fn email_pages(
    conn: &mut PgConnection,
    keys: &[EmailsPageKey],
) -> anyhow::Result<HashMap<EmailsPageKey, EmailsPage>> {
    let pages: Vec<UserEmailsPage> = keys
        .iter()
        .map(|k| UserEmailsPage {
            user_id: k.user_id,
            after: k.after,
            limit: k.limit + 1,
        })
        .collect();
    let columns = keys
        .iter()
        .fold(Columns::none(), |columns, k| columns.union(k.columns));
    let rows = emails::pages_of_users(&mut *conn, &pages, columns).await?;
    let counted = counted_users(keys);
    let totals = match counted.is_empty() {
        true => HashMap::new(),
        false => emails::counts_of_users(&mut *conn, &counted).await?,
    };
    Ok(answers(keys, rows, &totals))
}

/// One client's page of emails and, when asked, how many they have.
pub type EmailsPage = (Vec<EmailRow>, i64);

/// Pages of emails loaded with the page of clients that shows them, on the same connection,
/// so that each client's `emails` is answered from here instead of by a loader round (a
/// batch that waits on a timer, then hands each of fifty clients a copy of its rows).
#[derive(Debug)]
pub struct EmailsAhead(std::sync::Mutex<HashMap<EmailsPageKey, EmailsPage>>);

impl EmailsAhead {
    /// Pages for these keys.
    pub fn new(pages: HashMap<EmailsPageKey, EmailsPage>) -> Self {
        Self(std::sync::Mutex::new(pages))
    }

    /// The page for `key`, if it was loaded ahead (each is handed out once; a second field
    /// asking for the same page goes to the loader).
    pub fn take(&self, key: &EmailsPageKey) -> Option<EmailsPage> {
        self.0.lock().ok()?.remove(key)
    }
}

impl Loader<EmailsPageKey> for PgLoader {
    type Value = EmailsPage;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[EmailsPageKey],
    ) -> Result<HashMap<EmailsPageKey, Self::Value>, LoadError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| Arc::new(anyhow::Error::from(e)))?;
        email_pages(&mut conn, keys).await.map_err(Arc::new)
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
        let events = log::read_stream_pages(&self.pool, &self.vault, &pages)
            .await
            .map_err(Arc::new)?;
        let counted = counted_users(keys);
        let totals = match counted.is_empty() {
            true => HashMap::new(),
            false => log::stream_lengths(&self.pool, &counted)
                .await
                .map_err(Arc::new)?,
        };
        Ok(answers(keys, events, &totals))
    }
}

/// The per-request loaders (results are cached for the request only), noting which clients
/// the answer shows (for the response cache).
pub struct Loaders {
    inner: DataLoader<PgLoader>,
    recorder: Arc<Recorder>,
}

impl Loaders {
    /// Loaders over `pool` (opening personal data with `vault`), for one request.
    pub fn new(pool: PgPool, vault: Arc<Vault>) -> Self {
        Self::recording(pool, vault, Arc::default())
    }

    /// The same, noting what the answer reads in `recorder`.
    pub fn recording(pool: PgPool, vault: Arc<Vault>, recorder: Arc<Recorder>) -> Self {
        Self {
            inner: DataLoader::new(PgLoader { pool, vault }, tokio::spawn),
            recorder,
        }
    }

    /// Where resolvers note what their answer reads.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// One user from the view.
    ///
    /// # Errors
    /// The database failed.
    pub async fn user(&self, id: Uuid) -> ApiResult<Option<UserRow>> {
        self.recorder.client(id);
        self.inner.load_one(id).await.map_err(shared)
    }

    /// A page of one user's emails (rows fetched: the page size plus one) and, if asked, how
    /// many they have.
    ///
    /// # Errors
    /// The database failed.
    pub async fn emails_page(&self, key: EmailsPageKey) -> ApiResult<EmailsPage> {
        self.recorder.client(key.user_id);
        Ok(self
            .inner
            .load_one(key)
            .await
            .map_err(shared)?
            .unwrap_or_default())
    }

    /// A page of one user's events (rows fetched: the page size plus one) and, if asked, how
    /// many they have.
    ///
    /// # Errors
    /// The database failed.
    pub async fn events_page(&self, key: EventsPageKey) -> ApiResult<(Vec<log::StoredEvent>, i64)> {
        Ok(self
            .inner
            .load_one(key)
            .await
            .map_err(shared)?
            .unwrap_or_default())
    }
}

/// A loader's error is shared by every caller of the batch: each gets its own copy.
fn shared(e: Arc<anyhow::Error>) -> ApiError {
    ApiError::from_shared(&e)
}
