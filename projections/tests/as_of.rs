//! Looking back over a long history against a real PostgreSQL: every answer of
//! `as_of::state_at`, from kept states or without, equals a replay from the first event (times
//! that run backwards included); the kept states are written once and sealed; an erasure
//! deletes them and none come back.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::Aggregate as _;
use domain::client::{Client, ClientAction, ClientServices, CreateUser, ImportedHistory};
use domain::values::{Categories, EmailAddress, Money, OrderId, UserName};
use projections::clock::ManualClock;
use projections::commands::{CommandBus, CommandMetadata};
use projections::log::as_of::{LookBack, Moment, PastState, PastStates, KEEP_EVERY};
use projections::vault::{MasterKey, Vault};
use sqlx::PgPool;
use uuid::Uuid;

fn test_vault() -> Arc<Vault> {
    Arc::new(Vault::new(&MasterKey::new([7; 32])))
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
}

fn meta() -> CommandMetadata {
    CommandMetadata::for_actor("test")
}

/// A client with `orders` orders (two events each: the order and its score), a profile change
/// every 100 orders, and a clock that jumps back a week every 120 orders (an instance whose
/// clock was behind), so that the times the events happened do not always grow.
async fn long_history(
    pool: &PgPool,
    vault: &Arc<Vault>,
    orders: usize,
) -> (Uuid, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(start()));
    let bus = CommandBus::new(
        pool.clone(),
        Arc::clone(vault),
        ClientServices::default(),
        clock.clone(),
    );
    let id = Uuid::new_v4();
    let create = ClientAction::CreateUser(CreateUser {
        id,
        name: UserName::parse("Philippa Longhistory").unwrap(),
        email: EmailAddress::parse("philippa.long@example.org").unwrap(),
        preferred_categories: Categories::parse(&["Knitwear"], "preferredCategories").unwrap(),
        history: ImportedHistory::default(),
        external_id: None,
        client_since: None,
        imported: false,
    });
    bus.execute(id, create, &meta()).await.unwrap();
    for n in 0..orders {
        clock.advance(Duration::hours(3));
        if n % 120 == 119 {
            clock.advance(-Duration::days(7));
        }
        let order = ClientAction::PlaceOrder(domain::client::PlaceOrder {
            order_id: OrderId::parse(&format!("o-{n}")).unwrap(),
            amount: Money::parse(&format!("{}.{:02}", 10 + n % 90, n % 100), "amount").unwrap(),
            placed_at: clock_now(&clock),
            categories: Categories::default(),
        });
        bus.execute(id, order, &meta()).await.unwrap();
        if n % 100 == 50 {
            let update = ClientAction::UpdateUser(domain::client::UpdateUser {
                name: Some(UserName::parse(&format!("Philippa Longhistory {n}")).unwrap()),
                ..Default::default()
            });
            bus.execute(id, update, &meta()).await.unwrap();
        }
    }
    (id, clock)
}

fn clock_now(clock: &ManualClock) -> DateTime<Utc> {
    use projections::clock::Clock as _;
    clock.now()
}

/// The answer as a replay from the first event gives it (what `userAsOf` did before kept
/// states).
async fn replayed(pool: &PgPool, vault: &Vault, id: Uuid, moment: Moment) -> LookBack {
    let events = projections::log::read_stream(pool, vault, id)
        .await
        .unwrap();
    if events.is_empty() {
        return LookBack::Unknown;
    }
    let mut client = Client::default();
    let mut reached = None;
    for stored in &events {
        let event = stored.event().unwrap();
        let happened = event.occurred_at();
        let include = match moment {
            Moment::At(at) => happened <= at,
            Moment::Version(v) => stored.sequence <= v,
            Moment::Latest => true,
        };
        if !include {
            break;
        }
        client.apply(event);
        reached = Some((stored.sequence, happened));
    }
    match (moment, reached) {
        (Moment::Version(v), _) if v > events.len() as i64 => LookBack::Beyond {
            length: events.len() as i64,
        },
        (_, None) => LookBack::NotYet,
        (_, Some((version, happened_at))) => LookBack::Found(Box::new(PastState {
            client,
            version,
            happened_at,
        })),
    }
}

