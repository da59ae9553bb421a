//! The read models against a real PostgreSQL: gaps, crashes, competing instances, rebuilds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use domain::client::{
    ClientAction, ClientServices, CreateUser, EmailContent, Generator, ImportedHistory, PlaceOrder,
    RecordEmail, SetEngagementScore,
};
use domain::values::{Categories, EmailAddress, Money, OrderId, Score, UserName};
use projections::clock::{Clock, ManualClock};
use projections::commands::{CommandBus, CommandMetadata};
use projections::log::consumer::{
    self, BatchOutcome, Consumer, ConsumerSettings, LogSignal, Projection,
};
use projections::log::position::LogPosition;
use projections::log::{self, StoredEvent};
use projections::views::emails::EmailsView;
use projections::views::rebuild::{rebuild, ReadModel};
use projections::views::users::{load_user, UsersView};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap(),
    ))
}

fn bus(pool: &PgPool, clock: Arc<ManualClock>) -> CommandBus {
    CommandBus::new(pool.clone(), test_vault(), ClientServices::default(), clock)
}

fn settings() -> ConsumerSettings {
    ConsumerSettings {
        batch_size: 100,
        poll_interval: Duration::from_millis(200),
        ..ConsumerSettings::default()
    }
}

fn create(id: Uuid, name: &str) -> ClientAction {
    ClientAction::CreateUser(CreateUser {
        id,
        name: UserName::parse(name).unwrap(),
        email: EmailAddress::parse(&format!("{}@example.com", id.simple())).unwrap(),
        preferred_categories: Categories::parse(&["Denim", "Shoes"], "preferredCategories")
            .unwrap(),
        history: ImportedHistory::default(),
        external_id: None,
        client_since: None,
        imported: false,
    })
}

fn order(id: &str, cents: i64, at: chrono::DateTime<Utc>) -> ClientAction {
    ClientAction::PlaceOrder(PlaceOrder {
        order_id: OrderId::parse(id).unwrap(),
        amount: Money::from_cents(cents, "amount").unwrap(),
        placed_at: at,
        categories: Categories::default(),
    })
}

fn user_created_payload(id: Uuid, name: &str) -> serde_json::Value {
    json!({"UserCreated": {
        "userId": id, "name": name, "email": "x@example.com", "preferredCategories": [],
        "orders": {"orderCount": 0, "totalSpentCents": 0, "averageOrderValueCents": 0,
                   "lastOrderAt": null, "firstOrderAt": null},
        "createdAt": "2026-01-01T00:00:00Z"}})
}

