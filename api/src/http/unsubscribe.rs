//! `GET|POST /unsubscribe/{token}`: RFC 8058 one-click unsubscribe.
//!
//! Every sent email carries `List-Unsubscribe: <PUBLIC_BASE_URL/unsubscribe/TOKEN>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`; mail clients POST there (form-urlencoded
//! or multipart), and the visible link in the body opens the GET page. The token (see
//! `projections::engagement::delivery::unsubscribe`) names the client and the email and cannot be
//! forged, so no login or cookie is needed and none is set.
//!
//! - POST records `UserUnsubscribed` (source `one-click`) and answers 200 with a short page, no
//!   redirect; again for a client already unsubscribed (idempotent).
//! - GET only shows a page with a button that POSTs (mail scanners prefetch GETs); its CSP
//!   allows `form-action 'self'` and nothing else.
//! - A tampered or unknown token is 404 and changes nothing.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use domain::client::{ClientAction, ClientError, DeliveryAction};
use projections::commands::{CommandError, CommandMetadata};
use projections::engagement::writer::escape_html;

use super::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/unsubscribe/{token}", get(page).post(unsubscribe))
        // The one-click body is one short field; nothing larger is read.
        .layer(DefaultBodyLimit::max(16 * 1024))
}

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222\">\
         <h1 style=\"font-size:1.4rem\">{title}</h1>{body}</body></html>\n",
        title = escape_html(title),
    );
    let mut response = super::security::page((status, page).into_response(), CSP);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn not_valid() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "This unsubscribe link is not valid",
        "<p>Please use the link from the most recent email you received.</p>",
    )
}

async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if state.emails.delivery.token_key.verify(&token).is_none() {
        return not_valid();
    }
    // The form posts to this same URL: `form-action 'self'`.
    html(
        StatusCode::OK,
        "Unsubscribe from these emails?",
        "<p>You will get no more of these emails.</p>\
         <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\" style=\"font-size:1rem;padding:.6rem 1.2rem\">Unsubscribe</button></form>",
    )
}

async fn unsubscribe(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some((user_id, email_id)) = state.emails.delivery.token_key.verify(&token) else {
        return not_valid();
    };
    let action = ClientAction::Deliver(DeliveryAction::Unsubscribe {
        email_id: Some(email_id),
        source: "one-click".to_owned(),
    });
    let metadata = CommandMetadata::for_actor("unsubscribe-link");
    match state.commands.execute(user_id, action, &metadata).await {
        // A deleted (or erased) client gets nothing more either way.
        Ok(_) | Err(CommandError::Rejected(ClientError::Deleted | ClientError::Erased)) => html(
            StatusCode::OK,
            "You are unsubscribed",
            "<p>You will get no more of these emails.</p>",
        ),
        Err(CommandError::Rejected(ClientError::NotFound)) => not_valid(),
        Err(CommandError::Unavailable(error)) => {
            tracing::warn!(error = %format!("{error:#}"), "unsubscribe: database unavailable");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again in a minute",
                "<p>We could not record your request just now. Nothing was changed.</p>",
            )
        }
        Err(error) => {
            tracing::error!(error = %error, "unsubscribe failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Please try again later",
                "<p>We could not record your request. Nothing was changed.</p>",
            )
        }
    }
}
