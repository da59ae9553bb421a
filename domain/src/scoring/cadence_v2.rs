//! `cadence-v2`: the default policy. Recency is judged against the client's own rhythm.
//!
//! A points scorecard, every term a plain formula with a sentence:
//!
//! | factor | points |
//! |---|---|
//! | base | 51.5 |
//! | recency against cadence | -15 x ln(1 + daysSinceLastOrder / expectedGap) |
//! | frequency | +22.5 x ln(orderCount) |
//! | value | +4.5 x ln(1 + averageOrderValue / 50) |
//! | new client | +12 x (1 - tenureDays / 90), while tenure < 90 days |
//! | opted out of emails | -10 |
//!
//! `expectedGap` is the client's mean gap between orders, shrunk toward a prior of 90 days
//! with the weight of one gap: `(90 + daysFirstToLastOrder) / orderCount`. A client with one
//! order is judged against the prior; a weekly buyer who is three weeks late is overdue, a
//! quarterly one is not. A client who has never ordered is judged by the days since they
//! joined. A client in their first 90 days (tenure counted from the first order, or from
//! joining) has not had time to show a rhythm, so a grace that fades to zero over those days
//! keeps a new client from being called at risk a fortnight after their first order.
//!
//! The value factor is reported and ranks clients, but it never lifts a client from below the
//! threshold to above it: value does not hide a lapse. Email recency is not a factor (the
//! cooldown is a send rule, not a risk).
//!
//! Bands: at risk below 50, healthy from 70, watch between, with 3 points of hysteresis at
//! each edge so that a client does not flap between bands from one day to the next.
//!
//! The numbers were fitted on the development half of the CDNOW purchase histories (see the
//! README's scoring section for the backtest at several cut-offs and horizons).

use chrono::{DateTime, Duration, Utc};

use super::{whole_days, Assessment, Band, ClientFacts, ScoreFactor, ScoringPolicy};
use crate::values::Score;

/// Points per natural-log unit of the recency/frequency/value terms.
const SCALE: f64 = 15.0;
/// The constant that puts the at-risk threshold (50) at the fitted cut.
const BASE: f64 = 51.5;
/// Expected gap between orders before a client has shown their own, in days.
const PRIOR_GAP_DAYS: f64 = 90.0;
/// Frequency weight, relative to recency.
const FREQUENCY_WEIGHT: f64 = 1.5;
/// Value weight, relative to recency.
const VALUE_WEIGHT: f64 = 0.3;
/// The order value (in currency units) at which the value factor gives `ln 2` units.
const VALUE_REFERENCE: f64 = 50.0;
/// Points of grace on a client's first day; they fade to zero over `PRIOR_GAP_DAYS`.
const NEW_CLIENT_GRACE: f64 = 12.0;
/// Points for having opted out of emails.
const OPT_OUT_POINTS: f64 = -10.0;
/// Points a band holds on to beyond its edge.
const HYSTERESIS: u8 = 3;
/// Edge between watch and healthy.
const HEALTHY_FROM: u8 = 70;
/// How far ahead `next_change_at` looks.
const HORIZON_DAYS: i64 = 3650;

/// The default scoring policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct CadenceV2;

/// The unrounded parts of a score for one day.
struct Parts {
    recency: f64,
    frequency: f64,
    value: f64,
    grace: f64,
    opt_out: f64,
    expected_gap_days: f64,
}

impl Parts {
    fn of(facts: &ClientFacts, days_since_last: i64, tenure_days: i64) -> Self {
        let orders = facts.order_count;
        let span_days = match (facts.first_order_at, facts.last_order_at) {
            (Some(first), Some(last)) if orders > 1 => whole_days(first, last) as f64,
            _ => 0.0,
        };
        let gaps_seen = f64::from(orders.saturating_sub(1));
        let expected_gap_days = (PRIOR_GAP_DAYS + span_days) / (1.0 + gaps_seen);
        let recency = -SCALE * (days_since_last as f64 / expected_gap_days).ln_1p();
        let frequency = if orders > 0 {
            SCALE * FREQUENCY_WEIGHT * f64::from(orders).ln()
        } else {
            0.0
        };
        let aov = facts.average_order_value.cents() as f64 / 100.0;
        let value = SCALE * VALUE_WEIGHT * (aov / VALUE_REFERENCE).ln_1p();
        let grace = NEW_CLIENT_GRACE * (1.0 - tenure_days as f64 / PRIOR_GAP_DAYS).max(0.0);
        let opt_out = if facts.unsubscribed {
            OPT_OUT_POINTS
        } else {
            0.0
        };
        Self {
            recency,
            frequency,
            value,
            grace,
            opt_out,
            expected_gap_days,
        }
    }

