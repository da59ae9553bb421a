//! The GraphiQL playground, served with every asset it needs from the binary itself: it works
//! with no internet access. The assets come from the npm registry at build time (see
//! `api/build.rs`), pinned by `api/web/package-lock.json`.

use axum::http::header;
use axum::response::IntoResponse;
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

/// The playground page. A `?token=` in the address (the start-up link carries one) is kept for
/// the browser session and prefilled as the `Authorization` header, then removed from the
/// address bar.
pub fn page(endpoint: &str, subscription_endpoint: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>engagement - GraphQL playground</title>
<link rel="stylesheet" href="/assets/vendor/graphiql.min.css">
<style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql">Loading the playground...</div>
<script src="/assets/vendor/react.production.min.js"></script>
<script src="/assets/vendor/react-dom.production.min.js"></script>
<script src="/assets/vendor/graphiql.min.js"></script>
<script>
  const params = new URLSearchParams(location.search);
  if (params.has('token')) {{
    sessionStorage.setItem('engagement.token', params.get('token'));
    params.delete('token');
    history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : ''));
  }}
  const token = sessionStorage.getItem('engagement.token');
  const headers = token ? {{ Authorization: 'Bearer ' + token }} : {{}};
  const wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + {subscription_endpoint:?};
  const fetcher = GraphiQL.createFetcher({{
    url: {endpoint:?},
    subscriptionUrl: wsUrl,
    wsConnectionParams: headers,
  }});
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {{
      fetcher,
      defaultHeaders: JSON.stringify(headers, null, 2),
      shouldPersistHeaders: false,
      defaultQuery: '{{\n  engagementSummary {{ users atRisk averageScore emails scoreHistogram }}\n}}\n',
    }}),
  );
</script>
</body>
</html>
"#
    )
}
