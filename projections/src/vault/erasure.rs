//! Erasing a client for good, and the ledger that outlives a restore.
//!
//! [`shred`] runs in the transaction that appends `UserErased`: anything of the client still
//! in the clear in the log or the snapshots (written before encryption) is sealed, then the
//! client's key and external id claim are deleted, so from that commit on nothing stored in
//! `events` or `snapshots` names the person. The views, email rows and jobs are scrubbed by
//! their consumers when they read `UserErased` (and a rebuild, reading payloads whose key is
//! gone, never brings the data back).
//!
//! A backup taken before an erasure still holds the key. The [`Ledger`] (JSON lines beside the
//! key file, one per erasure; `engagement erasures export` writes it again from the log) lists
//! who was erased, so `engagement erasures apply` can erase them again after a restore.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::personal::{
    self, EVENT_IN_THE_CLEAR, PERSONAL_EVENT_TYPES, SNAPSHOT, SNAPSHOT_IN_THE_CLEAR,
};
use super::Vault;

/// Seals what of `client` is still in the clear in `events` and `snapshots`, then deletes the
/// client's kept past states, key and external id claim. Runs inside the transaction
/// appending `UserErased`.
///
/// # Errors
/// The database failed.
pub async fn shred(conn: &mut PgConnection, vault: &Vault, client: &str) -> anyhow::Result<()> {
    seal_plain_of(conn, vault, client).await?;
    sqlx::query("delete from client_states where aggregate_id = $1")
        .bind(client)
        .execute(&mut *conn)
        .await
        .context("deleting an erased user's kept states")?;
    sqlx::query("delete from client_keys where client_id = $1")
        .bind(client)
        .execute(&mut *conn)
        .await
        .context("deleting an erased user's key")?;
    sqlx::query("delete from client_external_ids where user_id::text = $1")
        .bind(client)
        .execute(&mut *conn)
        .await
        .context("releasing an erased user's external id")?;
    Ok(())
}

/// Forgets what the email and send jobs of erased client `user_id` recorded about their
/// failures (an LLM or SMTP error may quote the client). The process manager runs it when it
/// reads `UserErased`.
///
/// # Errors
/// The database failed.
pub async fn scrub_jobs(conn: &mut PgConnection, user_id: Uuid) -> anyhow::Result<()> {
    for table in ["email_jobs", "email_sends"] {
        // Our own table names, never input.
        sqlx::query(&format!(
            "update {table} set last_error = null where user_id = $1 and last_error is not null"
        ))
        .bind(user_id)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("scrubbing an erased user's {table}"))?;
    }
    Ok(())
}

/// What sealing the clear personal data of some clients changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Events rewritten with their personal fields sealed.
    pub events: u64,
    /// Snapshots rewritten likewise.
    pub snapshots: u64,
}

/// Seals the personal fields `client`'s events and snapshots still hold in the clear.
///
/// # Errors
/// The database failed.
pub async fn seal_plain_of(
    conn: &mut PgConnection,
    vault: &Vault,
    client: &str,
) -> anyhow::Result<Sealed> {
    let events: Vec<(i64, String, Value)> = sqlx::query_as(&format!(
        "select sequence, event_type, payload from events
          where aggregate_type = 'client' and aggregate_id = $4 and {EVENT_IN_THE_CLEAR}
          order by sequence"
    ))
    .bind(PERSONAL_EVENT_TYPES)
    .bind(personal::field_names(PERSONAL_EVENT_TYPES))
    .bind(personal::field_names(&[SNAPSHOT]))
    .bind(client)
    .fetch_all(&mut *conn)
    .await
    .context("reading a user's events in the clear")?;
    let snapshots: Vec<(i64, Value)> = sqlx::query_as(&format!(
        "select last_sequence, payload from snapshots
          where aggregate_type = 'client' and aggregate_id = $4 and {SNAPSHOT_IN_THE_CLEAR}
            and $1::text[] is not null and $2::text[] is not null"
    ))
    .bind(PERSONAL_EVENT_TYPES)
    .bind(personal::field_names(PERSONAL_EVENT_TYPES))
    .bind(personal::field_names(&[SNAPSHOT]))
    .bind(client)
    .fetch_all(&mut *conn)
    .await
    .context("reading a user's snapshots in the clear")?;
    let mut sealed = Sealed::default();
    let plain_events: Vec<_> = events
        .into_iter()
        .filter(|(_, kind, payload)| personal::has_plain_personal_data(kind, payload))
        .collect();
    let plain_snapshots: Vec<_> = snapshots
        .into_iter()
        .filter(|(_, payload)| personal::has_plain_personal_data(SNAPSHOT, payload))
        .collect();
    if plain_events.is_empty() && plain_snapshots.is_empty() {
        return Ok(sealed);
    }
    let key = vault.key_for_writing(&mut *conn, client).await?;
    for (sequence, kind, mut payload) in plain_events {
        personal::seal(&key, client, &kind, &mut payload)?;
        sqlx::query(
            "update events set payload = $3
              where aggregate_type = 'client' and aggregate_id = $1 and sequence = $2",
        )
        .bind(client)
        .bind(sequence)
        .bind(&payload)
        .execute(&mut *conn)
        .await
        .context("sealing an event")?;
        sealed.events += 1;
    }
    for (last_sequence, mut payload) in plain_snapshots {
        personal::seal(&key, client, SNAPSHOT, &mut payload)?;
        sqlx::query(
            "update snapshots set payload = $3
              where aggregate_type = 'client' and aggregate_id = $1 and last_sequence = $2",
        )
        .bind(client)
        .bind(last_sequence)
        .bind(&payload)
        .execute(&mut *conn)
        .await
        .context("sealing a snapshot")?;
        sealed.snapshots += 1;
    }
    Ok(sealed)
}

