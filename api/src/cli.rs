//! The subcommands.

use std::fmt;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::app::{shutdown_signal, App, AppParts};
use crate::config::{Cli, Command, DatabaseConfig, RebuildTarget, ServeConfig};
use crate::graphql::auth::{Principal, Role, TokenStore};
use projections::db;
use projections::views::rebuild::{rebuild, ReadModel};

/// PostgreSQL could not be reached: said in one line, with the URL tried (password hidden)
/// and how to start a server.
#[derive(Debug)]
pub struct DatabaseUnreachable {
    url: String,
    cause: String,
}

impl fmt::Display for DatabaseUnreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach PostgreSQL at {} ({}); start it (e.g. `bash .ci/postgres-up`, or \
             `pg_ctlcluster <version> main start`) or point DATABASE_URL at a running server",
            self.url, self.cause
        )
    }
}

impl std::error::Error for DatabaseUnreachable {}

/// Runs the command line.
///
/// # Errors
/// Whatever the subcommand fails with.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate => {
            prepare_database(&cli.database).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(serve) => run_serve(&cli.database, &cli.secrets, *serve).await,
        Command::Backtest(config) => crate::backtest::run(&config),
        Command::Token { role, name } => {
            anyhow::ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)),
                "--name: letters, digits and -_.@ only"
            );
            let token = crate::graphql::auth::new_token();
            println!("token (give to {name}; it is not stored anywhere): {token}");
            println!(
                "API_TOKENS entry: {role}:{name}:{}",
                crate::graphql::auth::digest_hex(&token)
            );
            Ok(())
        }
        Command::Schema => {
            print!(
                "{}",
                crate::graphql::sdl(&crate::graphql::schema_for_export())
            );
            Ok(())
        }
        Command::Import(config) => {
            let pool = prepare_database(&cli.database).await?;
            let vault = crate::keys::open_vault(&pool, &cli.secrets).await?;
            crate::import::run(pool, vault, config).await
        }
        Command::Rescore(scoring) => {
            let pool = prepare_database(&cli.database).await?;
            let bus = projections::commands::CommandBus::new(
                pool.clone(),
                crate::keys::open_vault(&pool, &cli.secrets).await?,
                scoring.client_services(projections::db::holdout_salt(&pool).await?),
                std::sync::Arc::new(projections::clock::SystemClock),
            );
            let rescored = projections::scheduler::rescore_all(&pool, &bus, 4).await?;
            println!(
                "rescored {rescored} clients with {}",
                scoring.scoring_policy
            );
            Ok(())
        }
        Command::AssignGroups => {
            let pool = prepare_database(&cli.database).await?;
            let bus = projections::commands::CommandBus::new(
                pool.clone(),
                crate::keys::open_vault(&pool, &cli.secrets).await?,
                domain::client::ClientServices::default(),
                std::sync::Arc::new(projections::clock::SystemClock),
            );
            let (legacy, recorded) = projections::commands::groups::backfill(&bus).await?;
            println!(
                "{legacy} clients were created before the holdout; recorded {recorded} as TREATMENT"
            );
            Ok(())
        }
        Command::Rebuild { target } => {
            let pool = prepare_database(&cli.database).await?;
            let vault = crate::keys::open_vault(&pool, &cli.secrets).await?;
            let models: &[ReadModel] = match target {
                RebuildTarget::Users => &[ReadModel::Users],
                RebuildTarget::Emails => &[ReadModel::Emails],
                RebuildTarget::All => &ReadModel::ALL,
            };
            for model in models {
                let report = rebuild(&pool, &vault, *model).await?;
                println!(
                    "rebuilt {}: {} events in {:.2}s ({:.0} events/s)",
                    model.name(),
                    report.events,
                    report.elapsed.as_secs_f64(),
                    report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
                );
            }
            Ok(())
        }
        Command::Keys { action } => {
            let pool = prepare_database(&cli.database).await?;
            crate::keys::run(&pool, &cli.secrets, action).await
        }
        Command::Erasures { action } => {
            let pool = prepare_database(&cli.database).await?;
            crate::keys::erasures(&pool, &cli.secrets, action).await
        }
    }
}

