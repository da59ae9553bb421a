//! `GET /metrics` of the running service: after a scripted workload (commands, a conflict, an
//! email written through an LLM peer and sent to a real mail server, a failed LLM call) the
//! values moved as they should, `promtool check metrics` accepts the text, no label carries a
//! client's id or address, and `METRICS_LISTEN` moves the endpoint to a listener of its own.

mod process;
#[path = "../../projections/tests/smtp/mod.rs"]
mod smtp;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use process::{url_of, wait_until, Server, VIEWER};
use serde_json::json;
use smtp::SmtpServer;
use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn answer_llm(server: &MockServer, response: ResponseTemplate) {
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(response)
        .mount(server)
        .await;
}

/// One scrape: the raw text, and each sample by its series (`name{labels}`).
async fn scrape(address: &str, token: Option<&str>) -> (u16, String, HashMap<String, f64>) {
    let mut request = reqwest::Client::new().get(format!("{address}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    if status != 200 {
        return (status, text, HashMap::new());
    }
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{e}: {line}"));
            (series.to_owned(), value)
        })
        .collect();
    (status, text, samples)
}

fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; .ci/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the text:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn metrics_follow_a_scripted_workload_and_promtool_accepts_them(pool: PgPool) {
    let smtp = SmtpServer::start();
    let llm = MockServer::start().await;
    answer_llm(
        &llm,
        ResponseTemplate::new(200).set_body_json(process::llm_completion()),
    )
    .await;
    let url = url_of(&pool).await;
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("metrics-{}.log", uuid::Uuid::new_v4().simple()));
    let env = [
        ("OPENROUTER_API_KEY", "sk-test-metrics".to_owned()),
        ("LLM_BASE_URL", llm.uri()),
        ("EMAIL_DELIVERY", "auto".to_owned()),
        (
            "SMTP_URL",
            format!("smtp://127.0.0.1:{}?tls=off", smtp.port),
        ),
        ("EMAIL_FROM", "Shop <hello@shop.example>".to_owned()),
    ];
    let server = Server::start(&url, &env, log.clone());
    let address = server.address.clone();

    // Every named metric is there from the start, at zero.
    let (status, text, before) = scrape(&address, Some(VIEWER)).await;
    assert_eq!(status, 200);
    for name in [
        "engagement_http_requests_total",
        "engagement_http_request_duration_seconds",
        "engagement_commands_total",
        "engagement_consumer_lag_events",
        "engagement_email_jobs",
        "engagement_llm_requests_total",
        "engagement_emails_sent_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is not exported before any work"
        );
    }
    assert!(text.contains("# TYPE engagement_http_request_duration_seconds histogram"));
    let zero = |series: &str| before.get(series).copied();
    assert_eq!(
        zero(r#"engagement_commands_total{command="place_order",outcome="ok"}"#),
        Some(0.0)
    );
    assert_eq!(
        zero(r#"engagement_llm_requests_total{outcome="server_error"}"#),
        Some(0.0)
    );
    assert_eq!(zero(r#"engagement_email_jobs{status="DEAD"}"#), Some(0.0));
    // No token, no metrics.
    let (status, _, _) = scrape(&address, None).await;
    assert_eq!(status, 401);

    // The workload. First client: an email through the LLM, sent.
    let first = server.at_risk(1).await;
    wait_until("the first email sent", Duration::from_secs(30), || async {
        count(&pool, "select count(*) from emails where status = 'SENT'").await == 1
    })
    .await;
    // Second client: the LLM refuses (401, not worth retrying); the template writes instead.
    answer_llm(
        &llm,
        ResponseTemplate::new(401).set_body_json(json!({ "error": { "message": "bad key" } })),
    )
    .await;
    let second = server.at_risk(2).await;
    wait_until("the second email sent", Duration::from_secs(30), || async {
        count(&pool, "select count(*) from emails where status = 'SENT'").await == 2
    })
    .await;
    server
        .gql(
            "mutation($u: ID!) { placeOrder(userId: $u, input: { orderId: \"o-1\", amount: \"42.50\" }) { id } }",
            json!({ "u": first }),
        )
        .await;
    // A conflict: rejecting an email that was already sent.
    let sent: uuid::Uuid = sqlx::query_scalar("select id from emails where user_id = $1")
        .bind(uuid::Uuid::parse_str(&first).unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    let refused = server
        .gql_answer(
            "mutation($e: ID!) { rejectEmail(id: $e, reason: \"too late\") { id } }",
            json!({ "e": sent }),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "CONFLICT",
        "{refused}"
    );

    // The sender settles its jobs just after recording each send.
    wait_until("the send queue empty", Duration::from_secs(10), || async {
        count(
            &pool,
            "select count(*) from email_sends where status in ('PENDING', 'RUNNING')",
        )
        .await
            == 0
    })
    .await;
    let (status, text, after) = scrape(&address, Some(VIEWER)).await;
    assert_eq!(status, 200);
    promtool_accepts(&text);
    let moved = |series: &str| {
        after
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
            - before.get(series).copied().unwrap_or(0.0)
    };
    let http = |operation: &str, outcome: &str| {
        moved(&format!(
            r#"engagement_http_requests_total{{route="/graphql",operation="{operation}",outcome="{outcome}"}}"#
        ))
    };
    // createUser and setEngagementScore twice, placeOrder once.
    assert_eq!(http("mutation", "ok"), 5.0);
    assert_eq!(http("mutation", "CONFLICT"), 1.0);
    assert_eq!(
        moved(
            r#"engagement_http_requests_total{route="/metrics",operation="none",outcome="UNAUTHENTICATED"}"#
        ),
        1.0
    );
    assert!(
        moved(
            r#"engagement_http_request_duration_seconds_count{route="/graphql",operation="mutation"}"#
        ) >= 6.0
    );
    let command = |name: &str, outcome: &str| {
        moved(&format!(
            r#"engagement_commands_total{{command="{name}",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(command("create_user", "ok"), 2.0);
    assert_eq!(command("place_order", "ok"), 1.0);
    assert_eq!(command("record_email", "ok"), 2.0);
    assert_eq!(command("record_email_sent", "ok"), 2.0);
    assert_eq!(command("reject_email", "rejected"), 1.0);
    assert!(moved(r#"engagement_command_duration_seconds_count{command="place_order"}"#) >= 1.0);
    let appended = |event: &str| {
        moved(&format!(
            r#"engagement_events_appended_total{{type="{event}"}}"#
        ))
    };
    assert_eq!(appended("UserCreated"), 2.0);
    assert_eq!(appended("OrderPlaced"), 1.0);
    assert_eq!(appended("EmailGenerated"), 2.0);
    assert_eq!(appended("EmailSent"), 2.0);
    let events: i64 = count(&pool, "select count(*) from events").await;
    let appended_total: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("engagement_events_appended_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        appended_total, events as f64,
        "every event in the log was counted once"
    );
    assert_eq!(moved(r#"engagement_llm_requests_total{outcome="ok"}"#), 1.0);
    assert_eq!(
        moved(r#"engagement_llm_requests_total{outcome="client_error"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"engagement_llm_tokens_total{kind="prompt"}"#),
        321.0
    );
    assert_eq!(
        moved(r#"engagement_llm_tokens_total{kind="completion"}"#),
        123.0
    );
    assert_eq!(moved("engagement_llm_request_duration_seconds_count"), 2.0);
    assert_eq!(after["engagement_llm_circuit_open"], 0.0);
    assert_eq!(moved("engagement_emails_sent_total"), 2.0);
    assert_eq!(after[r#"engagement_email_jobs{status="DONE"}"#], 2.0);
    assert_eq!(after["engagement_email_send_queue"], 0.0);
    assert!(after.contains_key(r#"engagement_consumer_lag_events{consumer="users"}"#));
    assert!(after.contains_key(r#"engagement_consumer_lag_seconds{consumer="process-manager"}"#));
    assert!(after[r#"engagement_db_pool_connections{state="idle"}"#] >= 0.0);
    assert!(after["engagement_db_pool_max_connections"] >= 1.0);
    assert!(after.contains_key("process_resident_memory_bytes"));

    // Every metric the alert rules use is one the service exports.
    for name in metric_names_in(&alert_rules()) {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "ops/alerts.yml uses {name}, which /metrics does not export"
        );
    }

    // No label carries a client's id, address or name, or a token.
    for secret in [
        first.as_str(),
        second.as_str(),
        "client1@example.com",
        "Client 1",
        VIEWER,
        process::OPERATOR,
    ] {
        assert!(!text.contains(secret), "{secret} is in the metrics");
    }
}

fn alert_rules() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/alerts.yml");
    std::fs::read_to_string(path).unwrap()
}

/// The `engagement_*` metric names an expression text mentions.
fn metric_names_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("engagement_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `promtool` accepts the alert rules, and their unit tests (`ops/alerts.test.yml`) pass.
#[test]
fn the_alert_rules_are_valid_and_fire_when_they_should() {
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&ops)
            .output()
            .expect("promtool (Debian's `prometheus` package; .ci/test installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(metric_names_in(&alert_rules()).len() >= 8);
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn metrics_listen_serves_metrics_apart_and_without_a_token(pool: PgPool) {
    let url = url_of(&pool).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "metrics-listen-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let server = Server::start(
        &url,
        &[("METRICS_LISTEN", format!("127.0.0.1:{port}"))],
        log,
    );
    // The listener is bound before the server says it is listening.
    let apart = format!("http://127.0.0.1:{port}");
    let (status, text, samples) = scrape(&apart, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        samples.get(r#"engagement_build_info{version="0.1.0"}"#),
        Some(&1.0),
        "{text}"
    );
    // The main listener no longer has it, token or not.
    let (status, _, _) = scrape(&server.address, Some(VIEWER)).await;
    assert_eq!(status, 404);
}

/// METRICS_ENABLED=false records nothing and serves no `/metrics`; asking for a listener of
/// its own at the same time is refused, named.
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn metrics_can_be_switched_off(pool: PgPool) {
    let url = url_of(&pool).await;
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("metrics-off-{}.log", uuid::Uuid::new_v4().simple()));
    let server = Server::start(&url, &[("METRICS_ENABLED", "false".to_owned())], log);
    let (status, _, _) = scrape(&server.address, Some(VIEWER)).await;
    assert_eq!(status, 404);
    drop(server);
    let out = Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &url)
        .env("MASTER_KEY", process::MASTER_KEY)
        .env("METRICS_ENABLED", "false")
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("METRICS_LISTEN"));
}
