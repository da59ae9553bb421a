//! The review queue in a real browser: `tests/browser/review.mjs` drives headless Chromium
//! against a server with `review` delivery and two emails waiting.

mod common;

use std::time::Duration;

use common::{run_browser_test, spawn_app_delivering, ADMIN, OPERATOR};
use domain::client::DeliveryMode;
use projections::engagement::delivery::DeliverySettings;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn operators_review_emails_in_the_dashboard(pool: PgPool) {
    let app = spawn_app_delivering(
        pool.clone(),
        DeliverySettings {
            mode: DeliveryMode::Review,
            ..DeliverySettings::off()
        },
    )
    .await;
    for (name, email) in [
        ("Kept Client", "kept@example.com"),
        ("Dropped Client", "dropped@example.com"),
    ] {
        let id = app.create_user(name, email).await;
        app.gql_ok(
            OPERATOR,
            "mutation($u: ID!) { setEngagementScore(userId: $u, score: 10, reason: \"test\") { id } }",
            json!({ "u": id }),
        )
        .await;
    }
    for _ in 0..200 {
        let waiting: i64 =
            sqlx::query_scalar("select count(*) from emails where status = 'PENDING_REVIEW'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if waiting == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run_browser_test(
        "review.mjs",
        &[
            ("BASE_URL", app.address.clone()),
            ("ADMIN_TOKEN", ADMIN.to_owned()),
        ],
        Duration::from_secs(120),
    )
    .await;
    let statuses: Vec<String> = sqlx::query_scalar("select status from emails order by status")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["GENERATED", "REJECTED"]);
}
