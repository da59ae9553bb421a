//! The GraphQL API end to end: real HTTP against a spawned server with its own database.

mod common;

use api::http::rate_limit::RateLimit;
use chrono::Duration;
use common::{spawn_app, spawn_app_rate_limited, ADMIN, OPERATOR, VIEWER};
use domain::client::{ClientAction, EmailContent, Generator, RecordEmail};
use projections::commands::CommandMetadata;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const USER_FIELDS: &str =
    "id name email preferredCategories orderCount averageOrderValue lastOrderDate
    engagementScore atRisk scoreBreakdown { policy score band factors { name points detail } asOf }
    lastEmailDate status createdAt updatedAt version";

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_client_lives_through_every_mutation_and_each_reads_its_own_write(pool: PgPool) {
    let app = spawn_app(pool).await;
    let created = app
        .gql(
            &format!("mutation($i: CreateUserInput!) {{ createUser(input: $i) {{ {USER_FIELDS} }} }}"),
            json!({ "i": { "name": " Ada Lovelace ", "email": "ada@example.com", "preferredCategories": ["Denim", "denim", "Shoes"],
                           "orderCount": 4, "averageOrderValue": "62.50", "lastOrderDate": "2026-02-01T00:00:00Z" } }),
        )
        .await;
    let user = &created["createUser"];
    let id = user["id"].as_str().unwrap().to_owned();
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["preferredCategories"], json!(["Denim", "Shoes"]));
    assert_eq!(user["orderCount"], 4);
    assert_eq!(user["averageOrderValue"], "62.50");
    assert_eq!(user["status"], "ACTIVE");
    assert_eq!(user["scoreBreakdown"]["policy"], "cadence-v2");
    assert!(user["version"].as_i64().unwrap() >= 2);

    // Read-your-writes: the mutation's answer and an immediate query agree.
    let read = app
        .gql(
            &format!("query($id: ID!) {{ user(id: $id) {{ {USER_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await;
    assert_eq!(read["user"], *user);

    let order = "mutation($u: ID!, $o: PlaceOrderInput!) { placeOrder(userId: $u, input: $o) { orderCount averageOrderValue lastOrderDate version } }";
    let vars = json!({ "u": id, "o": { "orderId": "A-1", "amount": "12.50", "placedAt": "2026-03-01T10:00:00Z" } });
    let first = app.gql(order, vars.clone()).await;
    assert_eq!(first["placeOrder"]["orderCount"], 5);
    assert_eq!(first["placeOrder"]["averageOrderValue"], "52.50");
    let again = app.gql(order, vars).await;
    assert_eq!(
        again["placeOrder"], first["placeOrder"],
        "the same orderId is recorded once"
    );

    let updated = app
        .gql(
            "mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { name email } }",
            json!({ "id": id, "i": { "name": "Ada King", "email": "ada.king@example.com" } }),
        )
        .await;
    assert_eq!(
        updated["updateUser"],
        json!({ "name": "Ada King", "email": "ada.king@example.com" })
    );

    let manual = app
        .gql(
            "mutation($u: ID!) { setEngagementScore(userId: $u, score: 12, reason: \"demo\") { engagementScore atRisk scoreBreakdown { policy factors { detail } } } }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(manual["setEngagementScore"]["engagementScore"], 12);
    assert_eq!(manual["setEngagementScore"]["atRisk"], true);
    assert_eq!(
        manual["setEngagementScore"]["scoreBreakdown"]["policy"],
        "manual"
    );
    assert!(
        manual["setEngagementScore"]["scoreBreakdown"]["factors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("demo")
    );

    let rescored = app
        .gql("mutation($u: ID!) { rescoreUser(userId: $u) { engagementScore scoreBreakdown { policy } } }", json!({ "u": id }))
        .await;
    assert_eq!(
        rescored["rescoreUser"]["scoreBreakdown"]["policy"],
        "cadence-v2"
    );

    let unsubscribed = app
        .gql(
            "mutation($u: ID!) { unsubscribeUser(userId: $u) { status } }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(unsubscribed["unsubscribeUser"]["status"], "UNSUBSCRIBED");

    let deleted = app
        .gql_ok(
            ADMIN,
            "mutation($u: ID!) { deleteUser(id: $u) }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(deleted["deleteUser"], id);
    let gone = app
        .gql(
            "query($id: ID!) { user(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(gone["user"]["status"], "DELETED");
    let (code, body) = app
        .error_code(
            Some(OPERATOR),
            "mutation($u: ID!) { rescoreUser(userId: $u) { id } }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(code, "CONFLICT", "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("deleted"));
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn bad_input_names_the_field_and_changes_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = app.create_user("Grace", "grace@example.com").await;
    let before = app.event_count().await;
    let create = "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }";
    let cases = [
        (create, json!({ "i": { "name": "X", "email": "not-an-email" } }), "email"),
        (create, json!({ "i": { "name": "   ", "email": "x@example.com" } }), "name"),
        (create, json!({ "i": { "name": "X", "email": "x@example.com", "orderCount": -1 } }), "orderCount"),
        (create, json!({ "i": { "name": "X", "email": "x@example.com", "averageOrderValue": "1.234" } }), "averageOrderValue"),
        (
            "mutation($u: ID!) { placeOrder(userId: $u, input: { orderId: \"o\", amount: \"-5\" }) { id } }",
            json!({ "u": id }),
            "amount",
        ),
        ("mutation($u: ID!) { setEngagementScore(userId: $u, score: 101) { id } }", json!({ "u": id }), "score"),
        ("mutation { rescoreUser(userId: \"not-a-uuid\") { id } }", json!({}), "userId"),
    ];
    for (query, variables, field) in cases {
        let (code, body) = app.error_code(Some(OPERATOR), query, variables).await;
        assert_eq!(code, "VALIDATION", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let (code, _) = app
        .error_code(
            Some(OPERATOR),
            "mutation($u: ID!) { rescoreUser(userId: $u) { id } }",
            json!({ "u": Uuid::new_v4() }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    assert_eq!(app.event_count().await, before, "nothing was appended");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn users_filter_order_and_page_with_cursors(pool: PgPool) {
    let app = spawn_app(pool).await;
    let names = ["Bea", "alan", "Cleo", "dora", "Eve", "fred", "Gus"];
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        ids.push(
            app.create_user(name, &format!("{}@shop{i}.example", name.to_lowercase()))
                .await,
        );
    }
    for (i, id) in ids.iter().enumerate() {
        app.gql(
            "mutation($u: ID!, $s: Int!) { setEngagementScore(userId: $u, score: $s) { id } }",
            json!({ "u": id, "s": i * 15 }),
        )
        .await;
    }
    let page = "query($after: String) { users(orderBy: {field: NAME, direction: ASC}, first: 3, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { cursor node { name } } nodes { name } } }";
    let mut seen = Vec::new();
    let mut after = serde_json::Value::Null;
    loop {
        let data = app.gql(page, json!({ "after": after })).await;
        let users = &data["users"];
        assert_eq!(users["totalCount"], 7);
        assert_eq!(
            users["edges"].as_array().unwrap().len(),
            users["nodes"].as_array().unwrap().len()
        );
        seen.extend(
            users["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_owned()),
        );
        if !users["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = users["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(
        seen,
        ["alan", "Bea", "Cleo", "dora", "Eve", "fred", "Gus"],
        "case-insensitive, no gaps, no repeats"
    );

    let at_risk = app
        .gql("{ users(filter: {atRisk: true}, orderBy: {field: ENGAGEMENT_SCORE, direction: DESC}) { totalCount nodes { engagementScore } } }", json!({}))
        .await;
    let scores: Vec<i64> = at_risk["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["engagementScore"].as_i64().unwrap())
        .collect();
    assert_eq!(scores, [45, 30, 15, 0]);
    let ranged = app
        .gql(
            "{ users(filter: {minScore: 30, maxScore: 60}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(ranged["users"]["totalCount"], 3);
    let searched = app
        .gql(
            "{ users(filter: {search: \"SHOP3\"}) { nodes { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(searched["users"]["nodes"], json!([{ "name": "dora" }]));
    let by_category = app
        .gql(
            "{ users(filter: {category: \"Denim\"}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(by_category["users"]["totalCount"], 7);
    let capped = app
        .gql("{ users(first: 100000) { nodes { id } } }", json!({}))
        .await;
    assert_eq!(capped["users"]["nodes"].as_array().unwrap().len(), 7);
    let (code, body) = app
        .error_code(
            Some(VIEWER),
            "{ users(after: \"garbage\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        (
            code.as_str(),
            body["errors"][0]["extensions"]["field"].as_str()
        ),
        ("VALIDATION", Some("after"))
    );
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn history_shows_every_event_with_metadata_and_as_of_replays_the_past(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(OPERATOR)
        .header("X-Correlation-Id", "ticket-42")
        .json(&json!({ "query": "mutation { createUser(input: {name: \"Hedy\", email: \"hedy@example.com\"}) { id } }" }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    let id = body["data"]["createUser"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(Duration::days(10));
    app.gql(
        "mutation($u: ID!) { setEngagementScore(userId: $u, score: 77, reason: \"audit\") { id } }",
        json!({ "u": id }),
    )
    .await;

    let history = app
        .gql_ok(
            VIEWER,
            "query($u: ID!) { userHistory(userId: $u) { totalCount nodes { globalPosition userId sequence type version recordedAt payload metadata } } }",
            json!({ "u": id }),
        )
        .await;
    let events = history["userHistory"]["nodes"].as_array().unwrap();
    assert_eq!(history["userHistory"]["totalCount"], events.len());
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["UserCreated", "UserScored", "UserScored"]);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"], i + 1);
        assert_eq!(e["version"], "1.0");
        assert_eq!(e["metadata"]["actor"], "operator:ops");
        assert!(e["metadata"]["requestId"].is_string());
    }
    assert_eq!(events[0]["metadata"]["correlationId"], "ticket-42");
    assert_eq!(events[0]["payload"]["name"], "Hedy");
    assert_eq!(events[2]["payload"]["reason"], "audit");
    assert!(events[0]["globalPosition"].as_i64() < events[2]["globalPosition"].as_i64());

    let state = "query($u: ID!, $at: DateTime, $v: Int) { userAsOf(userId: $u, at: $at, version: $v) { engagementScore version asOf name } }";
    let v2 = app.gql(state, json!({ "u": id, "v": 2 })).await;
    let current = app
        .gql(
            "query($u: ID!) { user(id: $u) { engagementScore } }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(current["user"]["engagementScore"], 77);
    assert_eq!(v2["userAsOf"]["version"], 2);
    assert_ne!(
        v2["userAsOf"]["engagementScore"], 20,
        "version 2 predates the manual score"
    );
    let before_override = app
        .gql(state, json!({ "u": id, "at": "2026-03-05T00:00:00Z" }))
        .await;
    assert_eq!(
        before_override["userAsOf"]["engagementScore"],
        v2["userAsOf"]["engagementScore"]
    );
    assert_eq!(
        before_override["userAsOf"]["asOf"],
        "2026-03-05T00:00:00+00:00"
    );
    let before_creation = app
        .gql(state, json!({ "u": id, "at": "2020-01-01T00:00:00Z" }))
        .await;
    assert!(before_creation["userAsOf"].is_null());
    let (code, _) = app
        .error_code(Some(VIEWER), state, json!({ "u": id, "v": 99 }))
        .await;
    assert_eq!(code, "VALIDATION");

    // Pages of history through cursors.
    let first = app
        .gql("query($u: ID!) { userHistory(userId: $u, first: 2) { pageInfo { hasNextPage endCursor } nodes { sequence } } }", json!({ "u": id }))
        .await;
    assert_eq!(first["userHistory"]["pageInfo"]["hasNextPage"], true);
    let cursor = first["userHistory"]["pageInfo"]["endCursor"].clone();
    let rest = app
        .gql("query($u: ID!, $c: String) { userHistory(userId: $u, after: $c) { nodes { sequence } } }", json!({ "u": id, "c": cursor }))
        .await;
    assert_eq!(rest["userHistory"]["nodes"], json!([{ "sequence": 3 }]));
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn emails_summary_jobs_and_health_read_their_models(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let id = app.create_user("Ida", "ida@example.com").await;
    // An email recorded through the command path, as the process manager does.
    let bus = projections::commands::CommandBus::new(
        pool.clone(),
        test_vault(),
        Default::default(),
        app.clock.clone(),
    );
    let email_id = Uuid::new_v4();
    let committed = bus
        .execute(
            id.parse().unwrap(),
            ClientAction::RecordEmail(RecordEmail {
                email_id,
                content: EmailContent {
                    subject: "We saved you a seat".into(),
                    preheader: "New in denim".into(),
                    text: "Hi Ida".into(),
                    html: "<p>Hi Ida</p>".into(),
                    generator: Generator {
                        kind: "template".into(),
                        model: "v1".into(),
                    },
                    usage: None,
                },
                trigger: None,
                delivery: domain::client::DeliveryMode::Off,
            }),
            &CommandMetadata::for_actor("process-manager"),
        )
        .await
        .unwrap();
    let emails_consumer = projections::log::consumer::Consumer::new(
        pool.clone(),
        test_vault(),
        projections::views::emails::EmailsView::live(),
        Default::default(),
        projections::log::consumer::LogSignal::new(),
    );
    emails_consumer
        .handle()
        .wait_for(committed.position, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    // lastEmailDate comes from the users view, another consumer: wait for it too.
    let users_consumer = projections::log::consumer::Consumer::new(
        pool.clone(),
        test_vault(),
        projections::views::users::UsersView::live(),
        Default::default(),
        projections::log::consumer::LogSignal::new(),
    );
    users_consumer
        .handle()
        .wait_for(committed.position, std::time::Duration::from_secs(5))
        .await
        .unwrap();

    let data = app
        .gql(
            "query($u: ID!, $e: ID!) {
               email(id: $e) { id subject html text status generator engagementScoreAtTime user { name } }
               emails(userId: $u, status: WOULD_SEND) { totalCount nodes { id } }
               user(id: $u) { lastEmailDate emails { totalCount nodes { subject } } }
               engagementSummary { users atRisk averageScore emails scoreHistogram }
               health { status version database emailWriter projectionLag }
             }",
            json!({ "u": id, "e": email_id }),
        )
        .await;
    assert_eq!(data["email"]["subject"], "We saved you a seat");
    assert_eq!(data["email"]["status"], "WOULD_SEND");
    assert_eq!(data["email"]["generator"], "template:v1");
    assert_eq!(data["email"]["user"]["name"], "Ida");
    assert_eq!(data["emails"]["totalCount"], 1);
    assert_eq!(
        data["user"]["emails"]["nodes"][0]["subject"],
        "We saved you a seat"
    );
    assert!(data["user"]["lastEmailDate"].is_string());
    assert_eq!(data["engagementSummary"]["users"], 1);
    assert_eq!(data["engagementSummary"]["emails"], 1);
    assert_eq!(
        data["engagementSummary"]["scoreHistogram"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(data["health"]["database"], "up");
    assert_eq!(data["health"]["status"], "ok");

    // A dead job, put back by an admin; an operator may not.
    let job = Uuid::new_v4();
    sqlx::query(
        "insert into email_jobs (id, user_id, trigger_position, trigger_sequence, score, status, attempts, last_error, next_attempt_at, created_at, updated_at)
         values ($1, $2, 1, 2, 10, 'DEAD', 5, 'HTTP 500 from the provider', now(), now(), now())",
    )
    .bind(job)
    .bind(Uuid::parse_str(&id).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let jobs = app
        .gql(
            "{ emailJobs(status: DEAD) { totalCount nodes { id status attempts lastError } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        jobs["emailJobs"]["nodes"][0]["lastError"],
        "HTTP 500 from the provider"
    );
    let (code, _) = app
        .error_code(
            Some(OPERATOR),
            "mutation($j: ID!) { retryEmailJob(id: $j) { id } }",
            json!({ "j": job }),
        )
        .await;
    assert_eq!(code, "FORBIDDEN");
    let retried = app
        .gql_ok(
            ADMIN,
            "mutation($j: ID!) { retryEmailJob(id: $j) { status attempts } }",
            json!({ "j": job }),
        )
        .await;
    assert_eq!(
        retried["retryEmailJob"],
        json!({ "status": "PENDING", "attempts": 0 })
    );
    let (code, _) = app
        .error_code(
            Some(ADMIN),
            "mutation($j: ID!) { retryEmailJob(id: $j) { id } }",
            json!({ "j": job }),
        )
        .await;
    assert_eq!(code, "CONFLICT", "a pending job cannot be retried");

    let health: serde_json::Value = app
        .client
        .get(format!("{}/api/health", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["dependencies"]["database"], "up");
    assert!(health["dependencies"]["emailWriter"].is_string());
    assert!(health["timestamp"].is_string());
    assert!(health["projectionLag"].is_number());
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn every_operation_needs_a_token_and_roles_limit_what_it_may_do(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = app.create_user("Joan", "joan@example.com").await;
    let before = app.event_count().await;
    for query in [
        "{ users { totalCount } }",
        "{ health { status } }",
        "mutation { createUser(input: {name: \"X\", email: \"x@example.com\"}) { id } }",
    ] {
        let (status, body) = app.gql_as(None, query, json!({})).await;
        assert_eq!(status, 401);
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{body}"
        );
        let (_, body) = app.gql_as(Some("wrong-token"), query, json!({})).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    let (code, _) = app
        .error_code(
            Some(VIEWER),
            "mutation($u: ID!) { unsubscribeUser(userId: $u) { id } }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(code, "FORBIDDEN");
    let (code, _) = app
        .error_code(
            Some(OPERATOR),
            "mutation($u: ID!) { deleteUser(id: $u) }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(code, "FORBIDDEN");
    assert_eq!(
        app.event_count().await,
        before,
        "refused operations changed nothing"
    );
    // `viewer` tells each caller who they are, so that a client shows only what they may do.
    for (token, actor, role) in [
        (VIEWER, "viewer:watcher", "VIEWER"),
        (OPERATOR, "operator:ops", "OPERATOR"),
        (ADMIN, "admin:root", "ADMIN"),
    ] {
        let data = app
            .gql_ok(token, "{ viewer { actor role } }", json!({}))
            .await;
        assert_eq!(data["viewer"], json!({ "actor": actor, "role": role }));
    }
    let (status, _) = app.gql_as(None, "{ viewer { role } }", json!({})).await;
    assert_eq!(status, 401);
    // Health endpoints, the playground and the dashboard's page and code need no token.
    for path in [
        "/healthz",
        "/readyz",
        "/api/health",
        "/graphql",
        "/assets/vendor/graphiql.min.js",
        "/",
        "/assets/app/js/app.js",
        "/assets/app/style.css",
    ] {
        let status = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn hostile_requests_are_refused_and_change_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = app.create_user("Kim", "kim@example.com").await;
    let before = app.event_count().await;
    let mutation = json!({ "query": "mutation { createUser(input: {name: \"CSRF\", email: \"csrf@example.com\"}) { id } }" }).to_string();
    let url = format!("{}/graphql", app.address);

    // A form post from another site: text/plain.
    let r = app
        .client
        .post(&url)
        .bearer_auth(OPERATOR)
        .header("content-type", "text/plain")
        .body(mutation.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // No content type at all.
    let r = app
        .client
        .post(&url)
        .bearer_auth(OPERATOR)
        .body(mutation.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Over 1 MB.
    let huge =
        json!({ "query": format!("{{ users {{ totalCount }} }} #{}", "x".repeat(1_100_000)) })
            .to_string();
    let r = app
        .client
        .post(&url)
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Batched.
    let batch = format!("[{mutation}, {mutation}]");
    let r = app
        .client
        .post(&url)
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("batched"));
    // A mutation over GET.
    let r = app
        .client
        .get(&url)
        .bearer_auth(OPERATOR)
        .query(&[(
            "query",
            "mutation { createUser(input: {name: \"GET\", email: \"get@example.com\"}) { id } }",
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // A query over GET is fine.
    let r = app
        .client
        .get(&url)
        .bearer_auth(VIEWER)
        .query(&[("query", "{ users { totalCount } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["data"]["users"]["totalCount"], 1);

    // Too deep: email > (user > emails > nodes) x 5 > name is 17 levels.
    let deep = format!(
        "query($u: ID!) {{ email(id: $u) {{ {} name {} }} }}",
        "user { emails(first: 1) { nodes { ".repeat(5),
        "} } } ".repeat(5)
    );
    let (code, body) = app
        .error_code(Some(VIEWER), &deep, json!({ "u": id }))
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too deep"),
        "{body}"
    );
    assert_eq!(code, "VALIDATION");
    // Too complex: 200 users x 200 emails x their fields.
    let wide = "{ users(first: 200) { nodes { emails(first: 200) { nodes { id subject html text user { name } } } } } }";
    let (code, body) = app.error_code(Some(VIEWER), wide, json!({})).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("complex"),
        "{body}"
    );
    assert_eq!(code, "VALIDATION");
    // Too many aliases.
    let aliases: String = (0..40)
        .map(|i| format!("a{i}: health {{ status }} "))
        .collect();
    let (code, body) = app
        .error_code(Some(VIEWER), &format!("{{ {aliases} }}"), json!({}))
        .await;
    assert_eq!(code, "VALIDATION", "{body}");

    assert_eq!(app.event_count().await, before, "nothing was appended");
    let count = app.gql("{ users { totalCount } }", json!({})).await;
    assert_eq!(count["users"]["totalCount"], 1);
}

#[test]
fn schema_graphql_is_generated_from_the_code() {
    let current = api::graphql::sdl(&api::graphql::schema_for_export());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "schema.graphql is stale: run `cargo run --bin engagement -- schema > schema.graphql` (or UPDATE_SCHEMA=1 cargo test)"
    );
}

/// graphql-js's `getIntrospectionQuery()`, as GraphiQL sends it when the playground opens.
const INTROSPECTION: &str = r#"query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}"#;

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_playground_can_introspect_the_schema_within_the_limits(pool: PgPool) {
    let app = spawn_app(pool).await;
    let data = app.gql_ok(VIEWER, INTROSPECTION, json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    assert_eq!(data["__schema"]["subscriptionType"]["name"], "Subscription");
    let page = app
        .client
        .get(format!("{}/graphql", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("/assets/vendor/graphiql.min.js") && !page.contains("cdn"),
        "served from the binary"
    );
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_dashboard_is_served_from_the_binary_under_a_strict_policy(pool: PgPool) {
    let app = spawn_app(pool).await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.address)).send();
    let page = get("/").await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app/js/app.js">"#));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
    let js = get("/assets/app/js/views/user.js").await.unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    for missing in [
        "/assets/app/js/nope.js",
        "/assets/app/../../Cargo.toml",
        "/assets/app/%2e%2e/%2e%2e/Cargo.toml",
        "/assets/app/index.html",
    ] {
        assert_eq!(get(missing).await.unwrap().status(), 404, "{missing}");
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_token_over_its_request_budget_is_refused_and_changes_nothing(pool: PgPool) {
    let app = spawn_app_rate_limited(
        pool,
        RateLimit {
            per_second: 1,
            burst: 3,
        },
    )
    .await;
    let id = app.create_user("Grace", "grace@example.com").await; // one of the operator's three
    for _ in 0..2 {
        app.gql("{ users { totalCount } }", json!({})).await;
    }
    let before = app.event_count().await;
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(OPERATOR)
        .json(&json!({
            "query": "mutation($u: ID!) { unsubscribeUser(userId: $u) { id } }",
            "variables": { "u": id },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );
    assert_eq!(
        app.event_count().await,
        before,
        "the refused mutation did nothing"
    );
    // Another token has its own budget.
    app.gql_ok(VIEWER, "{ users { totalCount } }", json!({}))
        .await;
    // And the operator's comes back at the sustained rate.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let data = app
        .gql(
            "mutation($u: ID!) { unsubscribeUser(userId: $u) { status } }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(data["unsubscribeUser"]["status"], "UNSUBSCRIBED");
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
