//! `seed-v1`: the seed system's rule, kept exactly.
//!
//! Start at 100; days since the last order > 90: -40, > 60: -30, > 30: -15 (no order at all
//! counts as > 90); + min(orderCount / 10, 1) x 15; + min(averageOrderValue / 200, 1) x 10;
//! days since the last email < 7: -10; clamp to 0..=100, rounded half away from zero.
//!
//! The arithmetic runs in integer units of 1/2000 point so that the rounding is exact (15
//! points per 10 orders is 3000 units an order; 10 points per 200.00 is one unit a cent).

use chrono::{DateTime, Duration, Utc};

use super::{
    round_half_away, whole_days, Assessment, Band, ClientFacts, ScoreFactor, ScoringPolicy,
};
use crate::values::Score;

const UNITS_PER_POINT: i64 = 2000;

/// The seed's scoring rule.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedV1;

impl SeedV1 {
    fn recency_units(days: Option<i64>) -> i64 {
        let points = match days {
            None => -40,
            Some(d) if d > 90 => -40,
            Some(d) if d > 60 => -30,
            Some(d) if d > 30 => -15,
            Some(_) => 0,
        };
        points * UNITS_PER_POINT
    }
}

fn points(units: i64) -> f64 {
    // Display only: exact for every value this policy produces (multiples of 1/2000).
    units as f64 / UNITS_PER_POINT as f64
}

impl SeedV1 {
    /// The score alone, for looking ahead.
    fn assess_score(&self, facts: &ClientFacts, at: DateTime<Utc>) -> Score {
        let recency = Self::recency_units(facts.last_order_at.map(|t| whole_days(t, at)));
        let frequency = i64::from(facts.order_count.min(10)) * 3000;
        let value = facts.average_order_value.cents().min(20_000);
        let contact = match facts.last_email_at.map(|t| whole_days(t, at)) {
            Some(d) if d < 7 => -10 * UNITS_PER_POINT,
            _ => 0,
        };
        Score::clamped(round_half_away(
            100 * UNITS_PER_POINT + recency + frequency + value + contact,
            UNITS_PER_POINT,
        ))
    }
}

