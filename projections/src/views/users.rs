//! The `users` read model: one row per client with every `User` field of the API.
//!
//! A batch is applied in two statements whatever its size: the rows of the clients it touches
//! are loaded, the events are folded into them in memory (copying the values the events
//! carry; no business rule is recomputed here), and the results are upserted in one statement.
//!
//! Every query of the `users` table lives here too: one row, rows by id, a filtered and ordered
//! page, counts and the overview's summary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::client::{ClientEvent, ClientStatus, OrderSummary};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use super::columns::{
    column, position, Column, Columns, Narrow,
    Need::{Always, Shown},
};
use crate::log::consumer::Projection;
use crate::log::StoredEvent;

/// One row of the users view (field names are column names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UserRow {
    /// Client id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Preferred categories.
    pub preferred_categories: Vec<String>,
    /// Orders.
    pub order_count: i32,
    /// Sum of orders, cents.
    pub total_spent_cents: i64,
    /// Mean order, cents.
    pub average_order_value_cents: i64,
    /// Last order.
    pub last_order_date: Option<DateTime<Utc>>,
    /// First order whose date is known.
    pub first_order_date: Option<DateTime<Utc>>,
    /// Score 0..=100.
    pub engagement_score: i16,
    /// `at_risk`, `watch`, `healthy`.
    pub score_band: String,
    /// Band is at risk.
    pub at_risk: bool,
    /// Policy that scored it.
    pub score_policy: String,
    /// Threshold in force.
    pub score_threshold: i16,
    /// Factors (JSON list of `{name, points, detail}`).
    pub score_factors: serde_json::Value,
    /// Moment scored.
    pub score_as_of: Option<DateTime<Utc>>,
    /// When time alone would next change the score.
    pub next_score_change_at: Option<DateTime<Utc>>,
    /// Last email written.
    pub last_email_date: Option<DateTime<Utc>>,
    /// Where the client stands.
    #[sqlx(try_from = "String")]
    pub status: ClientStatus,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last event's time.
    pub updated_at: DateTime<Utc>,
    /// Aggregate version reflected.
    pub version: i64,
    /// The client's id in the retailer's systems.
    #[serde(default)]
    pub external_id: Option<String>,
    /// `TREATMENT` or `HOLDOUT`.
    #[serde(default = "treatment")]
    pub engagement_group: String,
}

fn treatment() -> String {
    domain::client::EngagementGroup::Treatment
        .as_str()
        .to_owned()
}

