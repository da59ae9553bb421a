//! A list page reads only the view columns its fields need (the rest are not read): every
//! field of `User` and `Email`, asked alone on a page, must answer exactly what the same field
//! answers when the object is loaded whole (`user(id:)`, `email(id:)` read every column). The
//! fields come from the schema itself, so a field added later without its columns is caught.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{spawn_app, TestApp};
use serde_json::json;
use sqlx::PgPool;

/// The schema's object types: field name to its type's (unwrapped) kind and name, for the
/// fields that take no required argument.
type Fields = Vec<(String, String, String)>;

async fn object_types(app: &TestApp) -> HashMap<String, Fields> {
    let data = app
        .gql(
            "{ __schema { types { name kind fields { name
                 args { type { kind } defaultValue }
                 type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }",
            json!({}),
        )
        .await;
    let mut out = HashMap::new();
    for t in data["__schema"]["types"].as_array().unwrap() {
        if t["kind"] != "OBJECT" {
            continue;
        }
        let mut fields = Vec::new();
        for f in t["fields"].as_array().unwrap() {
            let required = f["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["type"]["kind"] == "NON_NULL" && a["defaultValue"].is_null());
            if required {
                continue;
            }
            let mut ty = &f["type"];
            while ty["name"].is_null() {
                ty = &ty["ofType"];
            }
            fields.push((
                f["name"].as_str().unwrap().to_owned(),
                ty["kind"].as_str().unwrap().to_owned(),
                ty["name"].as_str().unwrap().to_owned(),
            ));
        }
        out.insert(t["name"].as_str().unwrap().to_owned(), fields);
    }
    out
}

/// A selection of `field` of `parent`: a leaf as is, an object with its leaves and, while
/// `depth` lasts, its objects' leaves.
fn select(
    types: &HashMap<String, Fields>,
    kind: &str,
    name: &str,
    field: &str,
    depth: u8,
) -> String {
    if kind != "OBJECT" {
        return field.to_owned();
    }
    let inner: Vec<String> = types[name]
        .iter()
        .filter(|(_, k, _)| k != "OBJECT" || depth > 0)
        .map(|(f, k, n)| select(types, k, n, f, depth.saturating_sub(1)))
        .collect();
    format!("{field} {{ __typename {} }}", inner.join(" "))
}

