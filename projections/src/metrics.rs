//! What the log's side of the service measures: names, help texts, and the label values known
//! in advance (each exported at zero from the start, so dashboards and alerts see no gaps).
//!
//! Recording goes through the `metrics` facade; with no recorder installed (tests, commands
//! other than `serve`) every call costs next to nothing and records nothing. The `api` crate
//! installs the Prometheus recorder and renders `GET /metrics`.
//!
//! Labels carry only names from closed sets (commands, event types, outcomes, consumers,
//! statuses): never a client id, an address, a token or free text.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};

// The names of the gauges `crate::observe` reads from the database live here too, so that the
// catalogue is one list.

/// Commands run, by `command` and `outcome` (see [`CommandOutcome`]).
pub const COMMANDS_TOTAL: &str = "engagement_commands_total";
/// Time from a command's start to its commit (or refusal), retries included, by `command`.
pub const COMMAND_DURATION: &str = "engagement_command_duration_seconds";
/// Attempts of a command lost to a concurrent writer and retried, by `command`.
pub const COMMAND_CONFLICT_RETRIES: &str = "engagement_command_conflict_retries_total";
/// Events appended to the log, by event `type`.
pub const EVENTS_APPENDED: &str = "engagement_events_appended_total";
/// Events in the log a consumer has not applied yet, by `consumer` (read at scrape time).
pub const CONSUMER_LAG_EVENTS: &str = "engagement_consumer_lag_events";
/// Seconds a consumer with events waiting has not moved, by `consumer` (0 when caught up).
pub const CONSUMER_LAG_SECONDS: &str = "engagement_consumer_lag_seconds";
/// Email jobs by `status` (read at scrape time).
pub const EMAIL_JOBS: &str = "engagement_email_jobs";
/// Send jobs waiting for the mail server (pending or running; read at scrape time).
pub const SEND_QUEUE: &str = "engagement_email_send_queue";
/// Requests to the LLM, by `outcome` (see [`LlmOutcome`]).
pub const LLM_REQUESTS: &str = "engagement_llm_requests_total";
/// Time an LLM request took, whatever its outcome.
pub const LLM_DURATION: &str = "engagement_llm_request_duration_seconds";
/// Tokens the LLM reported, by `kind` (`prompt`, `completion`).
pub const LLM_TOKENS: &str = "engagement_llm_tokens_total";
/// 1 while the circuit toward the LLM is open or probing, 0 while it is closed.
pub const LLM_CIRCUIT_OPEN: &str = "engagement_llm_circuit_open";
/// Emails the mail server accepted.
pub const EMAILS_SENT: &str = "engagement_emails_sent_total";
/// Send attempts the mail server refused or that could not reach it, by `kind`
/// (`temporary`: retried; `permanent`: the email is `FAILED`).
pub const EMAIL_SEND_FAILURES: &str = "engagement_email_send_failures_total";

/// Every metric of this crate, with its unit and help.
const CATALOGUE: &[(&str, Kind, Unit, &str)] = &[
    (
        COMMANDS_TOTAL,
        Kind::Counter,
        Unit::Count,
        "Commands run, by command and outcome.",
    ),
    (
        COMMAND_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Time a command took from start to commit or refusal, retries included.",
    ),
    (
        COMMAND_CONFLICT_RETRIES,
        Kind::Counter,
        Unit::Count,
        "Command attempts lost to a concurrent writer and retried.",
    ),
    (
        EVENTS_APPENDED,
        Kind::Counter,
        Unit::Count,
        "Events appended to the log, by type.",
    ),
    (
        CONSUMER_LAG_EVENTS,
        Kind::Gauge,
        Unit::Count,
        "Events in the log the consumer has not applied yet.",
    ),
    (
        CONSUMER_LAG_SECONDS,
        Kind::Gauge,
        Unit::Seconds,
        "Seconds the consumer has not moved while events wait for it (0 when caught up).",
    ),
    (
        EMAIL_JOBS,
        Kind::Gauge,
        Unit::Count,
        "Email jobs by status.",
    ),
    (
        SEND_QUEUE,
        Kind::Gauge,
        Unit::Count,
        "Emails waiting to be handed to the mail server.",
    ),
    (
        LLM_REQUESTS,
        Kind::Counter,
        Unit::Count,
        "Requests to the LLM, by outcome.",
    ),
    (
        LLM_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Time an LLM request took.",
    ),
    (
        LLM_TOKENS,
        Kind::Counter,
        Unit::Count,
        "Tokens the LLM reported using, by kind.",
    ),
    (
        LLM_CIRCUIT_OPEN,
        Kind::Gauge,
        Unit::Count,
        "1 while the circuit toward the LLM is open or probing, else 0.",
    ),
    (
        EMAILS_SENT,
        Kind::Counter,
        Unit::Count,
        "Emails the mail server accepted.",
    ),
    (
        EMAIL_SEND_FAILURES,
        Kind::Counter,
        Unit::Count,
        "Send attempts that failed, by kind (temporary: retried; permanent: FAILED).",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Committed (or found already in place).
    Ok,
    /// The client's rules refused it.
    Rejected,
    /// Concurrent writers kept winning.
    Conflict,
    /// The database could not be reached.
    Unavailable,
    /// Anything else.
    Error,
}

impl CommandOutcome {
    const ALL: [Self; 5] = [
        Self::Ok,
        Self::Rejected,
        Self::Conflict,
        Self::Unavailable,
        Self::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }
}

/// How an LLM request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmOutcome {
    /// A usable draft came back.
    Ok,
    /// No answer in time.
    Timeout,
    /// The connection failed or broke.
    NetworkError,
    /// 429: the provider asked us to slow down.
    RateLimited,
    /// 5xx (or 408).
    ServerError,
    /// Any other 4xx: our request or our key is refused.
    ClientError,
    /// 200 with a reply we cannot use.
    InvalidReply,
}

