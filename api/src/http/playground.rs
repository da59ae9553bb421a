//! The GraphiQL playground, served with every asset it needs from the binary itself: it works
//! with no internet access. GraphiQL and React come from the npm registry at build time (see
//! `api/build.rs`), pinned by `api/web/package-lock.json`; the page's own start-up is
//! `api/web/playground.js`, a file rather than an inline script so that the page's policy can
//! forbid inline scripts.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

macro_rules! asset {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/web/node_modules/",
            $path
        ))
    };
}

static GRAPHIQL_JS: &[u8] = asset!("graphiql/graphiql.min.js");
static GRAPHIQL_CSS: &[u8] = asset!("graphiql/graphiql.min.css");
static REACT_JS: &[u8] = asset!("react/umd/react.production.min.js");
static REACT_DOM_JS: &[u8] = asset!("react-dom/umd/react-dom.production.min.js");
static PLAYGROUND_JS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/playground.js"));
static PLAYGROUND_CSS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/playground.css"));

/// The playground's assets under `/assets/vendor/`.
pub fn router() -> Router<AppState> {
    let js = |body: &'static [u8]| {
        move || async move {
            (
                [
                    (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                    (header::CACHE_CONTROL, "public, max-age=86400"),
                ],
                body,
            )
                .into_response()
        }
    };
    Router::new()
        .route("/assets/vendor/graphiql.min.js", get(js(GRAPHIQL_JS)))
        .route("/assets/playground.js", get(js(PLAYGROUND_JS)))
        .route(
            "/assets/playground.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    PLAYGROUND_CSS,
                )
            }),
        )
        .route("/assets/vendor/react.production.min.js", get(js(REACT_JS)))
        .route(
            "/assets/vendor/react-dom.production.min.js",
            get(js(REACT_DOM_JS)),
        )
        .route(
            "/assets/vendor/graphiql.min.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=86400"),
                    ],
                    GRAPHIQL_CSS,
                )
            }),
        )
}

/// What the playground page may load and run: only our own assets and API. GraphiQL sets
/// styles from script, hence `'unsafe-inline'` for styles (never for scripts).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The playground page (its start-up is `/assets/playground.js`), with its security headers.
pub fn response(endpoint: &str, subscription_endpoint: &str) -> Response {
    let html = page(endpoint, subscription_endpoint);
    let mut response = super::security::page(Html(html).into_response(), CONTENT_SECURITY_POLICY);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn page(endpoint: &str, subscription_endpoint: &str) -> String {
    let endpoint = projections::engagement::writer::escape_html(endpoint);
    let subscriptions = projections::engagement::writer::escape_html(subscription_endpoint);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>engagement - GraphQL playground</title>
<link rel="stylesheet" href="/assets/vendor/graphiql.min.css">
<link rel="stylesheet" href="/assets/playground.css">
</head>
<body>
<div id="graphiql" data-endpoint="{endpoint}" data-subscriptions="{subscriptions}">Loading the playground...</div>
<script src="/assets/vendor/react.production.min.js"></script>
<script src="/assets/vendor/react-dom.production.min.js"></script>
<script src="/assets/vendor/graphiql.min.js"></script>
<script src="/assets/playground.js"></script>
</body>
</html>
"#
    )
}
