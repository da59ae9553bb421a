//! Subscriptions over WebSocket, across two server instances on one database.

mod common;

use std::time::Duration;

use common::{spawn_app, spawn_app_with_clock, VIEWER};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(address: &str, protocol: &str) -> Socket {
    let url = format!("{}/graphql/ws", address.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    socket
}

/// The next JSON message that is not a keep-alive.
async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if !matches!(value["type"].as_str(), Some("ping" | "pong" | "ka")) {
                return value;
            }
        }
    }
}

async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_subscriber_receives_events_in_order_including_those_written_by_another_instance(
    pool: PgPool,
) {
    let first = spawn_app(pool.clone()).await;
    let second = spawn_app_with_clock(pool.clone(), first.clock.clone()).await;

    let mut socket = connect(&first.address, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {VIEWER}") } })).await;
    assert_eq!(next_message(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { events { type userId sequence globalPosition metadata } }" } }),
    )
    .await;
    // Let the subscription register before writing.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = second.create_user("Lise Meitner", "lise@example.com").await;
    second
        .gql(
            "mutation($u: ID!) { setEngagementScore(userId: $u, score: 7) { id } }",
            json!({ "u": id }),
        )
        .await;

    let mut received = Vec::new();
    while received.len() < 3 {
        let message = next_message(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        received.push(message["payload"]["data"]["events"].clone());
    }
    let types: Vec<&str> = received
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UserCreated", "UserScored", "UserScored"]);
    let sequences: Vec<i64> = received
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert!(received.iter().all(|e| e["userId"] == id.as_str()));
    assert_eq!(received[0]["metadata"]["actor"], "operator:ops");

    // A filtered subscription sees only its user.
    send(
        &mut socket,
        json!({ "id": "2", "type": "subscribe", "payload": { "query": "subscription($u: ID) { events(userId: $u) { userId type } }", "variables": { "u": id } } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = second.create_user("Other", "other@example.com").await;
    second
        .gql(
            "mutation($u: ID!) { unsubscribeUser(userId: $u) { id } }",
            json!({ "u": id }),
        )
        .await;
    // The filtered subscription sees only its user's events (the process manager may write
    // an email for the low score first), up to the unsubscribe.
    let mut saw_unsubscribe = false;
    for _ in 0..20 {
        let message = next_message(&mut socket).await;
        if message["id"] == "2" {
            let event = &message["payload"]["data"]["events"];
            assert_eq!(event["userId"], id.as_str(), "{message}");
            if event["type"] == "UserUnsubscribed" {
                saw_unsubscribe = true;
                break;
            }
        } else {
            assert_eq!(message["id"], "1", "{message}");
        }
    }
    assert!(
        saw_unsubscribe,
        "the filtered subscription saw its user's unsubscribe"
    );
    assert_ne!(other, id);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_subscription_without_a_token_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut socket = connect(&app.address, "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(Message::Text(t))) => assert!(!t.contains("connection_ack"), "{t}"),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    // graphql-transport-ws: a refused connection_init closes with 4403, the reason saying why.
    let (code, reason) = closed.expect("the server closed the connection");
    assert_eq!(code, 4403);
    assert!(reason.contains("token"), "{reason}");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_legacy_graphql_ws_protocol_works_too(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut socket = connect(&app.address, "graphql-ws").await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "token": VIEWER } }),
    )
    .await;
    assert_eq!(next_message(&mut socket).await["type"], "connection_ack");
    send(&mut socket, json!({ "id": "a", "type": "start", "payload": { "query": "subscription { events { type } }" } })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.create_user("Legacy", "legacy@example.com").await;
    let message = next_message(&mut socket).await;
    assert_eq!(message["type"], "data", "{message}");
    assert_eq!(message["payload"]["data"]["events"]["type"], "UserCreated");
}
