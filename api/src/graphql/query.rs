//! Queries: the read models, and the log for audits.

use std::sync::Arc;

use async_graphql::{Context, Enum, InputObject, Object, ID};
use chrono::{DateTime, Utc};
use projections::engagement::jobs;
use projections::log::as_of::{LookBack, Moment};
use projections::views::emails::{self, EmailFilter};
use projections::views::users::{self, SortedUser, UserSort, UsersPage};
use uuid::Uuid;

use super::auth::Principal;
use super::cursor;
use super::dependencies::aspect;
use super::errors::{ApiError, ApiResult};
use super::ids::parse_id;
use super::loaders::{email_pages, EmailsAhead, EmailsPageKey, EventsPageKey, Loaders};
use super::types::{
    columns_read, emails_shown, user_field_columns, Email, EmailConnection, EmailJob,
    EmailJobConnection, EmailJobStatus, EmailStatus, EngagementSummary, EventConnection, Health,
    TrendDay, UpliftReport, User, UserConnection, UserState, UserStatus,
};
use super::{read_pool, ApiContext};

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

impl From<UserOrderField> for UserSort {
    fn from(field: UserOrderField) -> Self {
        match field {
            UserOrderField::EngagementScore => Self::EngagementScore,
            UserOrderField::Name => Self::Name,
            UserOrderField::CreatedAt => Self::CreatedAt,
            UserOrderField::LastOrderDate => Self::LastOrderDate,
        }
    }
}

impl UserFilter {
    /// The view's filter, after checking each field.
    fn parse(self) -> ApiResult<users::UserFilter> {
        let score = |value: Option<i32>, field: &str| -> ApiResult<Option<i16>> {
            value
                .map(|v| {
                    i16::try_from(v)
                        .ok()
                        .filter(|v| (0..=100).contains(v))
                        .ok_or_else(|| ApiError::validation(field, "must be between 0 and 100"))
                })
                .transpose()
        };
        let trimmed =
            |value: Option<String>| value.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let search = trimmed(self.search);
        if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
            return Err(ApiError::validation(
                "search",
                "must be at most 200 characters",
            ));
        }
        Ok(users::UserFilter {
            at_risk: self.at_risk,
            min_score: score(self.min_score, "minScore")?,
            max_score: score(self.max_score, "maxScore")?,
            search,
            category: trimmed(self.category),
            status: self.status.map(Into::into),
        })
    }
}

/// The query root.
pub struct Query;

