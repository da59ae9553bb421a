//! Building the application from its configuration and running it until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use domain::client::ClientServices;
use projections::clock::{Clock, SystemClock};
use projections::commands::CommandBus;
use projections::engagement::process_manager::ProcessManagerSettings;
use projections::engagement::workers::WorkerSettings;
use projections::engagement::writer::template::TemplateWriter;
use projections::engagement::writer::ConfiguredWriter;
use projections::log::consumer::{ConsumerSettings, LogSignal};
use projections::runtime::EmailSettings;
use projections::scheduler::{RescoreSettings, Rescorer};
use projections::vault::erasure::Ledger;
use projections::vault::{MasterKey, Vault};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::graphql::auth::TokenStore;
use crate::graphql::{build_schema, ApiContext};
use crate::http::rate_limit::{RateLimit, RateLimiter};
use crate::http::response_cache::ResponseCache;
use crate::http::{self, AppState, Handles};
use crate::replicas::Replicas;
use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Everything `serve` runs, wired and ready.
pub struct App {
    state: AppState,
    cors_origins: Vec<HeaderValue>,
    shutdown_grace: Duration,
    metrics: Metrics,
    background: JoinSet<()>,
    stop: CancellationToken,
}

/// The inputs an [`App`] is built from (tests pass their own pool and clock).
pub struct AppParts {
    /// A migrated database.
    pub pool: PgPool,
    /// The keys of clients' personal data, under the master key.
    pub vault: Arc<Vault>,
    /// Where erasures are recorded besides the log (none: only in the log, from which
    /// `engagement erasures export` writes the ledger).
    pub erasure_ledger: Option<Ledger>,
    /// The aggregate's services.
    pub services: ClientServices,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// How long in-flight requests may take after shutdown is signalled.
    pub shutdown_grace: Duration,
    /// The time-passing rescore scheduler.
    pub rescore: RescoreSettings,
    /// Accepted bearer tokens.
    pub tokens: TokenStore,
    /// Origins allowed to call the API from a browser (none: same origin only).
    pub cors_origins: Vec<HeaderValue>,
    /// The process manager and email workers.
    pub email: EmailSettings,
    /// Requests per token (none: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Bytes of answers to view reads to keep (0: none).
    pub response_cache_bytes: usize,
    /// Secrets of `POST /webhooks/orders` (none: off).
    pub order_webhook: crate::http::webhooks::WebhookSecrets,
    /// Secrets of `POST /webhooks/email-events` (none: off).
    pub email_events_webhook: crate::http::webhooks::WebhookSecrets,
    /// The demo's fill, when serving one.
    pub demo: Option<Arc<crate::demo::DemoProgress>>,
    /// Where `GET /metrics` is served, if metrics are recorded at all.
    pub metrics: Metrics,
    /// Read replicas for queries (none: all on the primary).
    pub replicas: Arc<Replicas>,
}

/// Whether metrics are recorded, and where `GET /metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metrics {
    /// On the main listener, with a bearer token of any role.
    OnMain,
    /// On a listener of its own (`METRICS_LISTEN`); the main one has none.
    Apart,
    /// Nothing is recorded or served.
    Off,
}

impl AppParts {
    /// Parts with the system clock, default services and settings, sealing personal data
    /// under `master`.
    pub fn new(pool: PgPool, master: &MasterKey) -> Self {
        let pool_for_replicas = pool.clone();
        Self {
            pool,
            vault: Arc::new(Vault::new(master)),
            erasure_ledger: None,
            services: ClientServices::default(),
            clock: Arc::new(SystemClock),
            shutdown_grace: Duration::from_secs(10),
            rescore: RescoreSettings::default(),
            tokens: TokenStore::default(),
            cors_origins: Vec::new(),
            email: EmailSettings {
                writer: ConfiguredWriter::Template(TemplateWriter),
                workers: WorkerSettings::default(),
                process_manager: ProcessManagerSettings::default(),
                delivery: projections::engagement::delivery::DeliverySettings::off(),
                sender: None,
            },
            rate_limit: Some(RateLimit::default()),
            response_cache_bytes: 64 << 20,
            order_webhook: Default::default(),
            email_events_webhook: Default::default(),
            demo: None,
            metrics: Metrics::OnMain,
            replicas: Arc::new(Replicas::none(pool_for_replicas)),
        }
    }
}

