//! The command path against a real PostgreSQL, one fresh database per test.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore;
use domain::client::{
    Client, ClientAction, ClientError, ClientServices, CreateUser, ImportedHistory, PlaceOrder,
};
use domain::values::{Categories, EmailAddress, Money, OrderId, Score, UserName};
use projections::clock::ManualClock;
use projections::commands::store::LogRepository;
use projections::commands::{CommandBus, CommandError, CommandMetadata, SNAPSHOT_EVERY};
use sqlx::PgPool;
use uuid::Uuid;

/// sequence, type, payload, metadata, global position, transaction id, recorded at.
type EventRow = (
    i64,
    String,
    serde_json::Value,
    serde_json::Value,
    i64,
    i64,
    chrono::DateTime<Utc>,
);

fn bus(pool: &PgPool) -> (CommandBus, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap(),
    ));
    (
        CommandBus::new(
            pool.clone(),
            test_vault(),
            ClientServices::default(),
            clock.clone(),
        ),
        clock,
    )
}

fn create(id: Uuid) -> ClientAction {
    ClientAction::CreateUser(CreateUser {
        id,
        name: UserName::parse("Grace Hopper").unwrap(),
        email: EmailAddress::parse("grace@example.com").unwrap(),
        preferred_categories: Categories::parse(&["Knitwear"], "preferredCategories").unwrap(),
        history: ImportedHistory::default(),
        external_id: None,
        client_since: None,
        imported: false,
    })
}

fn order(id: &str, amount: &str, clock: &ManualClock) -> ClientAction {
    use projections::clock::Clock as _;
    ClientAction::PlaceOrder(PlaceOrder {
        order_id: OrderId::parse(id).unwrap(),
        amount: Money::parse(amount, "amount").unwrap(),
        placed_at: clock.now(),
        categories: Categories::default(),
    })
}

