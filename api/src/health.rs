//! The health report: whether the database answers and how far the log's consumers are
//! behind. Both `/api/health` and the GraphQL `health` field show it.

use std::time::Duration;

use sqlx::PgPool;

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
    let ping = projections::db::ping(pool);
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