async fn kept_versions(pool: &PgPool, id: Uuid) -> Vec<i64> {
    sqlx::query_scalar("select version from client_states where aggregate_id = $1 order by 1")
        .bind(id.to_string())
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Waits for the background writes of kept states to show `expected` versions.
async fn wait_for_kept(pool: &PgPool, id: Uuid, expected: &[i64]) {
    for _ in 0..200 {
        if kept_versions(pool, id).await == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(kept_versions(pool, id).await, expected, "kept states");
}

/// Every moment worth asking about on a stream of `length` events whose events happened at
/// `times` (by sequence, from 1).
fn moments(length: i64, times: &[DateTime<Utc>]) -> Vec<Moment> {
    let mut moments = vec![Moment::Latest];
    for v in [
        1,
        2,
        3,
        250,
        499,
        500,
        501,
        999,
        1000,
        1001,
        1500,
        1501,
        length - 1,
        length,
        length + 1,
    ] {
        moments.push(Moment::Version(v));
    }
    moments.push(Moment::At(start() - Duration::days(1)));
    moments.push(Moment::At(start()));
    for i in (0..times.len()).step_by(97) {
        moments.push(Moment::At(times[i]));
        moments.push(Moment::At(times[i] - Duration::seconds(1)));
    }
    // The moments kept states were taken at, some of them after a jump back.
    for k in (KEEP_EVERY..=length).step_by(KEEP_EVERY as usize) {
        let at = times[k as usize - 1];
        moments.extend([at, at - Duration::seconds(1), at + Duration::seconds(1)].map(Moment::At));
    }
    moments.push(Moment::At(times[times.len() - 1] + Duration::days(1)));
    moments
}

async fn event_times(pool: &PgPool, vault: &Vault, id: Uuid) -> Vec<DateTime<Utc>> {
    projections::log::read_stream(pool, vault, id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event().unwrap().occurred_at())
        .collect()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn every_look_back_equals_a_replay_from_the_first_event(pool: PgPool) {
    let vault = test_vault();
    let past = PastStates::default();
    let (id, _) = long_history(&pool, &vault, 1000).await;
    let times = event_times(&pool, &vault, id).await;
    let length = times.len() as i64;
    assert!(length > 3 * KEEP_EVERY, "{length} events");
    let kept_all: Vec<i64> = (1..=length / KEEP_EVERY).map(|k| k * KEEP_EVERY).collect();

    // The times do run backwards somewhere, so a look back to a moment is not a version.
    assert!(times.windows(2).any(|w| w[1] < w[0]));

    // Versions up to the first kept one: nothing to keep.
    for v in [1, 10, KEEP_EVERY - 1] {
        let moment = Moment::Version(v);
        assert_eq!(
            past.state_at(&pool, &pool, &vault, id, moment)
                .await
                .unwrap(),
            replayed(&pool, &vault, id, moment).await,
            "{moment:?}"
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(kept_versions(&pool, id).await.is_empty());

    // Without kept states, then from them: the same answers.
    for round in ["from the first event", "from kept states"] {
        for moment in moments(length, &times) {
            assert_eq!(
                past.state_at(&pool, &pool, &vault, id, moment)
                    .await
                    .unwrap(),
                replayed(&pool, &vault, id, moment).await,
                "{moment:?}, {round}"
            );
        }
        wait_for_kept(&pool, id, &kept_all).await;
    }

    // Kept states hold no personal data in the clear.
    let plain: i64 = sqlx::query_scalar(
        "select count(*) from client_states
          where position('Philippa'::bytea in state) > 0 or position('philippa'::bytea in state) > 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(plain, 0);

    // A kept state is used: one changed on purpose (sealed again with the client's key) shows
    // in the answers after it, and only there, which a replay from the first event would not.
    let kept = 2 * KEEP_EVERY;
    let aad = format!("client_states/{id}/{kept}");
    let key = vault.keys(&pool, &[id.to_string()]).await.unwrap()[&id.to_string()].clone();
    let sealed: Vec<u8> = sqlx::query_scalar(
        "select state from client_states where aggregate_id = $1 and version = $2",
    )
    .bind(id.to_string())
    .bind(kept)
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut state: serde_json::Value =
        serde_json::from_slice(&key.open(aad.as_bytes(), &sealed).unwrap()).unwrap();
    state["preferred_categories"] = serde_json::json!(["Planted"]);
    let planted_state = key.seal(aad.as_bytes(), &serde_json::to_vec(&state).unwrap());
    sqlx::query("update client_states set state = $3 where aggregate_id = $1 and version = $2")
        .bind(id.to_string())
        .bind(kept)
        .bind(&planted_state)
        .execute(&pool)
        .await
        .unwrap();
    // (A process that has not read it yet: this one holds the state it read, parsed.)
    let past = PastStates::default();
    let LookBack::Found(planted) = past
        .state_at(
            &pool,
            &pool,
            &vault,
            id,
            Moment::Version(2 * KEEP_EVERY + 7),
        )
        .await
        .unwrap()
    else {
        panic!("no state");
    };
    assert_eq!(
        planted.client.preferred_categories(),
        ["Planted".to_owned()]
    );
    let LookBack::Found(before) = past
        .state_at(
            &pool,
            &pool,
            &vault,
            id,
            Moment::Version(2 * KEEP_EVERY - 1),
        )
        .await
        .unwrap()
    else {
        panic!("no state");
    };
    assert_eq!(
        before.client.preferred_categories(),
        ["Knitwear".to_owned()]
    );

    // A kept state moved to another version's row does not open.
    sqlx::query("update client_states set state = $3 where aggregate_id = $1 and version = $2")
        .bind(id.to_string())
        .bind(KEEP_EVERY)
        .bind(&planted_state)
        .execute(&pool)
        .await
        .unwrap();
    let moved = PastStates::default()
        .state_at(&pool, &pool, &vault, id, Moment::Version(KEEP_EVERY + 1))
        .await;
    assert!(format!("{:#}", moved.unwrap_err()).contains("opening a kept state"));
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn an_erasure_deletes_the_kept_states_and_none_come_back(pool: PgPool) {
    let vault = test_vault();
    let past = PastStates::default();
    let (id, clock) = long_history(&pool, &vault, 340).await;
    let LookBack::Found(latest) = past
        .state_at(&pool, &pool, &vault, id, Moment::Latest)
        .await
        .unwrap()
    else {
        panic!("no state");
    };
    wait_for_kept(&pool, id, &[KEEP_EVERY]).await;
    // This process now holds the kept state, parsed, name and all.
    let LookBack::Found(held) = past
        .state_at(&pool, &pool, &vault, id, Moment::Version(KEEP_EVERY + 1))
        .await
        .unwrap()
    else {
        panic!("no state");
    };
    assert_eq!(held.client.name(), "Philippa Longhistory 250");

    let bus = CommandBus::new(
        pool.clone(),
        Arc::clone(&vault),
        ClientServices::default(),
        clock,
    );
    bus.execute(
        id,
        ClientAction::EraseUser {
            reason: "ticket 1".into(),
        },
        &meta(),
    )
    .await
    .unwrap();
    assert!(kept_versions(&pool, id).await.is_empty());

    // Looking back over the erased history: the answer holds no name (not even from the
    // state this process held), and nothing is kept.
    let LookBack::Found(past_held) = past
        .state_at(&pool, &pool, &vault, id, Moment::Version(KEEP_EVERY + 1))
        .await
        .unwrap()
    else {
        panic!("no state");
    };
    assert_eq!(past_held.client.name(), "");
    let LookBack::Found(past) = past
        .state_at(&pool, &pool, &vault, id, Moment::Version(latest.version))
        .await
        .unwrap()
    else {
        panic!("no state");
    };
    assert_eq!(past.client.name(), "");
    assert_eq!(past.client.orders(), latest.client.orders());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(kept_versions(&pool, id).await.is_empty());
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn an_unknown_client_has_no_past(pool: PgPool) {
    let vault = test_vault();
    let past = PastStates::default();
    for moment in [Moment::Latest, Moment::Version(1), Moment::At(start())] {
        assert_eq!(
            past.state_at(&pool, &pool, &vault, Uuid::new_v4(), moment)
                .await
                .unwrap(),
            LookBack::Unknown
        );
    }
}
