//! The trend the overview lacked: per day, clients at risk, their average score, emails written
//! and reactivations, over months, without scanning the log per request.
//!
//! The `trend` consumer folds the log into `engagement_daily`: what each day changed (a score
//! entering or leaving the at-risk band, a score's change to the sum of current scores, a
//! client scored for the first time or deleted, an email written, a reactivation). A day's
//! standing is the running sum of every day up to it, one small window query. A reactivation is
//! an at-risk client's score leaving the at-risk band because of something they did (an order),
//! recorded on the day of that score. Deleted clients stop counting on the day they were
//! deleted.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use domain::client::{ClientEvent, ScoreCause};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::log::consumer::{ConsumerSettings, Projection};
use crate::log::StoredEvent;

/// What one day changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DayChange {
    at_risk: i32,
    score_sum: i64,
    scored: i32,
    emails: i32,
    reactivations: i32,
}

/// The trend consumer.
#[derive(Debug, Clone, Default)]
pub struct TrendView;

const TYPES: &[&str] = &["UserScored", "EmailGenerated", "UserDeleted", "UserErased"];

impl TrendView {
    /// How the trend's consumer runs: nobody waits on it, so events gather for two seconds
    /// before each read, and one transaction folds them all (the trend costs at most one
    /// transaction every two seconds, not one per command).
    pub fn settings() -> ConsumerSettings {
        ConsumerSettings {
            gather: std::time::Duration::from_secs(2),
            batch_size: 5000,
            ..ConsumerSettings::background()
        }
    }
}

impl Projection for TrendView {
    fn name(&self) -> &str {
        "trend"
    }

    fn payload_types(&self) -> Option<Vec<String>> {
        Some(TYPES.iter().map(|t| (*t).to_owned()).collect())
    }

