//! `POST /webhooks/orders`: the retailer's order system pushes each new order (or a
//! cancellation) as it happens, signed.
//!
//! The scheme (`API.md`): `X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<raw body>")>`. Any of the configured secrets verifies (two during a rotation); the
//! comparison is constant-time; a timestamp more than five minutes away from our clock is
//! refused, so a captured request cannot be replayed later. A bad signature or a stale
//! timestamp is 401 and records nothing. 200 comes only once the order is in the log, and again
//! for a duplicate (orders are idempotent on the client and order id); 422 for a body that parses
//! but names an unknown client or breaks a rule; 400 for a body that does not parse. With no
//! secret configured the route answers 404 saying how to turn it on. Secrets are never logged.
//! Orders through the webhook are live activity: their scores may trigger emails.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::client::{
    CancelOrder, ClientAction, ClientError, CreateUser, ImportedHistory, PlaceOrder,
};
use domain::values::{
    Categories, EmailAddress, ExternalId, Money, OrderId, UserName, ValidationError,
};
use hmac::{Hmac, Mac};
use projections::commands::{CommandError, CommandMetadata};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use super::AppState;

/// How far a signature's timestamp may be from our clock.
pub const TOLERANCE_SECS: i64 = 300;

/// The secrets a webhook accepts (comma-separated in the setting; any one verifies).
#[derive(Clone, Default)]
pub struct WebhookSecrets(Vec<Vec<u8>>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} secret(s), redacted)", self.0.len())
    }
}

impl WebhookSecrets {
    /// Parses `a,b` (blank entries are ignored; none: the webhook is off).
    pub fn parse(raw: &str) -> Self {
        Self(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        )
    }

    /// Whether any secret is set.
    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Checks an `X-Signature` header over `body` at `now`.
    ///
    /// # Errors
    /// Why the request is refused (said to the caller as is: it names no secret).
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        let header = header.ok_or("missing X-Signature header")?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
                Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or("X-Signature has no valid t=")?;
        if (now.timestamp() - timestamp).abs() > TOLERANCE_SECS {
            return Err("the signature's timestamp is more than 5 minutes from now");
        }
        if signatures.is_empty() {
            return Err("X-Signature has no valid v1=");
        }
        let signed_prefix = format!("{timestamp}.");
        for secret in &self.0 {
            for signature in &signatures {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
                mac.update(signed_prefix.as_bytes());
                mac.update(body);
                if mac.verify_slice(signature).is_ok() {
                    return Ok(());
                }
            }
        }
        Err("the signature does not match")
    }
}

/// The signature header value for `body` at `timestamp` under `secret` (for senders and tests).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The webhook routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/orders", post(orders))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewClient {
    name: String,
    email: String,
    #[serde(default)]
    preferred_categories: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OrderBody {
    external_id: String,
    order_id: Value,
    amount: Value,
    placed_at: DateTime<Utc>,
    #[serde(default)]
    categories: Vec<String>,
    client: Option<NewClient>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CancelBody {
    external_id: String,
    order_id: Value,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Body {
    Cancel { cancel: CancelBody },
    Order(OrderBody),
}

pub(crate) fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

pub(crate) fn refused(field: Option<&str>, message: impl std::fmt::Display) -> Response {
    answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({ "error": message.to_string(), "field": field }),
    )
}

fn invalid(error: &ValidationError) -> Response {
    refused(Some(&error.field), &error.message)
}

/// Text of an id or amount given as a JSON string or number.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn command_failed(error: CommandError) -> Response {
    match error {
        CommandError::Rejected(ClientError::Validation(v)) => invalid(&v),
        CommandError::Rejected(other) => refused(None, other),
        CommandError::Conflict => answer(
            StatusCode::CONFLICT,
            json!({ "error": "the client was changed by others at the same time; retry" }),
        ),
        CommandError::Unavailable(error) => {
            tracing::warn!(error = %format!("{error:#}"), "order webhook: database unavailable");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "the database cannot be reached; retry later" }),
            )
        }
        CommandError::Unexpected(error) => {
            tracing::error!(error = %format!("{error:#}"), "order webhook failed");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "internal error" }),
            )
        }
    }
}

async fn orders(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !state.order_webhook.is_enabled() {
        return answer(
            StatusCode::NOT_FOUND,
            json!({ "error": "the order webhook is off: set ORDER_WEBHOOK_SECRET to turn it on" }),
        );
    }
    let now = state.commands.clock().now();
    let signature = headers.get("x-signature").and_then(|v| v.to_str().ok());
    if let Err(why) = state.order_webhook.verify(signature, &body, now) {
        return answer(StatusCode::UNAUTHORIZED, json!({ "error": why }));
    }
    let parsed: Body = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("the body is not an order or a cancellation: {error}") }),
            )
        }
    };
    let metadata = CommandMetadata::for_actor("webhook:orders");
    match parsed {
        Body::Order(order) => place(&state, order, &metadata).await,
        Body::Cancel { cancel } => cancel_order(&state, cancel, &metadata).await,
    }
}

