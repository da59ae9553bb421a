//! The uplift report's data: every trigger in a period (the process manager's decision to
//! email an at-risk client, `email_jobs`, held out or not, whatever happened after it), and
//! whether the client ordered within the window after it, from the log's `OrderPlaced` events
//! (orders cancelled since do not count). The arithmetic is `domain::uplift`.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use domain::uplift::Trigger;
use sqlx::PgExecutor;

/// The triggers recorded in `[since, until)`, each with what the client ordered in the
/// `window_days` after it. One statement: a lateral index scan of each client's stream.
///
/// # Errors
/// The database failed.
pub async fn triggers<'e>(
    executor: impl PgExecutor<'e>,
    since: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
    window_days: i32,
) -> anyhow::Result<Vec<Trigger>> {
    let rows: Vec<(bool, i64, i64)> = sqlx::query_as(
        "select j.status = 'HELD_OUT', coalesce(o.orders, 0), coalesce(o.cents, 0)::bigint
           from email_jobs j
           left join lateral (
                select count(*) as orders,
                       sum((e.payload->'OrderPlaced'->>'amountCents')::bigint) as cents
                  from events e
                 where e.aggregate_type = 'client'
                   and e.aggregate_id = j.user_id::text
                   and e.event_type = 'OrderPlaced'
                   and (e.payload->'OrderPlaced'->>'placedAt')::timestamptz > j.created_at
                   and (e.payload->'OrderPlaced'->>'placedAt')::timestamptz
                       <= j.created_at + make_interval(days => $3)
                   and not exists (
                        select 1 from events c
                         where c.aggregate_type = 'client'
                           and c.aggregate_id = e.aggregate_id
                           and c.event_type = 'OrderCancelled'
                           and c.payload->'OrderCancelled'->>'orderId'
                               = e.payload->'OrderPlaced'->>'orderId')) o on true
          where ($1::timestamptz is null or j.created_at >= $1)
            and j.created_at < $2",
    )
    .bind(since)
    .bind(until)
    .bind(window_days)
    .fetch_all(executor)
    .await
    .context("reading the uplift report's triggers")?;
    Ok(rows
        .into_iter()
        .map(|(held_out, orders, cents)| Trigger {
            held_out,
            reactivated: orders > 0,
            revenue_cents: cents,
        })
        .collect())
}
