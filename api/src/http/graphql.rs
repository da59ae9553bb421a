//! `POST /graphql`, `GET /graphql` (the playground, or a query over GET) and
//! `GET /graphql/ws` (subscriptions).
//!
//! Hardening, after the OWASP GraphQL cheat sheet: a bearer token on every operation; POST
//! bodies must be JSON (a `text/plain` form post from another site is refused: CSRF); bodies
//! over 1 MB are answered 413; batched requests are refused; mutations never run over GET;
//! depth, complexity, directive and alias limits; a request timeout.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::Data;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use crate::graphql::auth::Principal;
use crate::graphql::errors::ApiError;
use crate::graphql::loaders::Loaders;
use crate::graphql::{ReadPool, RequestMeta};
use crate::http::metrics::GraphqlOutcome;
use crate::http::response_cache::{self, Recorder};
use crate::replicas::Lsn;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most aliased fields in one document.
pub const MAX_ALIASES: usize = 30;
/// Longest a request may run.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a subscription connection is pinged.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// graphql-transport-ws: connection_init refused (no or a wrong token).
const CLOSE_FORBIDDEN: u16 = 4403;
/// Connection refused: the token is over its request budget.
const CLOSE_TOO_MANY_REQUESTS: u16 = 4429;

/// The GraphQL routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/graphql", get(get_graphql).post(post_graphql))
        .route("/graphql/ws", get(websocket))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// A GraphQL-shaped error response with an HTTP status.
fn refuse(status: StatusCode, error: &ApiError) -> Response {
    let error = error.to_graphql();
    let body =
        json!({ "errors": [ { "message": error.message, "extensions": error.extensions } ] });
    (status, Json(body)).into_response()
}

fn principal(state: &AppState, headers: &HeaderMap) -> Option<Principal> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.tokens.from_header(header)
}

fn request_meta(headers: &HeaderMap) -> RequestMeta {
    let correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned);
    // Set by the request's span (`http::request`), whatever the caller sent.
    let request_id = headers
        .get(&crate::http::request::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    RequestMeta {
        request_id,
        correlation_id,
    }
}

fn count_aliases(set: &SelectionSet, doc: &ExecutableDocument, depth: usize) -> usize {
    if depth > 64 {
        return 0;
    }
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) => {
                usize::from(f.node.alias.is_some())
                    + count_aliases(&f.node.selection_set.node, doc, depth + 1)
            }
            Selection::InlineFragment(f) => {
                count_aliases(&f.node.selection_set.node, doc, depth + 1)
            }
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .map_or(0, |frag| {
                    count_aliases(&frag.node.selection_set.node, doc, depth + 1)
                }),
        })
        .sum()
}

/// Checks what the schema's own limits do not: aliases, and that GET carries no mutation.
/// `Ok(true)` when the request reads only the views (its answer may be kept).
fn precheck(
    request: &async_graphql::Request,
    doc: Option<&ExecutableDocument>,
    over_get: bool,
) -> Result<bool, ApiError> {
    let Some(doc) = doc else {
        // Let the executor report the syntax error with its position.
        return Ok(false);
    };
    let mut aliases = 0;
    for (name, op) in doc.operations.iter() {
        aliases += count_aliases(&op.node.selection_set.node, doc, 0);
        let selected = request
            .operation_name
            .as_deref()
            .is_none_or(|wanted| name.is_some_and(|n| n.as_str() == wanted));
        if over_get && selected && op.node.ty != OperationType::Query {
            return Err(ApiError::validation(
                "query",
                "only queries may be sent over GET; use POST",
            ));
        }
    }
    if aliases > MAX_ALIASES {
        return Err(ApiError::validation(
            "query",
            format!("at most {MAX_ALIASES} aliases per request"),
        ));
    }
    Ok(response_cache::reads_only_views(
        doc,
        request.operation_name.as_deref(),
    ))
}

/// What identifies an answer: the caller's role, and the request itself.
fn cache_key(principal: &Principal, request: &async_graphql::Request) -> String {
    let variables = serde_json::to_string(&request.variables).unwrap_or_default();
    format!(
        "{}\n{}\n{variables}\n{}",
        principal.role.as_str(),
        request.operation_name.as_deref().unwrap_or(""),
        request.query
    )
}

