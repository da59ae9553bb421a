//! Erasure (GDPR Article 17) of the running service: a client with a distinctive name and
//! address, orders, reasons that quote them and an email written and sent, is erased; then
//! neither the name nor the address is anywhere in the database (every table, as text) or the
//! server's log, the history still lists every event with its type, time and actor, a rebuild
//! changes nothing, and a dump of `events` and `snapshots` never held any client's name or
//! address. A backup taken before the erasure is erased again from the ledger.

mod process;
#[path = "../../projections/tests/smtp/mod.rs"]
mod smtp;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use process::{url_of, wait_until, Server, ADMIN, MASTER_KEY};
use serde_json::{json, Value};
use smtp::SmtpServer;
use sqlx::PgPool;

const NAME: &str = "Zebulon Quackenbush";
const ADDRESS: &str = "zq.erasure.7731@example.org";
const EXTERNAL_ID: &str = "crm-erase-7731";
const OTHER_NAME: &str = "Ottoline Marchbanks";
const OTHER_ADDRESS: &str = "ottoline.m.5519@example.net";

/// Every piece of the erased client that must be gone.
const NEEDLES: [&str; 5] = [NAME, "Quackenbush", "Zebulon", ADDRESS, EXTERNAL_ID];

fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("erasure-{name}-{}", uuid::Uuid::new_v4().simple()))
}

/// The tables of the database whose text holds `needle`, with how many rows.
async fn tables_holding(pool: &PgPool, needle: &str) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables
          where table_schema = 'public' and table_type = 'BASE TABLE' order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() > 10, "{tables:?}");
    let mut found = Vec::new();
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!(
            "select count(*) from \"{table}\" as t where position(lower($1) in lower(t::text)) > 0"
        ))
        .bind(needle)
        .fetch_one(pool)
        .await
        .unwrap();
        if n > 0 {
            found.push((table, n));
        }
    }
    found
}

async fn nowhere_in_the_database(pool: &PgPool, needles: &[&str]) {
    for needle in needles {
        let found = tables_holding(pool, needle).await;
        assert!(found.is_empty(), "{needle:?} is still in {found:?}");
    }
}

