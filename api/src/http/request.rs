//! Every request runs in a span of its own: its id, its route and its trace id are on every
//! log line written while it runs, and with OpenTelemetry on it is the trace's root (or
//! continues the caller's W3C `traceparent`). The id is answered in `X-Request-Id` and kept in
//! the metadata of the events the request writes.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use projections::trace;
use tracing::Instrument as _;
use uuid::Uuid;

/// The header carrying the request's id, set here on the request (whatever the caller sent)
/// and on the answer.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps a request in its span (see the module's text).
pub async fn span(mut request: Request, next: Next) -> Response {
    let request_id = Uuid::new_v4().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = request.method().clone();
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        status = tracing::field::Empty,
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
    );
    trace::follow(&span, incoming.as_deref());
    // With tracing on, the span's own trace (the caller's, when it sent one); off, the
    // caller's trace id, or a fresh one: either way, every line of this request shares one.
    let trace_id = trace::traceparent_of(&span)
        .or(incoming)
        .and_then(|tp| trace::trace_id_of(&tp))
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    span.record("trace_id", trace_id.as_str());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "request answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}
