//! Keys against a real PostgreSQL: data written before encryption is sealed in place by the
//! one-off command (and reads the same before and after), an erasure of such a client leaves
//! nothing in the clear, and a rotation of the master key rewraps every key, keeps sent
//! unsubscribe links working, and leaves the old key refused by name.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use domain::client::{ClientAction, ClientServices, CreateUser, ImportedHistory, Lifecycle};
use domain::values::{Categories, EmailAddress, Money, OrderId, UserName};
use projections::clock::ManualClock;
use projections::commands::{CommandBus, CommandMetadata};
use projections::engagement::delivery::unsubscribe::TokenKey;
use projections::vault::{rotation, MasterKey, Vault};
use sqlx::PgPool;
use uuid::Uuid;

fn bus(pool: &PgPool, master: &MasterKey) -> CommandBus {
    CommandBus::new(
        pool.clone(),
        Arc::new(Vault::new(master)),
        ClientServices::default(),
        Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap(),
        )),
    )
}

fn create(id: Uuid, name: &str, email: &str) -> ClientAction {
    ClientAction::CreateUser(CreateUser {
        id,
        name: UserName::parse(name).unwrap(),
        email: EmailAddress::parse(email).unwrap(),
        preferred_categories: Categories::parse(&["Knitwear"], "preferredCategories").unwrap(),
        history: ImportedHistory::default(),
        external_id: None,
        client_since: None,
        imported: false,
    })
}

fn order(n: usize) -> ClientAction {
    ClientAction::PlaceOrder(domain::client::PlaceOrder {
        order_id: OrderId::parse(&format!("o-{n}")).unwrap(),
        amount: Money::parse("10.00", "amount").unwrap(),
        placed_at: Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
        categories: Categories::default(),
    })
}

fn meta() -> CommandMetadata {
    CommandMetadata::for_actor("test")
}

/// A client as a build before encryption left them: events and a snapshot in the clear, no
/// key.
async fn legacy_client(pool: &PgPool, name: &str, email: &str) -> Uuid {
    let master = MasterKey::new([7; 32]);
    let bus = bus(pool, &master);
    let id = Uuid::new_v4();
    bus.execute(id, create(id, name, email), &meta())
        .await
        .unwrap();
    for n in 0..3 {
        bus.execute(id, order(n), &meta()).await.unwrap();
    }
    let vault = Vault::new(&master);
    for stored in projections::log::read_stream(pool, &vault, id)
        .await
        .unwrap()
    {
        sqlx::query("update events set payload = $3 where aggregate_id = $1 and sequence = $2")
            .bind(id.to_string())
            .bind(stored.sequence)
            .bind(stored.payload().unwrap())
            .execute(pool)
            .await
            .unwrap();
    }
    let client = bus.load(id).await.unwrap();
    let version = projections::log::stream_head(pool, id)
        .await
        .unwrap()
        .unwrap()
        .0;
    sqlx::query(
        "insert into snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
         values ('client', $1, $2, 1, $3)",
    )
    .bind(id.to_string())
    .bind(version)
    .bind(serde_json::to_value(&client).unwrap())
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("delete from client_keys where client_id = $1")
        .bind(id.to_string())
        .execute(pool)
        .await
        .unwrap();
    id
}

