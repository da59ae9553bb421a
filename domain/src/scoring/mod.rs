//! Scoring: a policy turns the facts about a client and `now` into a score, a band and the
//! reasons for both.
//!
//! Policies are plain arithmetic over [`ClientFacts`]; they never read a clock. The aggregate
//! asks its policy after every change and records the answer in `UserScored`, so the history
//! explains every score and readers never recompute one.

mod backtest;
mod cadence_v2;
mod seed_v1;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::values::{Money, Score};

pub use backtest::{backtest, BacktestReport, CustomerScore, Transaction};
pub use cadence_v2::CadenceV2;
pub use seed_v1::SeedV1;

/// Everything a policy may look at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientFacts {
    /// Orders placed (including imported history).
    pub order_count: u32,
    /// Mean order value.
    pub average_order_value: Money,
    /// The first order we know the date of.
    pub first_order_at: Option<DateTime<Utc>>,
    /// The most recent order.
    pub last_order_at: Option<DateTime<Utc>>,
    /// The most recent email we wrote to the client.
    pub last_email_at: Option<DateTime<Utc>>,
    /// The client opted out of emails.
    pub unsubscribed: bool,
    /// When the client was created here.
    pub created_at: Option<DateTime<Utc>>,
}

/// Coarse reading of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    /// Likely to lapse; the process manager may write to them.
    AtRisk,
    /// Drifting; worth watching.
    Watch,
    /// Engaged.
    Healthy,
}

impl Band {
    /// Whether this is the at-risk band. Everything that asks "is this client at risk?" (the
    /// `atRisk` flag, the process manager, the email workers) asks this of the band a policy
    /// recorded, never a score against a threshold of its own.
    pub fn is_at_risk(self) -> bool {
        self == Self::AtRisk
    }

    /// The band's name as stored and shown (`at_risk`, `watch`, `healthy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtRisk => "at_risk",
            Self::Watch => "watch",
            Self::Healthy => "healthy",
        }
    }
}

/// One reason behind a score: how many points it moved and why, in a sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreFactor {
    /// Short machine-friendly name (`recency`, `frequency`, ...).
    pub name: String,
    /// Points this factor added (negative: took away).
    pub points: f64,
    /// A sentence a person can read.
    pub detail: String,
}

/// A policy's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The score.
    pub score: Score,
    /// Its band.
    pub band: Band,
    /// Why.
    pub factors: Vec<ScoreFactor>,
    /// The earliest moment after `now` at which the same facts would score differently (time
    /// passing alone); `None` if never.
    pub next_change_at: Option<DateTime<Utc>>,
}

/// A way of scoring clients.
pub trait ScoringPolicy: Send + Sync + std::fmt::Debug {
    /// The policy's stable name, recorded in every `UserScored` (`seed-v1`, ...).
    fn name(&self) -> &'static str;

    /// Scores `facts` as of `now`. `previous_band` lets a policy hold a band steady near its
    /// edges (hysteresis); policies without hysteresis ignore it.
    fn assess(
        &self,
        facts: &ClientFacts,
        now: DateTime<Utc>,
        previous_band: Option<Band>,
    ) -> Assessment;

    /// Scores below this are at risk.
    fn threshold(&self) -> u8 {
        50
    }

    /// The band of `score`. The default has no hysteresis: below the threshold is at risk,
    /// below 70 is watch, the rest healthy.
    fn band_for(&self, score: Score, _previous: Option<Band>) -> Band {
        match score.value() {
            s if s < self.threshold() => Band::AtRisk,
            s if s < 70 => Band::Watch,
            _ => Band::Healthy,
        }
    }
}

/// Whole days from `earlier` to `now` (floor), never negative.
pub(crate) fn whole_days(earlier: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - earlier).num_days().max(0)
}

/// Rounds `numerator / denominator` half away from zero (denominator > 0).
pub(crate) fn round_half_away(numerator: i64, denominator: i64) -> i64 {
    let half = denominator / 2;
    if numerator >= 0 {
        (numerator + half) / denominator
    } else {
        -((-numerator + half) / denominator)
    }
}

/// Every policy this build knows, by name.
pub fn policy_by_name(name: &str) -> Option<std::sync::Arc<dyn ScoringPolicy>> {
    match name {
        "seed-v1" => Some(std::sync::Arc::new(SeedV1)),
        "cadence-v2" => Some(std::sync::Arc::new(CadenceV2)),
        _ => None,
    }
}

/// Names accepted by [`policy_by_name`].
pub const POLICY_NAMES: &[&str] = &["cadence-v2", "seed-v1"];

/// The policy used when none is configured.
pub const DEFAULT_POLICY: &str = "cadence-v2";
