//! The holdout and the uplift report against a real PostgreSQL, with an injected clock: held-out
//! clients' triggers are recorded and never emailed, and the report counts exactly the orders
//! placed in each trigger's window.

mod common;

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use common::*;
use domain::client::{
    CancelOrder, ClientAction, ClientServices, EngagementGroup, Holdout, PlaceOrder,
    SetEngagementScore,
};
use domain::uplift::{report, Trigger};
use domain::values::{Categories, Money, OrderId, Score};
use projections::clock::ManualClock;
use projections::commands::CommandBus;
use projections::engagement::process_manager::ProcessManagerSettings;
use projections::engagement::writer::template::TemplateWriter;
use projections::engagement::writer::ConfiguredWriter;
use projections::views::rebuild::{rebuild, ReadModel};
use sqlx::PgPool;
use uuid::Uuid;

/// A flow whose commands are decided at `clock` and whose new clients are held out at
/// `percent`.
fn flow(pool: &PgPool, clock: Arc<ManualClock>, percent: u8) -> Flow {
    let services = ClientServices {
        holdout: Holdout {
            salt: Uuid::from_u128(0x5a17),
            percent,
        },
        ..ClientServices::default()
    };
    let mut flow = Flow::build(
        pool,
        services.clone(),
        ProcessManagerSettings {
            trigger_delay: Duration::zero(),
            ..ProcessManagerSettings::default()
        },
    );
    flow.bus = CommandBus::new(pool.clone(), test_vault(), services, clock);
    flow
}

fn score(value: i64) -> ClientAction {
    ClientAction::SetEngagementScore(SetEngagementScore {
        score: Score::parse(value, "score").unwrap(),
        reason: Some("test".into()),
        actor: "test".into(),
    })
}

fn order(id: &str, cents: i64, placed_at: chrono::DateTime<Utc>) -> ClientAction {
    ClientAction::PlaceOrder(PlaceOrder {
        order_id: OrderId::parse(id).unwrap(),
        amount: Money::from_cents(cents, "amount").unwrap(),
        placed_at,
        categories: Categories::default(),
    })
}