impl UserRow {
    /// Decodes a narrow read of the view (a page's select list).
    fn decode(row: &Narrow<'_>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: column!(row, COLUMNS, "id")?,
            name: column!(row, COLUMNS, "name")?,
            email: column!(row, COLUMNS, "email")?,
            preferred_categories: column!(row, COLUMNS, "preferred_categories")?,
            order_count: column!(row, COLUMNS, "order_count")?,
            total_spent_cents: column!(row, COLUMNS, "total_spent_cents")?,
            average_order_value_cents: column!(row, COLUMNS, "average_order_value_cents")?,
            last_order_date: column!(row, COLUMNS, "last_order_date")?,
            first_order_date: column!(row, COLUMNS, "first_order_date")?,
            engagement_score: column!(row, COLUMNS, "engagement_score")?,
            score_band: column!(row, COLUMNS, "score_band")?,
            at_risk: column!(row, COLUMNS, "at_risk")?,
            score_policy: column!(row, COLUMNS, "score_policy")?,
            score_threshold: column!(row, COLUMNS, "score_threshold")?,
            score_factors: column!(row, COLUMNS, "score_factors")?,
            score_as_of: column!(row, COLUMNS, "score_as_of")?,
            next_score_change_at: column!(row, COLUMNS, "next_score_change_at")?,
            last_email_date: column!(row, COLUMNS, "last_email_date")?,
            status: row.parsed_or(const { position(&COLUMNS, "status") }, ClientStatus::Active)?,
            created_at: column!(row, COLUMNS, "created_at")?,
            updated_at: column!(row, COLUMNS, "updated_at")?,
            version: column!(row, COLUMNS, "version")?,
            external_id: column!(row, COLUMNS, "external_id")?,
            engagement_group: column!(row, COLUMNS, "engagement_group")?,
        })
    }

    fn created(id: Uuid, e: &domain::client::UserCreated, version: i64) -> Self {
        let mut row = Self {
            id,
            name: e.name.clone(),
            email: e.email.clone(),
            preferred_categories: e.preferred_categories.clone(),
            order_count: 0,
            total_spent_cents: 0,
            average_order_value_cents: 0,
            last_order_date: None,
            first_order_date: None,
            engagement_score: 0,
            score_band: "healthy".into(),
            at_risk: false,
            score_policy: String::new(),
            score_threshold: 50,
            score_factors: serde_json::Value::Array(vec![]),
            score_as_of: None,
            next_score_change_at: None,
            last_email_date: None,
            status: ClientStatus::Active,
            created_at: e.client_since(),
            updated_at: e.created_at,
            version,
            external_id: e.external_id.clone(),
            engagement_group: e.group.unwrap_or_default().as_str().to_owned(),
        };
        row.copy_orders(&e.orders);
        row
    }

    fn copy_orders(&mut self, orders: &OrderSummary) {
        self.order_count = i32::try_from(orders.order_count).unwrap_or(i32::MAX);
        self.total_spent_cents = orders.total_spent_cents;
        self.average_order_value_cents = orders.average_order_value_cents;
        self.last_order_date = orders.last_order_at;
        self.first_order_date = orders.first_order_at;
    }

    /// Folds one event of this client into the row.
    fn apply(&mut self, event: &ClientEvent, version: i64) -> anyhow::Result<()> {
        match event {
            ClientEvent::UserCreated(_) => {}
            ClientEvent::UserUpdated(e) => {
                self.name.clone_from(&e.name);
                self.email.clone_from(&e.email);
                self.preferred_categories
                    .clone_from(&e.preferred_categories);
                self.copy_orders(&e.orders);
                if e.external_id.is_some() {
                    self.external_id.clone_from(&e.external_id);
                }
            }
            ClientEvent::OrderPlaced(e) => self.copy_orders(&e.orders),
            ClientEvent::OrderCancelled(e) => self.copy_orders(&e.orders),
            ClientEvent::UserScored(e) => {
                self.engagement_score = i16::from(e.score);
                self.score_band = e.band.as_str().to_owned();
                self.at_risk = e.is_at_risk();
                self.score_policy.clone_from(&e.policy);
                self.score_threshold = i16::from(e.threshold);
                self.score_factors =
                    serde_json::to_value(&e.factors).context("serializing score factors")?;
                self.score_as_of = Some(e.as_of);
                self.next_score_change_at = e.next_change_at;
            }
            ClientEvent::EmailGenerated(e) => {
                self.last_email_date = Some(
                    self.last_email_date
                        .map_or(e.generated_at, |t| t.max(e.generated_at)),
                );
            }
            ClientEvent::UserUnsubscribed(_) => self.status = ClientStatus::Unsubscribed,
            ClientEvent::UserDeleted(_) => self.status = ClientStatus::Deleted,
            ClientEvent::UserErased(_) => {
                self.status = ClientStatus::Erased;
                self.name.clear();
                self.email.clear();
                self.external_id = None;
                // Never due for a rescore again (commands on them are refused).
                self.next_score_change_at = None;
                // A manual score's reasons quote the operator's reason, which is sealed with
                // it (a rebuild reads them empty).
                if self.score_policy == domain::client::MANUAL_POLICY {
                    self.score_factors = serde_json::Value::Array(vec![]);
                }
            }
            ClientEvent::GroupAssigned(e) => {
                self.engagement_group = e.group.as_str().to_owned();
            }
            // An email's delivery is the emails view's; the row only moves its version.
            ClientEvent::EmailApproved(_)
            | ClientEvent::EmailRejected(_)
            | ClientEvent::EmailCancelled(_)
            | ClientEvent::EmailSent(_)
            | ClientEvent::EmailFailed(_)
            | ClientEvent::EmailBounced(_)
            | ClientEvent::EmailComplained(_)
            | ClientEvent::AddressSuppressed(_) => {}
        }
        self.updated_at = event.occurred_at();
        self.version = version;
        Ok(())
    }
}

