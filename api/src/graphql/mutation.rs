//! Mutations: parse input once at the edge, run a command with the caller's metadata, wait
//! until the read model shows the command's own write, and return it.

use std::time::Duration;

use async_graphql::{Context, InputObject, Object, ID};
use chrono::{DateTime, Utc};
use domain::client::{
    ClientAction, CreateUser, ImportedHistory, PlaceOrder, SetEngagementScore, UpdateUser,
};
use domain::values::{Categories, EmailAddress, Money, OrderId, Score, UserName};
use projections::commands::{CommandMetadata, Committed};
use projections::engagement::jobs::{self, Retry};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::auth::{Principal, Role, RoleGuard};
use super::errors::{ApiError, ApiResult};
use super::ids::parse_id;
use super::query::fresh_user;
use super::types::{EmailJob, User};
use super::{ApiContext, RequestMeta};

/// How long a mutation waits for the read model to show its write.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

/// A new client.
#[derive(InputObject, Debug)]
pub struct CreateUserInput {
    /// Name (1 to 200 characters).
    pub name: String,
    /// Email address.
    pub email: String,
    /// Preferred categories.
    pub preferred_categories: Option<Vec<String>>,
    /// Order history imported from an older system (the seed's create request carried these).
    pub last_order_date: Option<DateTime<Utc>>,
    /// Imported order count.
    pub order_count: Option<i32>,
    /// Imported average order value.
    pub average_order_value: Option<Decimal>,
}

/// Changes to a client; absent fields stay as they are.
#[derive(InputObject, Debug)]
pub struct UpdateUserInput {
    /// Name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Preferred categories.
    pub preferred_categories: Option<Vec<String>>,
    /// Corrected date of the last order.
    pub last_order_date: Option<DateTime<Utc>>,
    /// Corrected order count.
    pub order_count: Option<i32>,
    /// Corrected average order value.
    pub average_order_value: Option<Decimal>,
}

/// An order.
#[derive(InputObject, Debug)]
pub struct PlaceOrderInput {
    /// Idempotency key: placing the same order twice records it once.
    pub order_id: ID,
    /// Amount.
    pub amount: Decimal,
    /// When the client placed it (default: now).
    pub placed_at: Option<DateTime<Utc>>,
    /// Categories it touched.
    pub categories: Option<Vec<String>>,
}

fn money(value: Decimal, field: &str) -> ApiResult<Money> {
    Ok(Money::parse(&value.normalize().to_string(), field)?)
}

fn count(value: i32, field: &str) -> ApiResult<u32> {
    u32::try_from(value).map_err(|_| ApiError::validation(field, "must not be negative"))
}

fn categories(value: Option<Vec<String>>, field: &str) -> ApiResult<Option<Categories>> {
    Ok(value.map(|v| Categories::parse(&v, field)).transpose()?)
}

async fn run(ctx: &Context<'_>, user_id: Uuid, action: ClientAction) -> ApiResult<Committed> {
    let api = ctx.data_unchecked::<ApiContext>();
    let principal = ctx
        .data_opt::<Principal>()
        .ok_or(ApiError::Unauthenticated)?;
    let meta = ctx.data_opt::<RequestMeta>().cloned().unwrap_or_default();
    let metadata = CommandMetadata {
        actor: principal.actor.clone(),
        request_id: Some(meta.request_id.clone()),
        correlation_id: Some(meta.correlation_id.unwrap_or(meta.request_id)),
        causation_id: None,
    };
    let committed = api.commands.execute(user_id, action, &metadata).await?;
    api.read_models
        .users
        .wait_for(committed.position, READ_YOUR_WRITES)
        .await
        .map_err(|e| ApiError::from(anyhow::Error::new(e)))?;
    Ok(committed)
}

async fn run_and_read(
    ctx: &Context<'_>,
    user_id: Uuid,
    action: ClientAction,
) -> async_graphql::Result<User> {
    let committed = run(ctx, user_id, action).await?;
    let api = ctx.data_unchecked::<ApiContext>();
    // The users consumer of this process usually wrote the row just now: no round trip.
    if let Some(row) = api.read_models.recent_users.get(user_id, committed.version) {
        return Ok(User::from(row));
    }
    Ok(fresh_user(&api.pool, user_id).await?)
}

