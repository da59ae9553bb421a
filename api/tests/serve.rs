//! The binary's service surface over real HTTP, each test with its own database.

mod process;

use std::time::Duration;

use api::app::{App, AppParts};
use process::url_of;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct TestApp {
    address: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn spawn_app(pool: PgPool) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let app = App::build(AppParts {
        shutdown_grace: Duration::from_secs(2),
        ..AppParts::new(pool, &projections::vault::MasterKey::new([7; 32]))
    });
    let server = tokio::spawn(app.run(listener, async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        stop: Some(stop),
        server,
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn liveness_and_readiness_answer(pool: PgPool) {
    let app = spawn_app(pool).await;
    let health = reqwest::get(format!("{}/healthz", app.address))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", app.address))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "up");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn readiness_fails_when_the_database_is_gone(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    pool.close().await;
    let ready = reqwest::get(format!("{}/readyz", app.address))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_shutdown_signal_stops_the_server_cleanly(pool: PgPool) {
    let mut app = spawn_app(pool).await;
    assert_eq!(
        reqwest::get(format!("{}/healthz", app.address))
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), app.server).await;
    result
        .expect("stopped within the grace period")
        .unwrap()
        .unwrap();
    assert!(
        reqwest::get(format!("{}/healthz", app.address))
            .await
            .is_err(),
        "no longer accepting"
    );
}

#[test]
fn an_unreachable_database_is_reported_in_one_line_with_the_url_and_no_password() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args([
            "migrate",
            "--database-url",
            "postgres://app:hunter2@127.0.0.1:1/engagement",
        ])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("cannot reach PostgreSQL at postgres://app:***@127.0.0.1:1/engagement"),
        "{stderr}"
    );
    assert!(lines[0].contains("start it"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for var in [
        "DATABASE_URL",
        "LISTEN_ADDR",
        "SCORING_POLICY",
        "EMAIL_COOLDOWN_DAYS",
        "EMAIL_TRIGGER_DELAY_SECS",
        "LLM_REQUESTS_PER_MINUTE",
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
    // The at-risk rule is the scoring policy's band; there is no second threshold to set.
    assert!(!help.contains("AT_RISK_THRESHOLD"), "{help}");
}

fn create(id: uuid::Uuid) -> domain::client::ClientAction {
    use domain::values::*;
    domain::client::ClientAction::CreateUser(domain::client::CreateUser {
        id,
        name: UserName::parse("Katherine Johnson").unwrap(),
        email: EmailAddress::parse("kj@example.com").unwrap(),
        preferred_categories: Categories::default(),
        history: domain::client::ImportedHistory::default(),
        external_id: None,
        client_since: None,
        imported: false,
    })
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_served_app_keeps_its_views_current(pool: PgPool) {
    let app = App::build(AppParts::new(
        pool.clone(),
        &projections::vault::MasterKey::new([7; 32]),
    ));
    let state = app.state().clone();
    let id = uuid::Uuid::new_v4();
    let meta = projections::commands::CommandMetadata::for_actor("test");
    let committed = state.commands.execute(id, create(id), &meta).await.unwrap();
    state
        .read_models
        .users
        .wait_for(committed.position, Duration::from_secs(5))
        .await
        .unwrap();
    let row = projections::views::users::load_user(&pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.name, "Katherine Johnson");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_rebuild_command_rebuilds_every_view_from_the_log(pool: PgPool) {
    let bus = projections::commands::CommandBus::new(
        pool.clone(),
        test_vault(),
        domain::client::ClientServices::default(),
        std::sync::Arc::new(projections::clock::SystemClock),
    );
    let id = uuid::Uuid::new_v4();
    bus.execute(
        id,
        create(id),
        &projections::commands::CommandMetadata::for_actor("t"),
    )
    .await
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(["rebuild", "all", "--database-url", &url_of(&pool).await])
        .env("RUST_LOG", "off")
        // The key the bus above sealed the client's data with.
        .env("MASTER_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("rebuilt users: 2 events"), "{stdout}");
    assert!(stdout.contains("rebuilt emails: 2 events"), "{stdout}");
    let row = projections::views::users::load_user(&pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.name, "Katherine Johnson");
}

/// Logs on a pipe carry no colour codes; `LOG_FORMAT=json` writes one JSON object per line.
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn logs_are_plain_on_a_pipe_and_json_when_asked(pool: PgPool) {
    let url = url_of(&pool).await;
    let run = |format: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_engagement"))
            .args(["migrate", "--database-url", &url])
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", format)
            .output()
            .unwrap()
    };
    let text = run("text");
    assert!(text.status.success());
    let stderr = String::from_utf8(text.stderr).unwrap();
    assert!(stderr.contains("migrations applied"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes on a pipe: {stderr:?}"
    );
    let json = run("json");
    assert!(json.status.success());
    let stderr = String::from_utf8(json.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["message"] == "migrations applied" && l["level"] == "INFO"));
    let bad = run("yaml");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("log-format"));
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
