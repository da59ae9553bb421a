//! The dashboard in a real browser: `tests/browser/dashboard.mjs` drives Debian's headless
//! Chromium (through playwright-core) against a server spawned here with its own database.
//! `.ci/browser-up` installs both; screenshots land in `target/tmp/dashboard-screenshots/`.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{spawn_app, ADMIN, VIEWER};
use sqlx::PgPool;

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_dashboard_works_in_a_real_browser(pool: PgPool) {
    let app = spawn_app(pool).await;
    // A job that failed on every attempt, for the jobs page to list and retry.
    let dead_job = uuid::Uuid::new_v4();
    sqlx::query(
        "insert into email_jobs (id, user_id, trigger_position, trigger_sequence, score, status,
             attempts, last_error, next_attempt_at, created_at, updated_at)
         values ($1, $2, 1000000, 2, 12, 'DEAD', 5, 'the LLM answered 500 five times', now(), now(), now())",
    )
    .bind(dead_job)
    .bind(uuid::Uuid::new_v4())
    .execute(&app.pool)
    .await
    .expect("a dead job");
    let browser_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_tests.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `bash .ci/browser-up` (the README's test command does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run `bash .ci/browser-up` (Debian's chromium package)"
    );
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let run = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&browser_tests)
        .env("BASE_URL", &app.address)
        .env("ADMIN_TOKEN", ADMIN)
        .env("VIEWER_TOKEN", VIEWER)
        .env("SCREENSHOTS", &screenshots)
        .env("DEAD_JOB", dead_job.to_string())
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test finished within 4 minutes")
        .expect("node runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
