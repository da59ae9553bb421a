//! Building the application from its configuration and running it until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use domain::client::ClientServices;
use projections::clock::{Clock, SystemClock};
use projections::commands::CommandBus;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::http;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// The command path.
    pub commands: CommandBus,
}

/// Everything `serve` runs, wired and ready.
#[derive(Debug)]
pub struct App {
    state: AppState,
    shutdown_grace: Duration,
}

/// The inputs an [`App`] is built from (tests pass their own pool and clock).
#[derive(Debug)]
pub struct AppParts {
    /// A migrated database.
    pub pool: PgPool,
    /// The aggregate's services.
    pub services: ClientServices,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// How long in-flight requests may take after shutdown is signalled.
    pub shutdown_grace: Duration,
}

impl AppParts {
    /// Parts with the system clock and default services.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            services: ClientServices::default(),
            clock: Arc::new(SystemClock),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl App {
    /// Wires the application.
    pub fn build(parts: AppParts) -> Self {
        let commands = CommandBus::new(parts.pool.clone(), parts.services, parts.clock);
        Self {
            state: AppState {
                pool: parts.pool,
                commands,
            },
            shutdown_grace: parts.shutdown_grace,
        }
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(http::health::router())
            .layer(TraceLayer::new_for_http())
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish (up to the grace period) and stops background work.
    ///
    /// # Errors
    /// The listener fails.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let router = self.router();
        let signalled = stop.clone();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutdown signalled: no new connections, finishing in-flight requests");
            signalled.cancel();
        });
        let grace = self.shutdown_grace;
        let stopped = stop.clone();
        tokio::select! {
            result = server => result.context("serving HTTP")?,
            () = async move { stopped.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests outlived the grace period");
            }
        }
        stop.cancel();
        tracing::info!("stopped");
        Ok(())
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
