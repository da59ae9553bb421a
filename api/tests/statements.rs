//! How many SQL statements a page costs. Alone in its own test binary (its own process):
//! tracing caches each log callsite's interest per process, and other tests running on other
//! threads could leave sqlx's statement log cached as disabled before this test listens.

mod common;

use common::{spawn_app, Captured};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_page_of_users_with_their_emails_costs_the_same_queries_whatever_its_size(pool: PgPool) {
    // sqlx logs every statement (target sqlx::query, DEBUG); the test runtime runs the server
    // on this thread, so a thread-local subscriber sees them all.
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("sqlx::query=debug"))
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = spawn_app(pool.clone()).await;
    let clients = common::clients_with_emails(&app, &pool, 25, 2).await;

    let page = "query($n: Int) { users(first: $n) { nodes { id emails(first: 10) { totalCount nodes { subject } } } } }";
    let mut statements = Vec::new();
    for n in [5, 25] {
        captured.take();
        let data = app.gql(page, json!({ "n": n })).await;
        let nodes = data["users"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), n);
        assert!(
            nodes.iter().all(|u| u["emails"]["totalCount"] == 2),
            "{data}"
        );
        let log = captured.take();
        let ours = log
            .lines()
            .filter(|l| l.contains("sort_key") || l.contains("emails e"))
            .count();
        statements.push(ours);
    }
    assert_eq!(
        statements[0], statements[1],
        "the same statements for 5 and for 25 users"
    );
    assert!(
        (2..=3).contains(&statements[0]),
        "users page, emails pages, email counts: {statements:?}"
    );
    // Counting is a statement of its own, made only when `totalCount` is asked for.
    captured.take();
    app.gql(
        "{ users(first: 25) { nodes { id emails(first: 10) { nodes { subject } } } } }",
        json!({}),
    )
    .await;
    let uncounted = captured
        .take()
        .lines()
        .filter(|l| l.contains("sort_key") || l.contains("emails e"))
        .count();
    assert_eq!(uncounted, statements[0] - 1, "no count without totalCount");

    // Each body is fetched only when asked for, however it is asked for; the rest of a
    // row reads the same either way, and a page after a cursor starts after it.
    let last = clients.last().unwrap();
    let full = app
        .gql(
            "query($u: ID!) { user(id: $u) { emails(first: 10) { nodes { id subject status generatedAt preheader text html } } } }",
            json!({ "u": last }),
        )
        .await;
    let full = full["user"]["emails"]["nodes"].as_array().unwrap().clone();
    assert_eq!(full.len(), 2);
    assert_eq!(full[0]["text"], "Text 24-1", "newest first: {full:?}");
    assert_eq!(full[1]["html"], "<p>Html 24-0</p>");
    assert_eq!(full[1]["preheader"], "Preheader 24-0");
    let bodies = ["preheader", "text", "html"];
    for (shape, fetched) in [
        ("nodes { id subject status generatedAt }", &[][..]),
        (
            "edges { cursor node { id subject status generatedAt } }",
            &[],
        ),
        ("nodes { id subject status generatedAt html }", &["html"]),
        (
            "nodes { id subject status generatedAt body: text }",
            &["text"],
        ),
        (
            "edges { node { id subject status generatedAt preheader } }",
            &["preheader"],
        ),
        (
            "nodes { id subject status generatedAt ...Bodies }",
            &["html"],
        ),
        (
            "nodes { id subject status generatedAt ... on Email { text } }",
            &["text"],
        ),
        (
            "nodes { id subject status generatedAt html text preheader }",
            &["html", "text", "preheader"],
        ),
    ] {
        captured.take();
        let data = app
            .gql(
                &format!(
                    "query($u: ID!) {{ user(id: $u) {{ emails(first: 10) {{ {shape} }} }} }}{}",
                    if shape.contains("...Bodies") {
                        " fragment Bodies on Email { html }"
                    } else {
                        ""
                    }
                ),
                json!({ "u": last }),
            )
            .await;
        let emails = &data["user"]["emails"];
        let nodes: Vec<&serde_json::Value> = match emails["nodes"].as_array() {
            Some(nodes) => nodes.iter().collect(),
            None => emails["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| &e["node"])
                .collect(),
        };
        assert_eq!(nodes.len(), 2, "{shape}");
        for (node, whole) in nodes.iter().zip(&full) {
            for field in ["id", "subject", "status", "generatedAt"] {
                assert_eq!(node[field], whole[field], "{shape}: {field}");
            }
            for field in bodies {
                if node.get(field).is_some() {
                    assert_eq!(node[field], whole[field], "{shape}: {field}");
                }
            }
            if let Some(text) = node.get("body") {
                assert_eq!(text, &whole["text"], "{shape}");
            }
        }
        let log = captured.take();
        let statement = log
            .lines()
            .find(|l| l.contains("emails e"))
            .unwrap_or_else(|| panic!("{shape}: no emails statement in {log}"));
        for body in bodies {
            assert_eq!(
                statement.contains(&format!("e.{body}")),
                fetched.contains(&body),
                "{shape}: {body} fetched only when asked for: {statement}"
            );
        }
    }
    let first = app
        .gql(
            "query($u: ID!) { user(id: $u) { emails(first: 1) { pageInfo { endCursor } } } }",
            json!({ "u": last }),
        )
        .await;
    let cursor = first["user"]["emails"]["pageInfo"]["endCursor"].clone();
    let next = app
        .gql(
            "query($u: ID!, $c: String) { user(id: $u) { emails(first: 5, after: $c) { nodes { id } } } }",
            json!({ "u": last, "c": cursor }),
        )
        .await;
    assert_eq!(
        next["user"]["emails"]["nodes"],
        json!([{ "id": full[1]["id"] }])
    );
}
