//! Read-model benchmarks against the local PostgreSQL (a database of their own,
//! `engagement_bench`, dropped and created anew).
//!
//! ```sh
//! cargo bench -p projections --bench read_models            # 1,000,000 events
//! BENCH_EVENTS=200000 cargo bench -p projections --bench read_models
//! ```
//!
//! 1. Rebuild: writes a synthetic log (per user: `UserCreated`, then orders and scores), then
//!    rebuilds the users and emails views from it and reports events per second.
//! 2. Live lag: with the consumers running, writers stream commands through the command path
//!    for a while; for each command, the time from its commit until the users view has applied
//!    it (the read-your-writes wait) is recorded, and the percentiles are reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::client::{ClientAction, ClientServices, CreateUser, ImportedHistory, PlaceOrder};
use domain::values::{Categories, EmailAddress, Money, OrderId, UserName};
use projections::clock::SystemClock;
use projections::commands::{CommandBus, CommandMetadata};
use projections::db;
use projections::log::consumer::{ConsumerSettings, LogSignal};
use projections::views::rebuild::{rebuild, ReadModel};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const EVENTS_PER_USER: i64 = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: i64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let lag_seconds: u64 = std::env::var("BENCH_LAG_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    let url = format!("{server}/engagement_bench");
    let admin = db::connect(&base, &db::PoolSettings::default()).await?;
    sqlx::query("drop database if exists engagement_bench with (force)")
        .execute(&admin)
        .await?;
    sqlx::query("create database engagement_bench")
        .execute(&admin)
        .await?;
    let pool = db::connect(
        &url,
        &db::PoolSettings {
            statement_timeout: Duration::from_secs(600),
            ..Default::default()
        },
    )
    .await?;
    db::migrate(&pool).await?;

    let started = Instant::now();
    write_synthetic_log(&pool, total / EVENTS_PER_USER).await?;
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await?;
    println!(
        "wrote {events} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    sqlx::query("vacuum analyze events").execute(&pool).await?;

    for model in ReadModel::ALL {
        let report = rebuild(&pool, &test_vault(), model).await?;
        println!(
            "rebuild {:<6}: {} events in {:.2}s = {:.0} events/s",
            model.name(),
            report.events,
            report.elapsed.as_secs_f64(),
            report.events as f64 / report.elapsed.as_secs_f64()
        );
    }

    live_lag(&pool, Duration::from_secs(lag_seconds)).await?;
    drop(pool);
    if std::env::var_os("BENCH_KEEP_DB").is_none() {
        sqlx::query("drop database if exists engagement_bench with (force)")
            .execute(&admin)
            .await?;
    }
    Ok(())
}

/// Per user: `UserCreated` then alternating `OrderPlaced` / `UserScored`, in the current
/// schema, written by SQL in chunks (the command path would take far longer to write them).
async fn write_synthetic_log(pool: &PgPool, users: i64) -> anyhow::Result<()> {
    let chunk = 10_000;
    let mut first = 0;
    while first < users {
        let last = (first + chunk).min(users);
        sqlx::query(
            r#"
            insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
            select 'client', u.id::text, s.seq,
                   case when s.seq = 1 then 'UserCreated' when s.seq % 2 = 0 then 'OrderPlaced' else 'UserScored' end,
                   '1.0',
                   case
                     when s.seq = 1 then jsonb_build_object('UserCreated', jsonb_build_object(
                        'userId', u.id, 'name', 'User ' || u.n, 'email', 'user' || u.n || '@example.com',
                        'preferredCategories', jsonb_build_array('Denim'),
                        'orders', jsonb_build_object('orderCount', 0, 'totalSpentCents', 0, 'averageOrderValueCents', 0,
                                                     'lastOrderAt', null, 'firstOrderAt', null),
                        'createdAt', '2026-01-01T00:00:00Z'))
                     when s.seq % 2 = 0 then jsonb_build_object('OrderPlaced', jsonb_build_object(
                        'orderId', 'o' || s.seq, 'amountCents', 2500, 'placedAt', '2026-02-01T00:00:00Z',
                        'categories', jsonb_build_array(),
                        'orders', jsonb_build_object('orderCount', s.seq / 2, 'totalSpentCents', 2500 * (s.seq / 2),
                                                     'averageOrderValueCents', 2500,
                                                     'lastOrderAt', '2026-02-01T00:00:00Z', 'firstOrderAt', '2026-02-01T00:00:00Z'),
                        'recordedAt', '2026-02-01T00:00:00Z'))
                     else jsonb_build_object('UserScored', jsonb_build_object(
                        'score', 60 + s.seq, 'previousScore', 60, 'band', 'healthy', 'previousBand', 'watch',
                        'threshold', 50, 'policy', 'seed-v1',
                        'factors', jsonb_build_array(jsonb_build_object('name', 'recency', 'points', 0, 'detail', 'Last order 0 days ago.')),
                        'asOf', '2026-02-01T00:00:00Z', 'cause', 'activity', 'reason', null, 'actor', null,
                        'nextChangeAt', '2026-03-04T00:00:00Z'))
                   end,
                   '{"actor":"bench"}'::jsonb
              from (select n, md5(n::text)::uuid as id from generate_series($1::bigint, $2::bigint - 1) n) u
             cross join generate_series(1, $3::int) s(seq)
             order by u.n, s.seq
            "#,
        )
        .bind(first)
        .bind(last)
        .bind(EVENTS_PER_USER as i32)
        .execute(pool)
        .await?;
        first = last;
    }
    Ok(())
}

async fn live_lag(pool: &PgPool, duration: Duration) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Wired as the service wires them: appends wake the consumers directly.
    let signal = LogSignal::announcing(pool.clone());
    let models = projections::runtime::start(
        pool,
        &test_vault(),
        &ConsumerSettings::default(),
        &signal,
        &mut tasks,
        &stop,
    );
    let bus = CommandBus::announcing(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        Arc::new(SystemClock),
        signal,
    );
    let writers = 4;
    let deadline = Instant::now() + duration;
    let mut handles = Vec::new();
    for w in 0..writers {
        let bus = bus.clone();
        let users = models.users.clone();
        handles.push(tokio::spawn(async move {
            let meta = CommandMetadata::for_actor(format!("bench-{w}"));
            let mut lags = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = Uuid::new_v4();
                let create = ClientAction::CreateUser(CreateUser {
                    id,
                    name: UserName::parse("Bench User").expect("a valid constant"),
                    email: EmailAddress::parse("bench@example.com").expect("a valid constant"),
                    preferred_categories: Categories::default(),
                    history: ImportedHistory::default(),
                    external_id: None,
                    client_since: None,
                    imported: false,
                });
                for action in [create, order(n)] {
                    let committed = bus.execute(id, action, &meta).await?;
                    let t = Instant::now();
                    users
                        .wait_for(committed.position, Duration::from_secs(10))
                        .await?;
                    lags.push(t.elapsed());
                    n += 1;
                }
            }
            anyhow::Ok(lags)
        }));
    }
    let mut lags = Vec::new();
    for handle in handles {
        lags.extend(handle.await??);
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    lags.sort();
    let pct = |p: f64| {
        lags[((lags.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(lags.len() - 1)]
    };
    println!(
        "live lag over {} commands from {writers} writers in {}s ({:.0} commands/s): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lags.len(),
        duration.as_secs(),
        lags.len() as f64 / duration.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

fn order(n: u64) -> ClientAction {
    ClientAction::PlaceOrder(PlaceOrder {
        order_id: OrderId::parse(&format!("bench-{n}")).expect("a valid constant"),
        amount: Money::from_cents(2500, "amount").expect("a valid constant"),
        placed_at: Utc::now(),
        categories: Categories::default(),
    })
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
