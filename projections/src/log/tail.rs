//! A live tail of the log for subscribers: reads new events (gap-free, in log order, metadata
//! included) as they are committed by any instance, and broadcasts them. A subscriber that
//! falls more than the channel's capacity behind is told so by the channel and dropped by its
//! reader, so one slow subscriber never slows the others.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::log::consumer::LogSignal;
use crate::log::position::LogPosition;
use crate::log::{self, ReadFilter, StoredEvent};

/// Events a subscriber may fall behind before it is dropped.
pub const CAPACITY: usize = 4096;

/// Events read at a time.
const BATCH: i64 = 500;

/// The safety-net poll when no notification comes.
const POLL: Duration = Duration::from_secs(2);

/// How long events gather after a notification before they are read.
const GATHER: Duration = Duration::from_millis(25);

/// How long to wait before reading again: soon if committed events wait behind an older open
/// transaction (which may send no notification when it ends), else until the poll.
async fn pending_or_poll(pool: &PgPool, position: LogPosition, pause: &mut Duration) -> Duration {
    match log::has_pending_after(pool, position).await {
        Ok(true) => {
            let now = *pause;
            *pause = (*pause * 2).min(GATHER);
            now
        }
        _ => POLL,
    }
}

/// Starts the tail at the current head of the log; returns the sender subscribers subscribe to.
/// It runs until `stop`.
pub fn start(
    pool: PgPool,
    vault: Arc<crate::vault::Vault>,
    signal: LogSignal,
    stop: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> broadcast::Sender<Arc<StoredEvent>> {
    let (tx, _) = broadcast::channel(CAPACITY);
    let sender = tx.clone();
    tasks.spawn(async move {
        let mut wake = signal.subscribe_changes();
        let filter = ReadFilter { payload_types: None, with_metadata: true };
        let mut position = loop {
            match log::head(&pool).await {
                Ok(head) => break head,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "live tail cannot read the head; retrying");
                    tokio::select! { () = tokio::time::sleep(Duration::from_secs(1)) => {}, () = stop.cancelled() => return }
                }
            }
        };
        let light = ReadFilter { payload_types: Some(Vec::new()), with_metadata: false };
        let mut pending_pause = Duration::from_millis(1);
        while !stop.is_cancelled() {
            wake.borrow_and_update();
            // With nobody listening the tail only keeps its place: positions, no payloads, and
            // no hurry (the next notification or poll will do).
            let listening = tx.receiver_count() > 0;
            let read = log::read_after(&pool, &vault, position, BATCH, if listening { &filter } else { &light });
            let pause = match read.await {
                Ok(events) if !events.is_empty() => {
                    let full = events.len() as i64 >= BATCH;
                    for event in events {
                        position = event.position;
                        if listening {
                            // A subscriber that left meanwhile is fine: the send just fails.
                            let _ = tx.send(Arc::new(event));
                        }
                    }
                    pending_pause = Duration::from_millis(1);
                    if full {
                        continue;
                    }
                    if listening {
                        pending_or_poll(&pool, position, &mut pending_pause).await
                    } else {
                        POLL
                    }
                }
                Ok(_) if listening => pending_or_poll(&pool, position, &mut pending_pause).await,
                Ok(_) => POLL,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "live tail read failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                // Let events gather: subscribers see them 25 ms later, in larger reads.
                _ = wake.changed() => tokio::time::sleep(GATHER).await,
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break,
            }
        }
    });
    sender
}
