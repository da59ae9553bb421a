//! Email throughput: 1,000 due jobs, an LLM peer (wiremock, on loopback) that answers every
//! request in 200 ms, 16 workers' worth of concurrency.
//!
//! ```sh
//! cargo bench -p projections --bench emails        # BENCH_JOBS (1000), BENCH_CONCURRENCY (16)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::client::{
    ClientAction, ClientServices, CreateUser, ImportedHistory, SetEngagementScore,
};
use domain::values::{Categories, EmailAddress, Score, UserName};
use futures::StreamExt as _;
use projections::clock::SystemClock;
use projections::commands::{CommandBus, CommandMetadata};
use projections::db;
use projections::engagement::process_manager::ProcessManager;
use projections::engagement::workers::{EmailWorkers, WorkerSettings};
use projections::engagement::writer::openai::{OpenAiSettings, OpenAiWriter, Secret};
use projections::engagement::writer::ConfiguredWriter;
use projections::log::consumer::{Consumer, ConsumerSettings, LogSignal};
use projections::views::users::UsersView;
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (server_url, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    let admin = db::connect(&base, &db::PoolSettings::default()).await?;
    sqlx::query("drop database if exists engagement_bench_emails with (force)")
        .execute(&admin)
        .await?;
    sqlx::query("create database engagement_bench_emails")
        .execute(&admin)
        .await?;
    let pool = db::connect(
        &format!("{server_url}/engagement_bench_emails"),
        &db::PoolSettings {
            max_connections: 40,
            ..Default::default()
        },
    )
    .await?;
    db::migrate(&pool).await?;

    // Clients at risk, each with a due job.
    let bus = CommandBus::new(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        Arc::new(SystemClock),
    );
    futures::stream::iter(0..jobs)
        .map(|i| {
            let bus = bus.clone();
            async move {
                let id = Uuid::new_v4();
                let meta = CommandMetadata::for_actor("bench");
                let create = ClientAction::CreateUser(CreateUser {
                    id,
                    name: UserName::parse(&format!("Client {i}")).expect("a valid constant"),
                    email: EmailAddress::parse("client@example.com").expect("a valid constant"),
                    preferred_categories: Categories::parse(&["Denim"], "c")
                        .expect("a valid constant"),
                    history: ImportedHistory::default(),
                    external_id: None,
                    client_since: None,
                    imported: false,
                });
                bus.execute(id, create, &meta).await?;
                let low = ClientAction::SetEngagementScore(SetEngagementScore {
                    score: Score::parse(10, "score").expect("a valid constant"),
                    reason: None,
                    actor: "bench".into(),
                });
                bus.execute(id, low, &meta).await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let settings = ConsumerSettings {
        batch_size: 5000,
        ..Default::default()
    };
    Consumer::new(
        pool.clone(),
        test_vault(),
        UsersView::live(),
        settings.clone(),
        LogSignal::new(),
    )
    .catch_up()
    .await?;
    Consumer::new(
        pool.clone(),
        test_vault(),
        ProcessManager::default(),
        settings,
        LogSignal::new(),
    )
    .catch_up()
    .await?;
    let due: i64 = sqlx::query_scalar("select count(*) from email_jobs where status = 'PENDING'")
        .fetch_one(&pool)
        .await?;

    let peer = MockServer::start().await;
    let content = json!({ "subject": "We kept something for you", "preheader": "New in", "greeting": "Hi,",
                          "paragraphs": ["It has been a while."], "callToAction": "Take a look" });
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(200))
                .set_body_json(
                    json!({ "choices": [{ "message": { "content": content.to_string() } }] }),
                ),
        )
        .mount(&peer)
        .await;
    let writer = ConfiguredWriter::Llm(OpenAiWriter::new(OpenAiSettings {
        base_url: peer.uri(),
        model: "bench/model".into(),
        api_key: Secret::new("bench-key"),
        timeout: Duration::from_secs(10),
        requests_per_minute: 1_000_000,
    })?);
    let workers = EmailWorkers::new(
        pool.clone(),
        bus.clone(),
        writer,
        WorkerSettings {
            concurrency,
            poll_interval: Duration::from_millis(50),
            ..Default::default()
        },
        Arc::new(tokio::sync::Notify::new()),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(workers.run(stop.clone()));
    loop {
        let done: i64 = sqlx::query_scalar("select count(*) from email_jobs where status = 'DONE'")
            .fetch_one(&pool)
            .await?;
        if done >= due {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    stop.cancel();
    running.await?;
    let emails: i64 =
        sqlx::query_scalar("select count(*) from events where event_type = 'EmailGenerated'")
            .fetch_one(&pool)
            .await?;
    let distinct: i64 = sqlx::query_scalar("select count(distinct payload->'EmailGenerated'->>'emailId') from events where event_type = 'EmailGenerated'")
        .fetch_one(&pool)
        .await?;
    println!(
        "{due} jobs, LLM peer at 200 ms, concurrency {concurrency}: done in {:.2}s = {:.1} emails/s; {emails} EmailGenerated events, {distinct} distinct, peer saw {} requests",
        elapsed.as_secs_f64(),
        due as f64 / elapsed.as_secs_f64(),
        peer.received_requests().await.map_or(0, |r| r.len()),
    );
    drop(pool);
    sqlx::query("drop database if exists engagement_bench_emails with (force)")
        .execute(&admin)
        .await?;
    Ok(())
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
