//! What encryption costs the command path in statements: a client's key is read in the same
//! statement as their events, made in one statement of its own when their first personal data
//! is written, and never touched by a command that writes none (an order). Alone in its own
//! test binary: tracing caches each callsite's interest per process, and other tests could
//! leave sqlx's statement log cached as disabled before this one listens.

use std::sync::{Arc, Mutex};

use chrono::{TimeZone, Utc};
use domain::client::{ClientAction, ClientServices, CreateUser, ImportedHistory, PlaceOrder};
use domain::values::{Categories, EmailAddress, Money, OrderId, UserName};
use projections::clock::ManualClock;
use projections::commands::{CommandBus, CommandMetadata};
use projections::vault::{MasterKey, Vault};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The statements logged since the last call (sqlx logs one line per statement).
    fn statements(&self) -> Vec<String> {
        let text = String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap();
        text.lines()
            .filter(|line| line.contains("sqlx::query"))
            .map(str::to_owned)
            .collect()
    }
}

fn bus(pool: &PgPool) -> CommandBus {
    CommandBus::new(
        pool.clone(),
        Arc::new(Vault::new(&MasterKey::new([7; 32]))),
        ClientServices::default(),
        Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap(),
        )),
    )
}

fn place(n: usize) -> ClientAction {
    ClientAction::PlaceOrder(PlaceOrder {
        order_id: OrderId::parse(&format!("o-{n}")).unwrap(),
        amount: Money::parse("10.00", "amount").unwrap(),
        placed_at: Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap(),
        categories: Categories::default(),
    })
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn keys_cost_one_statement_at_creation_and_none_on_an_order(pool: PgPool) {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("sqlx::query=debug"))
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let meta = CommandMetadata::for_actor("test");
    let bus = bus(&pool);
    let id = Uuid::new_v4();
    captured.statements();

    bus.execute(
        id,
        ClientAction::CreateUser(CreateUser {
            id,
            name: UserName::parse("Statement Sam").unwrap(),
            email: EmailAddress::parse("sam@example.org").unwrap(),
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
    let creation = captured.statements();
    // Loading the new client (its snapshot, its events: each with the key column), making
    // its key, appending: the key is the one statement more.
    assert_eq!(
        creation
            .iter()
            .filter(|s| s.contains("insert into client_keys"))
            .count(),
        1,
        "{creation:#?}"
    );
    assert_eq!(creation.len(), 4, "{creation:#?}");

    // An order on a client this process holds: the key is never asked for.
    bus.execute(id, place(1), &meta).await.unwrap();
    let order = captured.statements();
    assert!(
        order.iter().all(|s| !s.contains("insert into client_keys")),
        "{order:#?}"
    );
    // The load of later events carries the key column: no statement of its own.
    assert_eq!(
        order.len(),
        2,
        "the load after the cached version, and the append: {order:#?}"
    );

    // A cold load (another process): the snapshot-less client comes with its key in the
    // events statement.
    let cold = self::bus(&pool);
    captured.statements();
    let loaded = cold.load(id).await.unwrap();
    assert_eq!(loaded.name(), "Statement Sam");
    let load = captured.statements();
    assert!(
        load.iter()
            .all(|s| !s.contains("from client_keys where client_id = any")),
        "{load:#?}"
    );
}
