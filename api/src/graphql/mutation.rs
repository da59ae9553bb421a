//! Mutations: parse input once at the edge, run a command with the caller's metadata, wait
//! until the read model shows the command's own write, and return it.

use std::time::Duration;

use async_graphql::{Context, InputObject, Object, ID};
use chrono::{DateTime, Utc};
use domain::client::{
    CancelOrder, ClientAction, ClientCommand, CreateUser, DeliveryAction, ImportedHistory,
    PlaceOrder, SetEngagementScore, UpdateUser,
};
use domain::values::{Categories, EmailAddress, ExternalId, Money, OrderId, Score, UserName};
use projections::commands::{CommandMetadata, Committed};
use projections::engagement::jobs::{self, Retry};
use projections::ingest::{Ingest, OrderRecord};
use projections::log::position::LogPosition;
use projections::views::emails;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::auth::{Principal, Role, RoleGuard};
use super::errors::{ApiError, ApiResult};
use super::ids::parse_id;
use super::query::fresh_user;
use super::types::{Email, EmailJob, ImportRejection, ImportResult, User};
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
    /// The client's id in the retailer's systems: unique; creating again with the same
    /// external id reaches the same client.
    pub external_id: Option<String>,
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
    /// Gives a client without one its external id (it cannot be changed afterwards).
    pub external_id: Option<String>,
}

/// One order of `importOrders`, naming its client by external id.
#[derive(InputObject, Debug)]
pub struct ImportOrderInput {
    /// The client's id in the retailer's systems.
    pub external_id: String,
    /// Idempotency key, per client.
    pub order_id: ID,
    /// Amount.
    pub amount: Decimal,
    /// When the client placed it.
    pub placed_at: DateTime<Utc>,
    /// Categories it touched.
    pub categories: Option<Vec<String>>,
}

/// Most orders one `importOrders` call takes.
pub const IMPORT_ORDERS_MAX: usize = 1_000;

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

fn external_id(raw: Option<&str>) -> ApiResult<Option<ExternalId>> {
    Ok(raw.map(ExternalId::parse).transpose()?)
}

/// The caller and request a command is recorded with.
fn metadata(ctx: &Context<'_>) -> ApiResult<CommandMetadata> {
    let principal = ctx
        .data_opt::<Principal>()
        .ok_or(ApiError::Unauthenticated)?;
    let meta = ctx.data_opt::<RequestMeta>().cloned().unwrap_or_default();
    Ok(CommandMetadata {
        actor: principal.actor.clone(),
        request_id: Some(meta.request_id.clone()),
        correlation_id: Some(meta.correlation_id.unwrap_or(meta.request_id)),
        causation_id: None,
    })
}

/// Waits until the users view has passed `position` (read-your-writes).
async fn wait_for_users(ctx: &Context<'_>, position: LogPosition) -> ApiResult<()> {
    ctx.data_unchecked::<ApiContext>()
        .read_models
        .users
        .wait_for(position, READ_YOUR_WRITES)
        .await
        .map_err(ApiError::from)
}

async fn run(ctx: &Context<'_>, user_id: Uuid, action: ClientAction) -> ApiResult<Committed> {
    let api = ctx.data_unchecked::<ApiContext>();
    let committed = api
        .commands
        .execute(user_id, action, &metadata(ctx)?)
        .await?;
    wait_for_users(ctx, committed.position).await?;
    Ok(committed)
}

async fn run_and_read(
    ctx: &Context<'_>,
    user_id: Uuid,
    action: ClientAction,
) -> async_graphql::Result<User> {
    let committed = run(ctx, user_id, action).await?;
    read_user(ctx, committed).await
}

/// Waits for `committed` to reach the users view, then answers with the user.
async fn read_committed(ctx: &Context<'_>, committed: Committed) -> async_graphql::Result<User> {
    wait_for_users(ctx, committed.position).await?;
    read_user(ctx, committed).await
}

async fn read_user(ctx: &Context<'_>, committed: Committed) -> async_graphql::Result<User> {
    let api = ctx.data_unchecked::<ApiContext>();
    let user_id = committed.user_id;
    // The users consumer of this process usually wrote the row just now: no round trip.
    if let Some(row) = api.read_models.recent_users.get(user_id, committed.version) {
        return Ok(User::from(row));
    }
    Ok(fresh_user(&api.pool, user_id).await?)
}