/// The users view, written to `table` (`users`, or a fresh table during a rebuild).
#[derive(Debug, Clone)]
pub struct UsersView {
    consumer: String,
    table: &'static str,
    recent: RecentUsers,
    /// Rows written by the batch in progress, remembered once it commits.
    staged: Arc<Mutex<Vec<UserRow>>>,
}

/// Rows this process's users consumer wrote most recently, exactly as the table holds them
/// (forgotten whenever another instance or a rebuild moved the consumer's checkpoint). The
/// consumer reads a batch's rows from here rather than from the table, and a mutation that
/// waited for its write reads its answer here.
#[derive(Debug, Clone)]
pub struct RecentUsers(Arc<Mutex<lru::LruCache<Uuid, UserRow>>>);

/// Rows kept by [`RecentUsers`].
const RECENT_ROWS: usize = 10_000;

impl Default for RecentUsers {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(RECENT_ROWS).unwrap_or(std::num::NonZeroUsize::MIN),
        ))))
    }
}

impl RecentUsers {
    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<Uuid, UserRow>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Client `id`'s row, if this process wrote it at version `at_least` or later.
    pub fn get(&self, id: Uuid, at_least: i64) -> Option<UserRow> {
        self.lock()
            .get(&id)
            .filter(|row| row.version >= at_least)
            .cloned()
    }
}

impl UsersView {
    /// The live view: consumer `users`, table `users`.
    pub fn live() -> Self {
        Self::into_table("users", "users")
    }

    /// A view written by consumer `consumer` into `table` (rebuilds).
    pub fn into_table(consumer: impl Into<String>, table: &'static str) -> Self {
        Self {
            consumer: consumer.into(),
            table,
            recent: RecentUsers::default(),
            staged: Arc::default(),
        }
    }

    fn staged_rows(&self) -> std::sync::MutexGuard<'_, Vec<UserRow>> {
        self.staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rows this view wrote most recently (shared with every clone).
    pub fn recent(&self) -> RecentUsers {
        self.recent.clone()
    }

    /// The table it writes.
    pub fn table(&self) -> &'static str {
        self.table
    }
}

impl Projection for UsersView {
    fn name(&self) -> &str {
        &self.consumer
    }

    fn committed(&self) {
        let staged = std::mem::take(&mut *self.staged_rows());
        let mut recent = self.recent.lock();
        for row in staged {
            recent.put(row.id, row);
        }
    }

