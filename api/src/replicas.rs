//! Read replicas: PostgreSQL hot standbys (`DATABASE_READ_URL`) that take the API's queries
//! off the primary. Writes, consumers, the process manager and everything that must see its
//! own writes at once stay on the primary.
//!
//! # Consistency
//! A query sent to a replica sees every write acknowledged before the query began, on any
//! instance. Before it runs, the request learns the primary's WAL position
//! (`pg_current_wal_lsn()`: one round trip, shared by all the requests that arrive while one
//! is in flight) and goes to a replica only once that replica has replayed at least that far
//! (`pg_last_wal_replay_lsn()`), waiting for it up to `DATABASE_READ_WAIT_MS`; otherwise it runs
//! on the primary. A client that knows which position it must see sends it
//! (`X-Read-After: 0/16B3748`, as a mutation's answer gives it in `X-Read-Position`) and
//! spares the primary that round trip.
//!
//! # Health
//! Every second each replica is asked how far it has replayed. A replica that does not answer
//! is `down`; one still short of where the primary stood `DATABASE_READ_MAX_LAG_MS` ago is
//! `lagging`; neither gets queries until a later check finds it `up`. A query whose replica
//! fails while it runs is run again on the primary within the same request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use sqlx::PgPool;

/// How often replicas are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a check may take before the replica counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a replica is asked again while a query waits for it to catch up.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// A position in the write-ahead log, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form (`16/B374D848`).
    pub fn parse(text: &str) -> Option<Self> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Self((u64::from(high) << 32) | u64::from(low)))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// How replicas are used.
#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    /// A replica further behind the primary than this is skipped.
    pub max_lag: Duration,
    /// How long a query waits for a replica to replay what it must see before it runs on the
    /// primary instead.
    pub wait: Duration,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answering and close behind the primary.
    Up,
    /// Answering, but further behind than the limit.
    Lagging,
    /// Not answering (or not a standby).
    Down,
}

/// One replica as health reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaHealth {
    /// Host, port and database (never the password).
    pub host: String,
    /// What the last check found.
    pub status: Status,
    /// How far it had replayed.
    #[serde(rename = "replayedTo")]
    pub replayed_to: Option<String>,
}

struct Replica {
    host: String,
    pool: PgPool,
    seen: Mutex<Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    status: Status,
    replayed: Option<Lsn>,
}

