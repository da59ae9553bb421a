//! The uplift page in a real browser: `tests/browser/uplift.mjs` drives headless Chromium
//! against a server holding out half the clients, with some at risk and one come back.

mod common;

use std::time::Duration;

use chrono::Duration as Span;
use common::{run_browser_test, spawn_app_holding_out, ADMIN, OPERATOR};
use projections::clock::Clock as _;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_uplift_page_says_what_the_numbers_mean(pool: PgPool) {
    let app = spawn_app_holding_out(pool.clone(), 50).await;
    // Six clients of each group at risk, the first treated: the groups are drawn at random,
    // and a lopsided draw (two treated against ten held out) would make one reactivation look
    // like a clear effect, a different sentence from the one this test reads.
    let mut ids = Vec::new();
    let (mut treated, mut held_out) = (0, 0);
    let mut n = 0;
    while treated < 6 || held_out < 6 {
        let id = app
            .create_user(&format!("Client {n}"), &format!("c{n}@example.com"))
            .await;
        n += 1;
        let group = app
            .gql_ok(
                OPERATOR,
                "query($u: ID!) { user(id: $u) { group } }",
                json!({ "u": id }),
            )
            .await["user"]["group"]
            .clone();
        if group == json!("TREATMENT") && treated < 6 {
            treated += 1;
        } else if group == json!("HOLDOUT") && held_out < 6 && treated > 0 {
            held_out += 1;
        } else {
            continue;
        }
        app.gql_ok(
            OPERATOR,
            "mutation($u: ID!) { setEngagementScore(userId: $u, score: 10, reason: \"test\") { id } }",
            json!({ "u": id }),
        )
        .await;
        ids.push(id);
    }
    for _ in 0..200 {
        let settled: i64 = sqlx::query_scalar(
            "select count(*) from email_jobs where status in ('DONE', 'HELD_OUT')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if settled == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.clock.advance(Span::days(2));
    let placed_at = app.clock.now() - Span::hours(1);
    app.gql_ok(
        OPERATOR,
        "mutation($u: ID!, $i: PlaceOrderInput!) { placeOrder(userId: $u, input: $i) { id } }",
        json!({ "u": ids[0], "i": { "orderId": "o-1", "amount": "30.00", "placedAt": placed_at } }),
    )
    .await;
    // What the page must show, from the API itself (the trend's consumer runs in the
    // background: wait until it has caught up with the order).
    let query = "{ engagementUplift { treatment { triggered reactivated } holdout { triggered reactivated } }
                   engagementTrend(days: 90) { atRisk } }";
    let mut expected = json!(null);
    for _ in 0..200 {
        let data = app.gql_ok(OPERATOR, query, json!({})).await;
        let at_risk = data["engagementTrend"].as_array().unwrap().last().unwrap()["atRisk"].clone();
        if at_risk == json!(11) {
            expected = json!({
                "treatment": data["engagementUplift"]["treatment"],
                "holdout": data["engagementUplift"]["holdout"],
                "atRiskToday": at_risk,
            });
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!expected.is_null(), "the trend caught up");
    run_browser_test(
        "uplift.mjs",
        &[
            ("BASE_URL", app.address.clone()),
            ("ADMIN_TOKEN", ADMIN.to_owned()),
            ("EXPECTED", expected.to_string()),
        ],
        Duration::from_secs(120),
    )
    .await;
}
