//! The GraphQL playground in a real browser under its Content-Security-Policy:
//! `tests/browser/playground.mjs` opens the start-up link, runs the default query and checks
//! that nothing on the page breaks the policy.

mod common;

use std::time::Duration;

use common::{run_browser_test, spawn_app, ADMIN};
use sqlx::PgPool;

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_playground_runs_a_query_under_its_policy(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("Ada Lovelace", "ada@example.com").await;
    run_browser_test(
        "playground.mjs",
        &[(
            "PLAYGROUND_LINK",
            format!("{}/graphql?token={ADMIN}", app.address),
        )],
        Duration::from_secs(90),
    )
    .await;
}