/// A JSON answer, saying whether it came from the cache, and what it was for the metrics.
fn json_answer(body: Bytes, cache: &'static str, outcome: GraphqlOutcome) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-cache"), cache),
        ],
        body,
    )
        .into_response();
    if outcome.outcome == "UNAVAILABLE" {
        // A dependency is down: 503 (with `Retry-After`, see `http::retry_after`), which
        // HTTP clients and proxies know to retry. The body is the same GraphQL answer.
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response.extensions_mut().insert(outcome);
    response
}

/// The type of the operation a request runs (`query` when it cannot be told: a syntax error).
fn operation_type(doc: Option<&ExecutableDocument>, wanted: Option<&str>) -> &'static str {
    let ty = doc.and_then(|doc| {
        doc.operations
            .iter()
            .find(|(name, _)| wanted.is_none_or(|w| name.is_some_and(|n| n.as_str() == w)))
            .map(|(_, op)| op.node.ty)
    });
    match ty {
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        _ => "query",
    }
}

/// Refuses a caller over their request budget, with `Retry-After` in whole seconds.
fn over_limit(state: &AppState, principal: &Principal) -> Option<Response> {
    let wait = state
        .rate_limiter
        .as_ref()?
        .check(&principal.actor, std::time::Instant::now())
        .err()?;
    let mut response = refuse(StatusCode::TOO_MANY_REQUESTS, &ApiError::RateLimited);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from(seconds.max(1)),
    );
    Some(response)
}

/// Checks and runs a request (`over_get`: it came as a GET).
async fn execute(
    state: &AppState,
    principal: Principal,
    headers: &HeaderMap,
    request: async_graphql::Request,
    over_get: bool,
) -> Response {
    let doc = state.parsed.parse(&request.query);
    let reads_only_views = match precheck(&request, doc.as_deref(), over_get) {
        Ok(views) => views,
        Err(error) if over_get => return refuse(StatusCode::METHOD_NOT_ALLOWED, &error),
        Err(error) => return refuse(StatusCode::BAD_REQUEST, &error),
    };
    if let Some(refused) = over_limit(state, &principal) {
        return refused;
    }
    let operation = operation_type(doc.as_deref(), request.operation_name.as_deref());
    let read_after = match read_after(headers) {
        Ok(after) => after,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, &error),
    };
    let meta = request_meta(headers);
    // The views' token is read before executing: an answer computed while they moved is kept
    // under the old token, and dropped when the cache moves past what it depends on.
    let mut kept = None;
    let recorder = Arc::new(Recorder::default());
    if let (Some(cache), true) = (&state.response_cache, reads_only_views) {
        match projections::log::consumer::views_token(&state.pool).await {
            Ok(token) if cache.advance(&state.pool, &token).await => {
                let key = cache_key(&principal, &request);
                if let Some(answer) = cache.get(&token, &key) {
                    let outcome = GraphqlOutcome {
                        operation,
                        outcome: "ok",
                    };
                    return json_answer(answer, "hit", outcome);
                }
                kept = Some((cache, token, key));
            }
            // Read before another request moved the cache on: answered, not kept.
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "reading the views' checkpoints; answering uncached")
            }
        }
    }
    // Queries go to a replica that has what they must see, or to the primary through the
    // queries' own pool (sized to the machine); the rest to the primary through the pool.
    let target = if operation == "query" {
        Some(state.replicas.target(read_after).await)
    } else {
        None
    };
    // Data every run of the request carries; a query on a replica keeps a copy of itself, to
    // run again on the primary should the replica fail under it.
    let prepare = |mut run: async_graphql::Request, pool: Option<sqlx::PgPool>| {
        run = run.data(principal.clone()).data(meta.clone());
        let loaders_pool = pool.clone().unwrap_or_else(|| state.pool.clone());
        if let Some(pool) = pool {
            run = run.data(ReadPool(pool));
        }
        run = run.data(Loaders::recording(
            loaders_pool,
            state.commands.vault().clone(),
            Arc::clone(&recorder),
        ));
        if let Some(doc) = &doc {
            run.set_parsed_query((**doc).clone());
        }
        tokio::time::timeout(REQUEST_TIMEOUT, state.schema.execute(run))
    };
    let again = target
        .as_ref()
        .filter(|t| t.is_replica())
        .map(|_| copy_of(&request));
    let mut executed = prepare(request, target.as_ref().map(|t| t.pool.clone())).await;
    if let (Some(target), Some(again), Ok(response)) = (&target, again, &executed) {
        if answered_unavailable(response) {
            // The replica failed under this query: the same query on the primary, now.
            state.replicas.failed(target);
            executed = prepare(again, Some(state.pool.clone())).await;
        }
    }
    let position = if operation == "mutation" && state.replicas.any() {
        state.replicas.primary_position().await.ok()
    } else {
        None
    };
    let answered = match executed {
        Ok(mut response) => {
            // Errors raised before any resolver ran (syntax, unknown fields, depth, complexity)
            // come without a code; they are all faults of the request.
            for error in &mut response.errors {
                let extensions = error.extensions.get_or_insert_with(Default::default);
                if extensions.get("code").is_none() {
                    extensions.set("code", "VALIDATION");
                }
            }
            let body = match serde_json::to_vec(&response) {
                Ok(body) => Bytes::from(body),
                Err(error) => {
                    return refuse(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &ApiError::Internal(
                            anyhow::Error::new(error).context("encoding a response"),
                        ),
                    )
                }
            };
            let outcome = GraphqlOutcome {
                operation,
                outcome: response
                    .errors
                    .iter()
                    .find_map(|e| e.extensions.as_ref()?.get("code"))
                    .map_or("ok", |code| match code {
                        async_graphql::Value::String(code) => GraphqlOutcome::outcome_of(code),
                        _ => "INTERNAL",
                    }),
            };
            match kept {
                Some((cache, token, key)) if response.errors.is_empty() => {
                    cache.put(&token, key, body.clone(), recorder.take());
                    json_answer(body, "miss", outcome)
                }
                _ => json_answer(body, "bypass", outcome),
            }
        }
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &ApiError::Internal(anyhow::anyhow!(
                "request timed out after {REQUEST_TIMEOUT:?}"
            )),
        ),
    };
    match position {
        // Where the primary stood once the mutation was done: a later query sent with it in
        // `X-Read-After` sees the mutation, wherever it runs.
        Some(position) => {
            let mut answered = answered;
            if let Ok(value) = axum::http::HeaderValue::from_str(&position.to_string()) {
                answered
                    .headers_mut()
                    .insert(header::HeaderName::from_static("x-read-position"), value);
            }
            answered
        }
        None => answered,
    }
}