/// One erasure, as the ledger keeps it (no personal data: the id is a random uuid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    /// The erased client.
    pub user_id: Uuid,
    /// When.
    pub erased_at: DateTime<Utc>,
    /// Who asked (the event's actor).
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// Every erasure recorded in the log, oldest first.
///
/// # Errors
/// The database failed or an event is unreadable.
pub async fn recorded<'e>(executor: impl sqlx::PgExecutor<'e>) -> anyhow::Result<Vec<Erasure>> {
    let rows: Vec<(String, Value, Value)> = sqlx::query_as(
        "select aggregate_id, payload, metadata from events
          where aggregate_type = 'client' and event_type = 'UserErased'
          order by global_position",
    )
    .fetch_all(executor)
    .await
    .context("reading the erasures")?;
    rows.into_iter()
        .map(|(id, payload, metadata)| {
            let event: domain::client::UserErased =
                serde_json::from_value(payload["UserErased"].clone())
                    .context("reading a UserErased event")?;
            Ok(Erasure {
                user_id: Uuid::parse_str(&id).context("an erased user's id")?,
                erased_at: event.erased_at,
                actor: metadata["actor"].as_str().unwrap_or_default().to_owned(),
                reason: event.reason,
            })
        })
        .collect()
}

/// The erasure ledger: a file of JSON lines, appended to as clients are erased.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// The ledger at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The ledger beside the key file `key_file` (`engagement.key` -> `engagement.erasures`).
    pub fn beside(key_file: &Path) -> Self {
        Self::new(key_file.with_extension("erasures"))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `erasure` and flushes it to disk.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn append(&self, erasure: &Erasure) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(erasure).context("writing an erasure")?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening the erasure ledger {}", self.path.display()))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing the erasure ledger {}", self.path.display()))
    }

    /// Writes `erasures` as the whole ledger (atomically: a new file renamed over the old).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_all(&self, erasures: &[Erasure]) -> anyhow::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("writing the erasure ledger in {}", dir.display()))?;
        for erasure in erasures {
            let line = serde_json::to_string(erasure).context("writing an erasure")?;
            writeln!(file, "{line}").context("writing the erasure ledger")?;
        }
        file.as_file()
            .sync_data()
            .context("writing the erasure ledger")?;
        file.persist(&self.path)
            .with_context(|| format!("replacing the erasure ledger {}", self.path.display()))?;
        Ok(())
    }

    /// Every erasure in the ledger (none when it does not exist yet).
    ///
    /// # Errors
    /// The file cannot be read, or a line is not an erasure (named by its line number).
    pub fn read(&self) -> anyhow::Result<Vec<Erasure>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the erasure ledger {}", self.path.display()))
            }
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line).with_context(|| {
                    format!("{} line {}: not an erasure", self.path.display(), n + 1)
                })
            })
            .collect()
    }
}