async fn stored_text_holds(pool: &PgPool, needle: &str) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from events e where e::text like '%' || $1 || '%')
             or exists (select 1 from snapshots s where s::text like '%' || $1 || '%')",
    )
    .bind(needle)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn data_from_before_encryption_reads_the_same_and_is_sealed_in_place(pool: PgPool) {
    let master = MasterKey::new([7; 32]);
    let id = legacy_client(&pool, "Legacy Lumley", "legacy.lumley@example.org").await;
    assert!(stored_text_holds(&pool, "Legacy Lumley").await);
    let clear = rotation::in_the_clear(&pool).await.unwrap();
    assert_eq!(
        (clear.events, clear.snapshots),
        (1, 1),
        "UserCreated and the snapshot"
    );
    // Plain payloads read as they are: the service runs before the command is run.
    let before = bus(&pool, &master).load(id).await.unwrap();
    assert_eq!(before.name(), "Legacy Lumley");

    let vault = Vault::new(&master);
    let sealed = rotation::seal_existing(&pool, &vault).await.unwrap();
    assert_eq!(
        (
            sealed.clients,
            sealed.sealed.events,
            sealed.sealed.snapshots,
            sealed.erased
        ),
        (1, 1, 1, 0)
    );
    assert!(!stored_text_holds(&pool, "Legacy Lumley").await);
    assert!(!stored_text_holds(&pool, "legacy.lumley@").await);
    let clear = rotation::in_the_clear(&pool).await.unwrap();
    assert_eq!((clear.events, clear.snapshots), (0, 0));
    assert_eq!(bus(&pool, &master).load(id).await.unwrap(), before);
    let history = projections::log::read_stream(&pool, &vault, id)
        .await
        .unwrap();
    assert_eq!(
        history[0].payload().unwrap()["UserCreated"]["name"],
        "Legacy Lumley"
    );
    // Running it again changes nothing.
    let again = rotation::seal_existing(&pool, &vault).await.unwrap();
    assert_eq!(again, rotation::SealedAll::default());
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn erasing_a_client_from_before_encryption_leaves_nothing_in_the_clear(pool: PgPool) {
    let master = MasterKey::new([7; 32]);
    let id = legacy_client(&pool, "Plain Pemberton", "plain.pemberton@example.org").await;
    let kept = legacy_client(&pool, "Kept Kingsley", "kept.kingsley@example.org").await;
    let bus = bus(&pool, &master);
    bus.execute(
        id,
        ClientAction::EraseUser {
            reason: "ticket 1".into(),
        },
        &meta(),
    )
    .await
    .unwrap();
    assert!(!stored_text_holds(&pool, "Plain Pemberton").await);
    assert!(!stored_text_holds(&pool, "plain.pemberton@").await);
    let keys: i64 = sqlx::query_scalar("select count(*) from client_keys where client_id = $1")
        .bind(id.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "the key made to seal them went with the erasure");
    let erased = bus.load(id).await.unwrap();
    assert_eq!(erased.lifecycle(), Lifecycle::Erased);
    assert_eq!(erased.orders().order_count, 3);
    // Only the erased client was touched.
    assert!(stored_text_holds(&pool, "Kept Kingsley").await);
    assert_eq!(bus.load(kept).await.unwrap().name(), "Kept Kingsley");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_rotation_rewraps_every_key_and_keeps_sent_links_working(pool: PgPool) {
    let old = MasterKey::new([7; 32]);
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for (n, id) in ids.iter().enumerate() {
        bus(&pool, &old)
            .execute(
                *id,
                create(
                    *id,
                    &format!("Rota Person {n}"),
                    &format!("rota{n}@example.org"),
                ),
                &meta(),
            )
            .await
            .unwrap();
    }
    let link = TokenKey::derive(old.bytes()).token(ids[0], Uuid::from_u128(9));
    let new = MasterKey::generate();
    let rotated = rotation::rotate(&pool, &old, &new).await.unwrap();
    assert_eq!((rotated.client_keys, rotated.token_keys), (3, 1));

    // The old key is refused by name; the new one reads everyone.
    let refused = Vault::new(&old).check(&pool).await.unwrap_err().to_string();
    assert!(
        refused.contains(&old.fingerprint()) && refused.contains(&new.fingerprint()),
        "{refused}"
    );
    Vault::new(&new).check(&pool).await.unwrap();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            bus(&pool, &new).load(*id).await.unwrap().name(),
            format!("Rota Person {n}")
        );
    }
    // A link sent before the rotation still verifies; a forged one does not.
    let retired = rotation::retired_token_keys(&pool, &new).await.unwrap();
    let tokens = TokenKey::derive(new.bytes()).with_retired(retired);
    assert_eq!(tokens.verify(&link), Some((ids[0], Uuid::from_u128(9))));
    let forged = TokenKey::derive(&[3; 32]).token(ids[0], Uuid::from_u128(9));
    assert_eq!(tokens.verify(&forged), None);

    // Rotating again keeps both earlier token keys; rotating to the same key is refused.
    let newer = MasterKey::generate();
    let again = rotation::rotate(&pool, &new, &newer).await.unwrap();
    assert_eq!((again.client_keys, again.token_keys), (3, 2));
    let tokens = TokenKey::derive(newer.bytes())
        .with_retired(rotation::retired_token_keys(&pool, &newer).await.unwrap());
    assert!(tokens.verify(&link).is_some());
    assert!(rotation::rotate(&pool, &newer, &newer).await.is_err());
}
