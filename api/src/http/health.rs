//! Health: `/healthz` (liveness), `/readyz` (readiness) and `/api/health` (the seed's report,
//! plus projection lag). None of them needs a token, and none reveals a secret.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;

use crate::app::AppState;

/// `/healthz`, `/readyz` and `/api/health`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/health", get(api_health))
}

/// What the health report says.
#[derive(Debug, Clone)]
pub struct Report {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// `up` or `down`.
    pub database: &'static str,
    /// The email writer and its state.
    pub email_writer: String,
    /// Events the slowest consumer is behind the log (-1 when unknown).
    pub projection_lag: i64,
    /// Lag per consumer.
    pub consumers: Vec<(String, i64)>,
}

/// Builds the report: the database answers within a second, and how far consumers are behind.
pub async fn report(pool: &PgPool, email_writer: &(dyn Fn() -> String + Send + Sync)) -> Report {
    let ping = sqlx::query_scalar::<_, i32>("select 1").fetch_one(pool);
    let database_up = matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    );
    let consumers = if database_up {
        match tokio::time::timeout(
            Duration::from_secs(2),
            projections::log::consumer::lag(pool),
        )
        .await
        {
            Ok(Ok(lag)) => lag,
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let projection_lag = consumers
        .iter()
        .map(|(_, lag)| *lag)
        .max()
        .unwrap_or(if database_up { 0 } else { -1 });
    Report {
        status: if database_up { "ok" } else { "degraded" },
        database: if database_up { "up" } else { "down" },
        email_writer: email_writer(),
        projection_lag,
        consumers,
    }
}

/// The process is up and serving.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can do its work: the database answers within a second.
#[tracing::instrument(skip_all)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let ping = sqlx::query_scalar::<_, i32>("select 1").fetch_one(&state.pool);
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": "up" })),
        ),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness: database query failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "down" })),
            )
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer within a second");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "timeout" })),
            )
        }
    }
}

/// The seed's health shape: status, version, timestamp, dependencies; plus projection lag.
#[tracing::instrument(skip_all)]
async fn api_health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let report = report(&state.pool, state.email_writer.as_ref()).await;
    let code = if report.database == "up" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let consumers: serde_json::Map<String, serde_json::Value> = report
        .consumers
        .iter()
        .map(|(name, lag)| (name.clone(), json!(lag)))
        .collect();
    (
        code,
        Json(json!({
            "status": report.status,
            "version": env!("CARGO_PKG_VERSION"),
            "timestamp": state.commands.clock().now(),
            "dependencies": { "database": report.database, "emailWriter": report.email_writer },
            "projectionLag": report.projection_lag,
            "consumers": consumers,
        })),
    )
}