async fn wait_for_emails(app: &TestApp, users: &[String], within: Duration) {
    let start = Instant::now();
    loop {
        let data = app
            .gql(
                "{ users(first: 10) { nodes { id emails { totalCount } } } }",
                json!({}),
            )
            .await;
        let written = data["users"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| users.contains(&u["id"].as_str().unwrap().to_owned()))
            .all(|u| u["emails"]["totalCount"].as_i64().unwrap() > 0);
        if written {
            return;
        }
        assert!(start.elapsed() < within, "no emails after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Five clients whose columns are all unlike the empty values a page holds in place of those it
/// does not read, created an hour apart, each with their own score (the lowest two are at risk
/// and written to); how many.
async fn five_clients(app: &TestApp) -> usize {
    // Clients whose columns are all unlike the constants a page reads in their place, created
    // an hour apart, each with their own score (the lowest two are at risk and written to).
    let mut at_risk = Vec::new();
    let names = [
        "Ada Lovelace",
        "Grace Hopper",
        "Alan Turing",
        "Edsger Dijkstra",
        "Barbara Liskov",
    ];
    for (n, name) in names.iter().enumerate() {
        app.clock.advance(chrono::Duration::hours(1));
        let data = app
            .gql(
                "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                json!({ "i": {
                    "name": name, "email": format!("client{n}@example.com"),
                    "preferredCategories": ["Denim", "Knitwear"], "externalId": format!("X-{n}"),
                    "orderCount": 4, "averageOrderValue": "61.50",
                    "lastOrderDate": "2026-01-10T10:00:00Z" } }),
            )
            .await;
        let id = data["createUser"]["id"].as_str().unwrap().to_owned();
        app.gql(
            "mutation($u: ID!, $o: ID!) { placeOrder(userId: $u, input: { orderId: $o, amount: \"42.10\" }) { id } }",
            json!({ "u": id, "o": format!("order-{n}") }),
        )
        .await;
        let score = [30, 90, 12, 71, 55][n];
        app.gql(
            "mutation($u: ID!, $s: Int!) { setEngagementScore(userId: $u, score: $s) { id } }",
            json!({ "u": id, "s": score }),
        )
        .await;
        if score < 40 {
            at_risk.push(id);
        }
    }
    wait_for_emails(app, &at_risk, Duration::from_secs(10)).await;
    names.len()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn each_field_on_a_page_answers_what_the_whole_object_answers(pool: PgPool) {
    let app = spawn_app(pool).await;
    let clients = five_clients(&app).await;
    let types = object_types(&app).await;
    let mut compared = 0;
    for (field, kind, name) in &types["User"] {
        let selection = select(&types, kind, name, field, 1);
        for list in ["nodes { id", "edges { node { id"] {
            let close = if list.starts_with("edges") {
                "} }"
            } else {
                "}"
            };
            let query = format!("{{ users(first: 10) {{ {list} {selection} {close} }} }}");
            let page = app.gql(&query, json!({})).await;
            let key = if list.starts_with("edges") {
                "edges"
            } else {
                "nodes"
            };
            for item in page["users"][key].as_array().unwrap() {
                let node = if key == "edges" { &item["node"] } else { item };
                let whole = app
                    .gql(
                        &format!("query($u: ID!) {{ user(id: $u) {{ {selection} }} }}"),
                        json!({ "u": node["id"] }),
                    )
                    .await;
                assert_eq!(
                    node[field.as_str()],
                    whole["user"][field.as_str()],
                    "User.{field} on a page ({query}) differs from the whole client"
                );
                compared += 1;
            }
        }
    }
    for (field, kind, name) in &types["Email"] {
        let selection = select(&types, kind, name, field, 1);
        let query = format!(
            "{{ users(first: 10) {{ nodes {{ emails(first: 5) {{ nodes {{ id {selection} }} edges {{ node {{ id {selection} }} }} }} }} }} }}"
        );
        let page = app.gql(&query, json!({})).await;
        for user in page["users"]["nodes"].as_array().unwrap() {
            let emails = &user["emails"];
            let nodes = emails["nodes"].as_array().unwrap().iter();
            let edges = emails["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| &e["node"]);
            for node in nodes.chain(edges) {
                let whole = app
                    .gql(
                        &format!("query($e: ID!) {{ email(id: $e) {{ {selection} }} }}"),
                        json!({ "e": node["id"] }),
                    )
                    .await;
                assert_eq!(
                    node[field.as_str()],
                    whole["email"][field.as_str()],
                    "Email.{field} on a page ({query}) differs from the whole email"
                );
                compared += 1;
            }
        }
    }
    // Five clients on two lists for each of User's fields, at least two emails for each of
    // Email's.
    assert!(compared > 10 * types["User"].len(), "compared {compared}");

    // A page showing only ids is in the order of one showing every field, whatever the order.
    let every: Vec<String> = types["User"]
        .iter()
        .map(|(field, kind, name)| select(&types, kind, name, field, 0))
        .collect();
    for field in ["ENGAGEMENT_SCORE", "NAME", "CREATED_AT", "LAST_ORDER_DATE"] {
        for direction in ["ASC", "DESC"] {
            let ids = |selection: String| {
                let query = format!(
                    "{{ users(first: 10, orderBy: {{ field: {field}, direction: {direction} }}) {{ nodes {{ id {selection} }} }} }}"
                );
                let app = &app;
                async move {
                    let data = app.gql(&query, json!({})).await;
                    data["users"]["nodes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|u| u["id"].clone())
                        .collect::<Vec<_>>()
                }
            };
            let narrow = ids(String::new()).await;
            let wide = ids(every.join(" ")).await;
            assert_eq!(narrow.len(), clients);
            assert_eq!(narrow, wide, "ordered by {field} {direction}");
        }
    }
}

/// A page of clients loads the emails it shows with the page (one statement for all of them):
/// whatever the arguments, aliases, fragments and variables, each client's emails there are
/// what the client alone answers (loaded the ordinary way).
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn emails_loaded_with_a_page_are_each_clients_own(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    // Five clients with three emails each, all with bodies of their own.
    common::clients_with_emails(&app, &pool, 5, 3).await;
    let newest = app
        .gql(
            "{ users(first: 10) { nodes { emails(first: 1) { pageInfo { endCursor } } } } }",
            json!({}),
        )
        .await;
    let cursor = newest["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|u| {
            u["emails"]["pageInfo"]["endCursor"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("a client with an email");
    let selections = [
        "emails { totalCount nodes { id subject } pageInfo { hasNextPage endCursor } }",
        "emails(first: 1) { totalCount edges { cursor node { id text } } }",
        "a: emails(first: 1) { nodes { id } } b: emails(first: 3) { nodes { id html generator } }",
        "emails(first: $n, after: $c) { nodes { id status } pageInfo { hasNextPage } }",
        "emails(first: $n) { nodes { id } } ... on User { emails(first: $n) { nodes { subject } } }",
        "...Mail",
        "emails(first: 2, after: null) { nodes { id preheader } }",
        "emails(first: 0) { totalCount nodes { id } }",
    ];
    for selection in selections {
        let fragment = match selection.contains("...Mail") {
            true => " fragment Mail on User { emails(first: 2) { nodes { id sentAt } } }",
            false => "",
        };
        // Variables are declared only where used (an unused one fails validation).
        let mut declared = Vec::new();
        let mut variables = json!({});
        if selection.contains("$n") {
            declared.push("$n: Int");
            variables["n"] = json!(2);
        }
        if selection.contains("$c") {
            declared.push("$c: String");
            variables["c"] = json!(cursor);
        }
        let on_page = match declared.is_empty() {
            true => String::new(),
            false => format!("({})", declared.join(", ")),
        };
        let page = app
            .gql(
                &format!("query{on_page} {{ users(first: 10) {{ nodes {{ id {selection} }} }} }}{fragment}"),
                variables.clone(),
            )
            .await;
        let nodes = page["users"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 5, "{selection}: {page}");
        declared.insert(0, "$u: ID!");
        for node in nodes {
            variables["u"] = node["id"].clone();
            let alone = app
                .gql(
                    &format!(
                        "query({}) {{ user(id: $u) {{ id {selection} }} }}{fragment}",
                        declared.join(", ")
                    ),
                    variables.clone(),
                )
                .await;
            assert_eq!(
                node, &alone["user"],
                "{selection}: a client's emails on a page differ from the client's own"
            );
        }
    }
    // Arguments that are wrong fail the field on the page as they fail it alone.
    for first in ["-1", "2, after: \"not a cursor\""] {
        let (code, body) = app
            .error_code(
                Some(common::OPERATOR),
                &format!("{{ users(first: 10) {{ nodes {{ id emails(first: {first}) {{ nodes {{ id }} }} }} }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(code, "VALIDATION", "{body}");
    }
}