    /// The score: value ranks clients but never carries one across the threshold.
    fn score(&self, threshold: u8) -> Score {
        let without_value = BASE + self.recency + self.frequency + self.grace + self.opt_out;
        let mut total = without_value + self.value;
        let below = f64::from(threshold) - 0.5;
        if without_value < below {
            // Stay below the threshold after rounding.
            total = total.min(below - 1e-9);
        }
        // The clamp makes the cast lossless; f64::round rounds half away from zero.
        Score::clamped(total.round().clamp(0.0, 100.0) as i64)
    }
}

impl CadenceV2 {
    /// Days from the last order (or from joining, for a client who never ordered) to `now`,
    /// and the client's tenure (from the first order, or from joining).
    fn days(facts: &ClientFacts, now: DateTime<Utc>) -> (i64, i64) {
        let silent_since = facts.last_order_at.or(facts.created_at);
        let client_since = facts.first_order_at.or(facts.created_at).or(silent_since);
        let days = |at: Option<DateTime<Utc>>| at.map_or(0, |at| whole_days(at, now));
        (days(silent_since), days(client_since))
    }

    fn parts(facts: &ClientFacts, now: DateTime<Utc>) -> Parts {
        let (silent, tenure) = Self::days(facts, now);
        Parts::of(facts, silent, tenure)
    }
}

