//! A database that cannot be reached is said plainly: `UNAVAILABLE`, never `INTERNAL`, and
//! the health report says the database is down.

mod common;

use std::time::Duration;

use api::app::{App, AppParts};
use common::{tokens, OPERATOR};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_unavailable() {
    // A port nothing listens on: every connection attempt is refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/nowhere"))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let app = App::build(AppParts {
        tokens: tokens(),
        shutdown_grace: Duration::from_secs(1),
        ..AppParts::new(pool, &projections::vault::MasterKey::new([7; 32]))
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    for query in [
        "{ users(first: 5) { nodes { id } } }",
        "{ user(id: \"7f1c1a4e-1b6e-4f3e-9d55-0d7a0b4d8c11\") { id } }",
        "{ engagementSummary { users } }",
        // A command loads the client first: the mutation is unavailable too, and says so.
        "mutation { createUser(input: { name: \"Ada\", email: \"ada@example.com\" }) { id } }",
        "mutation { placeOrder(userId: \"7f1c1a4e-1b6e-4f3e-9d55-0d7a0b4d8c11\", input: { orderId: \"o-1\", amount: \"10\" }) { id } }",
    ] {
        let response = client
            .post(format!("{address}/graphql"))
            .bearer_auth(OPERATOR)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        // Said at the HTTP level too: 503 with a time to retry, which clients know to honour.
        assert_eq!(response.status(), 503, "{query}");
        assert_eq!(response.headers()["retry-after"], "2", "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAVAILABLE",
            "{query}: {body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(!message.contains(&port.to_string()), "no detail: {message}");
    }
    let health = client
        .get(format!("{address}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["dependencies"]["database"], "down");
    let _ = stop.send(());
}
