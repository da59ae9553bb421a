//! `engagement serve --demo`: a database of its own, filled in the background with a few
//! thousand invented clients and a realistic order history, so that a newcomer sees scores,
//! at-risk clients and written emails within a minute, with no key and no data of their own.
//!
//! The data is generated from a fixed seed (the same clients, orders and amounts every time;
//! dates are relative to the moment it runs), with invented names and `example.com` addresses.
//! Four kinds of client, in the shares a subscription retailer sees: loyal clients ordering on
//! a steady cadence, clients lapsing past their cadence (the at-risk ones), clients lost long
//! ago, and newcomers with an order or two. It goes in through the import path as live activity
//! (so the process manager emails the at-risk clients, with the template writer unless a key is
//! set), and a restart records nothing twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use domain::client::PlaceOrder;
use domain::values::{Categories, EmailAddress, ExternalId, Money, OrderId, UserName};
use projections::commands::{CommandBus, CommandMetadata};
use projections::ingest::{ClientRecord, Ingest, OrderRecord};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sqlx::PgPool;

/// Clients the demo makes.
pub const DEMO_CLIENTS: usize = 3_000;

/// The seed of the demo's data.
const SEED: u64 = 20_261_127;

/// The demo's database: the configured one's name with `_demo` appended (`engagement` ->
/// `engagement_demo`), on the same server.
pub fn database_url(url: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let demo = match base.rsplit_once('/') {
        Some((server, name))
            if !name.is_empty()
                && server.contains("://")
                && server.split("://").nth(1).is_some_and(|s| !s.is_empty()) =>
        {
            // PostgreSQL names are at most 63 bytes: shorten the base, keep the suffix.
            let mut cut = name.len().min(63 - "_demo".len());
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{server}/{}_demo", &name[..cut])
        }
        _ => format!("{}/engagement_demo", base.trim_end_matches('/')),
    };
    match query {
        Some(q) => format!("{demo}?{q}"),
        None => demo,
    }
}

/// How far the fill is, for the overview.
#[derive(Debug, Default)]
pub struct DemoProgress {
    /// Clients to make.
    pub clients_total: AtomicU64,
    /// Clients made (or found from an earlier run).
    pub clients: AtomicU64,
    /// Orders to record.
    pub orders_total: AtomicU64,
    /// Orders recorded (or found).
    pub orders: AtomicU64,
    /// The fill has ended.
    pub done: AtomicBool,
    /// Why it stopped, if it failed.
    pub error: Mutex<Option<String>>,
}

const FIRST: &[&str] = &[
    "Ada", "Bea", "Cleo", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Juno", "Kai", "Lena",
    "Milo", "Nia", "Omar", "Pia", "Quin", "Rosa", "Sami", "Tova", "Uma", "Vik", "Wren", "Yara",
    "Zeno", "Iris", "Noor", "Otto", "Lars", "Mina",
];
const LAST: &[&str] = &[
    "Abbott",
    "Brandt",
    "Castell",
    "Dorsey",
    "Ekwueme",
    "Farrow",
    "Galli",
    "Haddad",
    "Ibarra",
    "Jovanovic",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quintero",
    "Rahman",
    "Sato",
    "Tanaka",
    "Ueda",
    "Varga",
    "Whitlock",
    "Xu",
    "Yilmaz",
    "Zapata",
];
const CATEGORIES: &[&str] = &[
    "Denim",
    "Tops",
    "Dresses",
    "Knitwear",
    "Outerwear",
    "Shoes",
    "Accessories",
    "Activewear",
];

