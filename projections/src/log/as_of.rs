//! A client as they stood at a moment or after a given event, replayed through the domain's
//! own `apply` from the nearest kept state at or before it.
//!
//! Replaying a long history from its first event costs time in proportion to the history, so
//! a client's state is kept every [`KEEP_EVERY`] versions (`client_states`). Replays write
//! the kept states they pass and find missing, so the first look back over a long history
//! pays for one full replay and every later one reads at most [`KEEP_EVERY`] events. With
//! each kept state goes the latest time any event up to it happened: a look back to a moment
//! starts from the last kept state whose events had all happened by then, so the answer is
//! the one a replay from the start gives (the prefix of the stream before the first event
//! that happened later). A kept state is sealed whole with the client's key (it is read back
//! as bytes and parsed straight into the aggregate: a state of 10,000 orders is a megabyte of
//! JSON, and going through `jsonb` and a JSON tree cost ten times more), and the erasure
//! deletes them. [`PastStates`] keeps the kept states it opened recently, parsed, so that
//! looking back and forth over one long history reads no state twice; one is used only
//! while the database still holds it and the client's key (never after an erasure).

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use domain::client::Client;
use sqlx::PgPool;
use uuid::Uuid;

use super::{read_stream_pages, StreamPage};
use crate::vault::Vault;

/// A client's state is kept after every this many events.
pub const KEEP_EVERY: i64 = 500;

/// The layout of kept states: raise it when the aggregate's serialized shape changes, and
/// states kept by older builds are passed over (and kept again in the new layout).
const STATE_FORMAT: i32 = 1;

/// Events read per round trip while replaying.
const PAGE: i64 = 1_000;

/// What to look back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// After every event.
    Latest,
    /// After every event that happened by then, up to the first that happened later.
    At(DateTime<Utc>),
    /// After the event with this sequence (1: the first).
    Version(i64),
}

/// The client as they stood.
#[derive(Debug, Clone, PartialEq)]
pub struct PastState {
    /// The aggregate, replayed.
    pub client: Client,
    /// The sequence of the last event applied.
    pub version: i64,
    /// When that event happened.
    pub happened_at: DateTime<Utc>,
}

/// The answer to a look back.
#[derive(Debug, Clone, PartialEq)]
pub enum LookBack {
    /// The client as they stood.
    Found(Box<PastState>),
    /// The client has no events.
    Unknown,
    /// The client's first event happened after the moment asked for.
    NotYet,
    /// The version asked for is beyond the client's last event, at `length`.
    Beyond {
        /// How many events the client has.
        length: i64,
    },
}

/// A state to keep, found on the way.
struct Kept {
    version: i64,
    happened_until: DateTime<Utc>,
    happened_at: DateTime<Utc>,
    state: Vec<u8>,
}

/// The nearest kept state the look back may start from.
#[derive(sqlx::FromRow)]
struct KeptRow {
    /// The highest version kept for the client (whatever the look back).
    kept_up_to: Option<i64>,
    /// The next kept version after the start: a look back to a moment ends before it.
    next_kept: Option<i64>,
    version: Option<i64>,
    happened_until: Option<DateTime<Utc>>,
    happened_at: Option<DateTime<Utc>>,
    state: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

/// Kept states opened recently, parsed, by client and version, up to a budget of their size
/// as stored.
pub struct PastStates {
    budget: usize,
    inner: Mutex<Opened>,
}

struct Opened {
    states: lru::LruCache<(String, i64), (Arc<Client>, usize)>,
    bytes: usize,
}

impl std::fmt::Debug for PastStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PastStates")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Default for PastStates {
    /// A budget of 64 MB.
    fn default() -> Self {
        Self::new(64 << 20)
    }
}

impl PastStates {
    /// Keeps parsed states up to `budget` bytes of their stored size (0: none).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Opened {
                states: lru::LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Opened> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn versions_of(&self, client: &str) -> Vec<i64> {
        self.lock()
            .states
            .iter()
            .filter(|((c, _), _)| c == client)
            .map(|((_, v), _)| *v)
            .collect()
    }