fn pg_dump(url: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new("pg_dump")
        .args(args)
        .arg(url)
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `engagement ARGS` against `url`, with the test's master key: its standard output.
fn engagement(url: &str, ledger: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("MASTER_KEY", MASTER_KEY)
        .env("ERASURE_LEDGER_FILE", ledger)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "engagement {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn view_rows(pool: &PgPool, table: &str) -> Vec<Value> {
    sqlx::query_scalar(&format!("select to_jsonb(t) from {table} t order by id"))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn create(server: &Server, name: &str, email: &str, external_id: &str) -> String {
    server
        .gql(
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({ "i": { "name": name, "email": email, "externalId": external_id,
                           "preferredCategories": ["Denim"] } }),
        )
        .await["createUser"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn an_erased_client_is_nowhere_but_their_history_of_facts_remains(pool: PgPool) {
    let smtp = SmtpServer::start();
    let url = url_of(&pool).await;
    let log = scratch("server.log");
    let ledger = scratch("ledger");
    let env = [
        ("EMAIL_DELIVERY", "auto".to_owned()),
        (
            "SMTP_URL",
            format!("smtp://127.0.0.1:{}?tls=off", smtp.port),
        ),
        ("EMAIL_FROM", "Shop <hello@shop.example>".to_owned()),
        ("ERASURE_LEDGER_FILE", ledger.display().to_string()),
    ];
    let server = Server::start(&url, &env, log.clone());

    let id = create(&server, NAME, ADDRESS, EXTERNAL_ID).await;
    let other = create(&server, OTHER_NAME, OTHER_ADDRESS, "crm-keep-5519").await;
    // Enough history for snapshots (through the batch path), a cancellation and a manual
    // score whose reasons quote the client, and an email written and sent.
    let orders: Vec<Value> = (0..30)
        .map(|n| {
            json!({ "externalId": EXTERNAL_ID, "orderId": format!("o-{n}"), "amount": "20.00",
                    "placedAt": format!("2025-{:02}-{:02}T10:00:00Z", 1 + n % 12, 1 + n % 27) })
        })
        .collect();
    let imported = server
        .gql(
            "mutation($o: [ImportOrderInput!]!) { importOrders(orders: $o) { accepted } }",
            json!({ "o": orders }),
        )
        .await;
    assert_eq!(imported["importOrders"]["accepted"], 30);
    server
        .gql(
            "mutation($u: ID!) { cancelOrder(userId: $u, orderId: \"o-3\", reason: \"Zebulon Quackenbush phoned\") { id } }",
            json!({ "u": id }),
        )
        .await;
    server
        .gql(
            "mutation($u: ID!) { setEngagementScore(userId: $u, score: 5, reason: \"spoke to zq.erasure.7731@example.org\") { id } }",
            json!({ "u": id }),
        )
        .await;
    wait_until("the email is sent", Duration::from_secs(60), || async {
        let sent: i64 = sqlx::query_scalar(
            "select count(*) from emails where status = 'SENT' and user_id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
        sent == 1
    })
    .await;
    assert!(smtp.messages().iter().any(|m| m.contains(ADDRESS)));
    let snapshots: i64 =
        sqlx::query_scalar("select count(*) from snapshots where aggregate_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(snapshots > 0, "the client has a snapshot");
    // The views hold the client in the clear (search needs it); the log and snapshots never do.
    assert!(!tables_holding(&pool, NAME).await.is_empty());
    let backup = scratch("backup.dump");
    std::fs::write(&backup, pg_dump(&url, &["-Fc"])).unwrap();
    let logged = pg_dump(&url, &["--data-only", "-t", "events", "-t", "snapshots"]);
    let logged = String::from_utf8_lossy(&logged);
    for needle in NEEDLES.iter().chain(&[OTHER_NAME, OTHER_ADDRESS]) {
        assert!(
            !logged.contains(needle),
            "the dump of events and snapshots holds {needle:?}"
        );
    }
    let events_before: i64 =
        sqlx::query_scalar("select count(*) from events where aggregate_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();

    // Only an admin may erase; the reason is checked.
    let refused = server
        .gql_answer(
            "mutation($u: ID!) { eraseUser(id: $u, reason: \"ticket 7731\") }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    let invalid = server
        .gql_answer_as(
            ADMIN,
            "mutation($u: ID!) { eraseUser(id: $u, reason: \" \") }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(
        invalid["errors"][0]["extensions"]["field"], "reason",
        "{invalid}"
    );
    let unknown = server
        .gql_answer_as(
            ADMIN,
            "mutation($u: ID!) { eraseUser(id: $u, reason: \"ticket\") }",
            json!({ "u": uuid::Uuid::new_v4().to_string() }),
        )
        .await;
    assert_eq!(
        unknown["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{unknown}"
    );
    let malformed = server
        .gql_answer_as(
            ADMIN,
            "mutation { eraseUser(id: \"not-an-id\", reason: \"ticket\") }",
            json!({}),
        )
        .await;
    assert_eq!(
        malformed["errors"][0]["extensions"]["field"], "id",
        "{malformed}"
    );
    let erased = server
        .gql_answer_as(
            ADMIN,
            "mutation($u: ID!) { eraseUser(id: $u, reason: \"GDPR ticket 7731\") }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(erased["data"]["eraseUser"], id.as_str(), "{erased}");
    // Again: nothing changes.
    let again = server
        .gql_answer_as(
            ADMIN,
            "mutation($u: ID!) { eraseUser(id: $u, reason: \"GDPR ticket 7731\") }",
            json!({ "u": id }),
        )
        .await;
    assert_eq!(again["data"]["eraseUser"], id.as_str(), "{again}");

    // What the API shows at once.
    let shown = server
        .gql(
            "query($u: ID!) { user(id: $u) { status name email externalId orderCount emails(first: 10) { edges { node { subject text } } } }
                              userHistory(userId: $u, first: 200) { totalCount edges { node { type recordedAt payload metadata erased } } } }",
            json!({ "u": id }),
        )
        .await;
    let user = &shown["user"];
    assert_eq!(user["status"], "ERASED");
    assert_eq!(
        (user["name"].as_str(), user["email"].as_str()),
        (Some(""), Some(""))
    );
    assert!(user["externalId"].is_null());
    assert_eq!(user["orderCount"], 29, "non-personal facts remain");
    let emails = user["emails"]["edges"].as_array().unwrap();
    assert_eq!(emails.len(), 1);
    assert!(emails
        .iter()
        .all(|e| e["node"]["subject"] == "" && e["node"]["text"] == ""));
    let history = &shown["userHistory"];
    assert_eq!(history["totalCount"], events_before + 1);
    let nodes: Vec<&Value> = history["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .collect();
    assert_eq!(nodes.len() as i64, events_before + 1);
    for node in &nodes {
        assert!(node["type"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(node["recordedAt"].is_string());
        assert!(
            node["metadata"]["actor"]
                .as_str()
                .is_some_and(|a| !a.is_empty()),
            "{node}"
        );
    }
    let created = nodes.iter().find(|n| n["type"] == "UserCreated").unwrap();
    assert!(created["payload"]["name"].is_null() && created["payload"]["email"].is_null());
    assert_eq!(created["erased"], json!(["email", "externalId", "name"]));
    assert_eq!(created["payload"]["preferredCategories"], json!(["Denim"]));
    let order = nodes.iter().find(|n| n["type"] == "OrderPlaced").unwrap();
    assert_eq!(order["payload"]["amountCents"], 2000);
    let last = nodes.last().unwrap();
    assert_eq!(last["type"], "UserErased");
    assert_eq!(last["payload"]["reason"], "GDPR ticket 7731");
    assert_eq!(last["metadata"]["actor"], "admin:dpo");
    let text = serde_json::to_string(&shown).unwrap();
    for needle in NEEDLES {
        assert!(!text.contains(needle), "the API still shows {needle:?}");
    }

    // Nowhere in the database; the other client is untouched.
    wait_until("the jobs are scrubbed", Duration::from_secs(10), || async {
        tables_holding(&pool, ADDRESS).await.is_empty()
    })
    .await;
    nowhere_in_the_database(&pool, &NEEDLES).await;
    let kept = server
        .gql(
            "query($u: ID!) { user(id: $u) { name email status } }",
            json!({ "u": other }),
        )
        .await;
    assert_eq!(kept["user"]["name"], OTHER_NAME);
    assert_eq!(kept["user"]["status"], "ACTIVE");

    // Rebuilds keep the erasure, and the views equal the live ones.
    let (users, emails) = (
        view_rows(&pool, "users").await,
        view_rows(&pool, "emails").await,
    );
    let rebuilt = engagement(&url, &ledger, &["rebuild", "all"]);
    assert!(rebuilt.contains("rebuilt users"), "{rebuilt}");
    nowhere_in_the_database(&pool, &NEEDLES).await;
    assert_eq!(view_rows(&pool, "users").await, users);
    assert_eq!(view_rows(&pool, "emails").await, emails);

    // A new creation under the same external id is a new client.
    let again = create(
        &server,
        "Someone Else",
        "someone.else@example.org",
        EXTERNAL_ID,
    )
    .await;
    assert_ne!(again, id);
    let fresh = server
        .gql(
            "query { userByExternalId(externalId: \"crm-erase-7731\") { id status } }",
            json!({}),
        )
        .await;
    assert_eq!(fresh["userByExternalId"]["id"], again.as_str());
    assert_eq!(fresh["userByExternalId"]["status"], "ACTIVE");

    // A dump of the log and snapshots holds no client's name or address.
    let logged = pg_dump(&url, &["--data-only", "-t", "events", "-t", "snapshots"]);
    let logged = String::from_utf8_lossy(&logged);
    for needle in NEEDLES.iter().chain(&[
        OTHER_NAME,
        OTHER_ADDRESS,
        "Someone Else",
        "someone.else@example.org",
    ]) {
        assert!(
            !logged.contains(needle),
            "the dump of events and snapshots holds {needle:?}"
        );
    }

    // The ledger lists the erasure once, and the log agrees with it.
    let lines = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    let entry: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(entry["userId"], id.as_str());
    assert_eq!(entry["reason"], "GDPR ticket 7731");
    assert_eq!(entry["actor"], "admin:dpo");
    let exported = scratch("exported");
    let said = engagement(
        &url,
        &ledger,
        &["erasures", "export", exported.to_str().unwrap()],
    );
    assert!(said.contains("wrote 1 erasures"), "{said}");
    let exported: Value =
        serde_json::from_str(std::fs::read_to_string(&exported).unwrap().trim()).unwrap();
    assert_eq!(exported["userId"], entry["userId"]);
    drop(server);

    // The server never logged them.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("serving"), "{logged}");
    for needle in NEEDLES {
        assert!(
            !logged.contains(needle),
            "the server's log holds {needle:?}"
        );
    }

    // A backup from before the erasure, restored, holds the client again until the ledger
    // is applied.
    let restored = format!(
        "erasure_restored_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sqlx::query(&format!("create database \"{restored}\""))
        .execute(&pool)
        .await
        .unwrap();
    let restored_url = format!("{}/{restored}", url.rsplit_once('/').unwrap().0);
    let out = Command::new("pg_restore")
        .args(["--no-owner", "-d", &restored_url])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored_pool = PgPool::connect(&restored_url).await.unwrap();
    assert!(!tables_holding(&restored_pool, NAME).await.is_empty());
    let applied = engagement(&restored_url, &ledger, &["erasures", "apply"]);
    assert!(applied.contains("erased 1 again"), "{applied}");
    nowhere_in_the_database(&restored_pool, &NEEDLES).await;
    let status: String = sqlx::query_scalar("select status from users where id = $1::uuid")
        .bind(&id)
        .fetch_one(&restored_pool)
        .await
        .unwrap();
    assert_eq!(status, "ERASED");
    let twice = engagement(&restored_url, &ledger, &["erasures", "apply"]);
    assert!(
        twice.contains("erased 0 again, 1 were erased already"),
        "{twice}"
    );
    restored_pool.close().await;
    sqlx::query(&format!("drop database \"{restored}\""))
        .execute(&pool)
        .await
        .unwrap();
}