impl LlmOutcome {
    const ALL: [Self; 7] = [
        Self::Ok,
        Self::Timeout,
        Self::NetworkError,
        Self::RateLimited,
        Self::ServerError,
        Self::ClientError,
        Self::InvalidReply,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Timeout => "timeout",
            Self::NetworkError => "network_error",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::ClientError => "client_error",
            Self::InvalidReply => "invalid_reply",
        }
    }
}

/// Every command name (labels of the command metrics), as `ClientCommand::name` gives them.
/// A name missing here is still recorded; it is only not exported at zero before its first use.
pub const COMMANDS: &[&str] = &[
    "create_user",
    "update_user",
    "place_order",
    "place_orders",
    "cancel_order",
    "set_engagement_score",
    "rescore",
    "record_email",
    "approve_email",
    "reject_email",
    "cancel_email",
    "record_email_sent",
    "record_email_failed",
    "record_email_bounced",
    "record_email_complaint",
    "one_click_unsubscribe",
    "suppress_address",
    "assign_group",
    "unsubscribe",
    "delete_user",
    "erase_user",
];

/// The service's consumers of the log (labels of the lag gauges; a rebuild's temporary
/// consumer is not one of them).
pub const CONSUMERS: &[&str] = &["users", "emails", "process-manager", "trend"];

/// Every event type (labels of [`EVENTS_APPENDED`]).
pub const EVENT_TYPES: &[&str] = &[
    "UserCreated",
    "UserUpdated",
    "OrderPlaced",
    "OrderCancelled",
    "UserScored",
    "EmailGenerated",
    "EmailApproved",
    "EmailRejected",
    "EmailCancelled",
    "EmailSent",
    "EmailFailed",
    "EmailBounced",
    "EmailComplained",
    "AddressSuppressed",
    "GroupAssigned",
    "UserUnsubscribed",
    "UserDeleted",
    "UserErased",
];

/// Describes every metric of this crate and sets each known series it records to zero (the
/// gauges read from the database are [`crate::observe`]'s). Call once, after a recorder is
/// installed.
pub fn register() {
    for (name, kind, unit, help) in CATALOGUE {
        match kind {
            Kind::Counter => describe_counter!(*name, *unit, *help),
            Kind::Gauge => describe_gauge!(*name, *unit, *help),
            Kind::Histogram => describe_histogram!(*name, *unit, *help),
        }
    }
    for command in COMMANDS {
        for outcome in CommandOutcome::ALL {
            counter!(COMMANDS_TOTAL, "command" => *command, "outcome" => outcome.as_str())
                .absolute(0);
        }
        counter!(COMMAND_CONFLICT_RETRIES, "command" => *command).absolute(0);
        let _ = metrics::histogram!(COMMAND_DURATION, "command" => *command);
    }
    for event_type in EVENT_TYPES {
        counter!(EVENTS_APPENDED, "type" => *event_type).absolute(0);
    }
    for outcome in LlmOutcome::ALL {
        counter!(LLM_REQUESTS, "outcome" => outcome.as_str()).absolute(0);
    }
    let _ = metrics::histogram!(LLM_DURATION);
    for kind in ["prompt", "completion"] {
        counter!(LLM_TOKENS, "kind" => kind).absolute(0);
    }
    gauge!(LLM_CIRCUIT_OPEN).set(0.0);
    counter!(EMAILS_SENT).absolute(0);
    for kind in ["temporary", "permanent"] {
        counter!(EMAIL_SEND_FAILURES, "kind" => kind).absolute(0);
    }
}

/// Records a finished command.
pub fn command_finished(command: &'static str, outcome: CommandOutcome, took: std::time::Duration) {
    counter!(COMMANDS_TOTAL, "command" => command, "outcome" => outcome.as_str()).increment(1);
    metrics::histogram!(COMMAND_DURATION, "command" => command).record(took.as_secs_f64());
}

/// Records a command attempt lost to a concurrent writer.
pub fn command_retried(command: &'static str) {
    counter!(COMMAND_CONFLICT_RETRIES, "command" => command).increment(1);
}

/// Records events that were committed to the log, by their types.
pub fn events_appended<'a>(types: impl IntoIterator<Item = &'a str>) {
    for event_type in types {
        // Only known types become labels; anything else would be a bug, counted apart.
        let label = EVENT_TYPES
            .iter()
            .find(|known| **known == event_type)
            .copied()
            .unwrap_or("other");
        counter!(EVENTS_APPENDED, "type" => label).increment(1);
    }
}

/// Records a finished LLM request.
pub fn llm_request(
    outcome: LlmOutcome,
    took: std::time::Duration,
    usage: Option<&domain::client::TokenUsage>,
) {
    counter!(LLM_REQUESTS, "outcome" => outcome.as_str()).increment(1);
    metrics::histogram!(LLM_DURATION).record(took.as_secs_f64());
    if let Some(usage) = usage {
        for (kind, tokens) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            if let Some(tokens) = tokens {
                counter!(LLM_TOKENS, "kind" => kind).increment(u64::from(tokens));
            }
        }
    }
}

/// Records whether the circuit toward the LLM is open.
pub fn llm_circuit(open: bool) {
    gauge!(LLM_CIRCUIT_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// Records an email the mail server accepted.
pub fn email_sent() {
    counter!(EMAILS_SENT).increment(1);
}

/// Records a failed send attempt.
pub fn email_send_failed(permanent: bool) {
    let kind = if permanent { "permanent" } else { "temporary" };
    counter!(EMAIL_SEND_FAILURES, "kind" => kind).increment(1);
}