    fn get(&self, client: &str, version: i64) -> Option<Arc<Client>> {
        self.lock()
            .states
            .get(&(client.to_owned(), version))
            .map(|(state, _)| Arc::clone(state))
    }

    fn put(&self, client: &str, version: i64, state: Arc<Client>, size: usize) {
        if size > self.budget {
            return;
        }
        let mut inner = self.lock();
        if let Some((_, old)) = inner
            .states
            .put((client.to_owned(), version), (state, size))
        {
            inner.bytes -= old;
        }
        inner.bytes += size;
        while inner.bytes > self.budget {
            match inner.states.pop_lru() {
                Some((_, (_, size))) => inner.bytes -= size,
                None => break,
            }
        }
    }

    async fn read_state(
        &self,
        read: &PgPool,
        client: &str,
        version: i64,
    ) -> anyhow::Result<Vec<u8>> {
        sqlx::query_scalar(
            "select state from client_states where aggregate_id = $1 and format = $2 and version = $3",
        )
        .bind(client)
        .bind(STATE_FORMAT)
        .bind(version)
        .fetch_one(read)
        .await
        .context("reading a user's kept state")
    }

    /// Client `user_id` at `moment`: the nearest kept state and the events after it are read
    /// from `read` (a replica will do); the kept states found missing on the way are written
    /// to `write` in the background.
    ///
    /// # Errors
    /// The database failed, or an event or a kept state is unreadable.
    pub async fn state_at(
        &self,
        read: &PgPool,
        write: &PgPool,
        vault: &Arc<Vault>,
        user_id: Uuid,
        moment: Moment,
    ) -> anyhow::Result<LookBack> {
        let client_id = user_id.to_string();
        let (up_to, at) = match moment {
            Moment::Latest => (None, None),
            Moment::At(at) => (None, Some(at)),
            Moment::Version(v) => (Some(v), None),
        };
        // The state itself is not sent when this process holds it parsed; the key always is
        // (no key: the client was erased, and nothing kept may be used).
        let held = self.versions_of(&client_id);
        let row: KeptRow = sqlx::query_as(
            "select top.kept_up_to, s.version, s.happened_until, s.happened_at,
                    (select min(n.version) from client_states n
                      where n.aggregate_id = $1 and n.format = $2
                        and n.version > coalesce(s.version, 0)) as next_kept,
                    case when s.version <> all($5) then s.state end as state,
                    case when s.version is not null
                         then (select k.wrapped from client_keys k where k.client_id = $1) end as key
               from (select max(version) as kept_up_to from client_states
                      where aggregate_id = $1 and format = $2) top
               left join lateral (
                    select version, happened_until, happened_at, state from client_states
                     where aggregate_id = $1 and format = $2
                       and ($3::bigint is null or version <= $3)
                       and ($4::timestamptz is null or happened_until <= $4)
                     order by version desc
                     limit 1) s on true",
        )
        .bind(&client_id)
        .bind(STATE_FORMAT)
        .bind(up_to)
        .bind(at)
        .bind(&held)
        .fetch_one(read)
        .await
        .context("reading a user's kept states")?;
        let kept_up_to = row.kept_up_to.unwrap_or(0);
        let next_kept = row.next_kept;
        // A kept state whose key is gone (an erasure racing this read) is no start: the replay
        // then begins at the first event.
        let (mut client, mut version, mut happened_until, mut happened_at) = match row {
            KeptRow {
                version: Some(version),
                happened_until: Some(until),
                happened_at: Some(at),
                state,
                key: Some(wrapped),
                ..
            } => {
                let client = match (state, self.get(&client_id, version)) {
                    (None, Some(held)) => Client::clone(&held),
                    (state, _) => {
                        // Sent, or dropped from memory since it was asked for: read it now.
                        let state = match state {
                            Some(state) => state,
                            None => self.read_state(read, &client_id, version).await?,
                        };
                        let key = vault.unwrap(&client_id, &wrapped)?;
                        let json = key
                            .open(&state_aad(&client_id, version), &state)
                            .context("opening a kept state")?;
                        let client: Client =
                            serde_json::from_slice(&json).context("reading a kept state")?;
                        self.put(&client_id, version, Arc::new(client.clone()), state.len());
                        client
                    }
                };
                (client, version, Some(until), Some(at))
            }
            _ => (Client::default(), 0, None, None),
        };

        let mut keep = Vec::new();
        let mut later = false;
        loop {
            let limit = match (moment, next_kept) {
                (Moment::Version(v), _) => (v - version).min(PAGE),
                // Every event up to the next kept state happened by then only if it had been
                // the start: the first that happened later comes before it (or is it).
                (Moment::At(_), Some(next)) if next > version => (next - version).min(PAGE),
                _ => PAGE,
            };
            if limit <= 0 {
                break;
            }
            let page = StreamPage {
                user_id,
                after_sequence: version,
                limit,
            };
            let events = read_stream_pages(read, vault, &[page])
                .await?
                .pop()
                .unwrap_or_default();
            let read_all = (events.len() as i64) < limit;
            for stored in events {
                let event = stored.event()?;
                let happened = event.occurred_at();
                if matches!(moment, Moment::At(at) if happened > at) {
                    later = true;
                    break;
                }
                client.apply(event);
                version = stored.sequence;
                happened_at = Some(happened);
                let until = happened_until.map_or(happened, |u| u.max(happened));
                happened_until = Some(until);
                if version % KEEP_EVERY == 0 && version > kept_up_to {
                    keep.push(Kept {
                        version,
                        happened_until: until,
                        happened_at: happened,
                        state: serde_json::to_vec(&client).context("keeping a state")?,
                    });
                }
            }
            if later || read_all {
                break;
            }
        }

        if !keep.is_empty() {
            let (write, vault) = (write.clone(), Arc::clone(vault));
            tokio::spawn(async move {
                if let Err(e) = store(&write, &vault, &client_id, keep).await {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "keeping a user's past states failed"
                    );
                }
            });
        }

