//! Imports against a real PostgreSQL: the same orders and final state as one-by-one placement,
//! idempotent runs, a run cut short and run again, bad rows by line, external ids under
//! concurrent creation, and the snapshot a commit across a boundary leaves.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use domain::client::{ClientAction, ClientServices, CreateUser, ImportedHistory, PlaceOrder};
use domain::values::{Categories, EmailAddress, ExternalId, Money, OrderId, UserName};
use projections::clock::ManualClock;
use projections::commands::{CommandBus, CommandError, CommandMetadata, SNAPSHOT_EVERY};
use projections::ingest::files::{read_clients, read_orders, BytesRead};
use projections::ingest::{self, Ingest, Rejected, Report, StreamSettings};
use projections::log::consumer::{Consumer, ConsumerSettings, LogSignal};
use projections::views::rebuild::{rebuild, ReadModel};
use projections::views::users::UsersView;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

fn bus(pool: &PgPool) -> CommandBus {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap(),
    ));
    CommandBus::new(pool.clone(), test_vault(), ClientServices::default(), clock)
}

fn ingest(pool: &PgPool) -> Ingest {
    Ingest::new(
        &bus(pool),
        pool.clone(),
        CommandMetadata::for_actor("import:test"),
        true,
    )
}

/// `clients` clients and `per` orders each, interleaved across clients (the hard layout),
/// with a repeated order id per client.
fn files(clients: usize, per: usize) -> (String, String) {
    let mut c = String::from("external_id,name,email,preferred_categories,created_at\n");
    let mut o = String::from("external_id,order_id,placed_at,amount,categories\n");
    for i in 0..clients {
        c.push_str(&format!(
            "X{i},Client {i},c{i}@example.com,Denim|Tops,2021-0{}-01\n",
            1 + i % 9
        ));
    }
    for j in 0..per {
        for i in 0..clients {
            let month = 1 + (i * 7 + j * 3) % 12;
            o.push_str(&format!(
                "X{i},O{i}-{j},2025-{month:02}-{:02},{}.{:02},Denim\n",
                1 + j % 28,
                10 + (i * 13 + j * 7) % 200,
                (i + j) % 100
            ));
        }
        // The same order again: recorded once.
        o.push_str(&format!("X0,O0-{j},2025-01-01,1.00,\n"));
    }
    (c, o)
}

async fn run_orders(
    ingest: &Ingest,
    text: &str,
    settings: StreamSettings,
) -> (Report, Vec<Rejected>) {
    let (tx, rx) = mpsc::channel(64);
    let text = text.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        read_orders(text.as_bytes(), &tx, &BytesRead::default()).unwrap()
    });
    let rejected = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = rejected.clone();
    let ingest = ingest.clone();
    let total = ingest::stream(
        rx,
        settings,
        move |rows| {
            let ingest = ingest.clone();
            async move { ingest.orders(rows).await }
        },
        move |report: &Report| seen.lock().unwrap().extend(report.rejected.clone()),
    )
    .await
    .unwrap();
    reader.await.unwrap();
    let mut rejected = rejected.lock().unwrap().clone();
    rejected.sort_by_key(|r| r.line);
    (total, rejected)
}

async fn run_clients(ingest: &Ingest, text: &str) -> Report {
    let (tx, rx) = mpsc::channel(64);
    let text = text.to_owned();
    let reader = tokio::task::spawn_blocking(move || {
        read_clients(text.as_bytes(), &tx, &BytesRead::default()).unwrap()
    });
    let ingest = ingest.clone();
    let total = ingest::stream(
        rx,
        StreamSettings::default(),
        move |rows| {
            let ingest = ingest.clone();
            async move { ingest.clients(rows).await }
        },
        |_: &Report| {},
    )
    .await
    .unwrap();
    reader.await.unwrap();
    total
}

/// A client's final state: external id, order count, total, last order, score, band.
type Row = (
    Option<String>,
    i32,
    i64,
    Option<chrono::DateTime<Utc>>,
    i16,
    String,
);

async fn catch_up(pool: &PgPool) {
    Consumer::new(
        pool.clone(),
        test_vault(),
        UsersView::live(),
        ConsumerSettings::default(),
        LogSignal::new(),
    )
    .catch_up()
    .await
    .unwrap();
}

