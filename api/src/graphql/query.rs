//! Queries: the read models, and the log for audits.

use async_graphql::{Context, Enum, InputObject, Object, ID};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use domain::client::Client;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::auth::Principal;
use super::cursor;
use super::errors::{ApiError, ApiResult};
use super::loaders::{EventsPageKey, Loaders};
use super::types::{
    Email, EmailConnection, EmailJob, EmailJobConnection, EmailJobStatus, EmailStatus,
    EngagementSummary, EventConnection, Health, User, UserConnection, UserState, UserStatus,
};
use super::ApiContext;
use projections::views::emails::EmailRow;
use projections::views::users::UserRow;

/// Which users to list.
#[derive(InputObject, Default, Debug)]
pub struct UserFilter {
    /// Only those at risk (true) or not (false).
    pub at_risk: Option<bool>,
    /// Score at least.
    pub min_score: Option<i32>,
    /// Score at most.
    pub max_score: Option<i32>,
    /// Name or email contains this (case-insensitive).
    pub search: Option<String>,
    /// Has this preferred category.
    pub category: Option<String>,
    /// Only this status (default: every status but DELETED).
    pub status: Option<UserStatus>,
}

/// What to order users by.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum UserOrderField {
    /// Score.
    EngagementScore,
    /// Name (case-insensitive).
    Name,
    /// Creation time.
    CreatedAt,
    /// Last order (clients who never ordered come first ascending).
    LastOrderDate,
}

/// Sort direction.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OrderDirection {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// An ordering of users.
#[derive(InputObject, Debug)]
pub struct UserOrder {
    /// By what.
    pub field: UserOrderField,
    /// Which way.
    pub direction: OrderDirection,
}

impl UserOrderField {
    /// The sort expression (served by an index on (expression, id)) and the SQL type of its
    /// cursor value.
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            Self::EngagementScore => ("engagement_score", "smallint"),
            Self::Name => ("lower(name)", "text"),
            Self::CreatedAt => ("created_at", "timestamptz"),
            Self::LastOrderDate => (
                "coalesce(last_order_date, '-infinity'::timestamptz)",
                "timestamptz",
            ),
        }
    }
}

/// Parses an `ID!` argument that must be a UUID.
///
/// # Errors
/// `VALIDATION` naming `field`.
pub fn parse_id(id: &ID, field: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| ApiError::validation(field, "not a valid id"))
}

fn push_filter(q: &mut QueryBuilder<'_, Postgres>, filter: &UserFilter) -> ApiResult<()> {
    match filter.status {
        Some(status) => {
            q.push(" and status = ").push_bind(status.as_view());
        }
        None => {
            q.push(" and status <> 'DELETED'");
        }
    }
    if let Some(at_risk) = filter.at_risk {
        q.push(" and at_risk = ").push_bind(at_risk);
    }
    for (value, field, op) in [
        (filter.min_score, "minScore", " >= "),
        (filter.max_score, "maxScore", " <= "),
    ] {
        if let Some(v) = value {
            if !(0..=100).contains(&v) {
                return Err(ApiError::validation(field, "must be between 0 and 100"));
            }
            q.push(" and engagement_score").push(op).push_bind(v);
        }
    }
    if let Some(search) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if search.chars().count() > 200 {
            return Err(ApiError::validation(
                "search",
                "must be at most 200 characters",
            ));
        }
        // Served by the trigram index on (name || ' ' || email).
        let escaped = search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(" and (name || ' ' || email) ilike ")
            .push_bind(format!("%{escaped}%"));
    }
    if let Some(category) = filter
        .category
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        q.push(" and preferred_categories @> array[")
            .push_bind(category.to_owned())
            .push("]::text[]");
    }
    Ok(())
}

fn users_from_json(rows: Vec<(serde_json::Value,)>) -> ApiResult<Vec<UserRow>> {
    rows.into_iter()
        .map(|(json,)| serde_json::from_value(json).map_err(|e| ApiError::Internal(e.into())))
        .collect()
}

