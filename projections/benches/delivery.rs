//! The global send rate: 1,000 sends to a local SMTP server (aiosmtpd) through two senders at
//! once (two instances' worth), at the configured `SMTP_MAX_PER_SECOND`; the rate the server
//! saw, first message to last, against the configured one. A reference run with no limit shows
//! what the same path does unthrottled, so the limit is what holds the rate.
//!
//! ```sh
//! cargo bench -p projections --bench delivery   # BENCH_SENDS (1000), BENCH_RATE (50), BENCH_RUNS (3)
//! ```

#[path = "../tests/smtp/mod.rs"]
mod smtp;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use domain::client::{
    ClientAction, ClientServices, CreateUser, DeliveryMode, EmailContent, Generator,
    ImportedHistory, RecordEmail, SetEngagementScore,
};
use domain::values::{Categories, EmailAddress, Score, UserName};
use futures::StreamExt as _;
use projections::clock::SystemClock;
use projections::commands::{CommandBus, CommandMetadata};
use projections::db;
use projections::engagement::delivery::smtp::{Mailer, MailerSettings};
use projections::engagement::delivery::{DeliverySettings, Sender, SenderSettings};
use projections::engagement::process_manager::ProcessManager;
use projections::log::consumer::{Consumer, ConsumerSettings, LogSignal};
use smtp::SmtpServer;
use sqlx::PgPool;
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` clients, each with one email written under `auto`, released as send jobs.
async fn queue(pool: &PgPool, bus: &CommandBus, n: usize) -> anyhow::Result<()> {
    futures::stream::iter(0..n)
        .map(|i| {
            let bus = bus.clone();
            async move {
                let id = Uuid::new_v4();
                let meta = CommandMetadata::for_actor("bench");
                let create = ClientAction::CreateUser(CreateUser {
                    id,
                    name: UserName::parse(&format!("Client {i}")).expect("a valid constant"),
                    email: EmailAddress::parse(&format!("client{i}@example.com"))
                        .expect("a valid address"),
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
                bus.execute(id, low, &meta).await?;
                let email = ClientAction::RecordEmail(RecordEmail {
                    email_id: Uuid::new_v4(),
                    content: EmailContent {
                        subject: "We kept something for you".into(),
                        preheader: "New in".into(),
                        text: "Hi, it has been a while.".into(),
                        html: "<p>Hi, it has been a while.</p>".into(),
                        generator: Generator {
                            kind: "template".into(),
                            model: "v1".into(),
                        },
                        usage: None,
                    },
                    trigger: None,
                    delivery: DeliveryMode::Auto,
                });
                bus.execute(id, email, &meta).await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Consumer::new(
        pool.clone(),
        test_vault(),
        ProcessManager::default(),
        ConsumerSettings {
            batch_size: 5000,
            ..Default::default()
        },
        LogSignal::new(),
    )
    .catch_up()
    .await?;
    Ok(())
}

/// Sends every queued email through two senders at once; returns the rate the server saw.
async fn send(
    pool: &PgPool,
    bus: &CommandBus,
    smtp: &SmtpServer,
    rate: Option<f64>,
    n: usize,
) -> anyhow::Result<f64> {
    let before = smtp.message_files().len();
    let senders: Vec<Sender> = (0..2)
        .map(|_| {
            let mailer = Mailer::new(&MailerSettings {
                url: format!("smtp://127.0.0.1:{}?tls=off", smtp.port)
                    .parse()
                    .expect("a valid constant"),
                from: "Shop <hello@shop.example>"
                    .parse()
                    .expect("a valid constant"),
                unsubscribe_mailto: None,
                dkim: None,
                pool_size: 4,
                timeout: Duration::from_secs(10),
            })
            .map_err(anyhow::Error::msg)?;
            Ok(Sender::new(
                pool.clone(),
                bus.clone(),
                Arc::new(mailer),
                DeliverySettings {
                    mode: DeliveryMode::Auto,
                    ..DeliverySettings::off()
                },
                SenderSettings {
                    concurrency: 4,
                    max_per_second: rate,
                    ..SenderSettings::default()
                },
                Arc::new(tokio::sync::Notify::new()),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    futures::future::try_join_all(senders.iter().map(Sender::drain_once)).await?;
    let files = smtp.message_files();
    anyhow::ensure!(
        files.len() - before == n,
        "{} messages arrived, {n} expected",
        files.len() - before
    );
    let times: Vec<SystemTime> = files[before..]
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()))
        .collect::<Result<_, _>>()?;
    let first = times
        .iter()
        .min()
        .copied()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let last = times
        .iter()
        .max()
        .copied()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let span = last.duration_since(first)?.as_secs_f64();
    Ok((n - 1) as f64 / span.max(f64::EPSILON))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sends: usize = env_or("BENCH_SENDS", 1000);
    let rate: f64 = env_or("BENCH_RATE", 50.0);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (server_url, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    let admin = db::connect(&base, &db::PoolSettings::default()).await?;
    sqlx::query("drop database if exists engagement_bench_delivery with (force)")
        .execute(&admin)
        .await?;
    sqlx::query("create database engagement_bench_delivery")
        .execute(&admin)
        .await?;
    let pool = db::connect(
        &format!("{server_url}/engagement_bench_delivery"),
        &db::PoolSettings {
            max_connections: 30,
            ..Default::default()
        },
    )
    .await?;
    db::migrate(&pool).await?;
    let bus = CommandBus::new(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        Arc::new(SystemClock),
    );
    let smtp = SmtpServer::start();

    queue(&pool, &bus, sends).await?;
    let unlimited = send(&pool, &bus, &smtp, None, sends).await?;
    println!("reference, no limit: {unlimited:.1} sends/s");
    let mut seen = Vec::new();
    for run in 1..=runs {
        queue(&pool, &bus, sends).await?;
        let achieved = send(&pool, &bus, &smtp, Some(rate), sends).await?;
        println!(
            "run {run}: {sends} sends, two senders, limit {rate}/s: {achieved:.2} sends/s ({:+.2}% of the limit)",
            (achieved / rate - 1.0) * 100.0
        );
        seen.push(achieved);
    }
    let median = median(seen);
    println!(
        "median of {runs}: {median:.2} sends/s at a limit of {rate}/s = {:.4} of the limit ({:+.2}%); unlimited {unlimited:.1}/s",
        median / rate,
        (median / rate - 1.0) * 100.0
    );
    drop(pool);
    sqlx::query("drop database if exists engagement_bench_delivery with (force)")
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
