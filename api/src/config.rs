//! Configuration: read once at start-up from flags and environment (`--help` lists both).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use domain::client::ClientServices;
use domain::scoring::{policy_by_name, DEFAULT_POLICY, POLICY_NAMES};

/// The client engagement engine.
#[derive(Debug, Parser)]
#[command(name = "engagement", version, about)]
pub struct Cli {
    /// Database settings shared by every command.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed, apply migrations and serve HTTP until SIGINT/SIGTERM.
    Serve(ServeConfig),
    /// Create the database if needed and apply migrations, then exit.
    Migrate,
    /// Rescore every client with the configured policy (after switching `SCORING_POLICY`).
    Rescore(ScoringConfig),
    /// Score purchase histories as of a cut-off and measure the scores against who ordered
    /// again within a horizon (AUC, and at the threshold: share flagged, precision, recall).
    Backtest(BacktestConfig),
    /// Make a new bearer token for a role: prints the token (give it to its holder) and the
    /// `API_TOKENS` entry holding only its SHA-256 digest (put that in the configuration).
    Token {
        /// viewer, operator or admin.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        /// Who holds it (recorded as the actor of their commands: `role:name`).
        #[arg(long)]
        name: String,
    },
    /// Print the GraphQL schema (SDL, sorted) as `schema.graphql` holds it.
    Schema,
    /// Import clients or orders from a CSV file (`-` reads standard input); see the README
    /// for the formats. Running it twice records nothing new. Exit code 0 when every row went
    /// in, 3 when some rows were skipped (each is reported with its line), 1 on a failure.
    Import(ImportConfig),
    /// Rebuild read models from the start of the log into fresh tables and swap them in
    /// (reads keep working meanwhile). Run this after restoring a logical dump.
    Rebuild {
        /// Which read model.
        #[arg(value_enum, default_value_t = RebuildTarget::All)]
        target: RebuildTarget,
    },
}

/// `engagement import`.
#[derive(Debug, Args)]
pub struct ImportConfig {
    /// What the file holds.
    #[arg(value_enum)]
    pub kind: ImportKind,
    /// The CSV file, or `-` for standard input.
    pub file: String,
    /// Chunks written at once (each by its own worker, on its own share of the clients).
    #[arg(long, env = "IMPORT_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Rows per chunk (one transaction).
    #[arg(long, env = "IMPORT_CHUNK_ROWS", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub chunk_rows: u32,
    /// Decide every command as of this moment instead of the clock's (tests and replays).
    #[arg(long, hide = true)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Treat the orders as live activity rather than history: their scores may trigger
    /// emails (by default imported history never does; the client's next score decides).
    #[arg(long)]
    pub live: bool,
    /// Scoring.
    #[command(flatten)]
    pub scoring: ScoringConfig,
}

/// What `engagement import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportKind {
    /// `external_id,name,email,preferred_categories,created_at`
    Clients,
    /// `external_id,order_id,placed_at,amount,categories`
    Orders,
}

/// What `engagement rebuild` rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RebuildTarget {
    /// The users view.
    Users,
    /// The emails view.
    Emails,
    /// Every view.
    All,
}

/// Where the database is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; the database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/engagement",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,
    /// Most connections in the pool.
    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 20,
        global = true
    )]
    pub database_max_connections: u32,
    /// Server-side statement timeout, in seconds.
    #[arg(
        long,
        env = "DATABASE_STATEMENT_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub database_statement_timeout_secs: u64,
}

impl DatabaseConfig {
    /// Pool settings from this configuration.
    pub fn pool_settings(&self) -> projections::db::PoolSettings {
        projections::db::PoolSettings {
            max_connections: self.database_max_connections,
            statement_timeout: Duration::from_secs(self.database_statement_timeout_secs),
            ..projections::db::PoolSettings::default()
        }
    }
}

/// How clients are scored and how often they may be written to.
#[derive(Debug, Clone, Args)]
pub struct ScoringConfig {
    /// Scoring policy for every automatic score.
    #[arg(long, env = "SCORING_POLICY", default_value = DEFAULT_POLICY, value_parser = clap::builder::PossibleValuesParser::new(POLICY_NAMES))]
    pub scoring_policy: String,
    /// Minimum days between two emails to one client.
    #[arg(long, env = "EMAIL_COOLDOWN_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u16).range(0..=365))]
    pub email_cooldown_days: u16,
}

