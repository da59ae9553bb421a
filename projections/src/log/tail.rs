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
use crate::log::{self, ReadFilter, StoredEvent};

/// Events a subscriber may fall behind before it is dropped.
pub const CAPACITY: usize = 4096;

/// Starts the tail at the current head of the log; returns the sender subscribers subscribe to.
/// It runs until `stop`.
pub fn start(
    pool: PgPool,
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
        let mut pending_pause = Duration::from_millis(1);
        while !stop.is_cancelled() {
            wake.borrow_and_update();
            let pause = match log::read_after(&pool, position, 500, &filter).await {
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        position = event.position;
                        // No subscribers is fine: the send fails and the event is dropped.
                        let _ = tx.send(Arc::new(event));
                    }
                    pending_pause = Duration::from_millis(1);
                    continue;
                }
                Ok(_) => match log::has_pending_after(&pool, position).await {
                    Ok(true) => {
                        let pause = pending_pause;
                        pending_pause = (pending_pause * 2).min(Duration::from_millis(8));
                        pause
                    }
                    _ => Duration::from_secs(2),
                },
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "live tail read failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = wake.changed() => {}
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break,
            }
        }
    });
    sender
}
