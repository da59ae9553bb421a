//! Scores move as time passes, without anyone touching the client.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use domain::client::{ClientAction, ClientServices, CreateUser, ImportedHistory, PlaceOrder};
use domain::scoring::SeedV1;
use domain::values::{Categories, EmailAddress, Money, OrderId, UserName};
use projections::clock::{Clock, ManualClock};
use projections::commands::{CommandBus, CommandMetadata};
use projections::log;
use projections::log::consumer::{ConsumerSettings, LogSignal};
use projections::scheduler::{rescore_all, RescoreSettings, Rescorer};
use projections::views::users::load_user;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn create(id: Uuid, orders: u32) -> ClientAction {
    ClientAction::CreateUser(CreateUser {
        id,
        name: UserName::parse("Lapsing Client").unwrap(),
        email: EmailAddress::parse("lapsing@example.com").unwrap(),
        preferred_categories: Categories::default(),
        history: ImportedHistory {
            order_count: orders,
            average_order_value: Money::parse("40", "averageOrderValue").unwrap(),
            last_order_at: None,
        },
        external_id: None,
        client_since: None,
        imported: false,
    })
}

fn order(id: &str, at: chrono::DateTime<Utc>) -> ClientAction {
    ClientAction::PlaceOrder(PlaceOrder {
        order_id: OrderId::parse(id).unwrap(),
        amount: Money::parse("40", "amount").unwrap(),
        placed_at: at,
        categories: Categories::default(),
    })
}

async fn events_of(pool: &PgPool, id: Uuid) -> usize {
    log::read_stream(
        pool,
        &projections::vault::Vault::new(&projections::vault::MasterKey::new([7; 32])),
        id,
    )
    .await
    .unwrap()
    .len()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_lapsing_client_crosses_the_threshold_by_itself_as_the_clock_moves(pool: PgPool) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 2, 1, 8, 0, 0).unwrap(),
    ));
    let bus = CommandBus::new(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock.clone(),
    );
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let settings = ConsumerSettings {
        poll_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let models = projections::runtime::start(
        &pool,
        &test_vault(),
        &settings,
        &LogSignal::new(),
        &mut tasks,
        &stop,
    );
    let rescorer = Rescorer::new(
        pool.clone(),
        bus.clone(),
        models.users.clone(),
        RescoreSettings::default(),
    );
    let meta = CommandMetadata::for_actor("test");

    let lapsing = Uuid::new_v4();
    bus.execute(lapsing, create(lapsing, 0), &meta)
        .await
        .unwrap();
    let placed = bus
        .execute(lapsing, order("first", clock.now()), &meta)
        .await
        .unwrap();
    // A weekly regular: twenty orders, a week apart, the last one today.
    let regular = Uuid::new_v4();
    bus.execute(regular, create(regular, 0), &meta)
        .await
        .unwrap();
    let start = clock.now();
    let mut last = None;
    for week in 0..20 {
        let at = start - chrono::Duration::weeks(19 - week);
        last = Some(
            bus.execute(regular, order(&format!("w{week}"), at), &meta)
                .await
                .unwrap(),
        );
    }
    models
        .users
        .wait_for(
            placed.position.max(last.unwrap().position),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let before = load_user(&pool, lapsing).await.unwrap().unwrap();
    assert!(
        !before.at_risk,
        "a client who ordered today is not at risk ({})",
        before.engagement_score
    );

    let mut crossed_on = None;
    let regular_events = events_of(&pool, regular).await;
    for day in 1..=120 {
        clock.advance(chrono::Duration::days(1));
        rescorer.sweep_once().await.unwrap();
        let row = load_user(&pool, lapsing).await.unwrap().unwrap();
        if row.at_risk {
            crossed_on = Some(day);
            break;
        }
    }
    let day = crossed_on.expect("the client crossed the threshold within 120 days");
    // cadence-v2: one order, a new client: 51.5 - 15 ln(1 + d/90) + 12 (1 - d/90) < 49.5
    // from about day 53; value points may not lift a client across the threshold.
    assert!((45..=60).contains(&day), "crossed on day {day}");
    let row = load_user(&pool, lapsing).await.unwrap().unwrap();
    assert!(row.engagement_score < 50);
    let history = log::read_stream(&pool, &test_vault(), lapsing)
        .await
        .unwrap();
    let crossing = history.last().unwrap();
    assert_eq!(crossing.event_type, "UserScored");
    assert_eq!(
        crossing.payload().unwrap()["UserScored"]["cause"],
        "time_passed"
    );
    // Only users whose score was due were touched: the weekly regular, still inside their
    // rhythm for most of this time, got far fewer rescores than there were sweeps.
    let regular_rescores = events_of(&pool, regular).await - regular_events;
    assert!(
        regular_rescores < day as usize / 2,
        "{regular_rescores} rescores in {day} sweeps"
    );

    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn switching_policy_and_rescoring_everyone_is_one_call(pool: PgPool) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 2, 1, 8, 0, 0).unwrap(),
    ));
    let seed = ClientServices {
        policy: Arc::new(SeedV1),
        ..ClientServices::default()
    };
    let old_bus = CommandBus::new(pool.clone(), test_vault(), seed, clock.clone());
    let meta = CommandMetadata::for_actor("test");
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        old_bus.execute(*id, create(*id, 3), &meta).await.unwrap();
    }
    old_bus
        .execute(ids[4], ClientAction::DeleteUser, &meta)
        .await
        .unwrap();

    let new_bus = CommandBus::new(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock.clone(),
    );
    assert_eq!(
        rescore_all(&pool, &new_bus, 2).await.unwrap(),
        4,
        "the deleted client is skipped"
    );
    for id in &ids[..4] {
        let events = log::read_stream(&pool, &test_vault(), *id).await.unwrap();
        let last = events.last().unwrap().payload().unwrap();
        assert_eq!(last["UserScored"]["policy"], "cadence-v2");
    }
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
