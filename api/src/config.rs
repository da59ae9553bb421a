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
    /// The master key, found the same way by every command.
    #[command(flatten)]
    pub secrets: SecretsConfig,
    /// How logs are written to standard error: `text` (colour only on a terminal) or `json`
    /// (one object per line).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed, apply migrations and serve HTTP until SIGINT/SIGTERM.
    Serve(Box<ServeConfig>),
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
    /// One-off, after upgrading to the holdout: record every client created before it as
    /// TREATMENT (they were all eligible for emails), so that no later setting can move them.
    /// Says how many it recorded; running it again records nothing.
    AssignGroups,
    /// The master key and the clients' data keys (personal data is sealed with a key per
    /// client, wrapped under the master key).
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// The erasure ledger: who was erased, kept beside the key file so that erasures can be
    /// applied again after restoring a backup taken before them.
    Erasures {
        /// What to do.
        #[command(subcommand)]
        action: ErasuresCommand,
    },
}

/// `engagement keys`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// The master key's fingerprint, how many clients have a key, how much is still in the
    /// clear.
    Status,
    /// One-off, after upgrading to encryption: seal every personal field that events and
    /// snapshots written before it still hold in the clear. Says what it changed; running it
    /// again changes nothing.
    Seal,
    /// Make a new master key and rewrap every client's key under it, in one transaction.
    /// The new key is written to --new-key-file first (default: the key file with `.new`
    /// appended), then replaces MASTER_KEY_FILE when the key came from that file.
    Rotate {
        /// Where to write the new master key.
        #[arg(long)]
        new_key_file: Option<std::path::PathBuf>,
    },
}

