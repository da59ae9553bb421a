//! Connecting to PostgreSQL: pools with safe session settings, database creation, migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::Connection as _;
use sqlx::{PgPool, Postgres};

/// Every table, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// How long a session may sit idle inside a transaction before the server ends it: an
    /// open transaction holds every log reader back (they wait for it), so none may linger.
    pub idle_in_transaction_timeout: Duration,
    /// How long to wait for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 20,
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(15),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The URL with any password replaced by `***`, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_once('/').map_or((rest, ""), |(a, t)| (a, t));
    let redacted_authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{redacted_authority}");
    if !tail.is_empty() || rest.contains('/') {
        out.push('/');
        // A password may also come as a query parameter.
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|kv| match kv.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => kv.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        out.push_str(&tail);
    }
    out
}

/// Connections idle at least this long are pinged before they are handed out.
const RECHECK_IDLE_AFTER: Duration = Duration::from_secs(5);

/// True when `url` names a server on this machine (a loopback address, `localhost` or a Unix
/// socket) and says nothing about TLS, nor does `PGSSLMODE` (`env_sslmode`).
fn on_loopback_without_sslmode(url: &str, options: &PgConnectOptions, env_sslmode: bool) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let explicit = query.split('&').any(|kv| {
        let key = kv.split('=').next().unwrap_or("");
        key.eq_ignore_ascii_case("sslmode") || key.eq_ignore_ascii_case("ssl-mode")
    });
    if explicit || env_sslmode {
        return false;
    }
    let host = options.get_host();
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Connects a pool to `url` with the session settings every connection of ours needs.
///
/// # Errors
/// The URL does not parse or the server cannot be reached.
pub async fn connect(url: &str, settings: &PoolSettings) -> anyhow::Result<PgPool> {
    let (pool, options) = pool_options(url, settings)?;
    pool.connect_with(options)
        .await
        .with_context(|| format!("could not connect to PostgreSQL at {}", redact_url(url)))
}

/// A pool to `url` like [`connect`]'s that connects only when first used (a read replica
/// that is down at start-up is not a reason not to start).
///
/// # Errors
/// The URL does not parse.
pub fn connect_lazy(url: &str, settings: &PoolSettings) -> anyhow::Result<PgPool> {
    let (pool, options) = pool_options(url, settings)?;
    Ok(pool.connect_lazy_with(options))
}

fn pool_options(
    url: &str,
    settings: &PoolSettings,
) -> anyhow::Result<(PgPoolOptions, PgConnectOptions)> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {}", redact_url(url)))?
        .application_name("engagement")
        .options([
            (
                "statement_timeout",
                settings.statement_timeout.as_millis().to_string(),
            ),
            (
                "idle_in_transaction_session_timeout",
                settings.idle_in_transaction_timeout.as_millis().to_string(),
            ),
            // JIT compilation pays off for long analytic queries; ours are short, and where
            // the planner over-estimates rows (counting a consumer's lag, up to a million
            // events) it spent 80 ms compiling a 1 ms query, at every /metrics scrape.
            ("jit", "off".to_owned()),
        ]);
    let env_sslmode = std::env::var_os("PGSSLMODE").is_some();
    let options = if on_loopback_without_sslmode(url, &options, env_sslmode) {
        // TLS to a server on this machine protects nothing, and under load it cost about a
        // sixth of the service's CPU. An explicit `sslmode` is always honoured.
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    };
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // sqlx pings every connection it hands out: a round trip per acquire. A connection
        // in steady use is known to work; one that sat idle (the server may have restarted or
        // dropped it) is still checked before use.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= RECHECK_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
    Ok((pool, options))
}

/// Creates the database named in `url` if it does not exist yet.
///
/// # Errors
/// The server cannot be reached or refuses to create it.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let exists = Postgres::database_exists(url)
        .await
        .with_context(|| format!("could not connect to PostgreSQL at {}", redact_url(url)))?;
    if !exists {
        Postgres::create_database(url)
            .await
            .with_context(|| format!("could not create the database {}", redact_url(url)))?;
        tracing::info!(url = %redact_url(url), "created database");
    }
    Ok(())
}

/// Applies every migration not yet applied.
///
/// # Errors
/// A migration fails, or the database has migrations this build does not know.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")
}

/// The holdout's salt, generated once per database by its migration.
///
/// # Errors
/// The database failed.
pub async fn holdout_salt<'e>(executor: impl sqlx::PgExecutor<'e>) -> anyhow::Result<uuid::Uuid> {
    use anyhow::Context as _;
    sqlx::query_scalar("select salt from holdout_salt")
        .fetch_one(executor)
        .await
        .context("reading the holdout salt")
}

/// Asks the database to answer (one round trip, no table).
///
/// # Errors
/// The database cannot be reached.
pub async fn ping<'e>(executor: impl sqlx::PgExecutor<'e>) -> Result<(), sqlx::Error> {
    sqlx::query("select 1").execute(executor).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::{on_loopback_without_sslmode, redact_url, PgConnectOptions};
    use std::str::FromStr as _;

    #[test]
    fn tls_is_skipped_only_for_this_machine_and_only_when_unasked() {
        let check = |url: &str| {
            on_loopback_without_sslmode(
                url,
                &PgConnectOptions::from_str(url).expect("a URL"),
                false,
            )
        };
        assert!(check("postgres://postgres@127.0.0.1:5432/engagement"));
        assert!(check("postgres://postgres@localhost/engagement"));
        assert!(check("postgres://postgres@[::1]:5432/engagement"));
        assert!(!check(
            "postgres://postgres@127.0.0.1/engagement?sslmode=require"
        ));
        assert!(!check("postgres://postgres@db.internal:5432/engagement"));
        assert!(!check("postgres://postgres@10.0.0.5:5432/engagement"));
        let local = "postgres://postgres@127.0.0.1/engagement";
        let options = PgConnectOptions::from_str(local).expect("a URL");
        assert!(
            !on_loopback_without_sslmode(local, &options, true),
            "PGSSLMODE is honoured too"
        );
    }

    #[test]
    fn passwords_never_reach_a_log_line() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/engagement"),
            "postgres://app:***@db:5432/engagement"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=a&password=s3cret"),
            "postgres://h/db?user=a&password=***"
        );
        assert!(!redact_url("postgres://a:p@ss@h/db").contains("p@ss"));
    }
}
