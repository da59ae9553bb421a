//! OpenTelemetry traces from the running service to an in-process OTLP receiver
//! (fake-opentelemetry-collector): one `placeOrder` that puts a client at risk yields one trace
//! holding the request, the command, the process manager's decision, the email job, the LLM
//! call and the send, continuing the caller's W3C `traceparent`; the trace id is in the events'
//! metadata. With no endpoint set, no exporter runs and one line says so.

mod process;
#[path = "../../projections/tests/smtp/mod.rs"]
mod smtp;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use process::{url_of, wait_until, Server, OPERATOR};
use serde_json::{json, Value};
use smtp::SmtpServer;
use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn one_order_that_puts_a_client_at_risk_is_one_trace_from_request_to_send(pool: PgPool) {
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let endpoint = collector.endpoint();
    // The receiver holds few spans at a time: drain it all along, or exports would wait.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ExportedSpan>::new()));
    let draining = tokio::spawn({
        let received = received.clone();
        async move {
            loop {
                let spans = collector
                    .exported_spans(1, Duration::from_millis(100))
                    .await;
                received.lock().unwrap().extend(spans);
            }
        }
    });
    let smtp = SmtpServer::start();
    let llm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(process::llm_completion()))
        .mount(&llm)
        .await;
    let url = url_of(&pool).await;
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("traces-{}.log", uuid::Uuid::new_v4().simple()));
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OPENROUTER_API_KEY", "sk-test-traces".to_owned()),
        ("LLM_BASE_URL", llm.uri()),
        ("EMAIL_DELIVERY", "auto".to_owned()),
        (
            "SMTP_URL",
            format!("smtp://127.0.0.1:{}?tls=off", smtp.port),
        ),
        ("EMAIL_FROM", "Shop <hello@shop.example>".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        // The request's own line ("request answered") is a debug one.
        ("RUST_LOG", "info,api::http::request=debug".to_owned()),
    ];
    let server = Server::start(&url, &env, log.clone());
    let user = server
        .gql(
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({ "i": { "name": "Dorothy Vaughan", "email": "dorothy@example.com" } }),
        )
        .await["createUser"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // One order, long ago: the client is at risk at once. The caller sends its own trace.
    let placed_at = (chrono::Utc::now() - chrono::Duration::days(400)).to_rfc3339();
    let response = reqwest::Client::new()
        .post(format!("{}/graphql", server.address))
        .bearer_auth(OPERATOR)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({
            "query": "mutation($u: ID!, $at: DateTime) { placeOrder(userId: $u, input: { orderId: \"o-1\", amount: \"20\", placedAt: $at }) { atRisk } }",
            "variables": { "u": user, "at": placed_at },
        }))
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["placeOrder"]["atRisk"], true, "{body}");
    wait_until("the email sent", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from emails where status = 'SENT'")
            .fetch_one(&pool)
            .await
            .unwrap()
            == 1
    })
    .await;

    // Every span of the trace reaches the collector.
    let wanted = [
        "POST /graphql",
        "place_order",
        "process manager decision",
        "email job",
        "llm request",
        "record_email",
        "email send",
        "smtp send",
        "record_email_sent",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let spans = received.lock().unwrap();
            let names: BTreeSet<&str> = spans
                .iter()
                .filter(|s| s.trace_id == TRACE_ID)
                .map(|s| s.name.as_str())
                .collect();
            wanted.iter().all(|w| names.contains(w))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    draining.abort();
    let spans = std::mem::take(&mut *received.lock().unwrap());
    let trace: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    eprintln!(
        "{} spans received: {:?}",
        spans.len(),
        spans
            .iter()
            .map(|s| (s.name.as_str(), &s.trace_id[..6]))
            .take(30)
            .collect::<Vec<_>>()
    );
    let names: BTreeSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    for name in wanted {
        assert!(
            names.contains(name),
            "no {name:?} span in the trace: {names:?}"
        );
    }
    // The request continues the caller's span; each step hangs under the one before it.
    let by_name = |name: &str| *trace.iter().find(|s| s.name == name).unwrap();
    let request = by_name("POST /graphql");
    assert_eq!(request.parent_span_id, CALLER_SPAN);
    assert_eq!(request.kind, "SPAN_KIND_SERVER");
    // Whether the span `id` has `ancestor` above it in the trace.
    let descends = |id: &str, ancestor: &str| {
        let mut at = trace.iter().find(|s| s.span_id == id);
        while let Some(span) = at {
            if span.parent_span_id == ancestor {
                return true;
            }
            at = trace.iter().find(|s| s.span_id == span.parent_span_id);
        }
        false
    };
    let under = |name: &str, ancestor: &str| {
        let ancestor = by_name(ancestor).span_id.clone();
        trace
            .iter()
            .any(|s| s.name == name && descends(&s.span_id, &ancestor))
    };
    for (name, ancestor) in [
        ("place_order", "POST /graphql"),
        ("process manager decision", "place_order"),
        ("email job", "process manager decision"),
        ("llm request", "email job"),
        ("record_email", "email job"),
        ("email send", "record_email"),
        ("smtp send", "email send"),
        ("record_email_sent", "email send"),
    ] {
        assert!(under(name, ancestor), "{name} is not under {ancestor}");
    }
    // Nothing of the trace is left over from another one: every span is the test's.
    assert!(spans
        .iter()
        .filter(|s| s.name == "llm request")
        .all(|s| s.trace_id == TRACE_ID));

    // The trace id is in the events' metadata, from the order to the send.
    let metadata: Vec<(String, Value)> = sqlx::query_as(
        "select event_type, metadata from events where aggregate_id = $1 order by sequence",
    )
    .bind(&user)
    .fetch_all(&pool)
    .await
    .unwrap();
    for (event_type, meta) in &metadata {
        if ["OrderPlaced", "EmailGenerated", "EmailSent"].contains(&event_type.as_str()) {
            let traceparent = meta["traceparent"].as_str().unwrap_or_default();
            assert!(
                traceparent.starts_with(&format!("00-{TRACE_ID}-")),
                "{event_type}: {meta}"
            );
        }
    }
    let order = metadata.iter().find(|(t, _)| t == "OrderPlaced").unwrap();
    assert_eq!(order.1["requestId"], request_id.as_str());

    // Each log line of the request carries its request id and trace id.
    drop(server);
    let lines = std::fs::read_to_string(&log).unwrap();
    let of_request: Vec<Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == request_id.as_str()))
        })
        .collect();
    assert!(
        of_request
            .iter()
            .any(|l| l["message"] == "request answered"),
        "no line of the request in the log"
    );
    for line in &of_request {
        let request = line["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "request")
            .unwrap();
        assert_eq!(request["trace_id"], TRACE_ID, "{line}");
    }
}

/// With no endpoint, nothing is exported and one line says tracing is off.
#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn without_an_endpoint_tracing_is_off_in_one_line(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(["migrate", "--database-url", &url])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about: Vec<&str> = stderr
        .lines()
        .filter(|l| l.to_lowercase().contains("opentelemetry") || l.contains("otlp"))
        .collect();
    assert_eq!(about.len(), 1, "{about:#?}");
    assert!(about[0].contains("off"), "{}", about[0]);

    // An unsupported protocol is refused, named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(["migrate", "--database-url", &url])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("OTEL_EXPORTER_OTLP_PROTOCOL"));
}