/// `engagement erasures`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ErasuresCommand {
    /// Write the ledger again from the log (every UserErased event).
    Export {
        /// Where (default: the ledger beside the key file).
        file: Option<std::path::PathBuf>,
    },
    /// After restoring a backup: erase again every client the ledger lists who is not
    /// erased in this database. Says what it did; running it again does nothing.
    Apply {
        /// The ledger (default: the one beside the key file).
        file: Option<std::path::PathBuf>,
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
/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colour only when standard error is a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

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
    /// Most connections the API's queries use on the primary, apart from the pool (0: twice
    /// this machine's cores, at least 4).
    #[arg(
        long,
        env = "DATABASE_QUERY_CONNECTIONS",
        default_value_t = 0,
        global = true
    )]
    pub database_query_connections: u32,
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

    /// Settings of the pool the API's queries use on the primary: as [`Self::pool_settings`],
    /// but only as many connections as the machine can keep busy. Measured on 2 cores, a page
    /// of clients at 16 connections: 4 connections served 1,460-1,760 pages/s with p99 15-19
    /// ms, the 20 of the shared pool 1,230-1,270 with p99 29-31 ms: more backends than cores
    /// only take turns on them (and the server's threads with them), and each waiting request
    /// waits longer.
    pub fn query_pool_settings(&self) -> projections::db::PoolSettings {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let max_connections = match self.database_query_connections {
            0 => u32::try_from(cores * 2).unwrap_or(u32::MAX).max(4),
            n => n,
        };
        projections::db::PoolSettings {
            max_connections,
            ..self.pool_settings()
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
    /// Percent of new clients held out of emails, to measure what emailing does (0: none; at
    /// most 50). Decided once per client, at creation.
    #[arg(long, env = "HOLDOUT_PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=50))]
    pub holdout_percent: u8,
}

impl ScoringConfig {
    /// The aggregate's services as configured, assigning new clients with the database's
    /// holdout `salt`.
    pub fn client_services(&self, salt: uuid::Uuid) -> ClientServices {
        ClientServices {
            holdout: domain::client::Holdout {
                salt,
                percent: self.holdout_percent,
            },
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
    /// Serve `GET /metrics` on this address of its own, without a token (for a private
    /// network); the main listener then has no `/metrics`. Unset: on the main listener, with a
    /// bearer token of any role.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Record metrics and serve `GET /metrics` (false: nothing is recorded, for measuring what
    /// they cost).
    #[arg(long, env = "METRICS_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_enabled: bool,
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
    /// PostgreSQL streaming replicas (hot standbys of DATABASE_URL) that queries are read
    /// from, comma-separated; writes and the log's consumers stay on the primary. Empty: none.
    #[arg(
        long,
        env = "DATABASE_READ_URL",
        default_value = "",
        hide_env_values = true
    )]
    pub database_read_url: String,
    /// A replica further behind the primary than this many milliseconds gets no queries.
    #[arg(long, env = "DATABASE_READ_MAX_LAG_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_read_max_lag_ms: u64,
    /// How long a query waits for a replica to replay the writes it must see before it runs
    /// on the primary instead, in milliseconds.
    #[arg(long, env = "DATABASE_READ_WAIT_MS", default_value_t = 200)]
    pub database_read_wait_ms: u64,
    /// Megabytes of answers to read-model queries kept until something they read changes (0: off).
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
    /// Email delivery.
    #[command(flatten)]
    pub delivery: DeliveryConfig,
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
        delivery: projections::engagement::delivery::DeliverySettings,
        sender: Option<projections::runtime::SenderParts>,
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
            delivery,
            sender,
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

/// The master key (`MASTER_KEY` or `MASTER_KEY_FILE`): every subcommand finds it the same way.
#[derive(Clone, Args)]
pub struct SecretsConfig {
    /// The master key, base64 of 32 bytes. It wraps every client's data key and derives the
    /// unsubscribe-token key. Takes precedence over MASTER_KEY_FILE.
    #[arg(long, env = "MASTER_KEY", hide_env_values = true, global = true)]
    pub master_key: Option<String>,
    /// A file holding the master key (base64). Created with mode 0600 at first start when
    /// neither is set, with a warning to back it up apart from the database.
    #[arg(
        long,
        env = "MASTER_KEY_FILE",
        default_value = "engagement.key",
        global = true
    )]
    pub master_key_file: std::path::PathBuf,
    /// The erasure ledger (JSON lines, one per erasure). Default: beside MASTER_KEY_FILE,
    /// `engagement.erasures` for `engagement.key`.
    #[arg(long, env = "ERASURE_LEDGER_FILE", global = true)]
    pub erasure_ledger_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsConfig")
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "[redacted]"),
            )
            .field("master_key_file", &self.master_key_file)
            .field("erasure_ledger_file", &self.erasure_ledger_file)
            .finish()
    }
}

fn decode_key(text: &str, source: &str) -> anyhow::Result<[u8; 32]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| anyhow::anyhow!("{source} is not base64"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        anyhow::anyhow!(
            "{source} must be base64 of 32 bytes, not of {}",
            bytes.len()
        )
    })
}

impl SecretsConfig {
    /// The erasure ledger.
    pub fn ledger(&self) -> projections::vault::erasure::Ledger {
        match &self.erasure_ledger_file {
            Some(path) => projections::vault::erasure::Ledger::new(path),
            None => projections::vault::erasure::Ledger::beside(&self.master_key_file),
        }
    }

    /// Whether the master key comes from `MASTER_KEY` rather than the file.
    pub fn key_from_environment(&self) -> bool {
        self.master_key
            .as_deref()
            .is_some_and(|k| !k.trim().is_empty())
    }

