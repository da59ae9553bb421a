//! Re-engagement emails end to end in a running service with no LLM key (the template
//! writes), over the GraphQL API.

mod common;

use std::time::{Duration, Instant};

use common::{spawn_app, spawn_app_with, ClockExt as _, TestApp};
use serde_json::{json, Value};
use sqlx::PgPool;

async fn emails_of(app: &TestApp, user: &str) -> Vec<Value> {
    let data = app
        .gql(
            "query($u: ID!) { emails(userId: $u) { nodes { id subject html generator status } } }",
            json!({ "u": user }),
        )
        .await;
    data["emails"]["nodes"].as_array().unwrap().clone()
}

async fn wait_for_emails(app: &TestApp, user: &str, count: usize, within: Duration) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let emails = emails_of(app, user).await;
        if emails.len() >= count || start.elapsed() > within {
            return emails;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn set_score(app: &TestApp, user: &str, score: i32) {
    app.gql(
        "mutation($u: ID!, $s: Int!) { setEngagementScore(userId: $u, score: $s) { id } }",
        json!({ "u": user, "s": score }),
    )
    .await;
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_low_score_gets_exactly_one_template_email_and_the_cooldown_and_opt_out_hold(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let user = app
        .create_user("Rosalind Franklin", "rosalind@example.com")
        .await;
    let start = Instant::now();
    set_score(&app, &user, 20).await;
    let emails = wait_for_emails(&app, &user, 1, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert_eq!(emails.len(), 1);
    assert!(took < Duration::from_secs(2), "visible after {took:?}");
    assert_eq!(emails[0]["generator"], "template:v1");
    assert!(emails[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("Rosalind,"));

    // Another low score inside the cooldown: no second email.
    set_score(&app, &user, 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(emails_of(&app, &user).await.len(), 1);
    let jobs = app
        .gql("{ emailJobs { totalCount nodes { status } } }", json!({}))
        .await;
    assert_eq!(jobs["emailJobs"]["totalCount"], 1);
    assert_eq!(jobs["emailJobs"]["nodes"][0]["status"], "DONE");

    // After the cooldown, but unsubscribed: none.
    app.clock.advance(chrono::Duration::days(8));
    app.gql(
        "mutation($u: ID!) { unsubscribeUser(userId: $u) { id } }",
        json!({ "u": user }),
    )
    .await;
    set_score(&app, &user, 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(emails_of(&app, &user).await.len(), 1);

    let health = app.gql("{ health { emailWriter } }", json!({})).await;
    assert_eq!(
        health["health"]["emailWriter"],
        "template:v1 (circuit closed)"
    );
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_lapsing_client_crosses_the_threshold_as_the_clock_moves_and_gets_an_email(pool: PgPool) {
    let clock = std::sync::Arc::new(projections::clock::ManualClock::new(
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    let app = spawn_app_with(pool, clock, Duration::from_millis(100)).await;
    let user = app.create_user("Chien-Shiung Wu", "wu@example.com").await;
    let placed_at = app.clock.now_rfc3339();
    app.gql(
        "mutation($u: ID!, $at: DateTime) { placeOrder(userId: $u, input: {orderId: \"first\", amount: \"80\", placedAt: $at}) { id } }",
        json!({ "u": user, "at": placed_at }),
    )
    .await;
    let fresh = app
        .gql(
            "query($u: ID!) { user(id: $u) { atRisk engagementScore } }",
            json!({ "u": user }),
        )
        .await;
    assert_eq!(fresh["user"]["atRisk"], false, "{fresh}");
    assert!(emails_of(&app, &user).await.is_empty());

    // Nobody touches the client; only time passes.
    app.clock.advance(chrono::Duration::days(90));
    let emails = wait_for_emails(&app, &user, 1, Duration::from_secs(10)).await;
    assert_eq!(
        emails.len(),
        1,
        "the process manager reacted to the time-passed score"
    );
    // atRisk comes from the users view, a different consumer from the emails view: poll.
    let start = Instant::now();
    let now = loop {
        let now = app
            .gql(
                "query($u: ID!) { user(id: $u) { atRisk engagementScore } }",
                json!({ "u": user }),
            )
            .await;
        if now["user"]["atRisk"] == true || start.elapsed() > Duration::from_secs(5) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(now["user"]["atRisk"], true, "{now}");
    let history = app
        .gql(
            "query($u: ID!) { userHistory(userId: $u) { nodes { type payload metadata } } }",
            json!({ "u": user }),
        )
        .await;
    let events = history["userHistory"]["nodes"].as_array().unwrap();
    let crossing = events
        .iter()
        .find(|e| e["type"] == "UserScored" && e["payload"]["band"] == "at_risk")
        .expect("a UserScored into the at-risk band");
    assert_eq!(crossing["payload"]["cause"], "time_passed");
    assert_eq!(crossing["metadata"]["actor"], "scheduler");
    let email = events
        .iter()
        .find(|e| e["type"] == "EmailGenerated")
        .unwrap();
    assert_eq!(email["metadata"]["actor"], "process-manager");
}