impl ScoringPolicy for SeedV1 {
    fn name(&self) -> &'static str {
        "seed-v1"
    }

    fn assess(
        &self,
        facts: &ClientFacts,
        now: DateTime<Utc>,
        _previous_band: Option<Band>,
    ) -> Assessment {
        let days_since_order = facts.last_order_at.map(|at| whole_days(at, now));
        let recency = Self::recency_units(days_since_order);
        let frequency = i64::from(facts.order_count.min(10)) * 3000;
        let value = facts.average_order_value.cents().min(20_000);
        let days_since_email = facts.last_email_at.map(|at| whole_days(at, now));
        let contact = match days_since_email {
            Some(d) if d < 7 => -10 * UNITS_PER_POINT,
            _ => 0,
        };
        let total = 100 * UNITS_PER_POINT + recency + frequency + value + contact;
        let score = Score::clamped(round_half_away(total, UNITS_PER_POINT));

        let recency_detail = match days_since_order {
            None => "No orders yet (counted as more than 90 days).".to_owned(),
            Some(d) => format!("Last order {d} days ago."),
        };
        let mut factors = vec![
            ScoreFactor {
                name: "base".into(),
                points: 100.0,
                detail: "Every client starts at 100.".into(),
            },
            ScoreFactor {
                name: "recency".into(),
                points: points(recency),
                detail: recency_detail,
            },
            ScoreFactor {
                name: "frequency".into(),
                points: points(frequency),
                detail: format!("{} orders (1.5 points each, up to 10).", facts.order_count),
            },
            ScoreFactor {
                name: "value".into(),
                points: points(value),
                detail: format!(
                    "Average order value {} (up to 10 points at 200.00).",
                    facts.average_order_value
                ),
            },
        ];
        if contact != 0 {
            factors.push(ScoreFactor {
                name: "recent_email".into(),
                points: points(contact),
                detail: format!(
                    "Emailed {} days ago (within the last 7 days).",
                    days_since_email.unwrap_or_default()
                ),
            });
        }

        let band = self.band_for(score, None);

        // The score only moves when a day boundary in the rule is crossed; the next change is
        // the first such boundary at which the (clamped) score differs.
        let order_edges = facts
            .last_order_at
            .into_iter()
            .flat_map(|at| [31, 61, 91].map(|d| at + Duration::days(d)));
        let email_edge = facts.last_email_at.map(|at| at + Duration::days(7));
        let mut edges: Vec<DateTime<Utc>> = order_edges
            .chain(email_edge)
            .filter(|edge| *edge > now)
            .collect();
        edges.sort();
        let next_change_at = edges
            .into_iter()
            .find(|edge| self.assess_score(facts, *edge) != score);

        Assessment {
            score,
            band,
            factors,
            next_change_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::values::Money;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn facts(
        days_since_order: Option<i64>,
        orders: u32,
        aov: &str,
        emailed_days_ago: Option<i64>,
    ) -> ClientFacts {
        ClientFacts {
            order_count: orders,
            average_order_value: Money::parse(aov, "aov").unwrap(),
            last_order_at: days_since_order.map(|d| now() - Duration::days(d)),
            last_email_at: emailed_days_ago.map(|d| now() - Duration::days(d)),
            ..ClientFacts::default()
        }
    }

    fn score(f: &ClientFacts) -> u8 {
        SeedV1.assess(f, now(), None).score.value()
    }

    #[test]
    fn the_seed_test_vectors_hold() {
        assert_eq!(score(&facts(Some(10), 10, "200", None)), 100);
        assert_eq!(score(&facts(Some(45), 2, "50", None)), 91);
        assert_eq!(score(&facts(Some(75), 1, "40", None)), 74);
        assert_eq!(score(&facts(Some(120), 1, "20", Some(3))), 53);
        assert_eq!(score(&facts(None, 0, "0", None)), 60);
    }

    #[test]
    fn recency_edges_are_strictly_greater_than() {
        let base = |days| score(&facts(Some(days), 0, "0", None));
        assert_eq!(base(30), 100);
        assert_eq!(base(31), 85);
        assert_eq!(base(60), 85);
        assert_eq!(base(61), 70);
        assert_eq!(base(90), 70);
        assert_eq!(base(91), 60);
    }

    #[test]
    fn an_email_this_week_costs_ten_points_and_then_expires() {
        assert_eq!(score(&facts(Some(0), 0, "0", Some(6))), 90);
        assert_eq!(score(&facts(Some(0), 0, "0", Some(7))), 100);
    }

    #[test]
    fn factors_add_up_to_the_unclamped_score_and_explain_it() {
        let a = SeedV1.assess(&facts(Some(45), 2, "50", None), now(), None);
        let sum: f64 = a.factors.iter().map(|f| f.points).sum();
        assert!((sum - 90.5).abs() < 1e-9);
        assert!(a
            .factors
            .iter()
            .any(|f| f.detail == "Last order 45 days ago."));
        assert_eq!(a.band, Band::Healthy);
    }

    #[test]
    fn next_change_is_the_next_rule_edge() {
        let f = facts(Some(10), 1, "10", Some(2));
        let a = SeedV1.assess(&f, now(), None);
        // Email penalty lapses 5 days from now, before the 31-day recency edge.
        assert_eq!(a.next_change_at, Some(now() + Duration::days(5)));
        let a = SeedV1.assess(&facts(Some(100), 1, "10", None), now(), None);
        assert_eq!(a.next_change_at, None);
        // Clamped at 100 until 61 days: the 31-day edge changes nothing (125 -> 110).
        let a = SeedV1.assess(&facts(Some(0), 10, "200", None), now(), None);
        assert_eq!(a.next_change_at, Some(now() + Duration::days(61)));
    }
}
