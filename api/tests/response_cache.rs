//! Answers to read-model queries are kept until the views move, and never served stale: not
//! after a mutation here, not after one through another instance on the same database.

mod common;

use common::{spawn_app, TestApp, OPERATOR};
use serde_json::{json, Value};
use sqlx::PgPool;

/// (x-cache, body) of a query as the operator.
async fn ask(app: &TestApp, query: &str, variables: Value) -> (String, Value) {
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(OPERATOR)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap();
    let cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    (cache, response.json().await.unwrap())
}

const PAGE: &str =
    "query($n: Int) { users(first: $n) { totalCount nodes { id name emails { totalCount } } } }";

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn view_reads_are_kept_until_the_views_move_on_any_instance(pool: PgPool) {
    let first = spawn_app(pool.clone()).await;
    let second = spawn_app(pool).await;
    let id = first.create_user("Ada", "ada@example.com").await;

    let (cache, before) = ask(&first, PAGE, json!({ "n": 10 })).await;
    assert_eq!(cache, "miss");
    let (cache, again) = ask(&first, PAGE, json!({ "n": 10 })).await;
    assert_eq!(cache, "hit");
    assert_eq!(again, before);
    let (cache, _) = ask(&first, PAGE, json!({ "n": 5 })).await;
    assert_eq!(cache, "miss", "other variables, another answer");

    // A mutation here returns once its view shows it: the next read is fresh.
    first
        .gql(
            "mutation($id: ID!) { updateUser(id: $id, input: { name: \"Ada King\" }) { id } }",
            json!({ "id": id }),
        )
        .await;
    let (cache, after) = ask(&first, PAGE, json!({ "n": 10 })).await;
    assert_eq!(cache, "miss");
    assert_eq!(after["data"]["users"]["nodes"][0]["name"], "Ada King");

    // The same through the other instance: this one's kept answer is not served again.
    ask(&first, PAGE, json!({ "n": 10 })).await;
    second
        .gql(
            "mutation($id: ID!) { updateUser(id: $id, input: { name: \"Ada Lovelace\" }) { id } }",
            json!({ "id": id }),
        )
        .await;
    let (cache, elsewhere) = ask(&first, PAGE, json!({ "n": 10 })).await;
    assert_eq!(cache, "miss");
    assert_eq!(
        elsewhere["data"]["users"]["nodes"][0]["name"],
        "Ada Lovelace"
    );
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn reads_of_anything_but_the_views_and_errors_are_never_kept(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = app.create_user("Ada", "ada@example.com").await;
    for (query, variables) in [
        ("{ health { status } }", json!({})),
        ("{ emailJobs { totalCount } }", json!({})),
        ("{ viewer { actor } }", json!({})),
        (
            "query($id: ID!) { userHistory(userId: $id) { totalCount } }",
            json!({ "id": id }),
        ),
        (
            "query($id: ID!) { user(id: $id) { history { totalCount } } }",
            json!({ "id": id }),
        ),
        ("{ user(id: \"not-an-id\") { id } }", json!({})),
    ] {
        for _ in 0..2 {
            let (cache, body) = ask(&app, query, variables.clone()).await;
            assert_eq!(cache, "bypass", "{query}: {body}");
        }
    }
    // The history changes with every event, and is read fresh each time.
    let history = "query($id: ID!) { userHistory(userId: $id) { totalCount } }";
    let (_, before) = ask(&app, history, json!({ "id": id })).await;
    app.gql(
        "mutation($id: ID!) { rescoreUser(userId: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    app.gql(
        "mutation($id: ID!) { setEngagementScore(userId: $id, score: 70) { id } }",
        json!({ "id": id }),
    )
    .await;
    let (_, after) = ask(&app, history, json!({ "id": id })).await;
    assert!(
        after["data"]["userHistory"]["totalCount"].as_i64()
            > before["data"]["userHistory"]["totalCount"].as_i64()
    );
}