async fn event_count(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from events where aggregate_id = $1")
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn events_round_trip_with_their_metadata_and_the_log_columns_are_filled(pool: PgPool) {
    let (bus, _) = bus(&pool);
    let id = Uuid::new_v4();
    let meta = CommandMetadata {
        actor: "operator:ops".into(),
        request_id: Some("req-1".into()),
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cause-1".into()),
    };
    let committed = bus.execute(id, create(id), &meta).await.unwrap();
    assert_eq!(committed.version, 2, "UserCreated then UserScored");

    let rows: Vec<EventRow> = sqlx::query_as(
        "select sequence, event_type, payload, metadata, global_position,
                transaction_id::text::bigint, recorded_at
           from events where aggregate_id = $1 order by sequence",
    )
    .bind(id.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].1, "UserCreated");
    assert_eq!(rows[1].1, "UserScored");
    // Personal fields are sealed in the log, and read back in the clear with the key.
    assert!(
        rows[0].2["UserCreated"].get("name").is_none(),
        "{}",
        rows[0].2
    );
    assert!(!rows[0].2.to_string().contains("Grace"));
    assert_eq!(
        rows[0].2["UserCreated"]["sealed"]["fields"],
        serde_json::json!(["email", "name"])
    );
    let read = projections::log::read_stream(&pool, &vault(), id)
        .await
        .unwrap();
    assert_eq!(
        read[0].payload().unwrap()["UserCreated"]["name"],
        "Grace Hopper"
    );
    // cadence-v2, the default: no order yet, on the day of joining: 51.5 + 12 (new) -> 64.
    assert_eq!(rows[1].2["UserScored"]["score"], 64);
    assert_eq!(rows[1].2["UserScored"]["policy"], "cadence-v2");
    for row in &rows {
        assert_eq!(row.3["actor"], "operator:ops");
        assert_eq!(row.3["requestId"], "req-1");
        assert_eq!(row.3["correlationId"], "corr-1");
        assert_eq!(row.3["causationId"], "cause-1");
        assert!(row.4 > 0, "global_position filled by the identity");
        assert!(row.5 > 0, "transaction_id filled by the default");
        assert!(
            (Utc::now() - row.6).num_minutes().abs() < 5,
            "recorded_at filled"
        );
    }
    assert!(rows[0].4 < rows[1].4);
    assert_eq!(rows[0].5, rows[1].5, "one command, one transaction");
    assert_eq!(committed.position.global_position, rows[1].4);
    assert_eq!(committed.position.transaction_id, rows[1].5);

    // And cqrs-es reads them back into the same client.
    let store = PersistedEventStore::<_, Client>::new_event_store(LogRepository::new(
        pool.clone(),
        vault(),
    ));
    let loaded = store.load_events(&id.to_string()).await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(
        loaded[0].metadata.get("actor").map(String::as_str),
        Some("operator:ops")
    );
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn thirty_two_concurrent_orders_on_one_user_all_count(pool: PgPool) {
    let (bus, clock) = bus(&pool);
    let id = Uuid::new_v4();
    let meta = CommandMetadata::for_actor("test");
    bus.execute(id, create(id), &meta).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let bus = bus.clone();
            let meta = meta.clone();
            let action = order(&format!("order-{i}"), "10.00", &clock);
            tokio::spawn(async move { bus.execute(id, action, &meta).await })
        })
        .collect();
    for task in tasks {
        task.await
            .unwrap()
            .expect("every concurrent order is accepted");
    }
    let orders: i64 = sqlx::query_scalar(
        "select count(*) from events where aggregate_id = $1 and event_type = 'OrderPlaced'",
    )
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(orders, 32);
    let store = PersistedEventStore::<_, Client>::new_event_store(LogRepository::new(
        pool.clone(),
        vault(),
    ));
    let mut context = store.load_aggregate(&id.to_string()).await.unwrap();
    let client = cqrs_es::AggregateContext::aggregate(&mut context).clone();
    assert_eq!(client.orders().order_count, 32);
    assert_eq!(client.orders().total_spent_cents, 32_000);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_same_order_id_twice_is_recorded_once(pool: PgPool) {
    let (bus, clock) = bus(&pool);
    let id = Uuid::new_v4();
    let meta = CommandMetadata::for_actor("test");
    bus.execute(id, create(id), &meta).await.unwrap();
    let first = bus
        .execute(id, order("A-1", "25", &clock), &meta)
        .await
        .unwrap();
    let again = bus
        .execute(id, order("A-1", "25", &clock), &meta)
        .await
        .unwrap();
    assert_eq!(
        first, again,
        "the repeat appends nothing and reports the same head"
    );
    let orders: i64 = sqlx::query_scalar(
        "select count(*) from events where aggregate_id = $1 and event_type = 'OrderPlaced'",
    )
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(orders, 1);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_user_loaded_from_a_snapshot_equals_the_user_replayed_from_every_event(pool: PgPool) {
    let (bus, clock) = bus(&pool);
    let id = Uuid::new_v4();
    let meta = CommandMetadata::for_actor("test");
    bus.execute(id, create(id), &meta).await.unwrap();
    for i in 0..(SNAPSHOT_EVERY * 2 + 7) {
        clock.advance(Duration::days(3));
        bus.execute(
            id,
            order(
                &format!("o-{i}"),
                &format!("{}.{:02}", i % 90 + 1, i % 100),
                &clock,
            ),
            &meta,
        )
        .await
        .unwrap();
    }
    let snapshots: i64 =
        sqlx::query_scalar("select count(*) from snapshots where aggregate_id = $1")
            .bind(id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(snapshots, 1, "a snapshot was written");

    let repo = || LogRepository::new(pool.clone(), vault());
    let mut from_snapshot =
        PersistedEventStore::<_, Client>::new_snapshot_store(repo(), SNAPSHOT_EVERY)
            .load_aggregate(&id.to_string())
            .await
            .unwrap();
    let mut replayed = PersistedEventStore::<_, Client>::new_event_store(repo())
        .load_aggregate(&id.to_string())
        .await
        .unwrap();
    use cqrs_es::AggregateContext as _;
    assert_eq!(from_snapshot.aggregate(), replayed.aggregate());
    assert_eq!(
        from_snapshot.aggregate().recorded_order_ids(),
        SNAPSHOT_EVERY * 2 + 7
    );
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_appended(pool: PgPool) {
    let (bus, clock) = bus(&pool);
    let id = Uuid::new_v4();
    let meta = CommandMetadata::for_actor("test");
    bus.execute(id, create(id), &meta).await.unwrap();
    let before = event_count(&pool, id).await;

    // Parsed at the edge: these never become commands.
    assert_eq!(
        EmailAddress::parse("not-an-email").unwrap_err().field,
        "email"
    );
    assert_eq!(UserName::parse("   ").unwrap_err().field, "name");
    assert_eq!(Money::parse("-5", "amount").unwrap_err().field, "amount");
    assert_eq!(Score::parse(101, "score").unwrap_err().field, "score");

    // Decided by the domain: refused before anything is written.
    use projections::clock::Clock as _;
    let future = ClientAction::PlaceOrder(PlaceOrder {
        order_id: OrderId::parse("F-1").unwrap(),
        amount: Money::parse("5", "amount").unwrap(),
        placed_at: clock.now() + Duration::days(30),
        categories: Categories::default(),
    });
    let err = bus.execute(id, future, &meta).await.unwrap_err();
    assert!(
        matches!(&err, CommandError::Rejected(ClientError::Validation(v)) if v.field == "placedAt"),
        "{err:?}"
    );
    let missing = Uuid::new_v4();
    let err = bus
        .execute(missing, order("x", "1", &clock), &meta)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Rejected(ClientError::NotFound)),
        "{err:?}"
    );
    assert_eq!(event_count(&pool, id).await, before);
    assert_eq!(event_count(&pool, missing).await, 0);
}

/// Two command paths over one database are two instances: each keeps its own cache of clients.
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn two_instances_writing_one_client_in_turn_see_each_others_orders(pool: PgPool) {
    let (a, clock) = bus(&pool);
    let b = CommandBus::new(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock.clone(),
    );
    let id = Uuid::new_v4();
    let meta = CommandMetadata::for_actor("test");
    a.execute(id, create(id), &meta).await.unwrap();
    for i in 0..(SNAPSHOT_EVERY + 10) {
        clock.advance(Duration::hours(5));
        let writer = if i % 3 == 0 { &b } else { &a };
        let committed = writer
            .execute(id, order(&format!("t-{i}"), "12.50", &clock), &meta)
            .await
            .unwrap();
        // The position a command reports is where its last event landed.
        let head = a.head_of(id).await.unwrap().unwrap();
        assert_eq!(committed, head, "order {i}");
    }
    // Each instance, and one that never saw the client, know every order.
    for reader in [&a, &b, &bus(&pool).0] {
        let client = reader.load(id).await.unwrap();
        assert_eq!(client.orders().order_count as usize, SNAPSHOT_EVERY + 10);
        assert_eq!(client.recorded_order_ids(), SNAPSHOT_EVERY + 10);
    }
    // A repeat through the other instance is still a no-op that reports the client's head.
    let again = b
        .execute(id, order("t-1", "12.50", &clock), &meta)
        .await
        .unwrap();
    assert_eq!(again, a.head_of(id).await.unwrap().unwrap());
    assert_eq!(
        event_count(&pool, id).await,
        a.head_of(id).await.unwrap().unwrap().version
    );
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn concurrent_orders_from_two_instances_all_count_once(pool: PgPool) {
    let (a, clock) = bus(&pool);
    let b = CommandBus::new(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock.clone(),
    );
    let id = Uuid::new_v4();
    let meta = CommandMetadata::for_actor("test");
    a.execute(id, create(id), &meta).await.unwrap();
    // Warm both caches.
    a.execute(id, order("warm-a", "1", &clock), &meta)
        .await
        .unwrap();
    b.execute(id, order("warm-b", "1", &clock), &meta)
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let bus = if i % 2 == 0 { a.clone() } else { b.clone() };
        let meta = meta.clone();
        let action = order(&format!("c-{i}"), "3", &clock);
        tasks.spawn(async move { bus.execute(id, action, &meta).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let client = bus(&pool).0.load(id).await.unwrap();
    assert_eq!(client.orders().order_count, 26);
    assert_eq!(client.orders().total_spent_cents, 2 * 100 + 24 * 300);
    // Two events per order (the order and its score) plus the creation's.
    let creation = 2;
    assert!(event_count(&pool, id).await <= creation + 26 * 2);
}

/// The tests' vault (the same master key as every other test's).
fn vault() -> std::sync::Arc<projections::vault::Vault> {
    test_vault()
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
