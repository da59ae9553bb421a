//! The dashboard in a real browser: `tests/browser/dashboard.mjs` drives Debian's headless
//! Chromium (through playwright-core) against a server spawned here with its own database.
//! `.ci/browser-up` installs both; screenshots land in `target/tmp/dashboard-screenshots/`.

mod common;

use std::time::Duration;

use common::{run_browser_test, spawn_app, ADMIN, VIEWER};
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
    run_browser_test(
        "dashboard.mjs",
        &[
            ("BASE_URL", app.address.clone()),
            ("ADMIN_TOKEN", ADMIN.to_owned()),
            ("VIEWER_TOKEN", VIEWER.to_owned()),
            ("DEAD_JOB", dead_job.to_string()),
        ],
        Duration::from_secs(240),
    )
    .await;
}
