//! The holdout and the uplift report through the API: with half the clients held out, only
//! the treated are emailed, and orders after the triggers show in the report exactly.

mod common;

use std::time::Duration;

use chrono::Duration as Span;
use common::{spawn_app_holding_out, TestApp, OPERATOR, VIEWER};
use projections::clock::Clock as _;
use serde_json::{json, Value};
use sqlx::PgPool;

const REPORT: &str = "query($w: Int) { engagementUplift(windowDays: $w) {
    windowDays difference differenceLow differenceHigh
    treatment { triggered reactivated rate rateLow rateHigh revenue }
    holdout { triggered reactivated rate rateLow rateHigh revenue } } }";

async fn at_risk(app: &TestApp, n: usize) -> (String, String) {
    let id = app
        .create_user(&format!("Client {n}"), &format!("c{n}@example.com"))
        .await;
    app.gql_ok(
        OPERATOR,
        "mutation($u: ID!) { setEngagementScore(userId: $u, score: 10, reason: \"test\") { id } }",
        json!({ "u": id }),
    )
    .await;
    let group = app
        .gql_ok(
            OPERATOR,
            "query($u: ID!) { user(id: $u) { group } }",
            json!({ "u": id }),
        )
        .await["user"]["group"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, group)
}

async fn wait_for_jobs(app: &TestApp, n: i64) {
    for _ in 0..200 {
        let jobs: i64 = sqlx::query_scalar(
            "select count(*) from email_jobs where status in ('DONE', 'HELD_OUT')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if jobs == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the jobs did not settle");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn only_the_treated_are_emailed_and_the_report_counts_what_followed(pool: PgPool) {
    let app = spawn_app_holding_out(pool, 50).await;
    let mut clients = Vec::new();
    for n in 0..16 {
        clients.push(at_risk(&app, n).await);
    }
    wait_for_jobs(&app, 16).await;
    let treated: Vec<&(String, String)> =
        clients.iter().filter(|(_, g)| g == "TREATMENT").collect();
    let held: Vec<&(String, String)> = clients.iter().filter(|(_, g)| g == "HOLDOUT").collect();
    assert!(
        treated.len() >= 2 && held.len() >= 2,
        "{treated:?} {held:?}"
    );
    for (id, group) in &clients {
        let emails = app
            .gql_ok(
                OPERATOR,
                "query($u: ID!) { user(id: $u) { emails { totalCount } } }",
                json!({ "u": id }),
            )
            .await["user"]["emails"]["totalCount"]
            .as_i64()
            .unwrap();
        assert_eq!(emails, i64::from(group == "TREATMENT"), "{group}");
    }
    // Two days later, one treated and one held-out client order.
    app.clock.advance(Span::days(2));
    let placed_at = app.clock.now() - Span::hours(1);
    for ((id, _), amount) in [(treated[0], "40.00"), (held[0], "25.50")] {
        app.gql_ok(
            OPERATOR,
            "mutation($u: ID!, $i: PlaceOrderInput!) { placeOrder(userId: $u, input: $i) { id } }",
            json!({ "u": id, "i": { "orderId": format!("o-{id}"), "amount": amount, "placedAt": placed_at } }),
        )
        .await;
    }
    let report = app.gql_ok(VIEWER, REPORT, json!({ "w": 30 })).await["engagementUplift"].clone();
    let group = |g: &str| report[g].clone();
    assert_eq!(group("treatment")["triggered"], treated.len());
    assert_eq!(group("holdout")["triggered"], held.len());
    assert_eq!(group("treatment")["reactivated"], 1);
    assert_eq!(group("holdout")["reactivated"], 1);
    assert_eq!(group("treatment")["revenue"], "40.00");
    assert_eq!(group("holdout")["revenue"], "25.50");
    let rate = |v: &Value| v.as_f64().unwrap();
    let expected = 1.0 / treated.len() as f64 - 1.0 / held.len() as f64;
    assert!((rate(&report["difference"]) - expected).abs() < 1e-9);
    assert!(rate(&report["differenceLow"]) < rate(&report["difference"]));
    // An order after the window counts nowhere.
    let short = app.gql_ok(VIEWER, REPORT, json!({ "w": 1 })).await["engagementUplift"].clone();
    assert_eq!(short["treatment"]["reactivated"], 0);
    // A window out of range names the field.
    let (code, body) = app
        .error_code(Some(VIEWER), REPORT, json!({ "w": 0 }))
        .await;
    assert_eq!(code, "VALIDATION");
    assert_eq!(body["errors"][0]["extensions"]["field"], "windowDays");
}