/// The mutation root.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates a client.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
    ) -> async_graphql::Result<User> {
        let create = CreateUser {
            id: Uuid::new_v4(),
            name: UserName::parse(&input.name).map_err(ApiError::from)?,
            email: EmailAddress::parse(&input.email).map_err(ApiError::from)?,
            preferred_categories: categories(input.preferred_categories, "preferredCategories")?
                .unwrap_or_default(),
            history: ImportedHistory {
                order_count: input
                    .order_count
                    .map(|c| count(c, "orderCount"))
                    .transpose()?
                    .unwrap_or(0),
                average_order_value: input
                    .average_order_value
                    .map(|v| money(v, "averageOrderValue"))
                    .transpose()?
                    .unwrap_or(Money::ZERO),
                last_order_at: input.last_order_date,
            },
        };
        let id = create.id;
        run_and_read(ctx, id, ClientAction::CreateUser(create)).await
    }

    /// Changes a client's profile or imported order summary.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateUserInput,
    ) -> async_graphql::Result<User> {
        let id = parse_id(&id, "id")?;
        let update = UpdateUser {
            name: input
                .name
                .as_deref()
                .map(UserName::parse)
                .transpose()
                .map_err(ApiError::from)?,
            email: input
                .email
                .as_deref()
                .map(EmailAddress::parse)
                .transpose()
                .map_err(ApiError::from)?,
            preferred_categories: categories(input.preferred_categories, "preferredCategories")?,
            last_order_at: input.last_order_date,
            order_count: input
                .order_count
                .map(|c| count(c, "orderCount"))
                .transpose()?,
            average_order_value: input
                .average_order_value
                .map(|v| money(v, "averageOrderValue"))
                .transpose()?,
        };
        run_and_read(ctx, id, ClientAction::UpdateUser(update)).await
    }

    /// Deletes a client (admin). Returns the id.
    #[graphql(guard = "RoleGuard::new(Role::Admin)")]
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let uuid = parse_id(&id, "id")?;
        run(ctx, uuid, ClientAction::DeleteUser).await?;
        Ok(id)
    }

    /// Records an order (once per `orderId`).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<User> {
        let id = parse_id(&user_id, "userId")?;
        let now = ctx.data_unchecked::<ApiContext>().commands.clock().now();
        let order = PlaceOrder {
            order_id: OrderId::parse(input.order_id.as_str()).map_err(ApiError::from)?,
            amount: money(input.amount, "amount")?,
            placed_at: input.placed_at.unwrap_or(now),
            categories: categories(input.categories, "categories")?.unwrap_or_default(),
        };
        run_and_read(ctx, id, ClientAction::PlaceOrder(order)).await
    }

    /// The seed's manual override, for demos and corrections; recorded with who and why.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn set_engagement_score(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        score: i32,
        reason: Option<String>,
    ) -> async_graphql::Result<User> {
        let id = parse_id(&user_id, "userId")?;
        if reason.as_deref().is_some_and(|r| r.chars().count() > 500) {
            return Err(ApiError::validation("reason", "must be at most 500 characters").into());
        }
        let actor = ctx
            .data_opt::<Principal>()
            .map(|p| p.actor.clone())
            .unwrap_or_default();
        let set = SetEngagementScore {
            score: Score::parse(i64::from(score), "score").map_err(ApiError::from)?,
            reason,
            actor,
        };
        run_and_read(ctx, id, ClientAction::SetEngagementScore(set)).await
    }

    /// Recomputes a client's score now with the configured policy.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn rescore_user(&self, ctx: &Context<'_>, user_id: ID) -> async_graphql::Result<User> {
        let id = parse_id(&user_id, "userId")?;
        run_and_read(ctx, id, ClientAction::Rescore).await
    }

    /// Opts a client out of emails.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn unsubscribe_user(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
    ) -> async_graphql::Result<User> {
        let id = parse_id(&user_id, "userId")?;
        run_and_read(ctx, id, ClientAction::Unsubscribe).await
    }

    /// Puts a dead (or skipped) email job back in the queue (admin).
    #[graphql(guard = "RoleGuard::new(Role::Admin)")]
    async fn retry_email_job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<EmailJob> {
        let api = ctx.data_unchecked::<ApiContext>();
        let id = parse_id(&id, "id")?;
        let now = api.commands.clock().now();
        match jobs::retry(&api.pool, id, now).await? {
            Retry::Retried(row) => {
                api.jobs_signal.notify_one();
                Ok(EmailJob::from(row))
            }
            Retry::NotFound => Err(ApiError::NotFound("email job not found".into()).into()),
            Retry::NotRetryable(status) => Err(ApiError::Conflict(format!(
                "only DEAD or SKIPPED jobs can be retried; this one is {status}"
            ))
            .into()),
        }
    }
}
