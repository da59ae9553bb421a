//! Delivery as the service runs it: the `engagement serve` binary, a real mail server
//! (aiosmtpd), SIGKILL in the middle of a batch of sends, and secrets that must never show.

mod process;
#[path = "../../projections/tests/smtp/mod.rs"]
mod smtp;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use process::{url_of, wait_until, Server, MASTER_KEY};
use serde_json::json;
use smtp::SmtpServer;
use sqlx::PgPool;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// SIGKILL while messages are leaving, then a restart: every email is sent at least once, and
/// only messages in flight at the kill (at most SMTP_CONCURRENCY) can be sent twice.
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_kill_during_sends_loses_none_and_repeats_only_what_was_in_flight(pool: PgPool) {
    const CLIENTS: usize = 40;
    const CONCURRENCY: usize = 4;
    let smtp = SmtpServer::start();
    let url = url_of(&pool).await;
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kill-{}.log", uuid::Uuid::new_v4().simple()));
    let env = [
        ("EMAIL_DELIVERY", "auto".to_owned()),
        (
            "SMTP_URL",
            format!("smtp://127.0.0.1:{}?tls=off", smtp.port),
        ),
        ("EMAIL_FROM", "Shop <hello@shop.example>".to_owned()),
        ("SMTP_MAX_PER_SECOND", "10".to_owned()),
        ("SMTP_CONCURRENCY", CONCURRENCY.to_string()),
        ("SMTP_TIMEOUT_SECS", "2".to_owned()),
    ];
    let first = Server::start(&url, &env, log.clone());
    for n in 0..CLIENTS {
        first.at_risk(n).await;
    }
    // Kill it once every email is written (a job being written at the kill is taken up again
    // only when its lease runs out, two minutes on: another test's subject) and a few messages
    // have left while more are on their way.
    wait_until(
        "every email written and the first messages",
        Duration::from_secs(60),
        || async {
            smtp.message_ids().len() >= 8
                && count(&pool, "select count(*) from emails").await == CLIENTS as i64
        },
    )
    .await;
    drop(first);
    let at_kill = smtp.message_ids().len();
    let recorded_at_kill = count(
        &pool,
        "select count(*) from events where event_type = 'EmailSent'",
    )
    .await;
    assert!(
        (at_kill as i64) < CLIENTS as i64,
        "the kill came after everything was sent; the test proves nothing"
    );

    let second = Server::start(&url, &env, log.clone());
    wait_until("every email sent", Duration::from_secs(120), || async {
        count(&pool, "select count(*) from emails where status = 'SENT'").await == CLIENTS as i64
    })
    .await;
    drop(second);

    let mut times: HashMap<String, usize> = HashMap::new();
    for id in smtp.message_ids() {
        *times.entry(id).or_default() += 1;
    }
    let emails: Vec<String> = sqlx::query_scalar("select message_id from emails order by id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(emails.len(), CLIENTS);
    for id in &emails {
        assert!(
            times.get(id).copied().unwrap_or(0) >= 1,
            "{id} was never sent"
        );
    }
    let repeated: usize = times.values().map(|n| n - 1).sum();
    println!(
        "{CLIENTS} emails; {at_kill} messages received and {recorded_at_kill} recorded as sent at the kill; {repeated} sent twice (bound: {CONCURRENCY})"
    );
    assert!(
        repeated <= CONCURRENCY,
        "{repeated} messages were sent twice; only the {CONCURRENCY} in flight at the kill may be"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from events where event_type = 'EmailSent'"
        )
        .await,
        CLIENTS as i64,
        "each email is recorded sent once"
    );
}

/// The SMTP password and the DKIM key never appear in logs (at debug), errors, health, the
/// metrics or the API, even when every send fails.
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn the_smtp_password_and_dkim_key_never_show(pool: PgPool) {
    const PASSWORD: &str = "S3cret-Pw-Zq9x";
    let smtp = SmtpServer::start();
    let url = url_of(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dkim.pem");
    let out = Command::new("openssl")
        .args([
            "genrsa",
            "-traditional",
            "-out",
            key.to_str().unwrap(),
            "2048",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let pem = std::fs::read_to_string(&key).unwrap();
    // A line from the middle of the key: any leak of it would show one.
    let key_line = pem.lines().nth(5).unwrap().to_owned();
    let log = dir.path().join("server.log");
    // STARTTLS is required by smtp://, and the test server offers none: every send fails and
    // is retried, so errors are produced and logged.
    let env = [
        ("EMAIL_DELIVERY", "auto".to_owned()),
        (
            "SMTP_URL",
            format!("smtp://mailer:{PASSWORD}@127.0.0.1:{}", smtp.port),
        ),
        ("EMAIL_FROM", "Shop <hello@shop.example>".to_owned()),
        ("DKIM_SELECTOR", "s1".to_owned()),
        ("DKIM_DOMAIN", "shop.example".to_owned()),
        ("DKIM_PRIVATE_KEY_FILE", key.to_str().unwrap().to_owned()),
        ("RUST_LOG", "debug".to_owned()),
    ];
    let server = Server::start(&url, &env, log.clone());
    server.at_risk(1).await;
    wait_until("a failed send", Duration::from_secs(60), || async {
        count(
            &pool,
            "select count(*) from email_sends where last_error is not null",
        )
        .await
            > 0
    })
    .await;
    let mut seen = String::new();
    let client = reqwest::Client::new();
    for path in ["/api/health", "/healthz", "/readyz"] {
        let response = client
            .get(format!("{}{path}", server.address))
            .send()
            .await
            .unwrap();
        seen.push_str(&response.text().await.unwrap());
    }
    // The metrics, with a token.
    let metrics = client
        .get(format!("{}/metrics", server.address))
        .bearer_auth(process::OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    seen.push_str(&metrics.text().await.unwrap());
    seen.push_str(
        &server
            .gql(
                "{ health { emailDelivery mailServer emailWriter } emails { nodes { deliveryError status } } emailJobs { nodes { lastError } } }",
                json!({}),
            )
            .await
            .to_string(),
    );
    let errors: Vec<Option<String>> = sqlx::query_scalar("select last_error from email_sends")
        .fetch_all(&pool)
        .await
        .unwrap();
    seen.push_str(&format!("{errors:?}"));
    assert!(
        seen.contains("mailer:***@127.0.0.1"),
        "health names the server: {seen}"
    );
    drop(server);
    // `--help` with the secrets in the environment.
    let help = Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(["serve", "--help"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    seen.push_str(&String::from_utf8_lossy(&help.stdout));
    // A malformed SMTP_URL holding the password: the start-up error names the setting only.
    let bad = Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &url)
        .env("MASTER_KEY", MASTER_KEY)
        .env("EMAIL_DELIVERY", "auto")
        .env("EMAIL_FROM", "hello@shop.example")
        .env(
            "SMTP_URL",
            format!("smtp://mailer:{PASSWORD}@host?tls=weird"),
        )
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let bad_stderr = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(bad_stderr.contains("SMTP_URL"), "{bad_stderr}");
    seen.push_str(&bad_stderr);
    seen.push_str(&std::fs::read_to_string(&log).unwrap());
    assert!(seen.contains("email"), "the log was read");
    assert!(
        !seen.contains(PASSWORD),
        "the SMTP password leaked:\n{seen}"
    );
    assert!(!seen.contains(&key_line), "the DKIM key leaked:\n{seen}");
}