impl Replica {
    fn seen(&self) -> Seen {
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Seen)) {
        change(
            &mut self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// How far it has replayed (`None`: it is not a standby).
    async fn replayed(&self) -> anyhow::Result<Option<Lsn>> {
        let text: Option<String> = tokio::time::timeout(CHECK_TIMEOUT, async {
            sqlx::query_scalar("select pg_last_wal_replay_lsn()::text")
                .fetch_one(&self.pool)
                .await
        })
        .await
        .context("no answer within a second")?
        .context("asking how far it replayed")?;
        Ok(text.as_deref().and_then(Lsn::parse))
    }
}

/// Where a query runs.
#[derive(Clone)]
pub struct ReadTarget {
    /// The pool to read from.
    pub pool: PgPool,
    replica: Option<usize>,
}

impl ReadTarget {
    /// Whether it is a replica.
    pub fn is_replica(&self) -> bool {
        self.replica.is_some()
    }
}

/// The primary's WAL position, asked once for every request that arrived before the asking
/// began.
struct PrimaryPosition {
    primary: PgPool,
    tickets: AtomicU64,
    latest: tokio::sync::Mutex<Option<(u64, Lsn)>>,
    known: AtomicU64,
}

impl PrimaryPosition {
    async fn current(&self) -> anyhow::Result<Lsn> {
        let arrived = self.tickets.fetch_add(1, Ordering::SeqCst);
        let mut latest = self.latest.lock().await;
        if let Some((started, lsn)) = *latest {
            if started > arrived {
                return Ok(lsn);
            }
        }
        let started = self.tickets.fetch_add(1, Ordering::SeqCst);
        let text: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
            .fetch_one(&self.primary)
            .await
            .context("asking the primary for its WAL position")?;
        let lsn = Lsn::parse(&text).context("a WAL position that does not parse")?;
        *latest = Some((started, lsn));
        self.known.fetch_max(lsn.0, Ordering::SeqCst);
        Ok(lsn)
    }

    /// The furthest position learnt so far.
    fn known(&self) -> Lsn {
        Lsn(self.known.load(Ordering::SeqCst))
    }
}

/// The replicas, their health, and the choice of where each query runs.
pub struct Replicas {
    primary: PgPool,
    replicas: Vec<Replica>,
    settings: ReadSettings,
    position: PrimaryPosition,
    /// The primary's positions at recent checks, to tell how far behind a replica is in time.
    history: Mutex<VecDeque<(Instant, Lsn)>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field(
                "replicas",
                &self.replicas.iter().map(|r| &r.host).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Replicas {
    /// Replicas at `urls` (comma-separated; empty: none) beside `primary`. They are connected
    /// to when first used, so one that is down at start-up is reported, not fatal.
    ///
    /// # Errors
    /// A URL does not parse.
    pub fn new(
        primary: PgPool,
        urls: &str,
        pool: &projections::db::PoolSettings,
        settings: ReadSettings,
    ) -> anyhow::Result<Self> {
        let pool_settings = projections::db::PoolSettings {
            // A replica that is down must fail a query fast, so it can run on the primary.
            acquire_timeout: Duration::from_secs(1),
            ..pool.clone()
        };
        let replicas = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|url| {
                Ok(Replica {
                    host: host_of(url),
                    pool: projections::db::connect_lazy(url, &pool_settings)
                        .context("DATABASE_READ_URL")?,
                    seen: Mutex::new(Seen {
                        status: Status::Down,
                        replayed: None,
                    }),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::with(primary, replicas, settings))
    }

    /// No replicas: every query runs on `primary`.
    pub fn none(primary: PgPool) -> Self {
        let settings = ReadSettings {
            max_lag: Duration::from_secs(5),
            wait: Duration::from_millis(200),
        };
        Self::with(primary, Vec::new(), settings)
    }

    fn with(primary: PgPool, replicas: Vec<Replica>, settings: ReadSettings) -> Self {
        Self {
            position: PrimaryPosition {
                primary: primary.clone(),
                tickets: AtomicU64::new(0),
                latest: tokio::sync::Mutex::new(None),
                known: AtomicU64::new(0),
            },
            primary,
            replicas,
            settings,
            history: Mutex::new(VecDeque::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// Whether any replica is configured.
    pub fn any(&self) -> bool {
        !self.replicas.is_empty()
    }

    /// The replicas as the last checks found them.
    pub fn health(&self) -> Vec<ReplicaHealth> {
        self.replicas
            .iter()
            .map(|r| {
                let seen = r.seen();
                ReplicaHealth {
                    host: r.host.clone(),
                    status: seen.status,
                    replayed_to: seen.replayed.map(|l| l.to_string()),
                }
            })
            .collect()
    }

    /// The primary's WAL position now (after every write acknowledged so far).
    ///
    /// # Errors
    /// The primary did not answer.
    pub async fn primary_position(&self) -> anyhow::Result<Lsn> {
        self.position.current().await
    }

    /// Checks every replica now.
    pub async fn check(&self) {
        let primary = self.position.current().await.ok();
        let now = Instant::now();
        let behind_since = {
            let mut history = self
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(lsn) = primary {
                history.push_back((now, lsn));
            }
            let keep = self.settings.max_lag + CHECK_EVERY * 5;
            while history
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > keep)
            {
                history.pop_front();
            }
            history.clone()
        };
        let answers = futures::future::join_all(self.replicas.iter().map(|r| r.replayed())).await;
        for (replica, answer) in self.replicas.iter().zip(answers) {
            let (status, replayed) = match answer {
                Ok(Some(replayed)) => {
                    // Lagging: it has not reached where the primary stood `max_lag` ago.
                    let lagging = behind_since.iter().any(|(at, lsn)| {
                        now.duration_since(*at) >= self.settings.max_lag && *lsn > replayed
                    });
                    let status = if lagging { Status::Lagging } else { Status::Up };
                    (status, Some(replayed))
                }
                Ok(None) => {
                    tracing::warn!(replica = %replica.host, "DATABASE_READ_URL: not a standby (not in recovery); not used");
                    (Status::Down, None)
                }
                Err(error) => {
                    tracing::debug!(replica = %replica.host, error = format!("{error:#}"), "replica check failed");
                    (Status::Down, replica.seen().replayed)
                }
            };
            let before = replica.seen().status;
            if before != status {
                tracing::warn!(replica = %replica.host, from = ?before, to = ?status, "read replica status changed");
            }
            replica.update(|seen| {
                seen.status = status;
                seen.replayed = replayed.or(seen.replayed);
            });
        }
    }

    /// Checks the replicas every second, for as long as the returned task runs.
    pub fn spawn_checks(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.check().await;
            }
        })
    }

    /// Where a query that must see `after` (else: everything acknowledged until now) runs: an
    /// `up` replica that has replayed that far (waiting for one up to the configured time), or
    /// the primary.
    pub async fn target(&self, after: Option<Lsn>) -> ReadTarget {
        let primary = ReadTarget {
            pool: self.primary.clone(),
            replica: None,
        };
        if self.replicas.is_empty() {
            return primary;
        }
        let up: Vec<usize> = (0..self.replicas.len())
            .filter(|&i| self.replicas[i].seen().status == Status::Up)
            .collect();
        if up.is_empty() {
            return primary;
        }
        let floor = match after {
            Some(lsn) => lsn,
            None => match self.position.current().await {
                Ok(lsn) => lsn,
                // The primary is not answering: the replicas still serve what it had written
                // as far as this process knows.
                Err(error) => {
                    tracing::debug!(
                        error = format!("{error:#}"),
                        "primary position unknown; reading replicas from the last known one"
                    );
                    self.position.known()
                }
            },
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let order: Vec<usize> = (0..up.len()).map(|k| up[(start + k) % up.len()]).collect();
        if let Some(&i) = order
            .iter()
            .find(|&&i| self.replicas[i].seen().replayed.is_some_and(|r| r >= floor))
        {
            return self.at(i);
        }
        // None is known to be there yet: ask the first until it is, or the wait is over.
        let i = order[0];
        let replica = &self.replicas[i];
        let deadline = Instant::now() + self.settings.wait;
        loop {
            match replica.replayed().await {
                Ok(Some(replayed)) => {
                    replica.update(|seen| seen.replayed = Some(replayed));
                    if replayed >= floor {
                        return self.at(i);
                    }
                }
                _ => {
                    self.mark_down(i);
                    return primary;
                }
            }
            if Instant::now() + POLL_EVERY > deadline {
                return primary;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn at(&self, i: usize) -> ReadTarget {
        ReadTarget {
            pool: self.replicas[i].pool.clone(),
            replica: Some(i),
        }
    }

    /// A query on `target` failed because its database did not answer: the replica gets no
    /// more queries until a check finds it up again.
    pub fn failed(&self, target: &ReadTarget) {
        if let Some(i) = target.replica {
            self.mark_down(i);
        }
    }

    fn mark_down(&self, i: usize) {
        let replica = &self.replicas[i];
        if replica.seen().status != Status::Down {
            tracing::warn!(replica = %replica.host, "read replica failed a query; reading from the primary until it answers again");
        }
        replica.update(|seen| seen.status = Status::Down);
    }
}

/// `host:port/database` of a URL, without user or password.
fn host_of(url: &str) -> String {
    let redacted = projections::db::redact_url(url);
    let rest = redacted
        .split_once("://")
        .map_or(redacted.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('?').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_print_as_postgresql_writes_them() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert!(Lsn::parse("0/1") < Lsn::parse("1/0"));
        for bad in ["", "16", "x/1", "1/2/3", "100000000/0"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_replica_is_named_by_host_port_and_database_never_its_password() {
        assert_eq!(
            host_of("postgres://reader:s3cret@replica-1.internal:5433/engagement?sslmode=require&password=x"),
            "replica-1.internal:5433/engagement"
        );
        assert_eq!(host_of("postgres://127.0.0.1:5433/db"), "127.0.0.1:5433/db");
    }
}