async fn place(state: &AppState, body: OrderBody, metadata: &CommandMetadata) -> Response {
    let external_id = match ExternalId::parse(&body.external_id) {
        Ok(id) => id,
        Err(e) => return invalid(&e),
    };
    let order = (|| {
        Ok::<_, ValidationError>(PlaceOrder {
            order_id: OrderId::parse(&text(&body.order_id).unwrap_or_default())?,
            amount: Money::parse(&text(&body.amount).unwrap_or_default(), "amount")?,
            placed_at: body.placed_at,
            categories: Categories::parse(&body.categories, "categories")?,
        })
    })();
    let order = match order {
        Ok(order) => order,
        Err(e) => return invalid(&e),
    };
    let user_id = match state
        .commands
        .resolve_external_id(external_id.as_str())
        .await
    {
        Ok(Some(id)) => id,
        Ok(None) => {
            let Some(client) = body.client else {
                return refused(
                    Some("externalId"),
                    format!(
                        "no client has the external id {:?}; send `client` to create one",
                        external_id.as_str()
                    ),
                );
            };
            let create = (|| {
                Ok::<_, ValidationError>(CreateUser {
                    id: Uuid::new_v4(),
                    name: UserName::parse(&client.name)?,
                    email: EmailAddress::parse(&client.email)?,
                    preferred_categories: Categories::parse(
                        &client.preferred_categories,
                        "preferredCategories",
                    )?,
                    history: ImportedHistory::default(),
                    external_id: Some(external_id.clone()),
                    client_since: None,
                    imported: false,
                })
            })();
            let create = match create {
                Ok(create) => create,
                Err(e) => return invalid(&e),
            };
            match state.commands.create_user(create, metadata).await {
                Ok(committed) => committed.user_id,
                // Created meanwhile by another delivery with other details: the client exists.
                Err(CommandError::Rejected(ClientError::AlreadyExists)) => {
                    match state
                        .commands
                        .resolve_external_id(external_id.as_str())
                        .await
                    {
                        Ok(Some(id)) => id,
                        Ok(None) => {
                            return refused(Some("externalId"), "the client could not be created")
                        }
                        Err(e) => return command_failed(e),
                    }
                }
                Err(e) => return command_failed(e),
            }
        }
        Err(e) => return command_failed(e),
    };
    let order_id = order.order_id.as_str().to_owned();
    let action = ClientAction::PlaceOrder(order);
    run(state, user_id, action, metadata, "recorded", &order_id).await
}

/// Runs `action` and answers 200 with `status` once the users view shows it.
async fn run(
    state: &AppState,
    user_id: Uuid,
    action: ClientAction,
    metadata: &CommandMetadata,
    status: &str,
    order_id: &str,
) -> Response {
    match state.commands.execute(user_id, action, metadata).await {
        Ok(committed) => {
            // Waits (a little) for the users view, so that a sender that reads back through
            // the API sees the write; it is in the log either way.
            let _ = state
                .read_models
                .users
                .wait_for(committed.position, std::time::Duration::from_secs(5))
                .await;
            answer(
                StatusCode::OK,
                json!({ "status": status, "userId": user_id, "orderId": order_id, "version": committed.version }),
            )
        }
        Err(e) => command_failed(e),
    }
}

async fn cancel_order(state: &AppState, body: CancelBody, metadata: &CommandMetadata) -> Response {
    let external_id = match ExternalId::parse(&body.external_id) {
        Ok(id) => id,
        Err(e) => return invalid(&e),
    };
    let order_id = match OrderId::parse(&text(&body.order_id).unwrap_or_default()) {
        Ok(id) => id,
        Err(e) => return invalid(&e),
    };
    if body
        .reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > 500)
    {
        return refused(Some("reason"), "must be at most 500 characters");
    }
    let user_id = match state
        .commands
        .resolve_external_id(external_id.as_str())
        .await
    {
        Ok(Some(id)) => id,
        Ok(None) => {
            return refused(
                Some("externalId"),
                format!("no client has the external id {:?}", external_id.as_str()),
            )
        }
        Err(e) => return command_failed(e),
    };
    let action = ClientAction::CancelOrder(CancelOrder {
        order_id: order_id.clone(),
        reason: body.reason,
    });
    run(
        state,
        user_id,
        action,
        metadata,
        "cancelled",
        order_id.as_str(),
    )
    .await
}
