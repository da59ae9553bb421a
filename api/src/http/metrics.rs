//! `GET /metrics` (Prometheus text format) and the HTTP request metrics.
//!
//! One Prometheus recorder per process, installed on first use: everything the service
//! records through the `metrics` facade (commands, events, LLM calls, sends; see
//! `projections::metrics`) lands in it. Gauges that describe the database (consumer lag, the
//! job and send queues) are read when scraped, so an idle service costs nothing between
//! scrapes. Durations are real histograms with buckets chosen for each kind of work.
//!
//! By default `/metrics` is on the main listener and wants a bearer token of any role (a
//! scrape config carries one); `METRICS_LISTEN` serves it on an address of its own, without
//! a token, for a private network, and the main listener then has none.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// HTTP requests answered, by `route`, `operation` (`query`, `mutation`, `subscription`; `none`
/// for routes other than GraphQL and for requests refused before one was known) and `outcome`.
pub const HTTP_REQUESTS: &str = "engagement_http_requests_total";
/// Time to answer an HTTP request, by `route` and `operation`.
pub const HTTP_DURATION: &str = "engagement_http_request_duration_seconds";
/// Database connections by `state` (`in_use`, `idle`).
pub const DB_POOL_CONNECTIONS: &str = "engagement_db_pool_connections";
/// The most connections the pool may open.
pub const DB_POOL_MAX: &str = "engagement_db_pool_max_connections";
/// Always 1, with the running `version`.
pub const BUILD_INFO: &str = "engagement_build_info";

/// The outcomes of a request: `ok`, or the `extensions.code` of its first error (for routes
/// other than GraphQL, the code its HTTP status stands for).
const OUTCOMES: [&str; 9] = [
    "ok",
    "VALIDATION",
    "NOT_FOUND",
    "CONFLICT",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "RATE_LIMITED",
    "UNAVAILABLE",
    "INTERNAL",
];

/// What a GraphQL answer was, left on its response for the request metrics.
#[derive(Debug, Clone, Copy)]
pub struct GraphqlOutcome {
    /// `query`, `mutation` or `subscription`.
    pub operation: &'static str,
    /// `ok` or an error code.
    pub outcome: &'static str,
}

impl GraphqlOutcome {
    /// The outcome label for an error code (only known codes become labels).
    pub fn outcome_of(code: &str) -> &'static str {
        OUTCOMES
            .iter()
            .find(|known| **known == code)
            .copied()
            .unwrap_or("INTERNAL")
    }
}

/// Buckets for request and command durations: 1 ms to 10 s.
const FAST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for LLM calls: 100 ms to 2 minutes.
const LLM_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

/// The process's recorder, installed on first use.
struct Recorder {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static RECORDER: OnceLock<Option<Recorder>> = OnceLock::new();

fn recorder() -> Option<&'static Recorder> {
    RECORDER
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(projections::metrics::LLM_DURATION.to_owned()),
                    LLM_BUCKETS,
                )
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), FAST_BUCKETS))
                .map(PrometheusBuilder::build_recorder);
            let recorder = match built {
                Ok(recorder) => recorder,
                Err(error) => {
                    tracing::error!(%error, "metrics: cannot build the Prometheus recorder");
                    return None;
                }
            };
            let handle = recorder.handle();
            if let Err(error) = metrics::set_global_recorder(recorder) {
                tracing::error!(%error, "metrics: another recorder is installed; /metrics stays empty");
                return None;
            }
            let process = metrics_process::Collector::default();
            process.describe();
            register();
            Some(Recorder { handle, process })
        })
        .as_ref()
}

/// Installs the recorder (once per process) and sets every known series to zero.
pub fn install() {
    let _ = recorder();
}