async fn insert_raw(
    conn: &mut PgConnection,
    id: Uuid,
    sequence: i64,
    event_type: &str,
    version: &str,
    payload: serde_json::Value,
) -> i64 {
    sqlx::query_scalar(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         values ('client', $1, $2, $3, $4, $5, '{\"actor\":\"test\"}') returning global_position",
    )
    .bind(id.to_string())
    .bind(sequence)
    .bind(event_type)
    .bind(version)
    .bind(payload)
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn table_rows(pool: &PgPool, table: &str) -> Vec<serde_json::Value> {
    sqlx::query_scalar(&format!("select to_jsonb(t) from {table} t order by id"))
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn an_event_committed_late_with_a_smaller_position_is_not_skipped(pool: PgPool) {
    let (a_id, b_id) = (Uuid::new_v4(), Uuid::new_v4());
    // Transaction A writes first (smaller position) and stays open.
    let mut a = pool.begin().await.unwrap();
    let a_position = insert_raw(
        &mut a,
        a_id,
        1,
        "UserCreated",
        "1.0",
        user_created_payload(a_id, "A"),
    )
    .await;
    // Transaction B writes later (larger position) and commits.
    let mut b = pool.begin().await.unwrap();
    let b_position = insert_raw(
        &mut b,
        b_id,
        1,
        "UserCreated",
        "1.0",
        user_created_payload(b_id, "B"),
    )
    .await;
    b.commit().await.unwrap();
    assert!(a_position < b_position);

    let consumer = Consumer::new(
        pool.clone(),
        test_vault(),
        UsersView::live(),
        settings(),
        LogSignal::new(),
    );
    // A reader that trusted global_position alone would apply B now and move past A for good.
    assert_eq!(consumer.run_once().await.unwrap(), BatchOutcome::Empty);
    assert!(log::has_pending_after(&pool, LogPosition::START)
        .await
        .unwrap());

    a.commit().await.unwrap();
    assert_eq!(consumer.catch_up().await.unwrap(), 2);
    let a_row = load_user(&pool, a_id).await.unwrap().expect("A applied");
    let b_row = load_user(&pool, b_id).await.unwrap().expect("B applied");
    assert_eq!((a_row.name.as_str(), a_row.version), ("A", 1));
    assert_eq!((b_row.name.as_str(), b_row.version), ("B", 1));
    assert_eq!(
        consumer.catch_up().await.unwrap(),
        0,
        "nothing is applied twice"
    );
    let checkpoint = consumer::checkpoint(&pool, "users").await.unwrap();
    assert_eq!(checkpoint.global_position, b_position.max(a_position));
}

/// Applies the users view, then fails the first `failures` batches after writing.
struct FailingAfterWrite {
    inner: UsersView,
    failures: AtomicUsize,
}

impl Projection for FailingAfterWrite {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        self.inner.apply(tx, events).await?;
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            anyhow::bail!("injected crash after writing the view");
        }
        Ok(())
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_batch_that_fails_halfway_leaves_view_and_checkpoint_as_they_were(pool: PgPool) {
    let clock = clock();
    let bus = bus(&pool, clock.clone());
    let meta = CommandMetadata::for_actor("test");
    let id = Uuid::new_v4();
    bus.execute(id, create(id, "Crash Test"), &meta)
        .await
        .unwrap();
    for i in 0..3 {
        bus.execute(id, order(&format!("o{i}"), 1000, clock.now()), &meta)
            .await
            .unwrap();
    }
    let projection = FailingAfterWrite {
        inner: UsersView::live(),
        failures: AtomicUsize::new(1),
    };
    let consumer = Consumer::new(
        pool.clone(),
        test_vault(),
        projection,
        settings(),
        LogSignal::new(),
    );

    let error = consumer.run_once().await.unwrap_err();
    assert!(format!("{error:#}").contains("injected crash"));
    assert_eq!(
        load_user(&pool, id).await.unwrap(),
        None,
        "the partial write was rolled back"
    );
    assert_eq!(
        consumer::checkpoint(&pool, "users").await.unwrap(),
        LogPosition::START
    );

    assert!(matches!(
        consumer.run_once().await.unwrap(),
        BatchOutcome::Applied(_)
    ));
    let row = load_user(&pool, id).await.unwrap().unwrap();
    assert_eq!(row.order_count, 3);
    assert_eq!(row.total_spent_cents, 3000);
    let head = bus.head_of(id).await.unwrap().unwrap();
    assert_eq!(row.version, head.version);
    assert_eq!(
        consumer::checkpoint(&pool, "users").await.unwrap(),
        head.position
    );
}

/// Records every event it is given, to count applications.
#[derive(Clone)]
struct Counting;

impl Projection for Counting {
    fn name(&self) -> &str {
        "counting"
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let positions: Vec<i64> = events.iter().map(|e| e.position.global_position).collect();
        sqlx::query("insert into applied_log (global_position) select unnest($1::bigint[])")
            .bind(&positions)
            .execute(&mut *tx)
            .await?;
        // Widen the window in which two instances could overlap.
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn two_instances_of_one_consumer_apply_every_event_exactly_once(pool: PgPool) {
    sqlx::query("create table applied_log (global_position bigint not null)")
        .execute(&pool)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let signal = LogSignal::new();
    tokio::spawn(signal.clone().listen(pool.clone(), stop.clone()));
    let small = ConsumerSettings {
        batch_size: 7,
        poll_interval: Duration::from_millis(50),
        ..settings()
    };
    let first = Consumer::new(
        pool.clone(),
        test_vault(),
        Counting,
        small.clone(),
        signal.clone(),
    );
    let second = Consumer::new(pool.clone(), test_vault(), Counting, small, signal.clone());
    let runners = [
        tokio::spawn(first.run(stop.clone())),
        tokio::spawn(second.run(stop.clone())),
    ];

    let clock = clock();
    let bus = bus(&pool, clock.clone());
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let bus = bus.clone();
            let now = clock.now();
            tokio::spawn(async move {
                let meta = CommandMetadata::for_actor("writer");
                for u in 0..10 {
                    let id = Uuid::new_v4();
                    bus.execute(id, create(id, &format!("W{w} U{u}")), &meta)
                        .await
                        .unwrap();
                    bus.execute(id, order("a", 500, now), &meta).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let head = log::head(&pool).await.unwrap();
    let handle = Consumer::new(pool.clone(), test_vault(), Counting, settings(), signal).handle();
    handle
        .wait_for(head, Duration::from_secs(20))
        .await
        .unwrap();
    stop.cancel();
    for runner in runners {
        runner.await.unwrap();
    }

    let (applied, distinct): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct global_position) from applied_log")
            .fetch_one(&pool)
            .await
            .unwrap();
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(events >= 6 * 10 * 3, "{events}");
    assert_eq!(distinct, events, "every event applied");
    assert_eq!(applied, events, "none applied twice");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_rebuilt_view_equals_the_live_one_row_for_row_after_a_random_history(pool: PgPool) {
    let clock = clock();
    let bus = bus(&pool, clock.clone());
    let users: Vec<Uuid> = (0..200).map(|i| Uuid::from_u128(0xABC0_0000 + i)).collect();
    let meta = CommandMetadata::for_actor("simulation");
    for (i, id) in users.iter().enumerate() {
        bus.execute(*id, create(*id, &format!("User {i}")), &meta)
            .await
            .unwrap();
    }
    // Eight workers, each owning a slice of the users, drive a seeded random history while the
    // clock moves on.
    let workers: Vec<_> = users
        .chunks(25)
        .enumerate()
        .map(|(w, slice)| {
            let bus = bus.clone();
            let clock = clock.clone();
            let slice = slice.to_vec();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w as u64);
                let meta = CommandMetadata::for_actor(format!("worker-{w}"));
                for step in 0..400 {
                    let id = slice[rng.gen_range(0..slice.len())];
                    let now = clock.now();
                    let action = match rng.gen_range(0..100) {
                        0..=44 => order(
                            &format!("o{}", rng.gen_range(0..40)),
                            rng.gen_range(100..40_000),
                            now,
                        ),
                        45..=59 => ClientAction::SetEngagementScore(SetEngagementScore {
                            score: Score::parse(rng.gen_range(0..=100), "score").unwrap(),
                            reason: Some(format!("step {step}")),
                            actor: "sim".into(),
                        }),
                        60..=74 => ClientAction::Rescore,
                        75..=91 => ClientAction::RecordEmail(RecordEmail {
                            email_id: Uuid::from_u128(rng.gen()),
                            content: EmailContent {
                                subject: format!("Hello {step}"),
                                preheader: "pre".into(),
                                text: "text".into(),
                                html: "<p>text</p>".into(),
                                generator: Generator {
                                    kind: "template".into(),
                                    model: "v1".into(),
                                },
                                usage: None,
                            },
                            trigger: None,
                            delivery: domain::client::DeliveryMode::Off,
                        }),
                        92..=97 => ClientAction::Unsubscribe,
                        _ => ClientAction::DeleteUser,
                    };
                    // Refusals (cooldown, unsubscribed, deleted) are part of a realistic history.
                    let _ = bus.execute(id, action, &meta).await;
                    if step % 50 == 0 {
                        clock.advance(chrono::Duration::days(3));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(events > 2000, "a history of thousands of events ({events})");

    let live_users = Consumer::new(
        pool.clone(),
        test_vault(),
        UsersView::live(),
        settings(),
        LogSignal::new(),
    );
    let live_emails = Consumer::new(
        pool.clone(),
        test_vault(),
        EmailsView::live(),
        settings(),
        LogSignal::new(),
    );
    live_users.catch_up().await.unwrap();
    live_emails.catch_up().await.unwrap();
    let users_before = table_rows(&pool, "users").await;
    let emails_before = table_rows(&pool, "emails").await;
    assert_eq!(users_before.len(), 200);
    assert!(!emails_before.is_empty());
    assert!(users_before.iter().any(|u| u["status"] == "DELETED"));
    assert!(users_before.iter().any(|u| u["status"] == "UNSUBSCRIBED"));

    for model in ReadModel::ALL {
        let report = rebuild(&pool, &test_vault(), model).await.unwrap();
        assert_eq!(report.events as i64, events);
    }
    assert_eq!(table_rows(&pool, "users").await, users_before);
    assert_eq!(table_rows(&pool, "emails").await, emails_before);

    // The swapped-in tables are live: new events reach them through the usual consumers.
    let id = users[0];
    let _ = bus.execute(id, ClientAction::Rescore, &meta).await;
    let newcomer = Uuid::new_v4();
    bus.execute(newcomer, create(newcomer, "After Rebuild"), &meta)
        .await
        .unwrap();
    live_users.catch_up().await.unwrap();
    assert_eq!(
        load_user(&pool, newcomer).await.unwrap().unwrap().name,
        "After Rebuild"
    );
    let index_names: Vec<String> = sqlx::query_scalar(
        "select indexname::text from pg_indexes where tablename = 'users' order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        index_names.contains(&"users_pkey".to_owned()),
        "{index_names:?}"
    );
    assert!(
        index_names.iter().all(|n| !n.contains("rebuild")),
        "{index_names:?}"
    );
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn an_old_version_event_in_the_log_still_projects_and_loads(pool: PgPool) {
    let id = Uuid::new_v4();
    let mut conn = pool.acquire().await.unwrap();
    insert_raw(
        &mut conn,
        id,
        1,
        "UserCreated",
        "1.0",
        user_created_payload(id, "Old Timer"),
    )
    .await;
    // OrderPlaced 0.9: a decimal `amount`, no `amountCents`, no `categories`.
    let old = json!({"OrderPlaced": {
        "orderId": "legacy-1", "amount": "12.50", "placedAt": "2026-01-02T00:00:00Z",
        "orders": {"orderCount": 1, "totalSpentCents": 1250, "averageOrderValueCents": 1250,
                   "lastOrderAt": "2026-01-02T00:00:00Z", "firstOrderAt": "2026-01-02T00:00:00Z"},
        "recordedAt": "2026-01-02T00:00:00Z"}});
    insert_raw(&mut conn, id, 2, "OrderPlaced", "0.9", old).await;
    drop(conn);

    let consumer = Consumer::new(
        pool.clone(),
        test_vault(),
        UsersView::live(),
        settings(),
        LogSignal::new(),
    );
    consumer.catch_up().await.unwrap();
    let row = load_user(&pool, id).await.unwrap().unwrap();
    assert_eq!(
        (row.order_count, row.total_spent_cents, row.version),
        (1, 1250, 2)
    );

    let events = log::read_stream(&pool, &test_vault(), id).await.unwrap();
    let domain::client::ClientEvent::OrderPlaced(placed) = events[1].event().unwrap() else {
        panic!()
    };
    assert_eq!((placed.amount_cents, placed.categories.len()), (1250, 0));

    // The command path reads it too: the repeated order id is recognised.
    let clock = clock();
    let bus = bus(&pool, clock.clone());
    let before = bus.head_of(id).await.unwrap().unwrap();
    let after = bus
        .execute(
            id,
            order("legacy-1", 1250, clock.now()),
            &CommandMetadata::for_actor("t"),
        )
        .await
        .unwrap();
    assert_eq!(before, after);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_command_can_wait_until_its_own_write_is_in_the_view(pool: PgPool) {
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Wired as the service wires them: the bus's appends wake the consumers directly.
    let signal = LogSignal::announcing(pool.clone());
    let models = projections::runtime::start(
        &pool,
        &test_vault(),
        &settings(),
        &signal,
        &mut tasks,
        &stop,
    );
    let clock = clock();
    let bus = CommandBus::announcing(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock.clone(),
        signal,
    );
    let meta = CommandMetadata::for_actor("t");
    for i in 0..20 {
        let id = Uuid::new_v4();
        let committed = bus
            .execute(id, create(id, &format!("Reader {i}")), &meta)
            .await
            .unwrap();
        models
            .users
            .wait_for(committed.position, Duration::from_secs(5))
            .await
            .unwrap();
        let row = load_user(&pool, id)
            .await
            .unwrap()
            .expect("visible right after the wait");
        assert_eq!(row.version, committed.version);
        let committed = bus
            .execute(id, order("x", 4200, clock.now()), &meta)
            .await
            .unwrap();
        models
            .users
            .wait_for(committed.position, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(load_user(&pool, id).await.unwrap().unwrap().order_count, 1);
    }
    let lag = consumer::lag(&pool).await.unwrap();
    assert!(lag.iter().any(|(name, _)| name == "users"), "{lag:?}");

    // A position nobody will reach times out rather than hanging.
    let beyond = LogPosition {
        transaction_id: i64::MAX,
        global_position: i64::MAX,
    };
    assert!(models
        .users
        .wait_for(beyond, Duration::from_millis(100))
        .await
        .is_err());
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn consumers_keep_going_when_their_connections_are_cut(pool: PgPool) {
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let models = projections::runtime::start(
        &pool,
        &test_vault(),
        &settings(),
        &LogSignal::new(),
        &mut tasks,
        &stop,
    );
    let clock = clock();
    let bus = bus(&pool, clock.clone());
    let meta = CommandMetadata::for_actor("t");
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let admin = PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for round in 0..4 {
        for i in 0..5 {
            let id = Uuid::new_v4();
            // A write may meet a connection that was just cut; the caller retries, as clients do.
            let mut attempts = 0;
            while bus
                .execute(id, create(id, &format!("R{round} U{i}")), &meta)
                .await
                .is_err()
            {
                attempts += 1;
                assert!(attempts < 20, "the database never came back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ids.push(id);
        }
        // The database goes away for every connection of this test, consumers' included.
        sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()")
            .bind(&database)
            .execute(&admin)
            .await
            .unwrap();
    }
    let head = log::head(&pool).await.unwrap();
    models
        .users
        .wait_for(head, Duration::from_secs(30))
        .await
        .expect("the users view caught up after the cuts");
    for id in ids {
        assert!(
            load_user(&pool, id).await.unwrap().is_some(),
            "user {id} reached the view"
        );
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}

/// Notifications on `events_committed`: the first awaited for up to ten seconds (a loaded
/// machine may be slow to send it), then more until none comes for `quiet`.
async fn notifications(listener: &mut sqlx::postgres::PgListener, quiet: Duration) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut wait = Duration::from_secs(10);
    while let Ok(received) = tokio::time::timeout(wait, listener.recv()).await {
        payloads.push(received.unwrap().payload().to_owned());
        wait = quiet;
    }
    payloads
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn announced_appends_wake_readers_here_at_once_and_elsewhere_without_a_notification_each(
    pool: PgPool,
) {
    // Another process's view of the channel.
    let mut elsewhere = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    elsewhere.listen("events_committed").await.unwrap();
    let signal = LogSignal::announcing(pool.clone());
    let announcing = CommandBus::announcing(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock(),
        signal.clone(),
    );
    let here = signal.subscribe_changes();
    let meta = CommandMetadata::for_actor("t");

    // Forty commands at once: this process's readers are woken, and other processes hear of
    // them from the announcer (never from the trigger, whose payload is empty), in fewer
    // notifications than appends.
    let ids: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let runs = ids.iter().map(|&id| {
        let bus = announcing.clone();
        let meta = meta.clone();
        async move {
            bus.execute(id, create(id, "Announced"), &meta)
                .await
                .unwrap()
        }
    });
    futures::future::join_all(runs).await;
    assert!(
        here.has_changed().unwrap(),
        "the appends woke no reader here"
    );
    let heard = notifications(&mut elsewhere, Duration::from_millis(500)).await;
    assert!(!heard.is_empty(), "other processes heard of nothing");
    assert!(
        heard.iter().all(|payload| !payload.is_empty()),
        "the trigger notified for an announced append: {heard:?}"
    );
    assert!(heard.len() <= ids.len(), "{} notifications", heard.len());

    // One at a time, every append is heard of after it committed.
    for n in 0..3 {
        let id = Uuid::new_v4();
        announcing
            .execute(id, create(id, "One by one"), &meta)
            .await
            .unwrap();
        let heard = notifications(&mut elsewhere, Duration::from_millis(300)).await;
        assert_eq!(heard.len(), 1, "append {n}: {heard:?}");
    }

    // A writer that does not announce (an older instance, a plain bus) is announced by the
    // table's trigger, as before.
    let plain = bus(&pool, clock());
    let id = Uuid::new_v4();
    plain.execute(id, create(id, "Plain"), &meta).await.unwrap();
    let heard = notifications(&mut elsewhere, Duration::from_millis(300)).await;
    assert_eq!(heard, vec![String::new()]);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_listener_is_woken_by_other_processes_appends_and_not_by_its_own_announcements(
    pool: PgPool,
) {
    let stop = CancellationToken::new();
    let mine = LogSignal::announcing(pool.clone());
    let theirs = LogSignal::announcing(pool.clone());
    tokio::spawn(mine.clone().listen(pool.clone(), stop.clone()));
    let mut woken = mine.subscribe_changes();
    // Connected: the listener wakes its readers once when it (re)connects.
    tokio::time::timeout(Duration::from_secs(10), woken.changed())
        .await
        .unwrap()
        .unwrap();
    let meta = CommandMetadata::for_actor("t");
    let other = CommandBus::announcing(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock(),
        theirs,
    );
    let id = Uuid::new_v4();
    other
        .execute(id, create(id, "Theirs"), &meta)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken.changed())
        .await
        .expect("another process's append did not wake this one")
        .unwrap();

    // Our own announcement is no news: our readers were woken in memory, once.
    let ours = CommandBus::announcing(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock(),
        mine,
    );
    woken.borrow_and_update();
    let id = Uuid::new_v4();
    ours.execute(id, create(id, "Ours"), &meta).await.unwrap();
    assert!(woken.has_changed().unwrap());
    woken.borrow_and_update();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !woken.has_changed().unwrap(),
        "woken again by its own announcement"
    );
    stop.cancel();
}

/// Each view's column list (what a narrow page chooses from) is
/// the table's: a column added by a migration and missing from the list would never be read.
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_views_column_lists_name_every_column_of_their_tables(pool: PgPool) {
    use projections::views::{emails, users};
    for (table, listed) in [
        ("users", &users::COLUMNS[..]),
        ("emails", &emails::COLUMNS[..]),
    ] {
        let actual: Vec<String> = sqlx::query_scalar(
            "select column_name::text from information_schema.columns
              where table_schema = current_schema() and table_name = $1 order by ordinal_position",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut actual = actual;
        let mut listed: Vec<String> = listed.iter().map(|(n, _)| (*n).to_owned()).collect();
        actual.sort();
        listed.sort();
        assert_eq!(listed, actual, "the {table} view's column list");
    }
}
