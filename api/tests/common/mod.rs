//! A spawned server with its own database, and a small GraphQL client for it.

#![allow(dead_code)] // each test binary uses a different part of this helper

use std::sync::Arc;
use std::time::Duration;

use api::app::{App, AppParts};
use api::graphql::auth::{digest_hex, TokenStore};
use api::http::rate_limit::RateLimit;
use chrono::{TimeZone, Utc};
use projections::clock::ManualClock;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-for-tests";
pub const OPERATOR: &str = "operator-token-for-tests";
pub const VIEWER: &str = "viewer-token-for-tests";

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn tokens() -> TokenStore {
    TokenStore::parse(&format!(
        "admin:root:{},operator:ops:{},viewer:watcher:{}",
        digest_hex(ADMIN),
        digest_hex(OPERATOR),
        digest_hex(VIEWER)
    ))
    .unwrap()
}

/// The order webhook's secrets in tests: an old and a new one, as during a rotation.
pub const WEBHOOK_SECRETS: &str = "whsec-old-0123456789,whsec-new-9876543210";

pub async fn spawn_app(pool: PgPool) -> TestApp {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    spawn_app_with_clock(pool, clock).await
}

pub async fn spawn_app_with_clock(pool: PgPool, clock: Arc<ManualClock>) -> TestApp {
    spawn_app_with(pool, clock, Duration::from_secs(60)).await
}

/// A server whose rescore scheduler sweeps every `rescore_interval` (tests where time passes).
pub async fn spawn_app_with(
    pool: PgPool,
    clock: Arc<ManualClock>,
    rescore_interval: Duration,
) -> TestApp {
    spawn(pool, clock, rescore_interval, None, None).await
}

/// A server holding out `percent` of new clients.
#[allow(dead_code)]
pub async fn spawn_app_holding_out(pool: PgPool, percent: u8) -> TestApp {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    let salt = projections::db::holdout_salt(&pool).await.unwrap();
    spawn_with(
        pool,
        clock,
        Duration::from_secs(60),
        None,
        None,
        Some(domain::client::Holdout { salt, percent }),
    )
    .await
}

/// A server whose emails are written under `delivery` (no mail server: send jobs wait).
#[allow(dead_code)]
pub async fn spawn_app_delivering(
    pool: PgPool,
    delivery: projections::engagement::delivery::DeliverySettings,
) -> TestApp {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    spawn(pool, clock, Duration::from_secs(60), None, Some(delivery)).await
}

/// A server that limits each token to `limit`.
pub async fn spawn_app_rate_limited(pool: PgPool, limit: RateLimit) -> TestApp {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    spawn(pool, clock, Duration::from_secs(60), Some(limit), None).await
}

/// Tests other than the rate limit's own run unlimited: they send bursts on purpose.
async fn spawn(
    pool: PgPool,
    clock: Arc<ManualClock>,
    rescore_interval: Duration,
    rate_limit: Option<RateLimit>,
    delivery: Option<projections::engagement::delivery::DeliverySettings>,
) -> TestApp {
    spawn_with(pool, clock, rescore_interval, rate_limit, delivery, None).await
}

async fn spawn_with(
    pool: PgPool,
    clock: Arc<ManualClock>,
    rescore_interval: Duration,
    rate_limit: Option<RateLimit>,
    delivery: Option<projections::engagement::delivery::DeliverySettings>,
    holdout: Option<domain::client::Holdout>,
) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let mut parts = AppParts {
        clock: clock.clone(),
        tokens: tokens(),
        shutdown_grace: Duration::from_secs(2),
        rate_limit,
        rescore: projections::scheduler::RescoreSettings {
            interval: rescore_interval,
            ..Default::default()
        },
        ..AppParts::new(pool.clone(), &projections::vault::MasterKey::new([7; 32]))
    };
    parts.order_webhook = api::http::webhooks::WebhookSecrets::parse(WEBHOOK_SECRETS);
    parts.email_events_webhook = api::http::webhooks::WebhookSecrets::parse(WEBHOOK_SECRETS);
    if let Some(delivery) = delivery {
        parts.email.delivery = delivery;
    }
    if let Some(holdout) = holdout {
        parts.services.holdout = holdout;
    }
    // The tests' clock stands still: a new trigger is due at once.
    parts.email.process_manager.trigger_delay = chrono::Duration::zero();
    let app = App::build(parts);
    tokio::spawn(app.run(listener, async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        pool,
        clock,
        client: reqwest::Client::new(),
        stop: Some(stop),
    }
}