impl App {
    /// Wires the application and starts its background work (the log's consumers), which
    /// runs until [`App::run`] stops it. Must be called inside a Tokio runtime.
    pub fn build(parts: AppParts) -> Self {
        if parts.metrics != Metrics::Off {
            http::metrics::install();
        }
        // Appends wake this process's readers directly and are announced to other instances
        // (see `projections::log::signal`).
        let signal = LogSignal::announcing(parts.pool.clone());
        let commands = CommandBus::announcing(
            parts.pool.clone(),
            parts.vault.clone(),
            parts.services,
            parts.clock,
            signal.clone(),
        );
        let stop = CancellationToken::new();
        let mut background = JoinSet::new();
        let read_models = projections::runtime::start(
            &parts.pool,
            &parts.vault,
            &ConsumerSettings::default(),
            &signal,
            &mut background,
            &stop,
        );
        let rescorer = Rescorer::new(
            parts.pool.clone(),
            commands.clone(),
            read_models.users.clone(),
            parts.rescore,
        );
        background.spawn(rescorer.run(stop.clone()));
        let live = projections::log::tail::start(
            parts.pool.clone(),
            parts.vault.clone(),
            read_models.signal.clone(),
            stop.clone(),
            &mut background,
        );
        let jobs_signal = Arc::new(tokio::sync::Notify::new());
        let emails = projections::runtime::start_emails(
            &parts.pool,
            commands.clone(),
            parts.email,
            &read_models,
            jobs_signal.clone(),
            &mut background,
            &stop,
        );
        let email_writer = emails.describe_writer.clone();
        if parts.replicas.any() {
            let checks = parts.replicas.spawn_checks();
            let stop_checks = stop.clone();
            background.spawn(async move {
                stop_checks.cancelled().await;
                checks.abort();
            });
        }
        let schema = build_schema(ApiContext {
            pool: parts.pool.clone(),
            commands: commands.clone(),
            read_models: read_models.clone(),
            live,
            email_writer: email_writer.clone(),
            emails: emails.clone(),
            jobs_signal,
            erasure_ledger: parts.erasure_ledger,
            demo: parts.demo,
            past: Arc::default(),
            replicas: parts.replicas.clone(),
        });
        Self {
            cors_origins: parts.cors_origins,
            state: AppState::new(Handles {
                pool: parts.pool,
                commands,
                read_models,
                schema,
                tokens: Arc::new(parts.tokens),
                email_writer,
                rate_limiter: parts.rate_limit.map(|l| Arc::new(RateLimiter::new(l))),
                parsed: Default::default(),
                order_webhook: parts.order_webhook,
                email_events_webhook: parts.email_events_webhook,
                emails,
                replicas: parts.replicas,
                response_cache: (parts.response_cache_bytes > 0)
                    .then(|| Arc::new(ResponseCache::new(parts.response_cache_bytes))),
            }),
            shutdown_grace: parts.shutdown_grace,
            metrics: parts.metrics,
            background,
            stop,
        }
    }

    /// What handlers see.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(self.cors_origins.clone()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-correlation-id"),
                HeaderName::from_static("x-read-after"),
            ])
            .expose_headers([HeaderName::from_static("x-read-position")]);
        let metrics = if self.metrics == Metrics::OnMain {
            http::metrics::router()
        } else {
            Router::new()
        };
        let routes = Router::new()
            .merge(http::health::router())
            .merge(metrics)
            .merge(http::graphql::router())
            .merge(http::playground::router())
            .merge(http::dashboard::router())
            .merge(http::webhooks::router())
            .merge(http::email_events::router())
            .merge(http::unsubscribe::router())
            .layer(cors)
            .layer(axum::middleware::map_response(http::retry_after))
            .layer(axum::middleware::map_response(http::security::headers));
        let routes = if self.metrics == Metrics::Off {
            routes
        } else {
            routes.layer(axum::middleware::from_fn(http::metrics::track))
        };
        routes
            .layer(axum::middleware::from_fn(http::request::span))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish (up to the grace period) and only then stops the background work
    /// (in-flight mutations wait on the consumers to read their own writes).
    ///
    /// # Errors
    /// The listener fails.
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let draining = CancellationToken::new();
        let signalled = draining.clone();
        let server = axum::serve(listener, self.router()).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutdown signalled: no new connections, finishing in-flight requests");
            signalled.cancel();
        });
        let grace = self.shutdown_grace;
        let served = tokio::select! {
            result = server => result.context("serving HTTP"),
            () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests outlived the grace period");
                Ok(())
            }
        };
        self.stop.cancel();
        // Consumers finish their current batch (one transaction) and return.
        while let Some(joined) = self.background.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a background task panicked");
            }
        }
        tracing::info!("stopped");
        served
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
