//! `engagement keys` and `engagement erasures`: the master key, the clients' data keys and
//! the erasure ledger, from the command line.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use domain::client::{ClientAction, ClientError, Lifecycle};
use projections::commands::{CommandBus, CommandError, CommandMetadata};
use projections::vault::erasure::{self, Ledger};
use projections::vault::{rotation, MasterKey};
use sqlx::PgPool;

use crate::config::{ErasuresCommand, KeysCommand, SecretsConfig};

/// The vault over the master key, checked against the keys in the database: a server started
/// with another master key stops here, saying so, instead of failing on every client.
///
/// # Errors
/// The master key cannot be read, or is not the one the database's keys are wrapped with.
pub async fn open_vault(
    pool: &PgPool,
    secrets: &crate::config::SecretsConfig,
) -> anyhow::Result<std::sync::Arc<projections::vault::Vault>> {
    let master = projections::vault::MasterKey::new(secrets.master_key()?);
    let vault = projections::vault::Vault::new(&master);
    vault.check(pool).await?;
    Ok(std::sync::Arc::new(vault))
}

/// Runs `engagement keys ACTION`.
///
/// # Errors
/// The master key cannot be read, the database failed, or a key does not open.
pub async fn run(
    pool: &PgPool,
    secrets: &SecretsConfig,
    action: KeysCommand,
) -> anyhow::Result<()> {
    match action {
        KeysCommand::Status => {
            let master = MasterKey::new(secrets.master_key()?);
            let keys: Vec<(String, i64)> = sqlx::query_as(
                "select master, count(*) from client_keys group by master order by 1",
            )
            .fetch_all(pool)
            .await
            .context("counting the users' keys")?;
            let clear = rotation::in_the_clear(pool).await?;
            println!("master key fingerprint: {}", master.fingerprint());
            if keys.is_empty() {
                println!("users' data keys: none yet");
            }
            for (under, count) in keys {
                let whose = if under == master.fingerprint() {
                    "this master key"
                } else {
                    "ANOTHER master key"
                };
                println!("users' data keys: {count} wrapped under {under} ({whose})");
            }
            println!(
                "in the clear (written before encryption): {} events, {} snapshots{}",
                clear.events,
                clear.snapshots,
                if clear.events + clear.snapshots > 0 {
                    " (run `engagement keys seal`)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        KeysCommand::Seal => {
            let vault = open_vault(pool, secrets).await?;
            let sealed = rotation::seal_existing(pool, &vault).await?;
            println!(
                "sealed the personal fields of {} events and {} snapshots of {} users{}",
                sealed.sealed.events,
                sealed.sealed.snapshots,
                sealed.clients,
                if sealed.erased > 0 {
                    format!(
                        " ({} of them erased: their new keys were deleted at once)",
                        sealed.erased
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        KeysCommand::Rotate { new_key_file } => rotate(pool, secrets, new_key_file).await,
    }
}

/// Writes `key` to `path` (base64, mode 0600), refusing to overwrite a file.
fn write_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    use base64::Engine as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "creating {} for the new master key (remove a leftover one first)",
            path.display()
        )
    })?;
    writeln!(
        file,
        "{}",
        base64::engine::general_purpose::STANDARD.encode(key.bytes())
    )
    .and_then(|()| file.sync_all())
    .with_context(|| format!("writing {}", path.display()))
}

async fn rotate(
    pool: &PgPool,
    secrets: &SecretsConfig,
    new_key_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let old = MasterKey::new(secrets.master_key()?);
    // The current key must be the one the database's keys are under, or nothing would open.
    open_vault(pool, secrets).await?;
    let new = MasterKey::generate();
    let from_environment = secrets.key_from_environment();
    let target = new_key_file.unwrap_or_else(|| {
        let mut name = secrets.master_key_file.clone().into_os_string();
        name.push(".new");
        PathBuf::from(name)
    });
    // The new key is on disk before any key is wrapped under it: a crash in between loses
    // nothing.
    write_key_file(&target, &new)?;
    let rotated = rotation::rotate(pool, &old, &new).await?;
    println!(
        "rewrapped {} users' data keys under the new master key {} (was {}); kept {} earlier unsubscribe-token keys",
        rotated.client_keys,
        new.fingerprint(),
        old.fingerprint(),
        rotated.token_keys
    );
    if from_environment {
        println!(
            "the new master key is in {}: set MASTER_KEY to its contents for every instance, then delete the file",
            target.display()
        );
    } else if target.with_file_name("") == secrets.master_key_file.with_file_name("") {
        std::fs::rename(&target, &secrets.master_key_file).with_context(|| {
            format!(
                "the database uses the new key in {}; move it over {}",
                target.display(),
                secrets.master_key_file.display()
            )
        })?;
        println!(
            "{} now holds the new master key: back it up apart from the database, and restart every instance",
            secrets.master_key_file.display()
        );
    } else {
        println!(
            "the new master key is in {}: point MASTER_KEY_FILE at it (or move it over {}) for every instance",
            target.display(),
            secrets.master_key_file.display()
        );
    }
    Ok(())
}

/// Brings the views and job tables up to the erasures just recorded (a server would, when it
/// next runs; a restored database should not hold the data until then).
async fn scrub_views(
    pool: &PgPool,
    vault: &std::sync::Arc<projections::vault::Vault>,
    entries: &[erasure::Erasure],
) -> anyhow::Result<()> {
    use projections::log::consumer::{Consumer, ConsumerSettings, LogSignal};
    use projections::views::{emails::EmailsView, users::UsersView};
    let settings = ConsumerSettings::default();
    Consumer::new(
        pool.clone(),
        vault.clone(),
        UsersView::live(),
        settings.clone(),
        LogSignal::new(),
    )
    .catch_up()
    .await
    .context("bringing the users view up to the erasures")?;
    Consumer::new(
        pool.clone(),
        vault.clone(),
        EmailsView::live(),
        settings,
        LogSignal::new(),
    )
    .catch_up()
    .await
    .context("bringing the emails view up to the erasures")?;
    let mut conn = pool.acquire().await.context("connecting")?;
    for entry in entries {
        erasure::scrub_jobs(&mut conn, entry.user_id).await?;
    }
    Ok(())
}

/// Runs `engagement erasures ACTION`.
///
/// # Errors
/// The ledger cannot be read or written, or the database failed.
pub async fn erasures(
    pool: &PgPool,
    secrets: &SecretsConfig,
    action: ErasuresCommand,
) -> anyhow::Result<()> {
    match action {
        ErasuresCommand::Export { file } => {
            let ledger = file.map_or_else(|| secrets.ledger(), Ledger::new);
            let all = erasure::recorded(pool).await?;
            ledger.write_all(&all)?;
            println!(
                "wrote {} erasures to {}",
                all.len(),
                ledger.path().display()
            );
            Ok(())
        }
        ErasuresCommand::Apply { file } => {
            let ledger = file.map_or_else(|| secrets.ledger(), Ledger::new);
            let entries = ledger.read()?;
            let bus = CommandBus::new(
                pool.clone(),
                open_vault(pool, secrets).await?,
                domain::client::ClientServices::default(),
                std::sync::Arc::new(projections::clock::SystemClock),
            );
            let (mut erased, mut already, mut unknown) = (0, 0, 0);
            for entry in &entries {
                if bus.load(entry.user_id).await?.lifecycle() == Lifecycle::Erased {
                    already += 1;
                    continue;
                }
                let reason = format!("re-applied from the erasure ledger: {}", entry.reason);
                let reason: String = reason
                    .chars()
                    .take(domain::client::aggregate::MAX_ERASE_REASON_CHARS)
                    .collect();
                match bus
                    .execute(
                        entry.user_id,
                        ClientAction::EraseUser { reason },
                        &CommandMetadata::for_actor("erasure-ledger"),
                    )
                    .await
                {
                    Ok(_) => erased += 1,
                    // Restored from before the client existed: nothing of them to erase.
                    Err(CommandError::Rejected(ClientError::NotFound)) => unknown += 1,
                    Err(error) => {
                        return Err(anyhow::Error::new(error)
                            .context(format!("erasing user {} again", entry.user_id)))
                    }
                }
            }
            if erased > 0 {
                scrub_views(pool, bus.vault(), &entries).await?;
            }
            println!(
                "{} erasures in {}: erased {erased} again, {already} were erased already, {unknown} are not in this database",
                entries.len(),
                ledger.path().display()
            );
            Ok(())
        }
    }
}
