//! The LLM key never leaks. Alone in its own test binary (its own process): tracing caches
//! each log callsite's interest per process, and tests on other threads could leave a
//! callsite cached as disabled before this test listens.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use sqlx::PgPool;
use wiremock::{MockServer, ResponseTemplate};

/// Collects every log line written while it is installed.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_key_appears_in_no_log_line_error_or_health_report(pool: PgPool) {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    // A hostile or careless provider that echoes the key back in its errors.
    mount(
        &server,
        ResponseTemplate::new(403)
            .set_body_json(json!({ "error": { "message": format!("key {KEY} is not allowed") } })),
        Some(1),
    )
    .await;
    mount(
        &server,
        ResponseTemplate::new(500).set_body_string(format!("internal error for {KEY}")),
        None,
    )
    .await;
    let flow = Flow::new(&pool);
    let (_, first) = flow.at_risk("Key One").await;
    let workers = flow.workers(llm(&server, Duration::from_secs(5)), fast(2));
    workers.drain_once().await.unwrap();
    let (_, second) = flow.at_risk("Key Two").await;
    for _ in 0..3 {
        flow.make_due().await;
        workers.drain_once().await.unwrap();
    }
    let errors: Vec<Option<String>> = sqlx::query_scalar("select last_error from email_jobs")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        errors.iter().flatten().any(|e| e.contains("[redacted]")),
        "{errors:?}"
    );
    for error in errors.iter().flatten() {
        assert!(!error.contains(KEY), "{error}");
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty());
    assert!(!logs.contains(KEY), "the key leaked into the logs");
    let health = workers.breaker().describe();
    assert!(!health.contains(KEY));
    assert_ne!(first, second);
}