impl TestApp {
    /// POSTs a GraphQL request with `token`; returns (HTTP status, body).
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// As the operator; panics on GraphQL errors.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_ok(OPERATOR, query, variables).await
    }

    pub async fn gql_ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.gql_as(Some(token), query, variables).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// The first error's `extensions.code`.
    pub async fn error_code(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (String, Value) {
        let (_, body) = self.gql_as(token, query, variables).await;
        let code = body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (code, body)
    }

    pub async fn create_user(&self, name: &str, email: &str) -> String {
        let data = self
            .gql(
                "mutation($input: CreateUserInput!) { createUser(input: $input) { id } }",
                json!({ "input": { "name": name, "email": email, "preferredCategories": ["Denim"] } }),
            )
            .await;
        data["createUser"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// The clock's time as RFC 3339.
pub trait ClockExt {
    fn now_rfc3339(&self) -> String;
}

impl ClockExt for ManualClock {
    fn now_rfc3339(&self) -> String {
        use projections::clock::Clock as _;
        self.now().to_rfc3339()
    }
}

/// Collects log output while installed.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// Runs `tests/browser/<script>` with Node.js against headless Chromium (Debian's, or
/// `$CHROMIUM`), with `env` and `SCREENSHOTS` set, within `timeout`; panics with its output if
/// it fails. `.ci/browser-up` installs Chromium and playwright-core.
pub async fn run_browser_test(script: &str, env: &[(&str, String)], timeout: Duration) {
    let browser_tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_tests.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `bash .ci/browser-up` (the README's test command does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run `bash .ci/browser-up` (Debian's chromium package)"
    );
    let screenshots =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .current_dir(&browser_tests)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| panic!("{script} finished within {timeout:?}"))
        .expect("node runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `clients` clients with `emails` emails each (written a week apart), the emails view caught up;
/// their ids, oldest first.
pub async fn clients_with_emails(
    app: &TestApp,
    pool: &PgPool,
    clients: usize,
    emails: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    let bus = projections::commands::CommandBus::new(
        pool.clone(),
        test_vault(),
        Default::default(),
        app.clock.clone(),
    );
    let mut last = None;
    for i in 0..clients {
        let id: String = app
            .create_user(&format!("Reader {i}"), &format!("reader{i}@example.com"))
            .await;
        ids.push(id.clone());
        for k in 0..emails {
            let committed = bus
                .execute(
                    id.parse().unwrap(),
                    domain::client::ClientAction::RecordEmail(domain::client::RecordEmail {
                        email_id: uuid::Uuid::new_v4(),
                        content: domain::client::EmailContent {
                            subject: format!("Note {k}"),
                            preheader: format!("Preheader {i}-{k}"),
                            text: format!("Text {i}-{k}"),
                            html: format!("<p>Html {i}-{k}</p>"),
                            generator: domain::client::Generator {
                                kind: "template".into(),
                                model: "v1".into(),
                            },
                            usage: None,
                        },
                        trigger: None,
                        delivery: domain::client::DeliveryMode::Off,
                    }),
                    &projections::commands::CommandMetadata::for_actor("test"),
                )
                .await;
            if let Ok(c) = committed {
                last = Some(c.position);
            }
            app.clock.advance(chrono::Duration::days(8));
        }
    }
    let handle = projections::log::consumer::Consumer::new(
        pool.clone(),
        test_vault(),
        projections::views::emails::EmailsView::live(),
        Default::default(),
        projections::log::consumer::LogSignal::new(),
    )
    .handle();
    handle
        .wait_for(last.unwrap(), std::time::Duration::from_secs(10))
        .await
        .unwrap();

    ids
}

/// The vault of every test (one master key, so that binaries and buses share their data).
pub fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