fn points(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl ScoringPolicy for CadenceV2 {
    fn name(&self) -> &'static str {
        "cadence-v2"
    }

    fn assess(
        &self,
        facts: &ClientFacts,
        now: DateTime<Utc>,
        previous_band: Option<Band>,
    ) -> Assessment {
        let threshold = self.threshold();
        let (days, tenure) = Self::days(facts, now);
        let parts = Parts::of(facts, days, tenure);
        let score = parts.score(threshold);

        let recency_detail = match facts.last_order_at {
            Some(_) => format!(
                "Last order {days} days ago; this client orders about every {:.0} days.",
                parts.expected_gap_days
            ),
            None => format!("No order yet, {days} days after joining (judged against a {PRIOR_GAP_DAYS:.0}-day rhythm)."),
        };
        let mut factors = vec![
            ScoreFactor { name: "base".into(), points: BASE, detail: "Every client starts at 51.5.".into() },
            ScoreFactor { name: "recency".into(), points: points(parts.recency), detail: recency_detail },
            ScoreFactor {
                name: "frequency".into(),
                points: points(parts.frequency),
                detail: match facts.order_count {
                    0 => "No orders yet.".to_owned(),
                    1 => "One order so far.".to_owned(),
                    n => format!("{n} orders so far."),
                },
            },
            ScoreFactor {
                name: "value".into(),
                points: points(parts.value),
                detail: format!(
                    "Average order {}; value ranks clients but never lifts one out of the at-risk band.",
                    facts.average_order_value
                ),
            },
        ];
        if parts.grace > 0.0 {
            factors.push(ScoreFactor {
                name: "new_client".into(),
                points: points(parts.grace),
                detail: format!(
                    "A client for {tenure} days: too new to judge by their rhythm yet."
                ),
            });
        }
        if facts.unsubscribed {
            factors.push(ScoreFactor {
                name: "opted_out".into(),
                points: OPT_OUT_POINTS,
                detail: "Opted out of emails.".into(),
            });
        }

        let band = self.band_for(score, previous_band);
        // The score only falls as days pass; find the first whole day on which it changes
        // (monotone, so a binary search over the horizon).
        let next_change_at = (facts.last_order_at.is_some() || facts.created_at.is_some())
            .then_some(())
            .and_then(|()| {
                let at_day = |d: i64| Self::parts(facts, now + Duration::days(d)).score(threshold);
                let (mut lo, mut hi) = (0, HORIZON_DAYS);
                if at_day(hi) == score {
                    return None;
                }
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if at_day(mid) == score {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                // Whole days count from the moment of the last order: the change happens at the
                // first such boundary after `now + (hi - 1) days`.
                let boundary_base = facts.last_order_at.or(facts.created_at).unwrap_or(now);
                let first_changed_day = whole_days(boundary_base, now + Duration::days(hi));
                Some(boundary_base + Duration::days(first_changed_day))
            });

        Assessment {
            score,
            band,
            factors,
            next_change_at,
        }
    }

    fn band_for(&self, score: Score, previous: Option<Band>) -> Band {
        let s = score.value();
        let threshold = self.threshold();
        match previous {
            Some(Band::AtRisk) if s < threshold + HYSTERESIS => Band::AtRisk,
            Some(Band::Healthy) if s >= HEALTHY_FROM - HYSTERESIS => Band::Healthy,
            _ if s < threshold => Band::AtRisk,
            _ if s < HEALTHY_FROM => Band::Watch,
            _ => Band::Healthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::values::Money;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
    }

    fn facts(orders: u32, first_days_ago: i64, last_days_ago: i64, aov_cents: i64) -> ClientFacts {
        ClientFacts {
            order_count: orders,
            average_order_value: Money::from_cents(aov_cents, "aov").unwrap(),
            first_order_at: (orders > 0).then(|| now() - Duration::days(first_days_ago)),
            last_order_at: (orders > 0).then(|| now() - Duration::days(last_days_ago)),
            created_at: Some(now() - Duration::days(first_days_ago)),
            ..ClientFacts::default()
        }
    }

    fn score(f: &ClientFacts) -> u8 {
        CadenceV2.assess(f, now(), None).score.value()
    }

    #[test]
    fn the_arithmetic_matches_the_scorecard() {
        // One order of 50.00 today, a new client: 51.5 + 0 + 0 + 4.5 ln 2 + 12 = 66.62 -> 67.
        assert_eq!(score(&facts(1, 0, 0, 5000)), 67);
        // The same order 45 days ago: 51.5 - 15 ln 1.5 + 3.12 + 12 x 45/90 = 54.54 -> 55.
        assert_eq!(score(&facts(1, 45, 45, 5000)), 55);
        // Ten orders over 270 days (gap (90+270)/10 = 36), last 18 days ago, AOV 50:
        // 51.5 - 15 ln 1.5 + 22.5 ln 10 + 4.5 ln 2 = 51.5 - 6.08 + 51.81 + 3.12 -> 100.
        assert_eq!(score(&facts(10, 288, 18, 5000)), 100);
        // Three orders over 90 days (gap 60), last 60 days ago, AOV 25:
        // 51.5 - 15 ln 2 + 22.5 ln 3 + 4.5 ln 1.5 = 51.5 - 10.40 + 24.72 + 1.82 = 67.64 -> 68.
        assert_eq!(score(&facts(3, 150, 60, 2500)), 68);
        // One order a year ago: 51.5 - 15 ln(1 + 365/90) + 4.5 ln 2 = 27.19 + 3.12 -> 30
        // (value still ranks below the threshold; it only may not cross it).
        assert_eq!(score(&facts(1, 365, 365, 5000)), 30);
    }

    #[test]
    fn value_never_lifts_a_client_out_of_the_at_risk_band() {
        // Without value: 51.5 - 15 ln(1 + 80/90) + 12 x 10/90 = 43.29; a huge AOV would add
        // 24 points.
        let rich = facts(1, 80, 80, 1_000_000);
        assert_eq!(score(&rich), 49);
        let modest = facts(1, 80, 80, 1000);
        assert!(
            score(&modest) < score(&rich),
            "value still ranks within the band"
        );
    }

    #[test]
    fn a_weekly_buyer_three_weeks_late_is_at_risk_but_a_quarterly_one_is_not() {
        let weekly = facts(20, 7 * 19 + 21, 21, 4000);
        let quarterly = facts(4, 3 * 90 + 21, 21, 4000);
        let weekly_gap = (90.0 + (7.0 * 19.0)) / 20.0;
        assert!(weekly_gap < 12.0);
        assert!(score(&weekly) > score(&facts(20, 7 * 19 + 200, 200, 4000)));
        assert_eq!(
            CadenceV2.assess(&quarterly, now(), None).band,
            Band::Healthy
        );
    }

    #[test]
    fn a_client_who_never_ordered_slides_from_joining_day() {
        let joined_today = facts(0, 0, 0, 0);
        let joined_long_ago = facts(0, 120, 0, 0);
        assert_eq!(score(&joined_today), 64);
        assert!(score(&joined_long_ago) < 50);
    }

    #[test]
    fn a_new_client_is_not_at_risk_within_weeks_of_a_first_order_but_is_after_a_quarter() {
        let band = |days| {
            CadenceV2
                .assess(&facts(1, days, days, 4000), now(), None)
                .band
        };
        assert_ne!(band(14), Band::AtRisk);
        assert_ne!(band(40), Band::AtRisk);
        assert_eq!(band(91), Band::AtRisk);
    }

    #[test]
    fn opting_out_costs_ten_points() {
        let mut f = facts(3, 150, 60, 2500);
        let before = score(&f);
        f.unsubscribed = true;
        assert_eq!(score(&f), before - 10);
    }

    #[test]
    fn bands_hold_for_three_points_past_their_edges() {
        let p = CadenceV2;
        let s = |v| Score::clamped(v);
        assert_eq!(p.band_for(s(49), None), Band::AtRisk);
        assert_eq!(p.band_for(s(50), None), Band::Watch);
        assert_eq!(p.band_for(s(52), Some(Band::AtRisk)), Band::AtRisk);
        assert_eq!(p.band_for(s(53), Some(Band::AtRisk)), Band::Watch);
        assert_eq!(p.band_for(s(70), None), Band::Healthy);
        assert_eq!(p.band_for(s(67), Some(Band::Healthy)), Band::Healthy);
        assert_eq!(p.band_for(s(66), Some(Band::Healthy)), Band::Watch);
        assert_eq!(p.band_for(s(49), Some(Band::Watch)), Band::AtRisk);
    }

    #[test]
    fn next_change_is_the_first_day_the_score_moves() {
        let f = facts(1, 10, 10, 5000);
        let a = CadenceV2.assess(&f, now(), None);
        let at = a.next_change_at.expect("a one-order client keeps sliding");
        let day_before = at - Duration::days(1);
        assert_eq!(CadenceV2.assess(&f, day_before, None).score, a.score);
        assert_ne!(CadenceV2.assess(&f, at, None).score, a.score);
        // Fully lapsed clients bottom out: no further change.
        let gone = facts(1, 100_000, 100_000, 0);
        assert_eq!(CadenceV2.assess(&gone, now(), None).next_change_at, None);
    }

    fn arb_facts() -> impl Strategy<Value = (u32, i64, i64, i64, bool)> {
        (
            1u32..60,
            0i64..2000,
            0i64..2000,
            0i64..100_000,
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn a_later_last_order_never_lowers_the_score((orders, span, silence, aov, opted_out) in arb_facts(), later in 1i64..500) {
            let mut earlier = facts(orders, span + silence + later, silence + later, aov);
            earlier.unsubscribed = opted_out;
            let mut moved = earlier.clone();
            moved.last_order_at = Some(now() - Duration::days(silence));
            if orders == 1 { moved.first_order_at = moved.last_order_at; earlier.first_order_at = earlier.last_order_at; }
            prop_assert!(score(&moved) >= score(&earlier));
        }

        #[test]
        fn a_longer_silence_never_raises_the_score((orders, span, silence, aov, opted_out) in arb_facts(), more in 1i64..500) {
            let mut f = facts(orders, span + silence, silence, aov);
            f.unsubscribed = opted_out;
            let later = now() + Duration::days(more);
            prop_assert!(CadenceV2.assess(&f, later, None).score <= CadenceV2.assess(&f, now(), None).score);
        }
    }
}