/// Says so when events or snapshots written before encryption still hold personal data in the
/// clear (they read normally; `engagement keys seal` seals them).
async fn warn_of_data_in_the_clear(pool: PgPool) {
    match projections::vault::rotation::in_the_clear(&pool).await {
        Ok(found) if found.events + found.snapshots > 0 => tracing::warn!(
            events = found.events,
            snapshots = found.snapshots,
            "personal data written before encryption is still in the clear: run `engagement keys seal`"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(error = %format!("{error:#}"), "could not look for personal data in the clear"),
    }
}

/// Creates the database if needed, connects and migrates.
///
/// # Errors
/// [`DatabaseUnreachable`] when the server is not there; other failures with context.
pub async fn prepare_database(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let url = &config.database_url;
    // Only a failure to connect at all becomes the one-line "cannot reach" message; a server
    // that answers with an error (bad password, no permission) keeps its own message.
    let unreachable = |e: anyhow::Error| {
        if e.root_cause().downcast_ref::<std::io::Error>().is_some() {
            let cause = e.root_cause().to_string();
            anyhow::Error::new(DatabaseUnreachable {
                url: db::redact_url(url),
                cause,
            })
        } else {
            e
        }
    };
    db::ensure_database(url).await.map_err(unreachable)?;
    let pool = db::connect(url, &config.pool_settings())
        .await
        .map_err(unreachable)?;
    db::migrate(&pool).await?;
    Ok(pool)
}

async fn run_serve(
    database: &DatabaseConfig,
    secrets: &crate::config::SecretsConfig,
    config: ServeConfig,
) -> anyhow::Result<()> {
    let master_key = secrets.master_key()?;
    let database = if config.demo {
        DatabaseConfig {
            database_url: crate::demo::database_url(&database.database_url),
            ..database.clone()
        }
    } else {
        database.clone()
    };
    let pool = prepare_database(&database).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr()?;
    if !config.metrics_enabled && config.metrics_listen.is_some() {
        anyhow::bail!(
            "METRICS_LISTEN is set but METRICS_ENABLED is false: nothing would be served"
        );
    }
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("METRICS_LISTEN: cannot listen on {at}: {e}"))?,
        ),
        None => None,
    };
    // Settings are checked before any background work starts: a bad one stops here, named.
    let (mut delivery, sender) = config.delivery.settings(address, &master_key)?;
    let master = projections::vault::MasterKey::new(master_key);
    let vault = projections::vault::Vault::new(&master);
    vault.check(&pool).await?;
    // Links in emails sent before a rotation of the master key keep working.
    delivery.token_key = delivery
        .token_key
        .clone()
        .with_retired(projections::vault::rotation::retired_token_keys(&pool, &master).await?);
    tokio::spawn(warn_of_data_in_the_clear(pool.clone()));
    let mut tokens = TokenStore::parse(&config.api_tokens)?;
    let generated = tokens.is_empty().then(|| {
        let token = crate::graphql::auth::new_token();
        tokens.insert(
            &token,
            Principal {
                role: Role::Admin,
                actor: "admin:startup".into(),
            },
        );
        token
    });
    let cors_origins = config
        .cors_origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            o.parse()
                .map_err(|_| anyhow::anyhow!("CORS_ORIGINS: {o:?} is not a valid origin"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut email = config
        .email
        .settings(config.scoring.email_cooldown_days, delivery, sender)?;
    let demo = config.demo.then(|| {
        let delay = &mut email.process_manager.trigger_delay;
        *delay = (*delay).min(chrono::Duration::seconds(5));
        std::sync::Arc::new(crate::demo::DemoProgress::default())
    });
    let app = App::build(AppParts {
        email,
        tokens,
        cors_origins,
        services: config
            .scoring
            .client_services(projections::db::holdout_salt(&pool).await?),
        rescore: projections::scheduler::RescoreSettings {
            interval: Duration::from_secs(config.rescore_interval_secs),
            ..Default::default()
        },
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        rate_limit: config.rate_limit(),
        response_cache_bytes: config.api_response_cache_mb.saturating_mul(1 << 20),
        order_webhook: crate::http::webhooks::WebhookSecrets::parse(&config.order_webhook_secret),
        email_events_webhook: crate::http::webhooks::WebhookSecrets::parse(
            &config.delivery.email_events_webhook_secret,
        ),
        demo: demo.clone(),
        metrics: match (config.metrics_enabled, &metrics_listener) {
            (false, _) => crate::app::Metrics::Off,
            (true, Some(_)) => crate::app::Metrics::Apart,
            (true, None) => crate::app::Metrics::OnMain,
        },
        vault: std::sync::Arc::new(vault),
        erasure_ledger: Some(secrets.ledger()),
        replicas: std::sync::Arc::new(crate::replicas::Replicas::new(
            projections::db::connect_lazy(&database.database_url, &database.query_pool_settings())?,
            &config.database_read_url,
            &database.pool_settings(),
            crate::replicas::ReadSettings {
                max_lag: Duration::from_millis(config.database_read_max_lag_ms),
                wait: Duration::from_millis(config.database_read_wait_ms),
            },
        )?),
        ..AppParts::new(pool, &master)
    });
    if let Some(listener) = metrics_listener {
        let at = listener.local_addr()?;
        tracing::info!(%at, "serving /metrics without a token");
        let router = crate::http::metrics::open_router(app.state().pool.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        });
    }
    if let Some(progress) = demo {
        tracing::info!(database = %db::redact_url(&database.database_url), "demo: filling its own database in the background");
        tokio::spawn(crate::demo::fill(
            app.state().commands.clone(),
            app.state().pool.clone(),
            progress,
        ));
    }
    tracing::info!(%address, policy = %config.scoring.scoring_policy, "serving");
    let mut banner = format!("engagement is listening on http://{address}/\n");
    if let Some(token) = generated {
        // Like Jupyter: no token configured, so one was made for this run. The link carries it.
        banner.push_str(&format!(
            "no API_TOKENS configured; an admin token was generated for this run. Open the dashboard:\n    \
             http://{address}/?token={token}\nor the GraphQL playground:\n    \
             http://{address}/graphql?token={token}\n"
        ));
    }
    // One write, and a closed stdout (`serve | head -1`, a supervisor that stopped reading) is
    // not a reason to stop serving: `println!` would panic on it.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    app.run(listener, shutdown_signal()).await
}