    fn contended(&self) {
        self.recent.lock().clear();
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        // Whatever an earlier batch staged was rolled back, or it would have been taken.
        self.staged_rows().clear();
        let mut ids: Vec<Uuid> = events.iter().map(|e| e.user_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut rows: HashMap<Uuid, UserRow> = HashMap::with_capacity(ids.len());
        {
            let mut recent = self.recent.lock();
            for id in &ids {
                if let Some(row) = recent.get(id) {
                    rows.insert(*id, row.clone());
                }
            }
        }
        let missing: Vec<Uuid> = ids
            .iter()
            .filter(|id| !rows.contains_key(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            // `table` is one of our own static names, never input.
            let existing: Vec<(serde_json::Value,)> = sqlx::query_as(&format!(
                "select to_jsonb(t) from {} t where id = any($1)",
                self.table
            ))
            .bind(&missing)
            .fetch_all(&mut *tx)
            .await
            .context("loading users rows")?;
            for (json,) in existing {
                let row: UserRow = serde_json::from_value(json).context("reading a users row")?;
                rows.insert(row.id, row);
            }
        }
        let mut touched = Vec::with_capacity(ids.len());
        for stored in events {
            let event = stored.event()?;
            match (rows.get_mut(&stored.user_id), &event) {
                // Already reflected (a replay over a row that has it): nothing to do.
                (Some(row), _) if stored.sequence <= row.version => continue,
                (Some(row), _) => row.apply(&event, stored.sequence)?,
                (None, ClientEvent::UserCreated(created)) => {
                    rows.insert(
                        stored.user_id,
                        UserRow::created(stored.user_id, created, stored.sequence),
                    );
                }
                (None, _) => anyhow::bail!(
                    "event {} ({}) for user {} precedes the user's creation",
                    stored.position.global_position,
                    stored.event_type,
                    stored.user_id
                ),
            }
            touched.push(stored.user_id);
        }
        touched.sort_unstable();
        touched.dedup();
        if touched.is_empty() {
            return Ok(());
        }
        let batch: Vec<&UserRow> = touched.iter().filter_map(|id| rows.get(id)).collect();
        let payload = serde_json::to_value(&batch).context("serializing users rows")?;
        let written: Vec<UserRow> = sqlx::query_as(&format!(
            "insert into {t} select * from jsonb_populate_recordset(null::{t}, $1)
             on conflict (id) do update set
                name = excluded.name, email = excluded.email,
                preferred_categories = excluded.preferred_categories,
                order_count = excluded.order_count, total_spent_cents = excluded.total_spent_cents,
                average_order_value_cents = excluded.average_order_value_cents,
                last_order_date = excluded.last_order_date, first_order_date = excluded.first_order_date,
                engagement_score = excluded.engagement_score, score_band = excluded.score_band,
                at_risk = excluded.at_risk, score_policy = excluded.score_policy,
                score_threshold = excluded.score_threshold, score_factors = excluded.score_factors,
                score_as_of = excluded.score_as_of, next_score_change_at = excluded.next_score_change_at,
                last_email_date = excluded.last_email_date, status = excluded.status,
                created_at = excluded.created_at, updated_at = excluded.updated_at,
                version = excluded.version, external_id = excluded.external_id
             returning *",
            t = self.table
        ))
        .bind(payload)
        .fetch_all(&mut *tx)
        .await
        .context("upserting users rows")?;
        // The rows as the table now holds them (its time precision, not ours), remembered
        // once the batch commits.
        *self.staged_rows() = written;
        Ok(())
    }
}

/// Loads one user row.
///
/// # Errors
/// The database failed or the row is unreadable.
pub async fn load_user<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
) -> anyhow::Result<Option<UserRow>> {
    sqlx::query_as("select * from users where id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await
        .context("loading a user")
}

/// Loads the rows of `ids` (those that exist, in no particular order).
///
/// # Errors
/// The database failed or a row is unreadable.
pub async fn load_users<'e>(
    executor: impl PgExecutor<'e>,
    ids: &[Uuid],
) -> anyhow::Result<Vec<UserRow>> {
    sqlx::query_as("select * from users where id = any($1)")
        .bind(ids)
        .fetch_all(executor)
        .await
        .context("loading users")
}

/// Which users to list. Values are taken as given: the API checks its input first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFilter {
    /// Only those at risk (true) or not (false).
    pub at_risk: Option<bool>,
    /// Score at least.
    pub min_score: Option<i16>,
    /// Score at most.
    pub max_score: Option<i16>,
    /// Name or email contains this, case-insensitively (matched literally).
    pub search: Option<String>,
    /// Has this preferred category.
    pub category: Option<String>,
    /// Only this status (`None`: every status but deleted and erased).
    pub status: Option<ClientStatus>,
}

/// The statuses of clients who are gone: lists and the summary leave them out unless asked.
const GONE: &[&str] = &["DELETED", "ERASED"];

