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

/// Places order `order` for `user` through `app`.
async fn order(app: &TestApp, user: &str, order: &str) {
    app.gql(
        "mutation($u: ID!, $o: String!) { placeOrder(userId: $u, input: { orderId: $o, amount: \"20\" }) { id } }",
        json!({ "u": user, "o": order }),
    )
    .await;
}

/// Asks through `app` until the answer comes from the cache (background work, such as an
/// email being written, may move the views between two asks; a cache that keeps nothing
/// never gets there).
async fn kept(app: &TestApp, query: &str, variables: Value) -> Value {
    for _ in 0..50 {
        let (_, body) = ask(app, query, variables.clone()).await;
        assert!(body["errors"].is_null(), "{body}");
        let (cache, again) = ask(app, query, variables.clone()).await;
        if cache == "hit" {
            assert_eq!(again, body);
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{query} was never answered from the cache");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_kept_answer_outlives_writes_it_did_not_read_but_none_it_did(pool: PgPool) {
    let first = spawn_app(pool.clone()).await;
    let second = spawn_app(pool).await;
    let ada = first.create_user("Ada", "ada@example.com").await;
    let bob = first.create_user("Bob", "bob@example.com").await;

    // One client: kept through another client's order, fresh after their own (both written
    // through the other instance).
    let user = "query($id: ID!) { user(id: $id) { name orderCount emails { totalCount } } }";
    kept(&first, user, json!({ "id": ada })).await;
    order(&second, &bob, "b-1").await;
    let (cache, _) = ask(&first, user, json!({ "id": ada })).await;
    assert_eq!(
        cache, "hit",
        "Bob's order changes nothing Ada's answer read"
    );
    order(&second, &ada, "a-1").await;
    let (cache, fresh) = ask(&first, user, json!({ "id": ada })).await;
    assert_eq!(cache, "miss");
    assert_eq!(fresh["data"]["user"]["orderCount"], 1);

    // A client not there yet: fresh once created.
    let missing = uuid::Uuid::new_v4().to_string();
    kept(&first, user, json!({ "id": missing })).await;

    // A page by creation date: kept through orders of clients it does not show, fresh when
    // a client comes (through the other instance).
    let newest = "{ users(first: 1) { totalCount nodes { name orderCount } } }";
    let page = kept(&first, newest, json!({})).await;
    // (Both were created at the same moment of the test's clock: either may come first.)
    let (shown, hidden) = if page["data"]["users"]["nodes"][0]["name"] == "Bob" {
        (&bob, &ada)
    } else {
        (&ada, &bob)
    };
    order(&second, hidden, "h-1").await;
    let (cache, _) = ask(&first, newest, json!({})).await;
    assert_eq!(
        cache, "hit",
        "a client not on the page, and orders do not reorder it"
    );
    order(&second, shown, "s-1").await;
    let (cache, fresh) = ask(&first, newest, json!({})).await;
    assert_eq!(cache, "miss");
    assert_eq!(
        fresh["data"]["users"]["nodes"][0]["orderCount"],
        page["data"]["users"]["nodes"][0]["orderCount"]
            .as_i64()
            .unwrap()
            + 1
    );
    kept(&first, newest, json!({})).await;
    second.create_user("Cy", "cy@example.com").await;
    let (cache, fresh) = ask(&first, newest, json!({})).await;
    assert_eq!(cache, "miss", "a client came");
    assert_eq!(fresh["data"]["users"]["totalCount"], 3);

    // A page by score: any client's score may reorder it.
    let top = "{ users(first: 1, orderBy: { field: ENGAGEMENT_SCORE, direction: ASC }) { nodes { name } } }";
    kept(&first, top, json!({})).await;
    second
        .gql(
            "mutation($u: ID!) { setEngagementScore(userId: $u, score: 1, reason: \"test\") { id } }",
            json!({ "u": ada }),
        )
        .await;
    let (cache, fresh) = ask(&first, top, json!({})).await;
    assert_eq!(cache, "miss");
    assert_eq!(fresh["data"]["users"]["nodes"][0]["name"], "Ada");

    // The summary reads everything.
    let summary = "{ engagementSummary { users } }";
    kept(&first, summary, json!({})).await;
    second.create_user("Dee", "dee@example.com").await;
    let (cache, fresh) = ask(&first, summary, json!({})).await;
    assert_eq!(cache, "miss");
    assert_eq!(fresh["data"]["engagementSummary"]["users"], 4);

    // Emails: the list is fresh once one is written (Ada's low score above brings her a
    // template email, whichever instance writes it).
    let list = "{ emails(first: 5) { totalCount nodes { id user { name } } } }";
    let email = "query($id: ID!) { email(id: $id) { subject } }";
    let mut written = Value::Null;
    for _ in 0..100 {
        let (_, body) = ask(&first, list, json!({})).await;
        // The list and its count are two statements: one answer may see the count move and
        // not yet the row (or the reverse) while the email is being written.
        let emails = &body["data"]["emails"];
        if emails["totalCount"] == 1 && emails["nodes"].as_array().is_some_and(|n| n.len() == 1) {
            written = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        written["data"]["emails"]["nodes"][0]["user"]["name"], "Ada",
        "{written}"
    );
    let id = written["data"]["emails"]["nodes"][0]["id"].clone();
    let one = kept(&first, email, json!({ "id": id })).await;
    assert!(one["data"]["email"]["subject"].is_string());
    // Bob's order leaves Ada's email alone (asked a few times: Ada's own delivery may move
    // it meanwhile); Ada's erasure does not.
    let mut outlived = false;
    for n in 0..5 {
        kept(&first, email, json!({ "id": id })).await;
        order(&second, &bob, &format!("b-3-{n}")).await;
        if ask(&first, email, json!({ "id": id })).await.0 == "hit" {
            outlived = true;
            break;
        }
    }
    assert!(
        outlived,
        "another client's order dropped the email's answer"
    );
    second
        .gql_ok(
            common::ADMIN,
            "mutation($u: ID!) { eraseUser(id: $u, reason: \"ticket 9\") }",
            json!({ "u": ada }),
        )
        .await;
    let (cache, fresh) = ask(&first, email, json!({ "id": id })).await;
    assert_eq!(cache, "miss");
    assert_ne!(
        fresh["data"]["email"]["subject"], one["data"]["email"]["subject"],
        "{fresh}"
    );
}
