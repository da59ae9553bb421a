//! Did emailing bring clients back? The arithmetic of the uplift report, as pure functions:
//! each group's reactivation rate with a 95% Wilson score interval, and the difference of the
//! rates with Newcombe's hybrid score interval (method 10 of Newcombe 1998, Stat Med 17:873),
//! which stays inside [-1, 1] and behaves on small and extreme counts where the Wald interval
//! does not.

/// The 97.5th percentile of the standard normal distribution (a two-sided 95% interval).
pub const Z_95: f64 = 1.959_963_984_540_054;

/// A rate with its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Successes over trials (0 when there are no trials).
    pub rate: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// The Wilson score interval of `successes` out of `trials` at `z`. With no trials nothing is
/// known: rate 0, interval [0, 1].
pub fn wilson(successes: u64, trials: u64, z: f64) -> Rate {
    if trials == 0 {
        return Rate {
            rate: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    let n = trials as f64;
    let p = successes.min(trials) as f64 / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Rate {
        rate: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// The difference of two rates (`a - b`) with Newcombe's hybrid score interval (method 10),
/// built from each rate's Wilson interval.
pub fn difference(a: Rate, b: Rate) -> Rate {
    let d = a.rate - b.rate;
    let low = d - ((a.rate - a.low).powi(2) + (b.high - b.rate).powi(2)).sqrt();
    let high = d + ((a.high - a.rate).powi(2) + (b.rate - b.low).powi(2)).sqrt();
    Rate {
        rate: d,
        low: low.max(-1.0),
        high: high.min(1.0),
    }
}

/// One trigger: the process manager's decision that the client should be emailed (intention
/// to treat: whatever happened after), and what the client did in the window after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// Held out (not emailed) rather than treated.
    pub held_out: bool,
    /// The client ordered within the window after the trigger.
    pub reactivated: bool,
    /// The value of those orders, in cents.
    pub revenue_cents: i64,
}

/// One group's line of the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupOutcome {
    /// Triggers in the period.
    pub triggered: u64,
    /// Of them, followed by an order within the window.
    pub reactivated: u64,
    /// `reactivated / triggered` with its 95% Wilson interval.
    pub rate: Rate,
    /// The value of those orders, in cents.
    pub revenue_cents: i64,
}

/// The report: treatment against holdout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uplift {
    /// The emailed group.
    pub treatment: GroupOutcome,
    /// The held-out group.
    pub holdout: GroupOutcome,
    /// Treatment rate minus holdout rate, with Newcombe's 95% interval.
    pub difference: Rate,
}

fn outcome(triggers: impl Iterator<Item = Trigger>) -> GroupOutcome {
    let (mut triggered, mut reactivated, mut revenue_cents) = (0u64, 0u64, 0i64);
    for t in triggers {
        triggered += 1;
        if t.reactivated {
            reactivated += 1;
            revenue_cents = revenue_cents.saturating_add(t.revenue_cents);
        }
    }
    GroupOutcome {
        triggered,
        reactivated,
        rate: wilson(reactivated, triggered, Z_95),
        revenue_cents,
    }
}

/// The report over `triggers`.
pub fn report(triggers: &[Trigger]) -> Uplift {
    let treatment = outcome(triggers.iter().copied().filter(|t| !t.held_out));
    let holdout = outcome(triggers.iter().copied().filter(|t| t.held_out));
    Uplift {
        difference: difference(treatment.rate, holdout.rate),
        treatment,
        holdout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newcombe(k1: u64, n1: u64, k2: u64, n2: u64) -> Rate {
        difference(wilson(k1, n1, Z_95), wilson(k2, n2, Z_95))
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 0.000_051,
            "{actual} is not {expected} to four places"
        );
    }

    #[test]
    fn newcombes_published_examples() {
        // Newcombe (1998), Table II, method 10.
        for ((k1, n1, k2, n2), (d, low, high)) in [
            ((56, 70, 48, 80), (0.2, 0.0524, 0.3339)),
            ((9, 10, 3, 10), (0.6, 0.1705, 0.8090)),
            ((0, 10, 0, 20), (0.0, -0.1611, 0.2775)),
            ((10, 10, 0, 20), (1.0, 0.6791, 1.0)),
        ] {
            let r = newcombe(k1, n1, k2, n2);
            close(r.rate, d);
            close(r.low, low);
            close(r.high, high);
        }
    }

    #[test]
    fn wilson_matches_a_published_interval_and_empty_groups_answer_without_nan() {
        // Newcombe (1998) Table I: 81/263 -> 0.2553 to 0.3662 (Wilson, no continuity correction).
        let r = wilson(81, 263, Z_95);
        close(r.low, 0.2553);
        close(r.high, 0.3662);
        let empty = report(&[]);
        for v in [
            empty.treatment.rate.rate,
            empty.treatment.rate.low,
            empty.treatment.rate.high,
            empty.difference.rate,
            empty.difference.low,
            empty.difference.high,
        ] {
            assert!(v.is_finite());
        }
        assert_eq!((empty.difference.low, empty.difference.high), (-1.0, 1.0));
        let one_sided = report(&[Trigger {
            held_out: false,
            reactivated: true,
            revenue_cents: 500,
        }]);
        assert_eq!(one_sided.treatment.revenue_cents, 500);
        assert!(one_sided.difference.low.is_finite() && one_sided.difference.high <= 1.0);
    }

    /// A small, seeded generator (SplitMix64), so the simulation needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A population of `n` at-risk clients, `held_out` of them held out; an email raises the
    /// chance of ordering within the window from `p0` to `p1`.
    pub(crate) fn population(seed: u64, n: usize, holdout: f64, p0: f64, p1: f64) -> Vec<Trigger> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let held_out = rng.next() < holdout;
                let p = if held_out { p0 } else { p1 };
                let reactivated = rng.next() < p;
                Trigger {
                    held_out,
                    reactivated,
                    revenue_cents: if reactivated { 5_000 } else { 0 },
                }
            })
            .collect()
    }

    #[test]
    fn over_many_seeds_the_interval_covers_the_true_difference_at_about_95_percent() {
        const SEEDS: u64 = 2_000;
        // An email lifts reactivation from 20% to 26%; a third of the clients are held out.
        let covered = (0..SEEDS)
            .filter(|seed| {
                let d = report(&population(*seed, 600, 1.0 / 3.0, 0.20, 0.26)).difference;
                d.low <= 0.06 && 0.06 <= d.high
            })
            .count() as f64
            / SEEDS as f64;
        // Nominal 95%; with 2,000 seeds the standard error is 0.5 points: allow 2 points.
        assert!((covered - 0.95).abs() <= 0.02, "coverage {covered}");
        // No effect: the interval excludes zero about 5% of the time, never often.
        let false_alarms = (0..SEEDS)
            .filter(|seed| {
                let d = report(&population(*seed + 10_000, 600, 1.0 / 3.0, 0.20, 0.20)).difference;
                d.low > 0.0 || d.high < 0.0
            })
            .count() as f64
            / SEEDS as f64;
        assert!(false_alarms <= 0.07, "false alarms {false_alarms}");
        println!(
            "coverage {covered:.4} (nominal 0.95), false alarms {false_alarms:.4} (nominal 0.05)"
        );
    }
}
