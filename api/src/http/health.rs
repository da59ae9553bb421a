//! Health: `/healthz` (liveness), `/readyz` (readiness) and `/api/health` (the seed's report,
//! plus projection lag). None of them needs a token, and none reveals a secret.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

/// `/healthz`, `/readyz` and `/api/health`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/health", get(api_health))
}

/// The process is up and serving.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can do its work: the database answers within a second.
#[tracing::instrument(skip_all)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let ping = projections::db::ping(&state.pool);
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
    let report = crate::health::report(&state.pool, state.email_writer.as_ref()).await;
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
            "dependencies": {
                "database": report.database,
                "emailWriter": report.email_writer,
                "emailDelivery": state.emails.delivery.mode.as_str(),
                "mailServer": state.emails.mail_server,
                "replicas": state.replicas.health(),
            },
            "projectionLag": report.projection_lag,
            "consumers": consumers,
        })),
    )
}
