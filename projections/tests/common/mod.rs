//! Shared set-up for the email-flow tests: a real database, the consumers, and a wiremock
//! peer that speaks chat-completions.

#![allow(dead_code)] // each test binary uses a different part of this helper

use std::sync::Arc;
use std::time::Duration;

use domain::client::{
    ClientAction, ClientServices, CreateUser, ImportedHistory, SetEngagementScore,
};
use domain::values::{Categories, EmailAddress, Score, UserName};
use projections::clock::SystemClock;
use projections::commands::{CommandBus, CommandMetadata};
use projections::engagement::process_manager::{ProcessManager, ProcessManagerSettings};
use projections::engagement::workers::{EmailWorkers, WorkerSettings};
use projections::engagement::writer::openai::{OpenAiSettings, OpenAiWriter, Secret};
use projections::engagement::writer::ConfiguredWriter;
use projections::log::consumer::{Consumer, ConsumerSettings, LogSignal};
use projections::views::emails::EmailsView;
use projections::views::users::UsersView;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const KEY: &str = "sk-test-KEY-0123456789";

pub struct Flow {
    pub pool: PgPool,
    pub bus: CommandBus,
    pub users: Consumer<UsersView>,
    pub emails: Consumer<EmailsView>,
    pub manager: Consumer<ProcessManager>,
}

impl Flow {
    /// A flow whose new jobs are due at once.
    pub fn new(pool: &PgPool) -> Self {
        Self::with_trigger_delay(pool, chrono::Duration::zero())
    }

    pub fn with_trigger_delay(pool: &PgPool, trigger_delay: chrono::Duration) -> Self {
        Self::build(
            pool,
            ClientServices::default(),
            ProcessManagerSettings {
                trigger_delay,
                ..ProcessManagerSettings::default()
            },
        )
    }

    /// A flow deciding with `services` and triggering with `manager`.
    pub fn build(pool: &PgPool, services: ClientServices, manager: ProcessManagerSettings) -> Self {
        let settings = ConsumerSettings::default();
        Self {
            pool: pool.clone(),
            bus: CommandBus::new(pool.clone(), test_vault(), services, Arc::new(SystemClock)),
            users: Consumer::new(
                pool.clone(),
                test_vault(),
                UsersView::live(),
                settings.clone(),
                LogSignal::new(),
            ),
            emails: Consumer::new(
                pool.clone(),
                test_vault(),
                EmailsView::live(),
                settings.clone(),
                LogSignal::new(),
            ),
            manager: Consumer::new(
                pool.clone(),
                test_vault(),
                ProcessManager::new(manager),
                settings,
                LogSignal::new(),
            ),
        }
    }

    pub async fn catch_up(&self) {
        self.users.catch_up().await.unwrap();
        self.emails.catch_up().await.unwrap();
        self.manager.catch_up().await.unwrap();
    }

    /// A new client with no orders.
    pub async fn client(&self, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        let create = ClientAction::CreateUser(CreateUser {
            id,
            name: UserName::parse(name).unwrap(),
            email: EmailAddress::parse("client@example.com").unwrap(),
            preferred_categories: Categories::parse(&["Denim"], "preferredCategories").unwrap(),
            history: ImportedHistory::default(),
            external_id: None,
            client_since: None,
            imported: false,
        });
        self.run(id, create).await;
        id
    }

    /// Runs `action` on client `id` as a test operator.
    pub async fn run(&self, id: Uuid, action: ClientAction) {
        let meta = CommandMetadata::for_actor("test");
        self.bus.execute(id, action, &meta).await.unwrap();
    }

    /// A client scored at risk by hand; returns the client and their email job.
    pub async fn at_risk(&self, name: &str) -> (Uuid, Uuid) {
        let id = self.client(name).await;
        let meta = CommandMetadata::for_actor("test");
        let low = ClientAction::SetEngagementScore(SetEngagementScore {
            score: Score::parse(12, "score").unwrap(),
            reason: Some("test".into()),
            actor: "test".into(),
        });
        self.bus.execute(id, low, &meta).await.unwrap();
        self.catch_up().await;
        let job: Uuid = sqlx::query_scalar("select id from email_jobs where user_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .expect("a job for the at-risk client");
        (id, job)
    }

    pub fn workers<W: projections::engagement::writer::EmailWriter>(
        &self,
        writer: W,
        settings: WorkerSettings,
    ) -> EmailWorkers<W> {
        EmailWorkers::new(
            self.pool.clone(),
            self.bus.clone(),
            writer,
            settings,
            Arc::new(tokio::sync::Notify::new()),
        )
    }

    pub async fn job(&self, id: Uuid) -> (String, i32, Option<String>, Option<Uuid>) {
        sqlx::query_as(
            "select status, attempts, last_error, email_id from email_jobs where id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    pub async fn emails_of(&self, user: Uuid) -> Vec<Value> {
        self.catch_up().await;
        sqlx::query_scalar("select to_jsonb(e) from emails e where user_id = $1")
            .bind(user)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Makes every pending job due now.
    pub async fn make_due(&self) {
        sqlx::query("update email_jobs set next_attempt_at = now() - interval '1 second' where status = 'PENDING'")
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

pub fn llm(server: &MockServer, timeout: Duration) -> ConfiguredWriter {
    ConfiguredWriter::Llm(
        OpenAiWriter::new(OpenAiSettings {
            base_url: server.uri(),
            model: "test/model".into(),
            api_key: Secret::new(KEY),
            timeout,
            requests_per_minute: 60_000,
        })
        .unwrap(),
    )
}

pub fn fast(max_attempts: i32) -> WorkerSettings {
    WorkerSettings {
        concurrency: 4,
        max_attempts,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        fallback_to_template: false,
        breaker_threshold: 1000,
        breaker_cool_off: Duration::from_millis(200),
        ..WorkerSettings::default()
    }
}

pub fn completion(greeting: &str) -> Value {
    let content = json!({
        "subject": "We kept some denim aside for you",
        "preheader": "New arrivals in your size",
        "greeting": greeting,
        "paragraphs": ["It has been a while.", "Here is what is new."],
        "callToAction": "See what is new"
    });
    json!({
        "id": "cmpl-1",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content.to_string() }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 321, "completion_tokens": 123, "cost": 0.00042 }
    })
}

pub fn ok_reply() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion("Hi there,"))
}

pub async fn mount(server: &MockServer, response: ResponseTemplate, times: Option<u64>) {
    let mock = Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(response);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
