//! The GraphQL API of `../shared/API.md`.
//!
//! # Layout
//! - [`query`], [`mutation`], [`subscription`]: the three roots.
//! - [`types`]: output types and Relay connections.
//! - [`serial`]: a list's items resolved field after field, without per-field boxes.
//! - [`loaders`]: batched reads (a page of users with their emails costs a constant number of
//!   queries).
//! - [`auth`]: bearer tokens and roles.
//! - [`errors`]: one error type, mapped to `extensions.code`.
//! - [`cursor`]: opaque cursors and page sizes.
//! - [`dependencies`]: what an answer read, for the response cache.
//! - [`ids`]: ids in arguments, parsed at the edge.
//!
//! Resolvers hold no SQL: every query is a named function of the `projections` module that
//! owns its table.

pub mod auth;
pub mod cursor;
pub mod dependencies;
pub mod errors;
pub mod ids;
pub mod loaders;
pub mod mutation;
pub mod query;
pub mod serial;
pub mod subscription;
pub mod types;

use std::sync::Arc;

use async_graphql::{SDLExportOptions, Schema};
use projections::commands::CommandBus;
use projections::runtime::ReadModels;
use sqlx::PgPool;

pub use subscription::LiveFeed;

/// The schema.
pub type ApiSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

/// Deepest query accepted (GraphiQL's introspection query reaches 14 levels).
pub const MAX_DEPTH: usize = 16;
/// Most complex query accepted (list fields count their page size times their children).
pub const MAX_COMPLEXITY: usize = 25_000;

/// What resolvers reach.
#[derive(Clone)]
pub struct ApiContext {
    /// The database.
    pub pool: PgPool,
    /// The command path.
    pub commands: CommandBus,
    /// The read models' consumers (read-your-writes).
    pub read_models: ReadModels,
    /// The live event feed.
    pub live: LiveFeed,
    /// The email writer in use, as health reports it.
    pub email_writer: Arc<dyn Fn() -> String + Send + Sync>,
    /// The delivery in force and the mail server.
    pub emails: projections::runtime::EmailRuntime,
    /// Wakes email workers (a job was put back).
    pub jobs_signal: Arc<tokio::sync::Notify>,
    /// Where erasures are recorded besides the log.
    pub erasure_ledger: Option<projections::vault::erasure::Ledger>,
    /// The demo's fill, when serving one.
    pub demo: Option<Arc<crate::demo::DemoProgress>>,
    /// Kept past states recently read (`userAsOf`).
    pub past: Arc<projections::log::as_of::PastStates>,
    /// Read replicas, and where each query runs.
    pub replicas: Arc<crate::replicas::Replicas>,
}

/// The pool a query reads from: a replica, or the primary (requests that carry none, such as
/// mutations, read the primary).
#[derive(Clone)]
pub struct ReadPool(pub PgPool);

/// The pool this request reads views and the log from.
pub fn read_pool<'a>(ctx: &'a async_graphql::Context<'_>) -> &'a PgPool {
    match ctx.data_opt::<ReadPool>() {
        Some(ReadPool(pool)) => pool,
        None => &ctx.data_unchecked::<ApiContext>().pool,
    }
}

/// Per-request identifiers stored on every event a request causes.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// This request.
    pub request_id: String,
    /// The conversation (from `X-Correlation-Id`).
    pub correlation_id: Option<String>,
}

/// Builds the schema with its limits. It registers no extension: list items resolve without
/// calling extensions per field ([`serial`]); adding one means resolving them the stock way.
pub fn build_schema(context: ApiContext) -> ApiSchema {
    Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .data(context)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .finish()
}

/// The schema in SDL, fields, arguments and enum items sorted (what `schema.graphql` holds).
pub fn sdl(schema: &ApiSchema) -> String {
    schema.sdl_with_options(
        SDLExportOptions::new()
            .sorted_fields()
            .sorted_arguments()
            .sorted_enum_items(),
    )
}

/// A schema for printing its SDL only: the resolvers' data is absent, so it must not execute.
pub fn schema_for_export() -> ApiSchema {
    Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}