/// `request` as it came (its text, operation, variables and extensions), without the data
/// added to it for running.
fn copy_of(request: &async_graphql::Request) -> async_graphql::Request {
    let mut copy =
        async_graphql::Request::new(request.query.clone()).variables(request.variables.clone());
    copy.operation_name.clone_from(&request.operation_name);
    copy.extensions.clone_from(&request.extensions);
    copy
}

/// Whether `response` says a database did not answer.
fn answered_unavailable(response: &async_graphql::Response) -> bool {
    response.errors.iter().any(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .is_some_and(
                |code| matches!(code, async_graphql::Value::String(c) if c == "UNAVAILABLE"),
            )
    })
}

/// The log position a query must see (`X-Read-After`, as `X-Read-Position` gave it).
fn read_after(headers: &HeaderMap) -> Result<Option<Lsn>, ApiError> {
    let Some(value) = headers.get("x-read-after") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(Lsn::parse)
        .map(Some)
        .ok_or_else(|| {
            ApiError::validation(
                "X-Read-After",
                "must be a position as X-Read-Position gives it (e.g. 0/16B3748)",
            )
        })
}

// The request's span (`http::request`) is this handler's span.
async fn post_graphql(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" && media != "application/graphql-response+json" {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &ApiError::validation("Content-Type", "POST bodies must be application/json"),
        );
    }
    let Some(principal) = principal(&state, &headers) else {
        return refuse(StatusCode::UNAUTHORIZED, &ApiError::Unauthenticated);
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &ApiError::validation("body", format!("not JSON: {e}")),
            )
        }
    };
    if value.is_array() {
        return refuse(
            StatusCode::BAD_REQUEST,
            &ApiError::validation("body", "batched requests are not supported"),
        );
    }
    let request: async_graphql::Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &ApiError::validation("body", format!("not a GraphQL request: {e}")),
            )
        }
    };
    execute(&state, principal, &headers, request, false).await
}

