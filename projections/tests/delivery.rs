//! Emails leave over SMTP: a real mail server (aiosmtpd, `tests/smtp/server.py`) receives
//! what the sender sends, against a real PostgreSQL.

mod common;
mod smtp;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use domain::client::{
    ClientAction, CreateUser, DeliveryAction, DeliveryMode, ImportedHistory, SetEngagementScore,
};
use domain::values::{Categories, EmailAddress, Score, UserName};
use projections::commands::CommandMetadata;
use projections::engagement::delivery::smtp::{Mailer, MailerSettings};
use projections::engagement::delivery::unsubscribe::TokenKey;
use projections::engagement::delivery::{DeliverySettings, Sender, SenderSettings};
use projections::engagement::writer::template::TemplateWriter;
use projections::engagement::writer::ConfiguredWriter;
use smtp::SmtpServer;
use sqlx::PgPool;
use uuid::Uuid;

fn delivery(mode: DeliveryMode) -> DeliverySettings {
    DeliverySettings {
        mode,
        public_base_url: "https://engage.example".into(),
        token_key: TokenKey::derive(&[3; 32]),
        ..DeliverySettings::off()
    }
}

fn sender(flow: &Flow, smtp: &SmtpServer) -> Sender {
    sender_to(flow, smtp.port, Duration::from_millis(10))
}