/// A users row with the text of its sort key (for its cursor).
#[derive(sqlx::FromRow)]
struct SortedUser {
    #[sqlx(flatten)]
    row: UserRow,
    sort_key: String,
}

/// The query root.
pub struct Query;

#[Object]
impl Query {
    /// One client.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<User>> {
        let id = parse_id(&id, "id")?;
        Ok(ctx.data_unchecked::<Loaders>().user(id).await?)
    }

    /// Clients, filtered and ordered, a page at a time.
    #[graphql(complexity = "cursor::page_size(first).unwrap_or(0) as usize * child_complexity")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        filter: Option<UserFilter>,
        order_by: Option<UserOrder>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<UserConnection> {
        let api = ctx.data_unchecked::<ApiContext>();
        let filter = filter.unwrap_or_default();
        let limit = cursor::page_size(first)?;
        let order = order_by.unwrap_or(UserOrder {
            field: UserOrderField::CreatedAt,
            direction: OrderDirection::Desc,
        });
        let (expr, sql_type) = order.field.sql();
        let (cmp, dir) = match order.direction {
            OrderDirection::Asc => (">", "asc"),
            OrderDirection::Desc => ("<", "desc"),
        };

        let mut q = QueryBuilder::<Postgres>::new(format!(
            "select u.*, ({expr})::text as sort_key from users u where true"
        ));
        push_filter(&mut q, &filter)?;
        if let Some(after) = after.as_deref() {
            let (value, id): (String, Uuid) = cursor::decode(after)?;
            q.push(format!(" and (({expr}), id) {cmp} (cast("))
                .push_bind(value)
                .push(format!(" as {sql_type}), "))
                .push_bind(id)
                .push(")");
        }
        // The limit is written into the SQL, not bound: with `limit $n` a prepared statement's
        // generic plan cannot know the page is small and sorts the whole table.
        q.push(format!(
            " order by {expr} {dir}, id {dir} limit {}",
            limit + 1
        ));
        let rows: Vec<SortedUser> = q
            .build_query_as()
            .fetch_all(&api.pool)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;

        // Counting costs a scan: only when asked for.
        let total: i64 = if ctx.look_ahead().field("totalCount").exists() {
            let mut count = QueryBuilder::<Postgres>::new("select count(*) from users where true");
            push_filter(&mut count, &filter)?;
            count
                .build_query_scalar()
                .fetch_one(&api.pool)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
        } else {
            0
        };

        let mut items = Vec::with_capacity(rows.len());
        for SortedUser { row, sort_key } in rows {
            items.push((cursor::encode(&(sort_key, row.id)), User::from(row)));
        }
        Ok(UserConnection::from_page(items, limit, total))
    }

    /// One email.
    async fn email(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Email>> {
        let id = parse_id(&id, "id")?;
        let api = ctx.data_unchecked::<ApiContext>();
        let row: Option<(serde_json::Value,)> =
            sqlx::query_as("select to_jsonb(e) from emails e where id = $1")
                .bind(id)
                .fetch_optional(&api.pool)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(row
            .map(|(json,)| serde_json::from_value::<EmailRow>(json).map(Email::from))
            .transpose()
            .map_err(|e| ApiError::Internal(e.into()))?)
    }

    /// Emails, newest first, optionally of one client or in one status.
    #[graphql(complexity = "cursor::page_size(first).unwrap_or(0) as usize * child_complexity")]
    async fn emails(
        &self,
        ctx: &Context<'_>,
        user_id: Option<ID>,
        status: Option<EmailStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EmailConnection> {
        let api = ctx.data_unchecked::<ApiContext>();
        let user_id = user_id
            .as_ref()
            .map(|id| parse_id(id, "userId"))
            .transpose()?;
        let limit = cursor::page_size(first)?;
        let push_where = |q: &mut QueryBuilder<'_, Postgres>| {
            if let Some(user_id) = user_id {
                q.push(" and user_id = ").push_bind(user_id);
            }
            if let Some(status) = status {
                q.push(" and status = ").push_bind(status.as_view());
            }
        };
        let mut q = QueryBuilder::<Postgres>::new("select to_jsonb(e) from emails e where true");
        push_where(&mut q);
        if let Some(after) = after.as_deref() {
            let (at, id): (DateTime<Utc>, Uuid) = cursor::decode(after)?;
            q.push(" and (generated_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(format!(
            " order by generated_at desc, id desc limit {}",
            limit + 1
        ));
        let rows: Vec<(serde_json::Value,)> = q
            .build_query_as()
            .fetch_all(&api.pool)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        let mut count = QueryBuilder::<Postgres>::new("select count(*) from emails where true");
        push_where(&mut count);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&api.pool)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        let mut items = Vec::with_capacity(rows.len());
        for (json,) in rows {
            let row: EmailRow =
                serde_json::from_value(json).map_err(|e| ApiError::Internal(e.into()))?;
            items.push((
                cursor::encode(&(row.generated_at, row.id)),
                Email::from(row),
            ));
        }
        Ok(EmailConnection::from_page(items, limit, total))
    }

    /// Every event of one client, oldest first: the audit trail.
    #[graphql(complexity = "cursor::page_size(first).unwrap_or(0) as usize * child_complexity")]
    async fn user_history(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EventConnection> {
        let count = ctx.look_ahead().field("totalCount").exists();
        let key = EventsPageKey::new(
            parse_id(&user_id, "userId")?,
            first,
            after.as_deref(),
            count,
        )?;
        Ok(ctx.data_unchecked::<Loaders>().events_page(key).await?)
    }

    /// The user as it stood at a moment (`at`, by the time each event happened) or after a
    /// given event (`version`), replayed from the log through the domain's own `apply`.
    /// With neither, the user as it stands now.
    async fn user_as_of(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        at: Option<DateTime<Utc>>,
        version: Option<i32>,
    ) -> async_graphql::Result<Option<UserState>> {
        let api = ctx.data_unchecked::<ApiContext>();
        let id = parse_id(&user_id, "userId")?;
        if at.is_some() && version.is_some() {
            return Err(
                ApiError::validation("version", "give either at or version, not both").into(),
            );
        }
        if let Some(v) = version {
            if v < 1 {
                return Err(ApiError::validation("version", "must be at least 1").into());
            }
        }
        let events = projections::log::read_stream(&api.pool, id)
            .await
            .map_err(ApiError::Internal)?;
        if events.is_empty() {
            return Ok(None);
        }
        if let Some(v) = version {
            if i64::from(v) > events.len() as i64 {
                return Err(ApiError::validation(
                    "version",
                    format!("the user has {} events", events.len()),
                )
                .into());
            }
        }
        let mut client = Client::default();
        let mut reached = 0;
        let mut last_time = None;
        for stored in &events {
            let event = stored.event().map_err(ApiError::Internal)?;
            let happened = event.occurred_at();
            let include = match (at, version) {
                (Some(at), _) => happened <= at,
                (_, Some(v)) => stored.sequence <= i64::from(v),
                _ => true,
            };
            if !include {
                break;
            }
            client.apply(event);
            reached = stored.sequence;
            last_time = Some(happened);
        }
        if reached == 0 {
            // The user did not exist yet at that moment.
            return Ok(None);
        }
        let as_of = at.or(last_time).unwrap_or_else(Utc::now);
        Ok(Some(UserState::from_client(&client, reached, as_of)))
    }

    /// Counts for the overview.
    async fn engagement_summary(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<EngagementSummary> {
        let api = ctx.data_unchecked::<ApiContext>();
        let (users, at_risk, average): (i64, i64, Option<f64>) = sqlx::query_as(
            "select count(*), count(*) filter (where at_risk), avg(engagement_score)::float8
               from users where status <> 'DELETED'",
        )
        .fetch_one(&api.pool)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
        let buckets: Vec<(i32, i64)> = sqlx::query_as(
            "select least(engagement_score / 10, 9)::int, count(*)
               from users where status <> 'DELETED' group by 1",
        )
        .fetch_all(&api.pool)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
        let emails: i64 = sqlx::query_scalar("select count(*) from emails")
            .fetch_one(&api.pool)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        let mut histogram = vec![0; 10];
        for (bucket, n) in buckets {
            if let Some(slot) = usize::try_from(bucket)
                .ok()
                .and_then(|b| histogram.get_mut(b))
            {
                *slot = i32::try_from(n).unwrap_or(i32::MAX);
            }
        }
        Ok(EngagementSummary {
            users: i32::try_from(users).unwrap_or(i32::MAX),
            at_risk: i32::try_from(at_risk).unwrap_or(i32::MAX),
            average_score: average.unwrap_or(0.0),
            emails: i32::try_from(emails).unwrap_or(i32::MAX),
            score_histogram: histogram,
        })
    }

    /// Email jobs, newest first.
    #[graphql(complexity = "cursor::page_size(first).unwrap_or(0) as usize * child_complexity")]
    async fn email_jobs(
        &self,
        ctx: &Context<'_>,
        status: Option<EmailJobStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<EmailJobConnection> {
        let api = ctx.data_unchecked::<ApiContext>();
        let limit = cursor::page_size(first)?;
        let mut q = QueryBuilder::<Postgres>::new(
            "select id, user_id, status, attempts, last_error, next_attempt_at, created_at, email_id, trigger_position
               from email_jobs where true",
        );
        if let Some(status) = status {
            q.push(" and status = ").push_bind(status.as_db());
        }
        if let Some(after) = after.as_deref() {
            let (at, id): (DateTime<Utc>, Uuid) = cursor::decode(after)?;
            q.push(" and (created_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(format!(
            " order by created_at desc, id desc limit {}",
            limit + 1
        ));
        let rows: Vec<JobRow> = q
            .build_query_as()
            .fetch_all(&api.pool)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        let total: i64 = match status {
            Some(s) => sqlx::query_scalar("select count(*) from email_jobs where status = $1")
                .bind(s.as_db()),
            None => sqlx::query_scalar("select count(*) from email_jobs"),
        }
        .fetch_one(&api.pool)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
        let items = rows
            .into_iter()
            .map(|r| (cursor::encode(&(r.6, r.0)), job(r)))
            .collect();
        Ok(EmailJobConnection::from_page(items, limit, total))
    }

    /// Who is calling: the token's actor and role, so that a client offers only what the
    /// caller may do.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Principal> {
        ctx.data_opt::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated.into())
    }

    /// The service's health.
    async fn health(&self, ctx: &Context<'_>) -> async_graphql::Result<Health> {
        let api = ctx.data_unchecked::<ApiContext>();
        let report = crate::http::health::report(&api.pool, api.email_writer.as_ref()).await;
        Ok(Health {
            status: report.status.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            database: report.database.to_owned(),
            email_writer: report.email_writer,
            projection_lag: i32::try_from(report.projection_lag).unwrap_or(i32::MAX),
        })
    }
}

