//! `engagement import` as a user runs it: exit codes, skipped rows by line, a second run that
//! records nothing, and a run killed with SIGKILL half-way and started again, which must end
//! with the same orders and state as one clean run.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;

const AT: &str = "2026-06-01T12:00:00Z";

async fn url_of(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

fn import(url: &str, kind: &str, file: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_engagement"));
    command
        .args(["import", kind])
        .arg(file)
        .args(["--at", AT, "--chunk-rows", "50"])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "off");
    command
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

fn files(clients: usize, per: usize) -> (String, String) {
    let mut c = String::from("external_id,name,email,preferred_categories,created_at\n");
    let mut o = String::from("external_id,order_id,placed_at,amount,categories\n");
    for i in 0..clients {
        c.push_str(&format!(
            "K{i},Client {i},k{i}@example.com,Denim,2022-02-02\n"
        ));
    }
    for j in 0..per {
        for i in 0..clients {
            o.push_str(&format!(
                "K{i},K{i}-{j},2025-{:02}-{:02},{}.50,Denim|Tops\n",
                1 + (i + j) % 12,
                1 + j % 28,
                5 + (i * 31 + j * 17) % 300
            ));
        }
    }
    (c, o)
}

type State = Vec<(String, i32, i64, i16, String)>;

async fn state(pool: &PgPool) -> (State, Vec<(String, String)>) {
    let users = sqlx::query_as(
        "select external_id, order_count, total_spent_cents, engagement_score, score_band
           from users order by external_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let orders = sqlx::query_as(
        "select aggregate_id, payload->'OrderPlaced'->>'orderId' from events
          where event_type = 'OrderPlaced' order by 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (users, orders)
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn skipped_rows_are_reported_by_line_with_exit_code_3_and_a_rerun_records_nothing(
    pool: PgPool,
) {
    let url = url_of(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let clients = write(
        &dir,
        "clients.csv",
        "external_id,name,email,preferred_categories,created_at\n\
         A,Ann,ann@example.com,Denim|Tops,2024-01-01\n\
         B,Bob,not-an-email,,\n",
    );
    let output = import(&url, "clients", &clients).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3: email:"), "{stderr}");
    let orders = write(
        &dir,
        "orders.csv",
        "external_id,order_id,placed_at,amount,categories\n\
         A,1,2025-01-01,10.00,\n\
         A,2,2025-02-01T10:00:00Z,20.00,Denim\n",
    );
    let output = import(&url, "orders", &orders).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("2 recorded, 0 already there, 0 skipped"),
        "{stdout}"
    );
    // The users view already shows them when the command returns.
    let (count, total): (i32, i64) =
        sqlx::query_as("select order_count, total_spent_cents from users where external_id = 'A'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((count, total), (2, 3_000));
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let again = import(&url, "orders", &orders).output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 recorded, 2 already there"));
    let after: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, events, "a second run records nothing");
    // A header without the columns stops the import: exit 1, nothing recorded.
    let bad = write(&dir, "bad.csv", "external_id,amount\nA,3\n");
    let output = import(&url, "orders", &bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("placed_at"));
    // Standard input works too.
    let mut child = import(&url, "orders", std::path::Path::new("-"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"external_id,order_id,placed_at,amount,categories\nA,3,2025-03-01,5,\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn an_import_killed_half_way_and_run_again_ends_like_one_clean_run(pool: PgPool) {
    let url = url_of(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let (clients, orders) = files(300, 20);
    let clients = write(&dir, "clients.csv", &clients);
    let orders = write(&dir, "orders.csv", &orders);
    assert!(import(&url, "clients", &clients)
        .status()
        .unwrap()
        .success());
    let before: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut child = import(&url, "orders", &orders).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: i64 = sqlx::query_scalar("select count(*) from events")
            .fetch_one(&pool)
            .await
            .unwrap();
        if now > before + 500 {
            break;
        }
        assert!(Instant::now() < deadline, "the import never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial: i64 =
        sqlx::query_scalar("select count(*) from events where event_type = 'OrderPlaced'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        partial < 6_000,
        "killed before the end ({partial} orders in)"
    );
    let rerun = import(&url, "orders", &orders).output().unwrap();
    assert_eq!(rerun.status.code(), Some(0), "{rerun:?}");
    let resumed = state(&pool).await;

    // One clean run on a database of its own.
    let clean_db = format!("import_clean_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("create database {clean_db}"))
        .execute(&pool)
        .await
        .unwrap();
    let (server, _) = url.rsplit_once('/').unwrap();
    let clean_url = format!("{server}/{clean_db}");
    assert!(import(&clean_url, "clients", &clients)
        .status()
        .unwrap()
        .success());
    assert!(import(&clean_url, "orders", &orders)
        .status()
        .unwrap()
        .success());
    let clean = PgPool::connect(&clean_url).await.unwrap();
    let once = state(&clean).await;
    clean.close().await;
    sqlx::query(&format!("drop database {clean_db} with (force)"))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(resumed.1.len(), 6_000);
    // Client ids differ between the two databases; the orders by client and every client's
    // final state must not.
    let by_external = |state: &(State, Vec<(String, String)>)| {
        let mut orders: Vec<String> = state.1.iter().map(|(_, o)| o.clone()).collect();
        orders.sort();
        (state.0.clone(), orders)
    };
    assert_eq!(by_external(&resumed), by_external(&once));
}