impl UserFilter {
    fn push(&self, q: &mut QueryBuilder<'_, Postgres>) {
        match self.status {
            Some(status) => q.push(" and status = ").push_bind(status.as_str()),
            None => q.push(" and status <> all(").push_bind(GONE).push(")"),
        };
        if let Some(at_risk) = self.at_risk {
            q.push(" and at_risk = ").push_bind(at_risk);
        }
        if let Some(min) = self.min_score {
            q.push(" and engagement_score >= ").push_bind(min);
        }
        if let Some(max) = self.max_score {
            q.push(" and engagement_score <= ").push_bind(max);
        }
        if let Some(search) = &self.search {
            // Served by the trigram index on (name || ' ' || email).
            let escaped = search
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q.push(" and (name || ' ' || email) ilike ")
                .push_bind(format!("%{escaped}%"));
        }
        if let Some(category) = &self.category {
            q.push(" and preferred_categories @> array[")
                .push_bind(category.clone())
                .push("]::text[]");
        }
    }
}

/// What users are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSort {
    /// Score.
    EngagementScore,
    /// Name, case-insensitively.
    Name,
    /// Creation time.
    CreatedAt,
    /// Last order (clients who never ordered come first ascending).
    LastOrderDate,
}

impl UserSort {
    /// The sort expression over `users u` (served by an index on (expression, id)) and the
    /// SQL type of its cursor value. Qualified: in ORDER BY a bare column name means the output
    /// column of that name when there is one, and a narrow page decides which there are.
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            Self::EngagementScore => ("u.engagement_score", "smallint"),
            Self::Name => ("lower(u.name)", "text"),
            Self::CreatedAt => ("u.created_at", "timestamptz"),
            Self::LastOrderDate => (
                "coalesce(u.last_order_date, '-infinity'::timestamptz)",
                "timestamptz",
            ),
        }
    }
}

/// A page of users: which, in what order, after which cursor, how many.
#[derive(Debug, Clone, PartialEq)]
pub struct UsersPage {
    /// Which users.
    pub filter: UserFilter,
    /// By what.
    pub sort: UserSort,
    /// Largest first.
    pub descending: bool,
    /// After this (sort key as text, id), from a previous page's [`SortedUser`].
    pub after: Option<(String, Uuid)>,
    /// Rows to fetch.
    pub limit: i64,
    /// The columns the caller shows (the rest are not read).
    pub columns: Columns,
}

/// Every column of the view, and whether a page may leave it out. The key and the creation
/// time (a score's moment falls back to it) are always read.
pub const COLUMNS: [Column; 24] = [
    ("id", Always),
    ("name", Shown),
    ("email", Shown),
    ("preferred_categories", Shown),
    ("order_count", Shown),
    ("total_spent_cents", Shown),
    ("average_order_value_cents", Shown),
    ("last_order_date", Shown),
    ("first_order_date", Shown),
    ("engagement_score", Shown),
    ("score_band", Shown),
    ("at_risk", Shown),
    ("score_policy", Shown),
    ("score_threshold", Shown),
    ("score_factors", Shown),
    ("score_as_of", Shown),
    ("next_score_change_at", Shown),
    ("last_email_date", Shown),
    ("status", Shown),
    ("created_at", Always),
    ("updated_at", Shown),
    ("version", Shown),
    ("external_id", Shown),
    ("engagement_group", Shown),
];
const _: () = assert!(COLUMNS.len() <= 64, "Columns has a bit per column");

/// A users row with the text of its sort key (for its cursor).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SortedUser {
    /// The row.
    #[sqlx(flatten)]
    pub row: UserRow,
    /// The value it was sorted by, as text.
    pub sort_key: String,
}