/// A row of `email_jobs` as the API reads it.
pub type JobRow = (
    Uuid,
    Uuid,
    String,
    i32,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<Uuid>,
    i64,
);

/// The API's view of a job row.
pub fn job(r: JobRow) -> EmailJob {
    let status = EmailJobStatus::from_db(&r.2);
    EmailJob {
        id: ID(r.0.to_string()),
        user_id: ID(r.1.to_string()),
        status,
        attempts: r.3,
        last_error: r.4,
        next_attempt_at: matches!(status, EmailJobStatus::Pending | EmailJobStatus::Running)
            .then_some(r.5),
        created_at: r.6,
        email_id: r.7.map(|id| ID(id.to_string())),
        trigger_position: r.8,
    }
}

/// Loads users by id, for mutations that must read their own fresh write (not the request's
/// loader cache).
///
/// # Errors
/// The database failed.
pub async fn fresh_user(pool: &sqlx::PgPool, id: Uuid) -> ApiResult<User> {
    let rows: Vec<(serde_json::Value,)> =
        sqlx::query_as("select to_jsonb(u) from users u where id = $1")
            .bind(id)
            .fetch_all(pool)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
    users_from_json(rows)?
        .pop()
        .map(User::from)
        .ok_or_else(|| ApiError::NotFound("user not found".into()))
}