    /// The master key: `MASTER_KEY`, else the file, else a new key written to the file.
    ///
    /// # Errors
    /// The key is malformed, or the file cannot be read or created (each names the setting).
    pub fn master_key(&self) -> anyhow::Result<[u8; 32]> {
        use anyhow::Context as _;
        use base64::Engine as _;
        if let Some(key) = self.master_key.as_deref().filter(|k| !k.trim().is_empty()) {
            return decode_key(key, "MASTER_KEY");
        }
        let path = &self.master_key_file;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    if let Ok(meta) = std::fs::metadata(path) {
                        if meta.permissions().mode() & 0o077 != 0 {
                            tracing::warn!(file = %path.display(), "the master key file is readable by others: chmod 600 it");
                        }
                    }
                }
                decode_key(&text, &format!("MASTER_KEY_FILE ({})", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use rand::RngCore as _;
                use std::io::Write as _;
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                // Written whole to a file of our own, then linked into place: of processes
                // starting at once, exactly one key wins, and nobody reads a half-written file.
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                let mut file = tempfile::NamedTempFile::new_in(dir)
                    .with_context(|| format!("creating MASTER_KEY_FILE {}", path.display()))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    file.as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("creating MASTER_KEY_FILE {}", path.display()))?;
                }
                writeln!(
                    file,
                    "{}",
                    base64::engine::general_purpose::STANDARD.encode(key)
                )
                .and_then(|()| file.as_file().sync_all())
                .with_context(|| format!("writing MASTER_KEY_FILE {}", path.display()))?;
                match file.persist_noclobber(path) {
                    Ok(_) => {}
                    // Another process created it meanwhile: use theirs.
                    Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                        return self.master_key()
                    }
                    Err(e) => {
                        return Err(e.error).with_context(|| {
                            format!("creating MASTER_KEY_FILE {}", path.display())
                        })
                    }
                }
                tracing::warn!(
                    file = %path.display(),
                    "generated a new master key: back this file up apart from the database; without it, every client's name, address and emails are unreadable and unsubscribe links stop working"
                );
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("reading MASTER_KEY_FILE {}", path.display())),
        }
    }
}

/// How written emails leave.
#[derive(Clone, Args)]
pub struct DeliveryConfig {
    /// `off` (written emails become WOULD_SEND), `review` (they wait for approveEmail) or
    /// `auto` (sent as soon as written). Default: `off` without SMTP_URL, `review` with one.
    #[arg(long, env = "EMAIL_DELIVERY", value_parser = ["off", "review", "auto"])]
    pub email_delivery: Option<String>,
    /// The mail server: `smtps://user:pass@host:465` (implicit TLS), `smtp://user:pass@host:587`
    /// (STARTTLS required), `smtp://host:port?tls=off` (plain, a local relay).
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender: `Shop <hello@shop.example>`.
    #[arg(long, env = "EMAIL_FROM")]
    pub email_from: Option<String>,
    /// Where unsubscribe links point (https in production). Default: http://LISTEN_ADDR.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Messages per second, across all instances.
    #[arg(long, env = "SMTP_MAX_PER_SECOND", default_value_t = 10.0)]
    pub smtp_max_per_second: f64,
    /// Messages in flight at once (and pooled connections).
    #[arg(long, env = "SMTP_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub smtp_concurrency: u16,
    /// How long one SMTP exchange may take.
    #[arg(long, env = "SMTP_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub smtp_timeout_secs: u64,
    /// A `mailto:` address for List-Unsubscribe, besides the one-click URL.
    #[arg(long, env = "UNSUBSCRIBE_MAILTO")]
    pub unsubscribe_mailto: Option<String>,
    /// DKIM selector (with DKIM_DOMAIN and DKIM_PRIVATE_KEY_FILE: sign every message).
    #[arg(long, env = "DKIM_SELECTOR")]
    pub dkim_selector: Option<String>,
    /// DKIM signing domain.
    #[arg(long, env = "DKIM_DOMAIN")]
    pub dkim_domain: Option<String>,
    /// A PKCS#1 PEM RSA private key.
    #[arg(long, env = "DKIM_PRIVATE_KEY_FILE")]
    pub dkim_private_key_file: Option<std::path::PathBuf>,
    /// Signs every email.
    #[arg(long, env = "BRAND_NAME", default_value = "Our stylists")]
    pub brand_name: String,
    /// Where the call to action points.
    #[arg(long, env = "SHOP_URL", default_value = projections::engagement::writer::DEFAULT_SHOP_URL)]
    pub shop_url: String,
    /// The sender's postal address, in every email's footer (CAN-SPAM).
    #[arg(long, env = "SENDER_POSTAL_ADDRESS")]
    pub sender_postal_address: Option<String>,
    /// Secrets of POST /webhooks/email-events, comma-separated (unset: off).
    #[arg(
        long,
        env = "EMAIL_EVENTS_WEBHOOK_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub email_events_webhook_secret: String,
}