/// One page of users.
///
/// # Errors
/// The database failed (a cursor value that does not cast to the sort's type among them) or
/// a row is unreadable.
pub async fn page<'e>(
    executor: impl PgExecutor<'e>,
    page: &UsersPage,
) -> anyhow::Result<Vec<SortedUser>> {
    let (expr, sql_type) = page.sort.sql();
    let (cmp, dir) = if page.descending {
        ("<", "desc")
    } else {
        (">", "asc")
    };
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "select {}, ({expr})::text as sort_key from users u where true",
        page.columns.select_list("u", &COLUMNS)
    ));
    page.filter.push(&mut q);
    if let Some((value, id)) = &page.after {
        q.push(format!(" and (({expr}), u.id) {cmp} (cast("))
            .push_bind(value.clone())
            .push(format!(" as {sql_type}), "))
            .push_bind(*id)
            .push(")");
    }
    // The limit is written into the SQL, not bound: with `limit $n` a prepared statement's
    // generic plan cannot know the page is small and sorts the whole table.
    q.push(format!(
        " order by {expr} {dir}, u.id {dir} limit {}",
        page.limit
    ));
    let rows = q
        .build()
        .fetch_all(executor)
        .await
        .context("listing users")?;
    let read = page.columns.read(&COLUMNS);
    rows.iter()
        .map(|row| {
            let narrow = Narrow::new(row, 0, read);
            Ok(SortedUser {
                row: UserRow::decode(&narrow)?,
                sort_key: sqlx::Row::try_get(row, narrow.end())?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .context("reading a page of users")
}

/// How many users `filter` matches.
///
/// # Errors
/// The database failed.
pub async fn count<'e>(executor: impl PgExecutor<'e>, filter: &UserFilter) -> anyhow::Result<i64> {
    let mut q = QueryBuilder::<Postgres>::new("select count(*) from users where true");
    filter.push(&mut q);
    q.build_query_scalar()
        .fetch_one(executor)
        .await
        .context("counting users")
}

/// The overview's numbers over every client not deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Clients.
    pub users: i64,
    /// Of them, at risk.
    pub at_risk: i64,
    /// Their mean score (0 with no clients).
    pub average_score: f64,
    /// Clients per score bucket: 0-9, 10-19, ..., 90-100.
    pub histogram: [i64; 10],
}

/// The overview's numbers, in one statement.
///
/// # Errors
/// The database failed.
pub async fn summary<'e>(executor: impl PgExecutor<'e>) -> anyhow::Result<Summary> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let buckets: Vec<String> = (0..10)
            .map(|b| format!("count(*) filter (where least(engagement_score / 10, 9) = {b})"))
            .collect();
        format!(
            "select count(*), count(*) filter (where at_risk), avg(engagement_score)::float8,
                    array[{}]
               from users where status <> all($1)",
            buckets.join(", ")
        )
    });
    let (users, at_risk, average, buckets): (i64, i64, Option<f64>, Vec<i64>) =
        sqlx::query_as(SQL.as_str())
            .bind(GONE)
            .fetch_one(executor)
            .await
            .context("summarising users")?;
    let mut histogram = [0; 10];
    for (slot, n) in histogram.iter_mut().zip(buckets) {
        *slot = n;
    }
    Ok(Summary {
        users,
        at_risk,
        average_score: average.unwrap_or(0.0),
        histogram,
    })
}

/// Up to `limit` clients (not deleted) whose score time alone has changed by `now`, soonest
/// first: the rescore scheduler's queue.
///
/// # Errors
/// The database failed.
pub async fn due_for_rescore<'e>(
    executor: impl PgExecutor<'e>,
    now: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<Uuid>> {
    // The status is written into the SQL, not bound: the partial index on
    // next_score_change_at serves only a query whose predicate implies its own.
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "select id from users
              where next_score_change_at <= $1 and status <> '{}'
              order by next_score_change_at, id
              limit $2",
            ClientStatus::Deleted.as_str()
        )
    });
    sqlx::query_scalar(SQL.as_str())
        .bind(now)
        .bind(limit)
        .fetch_all(executor)
        .await
        .context("finding users due for a rescore")
}