/// A sender to `port`, retrying after about `backoff` (doubling).
fn sender_to(flow: &Flow, port: u16, backoff: Duration) -> Sender {
    let mailer = Mailer::new(&MailerSettings {
        url: format!("smtp://127.0.0.1:{port}?tls=off").parse().unwrap(),
        from: "Shop <hello@shop.example>".parse().unwrap(),
        unsubscribe_mailto: Some("mailto:unsubscribe@shop.example".into()),
        dkim: None,
        pool_size: 2,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    Sender::new(
        flow.pool.clone(),
        flow.bus.clone(),
        Arc::new(mailer),
        delivery(DeliveryMode::Auto),
        SenderSettings {
            base_backoff: backoff,
            max_backoff: backoff * 5,
            max_attempts: 4,
            max_per_second: None,
            ..SenderSettings::default()
        },
        Arc::new(tokio::sync::Notify::new()),
    )
}

/// An at-risk client at `email` with a written email under `mode`; returns the client and the
/// email.
async fn written(flow: &Flow, email: &str, mode: DeliveryMode) -> (Uuid, Uuid) {
    let id = Uuid::new_v4();
    flow.run(
        id,
        ClientAction::CreateUser(CreateUser {
            id,
            name: UserName::parse("Ada Lovelace").unwrap(),
            email: EmailAddress::parse(email).unwrap(),
            preferred_categories: Categories::parse(&["Denim"], "preferredCategories").unwrap(),
            history: ImportedHistory::default(),
            external_id: None,
            client_since: None,
            imported: false,
        }),
    )
    .await;
    flow.run(
        id,
        ClientAction::SetEngagementScore(SetEngagementScore {
            score: Score::parse(12, "score").unwrap(),
            reason: Some("test".into()),
            actor: "test".into(),
        }),
    )
    .await;
    flow.catch_up().await;
    let workers = flow
        .workers(ConfiguredWriter::Template(TemplateWriter), fast(3))
        .delivering(delivery(mode));
    assert_eq!(workers.drain_once().await.unwrap(), 1);
    flow.catch_up().await;
    let email: Uuid = sqlx::query_scalar("select id from emails where user_id = $1")
        .bind(id)
        .fetch_one(&flow.pool)
        .await
        .unwrap();
    (id, email)
}

async fn email_row(pool: &PgPool, id: Uuid) -> serde_json::Value {
    sqlx::query_scalar("select to_jsonb(e) from emails e where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn auto_sends_exactly_one_message_with_one_click_unsubscribe(pool: PgPool) {
    let smtp = SmtpServer::start();
    let flow = Flow::new(&pool);
    let (user, email) = written(&flow, "ada@example.com", DeliveryMode::Auto).await;
    let sender = sender(&flow, &smtp);
    assert_eq!(sender.drain_once().await.unwrap(), 1);
    flow.catch_up().await;
    assert_eq!(
        sender.drain_once().await.unwrap(),
        0,
        "nothing is sent twice"
    );
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    // Header lines may be folded: unfold them.
    let message = &messages[0].replace("\r\n ", " ").replace("\n ", " ");
    let token = TokenKey::derive(&[3; 32]).token(user, email);
    let url = format!("https://engage.example/unsubscribe/{token}");
    assert!(
        message.contains(&format!(
            "List-Unsubscribe: <{url}>, <mailto:unsubscribe@shop.example>"
        )),
        "{message}"
    );
    assert!(message.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    assert!(message.contains(&format!("Message-ID: <{email}@shop.example>")));
    // The visible link, in the text body (quoted-printable may wrap it, so unwrap soft breaks).
    let unwrapped = message.replace("=\r\n", "").replace("=3D", "=");
    assert!(unwrapped.contains(&url), "{message}");
    let row = email_row(&pool, email).await;
    assert_eq!(row["status"], "SENT");
    assert_eq!(row["message_id"], format!("<{email}@shop.example>"));
    assert!(row["sent_at"].is_string());
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn review_sends_nothing_until_approved_and_never_what_was_rejected(pool: PgPool) {
    let smtp = SmtpServer::start();
    let flow = Flow::new(&pool);
    let (kept, kept_email) = written(&flow, "kept@example.com", DeliveryMode::Review).await;
    let (dropped, dropped_email) =
        written(&flow, "dropped@example.com", DeliveryMode::Review).await;
    let sender = sender(&flow, &smtp);
    assert_eq!(sender.drain_once().await.unwrap(), 0);
    assert_eq!(
        email_row(&pool, kept_email).await["status"],
        "PENDING_REVIEW"
    );
    let ops = CommandMetadata::for_actor("operator:olga");
    flow.bus
        .execute(
            kept,
            ClientAction::Deliver(DeliveryAction::Approve {
                email_id: kept_email,
                actor: "operator:olga".into(),
            }),
            &ops,
        )
        .await
        .unwrap();
    flow.bus
        .execute(
            dropped,
            ClientAction::Deliver(DeliveryAction::Reject {
                email_id: dropped_email,
                actor: "operator:olga".into(),
                reason: "tone".into(),
            }),
            &ops,
        )
        .await
        .unwrap();
    flow.catch_up().await;
    assert_eq!(sender.drain_once().await.unwrap(), 1);
    flow.catch_up().await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("kept@example.com"));
    let kept_row = email_row(&pool, kept_email).await;
    assert_eq!(kept_row["status"], "SENT");
    assert_eq!(kept_row["reviewed_by"], "operator:olga");
    let dropped_row = email_row(&pool, dropped_email).await;
    assert_eq!(dropped_row["status"], "REJECTED");
    assert_eq!(dropped_row["review_reason"], "tone");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn off_writes_would_send_and_switching_delivery_on_never_sends_that_backlog(pool: PgPool) {
    let flow = Flow::new(&pool);
    let (_, email) = written(&flow, "off@example.com", DeliveryMode::Off).await;
    assert_eq!(email_row(&pool, email).await["status"], "WOULD_SEND");
    let jobs: i64 = sqlx::query_scalar("select count(*) from email_sends")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    // Delivery switched on later: the backlog stays where it is.
    flow.catch_up().await;
    let later = sender_to(&flow, SmtpServer::free_port(), Duration::from_secs(1));
    assert_eq!(later.drain_once().await.unwrap(), 0);
    assert_eq!(email_row(&pool, email).await["status"], "WOULD_SEND");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_busy_server_is_retried_and_a_refused_recipient_is_suppressed(pool: PgPool) {
    let smtp = SmtpServer::start();
    // No cooldown, so that only the suppression can stop a second email.
    let flow = Flow::build(
        &pool,
        domain::client::ClientServices {
            email_cooldown: chrono::Duration::zero(),
            ..Default::default()
        },
        projections::engagement::process_manager::ProcessManagerSettings {
            cooldown: chrono::Duration::zero(),
            trigger_delay: chrono::Duration::zero(),
        },
    );
    let (busy_user, busy) = written(&flow, "busy@example.com", DeliveryMode::Auto).await;
    let (refused_user, refused) = written(&flow, "refuse@example.com", DeliveryMode::Auto).await;
    let sender = sender(&flow, &smtp);
    sender.drain_once().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    sender.drain_once().await.unwrap();
    flow.catch_up().await;
    let messages = smtp.messages();
    assert_eq!(
        messages.len(),
        1,
        "the busy one once, the refused one never"
    );
    assert!(messages[0].contains("busy@example.com"));
    assert_eq!(email_row(&pool, busy).await["status"], "SENT");
    let row = email_row(&pool, refused).await;
    assert_eq!(row["status"], "FAILED");
    assert!(
        row["delivery_error"].as_str().unwrap().contains("550"),
        "{row}"
    );
    let client = flow.bus.load(refused_user).await.unwrap();
    assert!(client.is_suppressed());
    // A new at-risk trigger writes another email to the deliverable address, none to the
    // suppressed one.
    for user in [busy_user, refused_user] {
        for score in [60, 10] {
            flow.run(
                user,
                ClientAction::SetEngagementScore(SetEngagementScore {
                    score: Score::parse(score, "score").unwrap(),
                    reason: Some("again".into()),
                    actor: "test".into(),
                }),
            )
            .await;
        }
    }
    flow.catch_up().await;
    let jobs = |user: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from email_jobs where user_id = $1")
                .bind(user)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        jobs(busy_user).await,
        2,
        "a deliverable address is emailed again"
    );
    assert_eq!(jobs(refused_user).await, 1, "a suppressed address is not");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_client_who_unsubscribes_before_sending_is_not_sent_the_email(pool: PgPool) {
    let smtp = SmtpServer::start();
    let flow = Flow::new(&pool);
    let (user, email) = written(&flow, "leaving@example.com", DeliveryMode::Auto).await;
    flow.run(user, ClientAction::Unsubscribe).await;
    let sender = sender(&flow, &smtp);
    assert_eq!(sender.drain_once().await.unwrap(), 1);
    flow.catch_up().await;
    assert!(smtp.messages().is_empty());
    assert_eq!(email_row(&pool, email).await["status"], "CANCELLED");
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_server_that_is_down_loses_nothing_and_sends_everything_after(pool: PgPool) {
    let flow = Flow::new(&pool);
    let mut emails = Vec::new();
    for i in 0..3 {
        emails.push(
            written(&flow, &format!("later{i}@example.com"), DeliveryMode::Auto)
                .await
                .1,
        );
    }
    // A port where nothing listens yet: a sender pointed at it finds the server down.
    let port = SmtpServer::free_port();
    // It retries an hour later: the drain ends with every send waiting.
    sender_to(&flow, port, Duration::from_secs(1800))
        .drain_once()
        .await
        .unwrap();
    let pending: i64 = sqlx::query_scalar(
        "select count(*) from email_sends where status = 'PENDING' and attempts = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(pending, 3, "every send waits for a retry");
    // The server comes up on that port.
    let up = SmtpServer::start_on(Some(port));
    sqlx::query("update email_sends set next_attempt_at = now() where status = 'PENDING'")
        .execute(&pool)
        .await
        .unwrap();
    sender(&flow, &up).drain_once().await.unwrap();
    flow.catch_up().await;
    assert_eq!(up.messages().len(), 3);
    for email in emails {
        assert_eq!(email_row(&pool, email).await["status"], "SENT");
    }
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn a_dkim_signature_verifies_and_covers_both_unsubscribe_headers(pool: PgPool) {
    let smtp = SmtpServer::start();
    let flow = Flow::new(&pool);
    written(&flow, "signed@example.com", DeliveryMode::Auto).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dkim.pem");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        key.to_str().unwrap(),
        "2048",
    ]);
    use base64::Engine as _;
    let public = base64::engine::general_purpose::STANDARD.encode(openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]));
    let mailer = Mailer::new(&MailerSettings {
        url: format!("smtp://127.0.0.1:{}?tls=off", smtp.port)
            .parse()
            .unwrap(),
        from: "Shop <hello@shop.example>".parse().unwrap(),
        unsubscribe_mailto: None,
        dkim: Some(projections::engagement::delivery::smtp::DkimSettings {
            selector: "s1".into(),
            domain: "shop.example".into(),
            private_key_pem: std::fs::read_to_string(&key).unwrap(),
        }),
        pool_size: 1,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let sender = Sender::new(
        pool.clone(),
        flow.bus.clone(),
        Arc::new(mailer),
        delivery(DeliveryMode::Auto),
        SenderSettings {
            max_per_second: None,
            ..SenderSettings::default()
        },
        Arc::new(tokio::sync::Notify::new()),
    );
    assert_eq!(sender.drain_once().await.unwrap(), 1);
    let files = smtp.message_files();
    assert_eq!(files.len(), 1);
    let verify = std::process::Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/dkim_verify.py"))
        .arg(&files[0])
        .arg(&public)
        .output()
        .unwrap();
    let signed = String::from_utf8_lossy(&verify.stdout)
        .trim()
        .to_lowercase();
    assert!(
        verify.status.success(),
        "the DKIM signature does not verify: {signed} {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    for header in [
        "list-unsubscribe",
        "list-unsubscribe-post",
        "from",
        "message-id",
    ] {
        assert!(
            signed.split(':').any(|h| h == header),
            "h= lacks {header}: {signed}"
        );
    }
}
