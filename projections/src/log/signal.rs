//! Telling the log's readers that events were committed: this process's readers at once, other
//! processes through PostgreSQL's `events_committed` notifications.
//!
//! The events table's trigger sends a notification for every statement that appends, unless
//! the writer says it announces its own appends (see [`LogSignal::announced_setting`]). Ours
//! do: a transaction that has sent a notification holds one lock, for the whole database,
//! from just before its commit until after it (PostgreSQL keeps notifications in commit order
//! that way), so commits that notify cannot share a disk flush and wait for each other.
//! Measured (`bash api/benches/announce.sh`: a command's two events appended by pgbench at 16
//! clients): 2,946 appends per second with a notification each, 5,646 announced by the writer.
//! An announcing process wakes its own readers in memory when an append returns and sends
//! other processes one notification for however many appends committed while the previous one
//! was on its way, from a transaction that writes nothing else and does not wait for the disk.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel the events table and announcing writers notify on.
const CHANNEL: &str = "events_committed";

/// Wakes the log's readers when events are committed: bumps a counter they watch, fed by this
/// process's own appends and by the notifications of everyone else's.
#[derive(Debug, Clone)]
pub struct LogSignal {
    tx: Arc<watch::Sender<u64>>,
    /// This process's name on the channel: what it announced itself is no news to it.
    origin: Arc<str>,
    /// Where appends are announced to other processes (`None`: the trigger does it).
    announcer: Option<mpsc::Sender<()>>,
}

impl Default for LogSignal {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(0).0),
            origin: Uuid::new_v4().to_string().into(),
            announcer: None,
        }
    }
}

impl LogSignal {
    /// A signal for this process alone: appends leave telling other processes to the events
    /// table's trigger, and readers fall back to polling until [`LogSignal::listen`] runs.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal whose appends are announced to other processes on `pool`, by a task spawned
    /// here (on the current Tokio runtime) that ends when the last clone of the signal is
    /// dropped.
    pub fn announcing(pool: PgPool) -> Self {
        // One slot: appends that find it taken are covered by the notification it stands for,
        // which is sent after they committed.
        let (announcer, requests) = mpsc::channel(1);
        let signal = Self {
            announcer: Some(announcer),
            ..Self::default()
        };
        tokio::spawn(announce(pool, signal.origin.clone(), requests));
        signal
    }

    /// Tells this process's readers to look at the log now.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// To be called by a writer once its append has committed: wakes this process's readers
    /// and, when this signal announces, has the other processes' readers woken too.
    pub fn appended(&self) {
        self.notify();
        if let Some(announcer) = &self.announcer {
            // Full: a notification is already due, and it will be sent after this commit.
            let _ = announcer.try_send(());
        }
    }

    /// The value an appending statement sets `engagement.announced` to, for the transaction
    /// (`set_config('engagement.announced', $n, true)`): `on` keeps the events table's trigger
    /// quiet, because [`LogSignal::appended`] will announce the append; `off` when this signal
    /// only wakes this process.
    pub fn announced_setting(&self) -> &'static str {
        if self.announcer.is_some() {
            "on"
        } else {
            "off"
        }
    }

    /// A receiver that changes whenever the log may have new events.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// Listens for other processes' commits until `stop`; reconnects with backoff when the
    /// database goes away, and wakes readers after each reconnection (notifications may have
    /// been missed).
    pub async fn listen(self, pool: PgPool, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for new events; retrying");
                    tokio::select! { () = tokio::time::sleep(backoff) => {}, () = stop.cancelled() => return }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if let Err(error) = listener.listen(CHANNEL).await {
                tracing::warn!(%error, "LISTEN failed; retrying");
                tokio::select! { () = tokio::time::sleep(backoff) => {}, () = stop.cancelled() => return }
                continue;
            }
            backoff = Duration::from_millis(100);
            self.notify();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    received = listener.try_recv() => match received {
                        // Ours: our readers were woken when the append returned.
                        Ok(Some(n)) if n.payload() == &*self.origin => {}
                        Ok(Some(_)) => self.notify(),
                        // The connection dropped; sqlx reconnects on the next call.
                        Ok(None) => self.notify(),
                        Err(error) => {
                            tracing::warn!(%error, "lost the notification connection");
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Sends one notification per request, requests that arrive meanwhile waiting in one slot.
/// The notification needs no durability (a lost one costs a reader's poll interval), so its
/// transaction does not wait for the disk, and the database-wide lock a notification takes is
/// held only for the commit itself.
async fn announce(pool: PgPool, origin: Arc<str>, mut requests: mpsc::Receiver<()>) {
    while requests.recv().await.is_some() {
        let sent =
            sqlx::query("select set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&*origin)
                .execute(&pool)
                .await;
        if let Err(error) = sent {
            // The append it announces committed, so the database was there a moment ago;
            // other processes' readers find the events by their poll if this keeps failing.
            tracing::warn!(%error, "could not announce new events to other instances");
        }
    }
}