impl ScoringConfig {
    /// The aggregate's services as configured.
    pub fn client_services(&self) -> ClientServices {
        ClientServices {
            // The value parser only admits names from POLICY_NAMES.
            policy: policy_by_name(&self.scoring_policy)
                .unwrap_or_else(|| Arc::new(domain::scoring::CadenceV2)),
            email_cooldown: chrono::Duration::days(i64::from(self.email_cooldown_days)),
        }
    }
}

/// Settings of `engagement serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Scoring and email rules.
    #[command(flatten)]
    pub scoring: ScoringConfig,
    /// Seconds between sweeps for users whose score is due to change as time passes.
    #[arg(long, env = "RESCORE_INTERVAL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub rescore_interval_secs: u64,
    /// Seconds to let in-flight requests finish after a shutdown signal.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Accepted bearer tokens as `role:name:sha256hex` entries, comma-separated (make one with
    /// `engagement token`). Empty: an admin token is generated at start-up and printed in a
    /// ready-to-open link.
    #[arg(long, env = "API_TOKENS", default_value = "", hide_env_values = true)]
    pub api_tokens: String,
    /// Browser origins allowed to call the API (comma-separated); empty: same origin only.
    #[arg(long, env = "CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
    /// Requests a second each token may send, sustained; beyond it requests are refused with
    /// 429 `RATE_LIMITED`. 0: no limit.
    #[arg(long, env = "API_RATE_LIMIT_PER_SEC", default_value_t = 100)]
    pub api_rate_limit_per_sec: u32,
    /// Requests a token may send at once before the per-second rate applies.
    #[arg(long, env = "API_RATE_LIMIT_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub api_rate_limit_burst: u32,
    /// Megabytes of answers to read-model queries kept until the read models change (0: off).
    #[arg(long, env = "API_RESPONSE_CACHE_MB", default_value_t = 64)]
    pub api_response_cache_mb: usize,
    /// Secrets of the signed order webhook (`POST /webhooks/orders`), comma-separated: any
    /// one verifies (rotation). Unset: the webhook is off.
    #[arg(
        long,
        env = "ORDER_WEBHOOK_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub order_webhook_secret: String,
    /// Run a demo: use a database of its own (the configured name with `_demo` appended) and
    /// fill it in the background with a few thousand invented clients and their orders, so
    /// the dashboard shows scores, at-risk clients and written emails within a minute. New
    /// email triggers wait at most 5 s in the demo.
    #[arg(long)]
    pub demo: bool,
    /// Email writing.
    #[command(flatten)]
    pub email: EmailConfig,
}

impl ServeConfig {
    /// The per-token request limit, if any.
    pub fn rate_limit(&self) -> Option<crate::http::rate_limit::RateLimit> {
        (self.api_rate_limit_per_sec > 0).then_some(crate::http::rate_limit::RateLimit {
            per_second: self.api_rate_limit_per_sec,
            burst: self.api_rate_limit_burst,
        })
    }
}