#[Object]
impl Query {
    /// One client.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<User>> {
        let id = parse_id(&id, "id")?;
        Ok(ctx
            .data_unchecked::<Loaders>()
            .user(id)
            .await?
            .map(User::from))
    }

    /// How far `serve --demo` is with filling in its data (null when not a demo).
    async fn demo(&self, ctx: &Context<'_>) -> Option<super::types::DemoStatus> {
        ctx.data_unchecked::<ApiContext>()
            .demo
            .as_deref()
            .map(super::types::DemoStatus::from)
    }

    /// A client by the id the retailer's own systems use.
    async fn user_by_external_id(
        &self,
        ctx: &Context<'_>,
        external_id: String,
    ) -> async_graphql::Result<Option<User>> {
        let external_id =
            domain::values::ExternalId::parse(&external_id).map_err(ApiError::from)?;
        let api = ctx.data_unchecked::<ApiContext>();
        let Some(id) = api
            .commands
            .resolve_external_id(external_id.as_str())
            .await
            .map_err(ApiError::from)?
        else {
            return Ok(None);
        };
        Ok(ctx
            .data_unchecked::<Loaders>()
            .user(id)
            .await?
            .map(User::from))
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
        let filter = filter.unwrap_or_default().parse()?;
        let limit = cursor::page_size(first)?;
        let order = order_by.unwrap_or(UserOrder {
            field: UserOrderField::CreatedAt,
            direction: OrderDirection::Desc,
        });
        let page = UsersPage {
            filter,
            sort: order.field.into(),
            descending: order.direction == OrderDirection::Desc,
            after: after.as_deref().map(cursor::decode).transpose()?,
            limit: limit + 1,
            columns: columns_read(&ctx.look_ahead(), &users::COLUMNS, user_field_columns),
        };
        // The page, its clients' emails where it shows them, and its count on one connection.
        let mut conn = read_pool(ctx).acquire().await.map_err(ApiError::from)?;
        let rows = users::page(&mut *conn, &page)
            .await
            .map_err(ApiError::from)?;
        // The row after the page only says whether there is a next page: its membership
        // matters (recorded), not its fields.
        let shown = &rows[..rows.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
        let recorder = ctx.data_unchecked::<Loaders>().recorder();
        recorder.clients(shown.iter().map(|r| r.row.id));
        recorder.aspects(list_dependencies(&page));
        let ahead = ctx.look_ahead();
        let emails = emails_shown(&ahead);
        let emails_ahead = if emails.is_empty() || shown.is_empty() {
            None
        } else {
            let keys: Vec<EmailsPageKey> = shown
                .iter()
                .flat_map(|r| {
                    emails.iter().map(|key| EmailsPageKey {
                        user_id: r.row.id,
                        ..key.clone()
                    })
                })
                .collect();
            let pages = email_pages(&mut conn, &keys)
                .await
                .map_err(ApiError::from)?;
            Some(Arc::new(EmailsAhead::new(pages)))
        };
        // Counting costs a scan: only when asked for.
        let total = if ahead.field("totalCount").exists() {
            users::count(&mut *conn, &page.filter)
                .await
                .map_err(ApiError::from)?
        } else {
            0
        };
        drop(conn);
        let items = rows
            .into_iter()
            .map(|SortedUser { row, sort_key }| {
                let id = row.id;
                let user = User::from(row).with_emails_ahead(emails_ahead.clone());
                ((sort_key, id), user)
            })
            .collect();
        Ok(UserConnection::from_page(items, limit, total))
    }

    /// One email.
    async fn email(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Email>> {
        let id = parse_id(&id, "id")?;
        let row = emails::load(read_pool(ctx), id)
            .await
            .map_err(ApiError::from)?;
        let recorder = ctx.data_unchecked::<Loaders>().recorder();
        match &row {
            Some(row) => recorder.client(row.user_id),
            // It may be written any moment.
            None => recorder.aspects(aspect::EMAILS),
        }
        Ok(row.map(Email::from))
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
        let filter = EmailFilter {
            user_id: user_id
                .as_ref()
                .map(|id| parse_id(id, "userId"))
                .transpose()?,
            status: status.map(Into::into),
        };
        let limit = cursor::page_size(first)?;
        let after: Option<(DateTime<Utc>, Uuid)> =
            after.as_deref().map(cursor::decode).transpose()?;
        let rows = emails::page(read_pool(ctx), filter, after, limit + 1)
            .await
            .map_err(ApiError::from)?;
        ctx.data_unchecked::<Loaders>()
            .recorder()
            .aspects(aspect::EMAILS);
        let total = emails::count(read_pool(ctx), filter)
            .await
            .map_err(ApiError::from)?;
        Ok(EmailConnection::of_rows(rows, limit, total))
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
        EventConnection::of_page(ctx, key).await
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
        let moment = match (at, version) {
            (Some(at), _) => Moment::At(at),
            (_, Some(v)) => Moment::Version(i64::from(v)),
            _ => Moment::Latest,
        };
        let looked = api
            .past
            .state_at(read_pool(ctx), &api.pool, api.commands.vault(), id, moment)
            .await
            .map_err(ApiError::from)?;
        match looked {
            LookBack::Found(state) => Ok(Some(UserState::from_client(
                &state.client,
                state.version,
                at.unwrap_or(state.happened_at),
            ))),
            // Unknown, or not created yet at that moment.
            LookBack::Unknown | LookBack::NotYet => Ok(None),
            LookBack::Beyond { length } => {
                Err(ApiError::validation("version", format!("the user has {length} events")).into())
            }
        }
    }

    /// Counts for the overview.
    async fn engagement_summary(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<EngagementSummary> {
        ctx.data_unchecked::<Loaders>()
            .recorder()
            .aspects(aspect::ALL);
        let summary = users::summary(read_pool(ctx))
            .await
            .map_err(ApiError::from)?;
        let emails = emails::count(read_pool(ctx), EmailFilter::default())
            .await
            .map_err(ApiError::from)?;
        let int = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(EngagementSummary {
            users: int(summary.users),
            at_risk: int(summary.at_risk),
            average_score: summary.average_score,
            emails: int(emails),
            score_histogram: summary.histogram.iter().copied().map(int).collect(),
        })
    }

    /// Did emailing help? At-risk triggers of treated and held-out clients in `[since, until)`
    /// (all so far, up to now, by default), and how many of those clients ordered within
    /// `windowDays` after their trigger. Triggers count whatever happened after them
    /// (intention to treat); triggers whose window has not closed yet count what happened so far.
    async fn engagement_uplift(
        &self,
        ctx: &Context<'_>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        #[graphql(default = 30)] window_days: i32,
    ) -> async_graphql::Result<UpliftReport> {
        let api = ctx.data_unchecked::<ApiContext>();
        if !(1..=365).contains(&window_days) {
            return Err(ApiError::validation("windowDays", "must be 1 to 365").into());
        }
        let until = until.unwrap_or_else(|| api.commands.clock().now());
        if since.is_some_and(|since| since >= until) {
            return Err(ApiError::validation("since", "must be before until").into());
        }
        let triggers =
            projections::views::uplift::triggers(read_pool(ctx), since, until, window_days)
                .await
                .map_err(ApiError::from)?;
        Ok(UpliftReport::new(
            window_days,
            &domain::uplift::report(&triggers),
        ))
    }

    /// Per day over the last `days` (up to today, UTC): clients at risk and their average
    /// score at the day's end, emails written and reactivations (at-risk clients whose own
    /// activity took them out of the band) that day. Oldest first.
    async fn engagement_trend(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 90)] days: i32,
    ) -> async_graphql::Result<Vec<TrendDay>> {
        let api = ctx.data_unchecked::<ApiContext>();
        if !(1..=730).contains(&days) {
            return Err(ApiError::validation("days", "must be 1 to 730").into());
        }
        let today = api.commands.clock().now().date_naive();
        let from = today - chrono::Duration::days(i64::from(days - 1));
        let rows = projections::views::trend::days(read_pool(ctx), from, today)
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(TrendDay::from).collect())
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
        let limit = cursor::page_size(first)?;
        let status = status.map(Into::into);
        let after: Option<(DateTime<Utc>, Uuid)> =
            after.as_deref().map(cursor::decode).transpose()?;
        let rows = jobs::page(read_pool(ctx), status, after, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let total = jobs::count(read_pool(ctx), status)
            .await
            .map_err(ApiError::from)?;
        let items = rows
            .into_iter()
            .map(|row| ((row.created_at, row.id), EmailJob::from(row)))
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
        let report = crate::health::report(&api.pool, api.email_writer.as_ref()).await;
        Ok(Health {
            status: report.status.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            database: report.database.to_owned(),
            email_writer: report.email_writer,
            email_delivery: api.emails.delivery.mode.to_string(),
            mail_server: api.emails.mail_server.clone(),
            projection_lag: i32::try_from(report.projection_lag).unwrap_or(i32::MAX),
        })
    }
}

/// Reads a user from the view, for mutations that must read their own fresh write (not the
/// request's loader cache).
///
/// # Errors
/// `NOT_FOUND`, or the database failed.
pub async fn fresh_user(pool: &sqlx::PgPool, id: Uuid) -> ApiResult<User> {
    users::load_user(pool, id)
        .await?
        .map(User::from)
        .ok_or_else(|| ApiError::NotFound("user not found".into()))
}

/// What a page of users depends on besides its own rows: which clients are listed at all
/// (coming and going, the filter's fields) and in what order (the sort's field).
fn list_dependencies(page: &UsersPage) -> u8 {
    let filter = &page.filter;
    let mut aspects = aspect::MEMBERSHIP;
    aspects |= match page.sort {
        UserSort::EngagementScore => aspect::SCORE,
        UserSort::Name => aspect::PROFILE,
        UserSort::CreatedAt => 0,
        UserSort::LastOrderDate => aspect::ORDERS,
    };
    if filter.at_risk.is_some() || filter.min_score.is_some() || filter.max_score.is_some() {
        aspects |= aspect::SCORE;
    }
    if filter.search.is_some() || filter.category.is_some() {
        aspects |= aspect::PROFILE;
    }
    aspects
}
