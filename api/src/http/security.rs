//! Security headers for what a browser renders.
//!
//! Every HTML page states its own Content-Security-Policy (only our origin; each page says
//! what else it needs) and carries `nosniff`, `no-referrer` (addresses may hold tokens) and
//! `frame-ancestors 'none'` (no clickjacking). As a safety net, [`headers`] runs on every
//! answer: `nosniff` everywhere, and an HTML answer that set no policy of its own (an error
//! page, a new route) gets the strictest one.

use axum::http::{header, HeaderValue};
use axum::response::Response;

/// The policy of an HTML answer that states none: nothing may load, run or frame it.
pub const STRICTEST: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Sets `csp` and the headers every page carries on `response`.
pub fn page(mut response: Response, csp: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // For browsers that predate `frame-ancestors`.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The safety net over every answer (see the module's text).
pub async fn headers(mut response: Response) -> Response {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html
        && !response
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY)
    {
        response = page(response, STRICTEST);
    }
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::{Html, IntoResponse as _};

    #[tokio::test]
    async fn an_html_answer_without_a_policy_gets_the_strictest_and_others_keep_theirs() {
        let bare = headers(Html("<p>oops</p>").into_response()).await;
        assert_eq!(bare.headers()[header::CONTENT_SECURITY_POLICY], STRICTEST);
        assert_eq!(bare.headers()[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(bare.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

        let own = headers(page(
            Html("<p>hi</p>").into_response(),
            "default-src 'self'",
        ))
        .await;
        assert_eq!(
            own.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'"
        );

        let json = headers(axum::Json(1).into_response()).await;
        assert!(!json.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(json.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