/// How re-engagement emails are written.
#[derive(Clone, Args)]
pub struct EmailConfig {
    /// API key of the OpenAI-compatible LLM provider; without one, the offline template
    /// writes every email.
    #[arg(long, env = "OPENROUTER_API_KEY", hide_env_values = true)]
    pub openrouter_api_key: Option<String>,
    /// Base URL of the chat-completions API.
    #[arg(
        long,
        env = "LLM_BASE_URL",
        default_value = "https://openrouter.ai/api/v1"
    )]
    pub llm_base_url: String,
    /// Model name.
    #[arg(long, env = "LLM_MODEL", default_value = "openai/gpt-4o-mini")]
    pub llm_model: String,
    /// Seconds before an LLM request is abandoned.
    #[arg(long, env = "LLM_TIMEOUT_SECS", default_value_t = 30)]
    pub llm_timeout_secs: u64,
    /// Most LLM requests per minute.
    #[arg(long, env = "LLM_REQUESTS_PER_MINUTE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub llm_requests_per_minute: u32,
    /// Emails written at once.
    #[arg(long, env = "EMAIL_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub email_concurrency: u16,
    /// Attempts before an email job is dead.
    #[arg(long, env = "EMAIL_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=50))]
    pub email_max_attempts: i32,
    /// Write with the template when the LLM has failed for good.
    #[arg(long, env = "EMAIL_FALLBACK_TEMPLATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub email_fallback_template: bool,
    /// Seconds a new at-risk trigger waits before its email is written, so that a client in
    /// the middle of ordering is not emailed (the job is judged again when it is due).
    #[arg(long, env = "EMAIL_TRIGGER_DELAY_SECS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub email_trigger_delay_secs: u32,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field(
                "openrouter_api_key",
                &self.openrouter_api_key.as_ref().map(|_| "[redacted]"),
            )
            .field("llm_base_url", &self.llm_base_url)
            .field("llm_model", &self.llm_model)
            .finish_non_exhaustive()
    }
}

impl EmailConfig {
    /// The email settings, with the writer chosen by whether a key is configured.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn settings(
        &self,
        cooldown_days: u16,
    ) -> anyhow::Result<projections::runtime::EmailSettings> {
        use projections::engagement::workers::WorkerSettings;
        use projections::engagement::writer::openai::{OpenAiSettings, OpenAiWriter, Secret};
        use projections::engagement::writer::ConfiguredWriter;
        let writer = match self
            .openrouter_api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            Some(key) => ConfiguredWriter::Llm(OpenAiWriter::new(OpenAiSettings {
                base_url: self.llm_base_url.clone(),
                model: self.llm_model.clone(),
                api_key: Secret::new(key),
                timeout: std::time::Duration::from_secs(self.llm_timeout_secs),
                requests_per_minute: self.llm_requests_per_minute,
            })?),
            None => ConfiguredWriter::Template(
                projections::engagement::writer::template::TemplateWriter,
            ),
        };
        Ok(projections::runtime::EmailSettings {
            writer,
            workers: WorkerSettings {
                concurrency: usize::from(self.email_concurrency),
                max_attempts: self.email_max_attempts,
                fallback_to_template: self.email_fallback_template,
                ..WorkerSettings::default()
            },
            process_manager: projections::engagement::process_manager::ProcessManagerSettings {
                cooldown: chrono::Duration::days(i64::from(cooldown_days)),
                trigger_delay: chrono::Duration::seconds(i64::from(self.email_trigger_delay_secs)),
            },
        })
    }
}

/// Settings of `engagement backtest`.
#[derive(Debug, Clone, Args)]
pub struct BacktestConfig {
    /// A CSV of `customer_id,date,items,amount` lines (a header line is skipped).
    #[arg(long)]
    pub transactions: std::path::PathBuf,
    /// Facts are built from orders on or before this day (YYYY-MM-DD).
    #[arg(long)]
    pub cutoff: chrono::NaiveDate,
    /// A customer returned if they ordered within this many days after the cut-off.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub horizon: i64,
    /// Only this policy (default: every policy).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(POLICY_NAMES))]
    pub policy: Option<String>,
    /// Write `customer_id,score,band` for every customer (of `--policy`, or the default policy).
    #[arg(long)]
    pub scores_out: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn email(args: &[&str]) -> EmailConfig {
        let mut argv = vec!["engagement", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(serve) => serve.email,
            _ => unreachable!("serve was asked for"),
        }
    }

    #[test]
    fn the_trigger_delay_reaches_the_process_manager_and_no_threshold_is_taken() {
        // Flags, not the environment: the test must not depend on the shell it runs in.
        let settings = email(&["--email-trigger-delay-secs", "5"])
            .settings(7)
            .unwrap();
        assert_eq!(
            settings.process_manager.trigger_delay,
            chrono::Duration::seconds(5)
        );
        assert!(Cli::try_parse_from(["engagement", "serve", "--at-risk-threshold", "40"]).is_err());
    }
}