    fn touches(&self, events: &[StoredEvent]) -> anyhow::Result<bool> {
        Ok(events
            .iter()
            .any(|e| TYPES.contains(&e.event_type.as_str())))
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut ids: Vec<Uuid> = events
            .iter()
            .filter(|e| {
                matches!(
                    e.event_type.as_str(),
                    "UserScored" | "UserDeleted" | "UserErased"
                )
            })
            .map(|e| e.user_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() && !events.iter().any(|e| e.event_type == "EmailGenerated") {
            return Ok(());
        }
        // Each client's current score as this consumer last recorded it (`None`: deleted
        // here, so later events of theirs change nothing).
        let mut clients: HashMap<Uuid, Option<(i16, bool)>> =
            sqlx::query_as::<_, (Uuid, i16, bool)>(
                "select user_id, score, at_risk from trend_clients where user_id = any($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .context("reading the trend's clients")?
            .into_iter()
            .map(|(id, score, at_risk)| (id, Some((score, at_risk))))
            .collect();
        let mut days: BTreeMap<NaiveDate, DayChange> = BTreeMap::new();
        let day_of = |at: DateTime<Utc>| at.date_naive();
        for stored in events {
            if !TYPES.contains(&stored.event_type.as_str()) {
                continue;
            }
            match stored.event()? {
                ClientEvent::UserScored(e) => {
                    let entry = clients.entry(stored.user_id).or_insert(None);
                    let before = *entry;
                    let now = (i16::from(e.score), e.is_at_risk());
                    let change = days.entry(day_of(e.as_of)).or_default();
                    match before {
                        Some((score, at_risk)) => {
                            change.score_sum += i64::from(now.0 - score);
                            change.at_risk += i32::from(now.1) - i32::from(at_risk);
                            if at_risk && !now.1 && e.cause == ScoreCause::Activity {
                                change.reactivations += 1;
                            }
                        }
                        None => {
                            change.score_sum += i64::from(now.0);
                            change.at_risk += i32::from(now.1);
                            change.scored += 1;
                        }
                    }
                    *entry = Some(now);
                }
                ClientEvent::UserDeleted(_) | ClientEvent::UserErased(_) => {
                    if let Some(Some((score, at_risk))) = clients.insert(stored.user_id, None) {
                        let change = days
                            .entry(day_of(stored.event()?.occurred_at()))
                            .or_default();
                        change.score_sum -= i64::from(score);
                        change.at_risk -= i32::from(at_risk);
                        change.scored -= 1;
                    }
                }
                ClientEvent::EmailGenerated(e) => {
                    days.entry(day_of(e.generated_at)).or_default().emails += 1;
                }
                _ => {}
            }
        }
        let (mut kept, mut scores, mut risks, mut gone) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, state) in clients {
            match state {
                Some((score, at_risk)) => {
                    kept.push(id);
                    scores.push(score);
                    risks.push(at_risk);
                }
                None => gone.push(id),
            }
        }
        // A deleted client's row goes; one never scored here had none.
        if !gone.is_empty() {
            sqlx::query("delete from trend_clients where user_id = any($1)")
                .bind(&gone)
                .execute(&mut *tx)
                .await
                .context("forgetting deleted clients")?;
        }
        if !kept.is_empty() {
            sqlx::query(
                "insert into trend_clients (user_id, score, at_risk)
                 select * from unnest($1::uuid[], $2::smallint[], $3::bool[])
                 on conflict (user_id) do update set score = excluded.score, at_risk = excluded.at_risk",
            )
            .bind(&kept)
            .bind(&scores)
            .bind(&risks)
            .execute(&mut *tx)
            .await
            .context("recording the trend's clients")?;
        }
        let days: Vec<(NaiveDate, DayChange)> = days.into_iter().collect();
        let column =
            |f: fn(&DayChange) -> i64| days.iter().map(|(_, c)| f(c)).collect::<Vec<i64>>();
        let day_list: Vec<NaiveDate> = days.iter().map(|(day, _)| *day).collect();
        sqlx::query(
            "insert into engagement_daily (day, at_risk_delta, score_sum_delta, scored_delta, emails, reactivations)
             select * from unnest($1::date[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
             on conflict (day) do update set
                at_risk_delta = engagement_daily.at_risk_delta + excluded.at_risk_delta,
                score_sum_delta = engagement_daily.score_sum_delta + excluded.score_sum_delta,
                scored_delta = engagement_daily.scored_delta + excluded.scored_delta,
                emails = engagement_daily.emails + excluded.emails,
                reactivations = engagement_daily.reactivations + excluded.reactivations",
        )
        .bind(&day_list)
        .bind(column(|c| i64::from(c.at_risk)))
        .bind(column(|c| c.score_sum))
        .bind(column(|c| i64::from(c.scored)))
        .bind(column(|c| i64::from(c.emails)))
        .bind(column(|c| i64::from(c.reactivations)))
        .execute(&mut *tx)
        .await
        .context("recording the trend's days")?;
        Ok(())
    }
}

/// One day of the trend, as it stood at the day's end.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TrendDay {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Clients at risk.
    pub at_risk: i64,
    /// The average of current scores (0 with none).
    pub average_score: f64,
    /// Emails written that day.
    pub emails: i64,
    /// At-risk clients whose own activity took them out of the band that day.
    pub reactivations: i64,
}

/// Every day from `from` to `to` (inclusive), gaps filled, each standing as of its end.
///
/// # Errors
/// The database failed.
pub async fn days<'e>(
    executor: impl PgExecutor<'e>,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Vec<TrendDay>> {
    sqlx::query_as(
        "with running as (
             select day,
                    sum(at_risk_delta) over w as at_risk,
                    sum(score_sum_delta) over w as score_sum,
                    sum(scored_delta) over w as scored,
                    emails, reactivations
               from engagement_daily
             window w as (order by day)),
         calendar as (select d::date as day from generate_series($1::date, $2::date, interval '1 day') d)
         select c.day,
                coalesce(r.at_risk, 0)::bigint as at_risk,
                case when coalesce(r.scored, 0) > 0 then r.score_sum::float8 / r.scored else 0 end as average_score,
                coalesce(e.emails, 0)::bigint as emails,
                coalesce(e.reactivations, 0)::bigint as reactivations
           from calendar c
           left join lateral (select * from running r where r.day <= c.day order by r.day desc limit 1) r on true
           left join engagement_daily e on e.day = c.day
          order by c.day",
    )
    .bind(from)
    .bind(to)
    .fetch_all(executor)
    .await
    .context("reading the trend")
}
