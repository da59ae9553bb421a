//! `POST /webhooks/email-events`: the mail provider's reports about sent emails, signed like
//! every webhook (`webhooks::WebhookSecrets`). Most relays accept a message and bounce it
//! later; this is where that news arrives. Matched by Message-ID (ours name the email): a
//! permanent bounce suppresses the client's address, a complaint unsubscribes the client, a
//! delivery is acknowledged and records nothing. 200 only once the effect is in the log, and
//! again for a duplicate (each report is idempotent on the email).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use domain::client::{ClientAction, DeliveryAction};
use projections::commands::CommandMetadata;
use projections::engagement::delivery::{sends, smtp};
use serde::Deserialize;
use serde_json::json;

use super::webhooks::{answer, command_failed, refused};
use super::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/email-events", post(email_events))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Kind {
    Delivered,
    Bounced,
    Complained,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    message_id: String,
    event: Kind,
    #[serde(default)]
    permanent: bool,
}

async fn email_events(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !state.email_events_webhook.is_enabled() {
        return answer(
            StatusCode::NOT_FOUND,
            json!({ "error": "the email-events webhook is off: set EMAIL_EVENTS_WEBHOOK_SECRET to turn it on" }),
        );
    }
    let now = state.commands.clock().now();
    let signature = headers.get("x-signature").and_then(|v| v.to_str().ok());
    if let Err(why) = state.email_events_webhook.verify(signature, &body, now) {
        return answer(StatusCode::UNAUTHORIZED, json!({ "error": why }));
    }
    let report: Report = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("the body is not an email event: {error}") }),
            )
        }
    };
    let Some(email_id) = smtp::email_of_message_id(&report.message_id) else {
        return refused(Some("messageId"), "not a Message-ID this service sent");
    };
    let user_id = match sends::recipient(&state.pool, email_id).await {
        Ok(Some(user_id)) => user_id,
        Ok(None) => return refused(Some("messageId"), "no email was sent with this Message-ID"),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "email events: database unavailable");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "the database cannot be reached; retry later" }),
            );
        }
    };
    let action = match report.event {
        Kind::Delivered => {
            return answer(
                StatusCode::OK,
                json!({ "status": "noted", "emailId": email_id }),
            )
        }
        Kind::Bounced => DeliveryAction::Bounced {
            email_id,
            permanent: report.permanent,
        },
        Kind::Complained => DeliveryAction::Complained { email_id },
    };
    let metadata = CommandMetadata::for_actor("webhook:email-events");
    match state
        .commands
        .execute(user_id, ClientAction::Deliver(action), &metadata)
        .await
    {
        Ok(committed) => answer(
            StatusCode::OK,
            json!({ "status": "recorded", "emailId": email_id, "userId": user_id, "version": committed.version }),
        ),
        Err(e) => command_failed(e),
    }
}
