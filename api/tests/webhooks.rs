//! The signed order webhook: what it records, what it refuses, and that it never shows a
//! secret.

mod common;

use api::http::webhooks::sign;
use chrono::Duration as Span;
use common::{spawn_app, Captured, TestApp, OPERATOR};
use projections::clock::Clock as _;
use serde_json::{json, Value};
use sqlx::PgPool;

const OLD: &str = "whsec-old-0123456789";
const NEW: &str = "whsec-new-9876543210";

async fn deliver(app: &TestApp, signature: Option<String>, body: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let mut request = app
        .client
        .post(format!("{}/webhooks/orders", app.address))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("x-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn signed(app: &TestApp, secret: &str, body: &Value) -> String {
    sign(
        secret,
        app.clock.now().timestamp(),
        &serde_json::to_vec(body).unwrap(),
    )
}

async fn orders_of(app: &TestApp, external_id: &str) -> Value {
    let data = app
        .gql_ok(
            OPERATOR,
            "query($e: String!) { userByExternalId(externalId: $e) { orderCount totalSpent externalId } }",
            json!({ "e": external_id }),
        )
        .await;
    data["userByExternalId"].clone()
}

async fn order_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from events where event_type = 'OrderPlaced'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_signed_order_is_recorded_once_however_often_it_is_delivered(pool: PgPool) {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app(pool.clone()).await;
    let order = json!({
        "externalId": "shop-42", "orderId": "A-1", "amount": "59.90",
        "placedAt": app.clock.now() - Span::days(1), "categories": ["Denim"],
        "client": { "name": "Grace Hopper", "email": "grace@example.com", "preferredCategories": ["Denim"] }
    });
    let (status, body) = deliver(&app, Some(signed(&app, OLD, &order)), &order).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "recorded");
    // Delivered again (a retry by the sender), signed with the new secret: 200, once.
    let (status, _) = deliver(&app, Some(signed(&app, NEW, &order)), &order).await;
    assert_eq!(status, 200);
    assert_eq!(order_events(&pool).await, 1);
    let user = orders_of(&app, "shop-42").await;
    assert_eq!(user["orderCount"], 1);
    assert_eq!(user["externalId"], "shop-42");

    // A second order for the now-known client needs no client block.
    let second =
        json!({ "externalId": "shop-42", "orderId": 7, "amount": 10, "placedAt": app.clock.now() });
    let (status, _) = deliver(&app, Some(signed(&app, NEW, &second)), &second).await;
    assert_eq!(status, 200);

    // A cancellation stops the first order counting.
    let cancel =
        json!({ "cancel": { "externalId": "shop-42", "orderId": "A-1", "reason": "returned" } });
    let (status, body) = deliver(&app, Some(signed(&app, OLD, &cancel)), &cancel).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = deliver(&app, Some(signed(&app, OLD, &cancel)), &cancel).await;
    assert_eq!(status, 200, "cancelling twice is fine");
    let user = orders_of(&app, "shop-42").await;
    assert_eq!(user["orderCount"], 1);
    assert_eq!(user["totalSpent"], "10.00");

    let log = captured.take();
    assert!(!log.is_empty());
    for secret in [OLD, NEW] {
        assert!(!log.contains(secret), "a secret was logged");
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn bad_signatures_stale_timestamps_and_late_replays_are_refused_and_record_nothing(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let order = json!({
        "externalId": "shop-1", "orderId": "B-1", "amount": "5.00", "placedAt": app.clock.now(),
        "client": { "name": "Ada", "email": "ada@example.com" }
    });
    let body = serde_json::to_vec(&order).unwrap();
    let now = app.clock.now().timestamp();
    for (signature, why) in [
        (None, "missing"),
        (Some(sign("not-our-secret", now, &body)), "does not match"),
        (Some(sign(OLD, now - 301, &body)), "5 minutes"),
        (Some(sign(OLD, now + 301, &body)), "5 minutes"),
        (Some(format!("t={now},v1=zz")), "v1"),
        (
            Some(sign(OLD, now, b"{\"other\": \"body\"}")),
            "does not match",
        ),
    ] {
        let (status, answer) = deliver(&app, signature, &order).await;
        assert_eq!(status, 401, "{why}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(why), "{answer}");
        for secret in [OLD, NEW] {
            assert!(!answer.to_string().contains(secret));
        }
    }
    assert_eq!(order_events(&pool).await, 0);

    // A good request, captured and replayed after the tolerance window, is refused.
    let signature = signed(&app, OLD, &order);
    assert_eq!(deliver(&app, Some(signature.clone()), &order).await.0, 200);
    app.clock.advance(Span::minutes(6));
    let (status, _) = deliver(&app, Some(signature), &order).await;
    assert_eq!(status, 401);
    assert_eq!(order_events(&pool).await, 1);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn orders_that_break_a_rule_are_422_and_garbage_is_400(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let unknown = json!({ "externalId": "nobody", "orderId": "1", "amount": "5", "placedAt": app.clock.now() });
    let (status, body) = deliver(&app, Some(signed(&app, OLD, &unknown)), &unknown).await;
    assert_eq!(status, 422);
    assert_eq!(body["field"], "externalId");
    let negative = json!({
        "externalId": "x", "orderId": "1", "amount": "-5", "placedAt": app.clock.now(),
        "client": { "name": "X", "email": "x@example.com" }
    });
    let (status, body) = deliver(&app, Some(signed(&app, OLD, &negative)), &negative).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("amount")),
        "{body}"
    );
    let future = json!({
        "externalId": "x", "orderId": "1", "amount": "5", "placedAt": app.clock.now() + Span::days(3),
        "client": { "name": "X", "email": "x@example.com" }
    });
    let (status, body) = deliver(&app, Some(signed(&app, OLD, &future)), &future).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("placedAt")),
        "{body}"
    );
    let garbage = json!({ "hello": "world" });
    let (status, _) = deliver(&app, Some(signed(&app, OLD, &garbage)), &garbage).await;
    assert_eq!(status, 400);
    assert_eq!(order_events(&pool).await, 0);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn without_a_secret_the_webhook_is_off_and_says_how_to_turn_it_on(pool: PgPool) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let app = api::app::App::build(api::app::AppParts::new(
        pool,
        &projections::vault::MasterKey::new([7; 32]),
    ));
    tokio::spawn(app.run(listener, std::future::pending()));
    let response = reqwest::Client::new()
        .post(format!("{address}/webhooks/orders"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("ORDER_WEBHOOK_SECRET"));
}
