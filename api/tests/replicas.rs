//! Read replicas against a real primary and a real hot standby (`pg_basebackup -R`, a second
//! cluster on another port, from the same PostgreSQL packages): queries are served by the
//! standby (its statement log shows them); a query right after a mutation sees it; a standby
//! that stops loses no query (each falls back to the primary within its request), `/readyz`
//! stays ready and health says `down`; a standby whose replay is paused is `lagging` and
//! skipped; back, it is used again.

mod cluster;
mod process;

use std::path::Path;
use std::time::Duration;

use cluster::Cluster;
use process::{wait_until, Server, OPERATOR};
use serde_json::{json, Value};

/// The replica's status as `/api/health` reports it.
async fn replica_status(address: &str) -> String {
    let health: Value = reqwest::get(format!("{address}/api/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let replicas = health["dependencies"]["replicas"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(replicas.len(), 1, "{health}");
    assert!(
        !replicas[0]["host"].as_str().unwrap().contains('@'),
        "{health}"
    );
    replicas[0]["status"].as_str().unwrap().to_owned()
}

/// POSTs `query` as the operator, with extra `headers`; the answer's status, headers and body.
async fn post(
    address: &str,
    query: &str,
    variables: Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{address}/graphql"))
        .bearer_auth(OPERATOR)
        .json(&json!({ "query": query, "variables": variables }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

/// How many times the cluster has logged the statement that loads users by id (what
/// `user(id:)` runs).
fn users_reads(cluster: &Cluster) -> usize {
    cluster
        .log_text()
        .lines()
        .filter(|l| l.contains("select * from users where id = any($1)"))
        .count()
}

/// Creates a client, then at once reads them back by a query: the query must see them.
async fn write_then_read(address: &str, n: usize) {
    let (_, headers, created) = post(
        address,
        "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
        json!({ "i": { "name": format!("Replica Reader {n}"), "email": format!("reader{n}@example.com") } }),
        &[],
    )
    .await;
    assert!(created["errors"].is_null(), "{created}");
    assert!(
        headers.contains_key("x-read-position"),
        "a mutation says where the primary stood"
    );
    let id = created["data"]["createUser"]["id"].as_str().unwrap();
    let (status, _, read) = post(
        address,
        "query($id: ID!) { user(id: $id) { name } }",
        json!({ "id": id }),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        read["data"]["user"]["name"],
        format!("Replica Reader {n}"),
        "read after write: {read}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_read_the_standby_and_fall_back_to_the_primary() {
    let primary = Cluster::start_with("log_statement = 'all'");
    let standby = Cluster::standby_of(&primary, "log_statement = 'all'");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("replicas-{}.log", uuid::Uuid::new_v4().simple()));
    let server = Server::start(
        &primary.url("engagement"),
        &[
            ("DATABASE_READ_URL", standby.url("engagement")),
            ("DATABASE_READ_MAX_LAG_MS", "1500".into()),
            // Every query runs: none is answered from the response cache.
            ("API_RESPONSE_CACHE_MB", "0".into()),
        ],
        log,
    );
    let address = server.address.clone();
    wait_until("the standby is up", Duration::from_secs(20), || async {
        replica_status(&address).await == "up"
    })
    .await;

    // Queries are served by the standby, and each sees the mutation before it.
    let (on_standby, on_primary) = (users_reads(&standby), users_reads(&primary));
    for n in 0..20 {
        write_then_read(&address, n).await;
    }
    assert!(
        users_reads(&standby) >= on_standby + 20,
        "the standby served the queries"
    );
    assert_eq!(
        users_reads(&primary),
        on_primary,
        "no query read the users view on the primary"
    );

    // A position a client must see is honoured; one that does not parse is refused, named.
    let (status, _, refused) = post(
        &address,
        "{ users(first: 1) { totalCount } }",
        json!({}),
        &[("X-Read-After", "yesterday")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["errors"][0]["extensions"]["code"], "VALIDATION");
    assert!(refused["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("X-Read-After"));
    let (status, _, answered) = post(
        &address,
        "{ users(first: 1) { totalCount } }",
        json!({}),
        &[("X-Read-After", "0/1")],
    )
    .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["data"]["users"]["totalCount"], 20);

    // Replay paused: the standby falls behind, is reported lagging, and queries still see
    // every write (on the primary).
    let paused = sqlx::PgPool::connect(&standby.url("engagement"))
        .await
        .unwrap();
    sqlx::query("select pg_wal_replay_pause()")
        .execute(&paused)
        .await
        .unwrap();
    for n in 20..23 {
        write_then_read(&address, n).await;
    }
    wait_until(
        "the standby is lagging",
        Duration::from_secs(15),
        || async { replica_status(&address).await == "lagging" },
    )
    .await;
    sqlx::query("select pg_wal_replay_resume()")
        .execute(&paused)
        .await
        .unwrap();
    paused.close().await;
    wait_until(
        "the standby is up again",
        Duration::from_secs(15),
        || async { replica_status(&address).await == "up" },
    )
    .await;

    // The standby stops: not one query fails, readiness holds, health says down.
    standby.down();
    for n in 200..215 {
        write_then_read(&address, n).await;
        let ready = reqwest::get(format!("{address}/readyz")).await.unwrap();
        assert_eq!(ready.status().as_u16(), 200);
    }
    wait_until(
        "health reports the standby down",
        Duration::from_secs(10),
        || async { replica_status(&address).await == "down" },
    )
    .await;

    // Back: used again.
    standby.up();
    wait_until(
        "the standby is up after its restart",
        Duration::from_secs(30),
        || async { replica_status(&address).await == "up" },
    )
    .await;
    let before = users_reads(&standby);
    for n in 300..305 {
        write_then_read(&address, n).await;
    }
    assert!(
        users_reads(&standby) >= before + 5,
        "the standby serves queries again"
    );
}
