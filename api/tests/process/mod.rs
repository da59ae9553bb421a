//! `engagement serve` as a child process, for tests of the service as it runs: the binary,
//! its environment, SIGKILL. Included by path from the tests that need it.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::graphql::auth::digest_hex;
use serde_json::{json, Value};
use sqlx::PgPool;

pub const OPERATOR: &str = "operator-token-for-process-tests";
pub const VIEWER: &str = "viewer-token-for-process-tests";
pub const ADMIN: &str = "admin-token-for-process-tests";
pub const MASTER_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// The URL of the test's own database (sqlx::test made it on DATABASE_URL's server).
pub async fn url_of(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

/// A running `engagement serve`; SIGKILLed when dropped.
pub struct Server {
    pub child: Child,
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(database_url: &str, env: &[(&str, String)], log: PathBuf) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_engagement"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env(
                "API_TOKENS",
                format!(
                    "operator:ops:{},viewer:prom:{},admin:dpo:{}",
                    digest_hex(OPERATOR),
                    digest_hex(VIEWER),
                    digest_hex(ADMIN)
                ),
            )
            .env("MASTER_KEY", MASTER_KEY)
            .env("EMAIL_TRIGGER_DELAY_SECS", "0")
            // Everyone is emailed: the holdout is another test's subject.
            .env("HOLDOUT_PERCENT", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            ));
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("engagement is listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim_end_matches('/').to_owned());
                    }
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the server did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Self { child, address }
    }

    /// The whole GraphQL answer to `query`, as the operator.
    pub async fn gql_answer(&self, query: &str, variables: Value) -> Value {
        self.gql_answer_as(OPERATOR, query, variables).await
    }

    /// The whole GraphQL answer to `query`, as the holder of `token`.
    pub async fn gql_answer_as(&self, token: &str, query: &str, variables: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}/graphql", self.address))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The data of the answer to `query`, which must have no errors.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let body = self.gql_answer(query, variables).await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"].clone()
    }

    /// A client scored at risk by hand (the engine then writes and sends their email).
    pub async fn at_risk(&self, n: usize) -> String {
        let id = self
            .gql(
                "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                json!({ "i": { "name": format!("Client {n}"), "email": format!("client{n}@example.com") } }),
            )
            .await["createUser"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.gql(
            "mutation($u: ID!) { setEngagementScore(userId: $u, score: 5, reason: \"test\") { id } }",
            json!({ "u": id }),
        )
        .await;
        id
    }
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An OpenAI-style chat completion holding a well-formed email, with token usage (321 prompt,
/// 123 completion), as a wiremock LLM peer answers it.
pub fn llm_completion() -> Value {
    let content = json!({
        "subject": "We kept some denim aside for you",
        "preheader": "New arrivals in your size",
        "greeting": "Hi there,",
        "paragraphs": ["It has been a while.", "Here is what is new."],
        "callToAction": "See what is new"
    });
    json!({
        "id": "cmpl-1",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content.to_string() }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 321, "completion_tokens": 123 }
    })
}
