//! Delivery through the API: review by operators, RFC 8058 one-click unsubscribe, and the
//! provider's signed reports.

mod common;

use std::time::Duration;

use api::http::webhooks::sign;
use common::{spawn_app_delivering, TestApp, ADMIN, OPERATOR, VIEWER, WEBHOOK_SECRETS};
use domain::client::DeliveryMode;
use projections::clock::Clock as _;
use projections::engagement::delivery::unsubscribe::TokenKey;
use projections::engagement::delivery::DeliverySettings;
use serde_json::{json, Value};
use sqlx::PgPool;

const KEY: [u8; 32] = [9; 32];

fn delivery(mode: DeliveryMode) -> DeliverySettings {
    DeliverySettings {
        mode,
        public_base_url: "https://engage.example".into(),
        token_key: TokenKey::derive(&KEY),
        ..DeliverySettings::off()
    }
}

/// A client scored at risk by hand, and the email the engine then writes for them.
async fn emailed(app: &TestApp, name: &str, address: &str) -> (String, String) {
    let id = app.create_user(name, address).await;
    app.gql_ok(
        OPERATOR,
        "mutation($u: ID!) { setEngagementScore(userId: $u, score: 10, reason: \"test\") { id } }",
        json!({ "u": id }),
    )
    .await;
    for _ in 0..200 {
        let data = app
            .gql_ok(
                OPERATOR,
                "query($u: ID!) { user(id: $u) { emails { nodes { id status } } } }",
                json!({ "u": id }),
            )
            .await;
        if let Some(email) = data["user"]["emails"]["nodes"][0]["id"].as_str() {
            return (id, email.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no email was written for {name}");
}

async fn email(app: &TestApp, id: &str) -> Value {
    app.gql_ok(
        OPERATOR,
        "query($e: ID!) { email(id: $e) { status reviewedBy reviewReason deliveryMode sentAt messageId deliveryError } }",
        json!({ "e": id }),
    )
    .await["email"]
        .clone()
}

async fn status_of(app: &TestApp, user: &str) -> String {
    app.gql_ok(
        OPERATOR,
        "query($u: ID!) { user(id: $u) { status } }",
        json!({ "u": user }),
    )
    .await["user"]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn operators_approve_or_reject_what_waits_for_review_and_viewers_cannot(pool: PgPool) {
    let app = spawn_app_delivering(pool, delivery(DeliveryMode::Review)).await;
    let (user, kept) = emailed(&app, "Kept Client", "kept@example.com").await;
    let (dropped_user, dropped) = emailed(&app, "Dropped Client", "dropped@example.com").await;
    assert_eq!(email(&app, &kept).await["status"], "PENDING_REVIEW");
    assert_eq!(email(&app, &kept).await["deliveryMode"], "review");

    let approve = "mutation($e: ID!) { approveEmail(id: $e) { status reviewedBy } }";
    let reject =
        "mutation($e: ID!, $r: String!) { rejectEmail(id: $e, reason: $r) { status reviewedBy reviewReason } }";
    let (code, _) = app
        .error_code(Some(VIEWER), approve, json!({ "e": kept }))
        .await;
    assert_eq!(code, "FORBIDDEN");
    let (code, _) = app
        .error_code(Some(VIEWER), reject, json!({ "e": dropped, "r": "no" }))
        .await;
    assert_eq!(code, "FORBIDDEN");
    let (code, body) = app
        .error_code(Some(OPERATOR), reject, json!({ "e": dropped, "r": " " }))
        .await;
    assert_eq!(code, "VALIDATION", "{body}");

    let approved = app.gql_ok(OPERATOR, approve, json!({ "e": kept })).await;
    assert_eq!(approved["approveEmail"]["status"], "GENERATED");
    assert_eq!(approved["approveEmail"]["reviewedBy"], "operator:ops");
    let rejected = app
        .gql_ok(
            OPERATOR,
            reject,
            json!({ "e": dropped, "r": "off-brand tone" }),
        )
        .await;
    assert_eq!(rejected["rejectEmail"]["status"], "REJECTED");
    assert_eq!(rejected["rejectEmail"]["reviewReason"], "off-brand tone");
    // A rejected email cannot be approved afterwards.
    let (code, _) = app
        .error_code(Some(OPERATOR), approve, json!({ "e": dropped }))
        .await;
    assert_eq!(code, "CONFLICT");
    // The audit trail shows who let the email go.
    for (who, event) in [(&user, "EmailApproved"), (&dropped_user, "EmailRejected")] {
        let history = app
            .gql_ok(
                ADMIN,
                "query($u: ID!) { userHistory(userId: $u) { nodes { type metadata payload } } }",
                json!({ "u": who }),
            )
            .await;
        let nodes = history["userHistory"]["nodes"].as_array().unwrap();
        let review = nodes
            .iter()
            .find(|n| n["type"] == event)
            .unwrap_or_else(|| panic!("{event} is in the history"));
        assert_eq!(review["metadata"]["actor"], "operator:ops");
        assert_eq!(review["payload"]["reviewedBy"], "operator:ops");
    }
}

async fn post_unsubscribe(app: &TestApp, token: &str, multipart: bool) -> (u16, String) {
    let url = format!("{}/unsubscribe/{token}", app.address);
    let request = if multipart {
        let boundary = "----engagement-test";
        app.client
            .post(url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--{boundary}--\r\n"
            ))
    } else {
        app.client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
    };
    let response = request.send().await.unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    assert!(response.headers().get("location").is_none());
    (response.status().as_u16(), response.text().await.unwrap())
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn one_click_unsubscribes_by_post_only_and_refuses_a_tampered_token(pool: PgPool) {
    let app = spawn_app_delivering(pool, delivery(DeliveryMode::Off)).await;
    let (first, first_email) = emailed(&app, "First Client", "first@example.com").await;
    let (second, second_email) = emailed(&app, "Second Client", "second@example.com").await;
    let key = TokenKey::derive(&KEY);
    let token = key.token(first.parse().unwrap(), first_email.parse().unwrap());

    // The visible link in the email is this one.
    let html = app
        .gql_ok(
            OPERATOR,
            "query($e: ID!) { email(id: $e) { html text } }",
            json!({ "e": first_email }),
        )
        .await;
    assert!(html["email"]["text"]
        .as_str()
        .unwrap()
        .contains(&format!("https://engage.example/unsubscribe/{token}")));

    // GET shows a button and changes nothing (scanners prefetch links).
    let page = app
        .client
        .get(format!("{}/unsubscribe/{token}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    assert_eq!(status_of(&app, &first).await, "ACTIVE");

    // A tampered token is refused and changes nothing.
    let before = app.event_count().await;
    let mut tampered = token.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(post_unsubscribe(&app, &tampered, false).await.0, 404);
    assert_eq!(post_unsubscribe(&app, "garbage", false).await.0, 404);
    assert_eq!(app.event_count().await, before);

    // POST, form-urlencoded, unsubscribes; again is fine and records nothing more.
    assert_eq!(post_unsubscribe(&app, &token, false).await.0, 200);
    let after = app.event_count().await;
    assert_eq!(post_unsubscribe(&app, &token, false).await.0, 200);
    assert_eq!(app.event_count().await, after);
    // POST, multipart, for the second client.
    let token2 = key.token(second.parse().unwrap(), second_email.parse().unwrap());
    assert_eq!(post_unsubscribe(&app, &token2, true).await.0, 200);
    for user in [&first, &second] {
        for _ in 0..100 {
            if status_of(&app, user).await == "UNSUBSCRIBED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status_of(&app, user).await, "UNSUBSCRIBED");
    }
}

async fn report(app: &TestApp, secret: &str, body: &Value) -> u16 {
    let bytes = serde_json::to_vec(body).unwrap();
    app.client
        .post(format!("{}/webhooks/email-events", app.address))
        .header("content-type", "application/json")
        .header(
            "x-signature",
            sign(secret, app.clock.now().timestamp(), &bytes),
        )
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_hard_bounce_suppresses_and_a_complaint_unsubscribes(pool: PgPool) {
    // Auto delivery with no mail server: the send jobs are recorded and wait.
    let app = spawn_app_delivering(pool.clone(), delivery(DeliveryMode::Auto)).await;
    let (bounced, bounced_email) = emailed(&app, "Bounced Client", "bounced@example.com").await;
    let (complained, complained_email) =
        emailed(&app, "Complaining Client", "complains@example.com").await;
    for _ in 0..100 {
        let jobs: i64 = sqlx::query_scalar("select count(*) from email_sends")
            .fetch_one(&pool)
            .await
            .unwrap();
        if jobs == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret = WEBHOOK_SECRETS.split(',').next().unwrap();
    let bounce = json!({ "messageId": format!("<{bounced_email}@shop.example>"), "event": "BOUNCED", "permanent": true });
    let before = app.event_count().await;
    assert_eq!(report(&app, "not-the-secret", &bounce).await, 401);
    assert_eq!(
        app.event_count().await,
        before,
        "a bad signature changes nothing"
    );
    assert_eq!(report(&app, secret, &bounce).await, 200);
    assert_eq!(
        report(&app, secret, &bounce).await,
        200,
        "a duplicate is fine"
    );
    let suppressed: i64 = sqlx::query_scalar(
        "select count(*) from events where event_type = 'AddressSuppressed' and aggregate_id = $1",
    )
    .bind(&bounced)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(suppressed, 1);
    let complaint =
        json!({ "messageId": format!("<{complained_email}@shop.example>"), "event": "COMPLAINED" });
    assert_eq!(report(&app, secret, &complaint).await, 200);
    for _ in 0..100 {
        if status_of(&app, &complained).await == "UNSUBSCRIBED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(&app, &complained).await, "UNSUBSCRIBED");
    let unknown =
        json!({ "messageId": "<00000000-0000-0000-0000-000000000000@x>", "event": "BOUNCED" });
    assert_eq!(report(&app, secret, &unknown).await, 422);
}
