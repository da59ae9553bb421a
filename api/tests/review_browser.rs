//! The review queue in a real browser: `tests/browser/review.mjs` drives headless Chromium
//! against a server with `review` delivery and two emails waiting.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{spawn_app_delivering, ADMIN, OPERATOR};
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
    let browser_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_tests.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `bash .ci/browser-up` (the README's test command does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let run = tokio::process::Command::new("node")
        .arg("review.mjs")
        .current_dir(&browser_tests)
        .env("BASE_URL", &app.address)
        .env("ADMIN_TOKEN", ADMIN)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finished within 2 minutes")
        .expect("node runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the review browser test failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let statuses: Vec<String> = sqlx::query_scalar("select status from emails order by status")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["GENERATED", "REJECTED"]);
}