impl std::fmt::Debug for DeliveryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryConfig")
            .field("email_delivery", &self.email_delivery)
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "[redacted]"))
            .field("email_from", &self.email_from)
            .field("public_base_url", &self.public_base_url)
            .finish_non_exhaustive()
    }
}

fn web_url(raw: &str, setting: &str) -> anyhow::Result<url::Url> {
    let url =
        url::Url::parse(raw.trim()).map_err(|e| anyhow::anyhow!("{setting} is not a URL: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some(),
        "{setting} must be an http(s) URL with a host"
    );
    Ok(url)
}

/// What [`DeliveryConfig::settings`] gives: the delivery in force and, when it sends, the
/// mail server's client.
pub type Delivery = (
    projections::engagement::delivery::DeliverySettings,
    Option<projections::runtime::SenderParts>,
);

impl DeliveryConfig {
    /// How long a claimed send is held: one SMTP exchange, plus the longest wait for a rate
    /// slot (every slot of a full batch ahead of it), plus a margin. A sender that died is
    /// replaced after this, so it is as short as it can safely be.
    fn send_lease(&self) -> Duration {
        let slots = f64::from(self.smtp_concurrency) / self.smtp_max_per_second;
        Duration::from_secs(self.smtp_timeout_secs)
            + Duration::from_secs_f64(slots.clamp(0.0, 3600.0))
            + Duration::from_secs(5)
    }

    /// The delivery in force and, when it sends, the mail server's client.
    ///
    /// # Errors
    /// A setting is missing or malformed (the error names it and never repeats a secret).
    pub fn settings(&self, listen: SocketAddr, master_key: &[u8; 32]) -> anyhow::Result<Delivery> {
        use domain::client::DeliveryMode;
        use projections::engagement::delivery::smtp::{
            DkimSettings, Mailer, MailerSettings, SmtpUrl,
        };
        use projections::engagement::delivery::{DeliverySettings, SenderSettings};
        let smtp_url = self
            .smtp_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let mode = match self.email_delivery.as_deref() {
            Some(mode) => mode.parse::<DeliveryMode>().map_err(anyhow::Error::msg)?,
            None if smtp_url.is_some() => DeliveryMode::Review,
            None => DeliveryMode::Off,
        };
        let public_base_url = match &self.public_base_url {
            Some(raw) => web_url(raw, "PUBLIC_BASE_URL")?,
            None => web_url(&format!("http://{listen}"), "PUBLIC_BASE_URL")?,
        };
        if mode != DeliveryMode::Off && public_base_url.scheme() != "https" {
            tracing::warn!(url = %public_base_url, "PUBLIC_BASE_URL is not https: unsubscribe links in sent emails are not protected in transit (fine for local testing only)");
        }
        let shop = web_url(&self.shop_url, "SHOP_URL")?;
        let brand = self.brand_name.trim();
        anyhow::ensure!(
            !brand.is_empty() && brand.chars().count() <= 100,
            "BRAND_NAME must be 1 to 100 characters"
        );
        let delivery = DeliverySettings {
            mode,
            letterhead: projections::engagement::writer::Letterhead {
                brand: brand.to_owned(),
                shop_url: shop.to_string(),
                postal_address: self
                    .sender_postal_address
                    .as_deref()
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned),
            },
            public_base_url: public_base_url.as_str().trim_end_matches('/').to_owned(),
            token_key: projections::engagement::delivery::unsubscribe::TokenKey::derive(master_key),
        };
        if mode == DeliveryMode::Off {
            return Ok((delivery, None));
        }
        let Some(smtp_url) = smtp_url else {
            anyhow::bail!("EMAIL_DELIVERY={mode} needs SMTP_URL (the mail server)");
        };
        let url: SmtpUrl = smtp_url.parse().map_err(anyhow::Error::msg)?;
        let from = self
            .email_from
            .as_deref()
            .ok_or_else(|| {
                anyhow::anyhow!("EMAIL_DELIVERY={mode} needs EMAIL_FROM (the sender's address)")
            })?
            .parse()
            .map_err(|e| anyhow::anyhow!("EMAIL_FROM is not an address: {e}"))?;
        anyhow::ensure!(
            self.smtp_max_per_second.is_finite() && self.smtp_max_per_second > 0.0,
            "SMTP_MAX_PER_SECOND must be a positive number"
        );
        if let Some(mailto) = &self.unsubscribe_mailto {
            anyhow::ensure!(
                mailto.starts_with("mailto:") && !mailto.contains(['<', '>', ',', '\r', '\n']),
                "UNSUBSCRIBE_MAILTO must be a mailto: URI"
            );
        }
        let dkim = match (
            &self.dkim_selector,
            &self.dkim_domain,
            &self.dkim_private_key_file,
        ) {
            (None, None, None) => None,
            (Some(selector), Some(domain), Some(file)) => Some(DkimSettings {
                selector: selector.clone(),
                domain: domain.clone(),
                private_key_pem: std::fs::read_to_string(file).map_err(|e| {
                    anyhow::anyhow!(
                        "DKIM_PRIVATE_KEY_FILE {} cannot be read: {e}",
                        file.display()
                    )
                })?,
            }),
            _ => anyhow::bail!(
                "DKIM needs all of DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY_FILE"
            ),
        };
        let mailer = Mailer::new(&MailerSettings {
            url,
            from,
            unsubscribe_mailto: self.unsubscribe_mailto.clone(),
            dkim,
            pool_size: u32::from(self.smtp_concurrency),
            timeout: Duration::from_secs(self.smtp_timeout_secs),
        })
        .map_err(anyhow::Error::msg)?;
        Ok((
            delivery,
            Some(projections::runtime::SenderParts {
                mailer: Arc::new(mailer),
                settings: SenderSettings {
                    concurrency: usize::from(self.smtp_concurrency),
                    max_per_second: Some(self.smtp_max_per_second),
                    lease: self.send_lease(),
                    ..SenderSettings::default()
                },
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn queries_get_a_pool_of_their_own_sized_to_the_machine_unless_told() {
        let database = |n: u32| DatabaseConfig {
            database_url: "postgres://localhost/engagement".into(),
            database_max_connections: 20,
            database_query_connections: n,
            database_statement_timeout_secs: 7,
        };
        let sized = database(0).query_pool_settings();
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(sized.max_connections as usize, (2 * cores).max(4));
        assert_eq!(sized.statement_timeout, Duration::from_secs(7));
        assert_eq!(database(3).query_pool_settings().max_connections, 3);
        assert_eq!(database(3).pool_settings().max_connections, 20);
    }

    #[test]
    fn processes_starting_at_once_all_get_the_one_master_key_made() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = SecretsConfig {
            master_key: None,
            master_key_file: dir.path().join("engagement.key"),
            erasure_ledger_file: None,
        };
        let keys: Vec<[u8; 32]> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..16)
                .map(|_| scope.spawn(|| secrets.master_key().unwrap()))
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]));
        assert_eq!(secrets.master_key().unwrap(), keys[0]);
        // One key file, nothing left beside it, readable by its owner only.
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&secrets.master_key_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            secrets.ledger().path(),
            dir.path().join("engagement.erasures")
        );
    }

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
            .settings(
                7,
                projections::engagement::delivery::DeliverySettings::off(),
                None,
            )
            .unwrap();
        assert_eq!(
            settings.process_manager.trigger_delay,
            chrono::Duration::seconds(5)
        );
        assert!(Cli::try_parse_from(["engagement", "serve", "--at-risk-threshold", "40"]).is_err());
    }
}
