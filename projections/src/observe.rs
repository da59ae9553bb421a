//! What `/metrics` reads from the database when it is scraped: each consumer's lag, the email
//! jobs by status and the send queue. Reading them only when asked keeps an idle service
//! idle; the names are in [`crate::metrics`].

use metrics::gauge;

use crate::engagement::delivery::sends;
use crate::engagement::jobs::{self, JobStatus};
use crate::metrics::{
    CONSUMERS, CONSUMER_LAG_EVENTS, CONSUMER_LAG_SECONDS, EMAIL_JOBS, SEND_QUEUE,
};

/// Sets every gauge read from the database to zero, so that each exists from the first scrape.
pub fn register() {
    for consumer in CONSUMERS {
        gauge!(CONSUMER_LAG_EVENTS, "consumer" => *consumer).set(0.0);
        gauge!(CONSUMER_LAG_SECONDS, "consumer" => *consumer).set(0.0);
    }
    for status in JobStatus::ALL {
        gauge!(EMAIL_JOBS, "status" => status.as_str()).set(0.0);
    }
    gauge!(SEND_QUEUE).set(0.0);
}

/// Reads the consumers' lag and the job and send queues, and sets the gauges.
///
/// # Errors
/// The database failed; the gauges keep their last values.
pub async fn database(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    for (consumer, events, seconds) in crate::log::consumer::lag_with_age(pool).await? {
        // Only the service's own consumers: a rebuild's temporary one is not a label.
        let Some(consumer) = CONSUMERS.iter().find(|known| **known == consumer) else {
            continue;
        };
        gauge!(CONSUMER_LAG_EVENTS, "consumer" => *consumer).set(events as f64);
        gauge!(CONSUMER_LAG_SECONDS, "consumer" => *consumer).set(seconds);
    }
    let counted = jobs::count_by_status(pool).await?;
    for status in JobStatus::ALL {
        let count = counted
            .iter()
            .find(|(s, _)| s == status.as_str())
            .map_or(0, |(_, n)| *n);
        gauge!(EMAIL_JOBS, "status" => status.as_str()).set(count as f64);
    }
    gauge!(SEND_QUEUE).set(sends::waiting(pool).await? as f64);
    Ok(())
}