/// The demo's clients and orders as of `now` (deterministic but for the dates' anchor).
pub fn generate(clients: usize, now: DateTime<Utc>) -> (Vec<ClientRecord>, Vec<OrderRecord>) {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut people = Vec::with_capacity(clients);
    let mut orders = Vec::new();
    for i in 0..clients {
        let first = FIRST[rng.gen_range(0..FIRST.len())];
        let last = LAST[rng.gen_range(0..LAST.len())];
        let external_id = format!("demo-{i:05}");
        let favourite = CATEGORIES[rng.gen_range(0..CATEGORIES.len())];
        let second = CATEGORIES[rng.gen_range(0..CATEGORIES.len())];
        // Cadence in days, how many orders, and how long since the last one.
        let kind: f64 = rng.gen();
        let (cadence, count, since_last): (i64, i64, i64) = if kind < 0.35 {
            // Loyal: on their cadence.
            let cadence = rng.gen_range(18..45);
            (cadence, rng.gen_range(5..30), rng.gen_range(0..cadence))
        } else if kind < 0.65 {
            // Lapsing: a habit, then well past it.
            let cadence = rng.gen_range(20..60);
            (
                cadence,
                rng.gen_range(3..18),
                cadence * rng.gen_range(2..5) + rng.gen_range(0..20),
            )
        } else if kind < 0.85 {
            // Lost long ago.
            (
                rng.gen_range(30..120),
                rng.gen_range(1..6),
                rng.gen_range(200..700),
            )
        } else {
            // New.
            (
                rng.gen_range(20..50),
                rng.gen_range(1..3),
                rng.gen_range(0..25),
            )
        };
        let mut day = since_last + cadence * (count - 1);
        let since = now - Duration::days(day + rng.gen_range(10..200));
        people.push(ClientRecord {
            line: i as u64,
            external_id: ExternalId::parse(&external_id).expect("a valid id"),
            name: UserName::parse(&format!("{first} {last}")).expect("a valid name"),
            email: EmailAddress::parse(&format!(
                "{}.{}.{i}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            ))
            .expect("a valid address"),
            preferred_categories: Categories::parse(&[favourite, second], "preferredCategories")
                .expect("valid categories"),
            created_at: Some(since),
        });
        for n in 0..count {
            let jitter = rng.gen_range(-(cadence / 4)..=cadence / 4);
            let placed_at =
                now - Duration::days((day + jitter).max(0)) - Duration::hours(rng.gen_range(1..20));
            let cents = (rng.gen_range(2_500..9_000) as f64
                * (1.0 + rng.gen::<f64>().powi(3) * 3.0)) as i64;
            let category = if rng.gen_bool(0.7) {
                favourite
            } else {
                CATEGORIES[rng.gen_range(0..CATEGORIES.len())]
            };
            orders.push(OrderRecord {
                line: orders.len() as u64,
                external_id: ExternalId::parse(&external_id).expect("a valid id"),
                order: PlaceOrder {
                    order_id: OrderId::parse(&format!("{external_id}-{n:03}")).expect("a valid id"),
                    amount: Money::from_cents(cents, "amount").expect("a valid amount"),
                    placed_at,
                    categories: Categories::parse(&[category], "categories").expect("valid"),
                },
            });
            day -= cadence;
        }
    }
    (people, orders)
}

/// Fills the demo database, reporting to `progress`; returns when done (or failed, said in
/// `progress.error`).
pub async fn fill(bus: CommandBus, pool: PgPool, progress: Arc<DemoProgress>) {
    let (clients, orders) = generate(DEMO_CLIENTS, bus.clock().now());
    progress
        .clients_total
        .store(clients.len() as u64, Ordering::Relaxed);
    progress
        .orders_total
        .store(orders.len() as u64, Ordering::Relaxed);
    let ingest = Ingest::new(&bus, pool, CommandMetadata::for_actor("demo"), false);
    // A few hundred clients at a time, each with all of their orders at once: every client
    // reaches its present state in one step, and the present state decides who is emailed.
    let result = async {
        let mut remaining = orders.as_slice();
        for chunk in clients.chunks(200) {
            let report = ingest.clients(chunk.to_vec()).await?;
            if let Some(first) = report.rejected.first() {
                anyhow::bail!("a demo client was refused: {}", first.message);
            }
            progress
                .clients
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let last = chunk.last().map(|c| c.external_id.clone());
            let upto = remaining
                .iter()
                .position(|o| Some(&o.external_id) > last.as_ref())
                .unwrap_or(remaining.len());
            let (theirs, rest) = remaining.split_at(upto);
            remaining = rest;
            let report = ingest.orders(theirs.to_vec()).await?;
            if let Some(first) = report.rejected.first() {
                anyhow::bail!("a demo order was refused: {}", first.message);
            }
            progress
                .orders
                .fetch_add(theirs.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => tracing::info!(
            clients = clients.len(),
            orders = orders.len(),
            "demo data in place"
        ),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the demo data could not be filled in");
            *progress
                .error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(format!("{error:#}"));
        }
    }
    progress.done.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn the_demo_has_its_own_database_on_the_same_server() {
        assert_eq!(
            database_url("postgres://u:p@db:5432/engagement"),
            "postgres://u:p@db:5432/engagement_demo"
        );
        assert_eq!(
            database_url("postgres://db/shop?sslmode=require"),
            "postgres://db/shop_demo?sslmode=require"
        );
        assert_eq!(
            database_url("postgres://db"),
            "postgres://db/engagement_demo"
        );
        let long = "x".repeat(70);
        assert_eq!(
            database_url(&format!("postgres://db/{long}")),
            format!("postgres://db/{}_demo", "x".repeat(58))
        );
    }

    #[test]
    fn the_data_is_the_same_every_time_and_shaped_like_a_retailers() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let (clients, orders) = generate(1_000, now);
        let (again, _) = generate(1_000, now);
        assert_eq!(clients, again);
        assert_eq!(clients.len(), 1_000);
        assert!(orders.len() > 5_000, "{} orders", orders.len());
        assert!(orders.iter().all(|o| o.order.placed_at < now));
        assert!(clients
            .iter()
            .all(|c| c.email.as_str().ends_with("@example.com")));
        let recent = clients
            .iter()
            .filter(|c| {
                orders
                    .iter()
                    .filter(|o| o.external_id == c.external_id)
                    .any(|o| o.order.placed_at > now - Duration::days(45))
            })
            .count();
        // Some clients are active, many are not: both lists have something to show.
        assert!((300..800).contains(&recent), "{recent} recently active");
    }
}