/// Query-string form of a GraphQL request.
#[derive(Debug, serde::Deserialize)]
struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
}

async fn get_graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlQuery(params): UrlQuery<GetParams>,
) -> Response {
    let Some(query) = params.query else {
        return crate::http::playground::response("/graphql", "/graphql/ws");
    };
    let Some(principal) = principal(&state, &headers) else {
        return refuse(StatusCode::UNAUTHORIZED, &ApiError::Unauthenticated);
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = params.variables {
        match serde_json::from_str::<serde_json::Value>(&variables) {
            Ok(v) => request = request.variables(async_graphql::Variables::from_json(v)),
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    &ApiError::validation("variables", "not JSON"),
                )
            }
        }
    }
    execute(&state, principal, &headers, request, true).await
}

#[derive(Debug, serde::Deserialize)]
struct WsParams {
    token: Option<String>,
}

/// Subscriptions over WebSocket (graphql-transport-ws, and the legacy graphql-ws). The token
/// comes in `connection_init` (`{"Authorization": "Bearer ..."}` or `{"token": "..."}`) or
/// as `?token=` on the URL.
async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlQuery(params): UrlQuery<WsParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find_map(|p| p.parse::<WebSocketProtocols>().ok())
        })
        .unwrap_or(WebSocketProtocols::GraphQLWS);
    let from_url = params.token.and_then(|t| state.tokens.authenticate(&t));
    let from_header = principal(&state, &headers);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve_socket(socket, state, protocol, from_url.or(from_header)))
}

async fn serve_socket(
    socket: WebSocket,
    state: AppState,
    protocol: WebSocketProtocols,
    pre_authenticated: Option<Principal>,
) {
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|message| futures::future::ready(message.is_ok()))
        .filter_map(|message| async move {
            match message {
                Ok(Message::Text(text)) => Some(text.to_string()),
                Ok(Message::Binary(bytes)) => String::from_utf8(bytes.to_vec()).ok(),
                _ => None,
            }
        });
    let tokens = state.tokens.clone();
    let limiter = state.rate_limiter.clone();
    // async-graphql closes a refused connection_init with 1002 (protocol error); the
    // graphql-transport-ws protocol says 4403 (forbidden). The refusal leaves its code here.
    let refusal = Arc::new(OnceLock::<u16>::new());
    let refused = refusal.clone();
    let on_init = move |payload: serde_json::Value| async move {
        let token = payload
            .get("Authorization")
            .or_else(|| payload.get("authorization"))
            .and_then(|v| v.as_str())
            .map(|v| {
                v.trim_start_matches("Bearer ")
                    .trim_start_matches("bearer ")
                    .to_owned()
            })
            .or_else(|| {
                payload
                    .get("token")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            });
        let principal = token
            .and_then(|t| tokens.authenticate(&t))
            .or(pre_authenticated);
        match principal {
            // A connection counts as one request against the caller's budget.
            Some(p)
                if limiter
                    .as_ref()
                    .is_some_and(|l| l.check(&p.actor, std::time::Instant::now()).is_err()) =>
            {
                let _ = refused.set(CLOSE_TOO_MANY_REQUESTS);
                Err(ApiError::RateLimited.to_graphql())
            }
            Some(p) => {
                let mut data = Data::default();
                data.insert(p);
                Ok(data)
            }
            None => {
                let _ = refused.set(CLOSE_FORBIDDEN);
                Err(ApiError::Unauthenticated.to_graphql())
            }
        }
    };
    let mut graphql = Box::pin(
        async_graphql::http::WebSocket::new(state.schema.clone(), input, protocol)
            .on_connection_init(on_init),
    );
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        tokio::select! {
            message = graphql.next() => match message {
                Some(WsMessage::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    let code = refusal.get().copied().unwrap_or(code);
                    let frame = axum::extract::ws::CloseFrame { code, reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                None => break,
            },
            _ = keep_alive.tick() => {
                let ping = match protocol {
                    WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
                    WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
                };
                if sink.send(Message::Text(ping.into())).await.is_err() {
                    break;
                }
            }
        }
    }
}