/// SplitMix64: the same seeded draws as the statistics' simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn group_of(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("select engagement_group from users where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// One seed of the simulation, end to end: 40 at-risk clients, half held out; an email lifts
/// the chance of ordering within 30 days from 30% to 60%. Orders outside the window and a
/// cancelled one must not count.
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn held_out_clients_are_never_emailed_and_the_report_counts_exactly(pool: PgPool) {
    let t0 = Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let flow = flow(&pool, clock.clone(), 50);
    let mut clients = Vec::new();
    for i in 0..40 {
        let id = flow.client(&format!("Client {i}")).await;
        flow.run(id, score(10)).await;
        clients.push(id);
    }
    flow.catch_up().await;
    let workers = flow.workers(ConfiguredWriter::Template(TemplateWriter), fast(3));
    workers.drain_once().await.unwrap();
    flow.catch_up().await;

    let mut expected = Vec::new();
    let mut rng = Rng(42);
    clock.set(t0 + Duration::days(45));
    for (i, id) in clients.iter().enumerate() {
        let held_out = group_of(&pool, *id).await == "HOLDOUT";
        let emails: i64 = sqlx::query_scalar("select count(*) from emails where user_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        let job: String = sqlx::query_scalar("select status from email_jobs where user_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if held_out {
            assert_eq!((emails, job.as_str()), (0, "HELD_OUT"), "a held-out client");
        } else {
            assert_eq!((emails, job.as_str()), (1, "DONE"), "a treated client");
        }
        let reactivated = rng.next() < if held_out { 0.3 } else { 0.6 };
        let mut revenue = 0;
        if reactivated {
            let day = 1 + (rng.next() * 29.0) as i64;
            let cents = 1_000 + 100 * i as i64;
            flow.run(
                *id,
                order(&format!("in-{i}"), cents, t0 + Duration::days(day)),
            )
            .await;
            revenue = cents;
        }
        // Noise the report must ignore: an order after the window, and one cancelled.
        if i % 5 == 0 {
            flow.run(
                *id,
                order(&format!("late-{i}"), 9_999, t0 + Duration::days(31)),
            )
            .await;
        }
        if i % 7 == 0 {
            flow.run(
                *id,
                order(&format!("back-{i}"), 7_777, t0 + Duration::days(3)),
            )
            .await;
            flow.run(
                *id,
                ClientAction::CancelOrder(CancelOrder {
                    order_id: OrderId::parse(&format!("back-{i}")).unwrap(),
                    reason: Some("returned".into()),
                }),
            )
            .await;
        }
        expected.push(Trigger {
            held_out,
            reactivated,
            revenue_cents: revenue,
        });
    }
    let expected = report(&expected);
    assert!(expected.treatment.triggered > 5 && expected.holdout.triggered > 5);
    let seen = report(
        &projections::views::uplift::triggers(&pool, Some(t0), t0 + Duration::days(1), 30)
            .await
            .unwrap(),
    );
    assert_eq!(seen, expected);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn with_no_holdout_everyone_is_emailed_and_the_holdout_is_empty(pool: PgPool) {
    let t0 = Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap();
    let flow = flow(&pool, Arc::new(ManualClock::new(t0)), 0);
    for i in 0..10 {
        let id = flow.client(&format!("Client {i}")).await;
        flow.run(id, score(10)).await;
    }
    flow.catch_up().await;
    flow.workers(ConfiguredWriter::Template(TemplateWriter), fast(3))
        .drain_once()
        .await
        .unwrap();
    flow.catch_up().await;
    let emails: i64 = sqlx::query_scalar("select count(*) from emails")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(emails, 10);
    let seen = report(
        &projections::views::uplift::triggers(&pool, None, t0 + Duration::days(1), 30)
            .await
            .unwrap(),
    );
    assert_eq!((seen.treatment.triggered, seen.holdout.triggered), (10, 0));
    assert!(seen.holdout.rate.low.is_finite());
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_group_survives_a_rebuild_and_a_change_of_the_setting(pool: PgPool) {
    let t0 = Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let flow = flow(&pool, clock.clone(), 50);
    let mut before = Vec::new();
    for i in 0..30 {
        let id = flow.client(&format!("Client {i}")).await;
        before.push((id, flow.bus.load(id).await.unwrap().group()));
    }
    assert!(before.iter().any(|(_, g)| *g == EngagementGroup::Holdout));
    flow.catch_up().await;
    rebuild(&pool, &test_vault(), ReadModel::Users)
        .await
        .unwrap();
    // Another instance with the holdout off: nobody already assigned moves.
    let other = self::flow(&pool, clock, 0);
    for (id, group) in &before {
        assert_eq!(group_of(&pool, *id).await, group.as_str());
        assert_eq!(other.bus.load(*id).await.unwrap().group(), *group);
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn clients_from_before_the_holdout_are_recorded_as_treatment_once(pool: PgPool) {
    let t0 = Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap();
    let flow = flow(&pool, Arc::new(ManualClock::new(t0)), 50);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(flow.client(&format!("Client {i}")).await);
    }
    // Make their streams look as they did before the holdout: no group at creation.
    sqlx::query("update events set payload = payload #- '{UserCreated,group}' where event_type = 'UserCreated'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from snapshots")
        .execute(&pool)
        .await
        .unwrap();
    let bus = CommandBus::new(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        Arc::new(ManualClock::new(t0)),
    );
    flow.run(ids[5], ClientAction::DeleteUser).await;
    let (legacy, recorded) = projections::commands::groups::backfill(&bus).await.unwrap();
    assert_eq!(
        (legacy, recorded),
        (6, 5),
        "the deleted client is left alone"
    );
    assert_eq!(
        projections::commands::groups::backfill(&bus).await.unwrap(),
        (1, 0),
        "a second run records nothing"
    );
    flow.catch_up().await;
    for id in &ids[..5] {
        assert_eq!(
            bus.load(*id).await.unwrap().group(),
            EngagementGroup::Treatment
        );
        assert_eq!(group_of(&pool, *id).await, "TREATMENT");
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_trend_counts_each_day_as_it_stood(pool: PgPool) {
    use projections::log::consumer::{Consumer, ConsumerSettings, LogSignal};
    use projections::views::trend::{days, TrendView};
    let t0 = Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let flow = flow(&pool, clock.clone(), 0);
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = flow.client(&format!("Client {i}")).await;
        flow.run(id, score(10)).await;
        ids.push(id);
    }
    flow.catch_up().await;
    flow.workers(ConfiguredWriter::Template(TemplateWriter), fast(3))
        .drain_once()
        .await
        .unwrap();
    // Day 2: one client orders and leaves the at-risk band.
    clock.set(t0 + Duration::days(2));
    flow.run(ids[0], order("back", 5_000, t0 + Duration::days(2)))
        .await;
    // Day 3: another is deleted.
    clock.set(t0 + Duration::days(3));
    flow.run(ids[1], ClientAction::DeleteUser).await;
    let trend = Consumer::new(
        pool.clone(),
        test_vault(),
        TrendView,
        ConsumerSettings::default(),
        LogSignal::new(),
    );
    trend.catch_up().await.unwrap();
    let day0 = t0.date_naive();
    let seen = days(&pool, day0 - Duration::days(1), day0 + Duration::days(3))
        .await
        .unwrap();
    let at_risk: Vec<i64> = seen.iter().map(|d| d.at_risk).collect();
    let emails: Vec<i64> = seen.iter().map(|d| d.emails).collect();
    let reactivations: Vec<i64> = seen.iter().map(|d| d.reactivations).collect();
    assert_eq!(at_risk, [0, 3, 3, 2, 1]);
    assert_eq!(emails, [0, 3, 0, 0, 0]);
    assert_eq!(reactivations, [0, 0, 0, 1, 0]);
    assert_eq!(seen[1].average_score, 10.0);
    assert!(seen[3].average_score > 10.0, "{:?}", seen[3]);
    // Applying the same log again from scratch gives the same days (a rebuild).
    sqlx::query("delete from engagement_daily")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from trend_clients")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from consumer_checkpoints where name = 'trend'")
        .execute(&pool)
        .await
        .unwrap();
    Consumer::new(
        pool.clone(),
        test_vault(),
        TrendView,
        ConsumerSettings::default(),
        LogSignal::new(),
    )
    .catch_up()
    .await
    .unwrap();
    assert_eq!(
        days(&pool, day0 - Duration::days(1), day0 + Duration::days(3))
            .await
            .unwrap(),
        seen
    );
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
