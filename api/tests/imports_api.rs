//! External ids, `importOrders` and `cancelOrder` over GraphQL.

mod common;

use chrono::Duration;
use common::{spawn_app, OPERATOR};
use projections::clock::Clock as _;
use serde_json::json;
use sqlx::PgPool;

const CREATE: &str = "mutation($e: String) { createUser(input: { name: \"Mae Jemison\", email: \"mae@example.com\", externalId: $e }) { id externalId } }";
const IMPORT: &str = "mutation($o: [ImportOrderInput!]!) { importOrders(orders: $o) { accepted duplicates rejected { index field message } } }";

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn external_ids_reach_the_same_client_and_can_be_given_later(pool: PgPool) {
    let app = spawn_app(pool).await;
    let first = app
        .gql_ok(OPERATOR, CREATE, json!({ "e": "  ext-7 " }))
        .await;
    let again = app.gql_ok(OPERATOR, CREATE, json!({ "e": "ext-7" })).await;
    assert_eq!(first["createUser"]["id"], again["createUser"]["id"]);
    assert_eq!(first["createUser"]["externalId"], "ext-7");
    let found = app
        .gql_ok(
            OPERATOR,
            "query { userByExternalId(externalId: \"ext-7\") { id } nobody: userByExternalId(externalId: \"none\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(found["userByExternalId"]["id"], first["createUser"]["id"]);
    assert!(found["nobody"].is_null());

    let plain = app.gql_ok(OPERATOR, CREATE, json!({ "e": null })).await;
    let id = plain["createUser"]["id"].as_str().unwrap().to_owned();
    let give = "mutation($id: ID!, $e: String!) { updateUser(id: $id, input: { externalId: $e }) { externalId } }";
    let code = app
        .error_code(Some(OPERATOR), give, json!({ "id": id, "e": "ext-7" }))
        .await;
    assert_eq!(code.0, "VALIDATION", "{}", code.1);
    let given = app
        .gql_ok(OPERATOR, give, json!({ "id": id, "e": "ext-8" }))
        .await;
    assert_eq!(given["updateUser"]["externalId"], "ext-8");
    let code = app
        .error_code(Some(OPERATOR), CREATE, json!({ "e": "" }))
        .await;
    assert_eq!(code.0, "VALIDATION", "{}", code.1);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn import_orders_reports_each_row_and_cancel_order_stops_one_counting(pool: PgPool) {
    let app = spawn_app(pool).await;
    let created = app.gql_ok(OPERATOR, CREATE, json!({ "e": "imp-1" })).await;
    let id = created["createUser"]["id"].as_str().unwrap().to_owned();
    let at = app.clock.now() - Duration::days(30);
    let orders = json!([
        { "externalId": "imp-1", "orderId": "1", "amount": "10.00", "placedAt": at },
        { "externalId": "imp-1", "orderId": "2", "amount": "30.00", "placedAt": at + Duration::days(1), "categories": ["Tops"] },
        { "externalId": "imp-1", "orderId": "1", "amount": "10.00", "placedAt": at },
        { "externalId": "ghost", "orderId": "3", "amount": "1.00", "placedAt": at },
        { "externalId": "imp-1", "orderId": "4", "amount": "-1", "placedAt": at },
        { "externalId": "imp-1", "orderId": "5", "amount": "1", "placedAt": app.clock.now() + Duration::days(2) },
    ]);
    let result = app.gql_ok(OPERATOR, IMPORT, json!({ "o": orders })).await["importOrders"].clone();
    assert_eq!(result["accepted"], 2);
    assert_eq!(result["duplicates"], 1);
    let rejected: Vec<(i64, String)> = result["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_i64().unwrap(),
                r["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![
            (3, "externalId".into()),
            (4, "amount".into()),
            (5, "placedAt".into())
        ]
    );
    // The answer came after the users view had the orders.
    let user = app
        .gql_ok(
            OPERATOR,
            "query($id: ID!) { user(id: $id) { orderCount totalSpent } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(user["user"]["orderCount"], 2);
    // Again: all duplicates.
    let again = app.gql_ok(OPERATOR, IMPORT, json!({ "o": orders })).await["importOrders"].clone();
    assert_eq!(
        (again["accepted"].as_i64(), again["duplicates"].as_i64()),
        (Some(0), Some(3))
    );

    let cancel = "mutation($id: ID!) { cancelOrder(userId: $id, orderId: \"2\", reason: \"refunded\") { orderCount totalSpent averageOrderValue } }";
    let cancelled = app.gql_ok(OPERATOR, cancel, json!({ "id": id })).await;
    assert_eq!(cancelled["cancelOrder"]["orderCount"], 1);
    assert_eq!(cancelled["cancelOrder"]["totalSpent"], "10.00");
    let twice = app.gql_ok(OPERATOR, cancel, json!({ "id": id })).await;
    assert_eq!(twice["cancelOrder"]["orderCount"], 1);
    let unknown = app
        .error_code(
            Some(OPERATOR),
            "mutation($id: ID!) { cancelOrder(userId: $id, orderId: \"nope\") { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(unknown.0, "VALIDATION", "{}", unknown.1);

    let too_many: Vec<_> = (0..1001)
        .map(|i| json!({ "externalId": "imp-1", "orderId": format!("m{i}"), "amount": "1", "placedAt": at }))
        .collect();
    let code = app
        .error_code(Some(OPERATOR), IMPORT, json!({ "o": too_many }))
        .await;
    assert_eq!(code.0, "VALIDATION", "{}", code.1);
}
