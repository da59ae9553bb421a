//! PostgreSQL restarted under load: a request that fails because the database cannot be
//! reached answers `UNAVAILABLE` (HTTP 503 with `Retry-After`), never `INTERNAL`; `/readyz`
//! is false while the database is down; nothing acknowledged is lost or doubled, and the
//! service carries on by itself once the database is back.
//!
//! The database is a cluster of the test's own (`cluster/`), stopped with `pg_ctl -m fast`
//! as a restart does (sessions are terminated (57P01), then connections are refused), and
//! with `-m immediate` as a crash does.

mod cluster;
mod process;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::Cluster;
use process::{wait_until, Server, OPERATOR};
use serde_json::{json, Value};

/// What one `placeOrder` was answered.
#[derive(Debug)]
struct Answer {
    order_id: String,
    status: u16,
    retry_after: bool,
    code: Option<String>,
}

async fn place(
    client: &reqwest::Client,
    address: &str,
    user: &str,
    order_id: &str,
) -> Option<Answer> {
    let response = client
        .post(format!("{address}/graphql"))
        .bearer_auth(OPERATOR)
        .json(&json!({
            "query": "mutation($u: ID!, $o: String!) { placeOrder(userId: $u, input: { orderId: $o, amount: \"10\" }) { id } }",
            "variables": { "u": user, "o": order_id },
        }))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let body: Value = response.json().await.ok()?;
    Some(Answer {
        order_id: order_id.to_owned(),
        status,
        retry_after,
        code: body["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_owned),
    })
}

async fn ready(address: &str) -> u16 {
    reqwest::get(format!("{address}/readyz"))
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_under_load_answers_unavailable_and_loses_nothing() {
    outage(Cluster::down).await;
}

/// A crash (`-m immediate`: no shutdown checkpoint, sessions killed mid-statement, recovery
/// from the WAL at the next start) under load: the same answers, nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_crash_under_load_answers_unavailable_and_loses_nothing() {
    outage(Cluster::crash).await;
}

/// Orders under load while the database stops (by `stop`) for a few seconds and comes back.
async fn outage(stop_database: fn(&Cluster)) {
    let cluster = Cluster::start();
    let url = cluster.url("engagement");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("outage-{}.log", uuid::Uuid::new_v4().simple()));
    let server = Server::start(&url, &[], log.clone());
    let address = server.address.clone();
    let mut users = Vec::new();
    for n in 0..16 {
        let created = server
            .gql(
                "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                json!({ "i": { "name": format!("Client {n}"), "email": format!("c{n}@example.com"), "externalId": format!("ext-{n}") } }),
            )
            .await;
        users.push(created["createUser"]["id"].as_str().unwrap().to_owned());
    }

    // Eight writers place orders until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (stop, answers, address, users) = (
            stop.clone(),
            answers.clone(),
            address.clone(),
            users.clone(),
        );
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(40))
                .build()
                .unwrap();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let user = &users[(w + n) % users.len()];
                let order_id = format!("w{w}-{n}");
                if let Some(answer) = place(&client, &address, user, &order_id).await {
                    answers.lock().unwrap().push(answer);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    wait_until("orders flowing", Duration::from_secs(20), || async {
        answers.lock().unwrap().len() >= 50
    })
    .await;

    // Down for a few seconds, then back.
    stop_database(&cluster);
    let mut readiness_while_down = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        readiness_while_down.push(ready(&address).await);
    }
    cluster.up();
    // Back: the service recovers by itself; orders flow again.
    let after_restart = answers.lock().unwrap().len();
    wait_until(
        "orders accepted after the restart",
        Duration::from_secs(60),
        || async {
            let answers = answers.lock().unwrap();
            answers[after_restart..]
                .iter()
                .filter(|a| a.status == 200 && a.code.is_none())
                .count()
                >= 50
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        ready(&address).await,
        200,
        "ready again once the database is back"
    );
    assert!(
        readiness_while_down.iter().all(|s| *s == 503),
        "/readyz while the database was down: {readiness_while_down:?}"
    );

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    for answer in &answers {
        *by_code
            .entry(answer.code.clone().unwrap_or_else(|| "ok".into()))
            .or_default() += 1;
    }
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        by_code
            .keys()
            .all(|code| code == "ok" || code == "UNAVAILABLE"),
        "answers during the restart: {by_code:?}\n{}",
        server_log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("internal"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        by_code.get("UNAVAILABLE").copied().unwrap_or(0) > 0,
        "no request met the outage; the test proves nothing: {by_code:?}"
    );
    for answer in answers.iter().filter(|a| a.code.is_some()) {
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.retry_after, "503 without Retry-After: {answer:?}");
    }

    // Clients retry what was unavailable (commands are idempotent by order id).
    let client = reqwest::Client::new();
    let mut retried = 0;
    for answer in answers.iter().filter(|a| a.code.is_some()) {
        let w: usize = answer.order_id[1..]
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let n: usize = answer.order_id.rsplit('-').next().unwrap().parse().unwrap();
        let user = &users[(w + n) % users.len()];
        let again = place(&client, &address, user, &answer.order_id)
            .await
            .unwrap();
        assert_eq!(again.code, None, "{again:?}");
        retried += 1;
    }

    // Every order answered (first time or on retry) is in the log exactly once, and the
    // users view agrees.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let logged: Vec<String> = sqlx::query_scalar(
        "select payload->'OrderPlaced'->>'orderId' from events where event_type = 'OrderPlaced'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let distinct: HashSet<&String> = logged.iter().collect();
    assert_eq!(distinct.len(), logged.len(), "an order was recorded twice");
    let answered: HashSet<&str> = answers.iter().map(|a| a.order_id.as_str()).collect();
    for order in &answered {
        assert!(
            distinct.contains(&(*order).to_owned()),
            "order {order} was answered but is not in the log"
        );
    }
    // Each client's row agrees with its stream.
    wait_until(
        "the users view caught up",
        Duration::from_secs(20),
        || async {
            let behind: i64 = sqlx::query_scalar(
                "select count(*) from users u
                  where u.order_count <> (select count(*) from events e
                                           where e.aggregate_id = u.id::text
                                             and e.event_type = 'OrderPlaced')",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            behind == 0
        },
    )
    .await;
    let counted: i64 =
        sqlx::query_scalar("select coalesce(sum(order_count), 0)::bigint from users")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counted, logged.len() as i64);
    eprintln!(
        "answers: {by_code:?}; retried {retried}; readiness while down {readiness_while_down:?}"
    );
    pool.close().await;
    drop(server);
}