/// Every client's final state as the users view holds it, by external id.
async fn state(
    pool: &PgPool,
) -> Vec<(
    Option<String>,
    i32,
    i64,
    Option<chrono::DateTime<Utc>>,
    i16,
    String,
)> {
    catch_up(pool).await;
    sqlx::query_as(
        "select external_id, order_count, total_spent_cents, last_order_date, engagement_score,
                score_band
           from users order by external_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every recorded order as (external id, order id, amount).
async fn orders(pool: &PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "select x.external_id, e.payload->'OrderPlaced'->>'orderId',
                (e.payload->'OrderPlaced'->>'amountCents')::bigint
           from events e join client_external_ids x on x.user_id::text = e.aggregate_id
          where e.event_type = 'OrderPlaced' order by 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn an_import_equals_one_by_one_placement_and_a_second_run_records_nothing(pool: PgPool) {
    let (clients, orders_file) = files(40, 6);
    let ingest = ingest(&pool);
    assert_eq!(run_clients(&ingest, &clients).await.accepted, 40);
    let small = StreamSettings {
        workers: 3,
        chunk: 17,
    };
    let (first, rejected) = run_orders(&ingest, &orders_file, small).await;
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(first.accepted, 240);
    assert_eq!(first.duplicates, 6);
    let imported = state(&pool).await;
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();

    // Again: nothing new, not one event.
    let (second, _) = run_orders(&ingest, &orders_file, small).await;
    assert_eq!((second.accepted, second.duplicates), (0, 246));
    assert_eq!(run_clients(&ingest, &clients).await.duplicates, 40);
    let after: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, events);

    // The same rows one by one through the command bus, on a second set of clients, end in
    // the same state.
    let bus = bus(&pool);
    let meta = CommandMetadata::for_actor("test");
    for i in 0..40 {
        let id = Uuid::new_v4();
        bus.create_user(
            CreateUser {
                id,
                name: UserName::parse(&format!("Client {i}")).unwrap(),
                email: EmailAddress::parse(&format!("c{i}@example.com")).unwrap(),
                preferred_categories: Categories::parse(&["Denim", "Tops"], "c").unwrap(),
                history: ImportedHistory::default(),
                external_id: Some(ExternalId::parse(&format!("Y{i}")).unwrap()),
                client_since: Some(
                    Utc.with_ymd_and_hms(2021, 1 + (i % 9) as u32, 1, 0, 0, 0)
                        .unwrap(),
                ),
                imported: false,
            },
            &meta,
        )
        .await
        .unwrap();
    }
    let mut reader = csv::Reader::from_reader(orders_file.as_bytes());
    for record in reader.records() {
        let record = record.unwrap();
        let id = bus
            .resolve_external_id(&record[0].replace('X', "Y"))
            .await
            .unwrap()
            .unwrap();
        let order = PlaceOrder {
            order_id: OrderId::parse(&record[1]).unwrap(),
            placed_at: ingest::files::parse_time(&record[2]).unwrap(),
            amount: Money::parse(&record[3], "amount").unwrap(),
            categories: Categories::default(),
        };
        bus.execute(id, ClientAction::PlaceOrder(order), &meta)
            .await
            .unwrap();
    }
    let all = state(&pool).await;
    let (xs, ys): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|row| row.0.as_deref().is_some_and(|e| e.starts_with('X')));
    assert_eq!(xs, imported);
    let strip = |rows: Vec<Row>| {
        rows.into_iter()
            .map(|(e, a, b, c, d, f)| (e.map(|e| e[1..].to_owned()), a, b, c, d, f))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(ys), strip(xs), "one by one and imported agree");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn an_import_cut_short_and_run_again_ends_like_one_clean_run(pool: PgPool) {
    let (clients, orders_file) = files(30, 5);
    let ingest = ingest(&pool);
    run_clients(&ingest, &clients).await;
    // The first 70 lines only, as if the process died there.
    let cut: String = orders_file
        .lines()
        .take(70)
        .map(|l| format!("{l}\n"))
        .collect();
    run_orders(&ingest, &cut, StreamSettings::default()).await;
    let (rerun, _) = run_orders(&ingest, &orders_file, StreamSettings::default()).await;
    assert_eq!(rerun.accepted + rerun.duplicates, 155);
    let resumed = (state(&pool).await, orders(&pool).await);

    // One clean run on a database of its own.
    let clean_db = format!("ingest_clean_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("create database {clean_db}"))
        .execute(&pool)
        .await
        .unwrap();
    let options = pool.connect_options().as_ref().clone().database(&clean_db);
    let clean = sqlx::PgPool::connect_with(options).await.unwrap();
    projections::db::MIGRATOR.run(&clean).await.unwrap();
    let fresh = self::ingest(&clean);
    run_clients(&fresh, &clients).await;
    run_orders(&fresh, &orders_file, StreamSettings::default()).await;
    let once = (state(&clean).await, orders(&clean).await);
    clean.close().await;
    sqlx::query(&format!("drop database {clean_db}"))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(resumed, once);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn bad_rows_are_reported_by_line_and_the_rest_go_in(pool: PgPool) {
    let ingest = ingest(&pool);
    run_clients(
        &ingest,
        "external_id,name,email,preferred_categories,created_at\nA,Ann,ann@example.com,,\n",
    )
    .await;
    let text = "external_id,order_id,placed_at,amount,categories\n\
                A,1,2025-01-01,10.00,\n\
                NOBODY,2,2025-01-01,10.00,\n\
                A,3,2025-13-01,10.00,\n\
                A,4,2025-01-02,-5.00,\n\
                A,5,2025-01-03\n\
                A,6,2031-01-01,1.00,\n\
                A,7,2025-01-04,12.50,Tops\n";
    let (total, rejected) = run_orders(&ingest, text, StreamSettings::default()).await;
    assert_eq!(total.accepted, 2);
    let lines: Vec<(u64, Option<&str>)> = rejected
        .iter()
        .map(|r| (r.line, r.field.as_deref()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (3, Some("externalId")),
            (4, Some("placed_at")),
            (5, Some("amount")),
            (6, Some("amount")),
            (7, Some("placedAt")),
        ]
    );
    let view = state(&pool).await;
    assert_eq!((view[0].1, view[0].2), (2, 2_250));
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_views_after_an_import_equal_a_rebuild(pool: PgPool) {
    let (clients, orders_file) = files(25, 4);
    let ingest = ingest(&pool);
    run_clients(&ingest, &clients).await;
    run_orders(&ingest, &orders_file, StreamSettings::default()).await;
    let live: Vec<serde_json::Value> = {
        catch_up(&pool).await;
        sqlx::query_scalar("select to_jsonb(u) from users u order by id")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    rebuild(&pool, &test_vault(), ReadModel::Users)
        .await
        .unwrap();
    let rebuilt: Vec<serde_json::Value> =
        sqlx::query_scalar("select to_jsonb(u) from users u order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(live.len(), 25);
    assert_eq!(live, rebuilt);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn concurrent_creations_through_one_external_id_make_one_client(pool: PgPool) {
    let bus = bus(&pool);
    let create = |name: &str| CreateUser {
        id: Uuid::new_v4(),
        name: UserName::parse(name).unwrap(),
        email: EmailAddress::parse("same@example.com").unwrap(),
        preferred_categories: Categories::default(),
        history: ImportedHistory::default(),
        external_id: Some(ExternalId::parse("EXT-1").unwrap()),
        client_since: None,
        imported: false,
    };
    let meta = CommandMetadata::for_actor("test");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let bus = bus.clone();
            let meta = meta.clone();
            let create = create("Same Person");
            tokio::spawn(async move { bus.create_user(create, &meta).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap().user_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every creation reached the same client");
    let streams: i64 = sqlx::query_scalar(
        "select count(distinct aggregate_id) from events where event_type = 'UserCreated'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(streams, 1);
    // Different data under the same external id is refused.
    let other = bus.create_user(create("Someone Else"), &meta).await;
    assert!(matches!(other, Err(CommandError::Rejected(_))), "{other:?}");

    // A deleted client's external id names a new client, with a new stream.
    bus.execute(ids[0], ClientAction::DeleteUser, &meta)
        .await
        .unwrap();
    let again = bus.create_user(create("Same Person"), &meta).await.unwrap();
    assert_ne!(again.user_id, ids[0]);
    assert_eq!(
        bus.resolve_external_id("EXT-1").await.unwrap(),
        Some(again.user_id)
    );

    // A client without an external id can be given one, but not one that is taken.
    let plain = Uuid::new_v4();
    bus.create_user(
        CreateUser {
            id: plain,
            external_id: None,
            ..create("Plain")
        },
        &meta,
    )
    .await
    .unwrap();
    let give = |id: &str| domain::client::UpdateUser {
        external_id: Some(ExternalId::parse(id).unwrap()),
        ..Default::default()
    };
    let taken = bus.update_user(plain, give("EXT-1"), &meta).await;
    assert!(matches!(taken, Err(CommandError::Rejected(_))), "{taken:?}");
    bus.update_user(plain, give("EXT-2"), &meta).await.unwrap();
    assert_eq!(bus.resolve_external_id("EXT-2").await.unwrap(), Some(plain));
    // A client keeps the one it has.
    let another = bus.update_user(plain, give("EXT-3"), &meta).await;
    assert!(
        matches!(another, Err(CommandError::Rejected(_))),
        "{another:?}"
    );
    assert_eq!(bus.resolve_external_id("EXT-3").await.unwrap(), None);

    // A change the aggregate refuses after the claim was made (the client is deleted) gives
    // the claim back.
    let doomed = Uuid::new_v4();
    bus.create_user(
        CreateUser {
            id: doomed,
            external_id: None,
            ..create("Doomed")
        },
        &meta,
    )
    .await
    .unwrap();
    bus.execute(doomed, ClientAction::DeleteUser, &meta)
        .await
        .unwrap();
    let refused = bus.update_user(doomed, give("EXT-4"), &meta).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected(_))),
        "{refused:?}"
    );
    assert_eq!(bus.resolve_external_id("EXT-4").await.unwrap(), None);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_commit_across_a_snapshot_boundary_loses_no_event_on_the_next_load(pool: PgPool) {
    let bus = bus(&pool);
    let meta = CommandMetadata::for_actor("test");
    let id = Uuid::new_v4();
    bus.execute(
        id,
        ClientAction::CreateUser(CreateUser {
            id,
            name: UserName::parse("Snap").unwrap(),
            email: EmailAddress::parse("snap@example.com").unwrap(),
            preferred_categories: Categories::default(),
            history: ImportedHistory::default(),
            external_id: None,
            client_since: None,
            imported: false,
        }),
        &meta,
    )
    .await
    .unwrap();
    // One event (a manual score), so that the orders after it, two events each (the order
    // and its score), straddle the boundary.
    bus.execute(
        id,
        ClientAction::SetEngagementScore(domain::client::SetEngagementScore {
            score: domain::values::Score::parse(40, "score").unwrap(),
            reason: None,
            actor: "test".into(),
        }),
        &meta,
    )
    .await
    .unwrap();
    // Created (2 events), scored by hand (1): 3. The 24th order's commit takes it from 49
    // to 51 and writes the snapshot, and nothing after it hides a lost event.
    for i in 0..(SNAPSHOT_EVERY / 2 - 1) {
        bus.execute(
            id,
            ClientAction::PlaceOrder(PlaceOrder {
                order_id: OrderId::parse(&format!("s{i}")).unwrap(),
                amount: Money::parse("10", "amount").unwrap(),
                placed_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                    + chrono::Duration::hours(i as i64),
                categories: Categories::default(),
            }),
            &meta,
        )
        .await
        .unwrap();
    }
    // A fresh bus has no cache: it loads from the snapshot and the events after it.
    let loaded = self::bus(&pool).load(id).await.unwrap();
    let events = projections::log::read_stream(&pool, &test_vault(), id)
        .await
        .unwrap();
    let mut replayed = domain::client::Client::default();
    for stored in events {
        cqrs_es::Aggregate::apply(&mut replayed, stored.event().unwrap());
    }
    assert_eq!(loaded, replayed);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn imported_history_emails_nobody_and_the_next_ordinary_score_decides(pool: PgPool) {
    use projections::engagement::process_manager::{ProcessManager, ProcessManagerSettings};
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap(),
    ));
    let bus = CommandBus::new(
        pool.clone(),
        test_vault(),
        ClientServices::default(),
        clock.clone(),
    );
    let ingest = Ingest::new(
        &bus,
        pool.clone(),
        CommandMetadata::for_actor("import"),
        true,
    );
    run_clients(
        &ingest,
        "external_id,name,email,preferred_categories,created_at\n\
         L1,Long Gone,gone@example.com,,2022-01-01\n",
    )
    .await;
    run_orders(
        &ingest,
        "external_id,order_id,placed_at,amount,categories\n\
         L1,1,2022-02-01,40.00,\n\
         L1,2,2022-03-01,40.00,\n",
        StreamSettings::default(),
    )
    .await;
    let view = state(&pool).await;
    assert_eq!(view[0].5, "at_risk", "the lapse is long past: {view:?}");
    let manager = Consumer::new(
        pool.clone(),
        test_vault(),
        ProcessManager::new(ProcessManagerSettings::default()),
        ConsumerSettings::default(),
        LogSignal::new(),
    );
    manager.catch_up().await.unwrap();
    let jobs = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from email_jobs")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(jobs().await, 0, "an import emails nobody");

    // Time passes. A lapse this old has reached the bottom of the score: rescoring records
    // nothing new, so it still makes no job.
    clock.advance(chrono::Duration::days(40));
    let id = bus.resolve_external_id("L1").await.unwrap().unwrap();
    let scheduler = CommandMetadata::for_actor("scheduler");
    bus.execute(id, ClientAction::Rescore, &scheduler)
        .await
        .unwrap();
    manager.catch_up().await.unwrap();
    assert_eq!(jobs().await, 0);

    // The next ordinary score decides: here an operator's, at risk, makes the one email job.
    bus.execute(
        id,
        ClientAction::SetEngagementScore(domain::client::SetEngagementScore {
            score: domain::values::Score::parse(20, "score").unwrap(),
            reason: Some("win-back campaign".into()),
            actor: "operator:test".into(),
        }),
        &scheduler,
    )
    .await
    .unwrap();
    manager.catch_up().await.unwrap();
    assert_eq!(jobs().await, 1);
}

/// The vault of every test (one master key, so that binaries and buses share their data).
fn test_vault() -> std::sync::Arc<projections::vault::Vault> {
    std::sync::Arc::new(projections::vault::Vault::new(
        &projections::vault::MasterKey::new([7; 32]),
    ))
}