fn register() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route, GraphQL operation type and outcome."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "Database connections of this process, by state."
    );
    describe_gauge!(
        DB_POOL_MAX,
        Unit::Count,
        "The most database connections this process may open."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the labels say which build is running."
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for operation in ["query", "mutation", "subscription"] {
        for outcome in OUTCOMES {
            counter!(HTTP_REQUESTS, "route" => "/graphql", "operation" => operation, "outcome" => outcome)
                .absolute(0);
        }
        let _ = metrics::histogram!(HTTP_DURATION, "route" => "/graphql", "operation" => operation);
    }
    for state in ["in_use", "idle"] {
        gauge!(DB_POOL_CONNECTIONS, "state" => state).set(0.0);
    }
    gauge!(DB_POOL_MAX).set(0.0);
    projections::metrics::register();
    projections::observe::register();
}

/// The outcome label an HTTP status stands for, on routes other than GraphQL.
fn outcome_of_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        // 101 is a subscription's WebSocket opening.
        100..=399 => "ok",
        401 => "UNAUTHENTICATED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        409 => "CONFLICT",
        429 => "RATE_LIMITED",
        503 => "UNAVAILABLE",
        400..=499 => "VALIDATION",
        _ => "INTERNAL",
    }
}

/// Counts and times every request. The route is the matched pattern
/// (`/unsubscribe/{token}`), never the path a caller sent.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed();
    let (operation, outcome) = match response.extensions().get::<GraphqlOutcome>() {
        Some(graphql) => (graphql.operation, graphql.outcome),
        None => ("none", outcome_of_status(response.status())),
    };
    counter!(HTTP_REQUESTS, "route" => route.clone(), "operation" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "operation" => operation)
        .record(took.as_secs_f64());
    response
}

/// `GET /metrics` on the main listener: any role's bearer token.
async fn scrape_with_token(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.tokens.from_header(authorization).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required\n",
        )
            .into_response();
    }
    scrape(&state.pool).await
}

/// `GET /metrics` on its own listener: no token.
async fn scrape_open(State(pool): State<sqlx::PgPool>) -> Response {
    scrape(&pool).await
}

/// Reads the database's gauges (within a second; a database that does not answer leaves them
/// as they were, and the rest is still served) and renders everything.
async fn scrape(pool: &sqlx::PgPool) -> Response {
    let Some(recorder) = recorder() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded\n",
        )
            .into_response();
    };
    match tokio::time::timeout(Duration::from_secs(1), projections::observe::database(pool)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(error = %format!("{error:#}"), "metrics: reading the database's gauges failed")
        }
        Err(_) => tracing::warn!("metrics: the database's gauges took over a second; skipped"),
    }
    let idle = pool.num_idle() as f64;
    let open = f64::from(pool.size());
    gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set((open - idle).max(0.0));
    gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    gauge!(DB_POOL_MAX).set(f64::from(pool.options().get_max_connections()));
    recorder.process.collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        recorder.handle.render(),
    )
        .into_response()
}

/// `/metrics` for the main listener (token required).
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape_with_token))
}

/// `/metrics` alone, without a token, for `METRICS_LISTEN`.
pub fn open_router(pool: sqlx::PgPool) -> Router {
    Router::new()
        .route("/metrics", get(scrape_open))
        .with_state(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_stand_for_the_codes_of_the_api() {
        for (status, outcome) in [
            (101, "ok"),
            (200, "ok"),
            (304, "ok"),
            (400, "VALIDATION"),
            (401, "UNAUTHENTICATED"),
            (403, "FORBIDDEN"),
            (404, "NOT_FOUND"),
            (409, "CONFLICT"),
            (413, "VALIDATION"),
            (422, "VALIDATION"),
            (429, "RATE_LIMITED"),
            (500, "INTERNAL"),
            (503, "UNAVAILABLE"),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(outcome_of_status(status), outcome, "{status}");
        }
        assert_eq!(GraphqlOutcome::outcome_of("CONFLICT"), "CONFLICT");
        assert_eq!(GraphqlOutcome::outcome_of("anything else"), "INTERNAL");
    }
}
