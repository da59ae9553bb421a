//! HTTP routes; each module exports its own `router()` over the [`AppState`] defined here.

pub mod dashboard;
pub mod email_events;
pub mod graphql;
pub mod health;
pub mod metrics;
pub mod parsed;
pub mod playground;
pub mod rate_limit;
pub mod request;
pub mod response_cache;
pub mod security;
pub mod unsubscribe;
pub mod webhooks;

use std::sync::Arc;

use projections::commands::CommandBus;
use projections::runtime::ReadModels;
use sqlx::PgPool;

use crate::graphql::auth::TokenStore;
use crate::graphql::ApiSchema;
use rate_limit::RateLimiter;
use response_cache::ResponseCache;

/// Seconds a caller is asked to wait after a 503 (a database restart takes a few).
const UNAVAILABLE_RETRY_AFTER: &str = "2";

/// Every 503 (a dependency is down) tells the caller when to try again, unless its handler
/// said so already.
pub async fn retry_after(mut response: axum::response::Response) -> axum::response::Response {
    if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .entry(axum::http::header::RETRY_AFTER)
            .or_insert(axum::http::HeaderValue::from_static(
                UNAVAILABLE_RETRY_AFTER,
            ));
    }
    response
}

/// What every handler can reach. axum clones it for every request and every middleware that
/// takes it, so it is one shared pointer (its handles were cloned field by field: some forty
/// reference counts up and down per clone, about 3% of the server's CPU under `placeOrder`).
#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl AppState {
    /// The state over `handles`.
    pub fn new(handles: Handles) -> Self {
        Self(Arc::new(handles))
    }
}

impl std::ops::Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// The handles in [`AppState`].
pub struct Handles {
    /// The database.
    pub pool: PgPool,
    /// The command path.
    pub commands: CommandBus,
    /// The running read models (wait on them for read-your-writes).
    pub read_models: ReadModels,
    /// The GraphQL schema.
    pub schema: ApiSchema,
    /// Accepted bearer tokens.
    pub tokens: Arc<TokenStore>,
    /// The email writer, as health reports it.
    pub email_writer: Arc<dyn Fn() -> String + Send + Sync>,
    /// Requests per token (none: unlimited).
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Answers to view reads, kept until the views move (none: off).
    pub response_cache: Option<Arc<ResponseCache>>,
    /// Parsed GraphQL documents, by their text.
    pub parsed: parsed::ParsedQueries,
    /// The order webhook's secrets (none: it is off).
    pub order_webhook: webhooks::WebhookSecrets,
    /// The email-events webhook's secrets (none: it is off).
    pub email_events_webhook: webhooks::WebhookSecrets,
    /// The delivery in force and the mail server.
    pub emails: projections::runtime::EmailRuntime,
    /// Read replicas, and where each query runs.
    pub replicas: Arc<crate::replicas::Replicas>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}
