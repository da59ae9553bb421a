//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;

/// `/healthz` and `/readyz`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