        let Some(happened_at) = happened_at else {
            return Ok(if later {
                LookBack::NotYet
            } else {
                LookBack::Unknown
            });
        };
        if let Moment::Version(v) = moment {
            if version < v {
                return Ok(LookBack::Beyond { length: version });
            }
        }
        Ok(LookBack::Found(Box::new(PastState {
            client,
            version,
            happened_at,
        })))
    }
}

/// What a kept state is bound to: its client and version (a state moved to another row does
/// not open).
fn state_aad(client: &str, version: i64) -> Vec<u8> {
    format!("client_states/{client}/{version}").into_bytes()
}

/// Writes `kept` states of `client`, sealed with their key. A client with no key (erased,
/// or written before encryption and not sealed since) gets none.
async fn store(write: &PgPool, vault: &Vault, client: &str, kept: Vec<Kept>) -> anyhow::Result<()> {
    let keys = vault.keys(write, &[client.to_owned()]).await?;
    let Some(key) = keys.get(client) else {
        return Ok(());
    };
    let mut versions = Vec::with_capacity(kept.len());
    let mut untils = Vec::with_capacity(kept.len());
    let mut ats = Vec::with_capacity(kept.len());
    let mut states = Vec::with_capacity(kept.len());
    for k in kept {
        states.push(key.seal(&state_aad(client, k.version), &k.state));
        versions.push(k.version);
        untils.push(k.happened_until);
        ats.push(k.happened_at);
    }
    // Not for a client erased since the key was read: the erasure deleted their kept states
    // and key in one transaction, and none may come back.
    sqlx::query(
        "insert into client_states (aggregate_id, version, format, happened_until, happened_at, state)
         select $1, k.version, $2, k.until, k.at, k.state
           from unnest($3::bigint[], $4::timestamptz[], $5::timestamptz[], $6::bytea[])
                as k(version, until, at, state)
          where exists (select 1 from client_keys where client_id = $1)
         on conflict (aggregate_id, format, version) do nothing",
    )
    .bind(client)
    .bind(STATE_FORMAT)
    .bind(&versions)
    .bind(&untils)
    .bind(&ats)
    .bind(&states)
    .execute(write)
    .await
    .context("keeping a user's past states")?;
    Ok(())
}
