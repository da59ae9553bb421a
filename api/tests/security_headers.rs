//! Every HTML answer carries the security headers: its own Content-Security-Policy with
//! `frame-ancestors 'none'`, `nosniff` and `no-referrer` (addresses may hold tokens); pages
//! with a form allow posting only to themselves. Every other answer carries `nosniff`.

mod common;

use common::{spawn_app_delivering, ADMIN};
use domain::client::DeliveryMode;
use projections::engagement::delivery::unsubscribe::TokenKey;
use projections::engagement::delivery::DeliverySettings;
use reqwest::Method;
use sqlx::PgPool;

const KEY: [u8; 32] = [7; 32];

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn every_html_answer_carries_the_security_headers(pool: PgPool) {
    let app = spawn_app_delivering(
        pool,
        DeliverySettings {
            mode: DeliveryMode::Off,
            public_base_url: "https://engage.example".into(),
            token_key: TokenKey::derive(&KEY),
            ..DeliverySettings::off()
        },
    )
    .await;
    let user = app.create_user("Grace Hopper", "grace@example.com").await;
    let token = TokenKey::derive(&KEY).token(user.parse().unwrap(), uuid::Uuid::new_v4());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // (method, path, whether the page holds a form)
    let requests = [
        (Method::GET, "/".to_owned(), false),
        (Method::GET, "/graphql".to_owned(), false),
        (Method::GET, format!("/graphql?token={ADMIN}"), false),
        (Method::GET, format!("/unsubscribe/{token}"), true),
        (Method::POST, format!("/unsubscribe/{token}"), false),
        (Method::GET, "/unsubscribe/not-a-token".to_owned(), false),
        (Method::GET, "/assets/app/js/app.js".to_owned(), false),
        (Method::GET, "/assets/playground.js".to_owned(), false),
        (
            Method::GET,
            "/assets/vendor/graphiql.min.css".to_owned(),
            false,
        ),
        (Method::GET, "/healthz".to_owned(), false),
        (Method::GET, "/api/health".to_owned(), false),
        (Method::GET, "/metrics".to_owned(), false),
        (Method::GET, "/no/such/page".to_owned(), false),
    ];
    let mut pages = 0;
    for (method, path, form) in requests {
        let mut request = client.request(method.clone(), format!("{}{path}", app.address));
        if method == Method::POST {
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click");
        }
        let response = request.send().await.unwrap();
        let headers = response.headers().clone();
        let what = format!("{method} {path} ({})", response.status());
        assert_eq!(
            headers
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{what}"
        );
        let html = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        if !html {
            continue;
        }
        pages += 1;
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
        assert!(!csp.contains("script-src 'unsafe-inline'"), "{what}: {csp}");
        let form_action = if form {
            "form-action 'self'"
        } else {
            "form-action '"
        };
        assert!(csp.contains(form_action), "{what}: {csp}");
        assert_eq!(
            headers.get("referrer-policy").map(|v| v.to_str().unwrap()),
            Some("no-referrer"),
            "{what}"
        );
        assert_eq!(
            headers.get("x-frame-options").map(|v| v.to_str().unwrap()),
            Some("DENY"),
            "{what}"
        );
    }
    assert!(pages >= 6, "only {pages} HTML answers were checked");
}