/// Records a review of `email_id` and answers with the email as the emails view shows it
/// after the review.
async fn review(
    ctx: &Context<'_>,
    email_id: Uuid,
    action: DeliveryAction,
) -> async_graphql::Result<Email> {
    let api = ctx.data_unchecked::<ApiContext>();
    let Some(row) = emails::load(&api.pool, email_id).await? else {
        return Err(ApiError::NotFound("email not found".into()).into());
    };
    let committed = api
        .commands
        .execute(row.user_id, ClientAction::Deliver(action), &metadata(ctx)?)
        .await
        .map_err(ApiError::from)?;
    api.read_models
        .emails
        .wait_for(committed.position, READ_YOUR_WRITES)
        .await
        .map_err(ApiError::from)?;
    let row = emails::load(&api.pool, email_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("email not found".into()))?;
    Ok(Email::from(row))
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
            external_id: external_id(input.external_id.as_deref())?,
            client_since: None,
            imported: false,
        };
        let metadata = metadata(ctx)?;
        let api = ctx.data_unchecked::<ApiContext>();
        let committed = api
            .commands
            .create_user(create, &metadata)
            .await
            .map_err(ApiError::from)?;
        read_committed(ctx, committed).await
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
            external_id: external_id(input.external_id.as_deref())?,
        };
        let metadata = metadata(ctx)?;
        let api = ctx.data_unchecked::<ApiContext>();
        let committed = api
            .commands
            .update_user(id, update, &metadata)
            .await
            .map_err(ApiError::from)?;
        read_committed(ctx, committed).await
    }

    /// Deletes a client (admin). Returns the id.
    #[graphql(guard = "RoleGuard::new(Role::Admin)")]
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let uuid = parse_id(&id, "id")?;
        run(ctx, uuid, ClientAction::DeleteUser).await?;
        Ok(id)
    }

    /// Erases a client's personal data for good (admin; GDPR Article 17): their key is
    /// deleted, so every copy of their name, address and emails in the log and snapshots
    /// becomes unreadable at once, and the views, emails and jobs are scrubbed before this
    /// answers. The history keeps every event's type, time, actor and non-personal facts.
    /// `reason` is recorded as given: a reference (a ticket), not the person's words.
    /// Erasing an erased client changes nothing. Returns the id.
    #[graphql(guard = "RoleGuard::new(Role::Admin)")]
    async fn erase_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> async_graphql::Result<ID> {
        let uuid = parse_id(&id, "id")?;
        let api = ctx.data_unchecked::<ApiContext>();
        let already = api
            .commands
            .load(uuid)
            .await
            .map_err(ApiError::from)?
            .lifecycle()
            == domain::client::Lifecycle::Erased;
        let meta = metadata(ctx)?;
        let now = api.commands.clock().now();
        let committed = api
            .commands
            .execute_at(
                uuid,
                ClientCommand::new(
                    ClientAction::EraseUser {
                        reason: reason.clone(),
                    },
                    now,
                ),
                &meta,
            )
            .await
            .map_err(ApiError::from)?;
        // The answer waits for every view that held the client's data to scrub it.
        wait_for_users(ctx, committed.position).await?;
        api.read_models
            .emails
            .wait_for(committed.position, READ_YOUR_WRITES)
            .await
            .map_err(ApiError::from)?;
        if let (false, Some(ledger)) = (already, &api.erasure_ledger) {
            let entry = projections::vault::erasure::Erasure {
                user_id: uuid,
                erased_at: now,
                actor: meta.actor,
                reason: reason.trim().to_owned(),
            };
            if let Err(error) = ledger.append(&entry) {
                // The erasure stands; `engagement erasures export` writes the ledger from the log.
                tracing::error!(error = %format!("{error:#}"), ledger = %ledger.path().display(), "could not record an erasure in the ledger; run `engagement erasures export`");
            }
        }
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

    /// Many orders at once (at most 1,000 per call), each idempotent on (client, orderId).
    /// Recorded as order history: the scores they lead to do not trigger emails by
    /// themselves. Rows that cannot be taken are listed with their index and field; the rest
    /// go in.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn import_orders(
        &self,
        ctx: &Context<'_>,
        orders: Vec<ImportOrderInput>,
    ) -> async_graphql::Result<ImportResult> {
        if orders.len() > IMPORT_ORDERS_MAX {
            return Err(ApiError::validation(
                "orders",
                format!("at most {IMPORT_ORDERS_MAX} orders per call"),
            )
            .into());
        }
        let mut rejected = Vec::new();
        let mut records = Vec::with_capacity(orders.len());
        for (index, input) in orders.into_iter().enumerate() {
            match import_record(index as u64, input) {
                Ok(record) => records.push(record),
                Err(error) => rejected.push(error),
            }
        }
        let api = ctx.data_unchecked::<ApiContext>();
        let ingest = Ingest::new(&api.commands, api.pool.clone(), metadata(ctx)?, true);
        let report = ingest.orders(records).await.map_err(ApiError::from)?;
        if let Some(position) = report.position {
            wait_for_users(ctx, position).await?;
        }
        rejected.extend(report.rejected.iter().map(|r| ImportRejection {
            index: i32::try_from(r.line).unwrap_or(i32::MAX),
            field: r.field.clone(),
            message: r.message.clone(),
        }));
        rejected.sort_by_key(|r| r.index);
        Ok(ImportResult {
            accepted: i32::try_from(report.accepted).unwrap_or(i32::MAX),
            duplicates: i32::try_from(report.duplicates).unwrap_or(i32::MAX),
            rejected,
        })
    }

    /// Cancels (or refunds) an order: it stops counting toward the score, the order count
    /// and the average value. Cancelling twice records it once.
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        order_id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<User> {
        let id = parse_id(&user_id, "userId")?;
        if reason.as_deref().is_some_and(|r| r.chars().count() > 500) {
            return Err(ApiError::validation("reason", "must be at most 500 characters").into());
        }
        let cancel = CancelOrder {
            order_id: OrderId::parse(order_id.as_str()).map_err(ApiError::from)?,
            reason,
        };
        run_and_read(ctx, id, ClientAction::CancelOrder(cancel)).await
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

    /// Lets an email waiting for review go (`review` delivery): it is sent next, unless the
    /// client has left the audience by then (operator).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn approve_email(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Email> {
        let email_id = parse_id(&id, "id")?;
        let actor = metadata(ctx)?.actor;
        review(ctx, email_id, DeliveryAction::Approve { email_id, actor }).await
    }

    /// Stops an email waiting for review for good, saying why (operator).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn reject_email(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> async_graphql::Result<Email> {
        let email_id = parse_id(&id, "id")?;
        if reason.trim().is_empty() || reason.chars().count() > 500 {
            return Err(ApiError::validation("reason", "must be 1 to 500 characters").into());
        }
        let actor = metadata(ctx)?.actor;
        review(
            ctx,
            email_id,
            DeliveryAction::Reject {
                email_id,
                actor,
                reason,
            },
        )
        .await
    }

    /// Marks the client's current address as one that must not be written to (the person
    /// asked by other means, or the address is known bad); a new address lifts it (operator).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn suppress_address(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        reason: String,
    ) -> async_graphql::Result<User> {
        let id = parse_id(&user_id, "userId")?;
        if reason.trim().is_empty() || reason.chars().count() > 500 {
            return Err(ApiError::validation("reason", "must be 1 to 500 characters").into());
        }
        run_and_read(
            ctx,
            id,
            ClientAction::Deliver(DeliveryAction::Suppress {
                reason,
                source: "manual".to_owned(),
            }),
        )
        .await
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

/// Parses one `importOrders` row; a bad one is rejected with its index and field.
fn import_record(index: u64, input: ImportOrderInput) -> Result<OrderRecord, ImportRejection> {
    let reject = |e: ApiError| {
        let (field, message) = match e {
            ApiError::Validation { field, message } => (Some(field), message),
            other => (None, other.to_graphql().message),
        };
        ImportRejection {
            index: i32::try_from(index).unwrap_or(i32::MAX),
            field,
            message,
        }
    };
    let parse = || -> ApiResult<OrderRecord> {
        Ok(OrderRecord {
            line: index,
            external_id: ExternalId::parse(&input.external_id)?,
            order: PlaceOrder {
                order_id: OrderId::parse(input.order_id.as_str())?,
                amount: money(input.amount, "amount")?,
                placed_at: input.placed_at,
                categories: categories(input.categories.clone(), "categories")?.unwrap_or_default(),
            },
        })
    };
    parse().map_err(reject)
}
